#!/bin/sh
# Proves that run.sh fails when SPEC.md has a requirement no test cites:
# adds a fake requirement to a copy of the spec and expects UNTESTED.
#   check-coverage-teeth.sh SPEC.md OUTDIR SUITE FORK
set -u
spec="$1" out="$2" suite="$3" fork="$4"
mkdir -p "$out"
cp "$spec" "$out/SPEC.md"
printf '\n- **SA-UNTESTED-1** — A requirement no test cites.\n' >>"$out/SPEC.md"
if "$(dirname "$0")/run.sh" --spec "$out/SPEC.md" --out "$out" "$suite" "$fork" >"$out/run.out"; then
  echo "coverage check has no teeth: an untested requirement passed"
  exit 1
fi
if ! grep -q "^SA-UNTESTED-1 *UNTESTED" "$out/run.out"; then
  echo "coverage check did not name the untested requirement:"
  cat "$out/run.out"
  exit 1
fi
echo "coverage check: an untested requirement fails the run, as it must"
