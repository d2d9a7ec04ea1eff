/*
 * Runs one benchmark case a given number of times, for instruction counts
 * under valgrind --tool=callgrind and syscall counts under strace. The
 * per-call figure is the difference between two runs with different
 * counts, divided by the difference in calls, which cancels set-up costs.
 *
 *   bench_instr CASE RUNS      (a case's calls per run: its batch)
 *   bench_instr --all RUNS     every case in turn: the cases' own test
 *   bench_instr --list         name, kind, op, batch, baselines (tab-separated)
 */
#include "cases.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Returns the number of failed calls. Not inlined: callgrind counts it
 * alone (--toggle-collect='run_case*'; the compiler may rename a clone). */
__attribute__((noinline)) static int run_case(const struct bench_case *c, long runs) {
  int failed = 0;
  c->setup();
  for (long i = 0; i < runs; i++)
    failed += c->run();
  c->teardown();
  if (failed)
    fprintf(stderr, "bench_instr: %s: %d failed calls\n", c->name, failed);
  return failed;
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "--list") == 0) {
    static const char *const kinds[] = {"sync", "async", "baseline"};
    for (int i = 0; i < bench_ncases; i++)
      printf("%s\t%s\t%s\t%d\t%s\n", bench_cases[i].name, kinds[bench_cases[i].kind],
             bench_cases[i].op, bench_cases[i].batch,
             *bench_cases[i].compare ? bench_cases[i].compare : "-");
    return 0;
  }
  if (argc != 3) {
    fprintf(stderr, "usage: bench_instr CASE RUNS | --all RUNS | --list\n");
    return 2;
  }
  char *end;
  long runs = strtol(argv[2], &end, 10);
  if (*end || runs < 0) {
    fprintf(stderr, "bench_instr: bad count %s\n", argv[2]);
    return 2;
  }
  if (strcmp(argv[1], "--all") == 0) {
    int bad = 0;
    for (int i = 0; i < bench_ncases; i++)
      bad += run_case(&bench_cases[i], runs) != 0;
    return bad != 0;
  }
  const struct bench_case *c = bench_find(argv[1]);
  if (!c) {
    fprintf(stderr, "bench_instr: no case %s\n", argv[1]);
    return 2;
  }
  return run_case(c, runs) != 0;
}
