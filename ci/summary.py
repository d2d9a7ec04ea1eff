#!/usr/bin/env python3
"""The scorecard's summary: read what each stage of ci/scorecard left in OUT
(stages.tsv: each stage's exit status and log; then each stage's own
results), print one table and write OUT/scorecard.json, whatever happened.

A stage passed (exit 0 and its results written), failed (a non-zero exit
and its results written: its checks said no), crashed (no results, or
killed by a signal: the last lines of its log say why) or was not run
(an earlier stage it needs did not succeed). The overall verdict passes
only if every stage passed; the exit status is 0 then, 1 otherwise.

  summary.py OUT IMPLEMENTATION
"""
import csv
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
from gate import fmt_interval, fmt_ns  # noqa: E402
from growth import fmt_bytes  # noqa: E402

# Each stage's results, relative to OUT: a stage without them crashed.
RESULTS = {"build": None, "conformance": "conformance/requirements.tsv",
           "model": "model.log", "races": "races/races.json",
           "overhead": "bench/gate.json", "growth": "bench/growth.json"}
TAIL = 12  # log lines kept for a stage that did not pass


def read_stages(out):
    stages = {}
    with open(os.path.join(out, "stages.tsv")) as f:
        for name, rc, log in csv.reader(f, delimiter="\t"):
            stages[name] = {"exit_status": None if rc == "-" else int(rc), "log": log}
    for name, stage in stages.items():
        result = RESULTS.get(name)
        has_result = result is None or os.path.exists(os.path.join(out, result))
        rc = stage["exit_status"]
        if rc is None:
            stage["verdict"] = "not-run"
        elif rc == 0 and has_result:
            stage["verdict"] = "passed"
        elif has_result and rc < 128:
            stage["verdict"] = "failed"
        else:
            stage["verdict"] = "crashed"
        if stage["verdict"] in ("failed", "crashed"):
            stage["log_tail"] = log_tail(stage["log"])
    return stages


def log_tail(path):
    try:
        with open(path, errors="replace") as f:
            return [line.rstrip("\n") for line in f.readlines()[-TAIL:]]
    except OSError:
        return []


def load_json(out, path):
    try:
        with open(os.path.join(out, path)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def conformance(out):
    path = os.path.join(out, "conformance", "requirements.tsv")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        reqs = {row[0]: {"verdict": row[1], "tests_passed": int(row[2]),
                         "tests_failed": int(row[3])}
                for row in csv.reader(f, delimiter="\t")}
    matrix = {}
    matrix_path = os.path.join(out, "conformance", "matrix.tsv")
    if os.path.exists(matrix_path):  # a suite without the matrix's tests has none
        with open(matrix_path) as f:
            matrix = {row[0]: {"cells": int(row[1]), "failed": int(row[2]), "tests": int(row[3])}
                      for row in csv.reader(f, delimiter="\t")}
    return {"passed": sum(r["verdict"] == "pass" for r in reqs.values()),
            "failed": sum(r["verdict"] != "pass" for r in reqs.values()),
            "requirements": reqs,
            "matrix": {"cells": sum(m["cells"] for m in matrix.values()),
                       "failed": sum(m["failed"] for m in matrix.values()),
                       "requirements": matrix}}


def model(out):
    """The model's last line: "model: N programs, F failed (T s)"; its
    failures each name their seed and the requirement."""
    path = os.path.join(out, "model.log")
    if not os.path.exists(path):
        return None
    result = {"programs": 0, "failed": None, "failures": []}
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("model: seed ") and " FAILED: " in line:
                result["failures"].append(line.strip()[len("model: "):])
            elif line.startswith("model: ") and " programs, " in line:
                words = line.split()
                result["programs"], result["failed"] = int(words[1]), int(words[3])
    return result


def in_unit(ns, unit_ns):
    return f"{ns / unit_ns:.3g}" if ns is not None else "-"


def unit_of(ns):
    return next((u for u in ((1e6, "ms"), (1e3, "us")) if ns >= u[0]), (1, "ns"))


def print_gate(gate):
    q = gate["method"]["quantile"]
    print(f"  budget gate   {gate['verdict']} (each case's {q:.0%} quantile per call, "
          "95% interval, in the budget's unit)")
    rows = [(n, c) for n, c in gate["cases"].items() if c.get("budget_ns")]
    width = max((len(n) for n, _ in rows), default=0)
    for name, case in rows:
        scale, unit = unit_of(case["budget_ns"])
        low, high = case["quantile_ci"]
        measured = f"{in_unit(case['quantile_ns_per_call'], scale)} " \
                   f"[{in_unit(low, scale)}, {in_unit(high, scale)}]"
        print(f"    {name:{width}}  {measured:>24} {unit}  budget "
              f"{in_unit(case['budget_ns'], scale):>5} {unit}  {case['verdict']}")


def print_targets(targets):
    words = {True: "met", False: "MISS", None: "undecided"}
    counts = {w: sum(words[t["met"]] == w for t in targets) for w in words.values()}
    print(f"  targets       the reference's own: {counts['met']} met, {counts['MISS']} missed, "
          f"{counts['undecided']} undecided")
    for t in targets:
        if t["met"] is not True:
            print(f"    {words[t['met']]:9} {t['what']} ({t['measured']})")


def print_growth(growth):
    for k, ch in growth["churn"].items():
        print(f"  churn         {k:>2} at a time: one sync call adds "
              f"{fmt_interval(*ch['extra_ns'])} per thread")
    m = growth["memory"]
    print("  memory        " + ", ".join(f"{fmt_bytes(v['rss'])} per {k}" for k, v in m.items())
          + " (resident, 100,000 pending; heap alone: "
          + ", ".join(fmt_bytes(v["heap"]) for v in m.values()) + ")")
    rss = m["pending future"]["rss_bytes"]
    print(f"  spike         RSS {fmt_bytes(rss[0])} before, {fmt_bytes(rss[1])} at the peak, "
          f"{fmt_bytes(rss[2])} after 100,000 pending futures")
    for name, curve in growth["curves"].items():
        print(f"  growth        {name}: cost {curve['cost_verdict']}, "
              f"bytes {curve['bytes_verdict']}")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    out, impl = sys.argv[1], sys.argv[2]
    stages = read_stages(out)
    card = {"implementation": impl,
            "verdict": "pass" if all(s["verdict"] == "passed" for s in stages.values())
            else "fail",
            "stages": stages,
            "conformance": conformance(out), "model": model(out),
            "races": load_json(out, "races/races.json"),
            "benchmarks": None, "plot": "plot.svg", "growth_plot": "growth.svg"}
    gate, growth = load_json(out, "bench/gate.json"), load_json(out, "bench/growth.json")
    if gate or growth:
        card["benchmarks"] = {**({k: gate[k] for k in ("verdict", "method", "budgets_ns",
                                                         "cases", "ancestor")} if gate else {}),
                              **({k: growth[k] for k in ("churn", "memory", "curves",
                                                         "bend_slope")} if growth else {}),
                              "targets": (gate or {}).get("targets", []) +
                              (growth or {}).get("targets", [])}
    if card["races"]:
        del card["races"]["implementation"]
    with open(os.path.join(out, "scorecard.json"), "w") as f:
        json.dump(card, f, indent=2)

    print("\n== summary")
    width = max(len(n) for n in stages)
    for name, stage in stages.items():
        rc = stage["exit_status"]
        print(f"  {name:{width}}  {stage['verdict']}" + (f" (exit {rc})" if rc else ""))
    print()
    c, mo, r = card["conformance"], card["model"], card["races"]
    if c:
        print(f"  conformance   {c['passed']} of {c['passed'] + c['failed']} requirements pass; "
              f"matrix {c['matrix']['cells']} cells checked, {c['matrix']['failed']} failed")
    if mo:
        print(f"  model         {mo['programs']} random programs, "
              f"{'no verdict (crashed)' if mo['failed'] is None else str(mo['failed']) + ' failed'}")
    if r:
        not_run = f", {r['not_run']} not run" if r.get("not_run") else ""
        print(f"  races         {r['clean']} of {r['runs'] - r.get('not_run', 0)} stress runs "
              f"clean{not_run}, {r['race_reports']} race reports, {r['wrong_outcomes']} wrong "
              f"outcomes, {r['crashes']} crashes")
    if gate:
        print_gate(gate)
    targets = (card["benchmarks"] or {}).get("targets")
    if targets and impl == "smartasync":
        print_targets(targets)
    if growth:
        print_growth(growth)
    if gate:
        for name, a in gate["ancestor"]["cases"].items():
            if "ratio" in a:
                print(f"  ancestor      {name} {fmt_ns(a['median_ns_per_call'])}: "
                      f"{a['ours']} {a['ratio']:.2g} x of it")
    for name, stage in stages.items():
        if stage.get("log_tail"):
            print(f"\n  {name} {stage['verdict']}; the last lines of {stage['log']}:")
            for line in stage["log_tail"]:
                print(f"    | {line}")
    print(f"\n  verdict       {card['verdict']}")
    print(f"\nscorecard: {out}/scorecard.json, plots: {out}/plot.svg, {out}/growth.svg")
    junit = [f"{out}/{path} ({what})" for path, what in
             (("conformance/junit.xml", "per requirement"), ("races/junit.xml", "per stress run"))
             if os.path.exists(os.path.join(out, path))]
    if junit:
        print("JUnit: " + ", ".join(junit))
    return 0 if card["verdict"] == "pass" else 1


if __name__ == "__main__":
    sys.exit(main())
