#!/bin/sh
# Runs a stress program built on a racy known-bad fixture and passes only if
# the race detector reports a data race in the racing code it names.
#
#   expect-race.sh tsan|helgrind PATTERN COMMAND...
#
# PATTERN is an extended regex of function names (for example
# "sa__set_exit_hook"). Prints how long the detector took to catch the race.
set -u
kind="$1"
pattern="$2"
shift 2
case "$kind" in
  tsan) marker="WARNING: ThreadSanitizer: data race" ;;
  helgrind) marker="Possible data race" ;;
  *) echo "expect-race.sh: unknown detector $kind" >&2; exit 2 ;;
esac
log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$(date +%s.%N)
"$@" >"$log" 2>&1
rc=$?
end=$(date +%s.%N)
elapsed=$(echo "$start $end" | awk '{printf "%.1f", $2 - $1}')

# The first innermost frame of a racing access (TSan's "#0", valgrind's
# "at"), from the first report on, that names the pattern.
# Both detectors stop at their first report (halt_on_error=1 for TSan,
# --exit-on-first-error=yes for valgrind), so the time is the time to catch.
hit=$(awk -v m="$marker" 'index($0, m) { found = 1 } found' "$log" |
  grep -E '(#0 |at 0x)' | grep -E "[ :]($pattern)[ (.]" | head -1 |
  sed 's/^==[0-9]*== *//')
if [ "$rc" -ne 0 ] && [ -n "$hit" ]; then
  echo "caught by $kind in ${elapsed}s (exit $rc): $hit"
  exit 0
fi
echo "NOT CAUGHT by $kind in ${elapsed}s (exit $rc): no race report naming /$pattern/"
sed -n '1,60p' "$log"
exit 1
