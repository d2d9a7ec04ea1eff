/*
 * How the cost of the implementation under test grows with the work: calls
 * pending on one loop, batch size, sync nesting depth, threads alive at
 * once, and threads created and ended. Each command prints one JSON object,
 * which bench/growth.py reads:
 *
 *   bench_growth memory CURVE N        the memory of the first round at N
 *   bench_growth faults CURVE N ROUNDS the page faults of ROUNDS rounds at N
 *                                      after two (bursts that repeat)
 *   bench_growth count CURVE N         one warm round at N in counted_round(),
 *                                      for callgrind; prints its units
 *   bench_growth time CURVE SAMPLES N...  ns per unit at each N, interleaved
 *   bench_growth threads T             T threads alive, each after one sync
 *                                      call: memory, per thread
 *   bench_growth churn K SAMPLES       threads created K at a time, each making
 *                                      one sync call and exiting, interleaved
 *                                      with bare threads: ns per thread
 *   bench_growth max-depth             SA_MAX_SYNC_DEPTH
 *
 * The curves, and the unit each is divided by:
 *   pending  N futures pending on one loop: sa_dispatch in a loop callback,
 *            sa_future_then, the release in the continuation; per call
 *   then     the same through sa_dispatch_then; per call
 *   inline   futures of calls completing inside their start function,
 *            delivered once the callback returns; per call
 *   batch    one sa_batch of N items from plain code, blocking; per item
 *   depth    forced-sync calls nested N deep, made in a loop callback; per
 *            level
 *
 * Memory is measured in a fresh process per point, so that no point
 * inherits another's heap: the heap in use (mallinfo2: exact at any N, but
 * blind to memory an implementation maps itself) and the resident set
 * (/proc/self/statm: all anonymous memory, in pages), before the first round, at its
 * peak (every call pending) and after it (every result delivered, every
 * future released). "Before" comes after the program's own buffers are
 * allocated and touched and, except for depth, after one sync call from
 * plain code: a thread's own set-up is not memory per call; a loop's is,
 * and amortises as N grows.
 *
 * The calls' op parks them and allocates nothing per call: one timer, owned
 * by the program, completes every parked call on the next loop iteration,
 * so the memory per call is the dispatcher's own.
 */
#include <smartasync.h>

#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define MIN_UNITS_PER_SAMPLE 32768u
#define MAX_N 10000000ul
#define MAX_POINTS 16
#define MAX_SAMPLES 1000
#define CHURN_THREADS_PER_SAMPLE 100
#define MAX_CHURN_AT_ONCE 1000

/* Set-up and checks: a failed call means the figure measures something
 * else than it says. */
static void must(bool ok, const char *what) {
  if (!ok) {
    fprintf(stderr, "bench_growth: %s failed\n", what);
    exit(1);
  }
}

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* ---- memory ------------------------------------------------------------ */

struct memory {
  size_t heap; /* bytes in use: malloc'd, brk or mmap */
  size_t rss;  /* resident anonymous bytes */
};

/* The resident anonymous memory (heap, mappings, stacks; not the pages of
 * code and files, which a first use pages in): statm's resident less its
 * shared. Read with open/read into the stack: stdio would allocate, and the
 * reading would change the heap it reads. */
static size_t rss_now(void) {
  char text[128];
  int fd = open("/proc/self/statm", O_RDONLY);
  must(fd >= 0, "open /proc/self/statm");
  ssize_t len = read(fd, text, sizeof text - 1);
  close(fd);
  must(len > 0, "read /proc/self/statm");
  text[len] = '\0';
  unsigned long size, resident, shared;
  must(sscanf(text, "%lu %lu %lu", &size, &resident, &shared) == 3, "parse /proc/self/statm");
  return (resident - shared) * (size_t)sysconf(_SC_PAGESIZE);
}

static struct memory memory_now(void) {
  struct mallinfo2 mi = mallinfo2();
  return (struct memory){mi.uordblks + mi.hblkhd, rss_now()};
}

/* Before, at the peak and after the first round. */
struct round_memory {
  struct memory before, peak, after;
};

static void print_memory(const struct round_memory *m) {
  printf("\"memory\": {\"heap\": [%zu, %zu, %zu], \"rss\": [%zu, %zu, %zu]}",
         m->before.heap, m->peak.heap, m->after.heap, m->before.rss, m->peak.rss,
         m->after.rss);
}

static void print_samples(const double *ns, int n) {
  printf("[");
  for (int i = 0; i < n; i++)
    printf("%s%.3f", i ? ", " : "", ns[i]);
  printf("]");
}

/* ---- the op: parked, completed later by one shared timer --------------- */

static struct {
  uv_timer_t timer;
  uv_loop_t *loop;   /* the loop the timer is initialised on, or NULL */
  sa_call_t **calls; /* allocated before measuring: the op's only memory */
  size_t n, cap;
  struct memory *peak; /* where to note the memory at the next firing */
} park;

/* Note the memory now, if a round asked for its peak and has none yet. */
static void note_peak(void) {
  if (park.peak) {
    *park.peak = memory_now();
    park.peak = NULL;
  }
}

static void park_fire(uv_timer_t *timer) {
  (void)timer;
  note_peak();
  size_t n = park.n;
  park.n = 0;
  for (size_t i = 0; i < n; i++)
    must(sa_complete(park.calls[i], 0, NULL) == 0, "sa_complete");
}

static void park_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  (void)arg;
  if (park.loop != loop) {
    must(park.loop == NULL, "park: one loop at a time");
    must(uv_timer_init(loop, &park.timer) == 0, "park: timer");
    park.loop = loop;
  }
  must(park.n < park.cap, "park: room");
  if (park.n == 0)
    must(uv_timer_start(&park.timer, park_fire, 0, 0) == 0, "park: timer start");
  park.calls[park.n++] = call;
}

static const sa_op_t park_op = {park_start, NULL};

/* Allocate and touch the buffer of parked calls before anything is read:
 * not with zeros, which the compiler may turn into an untouched calloc. */
static void park_init(size_t cap) {
  park.calls = malloc(cap * sizeof *park.calls);
  must(park.calls != NULL, "park: buffer");
  memset(park.calls, 0xff, cap * sizeof *park.calls);
  park.cap = cap;
}

static void release_closed(uv_handle_t *handle) {
  park.loop = NULL;
  sa_complete(handle->data, 0, NULL);
}

/* Closes the timer, as a call on its loop: the loop runs until it is. */
static void release_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  (void)arg;
  if (park.loop != loop) {
    sa_complete(call, 0, NULL);
    return;
  }
  park.timer.data = call;
  uv_close((uv_handle_t *)&park.timer, release_closed);
}

static const sa_op_t release_op = {release_start, NULL};

static void inline_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  (void)loop;
  (void)arg;
  sa_complete(call, 0, NULL);
}

static const sa_op_t inline_op = {inline_start, NULL};

static void sync_call(const sa_op_t *op) {
  sa_future_t none;
  must(sa_dispatch(op, NULL, SA_MODE_AUTO, NULL, &none) == 0, "sync call");
}

/* ---- calls made in a loop callback ------------------------------------- */

/* A round: in one callback of the loop, `kick` makes n calls (n outer
 * calls, `depth` deep); the round ends once every result is delivered and
 * the loop has nothing left to do. */
static struct {
  uv_loop_t loop;
  uv_timer_t kick;
  size_t n;
  size_t depth;
  size_t delivered;
  size_t failed;
} round;

static void round_init(void) {
  must(uv_loop_init(&round.loop) == 0 && uv_timer_init(&round.loop, &round.kick) == 0,
       "loop init");
}

static void round_run(uv_timer_cb kick, size_t n) {
  round.n = n;
  round.delivered = round.failed = 0;
  must(uv_timer_start(&round.kick, kick, 0, 0) == 0, "kick");
  must(sa_run(&round.loop, UV_RUN_DEFAULT) >= 0, "sa_run");
  must(round.failed == 0 && round.delivered == n, "round: every call delivered");
}

static void round_close(void) {
  if (park.loop == &round.loop)
    uv_close((uv_handle_t *)&park.timer, NULL);
  uv_close((uv_handle_t *)&round.kick, NULL);
  must(uv_run(&round.loop, UV_RUN_DEFAULT) == 0, "loop drain");
  must(sa_loop_close(&round.loop) == 0, "sa_loop_close");
  park.loop = NULL;
}

static void future_delivered(sa_future_t f, int status, void *value, void *data) {
  (void)value;
  (void)data;
  round.delivered++;
  round.failed += status != 0;
  round.failed += sa_future_release(f) != 0;
}

/* n futures of `op`'s calls made in a loop callback, each released by its
 * continuation. */
static void dispatch_futures(const sa_op_t *op) {
  for (size_t i = 0; i < round.n; i++) {
    sa_future_t f;
    if (sa_dispatch(op, NULL, SA_MODE_AUTO, NULL, &f) != SA_PENDING ||
        sa_future_then(f, future_delivered, NULL) != 0)
      round.failed++;
  }
}

static void pending_kick(uv_timer_t *kick) {
  (void)kick;
  dispatch_futures(&park_op);
}

/* Futures of calls that complete inside their start function: delivered by
 * the loop once the callback returns, all pending at its end. */
static void inline_kick(uv_timer_t *kick) {
  (void)kick;
  dispatch_futures(&inline_op);
  note_peak();
}

static void then_delivered(sa_future_t f, int status, void *value, void *data) {
  (void)f;
  (void)value;
  (void)data;
  round.delivered++;
  round.failed += status != 0;
}

static void then_kick(uv_timer_t *kick) {
  (void)kick;
  for (size_t i = 0; i < round.n; i++)
    if (sa_dispatch_then(&park_op, NULL, SA_MODE_AUTO, NULL, then_delivered, NULL) !=
        SA_PENDING)
      round.failed++;
}

/* A level of nesting: a forced-sync call of the level below, then done. */
static void nest_start(sa_call_t *call, uv_loop_t *loop, void *arg);
static const sa_op_t nest_op = {nest_start, NULL};

static void nest_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  (void)loop;
  uintptr_t depth = (uintptr_t)arg;
  int rc = depth > 1 ? sa_dispatch(&nest_op, (void *)(depth - 1), SA_MODE_SYNC, NULL, NULL)
                     : 0;
  sa_complete(call, rc, NULL);
}

static void depth_kick(uv_timer_t *kick) {
  (void)kick;
  for (size_t i = 0; i < round.n; i++) {
    int rc = sa_dispatch(&nest_op, (void *)(uintptr_t)round.depth, SA_MODE_SYNC, NULL, NULL);
    round.delivered++;
    round.failed += rc != 0;
  }
}

/* ---- the curves -------------------------------------------------------- */

/* A curve: a round at point n, and the units (calls, items or levels) it
 * makes, on which the cost and the memory are divided. */
struct curve {
  const char *name;
  bool warm; /* the thread makes a sync call from plain code first: its own
                set-up is not per-call memory */
  void (*setup)(size_t max_n);
  void (*round)(size_t n);
  size_t (*units)(size_t n);
  void (*teardown)(void);
};

static size_t units_n(size_t n) { return n; }

static void loop_setup(size_t max_n) {
  park_init(max_n);
  round_init();
}

static void loop_teardown(void) {
  round_close();
  free(park.calls);
}

static void pending_round(size_t n) { round_run(pending_kick, n); }
static void then_round(size_t n) { round_run(then_kick, n); }
static void inline_round(size_t n) { round_run(inline_kick, n); }

/* Nested calls: a round makes DEPTH_CALLS outer calls, each n deep. */
#define DEPTH_CALLS 1000u

static void depth_setup(size_t max_n) {
  (void)max_n;
  round_init();
}

static void depth_round(size_t n) {
  round.depth = n;
  round_run(depth_kick, DEPTH_CALLS);
}

static size_t depth_units(size_t n) { return DEPTH_CALLS * n; }

static void depth_teardown(void) { round_close(); }

/* Batches: one sa_batch of n items from plain code, blocking. */
static sa_batch_item_t *items;

static void batch_setup(size_t max_n) {
  park_init(max_n);
  items = calloc(max_n, sizeof *items);
  must(items != NULL, "items");
  for (size_t i = 0; i < max_n; i++)
    items[i] = (sa_batch_item_t){.op = &park_op};
}

static void batch_round(size_t n) {
  void *value;
  sa_future_t none;
  must(sa_batch(items, n, SA_BATCH_ALL, SA_MODE_AUTO, &value, &none) == 0, "sa_batch");
}

static void batch_teardown(void) {
  sync_call(&release_op);
  free(items);
  free(park.calls);
}

static const struct curve curves[] = {
    {"pending", true, loop_setup, pending_round, units_n, loop_teardown},
    {"then", true, loop_setup, then_round, units_n, loop_teardown},
    {"inline", true, loop_setup, inline_round, units_n, loop_teardown},
    {"batch", true, batch_setup, batch_round, units_n, batch_teardown},
    /* No warm-up: the levels' memory is the private loops the thread holds. */
    {"depth", false, depth_setup, depth_round, depth_units, depth_teardown},
};

static const struct curve *find_curve(const char *name) {
  for (size_t i = 0; i < sizeof curves / sizeof *curves; i++)
    if (strcmp(curves[i].name, name) == 0)
      return &curves[i];
  return NULL;
}

/* The memory before, at the peak and after the first round at n. */
static void curve_memory(const struct curve *c, size_t n) {
  struct round_memory m;
  c->setup(n);
  if (c->warm)
    sync_call(&inline_op);
  m.before = memory_now();
  park.peak = &m.peak;
  c->round(n);
  m.after = memory_now();
  if (park.peak) /* nothing was parked: the peak is when the calls are done */
    m.peak = m.after;
  park.peak = NULL;
  c->teardown();
  must(sa_thread_cleanup() == 0, "sa_thread_cleanup");
  printf("{\"case\": \"%s\", \"n\": %zu, ", c->name, n);
  print_memory(&m);
  printf("}\n");
}

/* The page faults of `rounds` rounds at n, after two: a burst that repeats
 * the one before it should find its memory where it left it, not give it
 * back and fault it in again each time. Minor faults are counted, not
 * timed: the figure is exact. */
static void curve_faults(const struct curve *c, size_t n, int rounds) {
  struct rusage before, after;
  c->setup(n);
  if (c->warm)
    sync_call(&inline_op);
  c->round(n);
  c->round(n);
  must(getrusage(RUSAGE_SELF, &before) == 0, "getrusage");
  for (int r = 0; r < rounds; r++)
    c->round(n);
  must(getrusage(RUSAGE_SELF, &after) == 0, "getrusage");
  c->teardown();
  must(sa_thread_cleanup() == 0, "sa_thread_cleanup");
  printf("{\"case\": \"%s\", \"n\": %zu, \"rounds\": %d, \"minor_faults\": %ld}\n",
         c->name, n, rounds, after.ru_minflt - before.ru_minflt);
}

/* One round, in a function of its own: `valgrind --tool=callgrind
 * --collect-atstart=no --toggle-collect='counted_round*'` counts it alone
 * (the compiler may rename a clone of it: counted_round.isra.0). */
__attribute__((noinline)) static void counted_round(const struct curve *c, size_t n) {
  c->round(n);
}

/* A warm round at n for instruction counts, after one to warm up; prints
 * the units it makes. */
static void curve_count(const struct curve *c, size_t n) {
  c->setup(n);
  c->round(n);
  counted_round(c, n);
  c->teardown();
  must(sa_thread_cleanup() == 0, "sa_thread_cleanup");
  printf("{\"case\": \"%s\", \"n\": %zu, \"units\": %zu}\n", c->name, n, c->units(n));
}

/* ns per unit of a sample at n: rounds enough for MIN_UNITS_PER_SAMPLE. */
static double curve_sample(const struct curve *c, size_t n) {
  size_t units = c->units(n);
  size_t rounds = (MIN_UNITS_PER_SAMPLE + units - 1) / units;
  double t0 = now_ns();
  for (size_t r = 0; r < rounds; r++)
    c->round(n);
  return (now_ns() - t0) / (double)(rounds * units);
}

/* Every point of the curve in turn, in one process, ascending then
 * descending: what the machine does meanwhile falls on all points alike,
 * and the ratio of two points within a turn holds from run to run. */
static void curve_time(const struct curve *c, const size_t *ns_at, int npoints, int samples) {
  static double ns[MAX_POINTS][MAX_SAMPLES];
  size_t max_n = 0;
  for (int i = 0; i < npoints; i++)
    max_n = ns_at[i] > max_n ? ns_at[i] : max_n;
  c->setup(max_n);
  for (int i = 0; i < npoints; i++)
    c->round(ns_at[i]); /* warm-up: the records and loops exist */
  for (int s = 0; s < samples; s++)
    for (int k = 0; k < npoints; k++) {
      int i = s % 2 == 0 ? k : npoints - 1 - k;
      ns[i][s] = curve_sample(c, ns_at[i]);
    }
  c->teardown();
  must(sa_thread_cleanup() == 0, "sa_thread_cleanup");
  printf("{\"case\": \"%s\", \"n\": [", c->name);
  for (int i = 0; i < npoints; i++)
    printf("%s%zu", i ? ", " : "", ns_at[i]);
  printf("], \"samples_ns\": [");
  for (int i = 0; i < npoints; i++) {
    printf("%s", i ? ", " : "");
    print_samples(ns[i], samples);
  }
  printf("]}\n");
}

/* ---- threads ----------------------------------------------------------- */

static void *bare_thread(void *arg) { return arg; }

static void *sync_call_thread(void *arg) {
  sync_call(&inline_op);
  return arg;
}

/* Creates `k` threads running `body`, then joins them; ns per thread.
 * Each thread returns its argument when its call went well. */
static double churn_round(void *(*body)(void *), int k) {
  static char ran;
  pthread_t threads[MAX_CHURN_AT_ONCE];
  double t0 = now_ns();
  for (int i = 0; i < k; i++)
    must(pthread_create(&threads[i], NULL, body, &ran) == 0, "pthread_create");
  for (int i = 0; i < k; i++) {
    void *ret;
    must(pthread_join(threads[i], &ret) == 0 && ret == &ran, "thread");
  }
  return (now_ns() - t0) / k;
}

static double churn_sample(void *(*body)(void *), int k) {
  int rounds = (CHURN_THREADS_PER_SAMPLE + k - 1) / k;
  double ns = 0;
  for (int r = 0; r < rounds; r++)
    ns += churn_round(body, k);
  return ns / rounds;
}

/* Bare and calling threads alternate, A B B A ..., so that what the machine
 * does meanwhile falls on both; pair i is (bare[i], sa[i]). */
static void churn_case(int k, int samples) {
  double bare[MAX_SAMPLES], sa[MAX_SAMPLES];
  churn_sample(bare_thread, k); /* warm-up: stacks cached, libraries set up */
  churn_sample(sync_call_thread, k);
  for (int s = 0; s < samples; s++) {
    if (s % 2 == 0) {
      bare[s] = churn_sample(bare_thread, k);
      sa[s] = churn_sample(sync_call_thread, k);
    } else {
      sa[s] = churn_sample(sync_call_thread, k);
      bare[s] = churn_sample(bare_thread, k);
    }
  }
  printf("{\"case\": \"churn\", \"n\": %d, ", k);
  printf("\"bare_ns\": ");
  print_samples(bare, samples);
  printf(", \"samples_ns\": ");
  print_samples(sa, samples);
  printf("}\n");
}

/* T threads alive at once, each after one sync call: what each holds. */
static struct {
  pthread_barrier_t called, measured;
} alive;

static void *alive_thread(void *arg) {
  sync_call(&inline_op);
  pthread_barrier_wait(&alive.called);
  pthread_barrier_wait(&alive.measured);
  return arg;
}

static void threads_case(int t) {
  struct round_memory m;
  pthread_t threads[MAX_CHURN_AT_ONCE];
  must(pthread_barrier_init(&alive.called, NULL, (unsigned)t + 1) == 0 &&
           pthread_barrier_init(&alive.measured, NULL, (unsigned)t + 1) == 0,
       "barriers");
  m.before = memory_now();
  for (int i = 0; i < t; i++)
    must(pthread_create(&threads[i], NULL, alive_thread, NULL) == 0, "pthread_create");
  pthread_barrier_wait(&alive.called);
  m.peak = memory_now();
  pthread_barrier_wait(&alive.measured);
  for (int i = 0; i < t; i++)
    must(pthread_join(threads[i], NULL) == 0, "pthread_join");
  m.after = memory_now();
  pthread_barrier_destroy(&alive.called);
  pthread_barrier_destroy(&alive.measured);
  printf("{\"case\": \"threads\", \"n\": %d, ", t);
  print_memory(&m);
  printf("}\n");
}

/* ---- main -------------------------------------------------------------- */

static size_t parse_count(const char *text, size_t max) {
  char *end;
  unsigned long long v = strtoull(text, &end, 10);
  if (*text == '\0' || *end != '\0' || v == 0 || v > max) {
    fprintf(stderr, "bench_growth: bad count %s (1..%zu)\n", text, max);
    exit(2);
  }
  return (size_t)v;
}

static int usage(void) {
  fprintf(stderr, "usage: bench_growth memory|count pending|then|inline|batch|depth N\n"
                  "       bench_growth faults pending|then|inline|batch|depth N ROUNDS\n"
                  "       bench_growth time pending|then|inline|batch|depth SAMPLES N...\n"
                  "       bench_growth threads T | churn K SAMPLES | max-depth\n");
  return 2;
}

static size_t max_of(const struct curve *c) {
  return strcmp(c->name, "depth") == 0 ? SA_MAX_SYNC_DEPTH : MAX_N;
}

int main(int argc, char **argv) {
  const char *command = argc > 1 ? argv[1] : "";
  const struct curve *c = argc > 2 ? find_curve(argv[2]) : NULL;
  if (argc == 2 && strcmp(command, "max-depth") == 0) {
    printf("%d\n", SA_MAX_SYNC_DEPTH);
  } else if (argc == 3 && strcmp(command, "threads") == 0) {
    threads_case((int)parse_count(argv[2], MAX_CHURN_AT_ONCE));
  } else if (argc == 4 && strcmp(command, "churn") == 0) {
    churn_case((int)parse_count(argv[2], MAX_CHURN_AT_ONCE),
               (int)parse_count(argv[3], MAX_SAMPLES));
  } else if (argc == 4 && c && strcmp(command, "memory") == 0) {
    curve_memory(c, parse_count(argv[3], max_of(c)));
  } else if (argc == 5 && c && strcmp(command, "faults") == 0) {
    curve_faults(c, parse_count(argv[3], max_of(c)), (int)parse_count(argv[4], MAX_SAMPLES));
  } else if (argc == 4 && c && strcmp(command, "count") == 0) {
    curve_count(c, parse_count(argv[3], max_of(c)));
  } else if (argc > 4 && argc - 4 <= MAX_POINTS && c && strcmp(command, "time") == 0) {
    size_t ns_at[MAX_POINTS];
    for (int i = 4; i < argc; i++)
      ns_at[i - 4] = parse_count(argv[i], max_of(c));
    curve_time(c, ns_at, argc - 4, (int)parse_count(argv[3], MAX_SAMPLES));
  } else {
    return usage();
  }
  return 0;
}
