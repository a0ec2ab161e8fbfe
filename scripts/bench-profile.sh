#!/usr/bin/env bash
# Where a set's time goes (issue 12): a throw-away cluster (1 manager, 3 servers, 1
# gateway on free loopback ports) under a kumo-bench sets-only load, and per set:
#   - CPU microseconds of each server and of the gateway (/proc/PID/stat);
#   - malloc calls of server 1 and the gateway (a perf uprobe on libc's malloc, as root);
#   - syscalls of server 1 and the gateway (strace -c; slows them while it runs);
#   - perf record -g of server 1 and the gateway (top functions).
# A benchmark tool, not a test: prints figures, judges nothing.  Needs perf and strace
# (Debian: linux-perf, strace) for the last three; without them those parts are skipped.
#
#   scripts/bench-profile.sh [OUTDIR] [-- KUMO_BENCH_OPTIONS...]
#
# Default load: -c 64 -v 1024 -r 0 over 100,000 preloaded keys.  OUTDIR (default a new
# temporary directory) keeps perf data and reports.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
bin=${KUMO_BUILD_DIR:-$top/build}
gen="$bin/test/tools/kumo-bench"
out=${1:-}
[ $# -gt 0 ] && shift
[ "${1:-}" = -- ] && shift
[ -n "$out" ] || out=$(mktemp -d /tmp/kumo-profile-XXXXXX)
mkdir -p "$out"
[ -x "$gen" ] || { echo "bench-profile.sh: missing $gen (run scripts/build.sh)" >&2; exit 2; }
load=(-n 100000 -c 64 -v 1024 -r 0 "$@")

dir=$(mktemp -d /tmp/kumo-bench-XXXXXX)
. "$top/scripts/bench-lib.sh"
probe_added=0
cleanup() {
    bench_stop_all
    rm -rf "$dir"
    [ $probe_added = 1 ] && perf probe -q -d probe_libc:malloc 2>/dev/null
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bench_start_cluster p || exit 1
spid=$(cat "$d/server1.pid"); gpid=$(cat "$d/gateway.pid")
pids="$(cat "$d/server1.pid") $(cat "$d/server2.pid") $(cat "$d/server3.pid") $gpid"
sets_of() { sed -n 's/.* sets=\([0-9]*\).*/\1/p' "$1"; }
per() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "NA" }'; }

echo "bench-profile.sh: cluster up (gateway $gw), load: ${load[*]}; output in $out"
"$gen" -q -s "$gw" "${load[@]}" --preload -t 0 >"$out/preload.txt" 2>&1

# 1. throughput and CPU per set (clock ticks of every daemon over one run)
ticks() { for p in "$@"; do awk '{ printf "%d ", $14 + $15 }' "/proc/$p/stat"; done; }
hz=$(getconf CLK_TCK)
t0=$(ticks $pids)
"$gen" -s "$gw" -t 5 -w 0 "${load[@]}" >"$out/load.txt" 2>&1
t1=$(ticks $pids)
n=$(sets_of "$out/load.txt")
{
    echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
    grep '^RESULT' "$out/load.txt"
    set -- $t0; a=("$@"); set -- $t1; b=("$@")
    i=0; total=0
    for name in server1 server2 server3 gateway; do
        d_t=$(( b[i] - a[i] )); total=$(( total + d_t ))
        echo "$name: $(awk -v t="$d_t" -v hz="$hz" -v n="$n" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }') us CPU per set"
        i=$((i + 1))
    done
    echo "all daemons: $(awk -v t="$total" -v hz="$hz" -v n="$n" 'BEGIN { printf "%.1f", t * 1e6 / hz / n }') us CPU per set"
} | tee "$out/summary.txt"

command -v perf >/dev/null || { echo "(perf not installed: no malloc count and no profile)"; exit 0; }

# 2. malloc calls per set
if perf probe -q -x "$(ldd "$bin/src/server/kumo-server" | awk '/libc\.so/ { print $3 }')" -a malloc 2>/dev/null; then
    probe_added=1
    "$gen" -s "$gw" -t 3 -w 0 "${load[@]}" >"$out/malloc-load.txt" 2>&1 & lp=$!
    perf stat -e probe_libc:malloc -p "$spid" -o "$out/malloc-server.txt" -- sleep 3 & m1=$!
    perf stat -e probe_libc:malloc -p "$gpid" -o "$out/malloc-gateway.txt" -- sleep 3 & m2=$!
    wait $lp $m1 $m2
    n=$(sets_of "$out/malloc-load.txt")
    for x in server gateway; do
        m=$(awk '/probe_libc/ { gsub(",", "", $1); print $1 }' "$out/malloc-$x.txt")
        echo "$x: $(per "${m:-0}" "$n") mallocs per set (${x/server/server1})" | tee -a "$out/summary.txt"
    done
    perf probe -q -d probe_libc:malloc 2>/dev/null; probe_added=0
fi

# 3. syscalls per set
if command -v strace >/dev/null; then
    "$gen" -s "$gw" -t 4 -w 0 "${load[@]}" >"$out/strace-load.txt" 2>&1 & lp=$!
    strace -c -f -p "$spid" -o "$out/strace-server.txt" 2>/dev/null & s1=$!
    strace -c -f -p "$gpid" -o "$out/strace-gateway.txt" 2>/dev/null & s2=$!
    wait $lp
    kill -INT $s1 $s2 2>/dev/null; wait $s1 $s2
    n=$(sets_of "$out/strace-load.txt")
    for x in server gateway; do
        c=$(awk '$NF == "total" { print $(NF-1) }' "$out/strace-$x.txt")
        echo "$x: $(per "${c:-0}" "$n") syscalls per set (under strace)" | tee -a "$out/summary.txt"
        awk 'NR > 2 && $NF != "total" && $1 !~ /^-/ { printf "    %-14s %s\n", $NF, $4 }' "$out/strace-$x.txt" \
            | head -6 | tee -a "$out/summary.txt"
    done
fi

# 4. perf profile, top functions
"$gen" -q -s "$gw" -t 7 -w 0 "${load[@]}" >"$out/perf-load.txt" 2>&1 & lp=$!
sleep 1
perf record -q -g -o "$out/perf-server.data" -p "$spid" -- sleep 4 2>/dev/null & p1=$!
perf record -q -g -o "$out/perf-gateway.data" -p "$gpid" -- sleep 4 2>/dev/null & p2=$!
wait $p1 $p2 $lp
for x in server gateway; do
    {
        echo "== $x: top functions (perf, self time)"
        perf report -i "$out/perf-$x.data" --no-children --stdio -g none --percent-limit 1 2>/dev/null \
            | grep -v '^#' | grep -v '^$' | head -15
        echo "== $x: by object"
        perf report -i "$out/perf-$x.data" --no-children --stdio -g none --sort dso 2>/dev/null \
            | grep -v '^#' | grep -v '^$' | head -6
    } | tee -a "$out/summary.txt"
done
