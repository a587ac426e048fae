# essaim — one entry point. `make help` lists the targets.

CC      ?= cc
PKGS    := libsodium msgpack lmdb inih OpenCL
# Debian's libev ships no pkg-config file; it is a plain -lev.
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lev -lpthread -lm
# kvcli and kvbench need only what proto, crypto and common do.
CLIENT_LIBS := $(shell pkg-config --libs libsodium msgpack 2>/dev/null) -lm
CMOCKA_LIBS := $(shell pkg-config --libs cmocka 2>/dev/null)

MODE    ?= release
BUILD   := build/$(MODE)
WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wvla
ifeq ($(MODE),asan)
OPT     := -O1 -fno-omit-frame-pointer -fsanitize=address,undefined \
           -fno-sanitize-recover=undefined
else
OPT     := -O2
endif
CFLAGS  ?=
CFLAGS  += -std=c11 -D_GNU_SOURCE -g $(OPT) $(WARN) $(PKG_CFLAGS) -MMD -MP
LDFLAGS += $(filter -fsanitize=%,$(OPT))

# One library per module (DESIGN §2), each program linked against the
# modules it may use, in layer order: a call against the arrows is a link
# error, and make check-layers checks the includes.
LIB_SRCS  := $(wildcard common/*.c crypto/*.c proto/*.c storage/*.c)
mod_objs   = $(patsubst %.c,$(BUILD)/%.o,$(filter-out node/main.c,$(wildcard $(1)/*.c)))
modlib     = $(BUILD)/lib$(1).a
CLIENT_LIBS_A := $(call modlib,proto) $(call modlib,crypto) $(call modlib,common)
NODE_LIBS_A   := $(call modlib,node) $(call modlib,proto) $(call modlib,storage) \
                 $(call modlib,accel) $(call modlib,crypto) $(call modlib,common)

BINS  := $(BUILD)/kvnode $(BUILD)/kvcli $(BUILD)/kvbench
SIM_BENCH := $(BUILD)/bench_sim
ACCEL_BENCH := $(BUILD)/bench_accel
UNIT_SRCS := $(wildcard tests/unit/test_*.c)
SIM_TEST_SRCS := $(wildcard tests/sim/test_*.c)
UNITS := $(UNIT_SRCS:tests/unit/%.c=$(BUILD)/tests/%) \
         $(SIM_TEST_SRCS:tests/sim/%.c=$(BUILD)/tests/%)
SIM_OBJS := $(BUILD)/tests/sim/sim.o
# The fakes unit and simulator tests share (tests/fake/).
FAKE_LIB := $(BUILD)/libfake.a
FAKE_OBJS := $(patsubst %.c,$(BUILD)/%.o,$(wildcard tests/fake/*.c))

FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BUILD := build/fuzz
FUZZERS := $(FUZZ_SRCS:tests/fuzz/%.c=$(FUZZ_BUILD)/%)
FUZZ_SECONDS ?= 60
FAULT_SECONDS ?= 600
FAULT_ARGS ?=

PREFIX ?= /usr/local

.SECONDARY:

.PHONY: all help deps test unit integration fuzz-replay check fuzz bench geo \
        install clean format cluster fault sim-seeds check-layers

all: $(BINS)
	@ln -sfn $(MODE) build/current
	@mkdir -p bin && for b in kvnode kvcli kvbench; do \
	    ln -sf ../$(BUILD)/$$b bin/$$b; done

help:
	@echo "make            build kvnode, kvcli and kvbench (bin/ links to them)"
	@echo "make deps       install the Debian packages essaim needs (sudo when not root)"
	@echo "make cluster    build, then start a local node in ./demo and show a put and a get"
	@echo "make test       unit and simulator tests, integration tests with real processes, fuzz corpus replay"
	@echo "make check      the layering check, then the same tests under AddressSanitizer +"
	@echo "                UndefinedBehaviorSanitizer"
	@echo "make fuzz       run every libFuzzer target for FUZZ_SECONDS (default 60) each"
	@echo "make fault      the fault-injection run: FAULT_SECONDS (default 600) of kills, pauses,"
	@echo "                partitions, loss, corruption, skew and a full map; then the checker"
	@echo "                (FAULT_ARGS=\"--seed N\" replays a run; report in build/fault/)"
	@echo "make geo        the geodistribution report: 3 regions of 3 nodes over a WAN made with"
	@echo "                delays (eu-us 40, us-ap 80, eu-ap 110 ms one way), latency per level and"
	@echo "                region, WAN bytes per op, a GEO_OUTAGE_S (60) region outage; build/geo/"
	@echo "make sim-seeds  every simulator test over SIM_SEEDS seeds (default 300)"
	@echo "make bench      kvbench figures from 1 node and from 3 nodes (N=3, quorum), then membership figures from the simulator"
	@echo "make install    install the programs under PREFIX (default /usr/local)"
	@echo "make format     format every C file with .clang-format"
	@echo "make clean      remove build outputs"

deps:
	@sh tools/install-deps.sh

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# The OpenCL kernels, embedded as C strings: accel/kernels/NAME.cl becomes
# accel_kernel_NAME[].
$(BUILD)/accel/kernels.c: $(wildcard accel/kernels/*.cl)
	@mkdir -p $(dir $@)
	@for f in $^; do n=$$(basename $$f .cl); \
	    echo "const char accel_kernel_$$n[] ="; \
	    sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/    "/' -e 's/$$/\\n"/' $$f; \
	    echo "    ;"; done > $@

$(BUILD)/accel/kernels.o: $(BUILD)/accel/kernels.c
	$(CC) $(CFLAGS) -Wno-overlength-strings -c $< -o $@

$(BUILD)/libcommon.a: $(call mod_objs,common)
$(BUILD)/libcrypto.a: $(call mod_objs,crypto)
$(BUILD)/libproto.a: $(call mod_objs,proto)
$(BUILD)/libstorage.a: $(call mod_objs,storage)
$(BUILD)/libaccel.a: $(call mod_objs,accel) $(BUILD)/accel/kernels.o
$(BUILD)/libnode.a: $(call mod_objs,node)
$(BUILD)/lib%.a:
	@rm -f $@
	ar rcs $@ $^

$(FAKE_LIB): $(FAKE_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/kvnode: $(BUILD)/node/main.o $(NODE_LIBS_A)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(BUILD)/kvcli: $(BUILD)/tools/kvcli.o $(BUILD)/tools/kvcli_admin.o $(CLIENT_LIBS_A)
	$(CC) $(LDFLAGS) -o $@ $^ $(CLIENT_LIBS)

$(BUILD)/kvbench: $(BUILD)/tools/kvbench.o $(CLIENT_LIBS_A)
	$(CC) $(LDFLAGS) -o $@ $^ $(CLIENT_LIBS)

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(FAKE_LIB) $(NODE_LIBS_A)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(CMOCKA_LIBS) $(PKG_LIBS)

$(SIM_BENCH): $(BUILD)/tests/bench/bench_sim.o $(SIM_OBJS) $(FAKE_LIB) $(NODE_LIBS_A)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(ACCEL_BENCH): $(BUILD)/tests/bench/bench_accel.o $(FAKE_LIB) $(NODE_LIBS_A)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(BUILD)/tests/test_sim_%: $(BUILD)/tests/sim/test_sim_%.o $(SIM_OBJS) $(FAKE_LIB) $(NODE_LIBS_A)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(CMOCKA_LIBS) $(PKG_LIBS)

unit: $(UNITS)
	@sh tests/run-unit.sh $(UNITS)

# The durability test's power cut (tests/integration/powercut.c), loaded
# into kvnode with LD_PRELOAD: never built with the sanitizers.
POWERCUT := $(BUILD)/tests/libpowercut.so
$(POWERCUT): tests/integration/powercut.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -D_GNU_SOURCE -O2 $(WARN) -fPIC -shared -o $@ $< -ldl -lpthread

integration: all $(POWERCUT)
	@/usr/bin/python3 tests/integration/run.py --bin $(BUILD)

# Replays the saved corpus of every fuzz target (clang + libFuzzer).
fuzz-replay: $(FUZZERS)
	@set -e; for f in $(FUZZERS); do n=$$(basename $$f); \
	    $$f -runs=0 tests/fuzz/corpus/$$n >/dev/null 2>&1 || \
	    { echo "fuzz replay failed: $$n"; $$f -runs=0 tests/fuzz/corpus/$$n; exit 1; }; \
	    echo "fuzz replay ok: $$n ($$(ls tests/fuzz/corpus/$$n | wc -l) inputs)"; done

test: all unit integration fuzz-replay

check: check-layers
	$(MAKE) MODE=asan all unit integration
	$(MAKE) fuzz-replay

# Fails when a file includes a header from a layer above its own (DESIGN §2).
check-layers:
	@sh tools/check-layers.sh

FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -g -O1 -fsanitize=fuzzer,address,undefined \
               $(WARN) $(PKG_CFLAGS)
$(FUZZ_BUILD)/%: tests/fuzz/%.c $(LIB_SRCS) $(wildcard */*.h)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -o $@ $< $(LIB_SRCS) $(PKG_LIBS)

# fuzz_peer drives the node core over the fakes: the sans-I/O node modules
# and tests/fake/ come with it (nothing that needs libev or a device).
FUZZ_NODE_SRCS := $(filter-out node/main.c node/server.c node/clients.c \
                    node/transport.c \
                    node/conn.c node/service.c,$(wildcard node/*.c)) \
                  $(wildcard tests/fake/*.c)
$(FUZZ_BUILD)/fuzz_peer: tests/fuzz/fuzz_peer.c $(LIB_SRCS) $(FUZZ_NODE_SRCS) \
                         $(wildcard */*.h) $(wildcard tests/fake/*.h)
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -o $@ $< $(LIB_SRCS) $(FUZZ_NODE_SRCS) $(PKG_LIBS)

fuzz: $(FUZZERS)
	@for f in $(FUZZERS); do n=$$(basename $$f); mkdir -p tests/fuzz/corpus/$$n; \
	    echo "== fuzzing $$n for $(FUZZ_SECONDS)s"; \
	    $$f -max_total_time=$(FUZZ_SECONDS) -max_len=70000 \
	        tests/fuzz/corpus/$$n || exit 1; done

bench: all $(SIM_BENCH) $(ACCEL_BENCH)
	@sh tools/bench.sh $(BUILD)
	@$(SIM_BENCH)
	@$(ACCEL_BENCH) $(ACCEL_BENCH_ARGS)

# Every simulator test over SIM_SEEDS seeds (300 by default).
SIM_SEEDS ?= 300
sim-seeds: $(filter $(BUILD)/tests/test_sim_%,$(UNITS))
	@SIM_SEEDS=$(SIM_SEEDS) sh tools/sim-seeds.sh $^

# The long fault-injection run (make test runs a short schedule of it).
fault: all
	@/usr/bin/python3 tools/fault_run.py --bin $(BUILD) \
	    --duration $(FAULT_SECONDS) --out build/fault $(FAULT_ARGS)

# The geodistribution report: 3 regions of 3 nodes over a WAN made with
# the fault layer (tools/geo_run.py; about 3 minutes).
GEO_OUTAGE_S ?= 60
geo: all
	@/usr/bin/python3 tools/geo_run.py --bin $(BUILD) --out build/geo \
	    --outage-s $(GEO_OUTAGE_S)

cluster: all
	@sh tools/local-cluster.sh

install: all
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(BINS) $(DESTDIR)$(PREFIX)/bin/

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build bin

-include $(shell find build -name '*.d' 2>/dev/null)
