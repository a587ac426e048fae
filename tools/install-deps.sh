#!/bin/sh
# Installs the Debian 12 packages essaim needs to build and test, with sudo
# when not root. Installs nothing that is already there.
set -eu

PKGS="make gcc pkg-config libsodium-dev libmsgpack-dev libev-dev liblmdb-dev
libinih-dev libcmocka-dev clang libclang-rt-14-dev python3 python3-msgpack
python3-dissononce ocl-icd-opencl-dev opencl-headers pocl-opencl-icd"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $p"
    fi
done
if [ -z "$missing" ]; then
    echo "deps: all packages present"
    exit 0
fi
echo "deps: installing$missing"
if [ "$(id -u)" -eq 0 ]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "deps: need root or sudo to install:$missing" >&2
    exit 1
fi
$SUDO apt-get update -qq
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
