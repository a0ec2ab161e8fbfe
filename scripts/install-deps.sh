#!/bin/sh
# Install the Debian packages the build and the tests need, only those missing.
set -e
# ruby, ruby-msgpack: the original kumofs Ruby tools in test/e2e/test_interop.py;
# memcached, nutcracker (twemproxy): the reference servers of scripts/bench.sh;
# clang, libclang-rt-dev: the libFuzzer harnesses; iproute2, nftables: the namespace bed
PKGS="build-essential autoconf automake pkg-config libtokyocabinet-dev tokyocabinet-bin
libmsgpack-dev libssl-dev zlib1g-dev ragel libev-dev libncurses-dev libcmocka-dev
python3 python3-pytest python3-pymemcache python3-pylibmc libcache-memcached-fast-perl
libmemcached-tools memcached nutcracker procps tmux clang libclang-rt-dev iproute2 nftables
ruby ruby-msgpack"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "install-deps: installing$missing"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing
fi
