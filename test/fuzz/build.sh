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
flags="-g -O1 -std=gnu11 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
  -I$top/src -I$bld/src -I$bld $(pkg-config --cflags msgpack-c 2>/dev/null || pkg-config --cflags msgpack 2>/dev/null || true)
  $(pkg-config --cflags tokyocabinet)"
libs="-lev $(pkg-config --libs msgpack-c 2>/dev/null || pkg-config --libs msgpack 2>/dev/null || echo -lmsgpackc)
  $(pkg-config --libs tokyocabinet) -lcrypto -lz -lpthread -lm"
# every library source, so a new file never breaks the harness build
logic=$(ls "$top"/src/logic/*.c)
rpc=$(ls "$top"/src/rpc/*.c)
gwsrc="$(ls "$top"/src/gateway/*.c | grep -v '/main\.c$') $memtext"
srvsrc=$(ls "$top"/src/server/*.c | grep -v '/main\.c$')
mgrsrc=$(ls "$top"/src/manager/*.c | grep -v '/main\.c$')
# two compilers at a time (the short run in the e2e suite builds them all)
pids=""
build_one() {
    # shellcheck disable=SC2086
    $CC $flags -o "$out/$1" "$top/test/fuzz/$1.c" $2 $libs &
    pids="$pids $!"
}
wait_all() {
    for p in $pids; do wait "$p"; done
    pids=""
}
build_one fuzz_memtext "$memtext"
build_one fuzz_frontend "$gwsrc $rpc $logic"
wait_all
build_one fuzz_rpc_server "$srvsrc $rpc $logic"
build_one fuzz_stream "$srvsrc $rpc $logic"
wait_all
build_one fuzz_rpc_manager "$mgrsrc $rpc $logic"
wait_all
echo "built $out/fuzz_memtext $out/fuzz_frontend $out/fuzz_rpc_server $out/fuzz_stream $out/fuzz_rpc_manager"
