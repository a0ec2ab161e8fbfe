#!/bin/sh
# The whole test suite: install what is missing, build, run the C unit tests
# (make check) and the end-to-end tests (pytest against real daemons on loopback).
# Last line: "N passed, N failed[, N skipped]".
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
./scripts/install-deps.sh || exit 1
./scripts/build.sh || { echo "build failed"; echo "0 passed, 1 failed"; exit 1; }

cd "$top/build"
make -j"$(nproc 2>/dev/null || echo 2)" -s check >/dev/null 2>&1
unit_pass=$(sed -n 's/^# PASS: *\([0-9]*\).*/\1/p' test-suite.log | head -1)
unit_fail=$(sed -n 's/^# FAIL: *\([0-9]*\).*/\1/p' test-suite.log | head -1)
unit_err=$(sed -n 's/^# ERROR: *\([0-9]*\).*/\1/p' test-suite.log | head -1)
unit_skip=$(sed -n 's/^# SKIP: *\([0-9]*\).*/\1/p' test-suite.log | head -1)
unit_pass=${unit_pass:-0}; unit_fail=$(( ${unit_fail:-0} + ${unit_err:-0} )); unit_skip=${unit_skip:-0}
echo "unit tests: $unit_pass passed, $unit_fail failed, $unit_skip skipped"
if [ "$unit_fail" -ne 0 ]; then
    grep -E '^(not ok|FAIL|ERROR)' test/unit/*.log 2>/dev/null | head -40
fi

cd "$top"
junit="$top/build/e2e-junit.xml"
rm -f "$junit"
KUMO_BUILD_DIR="$top/build" /usr/bin/python3 -m pytest -q -p no:cacheprovider \
    --junitxml="$junit" test/e2e
counts=$(/usr/bin/python3 - "$junit" <<'PY'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception:
    print("0 1 0"); sys.exit()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
t = f = e = s = 0
for su in suites:
    t += int(su.get("tests", 0)); f += int(su.get("failures", 0))
    e += int(su.get("errors", 0)); s += int(su.get("skipped", 0))
print(t - f - e - s, f + e, s)
PY
)
set -- $counts
e2e_pass=$1; e2e_fail=$2; e2e_skip=$3
echo "e2e tests: $e2e_pass passed, $e2e_fail failed, $e2e_skip skipped"

pass=$((unit_pass + e2e_pass)); fail=$((unit_fail + e2e_fail)); skip=$((unit_skip + e2e_skip))
if [ "$skip" -gt 0 ]; then
    echo "$pass passed, $fail failed, $skip skipped"
else
    echo "$pass passed, $fail failed"
fi
[ "$fail" -eq 0 ]
