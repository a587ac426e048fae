#!/bin/sh
# make bench: starts a node on a free loopback port in a temporary directory,
# runs kvbench (50 connections, 100-byte values) and prints the figures.
set -eu

B=${1:-build/release}
KEYS=${BENCH_KEYS:-100000}
CONNS=${BENCH_CONNECTIONS:-50}
SIZE=${BENCH_VALUE_SIZE:-100}
T=$(mktemp -d /tmp/essaim-bench-XXXXXX)
PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$T"' EXIT INT TERM
"$B/kvcli" keygen "$T/cluster.key"
"$B/kvcli" keygen "$T/client.key"
"$B/kvnode" --data "$T/data" --listen "127.0.0.1:$PORT" --cluster-key "$T/cluster.key" \
    --client-key "$T/client.key" --log-level warn 2>"$T/node.log" &
PID=$!
i=0
until "$B/kvcli" --node "127.0.0.1:$PORT" --key "$T/client.key" status >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -lt 100 ] || { cat "$T/node.log"; exit 1; }; sleep 0.1
done
echo "== kvbench: 1 node on $(nproc) cores"
"$B/kvbench" --node "127.0.0.1:$PORT" --key "$T/client.key" --connections "$CONNS" \
    --keys "$KEYS" --value-size "$SIZE" --label "1 node"
