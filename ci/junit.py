#!/usr/bin/env python3
"""JUnit XML reports of the conformance suite and of the stress runs, for CI
dashboards: each SPEC.md requirement, and each stress run, is a test case.

  junit.py conformance --spec SPEC.md --out FILE [--failure TEXT]... TAP...
      One <testsuite> per requirement of SPEC.md, named by its ID, holding
      the tests that cite it (Criterion TAP: "ok - SA_SYNC_3::name (0.02s)").
      A requirement no test cites is one failing test case, "untested", so
      that every ID is listed. Each --failure (a whole-run problem, such as
      valgrind errors) is a failing test case of a last suite, "run".

  junit.py stress --races races.tsv --out FILE
      One <testsuite> per scenario, one test case per run of ci/hunt-races
      (detector and seed), failing unless its verdict is "clean"; a failure
      carries the end of the run's log.

The output follows the JUnit schema in ci/junit.xsd (xmllint --schema).
"""
import argparse
import csv
import os
import re
import sys
import xml.etree.ElementTree as ET

TAP_RESULT = re.compile(
    r"^(ok|not ok)(?: \d+)? - (SA_[A-Z]+_\d+)::(\S+) *(.*?) *(?:\((\d+(?:\.\d+)?)s\))?$")
SPEC_ID = re.compile(r"^- \*\*(SA-[A-Z]+-\d+)\*\* — (.*)")
LOG_TAIL_LINES = 40


def requirements(spec_path):
    """[(id, one-line statement)] in SPEC.md order."""
    reqs = []
    text = None
    with open(spec_path, encoding="utf-8") as f:
        for line in f:
            m = SPEC_ID.match(line)
            if m:
                reqs.append([m.group(1), m.group(2).strip()])
                text = reqs[-1]
            elif text is not None and line.startswith("  ") and line.strip():
                text[1] += " " + line.strip()
            else:
                text = None
    return [(rid, statement) for rid, statement in reqs]


def tap_results(paths):
    """[(requirement id, test name, passed, seconds, diagnostics)]."""
    results = []
    for path in paths:
        current = None
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                m = TAP_RESULT.match(line)
                if m:
                    verdict, suite, name, remark, seconds = m.groups()
                    # Criterion says why a test ended without an assertion
                    # ("timed out", a signal) after its name.
                    current = [suite.replace("_", "-"), name, verdict == "ok",
                               float(seconds or 0), [remark] if remark else []]
                    results.append(current)
                elif current is not None and line.startswith("  "):
                    current[4].append(line.rstrip("\n")[2:])
                else:
                    current = None
    return [(rid, name, passed, secs, "\n".join(diag))
            for rid, name, passed, secs, diag in results]


def failure_message(diagnostics):
    """The first failed assertion of a Criterion TAP diagnostic block."""
    for line in diagnostics.splitlines():
        line = line.strip()
        if line.startswith("Assertion failed"):
            return line
    first = diagnostics.splitlines()[:1]
    return f"test failed: {first[0]}" if first and first[0] != "---" else "test failed"


class Skipped(str):
    """In a case's place for a failure message: the case was not run, why."""


def suite_element(parent, name, cases, properties=()):
    """cases: [(classname, name, seconds, failure message, Skipped or None, details)]."""
    skipped = sum(isinstance(c[3], Skipped) for c in cases)
    suite = ET.SubElement(parent, "testsuite", name=name, tests=str(len(cases)),
                          failures=str(sum(c[3] is not None for c in cases) - skipped),
                          errors="0", skipped=str(skipped),
                          time=f"{sum(c[2] for c in cases):.3f}")
    if properties:
        props = ET.SubElement(suite, "properties")
        for key, value in properties:
            ET.SubElement(props, "property", name=key, value=value)
    for classname, case_name, seconds, failure, details in cases:
        case = ET.SubElement(suite, "testcase", classname=classname, name=case_name,
                             time=f"{seconds:.3f}")
        if isinstance(failure, Skipped):
            ET.SubElement(case, "skipped", message=failure)
        elif failure is not None:
            ET.SubElement(case, "failure", message=failure, type="failure").text = details
    return suite


def write(root, path):
    suites = root.findall("testsuite")
    for key in ("tests", "failures", "errors"):
        root.set(key, str(sum(int(s.get(key)) for s in suites)))
    root.set("time", f"{sum(float(s.get('time')) for s in suites):.3f}")
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="UTF-8", xml_declaration=True)


def conformance(args):
    reqs = requirements(args.spec)
    if not reqs:
        sys.exit(f"junit.py: no requirement IDs in {args.spec}")
    results = tap_results(args.tap)
    known = {rid for rid, _ in reqs}
    root = ET.Element("testsuites", name="smartasync conformance")
    for rid, statement in reqs:
        cases = [(rid, name, secs, None if passed else failure_message(diag), diag)
                 for r, name, passed, secs, diag in results if r == rid]
        if not cases:
            cases = [(rid, "untested", 0.0, "no test checks this requirement", statement)]
        suite_element(root, rid, cases, [("requirement", rid), ("statement", statement)])
    stray = [(r, name, secs, "the test cites a requirement SPEC.md does not have", diag)
             for r, name, passed, secs, diag in results if r not in known]
    run_failures = [("run", text, 0.0, text, "") for text in args.failure]
    if stray or run_failures:
        suite_element(root, "run", stray + run_failures)
    write(root, args.out)


def stress(args):
    with open(args.races, encoding="utf-8") as f:
        runs = list(csv.DictReader(f, delimiter="\t"))
    base = os.path.dirname(os.path.abspath(args.races))
    root = ET.Element("testsuites", name="smartasync stress")
    for scenario in dict.fromkeys(run["scenario"] for run in runs):
        cases = []
        for run in (r for r in runs if r["scenario"] == scenario):
            failure = details = None
            if run["verdict"] == "not-run":
                failure = Skipped(f"not run: {run['log']}")
            elif run["verdict"] != "clean":
                failure = (f"{run['verdict']}: {run['reports']} race reports, "
                           f"{run['failed']} wrong outcomes of {run['calls']} calls")
                details = log_tail(os.path.join(base, run["log"]))
            if isinstance(failure, Skipped):
                name, seconds = run["detector"], 0.0
            else:
                name = f"{run['detector']} seed {run['seed']} ({run['threads']} threads)"
                seconds = float(run["seconds"])
            cases.append((f"stress.{scenario}", name, seconds, failure, details))
        suite_element(root, scenario, cases)
    write(root, args.out)


def log_tail(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(f.readlines()[-LOG_TAIL_LINES:])
    except OSError as e:
        return f"(no log: {e})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("conformance", help="TAP of the conformance programs to JUnit")
    c.add_argument("--spec", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--failure", action="append", default=[])
    c.add_argument("tap", nargs="+")
    s = sub.add_parser("stress", help="races.tsv of ci/hunt-races to JUnit")
    s.add_argument("--races", required=True)
    s.add_argument("--out", required=True)
    args = parser.parse_args()
    {"conformance": conformance, "stress": stress}[args.command](args)


if __name__ == "__main__":
    main()
