#!/bin/sh
# Run the conformance suite and report per SPEC.md requirement.
#
#   run.sh [--valgrind] [--expect-fail ID] --spec SPEC.md --out DIR SUITE FORK
#
# SUITE is the Criterion program, FORK the standalone fork program, both
# built against the implementation under test. Tests are named after the
# requirement they check (suite SA_SYNC_3 checks SA-SYNC-3). Writes DIR/*.tap
# DIR/requirements.tsv (id, verdict, tests passed, tests failed) and
# DIR/junit.xml (one JUnit test suite per requirement, ci/junit.py).
#
# Exit 0 when every requirement has at least one test and all tests pass.
# With --expect-fail ID (a known-bad implementation): exit 0 when the run
# fails and names requirement ID among the failures.
set -u

valgrind=0
expect=""
spec=""
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --valgrind) valgrind=1 ;;
    --expect-fail) expect="$2"; shift ;;
    --spec) spec="$2"; shift ;;
    --out) out="$2"; shift ;;
    -*) echo "run.sh: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
  shift
done
if [ $# -ne 2 ] || [ -z "$spec" ] || [ -z "$out" ]; then
  echo "usage: run.sh [--valgrind] [--expect-fail ID] --spec SPEC.md --out DIR SUITE FORK" >&2
  exit 2
fi
suite="$1"
fork="$2"
mkdir -p "$out"
rm -f "$out"/*.tap "$out"/*.log "$out/matrix.tsv"

# Every test process aborts itself past SA_TEST_TIMEOUT seconds (its
# watchdog, sa_test.c): Criterion reports it by name and runs the others.
# The whole run has a hard limit too, in case the runner itself is stuck.
runner=""
SA_TEST_TIMEOUT=30
run_limit=900
if [ "$valgrind" = 1 ]; then
  # Each Criterion test runs in a child process: trace children. Leaks of
  # the definite and indirect kinds are errors; "still reachable" is not
  # (the record pool is kept for the life of the process by design).
  memcheck=$(sed -n 's/^memcheck //p' "$(dirname "$0")/../stress/detectors.options")
  # shellcheck disable=SC2086 # one option per line, none with spaces
  runner="valgrind --quiet --trace-children=yes $(echo $memcheck) --error-exitcode=99 \
--log-file=$out/valgrind.%p.log"
  SA_TEST_TIMEOUT=300
  run_limit=3600
fi
export SA_TEST_TIMEOUT

# --verbose: the log keeps what tests log, the matrix's cell counts among it.
timeout -k 10 "$run_limit" $runner "$suite" --tap="$out/suite.tap" --always-succeed --verbose \
  >"$out/suite.log" 2>&1
suite_rc=$?
timeout -k 10 "$((SA_TEST_TIMEOUT * 2))" $runner "$fork" >"$out/fork.tap" 2>"$out/fork.log"
fork_rc=$?

valgrind_errors=0
if [ "$valgrind" = 1 ]; then
  # Only logs that report errors are kept.
  for log in "$out"/valgrind.*.log; do
    [ -e "$log" ] || continue
    if grep -q "ERROR SUMMARY: [1-9]\|definitely lost\|indirectly lost\|Invalid \|uninitialised" "$log"; then
      valgrind_errors=$((valgrind_errors + 1))
      echo "valgrind reports errors, see $log:"
      sed -n '1,40p' "$log"
    else
      rm -f "$log"
    fi
  done
fi

ids=$(grep -o '\*\*SA-[A-Z]*-[0-9]*\*\*' "$spec" | tr -d '*')
if [ -z "$ids" ]; then
  echo "run.sh: no requirement IDs found in $spec" >&2
  exit 2
fi

# Test results as "SUITE verdict" lines.
results="$out/results.txt"
sed -n 's/^\(not ok\|ok\)\( [0-9]*\)\{0,1\} - \(SA_[A-Z]*_[0-9]*\)::.*/\1 \3/p' \
  "$out/suite.tap" "$out/fork.tap" >"$results"

printf '%-12s %-8s %s\n' "requirement" "verdict" "tests (passed/failed)"
: >"$out/requirements.tsv"
req_pass=0
req_fail=0
failed_ids=""
for id in $ids; do
  suite_name=$(echo "$id" | tr '-' '_')
  passed=$(grep -c "^ok $suite_name\$" "$results")
  failed=$(grep -c "^not ok $suite_name\$" "$results")
  if [ "$failed" -gt 0 ]; then
    verdict=FAIL
  elif [ "$passed" -eq 0 ]; then
    verdict=UNTESTED
  else
    verdict=pass
  fi
  if [ "$verdict" = pass ]; then
    req_pass=$((req_pass + 1))
  else
    req_fail=$((req_fail + 1))
    failed_ids="$failed_ids $id"
  fi
  printf '%-12s %-8s %s/%s\n' "$id" "$verdict" "$passed" "$failed"
  printf '%s\t%s\t%s\t%s\n' "$id" "$verdict" "$passed" "$failed" >>"$out/requirements.tsv"
done

# Tests citing a requirement SPEC.md does not have are a defect too.
unknown=$(awk '{print $NF}' "$results" | sort -u | while read -r s; do
  id=$(echo "$s" | tr '_' '-')
  echo "$ids" | grep -qx "$id" || echo "$s"
done)
if [ -n "$unknown" ]; then
  echo "tests cite requirements missing from SPEC.md:" $unknown
fi

if [ "$fork_rc" -ne 0 ]; then
  echo "fork program exited with status $fork_rc; see $out/fork.log"
fi
if [ "$suite_rc" -ne 0 ]; then
  echo "suite exited with status $suite_rc; see $out/suite.log"
fi
if grep -q "^watchdog:" "$out/suite.log"; then
  echo "tests stopped by their watchdog (hung past ${SA_TEST_TIMEOUT} s):"
  grep "CRASH" "$out/suite.log" | sed 's/^/  /'
fi
for id in $failed_ids; do
  grep "^not ok.* - $(echo "$id" | tr '-' '_')::" "$out/suite.tap" "$out/fork.tap" \
    | sed 's/^[^:]*:/  /'
done
echo "requirements: $req_pass passed, $req_fail failed"

# The matrix's tests (test_matrix.c) each log a line
#   matrix: SA-ENTRY-3, sa_batch ALL: 162 cells checked, 24 failed
# summed here per requirement, and written to matrix.tsv (id, cells, failed,
# tests).
awk -v tsv="$out/matrix.tsv" '/\] matrix: SA-[A-Z]*-[0-9]*, / {
  line = $0
  sub(/.*\] matrix: /, "", line)
  id = line; sub(/,.*/, "", id)
  n = line; sub(/ cells checked.*/, "", n); sub(/.*: /, "", n)
  f = line; sub(/.*cells checked, /, "", f); sub(/ failed.*/, "", f)
  cells[id] += n; failed[id] += f; tests[id]++
  total += n; total_failed += f; total_tests++
}
END {
  if (!total_tests) exit
  printf "matrix: %d cells checked by %d tests, %d failed\n", total, total_tests, total_failed
  for (id in cells) {
    printf "  %-12s %5d cells, %4d failed, %d tests\n", id, cells[id], failed[id],
      tests[id] | "sort"
    printf "%s\t%d\t%d\t%d\n", id, cells[id], failed[id], tests[id] > tsv
  }
}' "$out/suite.log"

set --
[ "$valgrind_errors" -eq 0 ] || set -- --failure "valgrind reports errors in $valgrind_errors processes"
python3 "$(dirname "$0")/../ci/junit.py" conformance --spec "$spec" --out "$out/junit.xml" "$@" \
  "$out/suite.tap" "$out/fork.tap" || { echo "run.sh: could not write $out/junit.xml" >&2; exit 2; }

ok=1
[ "$req_fail" -eq 0 ] && [ -z "$unknown" ] && [ "$valgrind_errors" -eq 0 ] &&
  [ "$suite_rc" -eq 0 ] || ok=0

if [ -n "$expect" ]; then
  case " $failed_ids " in
    *" $expect "*)
      echo "known-bad: caught, $expect fails as it must"
      exit 0 ;;
  esac
  echo "known-bad: NOT CAUGHT: $expect did not fail against this implementation"
  exit 1
fi
[ "$ok" = 1 ] && exit 0
exit 1
