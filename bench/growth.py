#!/usr/bin/env python3
"""What the implementation costs as the work grows: thread churn, memory
per pending call and after a spike, and growth curves with their verdicts.
Writes OUT/growth.json.

  growth.py --growth BENCH_GROWTH --paired BENCH_PAIRED [--out DIR]
            [--samples 21] [--churn-samples 801] [--no-counts] [--strict]
  growth.py --growth BENCH_GROWTH --memory-only [--strict]

- Churn: threads created one at a time and 50 at a time, each making one
  sync call and exiting, interleaved with bare threads (created and
  joined): the cost per thread, and what the call adds: the median of the
  paired differences with its 95 % interval.
- Memory: bytes per pending call (heap in use and resident anonymous
  memory at the peak of 100,000 pending futures, futures of calls
  completed inside their start function, sa_dispatch_then calls and batch
  items, each in a fresh process), and the resident memory
  before, at the peak and after every result is delivered and every
  future released.
- Curves, as N grows: calls pending on one loop (10^2..10^6), batch size
  (1..10^5), sync nesting depth (1..SA_MAX_SYNC_DEPTH), threads (1, 2, 4,
  ... up to 16 where the machine has the CPUs). Per unit, at
  each point: the time (the points of a curve timed in turn in one
  process, so the time of a point over the one before is a paired ratio,
  whose interval gives the slope's), the instructions (callgrind: one warm
  round) and the bytes (heap in use, a fresh process per point).

A curve bends where the slope of log(cost) against log(N) between two
consecutive points is above stats.BEND_SLOPE. The verdict on cost is taken
on the instructions, which are exact: the time per call also grows where
the calls outgrow a cache, by as much as the other programs on the machine
take of the shared caches (from 10^3 to 10^4 pending calls: a slope of 0.24
on an idle 2-core machine, 0.55 and 0.93 in two runs with both cores busy),
so a verdict on it would change with the load. The time curve is printed and plotted beside,
with its steepest slope. The threads curve is judged on time, as the ratio
to the cached-loop wrapper at the same thread count, measured interleaved:
a shared lock shows in time only, and the machine's own scaling (its CPUs,
its load) cancels in the ratio.

Targets for the reference (reported; they fail the run only with --strict):
a thread's one sync call adds at most 2 us to a bare thread when threads
run one at a time; a pending future or sa_dispatch_then call takes at most
128 bytes; after a spike of 100,000 pending futures (completed later, or
inside their start function), sa_dispatch_then calls or batch items, the
resident memory comes back within 10 % of where it was before; a burst of
1,100, 3,000 or 20,000 futures that repeats the one before it faults in at
most one page (it finds its memory where the last one left it); the
threads curve is flat. --memory-only measures the memory alone (exact, in
seconds: CTest runs it with --strict).
"""
import argparse
import concurrent.futures
import json
import os
import re
import shutil
import subprocess
import sys

import stats
from gate import fmt_interval, pooled, run_paired

PENDING = [10 ** k for k in range(2, 7)]
BATCH = [10 ** k for k in range(0, 6)]
# Samples per point of the depth and threads curves, as a multiple of
# --samples: their points take milliseconds, and their steps are short.
CHEAP_SAMPLES = 5
SPIKE = 100_000
CHURN_AT_ONCE = [1, 50]
CHURN_TARGET_NS = 2000
SPIKE_TARGET = 1.10
PER_CALL_TARGET = 128
REPEAT_SIZES = [1_100, 3_000, 20_000]
REPEATS = 100
UNITS = {"pending": "call", "then": "call", "inline": "call", "batch": "item", "depth": "level",
         "threads": "thread"}


def run_growth(binary, *args):
    cmd = [binary] + [str(a) for a in args]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {run.stderr.strip()}")
    return json.loads(run.stdout) if run.stdout.startswith("{") else run.stdout.strip()


def thread_counts():
    """1, 2, then doubling up to 16 while the machine has the CPUs."""
    cpus = os.cpu_count() or 1
    return [1, 2] + [t for t in (4, 8, 16) if t <= cpus]


# ---- churn ------------------------------------------------------------------

def churn(binary, samples):
    out = {}
    for k in CHURN_AT_ONCE:
        r = run_growth(binary, "churn", k, samples)
        bare, sa = r["bare_ns"], r["samples_ns"]
        out[str(k)] = {"bare_ns": stats.interval(bare), "sa_ns": stats.interval(sa),
                       "extra_ns": stats.interval([s - b for s, b in zip(sa, bare)])}
    return out


# ---- memory -----------------------------------------------------------------

def memory_point(binary, curve, n):
    """Bytes per unit at the peak over before (heap and resident), and the
    three readings."""
    if curve == "threads":
        memory = run_growth(binary, "threads", n)["memory"]
    else:
        memory = run_growth(binary, "memory", curve, n)["memory"]
    heap, rss = memory["heap"], memory["rss"]
    return {"heap": (heap[1] - heap[0]) / n, "rss": (rss[1] - rss[0]) / n,
            "heap_bytes": heap, "rss_bytes": rss}


# ---- the curves -------------------------------------------------------------

def instructions_per_unit(binary, curve, n):
    """Instructions of one warm round at n, per unit (callgrind)."""
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
           "--collect-atstart=no", "--toggle-collect=counted_round*", binary, "count", curve,
           str(n)]
    run = subprocess.run(cmd, capture_output=True, text=True)
    m = re.search(r"Collected : (\d+)", run.stderr)
    if run.returncode != 0 or not m or int(m.group(1)) == 0:
        raise RuntimeError(f"{' '.join(cmd)}: {run.stderr[-500:]}")
    return int(m.group(1)) / json.loads(run.stdout)["units"]


def exact_segments(ns, values):
    """Segments of exact figures (the interval is the figure). A figure at or
    below zero (nothing held) makes a flat segment if it stays so."""
    segments = []
    for n0, n1, v0, v1 in zip(ns, ns[1:], values, values[1:]):
        if v0 <= 0 or v1 <= 0:
            segments.append({"from": n0, "to": n1, "slope": 0 if v1 <= 0 else None,
                             "slope_ci": [None, None], "verdict": "flat" if v1 <= 0 else "bends"})
        else:
            segments.append(stats.segment(n0, n1, v1 / v0, v1 / v0, v1 / v0))
    return segments


def timed_curve(binary, curve, ns, samples):
    """Points timed in turn in one process: each point's interval, and the
    slope from each point to the next, from their paired ratio."""
    per_point = run_growth(binary, "time", curve, samples, *ns)["samples_ns"]
    points = [stats.interval(xs) for xs in per_point]
    segments = [stats.slopes(n0, n1, *stats.interval(stats.paired_ratios(b, a)))
                for n0, n1, a, b in zip(ns, ns[1:], per_point, per_point[1:])]
    return points, segments


def unpaired_segments(ns, intervals, judge):
    """Segments between points measured in separate processes: the interval
    of a ratio is the conservative one from the two points' intervals."""
    segments = []
    for n0, n1, (v0, lo0, hi0), (v1, lo1, hi1) in zip(ns, ns[1:], intervals, intervals[1:]):
        lo, hi = (lo1 / hi0, hi1 / lo0) if None not in (lo0, hi0, lo1, hi1) else (None, None)
        segments.append(judge(n0, n1, v1 / v0, lo, hi))
    return segments


def threads_curve(paired, counts, samples, sample_us):
    """Per thread count, one process each: sa/sync/inline's time and its
    paired ratio to the cached-loop wrapper's at the same count."""
    points, ratios = [], []
    for t in counts:
        processes = run_paired(paired, "sa/sync/inline", "baseline/cached-loop/inline",
                               samples, sample_us, threads=t)
        points.append(stats.interval(pooled(processes, 0)))
        ratios.append(stats.process_ratio(processes))
    return points, ratios


def curve_entry(ns, points, time_segments, memory, instructions=None, ratios=None):
    """A curve: its points, the slopes of its segments, its verdicts."""
    bytes_segments = exact_segments(ns, [m["heap"] for m in memory])
    entry = {"n": ns, "points": [], "time_segments": time_segments,
             "bytes_segments": bytes_segments,
             "bytes_verdict": stats.curve_verdict(bytes_segments)}
    if ratios:
        entry["ratio_segments"] = unpaired_segments(ns, ratios, stats.segment)
        entry.update(cost_judged_on="time over the cached-loop wrapper's",
                     cost_verdict=stats.curve_verdict(entry["ratio_segments"]))
    elif instructions:
        entry["instruction_segments"] = exact_segments(ns, instructions)
        entry.update(cost_judged_on="instructions",
                     cost_verdict=stats.curve_verdict(entry["instruction_segments"]))
    else:
        entry.update(cost_judged_on="-", cost_verdict="not judged (no counts)")
    for i, n in enumerate(ns):
        med, lo, hi = points[i]
        p = {"n": n, "ns": med, "ci": [lo, hi], "heap_bytes": memory[i]["heap"],
             "rss_bytes": memory[i]["rss"]}
        if instructions:
            p["instructions"] = instructions[i]
        if ratios:
            r, rlo, rhi = ratios[i]
            p.update(ratio=r, ratio_ci=[rlo, rhi])
        entry["points"].append(p)
    return entry


def curves(args):
    max_depth = int(run_growth(args.growth, "max-depth"))
    plan = {"pending": (PENDING, 1), "batch": (BATCH, 1),
            "depth": (list(range(1, max_depth + 1)), CHEAP_SAMPLES)}
    counting = not args.no_counts and shutil.which("valgrind") is not None
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as pool:
        counts = {curve: [pool.submit(instructions_per_unit, args.growth, curve, n)
                          for n in ns] if counting else None
                  for curve, (ns, _) in plan.items()}
        out = {}
        for curve, (ns, scale) in plan.items():
            memory = [memory_point(args.growth, curve, n) for n in ns]
            points, segments = timed_curve(args.growth, curve, ns, args.samples * scale)
            instructions = [c.result() for c in counts[curve]] if counting else None
            out[curve] = curve_entry(ns, points, segments, memory, instructions=instructions)
    ts = thread_counts()
    memory = [memory_point(args.growth, "threads", t) for t in ts]
    points, ratios = threads_curve(args.paired, ts, args.samples * CHEAP_SAMPLES,
                                   args.sample_us)
    out["threads"] = curve_entry(ts, points, unpaired_segments(ts, points, stats.slopes),
                                 memory, ratios=ratios)
    return out


# ---- report -----------------------------------------------------------------

def fmt_bytes(b):
    if abs(b) >= 1 << 20:
        return f"{b / (1 << 20):.1f} MiB"
    if abs(b) >= 1 << 10:
        return f"{b / (1 << 10):.1f} KiB"
    return f"{b:.0f} B"


def fmt_steepest(segments):
    seg = stats.steepest(segments)
    if seg is None:
        return "-"
    lo, hi = seg["slope_ci"]
    ci = f" [{lo:.2f}, {hi:.2f}]" if lo is not None and lo != hi else ""
    return f"steepest {seg['from']:g}->{seg['to']:g}: {seg['slope']:.2f}{ci}"


def word(met):
    return {True: "met", False: "MISS", None: "undecided: rerun"}[met]


def print_churn(result):
    print("thread churn: a thread making one sync call and exiting, against a bare "
          "create+join (interleaved; median [95% CI] per thread)")
    for k, c in result.items():
        print(f"  {k:>2} at a time   bare {fmt_interval(*c['bare_ns']):>28}   "
              f"with the call {fmt_interval(*c['sa_ns']):>28}   "
              f"the call adds {fmt_interval(*c['extra_ns']):>28}")


def print_memory(memory):
    print(f"\nmemory per pending call at {SPIKE:,} pending (the op allocates nothing; "
          "a fresh process each)")
    print(f"  {'per':28} {'heap':>10} {'RSS':>10}   {'RSS before':>10} "
          f"{'at peak':>10} {'after':>10}")
    for name, m in memory.items():
        rss = m["rss_bytes"]
        print(f"  {name:28} {fmt_bytes(m['heap']):>10} {fmt_bytes(m['rss']):>10}   "
              f"{fmt_bytes(rss[0]):>10} {fmt_bytes(rss[1]):>10} {fmt_bytes(rss[2]):>10}")


def print_curves(result):
    print(f"\ngrowth curves (a segment bends where the log-log slope between consecutive "
          f"points is above {stats.BEND_SLOPE}, on all of its 95% interval)")
    for name, c in result.items():
        judged = c["cost_judged_on"]
        steep = c.get("instruction_segments", c.get("ratio_segments", c["time_segments"]))
        print(f"  {name}, per {UNITS[name]}: cost ({judged}) {c['cost_verdict']} "
              f"({fmt_steepest(steep)}); bytes {c['bytes_verdict']} "
              f"({fmt_steepest(c['bytes_segments'])}); time {fmt_steepest(c['time_segments'])}")
        for p in c["points"]:
            extra = f"  {p['instructions']:>7.0f} instr" if "instructions" in p else ""
            if "ratio" in p:
                extra = f"  x{fmt_interval(p['ratio'], *p['ratio_ci'], fmt=lambda r: f'{r:.3g}')}" \
                        " cached-loop/inline"
            print(f"    {p['n']:>9,}  {fmt_interval(p['ns'], *p['ci']):>30}  "
                  f"heap {fmt_bytes(p['heap_bytes']):>9}  RSS {fmt_bytes(p['rss_bytes']):>9}"
                  f"{extra}")


def repeated_bursts(binary):
    """Page faults per burst of futures that repeats the one before it
    (REPEATS of them, after two): counted, exact."""
    return [{"n": n, "faults_per_burst":
             run_growth(binary, "faults", "pending", n, REPEATS)["minor_faults"] / REPEATS}
            for n in REPEAT_SIZES]


def print_repeats(repeats):
    print(f"\npage faults per burst of pending futures, repeated ({REPEATS} bursts after two)")
    for r in repeats:
        print(f"  {r['n']:>9,}  {r['faults_per_burst']:.2f}")


def memory_targets(memory, repeats):
    per_call = {name: memory[name]["rss"] for name in ("pending future", "sa_dispatch_then call")}
    targets = [{"what": f"memory per pending call <= {PER_CALL_TARGET} B (resident, at the peak)",
                "measured": ", ".join(f"{name} {fmt_bytes(b)}" for name, b in per_call.items()),
                "met": all(b <= PER_CALL_TARGET for b in per_call.values())}]
    for name, m in memory.items():
        rss = m["rss_bytes"]
        targets.append({"what": f"RSS after a spike of {SPIKE:,} ({name}) within 10 % of before",
                        "measured": f"{fmt_bytes(rss[0])} before, {fmt_bytes(rss[1])} at peak, "
                                    f"{fmt_bytes(rss[2])} after",
                        "met": rss[2] <= SPIKE_TARGET * rss[0]})
    targets.append({"what": "bursts that repeat fault no memory in again: <= 1 page fault "
                            "per burst",
                    "measured": ", ".join(f"{r['n']:,}: {r['faults_per_burst']:.2f}"
                                          for r in repeats),
                    "met": all(r["faults_per_burst"] <= 1 for r in repeats)})
    return targets


def check_targets(churn_result, memory, repeats, curve_result):
    targets = []
    one = churn_result["1"]["extra_ns"]
    targets.append({"what": "one sync call adds <= 2 us to a thread (one at a time)",
                    "measured": fmt_interval(*one),
                    "met": stats.at_most(one[1], one[2], CHURN_TARGET_NS)})
    targets += memory_targets(memory, repeats)
    threads = curve_result["threads"]["cost_verdict"]
    targets.append({"what": "sync calls share no lock: time over the cached-loop wrapper's "
                            "flat in threads",
                    "measured": threads,
                    "met": True if threads == "flat" else
                    False if threads.startswith("bends") else None})
    return targets


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--growth", required=True)
    ap.add_argument("--paired")
    ap.add_argument("--out", default="bench-report")
    ap.add_argument("--samples", type=int, default=21, help="samples per point of a curve")
    ap.add_argument("--churn-samples", type=int, default=801)
    ap.add_argument("--sample-us", type=int, default=200,
                    help="the least time of a sample of the threads curve")
    ap.add_argument("--no-counts", action="store_true",
                    help="skip the instruction counts (callgrind); the cost is then not judged")
    ap.add_argument("--no-targets", action="store_true",
                    help="leave out the reference's own targets (another implementation)")
    ap.add_argument("--strict", action="store_true", help="missed targets fail the run")
    ap.add_argument("--memory-only", action="store_true",
                    help="the memory figures and the reference's memory targets alone "
                         "(seconds, and exact: no timing)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if not args.memory_only and not args.paired:
        ap.error("--paired is needed for the curves (or --memory-only)")
    try:
        memory = {name: memory_point(args.growth, curve, SPIKE)
                  for name, curve in (("pending future", "pending"),
                                      ("sa_dispatch_then call", "then"),
                                      ("inline future", "inline"),
                                      ("batch item", "batch"))}
        repeats = repeated_bursts(args.growth)
        churn_result = None if args.memory_only else churn(args.growth, args.churn_samples)
        curve_result = None if args.memory_only else curves(args)
    except RuntimeError as e:
        print(f"growth: {e}", file=sys.stderr)
        return 1
    if churn_result:
        print_churn(churn_result)
    print_memory(memory)
    print_repeats(repeats)
    if curve_result:
        print_curves(curve_result)
    # The reference's own targets: of no concern to another implementation.
    if args.no_targets:
        targets = []
    elif args.memory_only:
        targets = memory_targets(memory, repeats)
    else:
        targets = check_targets(churn_result, memory, repeats, curve_result)
    if targets:
        print("\ntargets (reference implementation):")
    for t in targets:
        print(f"  {word(t['met'])} {t['what']} ({t['measured']})")
    result = {"churn": churn_result, "memory": memory, "repeated_bursts": repeats,
              "curves": curve_result,
              "bend_slope": stats.BEND_SLOPE, "targets": targets}
    with open(os.path.join(args.out, "growth.json"), "w") as f:
        json.dump(result, f, indent=2)
    return 1 if args.strict and any(t["met"] is False for t in targets) else 0


if __name__ == "__main__":
    sys.exit(main())
