#!/usr/bin/env python3
"""Budget gate for the overhead benchmarks.

Runs bench_overhead with repetitions, takes the median of each case, and
prints a verdict per budget (sync and async), the overhead of each
implementation case over its baselines as a ratio, the throughput scaling
with threads, and the instructions (callgrind) and syscalls (strace) per
call of the hot paths. Writes OUT/gate.json. Exits 1 when a budget is
broken or a benchmark fails; our own, tighter targets are reported and
only fail the gate with --strict.

  gate.py --bench BENCH --instr INSTR [--out DIR] [--sync-budget-us 100]
          [--async-budget-us 2] [--repetitions 9] [--min-time 0.2]
          [--no-counts] [--strict]
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys

# Cases whose instructions and syscalls per call are counted.
COUNTED = ["floor/direct-call", "baseline/cached-loop/inline", "baseline/cached-loop/tick",
           "baseline/raw-async/inline", "baseline/raw-async/tick",
           "sa/sync/inline", "sa/sync/tick", "sa/async/inline", "sa/async/tick",
           "sa/async-future/inline"]


def list_cases(instr):
    out = subprocess.run([instr, "--list"], check=True, capture_output=True, text=True).stdout
    cases = {}
    for line in out.splitlines():
        name, kind, op, batch, compare = line.split("\t")
        cases[name] = {"kind": kind, "op": op, "batch": int(batch),
                       "compare": [] if compare == "-" else compare.split(",")}
    return cases


def run_benchmarks(bench, out, repetitions, min_time):
    json_path = os.path.join(out, "bench.json")
    cmd = [bench, f"--benchmark_out={json_path}", "--benchmark_out_format=json",
           f"--benchmark_repetitions={repetitions}", "--benchmark_report_aggregates_only=true",
           f"--benchmark_min_time={min_time}"]
    with open(os.path.join(out, "bench.log"), "w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    with open(json_path) as f:
        return json.load(f)


UNIT_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}


def medians(report):
    """{(case, threads): {"ns_per_call": ..., "items_per_second": ...}}; errors listed."""
    result, errors = {}, []
    for b in report["benchmarks"]:
        if b.get("error_occurred"):
            errors.append(b["name"])
            continue
        if b.get("run_type") != "aggregate" or b.get("aggregate_name") != "median":
            continue
        case = re.sub(r"/real_time.*$", "", b["run_name"])
        batch = b.get("batch", 1.0) or 1.0
        result[(case, int(b.get("threads", 1)))] = {
            "ns_per_call": b["real_time"] * UNIT_NS[b["time_unit"]] / batch,
            "items_per_second": b.get("items_per_second"),
        }
    return result, errors


def callgrind_instructions(instr, case, runs):
    out = "/dev/null"
    log = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                          instr, case, str(runs)], capture_output=True, text=True)
    m = re.search(r"Collected : (\d+)", log.stderr)
    if log.returncode != 0 or not m:
        raise RuntimeError(f"callgrind failed on {case}: {log.stderr[-500:]}")
    return int(m.group(1))


def strace_syscalls(instr, case, runs, out):
    path = os.path.join(out, "strace.txt")
    subprocess.run(["strace", "-f", "-c", "-o", path, instr, case, str(runs)],
                   check=True, capture_output=True)
    with open(path) as f:
        for line in f:
            fields = line.split()
            if fields and fields[-1] == "total":
                return int(fields[3])
    raise RuntimeError(f"no strace total for {case}")


def per_call(count, case, batch):
    """Difference of two runs divided by the difference in calls: set-up cancels."""
    few, many = (5, 25) if batch > 1 else (200, 2200)
    return (count(case, many) - count(case, few)) / ((many - few) * batch)


def fmt_ns(ns):
    if ns is None:
        return "-"
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} us"
    return f"{ns:.1f} ns"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bench", required=True)
    ap.add_argument("--instr", required=True)
    ap.add_argument("--out", default="bench-report")
    ap.add_argument("--sync-budget-us", type=float, default=100.0)
    ap.add_argument("--async-budget-us", type=float, default=2.0)
    ap.add_argument("--repetitions", type=int, default=9)
    ap.add_argument("--min-time", type=float, default=0.2)
    ap.add_argument("--no-counts", action="store_true",
                    help="skip the callgrind and strace counts")
    ap.add_argument("--strict", action="store_true", help="missed targets fail the gate too")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    cases = list_cases(args.instr)
    report = run_benchmarks(args.bench, args.out, args.repetitions, args.min_time)
    med, errors = medians(report)
    budget_ns = {"sync": args.sync_budget_us * 1e3, "async": args.async_budget_us * 1e3}

    counts = {}
    if not args.no_counts:
        have_strace = shutil.which("strace") is not None
        for case in COUNTED:
            batch = cases[case]["batch"]
            counts[case] = {
                "instructions_per_call": per_call(
                    lambda c, n: callgrind_instructions(args.instr, c, n), case, batch),
                "syscalls_per_call": per_call(
                    lambda c, n: strace_syscalls(args.instr, c, n, args.out), case, batch)
                if have_strace else None,
            }

    out_cases = {}
    broken = list(errors)
    print(f"{'case':34} {'median/call':>12} {'budget':>10} {'verdict':>8}  overhead vs baselines")
    for name, info in cases.items():
        m = med.get((name, 1))
        entry = {"kind": info["kind"], "op": info["op"], "batch": info["batch"],
                 "median_ns_per_call": m["ns_per_call"] if m else None}
        entry.update(counts.get(name, {}))
        verdict = "-"
        if info["kind"] in budget_ns and m:
            entry["budget_ns"] = budget_ns[info["kind"]]
            verdict = "pass" if m["ns_per_call"] <= budget_ns[info["kind"]] else "FAIL"
            if verdict == "FAIL":
                broken.append(name)
        elif info["kind"] in budget_ns:
            verdict = "FAIL"
            broken.append(name)
        entry["verdict"] = verdict
        ratios = {}
        for base in info["compare"]:
            b = med.get((base, 1))
            if m and b and b["ns_per_call"] > 0:
                ratios[base] = m["ns_per_call"] / b["ns_per_call"]
        entry["ratios"] = ratios
        scaling = {}
        one = med.get((name, 1), {}).get("items_per_second")
        for threads in (2, 4):
            many = med.get((name, threads), {}).get("items_per_second")
            if one and many:
                scaling[str(threads)] = many / one
        if scaling:
            entry["throughput_scaling"] = scaling
        out_cases[name] = entry
        budget = fmt_ns(entry.get("budget_ns")) if "budget_ns" in entry else ""
        ratio_text = ", ".join(f"{r:.3g}x {b.split('/')[-2] if b.count('/') > 1 else b}"
                               for b, r in ratios.items())
        print(f"{name:34} {fmt_ns(entry['median_ns_per_call']):>12} {budget:>10} "
              f"{verdict:>8}  {ratio_text}")

    if counts:
        print(f"\n{'hot path':34} {'instructions/call':>18} {'syscalls/call':>14}  "
              "over its first counted baseline")
        for name, c in counts.items():
            sc = c["syscalls_per_call"]
            base = next((b for b in cases[name]["compare"] if b in counts), None)
            over = ""
            if base:
                extra = c["instructions_per_call"] - counts[base]["instructions_per_call"]
                out_cases[name]["instructions_over_baseline"] = {"baseline": base, "value": extra}
                over = f"{extra:+.0f} over {base}"
            print(f"{name:34} {c['instructions_per_call']:>18.0f} "
                  f"{'-' if sc is None else f'{sc:.2f}':>14}  {over}")
    scaled = {n: e["throughput_scaling"] for n, e in out_cases.items() if "throughput_scaling" in e}
    if scaled:
        print("\nthroughput with threads, relative to one thread (no shared lock: ~N x, "
              f"bounded by the {os.cpu_count()} CPUs here)")
        for name, s in scaled.items():
            print(f"  {name:32} " + "  ".join(f"{t} threads: {r:.2f}x" for t, r in s.items()))

    targets = check_targets(out_cases)
    print("\nour targets (reference implementation):")
    for t in targets:
        print(f"  {'met ' if t['met'] else 'MISS' if t['met'] is False else 'n/a '} {t['what']}"
              f" ({t['measured']})")

    verdict = "FAIL" if broken or (args.strict and any(t["met"] is False for t in targets)) \
        else "pass"
    result = {"budgets_ns": budget_ns, "cases": out_cases, "targets": targets,
              "errors": errors, "verdict": verdict}
    with open(os.path.join(args.out, "gate.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(f"\nbudget gate: {verdict}" + (f" (broken: {', '.join(broken)})" if broken else ""))
    return 0 if verdict == "pass" else 1


def check_targets(c):
    """The reference's own targets, from the same run."""
    def ns(name):
        return (c.get(name) or {}).get("median_ns_per_call")

    def field(name, key):
        return (c.get(name) or {}).get(key)

    targets = []

    def target(what, measured, met):
        targets.append({"what": what, "measured": measured, "met": met})

    tick, cached, per_call_loop = ns("sa/sync/tick"), ns("baseline/cached-loop/tick"), \
        ns("baseline/loop-per-call/tick")
    if tick and cached:
        target("sync one-iteration call <= 1.2 x the cached-loop wrapper",
               f"{tick / cached:.2f} x", tick <= 1.2 * cached)
    if tick and per_call_loop:
        target("sync one-iteration call >= 10 x faster than loop-per-call",
               f"{per_call_loop / tick:.1f} x", per_call_loop >= 10 * tick)
    for name, limit_ns, limit_ir in (("sa/sync/inline", 20, 80), ("sa/async/inline", 20, 100)):
        if ns(name) is not None:
            target(f"{name} <= {limit_ns} ns per call", fmt_ns(ns(name)), ns(name) <= limit_ns)
        ir = field(name, "instructions_per_call")
        if ir is not None:
            target(f"{name} <= {limit_ir} instructions per call", f"{ir:.0f}", ir <= limit_ir)
    ir = field("sa/sync/tick", "instructions_per_call")
    if ir is not None:
        target("sa/sync/tick <= 700 instructions per call", f"{ir:.0f}", ir <= 700)
    sc = field("sa/sync/tick", "syscalls_per_call")
    if sc is not None:
        target("sa/sync/tick exactly 1 syscall per call", f"{sc:.2f}", round(sc, 2) == 1.0)
    scaling = field("sa/sync/inline", "throughput_scaling")
    if scaling and "2" in scaling:
        target("sa/sync/inline throughput at 2 threads >= 1.8 x one thread",
               f"{scaling['2']:.2f} x", scaling["2"] >= 1.8)
    return targets


if __name__ == "__main__":
    sys.exit(main())
