#!/bin/sh
# make bench: kvbench figures (50 connections, 100-byte values) from one node,
# then from a three-node cluster with N = 3 at quorum, side by side. Nodes run
# on free loopback ports in a temporary directory.
set -eu

B=${1:-build/release}
KEYS=${BENCH_KEYS:-100000}
CONNS=${BENCH_CONNECTIONS:-50}
SIZE=${BENCH_VALUE_SIZE:-100}
T=$(mktemp -d /tmp/essaim-bench-XXXXXX)
# Fresh keys on fresh ports every run: kvcli pins nothing here.
export KV_KNOWN_NODES=/dev/null
PIDS=""
trap 'for p in $PIDS; do kill $p 2>/dev/null; wait $p 2>/dev/null; done; rm -rf "$T"' EXIT INT TERM
"$B/kvcli" keygen "$T/cluster.key"
"$B/kvcli" keygen "$T/client.key"

free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start NAME PORT [kvnode options...]: starts a node and waits until it
# coordinates requests.
start() {
    name=$1 port=$2
    shift 2
    "$B/kvnode" --data "$T/$name" --listen "127.0.0.1:$port" --cluster-key "$T/cluster.key" \
        --client-key "$T/client.key" --log-level warn "$@" 2>"$T/$name.log" &
    PIDS="$PIDS $!"
    i=0
    until "$B/kvcli" --node "127.0.0.1:$port" --key "$T/client.key" put bench-probe x >/dev/null 2>&1; do
        i=$((i + 1)); [ $i -lt 200 ] || { cat "$T/$name.log"; exit 1; }; sleep 0.1
    done
}

bench() {
    "$B/kvbench" --node "127.0.0.1:$1" --key "$T/client.key" --connections "$CONNS" \
        --keys "$KEYS" --value-size "$SIZE" --label "$2"
}

echo "== kvbench on $(nproc) cores (clients and nodes share them)"
P1=$(free_port)
start single "$P1"
bench "$P1" "1 node"

P2=$(free_port); P3=$(free_port); P4=$(free_port)
start a "$P2" --zone a
start b "$P3" --zone b --join "127.0.0.1:$P2"
start c "$P4" --zone c --join "127.0.0.1:$P2"
# Until every node sees all three, rings differ; wait for one view.
i=0
until [ "$("$B/kvcli" --node "127.0.0.1:$P2" --key "$T/client.key" ring | grep -c alive)" = 3 ]; do
    i=$((i + 1)); [ $i -lt 200 ] || { echo "3 nodes did not form a ring"; exit 1; }; sleep 0.1
done
bench "$P2" "3 nodes, N=3, quorum"
