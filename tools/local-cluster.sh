#!/bin/sh
# Starts a local essaim node in ./demo (keys, data and log live there), then
# shows a put and a get. Run again: it reuses the running node.
set -eu

DEMO=${DEMO:-demo}
ADDR=${ADDR:-127.0.0.1:7400}
BIN=${BIN:-bin}
mkdir -p "$DEMO"
# kvcli pins the node's key; the demo keeps its own list, so that a new
# demo on the same port is not taken for an impostor.
export KV_KNOWN_NODES="$DEMO/known_nodes"
[ -f "$DEMO/cluster.key" ] || "$BIN/kvcli" keygen "$DEMO/cluster.key"
[ -f "$DEMO/client.key" ] || "$BIN/kvcli" keygen "$DEMO/client.key"

# Ask the node itself: a pid can outlive its process (a zombie) or be reused.
if "$BIN/kvcli" --node "$ADDR" --key "$DEMO/client.key" status >/dev/null 2>&1; then
    echo "kvnode already running on $ADDR"
else
    nohup "$BIN/kvnode" --data "$DEMO/node1" --listen "$ADDR" \
        --cluster-key "$DEMO/cluster.key" --client-key "$DEMO/client.key" \
        >>"$DEMO/node1.log" 2>&1 &
    echo $! >"$DEMO/kvnode.pid"
    i=0
    until "$BIN/kvcli" --node "$ADDR" --key "$DEMO/client.key" status >/dev/null 2>&1; do
        i=$((i + 1))
        if [ $i -gt 100 ]; then
            echo "kvnode did not start; see $DEMO/node1.log" >&2
            tail -5 "$DEMO/node1.log" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "kvnode started (pid $(cat "$DEMO/kvnode.pid")) on $ADDR, log in $DEMO/node1.log"
fi

export KV_NODE="$ADDR" KV_KEY="$DEMO/client.key"
echo "\$ kvcli put greeting 'hello, essaim'"
"$BIN/kvcli" put greeting 'hello, essaim'
echo "\$ kvcli get greeting"
"$BIN/kvcli" get greeting
echo
echo "Talk to it yourself:"
echo "  export KV_NODE=$ADDR KV_KEY=$DEMO/client.key KV_KNOWN_NODES=$DEMO/known_nodes PATH=\$PWD/bin:\$PATH"
echo "  kvcli put KEY VALUE; kvcli get KEY; kvcli status"
echo "Stop it: kill \$(cat $DEMO/kvnode.pid)"
