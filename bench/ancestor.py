#!/usr/bin/env python3
"""The ancestor's model, measured on this machine: the Python library this
project descends from ran a sync call on a new event loop per call
(asyncio.run) and an async call as a coroutine awaited in a running loop.
Its ops are those of bench/cases.c: inline (returns at once) and tick (one
loop iteration: asyncio.sleep(0)). The four cases are sampled in turn,
forwards then backwards, so that what the machine does meanwhile falls on
all of them. Prints JSON: {"python": VERSION, "cases": {NAME: [ns per
call, one per sample]}}.

  ancestor.py [--samples N] [--sample-us US]
"""
import argparse
import asyncio
import json
import platform
import time


async def inline_op():
    return None


async def tick_op():
    await asyncio.sleep(0)


def sync_calls(op, calls):
    """ns per call of `calls` sync calls: a new event loop each."""
    t0 = time.perf_counter_ns()
    for _ in range(calls):
        asyncio.run(op())
    return (time.perf_counter_ns() - t0) / calls


async def awaited(op, calls):
    t0 = time.perf_counter_ns()
    for _ in range(calls):
        await op()
    return (time.perf_counter_ns() - t0) / calls


def async_calls(op, calls):
    """ns per call of `calls` awaits in one running loop (its set-up untimed)."""
    return asyncio.run(awaited(op, calls))


CASES = {
    "ancestor/sync/inline": (sync_calls, inline_op),
    "ancestor/sync/tick": (sync_calls, tick_op),
    "ancestor/async/inline": (async_calls, inline_op),
    "ancestor/async/tick": (async_calls, tick_op),
}


def calls_per_sample(run, op, sample_ns):
    """The smallest power of two of calls that makes a sample last sample_ns."""
    calls = 1
    while run(op, calls) * calls < sample_ns and calls < 1 << 24:
        calls *= 2
    return calls


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=61)
    ap.add_argument("--sample-us", type=int, default=2000)
    args = ap.parse_args()
    calls = {name: calls_per_sample(run, op, args.sample_us * 1e3)
             for name, (run, op) in CASES.items()}
    samples = {name: [] for name in CASES}
    names = list(CASES)
    for s in range(args.samples):
        for name in names if s % 2 == 0 else reversed(names):
            run, op = CASES[name]
            samples[name].append(run(op, calls[name]))
    print(json.dumps({"python": platform.python_version(), "cases": samples}))


if __name__ == "__main__":
    main()
