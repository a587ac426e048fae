#!/bin/sh
# make sim-seeds: every simulator test binary run once per seed, SIM_SEED=1
# to N (each test then runs that one seed instead of its own list), two at a
# time. Prints one line per binary and a closing count; a failing seed's
# output goes to build/sim-seeds/BINARY-SEED.log and replays with
# SIM_SEED=SEED BINARY.
set -u
N=${SIM_SEEDS:-300}
OUT=build/sim-seeds
mkdir -p "$OUT"
passed=0
failed=0
for t in "$@"; do
    name=$(basename "$t")
    bad=$(seq 1 "$N" | xargs -P 2 -I{} sh -c \
        'SIM_SEED={} "$1" >"$2/$3-{}.log" 2>&1 && rm -f "$2/$3-{}.log" || echo {}' \
        sh "$t" "$OUT" "$name" | sort -n | tr '\n' ' ')
    if [ -n "$bad" ]; then
        echo "$name: seeds failing: $bad(logs in $OUT/)"
        failed=$((failed + 1))
    else
        echo "$name: $N seeds passed"
        passed=$((passed + 1))
    fi
done
echo "sim-seeds: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
