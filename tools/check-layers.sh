#!/bin/sh
# make check-layers: every #include "..." against DESIGN §2's arrows, and the
# libraries only their own module may include. Prints each violation and
# fails if there is one.
#
#   tools ──► proto ──► crypto ──► common
#   node  ──► proto, crypto, storage, accel, common
#   storage, accel ──► common
cd "$(dirname "$0")/.." || exit 2
allowed() {
    case $1 in
    common) echo "common" ;;
    crypto) echo "crypto common" ;;
    proto) echo "proto crypto common" ;;
    storage) echo "storage common" ;;
    accel) echo "accel common" ;;
    node) echo "node proto crypto storage accel common" ;;
    tools) echo "tools proto crypto common" ;;
    esac
}
bad=0
for mod in common crypto proto storage accel node tools; do
    ok=$(allowed "$mod")
    for f in $(git ls-files "$mod/*.c" "$mod/*.h"); do
        for inc in $(sed -n 's/^#include "\(.*\)".*/\1/p' "$f"); do
            case $inc in
            ../*/*) target=$(echo "$inc" | cut -d/ -f2) ;;
            */*) target=$(echo "$inc" | cut -d/ -f1) ;;
            *) target=$mod ;;
            esac
            case " $ok " in
            *" $target "*) ;;
            *)
                echo "layering: $f includes $inc ($mod may use: $ok)"
                bad=1
                ;;
            esac
        done
    done
done
# Libraries that belong to one module (or one adapter) only.
only() { # header, then the files that may include it
    h=$1
    shift
    for f in $(git grep -l "^#include <$h>" -- '*.c' '*.h' ':!tests/*'); do
        case " $* " in
        *" $f "*) ;;
        *)
            echo "layering: $f includes <$h> (only $*)"
            bad=1
            ;;
        esac
    done
}
only ev.h node/server.c node/server_int.h node/clients.c node/transport.c node/conn.c node/conn.h
only lmdb.h storage/storage.c
only msgpack.h proto/wire.h proto/msg.c proto/gossip.c proto/wire.c
only CL/cl.h accel/opencl.c
only ini.h node/config.c
if [ "$bad" -ne 0 ]; then
    echo "check-layers: failed"
    exit 1
fi
echo "check-layers: every include follows the layers"
