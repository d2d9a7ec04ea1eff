#!/bin/sh
# Proves that a hung test cannot hold up the conformance run: runs a Criterion
# program built from the suite's helpers and one test that hangs, with a 2 s
# limit, and expects the hung test reported by name as failed, the test beside
# it passed, and the whole run over in well under the time a hang would take.
#   check-watchdog-teeth.sh PROGRAM OUTDIR
set -u
program="$1" out="$2"
mkdir -p "$out"
start=$(date +%s)
SA_TEST_TIMEOUT=2 timeout -k 5 60 "$program" --tap="$out/teeth.tap" --always-succeed \
  >"$out/teeth.log" 2>&1
rc=$?
elapsed=$(($(date +%s) - start))
fail=0
grep -q "^not ok.* SA_TEETH_1::hangs_forever" "$out/teeth.tap" 2>/dev/null ||
  { echo "the hung test was not reported as failed"; fail=1; }
grep -q "^ok.* SA_TEETH_1::finishes" "$out/teeth.tap" 2>/dev/null ||
  { echo "the test beside the hung one did not run or pass"; fail=1; }
grep -q "^watchdog:" "$out/teeth.log" || { echo "the watchdog said nothing"; fail=1; }
[ "$rc" -eq 0 ] || { echo "the run itself did not finish (status $rc)"; fail=1; }
if [ "$fail" -ne 0 ]; then
  sed -n '1,40p' "$out/teeth.tap" "$out/teeth.log"
  exit 1
fi
echo "watchdog: the hung test reported by name, the run went on, ${elapsed} s in all"
