/*
 * The benchmark cases: three ops, each called
 *   - through the implementation under test, sync (sa_dispatch from plain
 *     code) and async (sa_dispatch_then, or sa_dispatch and a future, from
 *     a loop callback);
 *   - through the baselines a dual-mode dispatcher replaces: a direct call
 *     (the floor), a hand-written blocking wrapper on a cached per-thread
 *     loop, a loop per call (the asyncio.run model), and a hand-off to a
 *     dedicated loop thread with a blocking wait (asgiref / synchronicity);
 *     and, for async, the raw ops started straight on the loop.
 *
 * Each op is written as the users of each interface write it: an sa_op_t
 * that completes with sa_complete, and for the baselines a start function
 * that completes through a done callback. Both make the same libuv calls
 * on the same per-caller state.
 *
 * A case's run() makes `batch` calls. Sync cases make SYNC_BATCH in a loop,
 * so that the harness's indirect call of run() is spread over them: the
 * floor then measures a direct call and its callback, not the harness.
 */
#include "cases.h"

#include <smartasync.h>

#include <pthread.h>
#include <semaphore.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SYNC_BATCH 100
#define ASYNC_BATCH 1000

/* Set-up and tear-down check what they do: a benchmark that leaks a handle
 * or a loop would measure something else than it says. */
static void must(bool ok, const char *what) {
  if (!ok) {
    fprintf(stderr, "bench: %s failed\n", what);
    abort();
  }
}

static void nothing(void) {}

/* ---- what the ops do, whoever calls them ------------------------------- */

/* What an op keeps between the calls of one caller: tick's timer, kept on
 * one loop until released (as a long-lived object keeps its timer, so a
 * call costs a timer start, not a handle's life), and work's request. */
struct op_state {
  uv_timer_t timer;
  uv_loop_t *timer_loop; /* the loop timer is initialised on, or NULL */
  uv_work_t work;
};

/* tick: completes on the next loop iteration, from a 0 ms timer. */
static void tick_arm(struct op_state *s, uv_loop_t *loop, uv_timer_cb fire, void *data) {
  if (s->timer_loop != loop) {
    must(s->timer_loop == NULL, "tick: timer released before its loop changes");
    uv_timer_init(loop, &s->timer);
    s->timer_loop = loop;
  }
  s->timer.data = data;
  uv_timer_start(&s->timer, fire, 0, 0);
}

/* release: closes tick's timer, which must happen before its loop closes.
 * Returns false if there is none; `closed` runs once it is closed. */
static bool tick_release(struct op_state *s, uv_close_cb closed, void *data) {
  if (!s->timer_loop)
    return false;
  s->timer.data = data;
  s->timer_loop = NULL;
  uv_close((uv_handle_t *)&s->timer, closed);
  return true;
}

/* work: an empty job on the libuv threadpool. */
static void work_run(uv_work_t *work) { (void)work; }

static int work_queue(struct op_state *s, uv_loop_t *loop, uv_after_work_cb after,
                      void *data) {
  s->work.data = data;
  return uv_queue_work(loop, &s->work, work_run, after);
}

/* ---- the ops for the baselines ----------------------------------------- */

struct op_call;
typedef void (*op_done_fn)(struct op_call *oc, int status);
typedef void (*op_start_fn)(struct op_call *oc, uv_loop_t *loop);

struct op_call {
  op_done_fn done;
  void *owner; /* the caller's per-call data */
  struct op_state state;
};

static void inline_start(struct op_call *oc, uv_loop_t *loop) {
  (void)loop;
  oc->done(oc, 0);
}

static void tick_fire(uv_timer_t *timer) {
  struct op_call *oc = timer->data;
  oc->done(oc, 0);
}

static void tick_start(struct op_call *oc, uv_loop_t *loop) {
  tick_arm(&oc->state, loop, tick_fire, oc);
}

static void work_after(uv_work_t *work, int status) {
  struct op_call *oc = work->data;
  oc->done(oc, status);
}

static void work_start(struct op_call *oc, uv_loop_t *loop) {
  int rc = work_queue(&oc->state, loop, work_after, oc);
  if (rc)
    oc->done(oc, rc);
}

static void release_closed(uv_handle_t *handle) {
  struct op_call *oc = handle->data;
  oc->done(oc, 0);
}

static void release_start(struct op_call *oc, uv_loop_t *loop) {
  (void)loop;
  if (!tick_release(&oc->state, release_closed, oc))
    oc->done(oc, 0);
}

/* ---- the floor: a direct call and its callback ------------------------- */

static op_start_fn volatile floor_start = inline_start; /* not inlined away */
static _Thread_local int floor_status;

static void floor_done(struct op_call *oc, int status) {
  (void)oc;
  floor_status = status;
}

static int run_floor(void) {
  struct op_call oc;
  int failed = 0;
  oc.done = floor_done;
  for (int i = 0; i < SYNC_BATCH; i++) {
    floor_start(&oc, NULL);
    failed += floor_status != 0;
  }
  return failed;
}

/* ---- a hand-written blocking wrapper ----------------------------------- */

/* The baselines' per-thread op state. */
static _Thread_local struct op_call base_call;

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
__attribute__((noinline)) static int blocking_call(uv_loop_t *loop, op_start_fn start,
                                                   struct op_call *oc) {
  struct blocking_wait w = {.loop = loop};
  oc->done = blocking_done;
  oc->owner = &w;
  start(oc, loop);
  w.running = 1;
  while (!w.done)
    uv_run(loop, UV_RUN_DEFAULT);
  return w.status != 0;
}

/* Cached loop: one per thread, created once. */
static _Thread_local uv_loop_t *cached_loop;

static void cached_setup(void) {
  cached_loop = malloc(sizeof *cached_loop);
  must(cached_loop && uv_loop_init(cached_loop) == 0, "cached loop: init");
}

static void cached_teardown(void) {
  must(blocking_call(cached_loop, release_start, &base_call) == 0, "cached loop: release");
  must(uv_loop_close(cached_loop) == 0, "cached loop: close");
  free(cached_loop);
  cached_loop = NULL;
}

static int cached_batch(op_start_fn start) {
  uv_loop_t *loop = cached_loop;
  struct op_call *oc = &base_call;
  int failed = 0;
  for (int i = 0; i < SYNC_BATCH; i++)
    failed += blocking_call(loop, start, oc);
  return failed;
}

static int run_cached_inline(void) { return cached_batch(inline_start); }
static int run_cached_tick(void) { return cached_batch(tick_start); }
static int run_cached_work(void) { return cached_batch(work_start); }

/* Loop per call: nothing of the op may outlive its loop. */
static int loop_per_call(op_start_fn start, struct op_call *oc) {
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0)
    return 1;
  int failed = blocking_call(&loop, start, oc);
  failed += blocking_call(&loop, release_start, oc);
  return failed + (uv_loop_close(&loop) != 0);
}

/* A batch of calls through a baseline's blocking wrapper. Not for the
 * cached loop, whose per-call cost is small enough that the indirect call
 * would show: cached_batch() calls blocking_call() directly. */
typedef int (*wrapper_fn)(op_start_fn start, struct op_call *oc);

static int wrapper_batch(wrapper_fn call, op_start_fn start) {
  struct op_call *oc = &base_call;
  int failed = 0;
  for (int i = 0; i < SYNC_BATCH; i++)
    failed += call(start, oc);
  return failed;
}

static int run_per_call_inline(void) { return wrapper_batch(loop_per_call, inline_start); }
static int run_per_call_tick(void) { return wrapper_batch(loop_per_call, tick_start); }
static int run_per_call_work(void) { return wrapper_batch(loop_per_call, work_start); }

/* ---- hand-off to a dedicated loop thread ------------------------------- */

struct handoff_req {
  struct op_call *oc;
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
    req->start(req->oc, async->loop);
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
  must(uv_loop_init(&handoff.loop) == 0 &&
           uv_async_init(&handoff.loop, &handoff.wake, handoff_wake) == 0 &&
           pthread_create(&handoff.thread, NULL, handoff_main, NULL) == 0,
       "hand-off: set-up");
}

/* The caller's op state lives in the request's op_call; the loop thread
 * alone touches its handles, the caller only between its calls. */
__attribute__((noinline)) static int handoff_call(op_start_fn start, struct op_call *oc) {
  struct handoff_req req = {.oc = oc, .start = start};
  oc->done = handoff_done;
  oc->owner = &req;
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

static void handoff_teardown(void) {
  must(handoff_call(release_start, &base_call) == 0, "hand-off: release");
  pthread_mutex_lock(&handoff.mutex);
  handoff.stopping = 1;
  pthread_mutex_unlock(&handoff.mutex);
  uv_async_send(&handoff.wake);
  pthread_join(handoff.thread, NULL);
  must(uv_loop_close(&handoff.loop) == 0, "hand-off: close");
  pthread_mutex_destroy(&handoff.mutex);
}

static int run_handoff_inline(void) { return wrapper_batch(handoff_call, inline_start); }
static int run_handoff_tick(void) { return wrapper_batch(handoff_call, tick_start); }
static int run_handoff_work(void) { return wrapper_batch(handoff_call, work_start); }

/* ---- the ops for the implementation under test ------------------------- */

/* `arg` is the caller's struct op_state. */
static void sa_inline_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  (void)loop;
  (void)arg;
  sa_complete(call, 0, NULL);
}

static void sa_tick_fire(uv_timer_t *timer) { sa_complete(timer->data, 0, NULL); }

static void sa_tick_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  tick_arm(arg, loop, sa_tick_fire, call);
}

static void sa_work_after(uv_work_t *work, int status) {
  sa_complete(work->data, status, NULL);
}

static void sa_work_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  int rc = work_queue(arg, loop, sa_work_after, call);
  if (rc)
    sa_complete(call, rc, NULL);
}

static void sa_release_closed(uv_handle_t *handle) { sa_complete(handle->data, 0, NULL); }

static void sa_release_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  (void)loop;
  if (!tick_release(arg, sa_release_closed, call))
    sa_complete(call, 0, NULL);
}

static const sa_op_t sa_inline_op = {sa_inline_start, NULL};
static const sa_op_t sa_tick_op = {sa_tick_start, NULL};
static const sa_op_t sa_work_op = {sa_work_start, NULL};
static const sa_op_t sa_release_op = {sa_release_start, NULL};

/* ---- sync: blocking calls from plain code ------------------------------ */

static _Thread_local struct op_state sa_state;

/* In auto mode: what a blocking caller writes. */
static int sa_sync_batch(const sa_op_t *op) {
  struct op_state *s = &sa_state;
  sa_future_t none;
  int failed = 0;
  for (int i = 0; i < SYNC_BATCH; i++)
    failed += sa_dispatch(op, s, SA_MODE_AUTO, NULL, &none) != 0;
  return failed;
}

static int run_sa_sync_inline(void) { return sa_sync_batch(&sa_inline_op); }
static int run_sa_sync_tick(void) { return sa_sync_batch(&sa_tick_op); }
static int run_sa_sync_work(void) { return sa_sync_batch(&sa_work_op); }

static void sa_sync_teardown(void) {
  sa_future_t none;
  must(sa_dispatch(&sa_release_op, &sa_state, SA_MODE_AUTO, NULL, &none) == 0, "sa: release");
  sa_thread_cleanup();
}

/* ---- async: a batch of calls from one callback of a running loop ------- */

struct async_batch {
  uv_loop_t loop;
  uv_timer_t kick;
  const sa_op_t *op;  /* the sa cases' */
  op_start_fn start;  /* the raw cases' */
  int delivered;
  int failed;
  struct op_state states[ASYNC_BATCH]; /* the sa cases' */
  struct op_call raw[ASYNC_BATCH];     /* the raw cases' */
};

static _Thread_local struct async_batch *batch;

static void async_delivered(struct async_batch *b, int status) {
  b->delivered++;
  if (status != 0) /* a branch: gcc vectorises the two sums into 11 instructions */
    b->failed++;
}

static void sa_async_delivered(sa_future_t f, int status, void *value, void *data) {
  (void)f;
  (void)value;
  async_delivered(data, status);
}

/* The result through a continuation given with the call: sa_dispatch_then. */
static void sa_async_kick(uv_timer_t *timer) {
  struct async_batch *b = timer->data;
  const sa_op_t *op = b->op;
  uv_close((uv_handle_t *)timer, NULL);
  for (int i = 0; i < ASYNC_BATCH; i++)
    if (sa_dispatch_then(op, &b->states[i], SA_MODE_AUTO, NULL, sa_async_delivered, b) !=
        SA_PENDING)
      b->failed++;
}

static void sa_future_delivered(sa_future_t f, int status, void *value, void *data) {
  (void)value;
  async_delivered(data, status);
  sa_future_release(f);
}

/* The result through a future: sa_dispatch, sa_future_then, and the
 * release in the continuation. */
static void sa_future_kick(uv_timer_t *timer) {
  struct async_batch *b = timer->data;
  const sa_op_t *op = b->op;
  uv_close((uv_handle_t *)timer, NULL);
  for (int i = 0; i < ASYNC_BATCH; i++) {
    sa_future_t f;
    if (sa_dispatch(op, &b->states[i], SA_MODE_AUTO, NULL, &f) != SA_PENDING ||
        sa_future_then(f, sa_future_delivered, b) != 0)
      b->failed++;
  }
}

static void raw_async_done(struct op_call *oc, int status) { async_delivered(oc->owner, status); }

static void raw_async_kick(uv_timer_t *timer) {
  struct async_batch *b = timer->data;
  op_start_fn start = b->start;
  uv_close((uv_handle_t *)timer, NULL);
  for (int i = 0; i < ASYNC_BATCH; i++) {
    b->raw[i].done = raw_async_done;
    b->raw[i].owner = b;
    start(&b->raw[i], timer->loop);
  }
}

__attribute__((noinline)) static int run_batch(uv_timer_cb kick) {
  struct async_batch *b = batch;
  b->delivered = b->failed = 0;
  uv_timer_init(&b->loop, &b->kick);
  b->kick.data = b;
  uv_timer_start(&b->kick, kick, 0, 0);
  sa_run(&b->loop, UV_RUN_DEFAULT);
  return b->failed + (b->delivered != ASYNC_BATCH);
}

static int run_sa_batch(uv_timer_cb kick, const sa_op_t *op) {
  batch->op = op;
  return run_batch(kick);
}

static int run_raw_batch(op_start_fn start) {
  batch->start = start;
  return run_batch(raw_async_kick);
}

static int run_sa_async_inline(void) { return run_sa_batch(sa_async_kick, &sa_inline_op); }
static int run_sa_async_tick(void) { return run_sa_batch(sa_async_kick, &sa_tick_op); }
static int run_sa_future_inline(void) { return run_sa_batch(sa_future_kick, &sa_inline_op); }
static int run_sa_future_tick(void) { return run_sa_batch(sa_future_kick, &sa_tick_op); }
static int run_raw_async_inline(void) { return run_raw_batch(inline_start); }
static int run_raw_async_tick(void) { return run_raw_batch(tick_start); }

static void async_setup(void) {
  batch = calloc(1, sizeof *batch);
  must(batch && uv_loop_init(&batch->loop) == 0, "async: set-up");
}

static void async_teardown(void) {
  must(run_sa_batch(sa_async_kick, &sa_release_op) == 0 && run_raw_batch(release_start) == 0,
       "async: release");
  must(sa_loop_close(&batch->loop) == 0, "async: close");
  free(batch);
  batch = NULL;
}

/* ---- the table --------------------------------------------------------- */

#define SYNC_BASELINES(op) \
  "baseline/cached-loop/" op ",baseline/loop-per-call/" op ",baseline/handoff-thread/" op

const struct bench_case bench_cases[] = {
    {"floor/direct-call", BENCH_BASELINE, "inline", "", SYNC_BATCH, 1, nothing, run_floor,
     nothing},
    {"baseline/cached-loop/inline", BENCH_BASELINE, "inline", "", SYNC_BATCH, 1, cached_setup,
     run_cached_inline, cached_teardown},
    {"baseline/cached-loop/tick", BENCH_BASELINE, "tick", "", SYNC_BATCH, 1, cached_setup,
     run_cached_tick, cached_teardown},
    {"baseline/cached-loop/work", BENCH_BASELINE, "work", "", SYNC_BATCH, 1, cached_setup,
     run_cached_work, cached_teardown},
    {"baseline/loop-per-call/inline", BENCH_BASELINE, "inline", "", SYNC_BATCH, 1, nothing,
     run_per_call_inline, nothing},
    {"baseline/loop-per-call/tick", BENCH_BASELINE, "tick", "", SYNC_BATCH, 1, nothing,
     run_per_call_tick, nothing},
    {"baseline/loop-per-call/work", BENCH_BASELINE, "work", "", SYNC_BATCH, 1, nothing,
     run_per_call_work, nothing},
    {"baseline/handoff-thread/inline", BENCH_BASELINE, "inline", "", SYNC_BATCH, 0,
     handoff_setup, run_handoff_inline, handoff_teardown},
    {"baseline/handoff-thread/tick", BENCH_BASELINE, "tick", "", SYNC_BATCH, 0, handoff_setup,
     run_handoff_tick, handoff_teardown},
    {"baseline/handoff-thread/work", BENCH_BASELINE, "work", "", SYNC_BATCH, 0, handoff_setup,
     run_handoff_work, handoff_teardown},
    {"baseline/raw-async/inline", BENCH_BASELINE, "inline", "", ASYNC_BATCH, 1, async_setup,
     run_raw_async_inline, async_teardown},
    {"baseline/raw-async/tick", BENCH_BASELINE, "tick", "", ASYNC_BATCH, 1, async_setup,
     run_raw_async_tick, async_teardown},
    {"sa/sync/inline", BENCH_SYNC, "inline", "floor/direct-call," SYNC_BASELINES("inline"),
     SYNC_BATCH, 1, nothing, run_sa_sync_inline, sa_sync_teardown},
    {"sa/sync/tick", BENCH_SYNC, "tick", SYNC_BASELINES("tick"), SYNC_BATCH, 1, nothing,
     run_sa_sync_tick, sa_sync_teardown},
    {"sa/sync/work", BENCH_SYNC, "work", SYNC_BASELINES("work"), SYNC_BATCH, 1, nothing,
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
