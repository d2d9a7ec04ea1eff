/*
 * The benchmark cases: three ops written once in libuv style, each called
 *   - through the implementation under test (sa_dispatch), sync and async;
 *   - through the baselines a dual-mode dispatcher replaces: a direct call
 *     (the floor), a hand-written blocking wrapper on a cached per-thread
 *     loop, a loop per call (the asyncio.run model), and a hand-off to a
 *     dedicated loop thread with a blocking wait (asgiref / synchronicity);
 *     and, for async, the raw ops started straight on the loop.
 */
#include "cases.h"

#include <smartasync.h>

#include <pthread.h>
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>

/* ---- the ops ----------------------------------------------------------- */

/* Every adapter sets only the fields of struct op_call it uses: zeroing the
 * handle union on each call would cost more than some of the calls. */

struct op_call;
typedef void (*op_done_fn)(struct op_call *oc, int status);
typedef void (*op_start_fn)(struct op_call *oc, uv_loop_t *loop);

struct op_call {
  op_done_fn done;
  void *owner; /* the caller's per-call data */
  union {
    uv_timer_t timer;
    uv_work_t work;
  } u;
};

/* inline: completes inside its start function. */
static void inline_start(struct op_call *oc, uv_loop_t *loop) {
  (void)loop;
  oc->done(oc, 0);
}

/* tick: completes on the next loop iteration, from a 0 ms timer. It
 * completes once its handle is closed, so the caller may reuse the memory
 * at once, even from another thread. */
static void tick_closed(uv_handle_t *handle) {
  struct op_call *oc = handle->data;
  oc->done(oc, 0);
}

static void tick_fire(uv_timer_t *timer) { uv_close((uv_handle_t *)timer, tick_closed); }

static void tick_start(struct op_call *oc, uv_loop_t *loop) {
  uv_timer_init(loop, &oc->u.timer);
  oc->u.timer.data = oc;
  uv_timer_start(&oc->u.timer, tick_fire, 0, 0);
}

/* work: an empty job on the libuv threadpool. */
static void work_run(uv_work_t *work) { (void)work; }

static void work_after(uv_work_t *work, int status) {
  struct op_call *oc = work->data;
  oc->done(oc, status);
}

static void work_start(struct op_call *oc, uv_loop_t *loop) {
  oc->u.work.data = oc;
  int rc = uv_queue_work(loop, &oc->u.work, work_run, work_after);
  if (rc)
    oc->done(oc, rc);
}

static void nothing(void) {}

/* ---- the floor: a direct call and its callback ------------------------- */

static op_start_fn volatile floor_start = inline_start; /* not inlined away */
static _Thread_local int floor_status;

static void floor_done(struct op_call *oc, int status) {
  (void)oc;
  floor_status = status;
}

static int run_floor(void) {
  struct op_call oc;
  oc.done = floor_done;
  floor_start(&oc, NULL);
  return floor_status != 0;
}

/* ---- a hand-written blocking wrapper ----------------------------------- */

struct blocking_wait {
  uv_loop_t *loop;
  int done;
  int running;
  int status;
};

static void blocking_done(struct op_call *oc, int status) {
  struct blocking_wait *w = oc->owner;
  w->done = 1;
  w->status = status;
  if (w->running)
    uv_stop(w->loop); /* UV_RUN_DEFAULT + uv_stop: see the 1.44 ONCE hang */
}

/* Not inlined: the op stays opaque to the wrapper, as it is to a dispatcher. */
__attribute__((noinline)) static int blocking_call(uv_loop_t *loop, op_start_fn start) {
  struct blocking_wait w = {.loop = loop};
  struct op_call oc;
  oc.done = blocking_done;
  oc.owner = &w;
  start(&oc, loop);
  w.running = 1;
  while (!w.done)
    uv_run(loop, UV_RUN_DEFAULT);
  return w.status != 0;
}

/* Cached loop: one per thread, created once. */
static _Thread_local uv_loop_t *cached_loop;

static void cached_setup(void) {
  cached_loop = malloc(sizeof *cached_loop);
  if (!cached_loop || uv_loop_init(cached_loop) != 0)
    abort();
}

static void cached_teardown(void) {
  uv_loop_close(cached_loop);
  free(cached_loop);
  cached_loop = NULL;
}

static int run_cached_inline(void) { return blocking_call(cached_loop, inline_start); }
static int run_cached_tick(void) { return blocking_call(cached_loop, tick_start); }
static int run_cached_work(void) { return blocking_call(cached_loop, work_start); }

/* Loop per call. */
static int loop_per_call(op_start_fn start) {
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0)
    return 1;
  int failed = blocking_call(&loop, start);
  return failed + (uv_loop_close(&loop) != 0);
}

static int run_per_call_inline(void) { return loop_per_call(inline_start); }
static int run_per_call_tick(void) { return loop_per_call(tick_start); }
static int run_per_call_work(void) { return loop_per_call(work_start); }

/* ---- hand-off to a dedicated loop thread ------------------------------- */

struct handoff_req {
  struct op_call oc;
  op_start_fn start;
  sem_t done;
  int status;
  struct handoff_req *next;
};

static struct {
  pthread_t thread;
  uv_loop_t loop;
  uv_async_t wake;
  pthread_mutex_t mutex;
  struct handoff_req *queue; /* under mutex */
  int stopping;              /* under mutex */
} handoff;

static void handoff_done(struct op_call *oc, int status) {
  struct handoff_req *req = oc->owner;
  req->status = status;
  sem_post(&req->done);
}

static void handoff_wake(uv_async_t *async) {
  pthread_mutex_lock(&handoff.mutex);
  struct handoff_req *req = handoff.queue;
  int stopping = handoff.stopping;
  handoff.queue = NULL;
  pthread_mutex_unlock(&handoff.mutex);
  while (req) {
    struct handoff_req *next = req->next;
    req->start(&req->oc, async->loop);
    req = next;
  }
  if (stopping)
    uv_close((uv_handle_t *)async, NULL);
}

static void *handoff_main(void *arg) {
  (void)arg;
  uv_run(&handoff.loop, UV_RUN_DEFAULT);
  return NULL;
}

static void handoff_setup(void) {
  pthread_mutex_init(&handoff.mutex, NULL);
  handoff.stopping = 0;
  if (uv_loop_init(&handoff.loop) || uv_async_init(&handoff.loop, &handoff.wake, handoff_wake) ||
      pthread_create(&handoff.thread, NULL, handoff_main, NULL))
    abort();
}

static void handoff_teardown(void) {
  pthread_mutex_lock(&handoff.mutex);
  handoff.stopping = 1;
  pthread_mutex_unlock(&handoff.mutex);
  uv_async_send(&handoff.wake);
  pthread_join(handoff.thread, NULL);
  uv_loop_close(&handoff.loop);
  pthread_mutex_destroy(&handoff.mutex);
}

__attribute__((noinline)) static int handoff_call(op_start_fn start) {
  struct handoff_req req = {.oc = {.done = handoff_done, .owner = &req}, .start = start};
  sem_init(&req.done, 0, 0);
  pthread_mutex_lock(&handoff.mutex);
  req.next = handoff.queue;
  handoff.queue = &req;
  pthread_mutex_unlock(&handoff.mutex);
  uv_async_send(&handoff.wake);
  while (sem_wait(&req.done) != 0)
    ;
  sem_destroy(&req.done);
  return req.status != 0;
}

static int run_handoff_inline(void) { return handoff_call(inline_start); }
static int run_handoff_tick(void) { return handoff_call(tick_start); }
static int run_handoff_work(void) { return handoff_call(work_start); }

/* ---- the implementation under test ------------------------------------- */

struct sa_arg {
  struct op_call oc;
  op_start_fn start;
};

static void sa_done(struct op_call *oc, int status) { sa_complete(oc->owner, status, NULL); }

static void sa_bench_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  struct sa_arg *a = arg;
  a->oc.owner = call;
  a->oc.done = sa_done;
  a->start(&a->oc, loop);
}

static const sa_op_t sa_bench_op = {sa_bench_start, NULL};

/* A sync call from plain code, in auto mode: what a blocking caller writes. */
__attribute__((noinline)) static int sa_sync_call(op_start_fn start) {
  struct sa_arg a;
  sa_future_t none;
  a.start = start;
  return sa_dispatch(&sa_bench_op, &a, SA_MODE_AUTO, NULL, &none) != 0;
}

static int run_sa_sync_inline(void) { return sa_sync_call(inline_start); }
static int run_sa_sync_tick(void) { return sa_sync_call(tick_start); }
static int run_sa_sync_work(void) { return sa_sync_call(work_start); }

static void sa_sync_teardown(void) { sa_thread_cleanup(); }

/* ---- async: a batch of calls from one callback of a running loop ------- */

#define ASYNC_BATCH 1000

struct async_batch {
  uv_loop_t loop;
  uv_timer_t kick;
  op_start_fn start;
  int delivered;
  int failed;
  struct sa_arg args[ASYNC_BATCH];
  struct op_call raw[ASYNC_BATCH];
};

static _Thread_local struct async_batch *batch;

static void async_setup(void) {
  batch = calloc(1, sizeof *batch);
  if (!batch || uv_loop_init(&batch->loop) != 0)
    abort();
}

static void async_teardown(void) {
  sa_loop_close(&batch->loop);
  free(batch);
  batch = NULL;
}

static void sa_async_delivered(sa_future_t f, int status, void *value, void *data) {
  (void)f;
  (void)value;
  (void)data;
  batch->delivered++;
  batch->failed += status != 0;
}

/* The result through a continuation given with the call: sa_dispatch_then. */
static void sa_async_kick(uv_timer_t *timer) {
  uv_close((uv_handle_t *)timer, NULL);
  for (int i = 0; i < ASYNC_BATCH; i++) {
    batch->args[i].start = batch->start;
    if (sa_dispatch_then(&sa_bench_op, &batch->args[i], SA_MODE_AUTO, NULL,
                         sa_async_delivered, NULL) != SA_PENDING)
      batch->failed++;
  }
}

static void sa_future_delivered(sa_future_t f, int status, void *value, void *data) {
  sa_async_delivered(f, status, value, data);
  sa_future_release(f);
}

/* The result through a future: sa_dispatch, sa_future_then, and the
 * release in the continuation. */
static void sa_future_kick(uv_timer_t *timer) {
  uv_close((uv_handle_t *)timer, NULL);
  for (int i = 0; i < ASYNC_BATCH; i++) {
    sa_future_t f;
    batch->args[i].start = batch->start;
    if (sa_dispatch(&sa_bench_op, &batch->args[i], SA_MODE_AUTO, NULL, &f) != SA_PENDING ||
        sa_future_then(f, sa_future_delivered, NULL) != 0)
      batch->failed++;
  }
}

static void raw_async_done(struct op_call *oc, int status) {
  (void)oc;
  batch->delivered++;
  batch->failed += status != 0;
}

static void raw_async_kick(uv_timer_t *timer) {
  uv_close((uv_handle_t *)timer, NULL);
  for (int i = 0; i < ASYNC_BATCH; i++) {
    batch->raw[i].done = raw_async_done;
    batch->start(&batch->raw[i], timer->loop);
  }
}

__attribute__((noinline)) static int run_batch(uv_timer_cb kick, op_start_fn start) {
  batch->start = start;
  batch->delivered = batch->failed = 0;
  uv_timer_init(&batch->loop, &batch->kick);
  uv_timer_start(&batch->kick, kick, 0, 0);
  sa_run(&batch->loop, UV_RUN_DEFAULT);
  return batch->failed + (batch->delivered != ASYNC_BATCH);
}

static int run_sa_async_inline(void) { return run_batch(sa_async_kick, inline_start); }
static int run_sa_async_tick(void) { return run_batch(sa_async_kick, tick_start); }
static int run_sa_future_inline(void) { return run_batch(sa_future_kick, inline_start); }
static int run_sa_future_tick(void) { return run_batch(sa_future_kick, tick_start); }
static int run_raw_async_inline(void) { return run_batch(raw_async_kick, inline_start); }
static int run_raw_async_tick(void) { return run_batch(raw_async_kick, tick_start); }

/* ---- the table --------------------------------------------------------- */

#define SYNC_BASELINES(op) \
  "baseline/cached-loop/" op ",baseline/loop-per-call/" op ",baseline/handoff-thread/" op

const struct bench_case bench_cases[] = {
    {"floor/direct-call", BENCH_BASELINE, "inline", "", 1, 1, nothing, run_floor, nothing},
    {"baseline/cached-loop/inline", BENCH_BASELINE, "inline", "", 1, 1, cached_setup,
     run_cached_inline, cached_teardown},
    {"baseline/cached-loop/tick", BENCH_BASELINE, "tick", "", 1, 1, cached_setup,
     run_cached_tick, cached_teardown},
    {"baseline/cached-loop/work", BENCH_BASELINE, "work", "", 1, 1, cached_setup,
     run_cached_work, cached_teardown},
    {"baseline/loop-per-call/inline", BENCH_BASELINE, "inline", "", 1, 1, nothing,
     run_per_call_inline, nothing},
    {"baseline/loop-per-call/tick", BENCH_BASELINE, "tick", "", 1, 1, nothing,
     run_per_call_tick, nothing},
    {"baseline/loop-per-call/work", BENCH_BASELINE, "work", "", 1, 1, nothing,
     run_per_call_work, nothing},
    {"baseline/handoff-thread/inline", BENCH_BASELINE, "inline", "", 1, 0, handoff_setup,
     run_handoff_inline, handoff_teardown},
    {"baseline/handoff-thread/tick", BENCH_BASELINE, "tick", "", 1, 0, handoff_setup,
     run_handoff_tick, handoff_teardown},
    {"baseline/handoff-thread/work", BENCH_BASELINE, "work", "", 1, 0, handoff_setup,
     run_handoff_work, handoff_teardown},
    {"baseline/raw-async/inline", BENCH_BASELINE, "inline", "", ASYNC_BATCH, 1, async_setup,
     run_raw_async_inline, async_teardown},
    {"baseline/raw-async/tick", BENCH_BASELINE, "tick", "", ASYNC_BATCH, 1, async_setup,
     run_raw_async_tick, async_teardown},
    {"sa/sync/inline", BENCH_SYNC, "inline", "floor/direct-call," SYNC_BASELINES("inline"), 1,
     1, nothing, run_sa_sync_inline, sa_sync_teardown},
    {"sa/sync/tick", BENCH_SYNC, "tick", SYNC_BASELINES("tick"), 1, 1, nothing,
     run_sa_sync_tick, sa_sync_teardown},
    {"sa/sync/work", BENCH_SYNC, "work", SYNC_BASELINES("work"), 1, 1, nothing,
     run_sa_sync_work, sa_sync_teardown},
    {"sa/async/inline", BENCH_ASYNC, "inline", "baseline/raw-async/inline", ASYNC_BATCH, 1,
     async_setup, run_sa_async_inline, async_teardown},
    {"sa/async/tick", BENCH_ASYNC, "tick", "baseline/raw-async/tick", ASYNC_BATCH, 1,
     async_setup, run_sa_async_tick, async_teardown},
    {"sa/async-future/inline", BENCH_ASYNC, "inline", "baseline/raw-async/inline", ASYNC_BATCH,
     1, async_setup, run_sa_future_inline, async_teardown},
    {"sa/async-future/tick", BENCH_ASYNC, "tick", "baseline/raw-async/tick", ASYNC_BATCH, 1,
     async_setup, run_sa_future_tick, async_teardown},
};

const int bench_ncases = sizeof bench_cases / sizeof *bench_cases;

const struct bench_case *bench_find(const char *name) {
  for (int i = 0; i < bench_ncases; i++)
    if (strcmp(bench_cases[i].name, name) == 0)
      return &bench_cases[i];
  return NULL;
}
