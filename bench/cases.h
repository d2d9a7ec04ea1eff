/*
 * Benchmark cases, shared by the Google Benchmark program (overhead.cc) and
 * the instruction counter (instr.c). Each case makes `batch` calls per
 * invocation of run(); its cost per call is the time of run() / batch.
 *
 * The ops are written once, in plain libuv style, and called both through
 * the implementation under test and through the baselines it replaces.
 */
#ifndef BENCH_CASES_H
#define BENCH_CASES_H

#ifdef __cplusplus
extern "C" {
#endif

enum bench_kind {
  BENCH_SYNC,     /* a blocking call from plain code: budget sync */
  BENCH_ASYNC,    /* calls from inside a loop callback: budget async */
  BENCH_BASELINE  /* what the implementation is compared with */
};

struct bench_case {
  const char *name;      /* "sa/sync/inline", "baseline/cached-loop/tick", ... */
  enum bench_kind kind;
  const char *op;        /* inline, tick, work */
  const char *compare;   /* for implementation cases: baselines, comma-separated */
  int batch;             /* calls per run() */
  int threads_ok;        /* may run on several threads at once */
  /* Per thread: set-up before the first run(), tear-down after the last.
   * run() returns the number of failed calls (0 when all is well). */
  void (*setup)(void);
  int (*run)(void);
  void (*teardown)(void);
};

extern const struct bench_case bench_cases[];
extern const int bench_ncases;

const struct bench_case *bench_find(const char *name);

#ifdef __cplusplus
}
#endif
#endif
