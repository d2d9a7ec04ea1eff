#!/bin/sh
# Check the JUnit reports: the conformance report validates against
# ci/junit.xsd and has a test suite for every requirement ID of SPEC.md; the
# stress converter turns a hunt with a clean run, a race and a crash into a
# report that validates and fails exactly the two bad runs.
#
#   check-junit.sh SPEC.md CONFORMANCE_JUNIT_XML WORK_DIR
set -eu
if [ $# -ne 3 ]; then
  echo "usage: check-junit.sh SPEC.md CONFORMANCE_JUNIT_XML WORK_DIR" >&2
  exit 2
fi
spec="$1"
report="$2"
work="$3"
here=$(cd "$(dirname "$0")" && pwd)
xsd="$here/junit.xsd"

xmllint --noout --schema "$xsd" "$report"
missing=0
ids=$(grep -o '\*\*SA-[A-Z]*-[0-9]*\*\*' "$spec" | tr -d '*')
for id in $ids; do
  grep -q "<testsuite name=\"$id\"" "$report" || { echo "missing from $report: $id"; missing=1; }
done
[ "$missing" -eq 0 ]
echo "$report: all $(echo "$ids" | wc -l) requirement IDs listed"

rm -rf "$work"
mkdir -p "$work/logs"
tab=$(printf '\t')
{
  echo "scenario${tab}detector${tab}threads${tab}seconds${tab}seed${tab}calls${tab}failed${tab}reports${tab}verdict${tab}log"
  echo "shared${tab}native${tab}4${tab}2${tab}1${tab}1000${tab}0${tab}0${tab}clean${tab}logs/a.log"
  echo "shared${tab}tsan${tab}4${tab}2${tab}1${tab}900${tab}0${tab}2${tab}RACE${tab}logs/b.log"
  echo "fork${tab}drd${tab}2${tab}2${tab}1${tab}-${tab}-${tab}0${tab}CRASHED${tab}logs/c.log"
} >"$work/races.tsv"
echo "WARNING: ThreadSanitizer: data race <&> in ]]> here" >"$work/logs/b.log"
python3 "$here/junit.py" stress --races "$work/races.tsv" --out "$work/stress.xml"
xmllint --noout --schema "$xsd" "$work/stress.xml"
failures=$(grep -c "<failure " "$work/stress.xml")
[ "$failures" -eq 2 ] || { echo "stress report: $failures failures, expected 2"; exit 1; }
grep -q 'data race &lt;&amp;&gt; in ]]&gt; here' "$work/stress.xml" ||
  { echo "stress report: the race log is not carried, escaped, in its failure"; exit 1; }
echo "$work/stress.xml: valid, 2 of 3 runs failing as they must"
