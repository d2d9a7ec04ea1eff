// Per-call overhead of the implementation under test next to its baselines,
// all measured in the same run. Real time: a blocking call is cheap in CPU
// time and expensive in wall time. One iteration makes `batch` calls (the
// counter of that name); the budget gate divides.
#include <benchmark/benchmark.h>

#include <cstring>

#include "cases.h"

namespace {

void RunCase(benchmark::State &state, const bench_case *c) {
  c->setup();
  long failed = 0;
  for (auto _ : state)
    failed += c->run();
  c->teardown();
  if (failed)
    state.SkipWithError("calls failed");
  state.SetItemsProcessed(state.iterations() * c->batch);
  state.counters["batch"] = c->batch;
}

// The cases whose scaling with threads shows whether a lock is shared.
bool Scales(const bench_case *c) {
  return c->threads_ok && (c->kind == BENCH_SYNC ||
                           std::strcmp(c->name, "baseline/cached-loop/inline") == 0);
}

}  // namespace

int main(int argc, char **argv) {
  for (int i = 0; i < bench_ncases; i++) {
    const bench_case *c = &bench_cases[i];
    auto *b = benchmark::RegisterBenchmark(c->name, RunCase, c)->UseRealTime();
    if (Scales(c))
      b->Threads(1)->Threads(2)->Threads(4);
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv))
    return 2;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
