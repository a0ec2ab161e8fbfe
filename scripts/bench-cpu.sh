#!/usr/bin/env bash
# Where the CPU goes, side by side (issue 12): for each row of scripts/bench.sh, kumofs
# (3 servers, 1 gateway) and twemproxy in front of 3 memcached run the same kumo-bench
# load one after the other, and this prints the CPU microseconds per request of every
# process - the load generator too - with its context switches per request.  On a
# machine whose cores are all busy, ops/s is about (cores x 1e6) / (total us per op), so
# the table says which process a ratio is lost or won in.
# A benchmark tool, not a test: prints figures, judges nothing.
#
#   scripts/bench-cpu.sh [--rows LIST] [--time SEC] [--keys N]
#
#   --rows LIST  rows of bench.sh (1 = 90% gets, 2 = sets, 3 = gets, 4 = 90/10 c16,
#                5 = 90/10 100 B, 6 = depth 8); default 2,3
#   --time SEC   measured seconds per run (default 5)
#   --keys N     distinct keys (default 100000)
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
bin=${KUMO_BUILD_DIR:-$top/build}
gen="$bin/test/tools/kumo-bench"
rows="2,3" secs=5 keys=100000
usage() { sed -n '10,15p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
    --rows) rows=${2:?}; shift 2 ;;
    --time) secs=${2:?}; shift 2 ;;
    --keys) keys=${2:?}; shift 2 ;;
    *) usage ;;
    esac
done
[[ "$secs" =~ ^[1-9][0-9]*$ && "$keys" =~ ^[1-9][0-9]*$ && "$rows" =~ ^[1-6](,[1-6])*$ ]] || usage
[ -x "$gen" ] || { echo "bench-cpu.sh: missing $gen (run scripts/build.sh)" >&2; exit 2; }
export PATH=$PATH:/usr/sbin
for p in memcached nutcracker; do
    command -v $p >/dev/null || { echo "bench-cpu.sh: $p not found (scripts/install-deps.sh installs it)" >&2; exit 2; }
done
row_name=("" "90% gets" "sets only" "gets only" "90/10, c=16" "90/10, 100 B" "90/10, 100 B, c=16 depth 8")
row_opts=("" "-c 64 -v 1024 -r 0.9" "-c 64 -v 1024 -r 0" "-c 64 -v 1024 -r 1" "-c 16 -v 1024 -r 0.9"
          "-c 64 -v 100 -r 0.9" "-c 16 -d 8 -v 100 -r 0.9")

dir=$(mktemp -d /tmp/kumo-bench-XXXXXX)
. "$top/scripts/bench-lib.sh"
cleanup() { bench_stop_all; rm -rf "$dir"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

bench_start_cluster cpu || exit 1
kumo_pids="$(cat "$d/gateway.pid") $(cat "$d/server1.pid") $(cat "$d/server2.pid") $(cat "$d/server3.pid")"
started=$bench_pids
bench_start_twemproxy
twem_pids=${bench_pids#"$started"}
# nutcracker was started last: list it first, like the gateway
set -- $twem_pids; twem_pids="${!#} ${*:1:$(($# - 1))}"
hz=$(getconf CLK_TCK)

# CPU ticks (user + system) and context switches (all threads) of each pid
cpu_of() { for p in "$@"; do awk '{ printf "%d ", $14 + $15 }' "/proc/$p/stat"; done; }
csw_of() {
    for p in "$@"; do
        cat /proc/"$p"/task/*/status | awk '/ctxt_switches/ { s += $2 } END { printf "%d ", s }'
    done
}
# children's user+system seconds so far, from this shell's `times` (not in a subshell:
# a fork starts with no children's time)
child_sec() { awk 'NR == 2 { gsub(/[ms]/, " "); print $1 * 60 + $2 + $3 * 60 + $4 }' "$dir/times"; }

run() {   # run NAME TARGET "PIDS" OPTS...
    local name=$1 target=$2 pids=$3; shift 3
    "$gen" -q -s "$target" -n "$keys" "$@" --preload -t 0 >/dev/null 2>&1
    local c0 s0 l0 c1 s1 l1
    times >"$dir/times"
    c0=$(cpu_of $pids); s0=$(csw_of $pids); l0=$(child_sec)
    "$gen" -q -s "$target" -n "$keys" -t "$secs" -w 1 "$@" >"$dir/out" 2>&1
    times >"$dir/times"
    c1=$(cpu_of $pids); s1=$(csw_of $pids); l1=$(child_sec)
    local ops n
    ops=$(sed -n 's/.*ops_per_s=\([0-9]*\).*/\1/p' "$dir/out")
    [ -n "$ops" ] && [ "$ops" -gt 0 ] || { echo "  $name: no result: $(cat "$dir/out")"; return; }
    n=$((ops * (secs + 1)))    # the warm-up second runs at the same rate
    printf "  %-10s %7d ops/s " "$name" "$ops"
    set -- $c0; local a=("$@"); set -- $c1; local b=("$@")
    set -- $s0; local sa=("$@"); set -- $s1; local sb=("$@")
    local i=0 total=0 line=""
    for p in $pids; do
        local dt=$((b[i] - a[i]))
        total=$((total + dt))
        line="$line $(ps -o comm= -p "$p" | cut -c1-12):$(awk -v t=$dt -v hz=$hz -v n=$n -v c=$((sb[i] - sa[i])) \
            'BEGIN { printf "%.1f(%.2f)", t * 1e6 / hz / n, c / n }')"
        i=$((i + 1))
    done
    local load daemons
    load=$(awk -v a="$l0" -v b="$l1" -v n=$n 'BEGIN { printf "%.1f", (b - a) * 1e6 / n }')
    daemons=$(awk -v t=$total -v hz=$hz -v n=$n 'BEGIN { printf "%.1f", t * 1e6 / hz / n }')
    echo "| loader $load + daemons $daemons = $(awk -v a=$load -v b=$daemons 'BEGIN { printf "%.1f", a + b }') us/op |$line"
}

echo "bench-cpu.sh: CPU microseconds per request (context switches per request); $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
for r in ${rows//,/ }; do
    read -r -a opts <<<"${row_opts[$r]}"
    echo "row $r: ${row_name[$r]} (${row_opts[$r]})"
    run twemproxy "$twem" "$twem_pids" "${opts[@]}"
    run kumofs "$gw" "$kumo_pids" "${opts[@]}"
done
