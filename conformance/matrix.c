/* The conformance matrix's harness: the op, the entry points' adapters, the
 * contexts, and the ways of taking a result (matrix.h). */
#include "matrix.h"

#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

enum {
  MX_LATER_MS = 1,    /* an op completing later: its timer */
  MX_SLEEP_MS = 2,    /* a blocking function returning later: its sleep */
  MX_LOSER_MS = 2000, /* a FIRST batch's loser: only its cancel hook ends it in time */
  MX_FAR_MS = 60000,  /* a deadline no call reaches */
};

/* A future id no dispatcher gives: what *future holds before a call. */
static const sa_future_t unset_future = {0x5a5a5a5a5a5a5a5aull};

bool mx_why(char *why, size_t size, const char *format, ...) {
  va_list args;
  va_start(args, format);
  vsnprintf(why, size, format, args);
  va_end(args);
  return false;
}

static uint64_t ms_from_now(unsigned ms) { return uv_hrtime() + (uint64_t)ms * 1000000u; }

static void sleep_ms(unsigned ms) {
  struct timespec left = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&left, &left) != 0)
    ;
}

/* ---- the op ------------------------------------------------------------ */

/* The handle of a work that completes on the next tick or later: freed by
 * its close callback. */
struct mx_pending {
  union {
    uv_handle_t handle;
    uv_idle_t idle;
    uv_timer_t timer;
  } h;
  sa_call_t *call;
  struct mx_work *work;
};

static void work_complete(struct mx_work *w, sa_call_t *call, int status, void *value) {
  w->done_ns = uv_hrtime();
  atomic_fetch_add(&w->completions, 1);
  sa_complete(call, status, value);
}

static void free_pending(uv_handle_t *handle) { free(handle->data); }

static void work_finish_pending(struct mx_pending *p, int status, void *value) {
  p->work->pending = NULL;
  uv_close(&p->h.handle, free_pending);
  work_complete(p->work, p->call, status, value);
}

static void on_work_idle(uv_idle_t *idle) {
  struct mx_pending *p = idle->data;
  work_finish_pending(p, p->work->status, p->work->value);
}

static void on_work_timer(uv_timer_t *timer) {
  struct mx_pending *p = timer->data;
  work_finish_pending(p, p->work->status, p->work->value);
}

static void work_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  struct mx_work *w = arg;
  w->start_thread = pthread_self();
  w->start_loop = loop;
  atomic_fetch_add(&w->starts, 1);
  if (w->when == SA_TEST_INLINE) {
    work_complete(w, call, w->status, w->value);
    return;
  }
  struct mx_pending *p = malloc(sizeof *p);
  cr_assert_not_null(p);
  p->call = call;
  p->work = w;
  p->h.handle.data = p;
  w->pending = p;
  if (w->when == SA_TEST_NEXT_TICK) {
    cr_assert_eq(uv_idle_init(loop, &p->h.idle), 0);
    cr_assert_eq(uv_idle_start(&p->h.idle, on_work_idle), 0);
  } else {
    cr_assert_eq(uv_timer_init(loop, &p->h.timer), 0);
    cr_assert_eq(uv_timer_start(&p->h.timer, on_work_timer, w->delay_ms, 0), 0);
  }
}

static void work_cancel(sa_call_t *call, uv_loop_t *loop, void *arg) {
  struct mx_work *w = arg;
  (void)call;
  (void)loop;
  atomic_fetch_add(&w->hooks, 1);
  if (w->pending)
    work_finish_pending(w->pending, SA_ECANCELED, NULL);
}

static const sa_op_t work_op = {work_start, work_cancel};

/* The work as a blocking function: returns at once, or after a sleep. */
static int work_blocking(void *arg, void **value) {
  struct mx_work *w = arg;
  w->start_thread = pthread_self();
  w->start_loop = sa_current_loop();
  atomic_fetch_add(&w->starts, 1);
  if (w->when != SA_TEST_INLINE)
    sleep_ms(w->delay_ms);
  *value = w->value;
  w->done_ns = uv_hrtime();
  atomic_fetch_add(&w->completions, 1);
  return w->status;
}

/* ---- the entry points -------------------------------------------------- */

static void *work_value(const struct mx_call *k) { return k->work.value; }

static int call_dispatch(struct mx_call *k, sa_mode_t mode, void **value, sa_future_t *future) {
  return sa_dispatch(&work_op, &k->work, mode, value, future);
}

static void record_result(sa_future_t future, int status, void *value, void *data) {
  struct mx_cont *cont = data;
  (void)future;
  if (cont->calls++ == 0) {
    cont->status = status;
    cont->value = value;
  }
}

static int call_then(struct mx_call *k, sa_mode_t mode, void **value, sa_future_t *future) {
  (void)future;
  return sa_dispatch_then(&work_op, &k->work, mode, value, record_result, &k->cont);
}

static int call_until_far(struct mx_call *k, sa_mode_t mode, void **value,
                          sa_future_t *future) {
  return sa_dispatch_until(&work_op, &k->work, mode, sa_deadline_in(MX_FAR_MS), value, future);
}

static int call_until_no_deadline(struct mx_call *k, sa_mode_t mode, void **value,
                                  sa_future_t *future) {
  return sa_dispatch_until(&work_op, &k->work, mode, SA_NO_DEADLINE, value, future);
}

static int call_blocking(struct mx_call *k, sa_mode_t mode, void **value,
                         sa_future_t *future) {
  return sa_call_blocking(work_blocking, &k->work, mode, value, future);
}

/* ALL: a companion that succeeds at once comes first, so the batch's
 * status is the work's, and its value the work's item if that failed. */
static int call_batch_all(struct mx_call *k, sa_mode_t mode, void **value,
                          sa_future_t *future) {
  k->aside.when = SA_TEST_INLINE;
  k->aside.value = &k->aside;
  k->items[0] = (sa_batch_item_t){.op = &work_op, .arg = &k->aside};
  k->items[1] = (sa_batch_item_t){.op = &work_op, .arg = &k->work};
  return sa_batch(k->items, 2, SA_BATCH_ALL, mode, value, future);
}

static void *batch_all_value(const struct mx_call *k) {
  return k->work.status ? (void *)&k->items[1] : NULL;
}

static bool batch_all_items_ok(const struct mx_call *k, char *why, size_t size) {
  if (k->items[0].status != 0 || k->items[0].value != k->aside.value)
    return mx_why(why, size, "the companion item holds %d, %p, not its result", k->items[0].status,
                  k->items[0].value);
  if (k->items[1].status != k->work.status || k->items[1].value != k->work.value)
    return mx_why(why, size, "the item holds %d, %p, not its op's %d, %p", k->items[1].status,
                  k->items[1].value, k->work.status, k->work.value);
  return true;
}

/* FIRST: the work wins over a loser that only its cancel hook ends. */
static int call_batch_first(struct mx_call *k, sa_mode_t mode, void **value,
                            sa_future_t *future) {
  k->aside.when = SA_TEST_LATER;
  k->aside.delay_ms = MX_LOSER_MS;
  k->items[0] = (sa_batch_item_t){.op = &work_op, .arg = &k->work};
  k->items[1] = (sa_batch_item_t){.op = &work_op, .arg = &k->aside};
  return sa_batch(k->items, 2, SA_BATCH_FIRST, mode, value, future);
}

static void *batch_first_value(const struct mx_call *k) { return (void *)&k->items[0]; }

static bool batch_first_items_ok(const struct mx_call *k, char *why, size_t size) {
  if (k->items[0].status != k->work.status || k->items[0].value != k->work.value)
    return mx_why(why, size, "the winner's item holds %d, %p, not its op's %d, %p",
                  k->items[0].status, k->items[0].value, k->work.status, k->work.value);
  if (k->items[1].status != SA_ECANCELED)
    return mx_why(why, size, "the loser's item holds %d, not SA_ECANCELED", k->items[1].status);
  return true;
}

/* The home of this test process: started by its first call. */
static sa_home_t *home;
static pthread_t home_thread;

static void note_thread(sa_call_t *call, uv_loop_t *loop, void *arg) {
  (void)loop;
  *(pthread_t *)arg = pthread_self();
  sa_complete(call, 0, NULL);
}

static sa_home_t *the_home(void) {
  static const sa_op_t note_thread_op = {note_thread, NULL};
  if (!home) {
    cr_assert_eq(sa_home_start(&home), 0);
    cr_assert_eq(sa_home_call(home, &note_thread_op, &home_thread, SA_MODE_SYNC, NULL, NULL), 0);
  }
  return home;
}

pthread_t mx_home_thread(void) { return home_thread; }

static int call_home(struct mx_call *k, sa_mode_t mode, void **value, sa_future_t *future) {
  return sa_home_call(the_home(), &work_op, &k->work, mode, value, future);
}

const struct mx_entry mx_sa_dispatch = {
    .name = "sa_dispatch", .call = call_dispatch, .value = work_value,
    .site = MX_ON_CALLER, .has_future = true};
const struct mx_entry mx_sa_dispatch_then = {
    .name = "sa_dispatch_then", .call = call_then, .value = work_value,
    .site = MX_ON_CALLER, .has_future = false};
const struct mx_entry mx_sa_dispatch_until_far = {
    .name = "sa_dispatch_until (deadline in 60 s)", .call = call_until_far, .value = work_value,
    .site = MX_ON_CALLER, .has_future = true};
const struct mx_entry mx_sa_dispatch_until_no_deadline = {
    .name = "sa_dispatch_until (SA_NO_DEADLINE)", .call = call_until_no_deadline,
    .value = work_value, .site = MX_ON_CALLER, .has_future = true};
const struct mx_entry mx_sa_call_blocking = {
    .name = "sa_call_blocking", .call = call_blocking, .value = work_value,
    .site = MX_ON_POOL, .has_future = true};
const struct mx_entry mx_sa_batch_all = {
    .name = "sa_batch ALL", .call = call_batch_all, .value = batch_all_value,
    .items_ok = batch_all_items_ok, .site = MX_ON_CALLER, .has_future = true};
const struct mx_entry mx_sa_batch_first = {
    .name = "sa_batch FIRST", .call = call_batch_first, .value = batch_first_value,
    .items_ok = batch_first_items_ok, .site = MX_ON_CALLER, .has_future = true};
const struct mx_entry mx_sa_home_call = {
    .name = "sa_home_call", .call = call_home, .value = work_value,
    .site = MX_ON_HOME, .has_future = true};

void *mx_expected_value(const struct mx_cell *c) { return c->entry->value(&c->call); }

/* ---- coordinates ------------------------------------------------------- */

const struct mx_context mx_contexts[MX_CONTEXTS] = {
    {"plain code, auto", MX_PLAIN, SA_MODE_AUTO, true},
    {"plain code, forced sync", MX_PLAIN, SA_MODE_SYNC, true},
    {"plain code, forced async, waited for", MX_PLAIN, SA_MODE_ASYNC, false},
    {"callback of an sa_run loop, auto", MX_RUN, SA_MODE_AUTO, false},
    {"callback of an sa_run loop, forced async", MX_RUN, SA_MODE_ASYNC, false},
    {"callback of an sa_run loop, forced sync", MX_RUN, SA_MODE_SYNC, true},
    {"callback of uv_run inside sa_enter/sa_leave, auto", MX_SCOPE, SA_MODE_AUTO, false},
};

const char *const mx_future_fn_names[MX_FUTURE_FNS] = {
    "sa_future_status", "sa_future_then", "sa_future_cancel", "sa_future_release",
    "sa_future_wait_until", "sa_future_wait"};

const char *mx_way_name(enum mx_way way) {
  static const char *const names[MX_WAYS] = {
      [MX_RETURNED] = "returned",
      [MX_GIVEN] = "continuation given with the call",
      [MX_THEN_BEFORE] = "continuation attached before delivery",
      [MX_THEN_AFTER] = "continuation attached after delivery",
      [MX_THEN_AFTER_WAIT] = "continuation attached after a wait",
      [MX_WAIT] = "sa_future_wait",
      [MX_WAIT_UNTIL] = "sa_future_wait_until (a far deadline)",
      [MX_STATUS] = "sa_future_status polled",
      [MX_STALE_PENDING] = "future released while pending",
      [MX_STALE_DELIVERED] = "future released after delivery, a new call made",
  };
  return names[way];
}

bool mx_way_fits(const struct mx_entry *e, const struct mx_context *x, enum mx_way way) {
  if (x->sync)
    return way == MX_RETURNED;
  if (!e->has_future)
    return way == MX_GIVEN;
  return way != MX_RETURNED && way != MX_GIVEN;
}

bool mx_way_continues(enum mx_way way) {
  return way == MX_GIVEN || way == MX_THEN_BEFORE || way == MX_THEN_AFTER ||
         way == MX_THEN_AFTER_WAIT;
}

static bool way_releases(enum mx_way way) {
  return way == MX_STALE_PENDING || way == MX_STALE_DELIVERED;
}

/* A blocking function has two timings: it returns at once, or sleeps. */
bool mx_when_fits(const struct mx_entry *e, sa_test_when when) {
  return e->site != MX_ON_POOL || when != SA_TEST_NEXT_TICK;
}

const char *mx_when_name(const struct mx_entry *e, sa_test_when when) {
  if (e->site != MX_ON_POOL)
    return sa_test_when_name(when);
  return when == SA_TEST_INLINE ? "returns at once" : "returns after a 2 ms sleep";
}

static void name_cell(struct mx_cell *c) {
  char status[32];
  if (c->status)
    snprintf(status, sizeof status, "failure %d", c->status);
  else
    snprintf(status, sizeof status, "success");
  snprintf(c->name, sizeof c->name, "[%s | %s | %s | %s | %s]", c->entry->name,
           c->context->name, mx_when_name(c->entry, c->when), mx_way_name(c->way), status);
}

/* ---- making calls ------------------------------------------------------ */

static void set_work(const struct mx_cell *c, struct mx_work *w, sa_test_when when, int status,
                     void *value) {
  w->when = when;
  w->status = status;
  w->value = value;
  if (c->delay_ms)
    w->delay_ms = c->delay_ms;
  else
    w->delay_ms = c->entry->site == MX_ON_POOL ? MX_SLEEP_MS : MX_LATER_MS;
}

static int start_call(const struct mx_cell *c, struct mx_call *k, void **value) {
  k->future = unset_future;
  return c->entry->call(k, c->context->mode, value, &k->future);
}

static void make_call(struct mx_cell *c) {
  static int unset_value;
  struct mx_call *k = &c->call;
  c->value_at_return = &unset_value;
  c->called_ns = uv_hrtime();
  c->rc = start_call(c, k, &c->value_at_return);
  c->starts_at_return = atomic_load(&k->work.starts);
  c->completions_at_return = atomic_load(&k->work.completions);
  c->calls_at_return = k->cont.calls;
  if (c->rc == SA_PENDING && c->entry->has_future)
    c->status_at_return = sa_future_status(k->future, NULL);
}

static bool pending_future(const struct mx_cell *c, const struct mx_call *k) {
  return c->entry->has_future && k->future.id != 0 && k->future.id != unset_future.id;
}

static void attach(struct mx_call *k) {
  k->then_rc = sa_future_then(k->future, record_result, &k->cont);
}

static void take(struct mx_cell *c, int status, void *value) {
  c->taken = true;
  c->taken_status = status;
  c->taken_value = value;
}

/* SA-ENTRY-5: every future function on a released handle, the blocking
 * ones last. A wait_until that waits out its deadline shows a wait would
 * hang: the wait is then not tried. */
static void use_stale(struct mx_cell *c, sa_future_t stale) {
  int *rc = c->stale_rc;
  rc[MX_FN_STATUS] = sa_future_status(stale, NULL);
  rc[MX_FN_THEN] = sa_future_then(stale, record_result, &c->stray);
  rc[MX_FN_CANCEL] = sa_future_cancel(stale);
  rc[MX_FN_RELEASE] = sa_future_release(stale);
  rc[MX_FN_WAIT_UNTIL] = sa_future_wait_until(stale, sa_deadline_in(MX_PATIENCE_MS / 4), NULL);
  rc[MX_FN_WAIT] = rc[MX_FN_WAIT_UNTIL] == SA_ETIMEDOUT ? MX_NOT_TRIED
                                                       : sa_future_wait(stale, NULL);
}

static void release_pending(struct mx_cell *c) {
  c->release_rc = sa_future_release(c->call.future);
  use_stale(c, c->call.future);
}

/* After delivery: release, then make a new call, which may reuse the
 * released record, so that a stale handle mistaken for the new one shows. */
static void release_delivered(struct mx_cell *c) {
  c->release_rc = sa_future_release(c->call.future);
  set_work(c, &c->fresh.work, c->when, 0, &c->fresh);
  if (start_call(c, &c->fresh, NULL) == SA_PENDING)
    attach(&c->fresh);
  use_stale(c, c->call.future);
}

/* The way's step once the result is delivered. */
static void after_delivery(struct mx_cell *c, int status, void *value) {
  switch (c->way) {
  case MX_THEN_AFTER:
    attach(&c->call);
    break;
  case MX_STATUS:
    take(c, status, value);
    break;
  case MX_STALE_DELIVERED:
    release_delivered(c);
    break;
  default:
    break;
  }
}

static void take_by_waiting(struct mx_cell *c) {
  sa_future_t f = c->call.future;
  void *value = NULL;
  int status;
  switch (c->way) {
  case MX_WAIT:
    status = sa_future_wait(f, &value);
    take(c, status, value);
    break;
  case MX_WAIT_UNTIL:
    status = sa_future_wait_until(f, sa_deadline_in(MX_FAR_MS), &value);
    take(c, status, value);
    break;
  case MX_THEN_AFTER_WAIT:
    sa_future_wait(f, NULL);
    attach(&c->call);
    break;
  default:
    break;
  }
}

static bool waits(enum mx_way way) {
  return way == MX_WAIT || way == MX_WAIT_UNTIL || way == MX_THEN_AFTER_WAIT;
}

static bool awaits_delivery(enum mx_way way) {
  return way == MX_THEN_AFTER || way == MX_STATUS || way == MX_STALE_DELIVERED;
}

/* Whether every start of a work has been followed by its completion (a
 * blocking function cancelled in its queue never starts). */
static bool work_settled(const struct mx_work *w) {
  int completions = atomic_load(&w->completions); /* before the starts: never too early */
  return completions >= atomic_load(&w->starts);
}

/* Whether a call has come to its end: its ops completed, its continuation
 * called if one was given or attached. */
static bool call_settled(const struct mx_call *k, bool continues) {
  return work_settled(&k->work) && work_settled(&k->aside) && (!continues || k->cont.calls >= 1);
}

static bool delivered(const struct mx_cell *c) {
  return sa_future_status(c->call.future, NULL) != SA_PENDING;
}

static bool settled(const struct mx_cell *c) {
  if (c->rc != SA_PENDING)
    return true;
  if (!call_settled(&c->call, mx_way_continues(c->way)))
    return false;
  if (c->way == MX_STALE_DELIVERED && pending_future(c, &c->fresh))
    return call_settled(&c->fresh, true);
  return way_releases(c->way) || !pending_future(c, &c->call) || delivered(c);
}

static void record_final(struct mx_cell *c) {
  c->final_calls = c->call.cont.calls;
  if (!way_releases(c->way) && pending_future(c, &c->call))
    c->final_status = sa_future_status(c->call.future, &c->final_value);
}

static void release_futures(struct mx_cell *c) {
  if (!way_releases(c->way) && pending_future(c, &c->call))
    sa_future_release(c->call.future);
  if (pending_future(c, &c->fresh))
    sa_future_release(c->fresh.future);
}

/* ---- plain code -------------------------------------------------------- */

/* Drive this thread's private loop: a call started there and waited for
 * (the batch pattern [SA-MODE-4]). */
static void tick(void) {
  struct value_req req = {.when = SA_TEST_LATER, .delay_ms = 1};
  sa_future_t f;
  if (sa_dispatch(&value_op, &req, SA_MODE_ASYNC, NULL, &f) == SA_PENDING) {
    sa_future_wait(f, NULL);
    sa_future_release(f);
  }
}

static bool drive_until(bool (*done)(const struct mx_cell *), const struct mx_cell *c) {
  uint64_t give_up = ms_from_now(MX_PATIENCE_MS);
  while (!done(c)) {
    if (uv_hrtime() >= give_up)
      return false;
    tick();
  }
  return true;
}

/* The call that ran the loop ends before the loop sits idle: returned,
 * waited for, or driven to its continuation. */
static void finish_warm_call(struct mx_cell *c, int rc) {
  if (rc != SA_PENDING)
    return;
  if (c->entry->has_future) {
    sa_future_wait(c->warm.future, NULL);
    sa_future_release(c->warm.future);
    return;
  }
  uint64_t give_up = ms_from_now(MX_PATIENCE_MS);
  while (c->warm.cont.calls == 0 && uv_hrtime() < give_up)
    tick();
}

/* SA-OP-5: run the loop this call will use (a call of the same entry point
 * in the same mode), then keep the thread busy while the loop sits idle. */
static void let_the_loop_sit_idle(struct mx_cell *c) {
  set_work(c, &c->warm.work, SA_TEST_NEXT_TICK, 0, &c->warm);
  finish_warm_call(c, start_call(c, &c->warm, NULL));
  sleep_ms(c->idle_ms);
}

static void take_in_plain_code(struct mx_cell *c) {
  if (c->way == MX_THEN_BEFORE) {
    attach(&c->call);
  } else if (c->way == MX_STALE_PENDING) {
    release_pending(c);
  } else if (waits(c->way)) {
    take_by_waiting(c);
  } else if (awaits_delivery(c->way) && drive_until(delivered, c)) {
    void *value = NULL;
    int status = sa_future_status(c->call.future, &value);
    after_delivery(c, status, value);
  }
  drive_until(settled, c);
  tick(); /* the loop runs on */
}

static void run_in_plain_code(struct mx_cell *c) {
  if (c->idle_ms)
    let_the_loop_sit_idle(c);
  make_call(c);
  if (c->rc != SA_PENDING)
    return;
  take_in_plain_code(c);
  record_final(c);
  release_futures(c);
}

/* ---- a callback of a loop ---------------------------------------------- */

static void on_poll(uv_timer_t *poll) {
  struct mx_cell *c = poll->data;
  void *value = NULL;
  int status = sa_future_status(c->call.future, &value);
  if (status == SA_PENDING && uv_hrtime() < c->give_up_ns)
    return;
  uv_close((uv_handle_t *)poll, NULL);
  if (status != SA_PENDING)
    after_delivery(c, status, value);
}

static void poll_for_delivery(struct mx_cell *c) {
  c->give_up_ns = ms_from_now(MX_PATIENCE_MS);
  cr_assert_eq(uv_timer_init(c->app_loop, &c->poll), 0);
  c->poll.data = c;
  cr_assert_eq(uv_timer_start(&c->poll, on_poll, 1, 1), 0);
}

static void take_in_loop(struct mx_cell *c) {
  if (c->way == MX_THEN_BEFORE) {
    attach(&c->call);
  } else if (c->way == MX_STALE_PENDING) {
    release_pending(c);
  } else if (waits(c->way)) {
    uv_stop(c->app_loop); /* waited for from plain code, once the loop returns */
    c->stopped = true;
  } else if (awaits_delivery(c->way)) {
    poll_for_delivery(c);
  }
}

static void on_kick(uv_timer_t *kick) {
  struct mx_cell *c = kick->data;
  uv_close((uv_handle_t *)kick, NULL);
  if (c->idle_ms)
    let_the_loop_sit_idle(c);
  make_call(c);
  if (c->rc == SA_PENDING)
    take_in_loop(c);
}

static void run_app_loop(struct mx_cell *c) {
  if (c->context->place == MX_RUN) {
    sa_run(c->app_loop, UV_RUN_DEFAULT);
    return;
  }
  cr_assert_eq(sa_enter(c->app_loop), 0);
  uv_run(c->app_loop, UV_RUN_DEFAULT);
  cr_assert_eq(sa_leave(c->app_loop), 0);
}

/* Run the loop on until the cell's calls have ended (a loop no handle keeps
 * alive returns early), then close it. */
static void run_on_and_close(struct mx_cell *c) {
  uint64_t give_up = ms_from_now(MX_PATIENCE_MS);
  run_app_loop(c);
  while (!settled(c) && uv_hrtime() < give_up) {
    sleep_ms(1);
    run_app_loop(c);
  }
  record_final(c);
  release_futures(c);
  while ((c->close_rc = sa_loop_close(c->app_loop)) == SA_EBUSY && uv_hrtime() < give_up) {
    sleep_ms(1);
    run_app_loop(c);
  }
}

static void run_in_loop(struct mx_cell *c) {
  c->app_loop = &c->loop;
  cr_assert_eq(uv_loop_init(c->app_loop), 0);
  cr_assert_eq(uv_timer_init(c->app_loop, &c->kick), 0);
  c->kick.data = c;
  cr_assert_eq(uv_timer_start(&c->kick, on_kick, 0, 0), 0);
  run_app_loop(c);
  if (c->stopped)
    take_by_waiting(c);
  run_on_and_close(c);
}

void mx_run_cell(struct mx_cell *c) {
  name_cell(c);
  set_work(c, &c->call.work, c->when, c->status, &c->call);
  c->caller = pthread_self();
  if (c->context->place == MX_PLAIN)
    run_in_plain_code(c);
  else
    run_in_loop(c);
}

void mx_finish(void) {
  if (home) {
    cr_assert_eq(sa_home_stop(home), 0);
    home = NULL;
  }
  tick(); /* what is left on the private loop runs */
}
