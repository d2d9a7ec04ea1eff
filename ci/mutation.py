"""The mutation score of the test suites on the reference.

Run it as ci/mutation, which installs what it needs. Every mutant
(ci/mutator.py) of the sources under reference/src/ is built as a static
library the test programs are relinked against, and the killers below run
in order until one kills it: a killer kills when something that passes on
the unmutated reference fails on the mutant (a requirement of the
conformance suite, a stress scenario), or when it runs past its time limit.
"""

import argparse
import concurrent.futures
import dataclasses
import datetime
import difflib
import json
import os
import queue
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import mutator

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = "reference/src"
EQUIVALENT = "ci/mutation-equivalent.txt"
DEFINES = ["-D_POSIX_C_SOURCE=200809L"]  # as sa_add_patched_reference() builds it
SCENARIOS = ("shared", "mixed", "churn", "futures", "cancel", "home", "fork", "bursts")


def tool_options(tool):
    """The options of a checking tool, as stress/detectors.options keeps them."""
    with open(os.path.join(REPO, "stress", "detectors.options")) as f:
        return [line.split(" ", 1)[1].strip() for line in f if line.startswith(tool + " ")]


# As the CTest runs (root CMakeLists.txt) give them.
MEMCHECK = ["valgrind", "--quiet", *tool_options("memcheck"), "--child-silent-after-fork=yes",
            "--error-exitcode=99"]
TSAN_ENV = {"TSAN_OPTIONS": ":".join(["halt_on_error=1"] + tool_options("tsan") +
                                     [f"suppressions={REPO}/stress/tsan.supp"])}
# A killer step may take this many times its run on the reference, at least MIN_LIMIT s.
LIMIT_FACTOR, MIN_LIMIT = 4, 30

# The library and the CMake tree of each build flavour.
FLAVOURS = {
    "gcc": (["gcc", "-O2"], ["-DCMAKE_C_COMPILER=gcc"]),
    "tsan": (["clang", "-O2", "-g", "-fsanitize=thread", "-fno-omit-frame-pointer"],
             ["-DCMAKE_C_COMPILER=clang", "-DSA_TSAN=ON"]),
}


class TimedOut(Exception):
    pass


def run(argv, deadline, env=None):
    """Run argv until the deadline (time.monotonic()); its status and output.
    Its output goes to a file, not a pipe, that a hung descendant could hold."""
    with tempfile.TemporaryFile() as log:
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                             env=env and {**os.environ, **env}, start_new_session=True)
        try:
            p.wait(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise TimedOut(" ".join(argv[:2])) from None
        finally:
            kill_descendants(p.pid)
            p.wait()
        log.seek(0)
        return p.returncode, log.read().decode(errors="replace")


def kill_descendants(sid):
    """Kill every process left with setsid() id `sid`, that of the run:
    Criterion puts each test in a process group of its own, and a hung one
    outlives its runner."""
    subprocess.run(["pkill", "-KILL", "-s", str(sid)], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


# ---- the killers -------------------------------------------------------------
# Each returns the names of what fails (requirements, programs); given `known`
# (what fails on the reference), it may stop at the first other failure.

def conformance(tree, work, deadline, known):
    out = os.path.join(work, "conformance")
    verdicts = os.path.join(out, "requirements.tsv")
    if os.path.exists(verdicts):
        os.remove(verdicts)
    rc, _ = run(["conformance/run.sh", "--spec", "SPEC.md", "--out", out,
                 f"{tree}/conformance/conformance_suite",
                 f"{tree}/conformance/conformance_fork"], deadline)
    if not os.path.exists(verdicts):
        return {f"conformance/run.sh exited with {rc}, no verdicts"}
    with open(verdicts) as f:
        return {row.split("\t")[0] for row in f if row.split("\t")[1] != "pass"}


def programs(runs, env=None):
    """A killer that runs programs of the tree, [(name, argv)]: one fails on a
    non-zero exit, a FAILED line or a ThreadSanitizer report."""
    def killer(tree, work, deadline, known):
        failed = set()
        for name, (program, *args) in runs:
            if known is not None and name in known:
                continue
            rc, log = run([os.path.join(tree, program), *args], deadline, env)
            if rc != 0 or "FAILED" in log or "WARNING: ThreadSanitizer" in log:
                failed.add(name)
                if known is not None:
                    break
        return failed
    return killer


def memcheck(runs):
    """A killer that runs programs of the tree under memcheck, [(name, argv)]:
    a leak or a memory error fails one (its exit status)."""
    def killer(tree, work, deadline, known):
        failed = set()
        for name, (program, *args) in runs:
            if known is not None and name in known:
                continue
            rc, _ = run([*MEMCHECK, os.path.join(tree, program), *args], deadline)
            if rc != 0:
                failed.add(name)
                if known is not None:
                    break
        return failed
    return killer


def memory_targets(tree, work, deadline, known):
    """The reference's memory targets (bench/growth.py --memory-only): what
    SA-ENTRY-6 allows an implementation to keep for reuse, the reference
    gives back; only these figures see a mutant that keeps it."""
    rc, _ = run([sys.executable, "bench/growth.py", "--growth", f"{tree}/bench/bench_growth",
                 "--memory-only", "--strict", "--out", os.path.join(work, "memory")], deadline)
    return {"memory targets"} if rc != 0 else set()


def quick_stress(scenarios):
    return [(s, ["stress/sa_stress", s, "-t", "4", "-d", "1000"]) for s in scenarios]


@dataclasses.dataclass
class Killer:
    name: str
    flavour: str  # the build it runs in (FLAVOURS)
    targets: tuple  # the CMake targets it runs
    run: object


# In this order; a killer whose targets the build does not have is left out
# (the model-based random tests, model/, until they land).
KILLERS = [
    Killer("conformance", "gcc", ("conformance_suite", "conformance_fork"), conformance),
    Killer("model", "gcc", ("sa_model",),
           programs([("model", ["model/sa_model", "--no-shrink"])])),
    Killer("stress", "gcc", ("sa_stress",), programs(quick_stress(SCENARIOS))),
    # TSan cannot fork a threaded process: no fork scenario.
    Killer("tsan", "tsan", ("sa_stress",),
           programs(quick_stress(s for s in SCENARIOS if s != "fork"), TSAN_ENV)),
    # Leaks and memory errors, as the CTest model-valgrind run sees them: the
    # conformance suite under memcheck (ci/test's conformance-valgrind) takes
    # minutes, the model's programs in one process some seconds.
    Killer("memcheck", "gcc", ("sa_model",),
           memcheck([("model", ["model/sa_model", "--inline", "--seed", "1", "--rounds", "150",
                                "--timeout", "60"])])),
    Killer("memory", "gcc", ("bench_growth",), memory_targets),
]


# ---- building a mutant -------------------------------------------------------

class Worker:
    """A copy of the sources, the libraries built from it, and the test
    programs of each flavour linked against them: per mutant only the
    mutated file is compiled again (every file, for a header) and the
    programs relinked."""

    def __init__(self, build, sources):
        self.dir, self.sources = build, sources
        self.copy = os.path.join(build, "src")
        self.units = [n for n in sources if n.endswith(".c")]
        self.cflags = DEFINES + ["-std=c11", "-w", f"-I{REPO}/reference/include"] + \
            subprocess.run(["pkg-config", "--cflags", "libuv"], capture_output=True,
                           text=True, check=True).stdout.split()

    def tree(self, flavour):
        return os.path.join(self.dir, flavour, "tree")

    def library(self, flavour):
        return os.path.join(self.dir, flavour, "libmutant.a")

    def write(self, name, text):
        path = os.path.join(self.copy, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(text)

    def setup(self, killers):
        """Build everything from the pristine sources; the killers it can run."""
        for name, text in self.sources.items():
            self.write(name, text)
        for flavour in sorted({k.flavour for k in killers}):
            for name in self.units:
                error = self.compile(flavour, name, "pristine")
                if error:
                    sys.exit(f"ci/mutation: the reference does not build: {error}")
            self.archive(flavour, [])
            subprocess.run(["cmake", "-G", "Unix Makefiles", "-S", ".", "-B", self.tree(flavour),
                            "-DSA_BENCH=ON",
                            "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
                            f"-DSA_IMPL={os.path.abspath(self.library(flavour))}",
                            *FLAVOURS[flavour][1]], cwd=REPO, check=True,
                           stdout=subprocess.DEVNULL)
        present = [k for k in killers if self.has_targets(k)]
        for flavour in sorted({k.flavour for k in present}):
            error = self.relink(flavour, sorted({t for k in present if k.flavour == flavour
                                                 for t in k.targets}))
            if error:
                sys.exit(f"ci/mutation: the test programs do not build: {error}")
        return present

    def has_targets(self, killer):
        p = subprocess.run(["cmake", "--build", self.tree(killer.flavour), "--target", "help"],
                           capture_output=True, text=True, check=True)
        return all(f"... {t}" in p.stdout.splitlines() for t in killer.targets)

    def compile(self, flavour, name, kind):
        """Compile the copy's `name` into the flavour's `kind` objects; None or the error."""
        obj = os.path.join(self.dir, flavour, kind, name + ".o")
        os.makedirs(os.path.dirname(obj), exist_ok=True)
        p = subprocess.run([*FLAVOURS[flavour][0], *self.cflags, "-c",
                            os.path.join(self.copy, name), "-o", obj],
                           capture_output=True, text=True)
        errors = [line for line in p.stderr.splitlines() if "error" in line]
        return (errors or [p.stderr.strip()])[0] if p.returncode else None

    def archive(self, flavour, mutated):
        """The flavour's library: the pristine objects, those of `mutated` replaced."""
        objs = [os.path.join(self.dir, flavour, "mutant" if n in mutated else "pristine",
                             n + ".o") for n in self.units]
        tmp = self.library(flavour) + ".tmp"
        subprocess.run(["ar", "rcs", tmp, *objs], check=True)
        os.replace(tmp, self.library(flavour))

    def relink(self, flavour, targets):
        p = subprocess.run(["cmake", "--build", self.tree(flavour), "--target", *targets],
                           cwd=REPO, capture_output=True, text=True)
        return "does not link: " + p.stdout.strip().splitlines()[-1] if p.returncode else None

    def build(self, flavour, mutant, targets):
        """Build the mutant in the flavour and relink; None, or why it does not build."""
        units = [mutant.path] if mutant.path in self.units else self.units
        self.write(mutant.path, mutant.apply(self.sources[mutant.path]))
        try:
            error = next(filter(None, (self.compile(flavour, n, "mutant") for n in units)), None)
        finally:
            self.write(mutant.path, self.sources[mutant.path])
        if error:
            return error
        self.archive(flavour, units)
        return self.relink(flavour, targets)


# ---- the run -----------------------------------------------------------------

@dataclasses.dataclass
class Baseline:
    seconds: float
    failing: set

    def limit(self):
        return max(MIN_LIMIT, LIMIT_FACTOR * self.seconds)


def take_baseline(worker, killers):
    baseline = {}
    for killer in killers:
        start = time.monotonic()
        failing = killer.run(worker.tree(killer.flavour), worker.dir, start + 600, None)
        baseline[killer.name] = Baseline(time.monotonic() - start, failing)
        note = f", failing on the reference (not counted): {' '.join(sorted(failing))}" \
            if failing else ""
        print(f"baseline {killer.name}: {baseline[killer.name].seconds:.1f} s{note}", flush=True)
    return baseline


def test(worker, mutant, killers, baseline):
    """The verdict on one mutant: (verdict, killer, detail)."""
    built = {}
    for killer in killers:
        flavour = killer.flavour
        if flavour not in built:
            targets = sorted({t for k in killers if k.flavour == flavour for t in k.targets})
            built[flavour] = worker.build(flavour, mutant, targets)
        if built[flavour]:
            return "not-viable", flavour, built[flavour]
        known = baseline[killer.name]
        try:
            failed = killer.run(worker.tree(flavour), worker.dir,
                                time.monotonic() + known.limit(), known.failing)
        except TimedOut as e:
            return "timeout", killer.name, f"{e} ran past {known.limit():.0f} s"
        if failed - known.failing:
            return "killed", killer.name, " ".join(sorted(failed - known.failing))
    return "survived", "", ""


def read_equivalent():
    """The mutants marked equivalent by hand: id -> reason."""
    marked = {}
    with open(os.path.join(REPO, EQUIVALENT)) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                mutant_id, _, reason = line.partition(" ")
                if not reason.strip():
                    sys.exit(f"ci/mutation: {EQUIVALENT}: {mutant_id} has no reason")
                marked[mutant_id] = reason.strip()
    return marked


def revision():
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True,
                              text=True).stdout.strip()
    head = git("rev-parse", "--short", "HEAD")
    if not head:
        return "unknown"
    return head + ("+dirty" if git("status", "--porcelain", SOURCES) else "")


def write_report(out, meta, results):
    counts = {v: sum(r["verdict"] == v for r in results)
              for v in ("killed", "timeout", "survived", "not-viable", "equivalent")}
    scored = len(results) - counts["not-viable"] - counts["equivalent"]
    killed = counts["killed"] + counts["timeout"]
    ran = [r["seconds"] for r in results if r["verdict"] != "equivalent"]
    summary = {**meta, **counts, "score": killed / scored if scored else None,
               "seconds_per_mutant": sum(ran) / len(ran) if ran else None}
    with open(os.path.join(out, "mutation.json"), "w") as f:
        json.dump({**summary, "results": results}, f, indent=2)
    score = f"{killed}/{scored} = {100 * summary['score']:.1f} %" if scored else "none scored"
    lines = [f"mutation score {score} (killed, timeouts included, of all but not viable and "
             f"equivalent)",
             f"sample {meta['sample']} of {meta['mutants']} mutants, seed {meta['seed']}, "
             f"{meta['date']}, revision {meta['revision']}",
             "  ".join(f"{v} {n}" for v, n in counts.items()),
             f"{summary['seconds_per_mutant'] or 0:.1f} s per mutant", "",
             f"{'verdict':10} {'killer':11} {'seconds':>7}  mutant  [detail]"]
    lines += [f"{r['verdict']:10} {r['killer']:11} {r['seconds']:7.1f}  {r['id']}  "
              f"{r['mutated_line']}  [{r['detail']}]" for r in results]
    with open(os.path.join(out, "mutation.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    survivors = os.path.join(out, "survivors")
    shutil.rmtree(survivors, ignore_errors=True)
    os.makedirs(survivors)
    for r in results:
        if r["verdict"] == "survived":
            # ':' is not welcome in every file name (CI artifact stores refuse it).
            name = r["id"].replace(":", "_") + ".patch"
            with open(os.path.join(survivors, name), "w") as f:
                f.write(r["patch"])
    print("\n".join(lines[:4]))


def patch(mutant, source):
    name = f"{SOURCES}/{mutant.path}"
    return "".join(difflib.unified_diff(
        source.decode().splitlines(True), mutant.apply(source).decode().splitlines(True),
        "a/" + name, "b/" + name))


def read_sources(root):
    """Every C file under root: path relative to it -> bytes."""
    sources = {}
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith((".c", ".h")):
                path = os.path.join(folder, name)
                with open(path, "rb") as f:
                    sources[os.path.relpath(path, root)] = f.read()
    return sources


def choose(mutants, only, sample, seed):
    chosen = [m for m in mutants if m.id in only] if only else mutants
    if sample and sample < len(chosen):
        picked = set(random.Random(seed).sample(range(len(chosen)), sample))
        chosen = [m for i, m in enumerate(chosen) if i in picked]
    return chosen


def start(build, jobs, sources):
    """The workers, set up, the killers they run and the baseline."""
    pool = [Worker(os.path.join(build, f"w{i}"), sources) for i in range(jobs)]
    killers = pool[0].setup(KILLERS)
    for worker in pool[1:]:
        worker.setup(killers)
    print("killers: " + ", ".join(k.name for k in killers) + "  (not in this build: " +
          (", ".join(k.name for k in KILLERS if k not in killers) or "none") + ")")
    baseline = take_baseline(pool[0], killers)
    workers = queue.Queue()
    for worker in pool:
        workers.put(worker)
    return workers, killers, baseline


def result(mutant, source, verdict, seconds):
    verdict, killer, detail = verdict
    r = {"id": mutant.id, "file": f"{SOURCES}/{mutant.path}", "line": mutant.line,
         "column": mutant.column, "operator": mutant.operator,
         "replacement": mutant.replacement, "mutated_line": mutant.mutated_line(source),
         "verdict": verdict, "killer": killer, "detail": detail, "seconds": round(seconds, 1)}
    if verdict == "survived":
        r["patch"] = patch(mutant, source)
    return r


def main():
    ap = argparse.ArgumentParser(prog="ci/mutation", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="build-mutation/report", metavar="DIR",
                    help="where the reports go (default build-mutation/report)")
    ap.add_argument("--build", default="build-mutation", metavar="DIR",
                    help="the build trees (default build-mutation)")
    ap.add_argument("--sample", type=int, metavar="N", help="a random sample of N mutants")
    ap.add_argument("--seed", type=int, default=1, metavar="S",
                    help="the sample's seed (default 1)")
    ap.add_argument("--only", action="append", default=[], metavar="ID",
                    help="this mutant only (repeatable)")
    ap.add_argument("--jobs", type=int, default=1, metavar="N",
                    help="mutants tested at once (default 1)")
    ap.add_argument("--list", action="store_true", help="print the mutants, run nothing")
    args = ap.parse_args()
    os.chdir(REPO)

    root = os.path.join(REPO, SOURCES)
    sources = read_sources(root)
    mutants = mutator.find_mutants(
        [os.path.join(root, n) for n in sorted(sources) if n.endswith(".c")], root,
        DEFINES + [f"-I{REPO}/reference/include"])
    chosen = choose(mutants, args.only, args.sample, args.seed)
    if args.list:
        for m in chosen:
            print(f"{m.id}  {m.mutated_line(sources[m.path])}")
        return 0

    equivalent = read_equivalent()
    stale = set(equivalent) - {m.id for m in mutants}
    if stale:
        print(f"ci/mutation: {EQUIVALENT} names mutants that no longer exist: "
              + " ".join(sorted(stale)), file=sys.stderr)
    workers, killers, baseline = start(args.build, max(1, args.jobs), sources)
    meta = {"revision": revision(),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "mutants": len(mutants), "sample": len(chosen),
            "seed": args.seed if args.sample else None, "killers": [k.name for k in killers],
            "baseline": {n: {"seconds": round(b.seconds, 1), "failing": sorted(b.failing)}
                         for n, b in baseline.items()}}
    results = [None] * len(chosen)
    printing = threading.Lock()

    def one(i, mutant):
        began = time.monotonic()
        if mutant.id in equivalent:
            verdict = ("equivalent", "", equivalent[mutant.id])
        else:
            worker = workers.get()
            try:
                verdict = test(worker, mutant, killers, baseline)
            finally:
                workers.put(worker)
        results[i] = result(mutant, sources[mutant.path], verdict, time.monotonic() - began)
        with printing:
            done = sum(r is not None for r in results)
            print(f"[{done:{len(str(len(chosen)))}}/{len(chosen)}] {verdict[0]:10} "
                  f"{verdict[1]:11} {results[i]['seconds']:6.1f} s  {mutant.id}  {verdict[2]}",
                  flush=True)

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as executor:
        for f in [executor.submit(one, i, m) for i, m in enumerate(chosen)]:
            f.result()
    os.makedirs(args.out, exist_ok=True)
    write_report(args.out, meta, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
