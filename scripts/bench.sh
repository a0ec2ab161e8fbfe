#!/usr/bin/env bash
# The throughput benchmark of issue 12: kumofs (1 manager, 3 servers, 1 gateway) against
# twemproxy in front of 3 memcached and against one memcached, all started here on free
# loopback ports and stopped again (also on Ctrl-C).  The load generator is the project's
# own verifying kumo-bench (build/test/tools/kumo-bench): every get hit is checked.
#
#   scripts/bench.sh [--quick] [--rounds N] [--time SEC] [--rows LIST] [--keys N] [--keep]
#                    [--save FILE] [--baseline FILE] [--tolerance PCT]
#
#   --quick      smoke run: 1 round of 2 s per target and row, 20,000 keys
#   --rounds N   interleaved rounds per row (default 3; the table shows medians)
#   --time SEC   measured seconds per run (default 5, after 1 s of warm-up)
#   --rows LIST  only these rows, e.g. 2 or 1,3 (default: all six)
#   --keys N     distinct keys (default 100000)
#   --keep       keep the temporary directory (logs, every run's output)
#   --save FILE  write kumofs's ratio per row to FILE (a baseline for later runs)
#   --baseline FILE  compare kumofs's ratios with a saved run: a row whose ratio fell by
#                more than --tolerance percent (default 10) is a REGRESSION (exit 3)
#
# Per row and round the targets run one after another (twemproxy, kumofs, memcached);
# ratio = median over the rounds of (target ops/s / twemproxy ops/s in the same round).
# Binaries from $KUMO_BUILD_DIR (default ./build).  Exit status 1 if any run reported an
# error (a wrong, stale or lost value, a failed request), 2 on bad arguments, 3 when a
# row's ratio fell below the --baseline by more than the tolerance.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
bin=${KUMO_BUILD_DIR:-$top/build}
gen="$bin/test/tools/kumo-bench"
rounds=3 secs=5 warm=1 keys=100000 rows="1,2,3,4,5,6" keep=0 save="" baseline="" tolerance=10

usage() { sed -n '7,18p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
    --quick) rounds=1 secs=2 keys=20000; shift ;;
    --rounds) rounds=${2:?}; shift 2 ;;
    --time) secs=${2:?}; shift 2 ;;
    --rows) rows=${2:?}; shift 2 ;;
    --keys) keys=${2:?}; shift 2 ;;
    --keep) keep=1; shift ;;
    --save) save=${2:?}; shift 2 ;;
    --baseline) baseline=${2:?}; [ -r "$baseline" ] || usage; shift 2 ;;
    --tolerance) tolerance=${2:?}; shift 2 ;;
    *) usage ;;
    esac
done
[[ "$rounds" =~ ^[1-9][0-9]*$ && "$secs" =~ ^[1-9][0-9]*$ && "$keys" =~ ^[1-9][0-9]*$ ]] || usage

for f in src/manager/kumo-manager src/server/kumo-server src/gateway/kumo-gateway \
         tools/kumoctl/kumoctl test/tools/kumo-bench; do
    [ -x "$bin/$f" ] || { echo "bench.sh: missing $bin/$f (run scripts/build.sh first)" >&2; exit 2; }
done
for p in memcached nutcracker; do
    command -v $p >/dev/null || PATH=$PATH:/usr/sbin command -v $p >/dev/null ||
        { echo "bench.sh: $p not found (scripts/install-deps.sh installs it)" >&2; exit 2; }
done
export PATH=$PATH:/usr/sbin

dir=$(mktemp -d /tmp/kumo-bench-XXXXXX)
. "$top/scripts/bench-lib.sh"
cleanup() {
    bench_stop_all
    if [ $keep = 1 ]; then echo "bench.sh: kept $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'echo "bench.sh: interrupted" >&2; exit 130' INT TERM

# The rows of issue 12: name and kumo-bench options (1 KiB values unless said).
row_name=("" "90% gets" "sets only" "gets only" "90/10, c=16" "90/10, 100 B" "90/10, 100 B, c=16 depth 8")
row_opts=("" "-c 64 -v 1024 -r 0.9" "-c 64 -v 1024 -r 0" "-c 64 -v 1024 -r 1" "-c 16 -v 1024 -r 0.9"
          "-c 64 -v 100 -r 0.9" "-c 16 -d 8 -v 100 -r 0.9")

echo "bench.sh: starting kumofs, twemproxy + 3 memcached, memcached in $dir"
bench_start_cluster kumofs || exit 1
bench_start_twemproxy || exit 1
bench_start_memcached || exit 1
names=(twemproxy kumofs memcached)
addrs=("$twem" "$gw" "$mc")
echo "bench.sh: twemproxy=$twem kumofs=$gw memcached=$mc; $rounds round(s) of ${secs} s, $keys keys"

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p" <<<" $2"; }
median() { tr ' ' '\n' | grep -E '^[0-9.]+$' | sort -g | awk '{a[NR]=$1} END {
    if (NR == 0) { print "NA"; exit }
    if (NR % 2) m = a[(NR + 1) / 2]; else m = (a[NR / 2] + a[NR / 2 + 1]) / 2
    print m }'; }

status=0
preloaded=""
# run NAME ADDR OUTFILE OPTIONS...: one kumo-bench run; prints its RESULT line (runs in
# a subshell: the caller judges the line)
run() {
    local name=$1 addr=$2 out=$3; shift 3
    "$gen" -q -s "$addr" -n "$keys" "$@" >"$out" 2>&1
    local rc=$? line
    line=$(grep '^RESULT ' "$out" | tail -1)
    if [ $rc -ne 0 ] || [ -z "$line" ]; then
        echo "  ** $name: kumo-bench exit $rc, see $out:" >&2
        grep -v '^RESULT' "$out" | head -5 | sed 's/^/     /' >&2
    fi
    echo "$line"
}

declare -a table
for r in ${rows//,/ }; do
    [[ "$r" =~ ^[1-6]$ ]] || { echo "bench.sh: no row $r" >&2; exit 2; }
    read -r -a opts <<<"${row_opts[$r]}"
    vsize=$(sed -n 's/.*-v \([0-9]*\).*/\1/p' <<<"${row_opts[$r]}")
    # every target holds every key at this value size before the row (gets hit)
    if [[ " $preloaded " != *" $vsize "* ]]; then
        for j in 0 1 2; do
            line=$(run "${names[$j]}" "${addrs[$j]}" "$dir/preload-$vsize-${names[$j]}.txt" \
                   --preload -t 0 -c 32 -v "$vsize")
            echo "  preload ${names[$j]} ($vsize B): $(field preload_sets_per_s "$line") sets/s"
            [ "$(field status "$line")" = 0 ] || status=1
        done
        preloaded="$preloaded $vsize"
    fi
    declare -A ops=() p99=() ratio=() errs=()
    load0=$(cut -d' ' -f1 /proc/loadavg)
    for ((k = 1; k <= rounds; k++)); do
        base=""
        for j in 0 1 2; do
            line=$(run "${names[$j]}" "${addrs[$j]}" "$dir/row$r-${names[$j]}-$k.txt" \
                   "${opts[@]}" -t "$secs" -w "$warm")
            o=$(field ops_per_s "$line"); o=${o:-0}
            ops[$j]+="$o "; p99[$j]+="$(field p99_us "$line") "
            e=0
            for f in errors set_fail mismatches stale lost unmeasured_failures; do
                v=$(field $f "$line"); e=$((e + ${v:-1}))
            done
            errs[$j]=$(( ${errs[$j]:-0} + e ))
            [ "$(field status "$line")" = 0 ] || status=1
            [ $j = 0 ] && base=$o
            ratio[$j]+="$(awk -v a="$o" -v b="$base" 'BEGIN { if (b > 0) printf "%.4f", a / b; else print "NA" }') "
            printf '  row %d round %d/%d %-10s %8s ops/s  p99 %6s us  errors %s\n' "$r" "$k" "$rounds" \
                "${names[$j]}" "$o" "$(field p99_us "$line")" "$e"
        done
    done
    load1=$(cut -d' ' -f1 /proc/loadavg)
    cells=""
    for j in 0 1 2; do
        cells+=$(printf '| %8.0f %6.3f %6.0f %3s ' "$(median <<<"${ops[$j]}")" "$(median <<<"${ratio[$j]}")" \
                 "$(median <<<"${p99[$j]}")" "${errs[$j]}")
    done
    table[$r]=$(printf '%-27s %s| %s-%s' "${row_name[$r]}" "$cells" "$load0" "$load1")
    kratio[$r]=$(median <<<"${ratio[1]}")
done

echo
echo "medians of $rounds interleaved round(s), ${secs} s each, $keys keys; ratio = ops/s / twemproxy's"
printf '%-27s | %-27s| %-27s| %-27s| %s\n' "" twemproxy kumofs memcached "load avg"
printf '%-27s ' workload; for j in 0 1 2; do printf '| %8s %6s %6s %3s ' ops/s ratio p99us err; done; echo "|"
for r in ${rows//,/ }; do echo "${table[$r]}"; done
if [ -n "$save" ]; then
    { echo "# scripts/bench.sh ratios of kumofs to twemproxy, $(date -u '+%F %T') UTC, load $(cut -d' ' -f1-3 /proc/loadavg)"
      for r in ${rows//,/ }; do printf '%s\t%s\t%s\n' "$r" "${kratio[$r]}" "${row_name[$r]}"; done; } >"$save"
    echo "ratios saved to $save"
fi
if [ -n "$baseline" ]; then
    echo
    echo "kumofs against the baseline $baseline (a drop over $tolerance % is a regression):"
    for r in ${rows//,/ }; do
        old=$(awk -F'\t' -v r="$r" '$1 == r { print $2 }' "$baseline")
        [ -n "$old" ] || { printf '  %-27s no baseline\n' "${row_name[$r]}"; continue; }
        verdict=$(awk -v a="${kratio[$r]}" -v b="$old" -v t="$tolerance" 'BEGIN {
            d = (a - b) / b * 100; printf "%6.3f vs %6.3f  %+6.1f %%  %s", a, b, d, (d < -t ? "REGRESSION" : "ok") }')
        printf '  %-27s %s\n' "${row_name[$r]}" "$verdict"
        [[ "$verdict" == *REGRESSION ]] && [ $status = 0 ] && status=3
    done
fi
[ $status != 1 ] || echo "bench.sh: some runs reported errors (see above)" >&2
exit $status
