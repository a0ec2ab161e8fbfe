#!/bin/sh
# The whole suite (unit tests and e2e) against an AddressSanitizer + UndefinedBehaviorSanitizer
# build in ./build-asan, in one command:  scripts/test-asan.sh [pytest args, e.g. test/e2e/test_rt.py]
# Every instrumented process (unit tests, daemons started by the e2e harness in the
# background, tools) inherits ASAN_OPTIONS/UBSAN_OPTIONS and writes its reports to
# build-asan/sanitizer-logs/{asan,ubsan}.<pid>; the last line is "N sanitizer reports",
# and the script fails when N > 0 (or when a test failed).
#
# Leaks count: LeakSanitizer runs when a process exits normally, which every daemon does on
# SIGTERM (the e2e harness's stop and cleanup) after freeing its state, so a leak report is
# memory a daemon lost during its life.  Daemons killed with SIGKILL (the fault tests) exit
# without a report, which is no loss of coverage of anything else.
# Slow: about 3-4 times the normal suite (run it niced on a shared machine).  Not part of
# scripts/test.sh.  Needs clang (or gcc with libasan/libubsan: CC=gcc scripts/test-asan.sh).
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
bld="$top/build-asan"
logs="$bld/sanitizer-logs"
CC=${CC:-clang}

if [ ! -x configure ] || [ configure.ac -nt configure ] || [ Makefile.am -nt Makefile.in ]; then
    ./bootstrap || exit 1
fi
mkdir -p "$bld"
cd "$bld" || exit 1
if [ ! -f Makefile ] || [ ../configure -nt config.status ]; then
    ../configure -q --enable-sanitizers CC="$CC" CFLAGS="-g -O1" || { echo "configure failed"; exit 1; }
fi
make -j2 -s || { echo "build failed"; exit 1; }

rm -rf "$logs"
mkdir -p "$logs"
ASAN_OPTIONS="log_path=$logs/asan:detect_leaks=1:halt_on_error=1:abort_on_error=0:print_suppressions=0"
UBSAN_OPTIONS="log_path=$logs/ubsan:print_stacktrace=1:halt_on_error=1"
LSAN_OPTIONS="print_suppressions=0"
export ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS

status=0
make -j2 -s check >/dev/null 2>&1 || status=1
unit_fail=$(sed -n 's/^# FAIL: *\([0-9]*\).*/\1/p' test-suite.log | head -1)
unit_err=$(sed -n 's/^# ERROR: *\([0-9]*\).*/\1/p' test-suite.log | head -1)
unit_pass=$(sed -n 's/^# PASS: *\([0-9]*\).*/\1/p' test-suite.log | head -1)
echo "unit tests: ${unit_pass:-0} passed, $(( ${unit_fail:-0} + ${unit_err:-0} )) failed"

cd "$top" || exit 1
if [ $# -eq 0 ]; then
    set -- test/e2e
fi
KUMO_BUILD_DIR="$bld" /usr/bin/python3 -m pytest -q -p no:cacheprovider "$@" || status=1

# One log file per process with at least one report; count the reports themselves.
n=0
for f in "$logs"/*; do
    [ -f "$f" ] || continue
    c=$(grep -cE '^==[0-9]+==ERROR: |: runtime error: ' "$f")
    [ "$c" -gt 0 ] || continue
    echo "--- $f"
    grep -E 'ERROR: |runtime error: |SUMMARY: ' "$f" | head -5
    n=$((n + c))
done
echo "$n sanitizer reports"
[ "$n" -eq 0 ] && [ "$status" -eq 0 ]
