#!/bin/sh
# Build the libFuzzer harnesses (memcached front ends, server and manager RPC, replace
# stream) with clang, ASan and UBSan:
#   test/fuzz/build.sh [outdir]        (default: $KUMO_BUILD_DIR/fuzz, build/fuzz)
# Needs the autotools build first (for the ragel-generated memtext.c).  Run a harness:
#   build/fuzz/fuzz_frontend -max_total_time=3600 test/fuzz/corpus/frontend
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
bld=${KUMO_BUILD_DIR:-$top/build}
out=${1:-$bld/fuzz}
mkdir -p "$out"
CC=${CC:-clang}
memtext="$bld/src/gateway/memtext.c"
[ -f "$memtext" ] || { echo "build first (scripts/build.sh): $memtext is missing" >&2; exit 1; }
san="address,undefined -fno-sanitize-recover=undefined"
cflags="-g -O1 -std=gnu11 -I$top/src -I$bld/src -I$bld
  $(pkg-config --cflags msgpack-c 2>/dev/null || pkg-config --cflags msgpack 2>/dev/null || true)
  $(pkg-config --cflags tokyocabinet)"
libs="-lev $(pkg-config --libs msgpack-c 2>/dev/null || pkg-config --libs msgpack 2>/dev/null || echo -lmsgpackc)
  $(pkg-config --libs tokyocabinet) -lcrypto -lz -lpthread -lm"
# every library source (a new file never breaks the harness build), each compiled once,
# two compilers at a time; the harnesses link the objects they need
obj="$out/obj"
rm -rf "$obj"
mkdir -p "$obj"
srcs="$(ls "$top"/src/logic/*.c "$top"/src/rpc/*.c "$top"/src/net/*.c "$top"/src/server/*.c \
    "$top"/src/manager/*.c "$top"/src/gateway/*.c | grep -v '/main\.c$' | grep -v '/memtext\.c$') $memtext"
# shellcheck disable=SC2086
for f in $srcs; do
    d=$(basename "$(dirname "$f")")
    [ "$f" = "$memtext" ] && d=gateway
    echo "$f $obj/${d}_$(basename "$f" .c).o"
done | CC=$CC CFLAGS="$cflags -fsanitize=fuzzer-no-link,$san" \
    xargs -P2 -n2 sh -c '$CC $CFLAGS -c -o "$2" "$1"' sh
link() {
    name=$1
    shift
    # shellcheck disable=SC2086
    $CC $cflags -fsanitize=fuzzer,$san -o "$out/$name" "$top/test/fuzz/$name.c" "$@" $libs
}
logic=$(ls "$obj"/logic_*.o)
rpc=$(ls "$obj"/rpc_*.o "$obj"/net_*.o)
# shellcheck disable=SC2086
link fuzz_memtext "$obj/gateway_memtext.o"
# shellcheck disable=SC2086
link fuzz_frontend "$obj"/gateway_*.o $rpc $logic
# shellcheck disable=SC2086
link fuzz_rpc_server "$obj"/server_*.o $rpc $logic
# shellcheck disable=SC2086
link fuzz_stream "$obj"/server_*.o $rpc $logic
# shellcheck disable=SC2086
link fuzz_rpc_manager "$obj"/manager_*.o $rpc $logic
echo "built $out/fuzz_memtext $out/fuzz_frontend $out/fuzz_rpc_server $out/fuzz_stream $out/fuzz_rpc_manager"
