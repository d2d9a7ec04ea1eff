/* SA-BAT-*: batches of calls, all at once, from both worlds. */
#include "sa_test.h"

#include <criterion/criterion.h>

/* How many calls of a batch were in flight at once: the batch's calls run
 * on one loop thread, so plain counters do. */
struct flight {
  int now, max;
};

/* An op that completes from a timer after `delay_ms`; its cancel hook
 * completes a pending call with SA_ECANCELED. */
struct timed {
  struct flight *flight;
  unsigned delay_ms;
  unsigned stop_ms; /* the cancel hook stops it this long after, not at once */
  int status;
  uv_timer_t timer;
  sa_call_t *call;
  bool pending;
  int starts, hooks, completions;
};

static void timed_finish(struct timed *t, int status) {
  t->pending = false;
  t->completions++;
  t->flight->now--;
  uv_close((uv_handle_t *)&t->timer, NULL);
  sa_complete(t->call, status, t);
}

static void timed_fire(uv_timer_t *timer) {
  struct timed *t = timer->data;
  timed_finish(t, t->status);
}

static void timed_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  struct timed *t = arg;
  t->starts++;
  t->call = call;
  t->pending = true;
  if (++t->flight->now > t->flight->max)
    t->flight->max = t->flight->now;
  cr_assert_eq(uv_timer_init(loop, &t->timer), 0);
  t->timer.data = t;
  cr_assert_eq(uv_timer_start(&t->timer, timed_fire, t->delay_ms, 0), 0);
}

static void timed_cancel(sa_call_t *call, uv_loop_t *loop, void *arg) {
  struct timed *t = arg;
  (void)call;
  (void)loop;
  t->hooks++;
  if (!t->pending)
    return;
  if (!t->stop_ms) {
    timed_finish(t, SA_ECANCELED);
    return;
  }
  t->status = SA_ECANCELED;
  cr_assert_eq(uv_timer_start(&t->timer, timed_fire, t->stop_ms, 0), 0);
}

static const sa_op_t timed_op = {timed_start, timed_cancel};
static const sa_op_t timed_op_without_hook = {timed_start, NULL};

#define N 5

struct batch_case {
  struct flight flight;
  struct timed t[N];
  sa_batch_item_t items[N];
};

/* Item i completes after delays[i] ms with statuses[i]. */
static void batch_case_init(struct batch_case *c, const unsigned *delays, const int *statuses) {
  *c = (struct batch_case){0};
  for (int i = 0; i < N; i++) {
    c->t[i] = (struct timed){.flight = &c->flight, .delay_ms = delays[i], .status = statuses[i]};
    c->items[i] = (sa_batch_item_t){.op = &timed_op, .arg = &c->t[i], .status = 12345};
  }
}

static const unsigned mixed_delays[N] = {10, 30, 10, 5, 20};
static const int all_ok[N] = {0, 0, 0, 0, 0};
/* Item 3 fails first in time, item 1 first in order. */
static const int two_fail[N] = {0, -11, 0, -33, 0};

static void check_all_ok(const struct batch_case *c) {
  cr_assert_eq(c->flight.max, N,
               "SA-BAT-1: only %d of %d calls were in flight at once: the batch did not "
               "overlap them", c->flight.max, N);
  for (int i = 0; i < N; i++) {
    cr_assert_eq(c->t[i].starts, 1, "SA-BAT-1: item %d started %d times", i, c->t[i].starts);
    cr_assert_eq(c->items[i].status, 0, "SA-BAT-1: item %d status %d", i, c->items[i].status);
    cr_assert_eq(c->items[i].value, &c->t[i], "SA-BAT-1: item %d value lost", i);
  }
}

Test(SA_BAT_1, sync_batch_overlaps_its_calls_and_reports_them_in_order) {
  struct batch_case c;
  batch_case_init(&c, mixed_delays, all_ok);
  void *value = &c;
  sa_future_t f = {42};
  int rc = sa_batch(c.items, N, SA_BATCH_ALL, SA_MODE_AUTO, &value, &f);
  cr_assert_eq(rc, 0, "SA-BAT-1: sync batch returned %d", rc);
  cr_assert_null(value, "SA-BAT-1: a batch without errors must give a NULL value");
  cr_assert_eq(f.id, 0, "SA-BAT-1: a sync batch must set the future to null");
  check_all_ok(&c);
}

Test(SA_BAT_1, first_error_in_order_decides_the_batch) {
  struct batch_case c;
  batch_case_init(&c, mixed_delays, two_fail);
  void *value = NULL;
  int rc = sa_batch(c.items, N, SA_BATCH_ALL, SA_MODE_SYNC, &value, NULL);
  cr_assert_eq(rc, -11, "SA-BAT-1: batch returned %d, not the first error in order", rc);
  cr_assert_eq(value, &c.items[1], "SA-BAT-1: the value must be the first failing item");
  for (int i = 0; i < N; i++) {
    cr_assert_eq(c.items[i].status, two_fail[i], "SA-BAT-1: item %d status %d", i,
                 c.items[i].status);
    cr_assert_eq(c.t[i].completions, 1, "SA-BAT-1: the batch returned before item %d ended", i);
  }
}

/* SA-BAT-1: an empty ALL batch completes with 0 like any call in its mode:
 * returned at once when sync, delivered through its future when async. */
struct empty_batch {
  int rc;
  int status_at_return;
  int delivered_before_return;
  void *value;
  struct cont_rec cont;
};

static void empty_batch_in_loop(uv_loop_t *loop, void *data) {
  struct empty_batch *e = data;
  sa_future_t f;
  (void)loop;
  e->rc = sa_batch(NULL, 0, SA_BATCH_ALL, SA_MODE_AUTO, &e->value, &f);
  e->delivered_before_return = e->cont.calls;
  if (e->rc != SA_PENDING)
    return;
  e->status_at_return = sa_future_status(f, NULL);
  e->cont.release = true;
  cr_assert_eq(sa_future_then(f, record_cont, &e->cont), 0);
}

Test(SA_BAT_1, empty_batch_completes_with_zero_in_its_mode) {
  const sa_mode_t sync_modes[] = {SA_MODE_AUTO, SA_MODE_SYNC};
  for (int i = 0; i < 2; i++) {
    void *value = &value;
    sa_future_t f = {42};
    int rc = sa_batch(NULL, 0, SA_BATCH_ALL, sync_modes[i], &value, &f);
    cr_assert_eq(rc, 0, "SA-BAT-1: an empty sync batch returned %d", rc);
    cr_assert_null(value, "SA-BAT-1: an empty sync batch gave a value");
    cr_assert_eq(f.id, 0, "SA-BAT-1: an empty sync batch gave a future");
  }

  struct empty_batch e = {.value = &e};
  sa_test_in_loop(empty_batch_in_loop, &e);
  cr_assert_eq(e.rc, SA_PENDING, "SA-BAT-1: an empty batch in a loop callback returned %d", e.rc);
  cr_assert_null(e.value, "SA-BAT-1: *value not NULL after SA_PENDING");
  cr_assert_eq(e.delivered_before_return, 0, "SA-BAT-1: delivered inside the call");
  cr_assert_eq(e.status_at_return, SA_PENDING, "SA-BAT-1: the future read %d at once",
               e.status_at_return);
  cr_assert_eq(e.cont.calls, 1, "SA-BAT-1: the empty batch was delivered %d times", e.cont.calls);
  cr_assert_eq(e.cont.status, 0, "SA-BAT-1: the empty batch was delivered %d", e.cont.status);
  cr_assert_null(e.cont.value);

  sa_future_t f;
  void *value = &f;
  cr_assert_eq(sa_batch(NULL, 0, SA_BATCH_ALL, SA_MODE_ASYNC, NULL, &f), SA_PENDING,
               "SA-BAT-1: a forced async empty batch from plain code gave no future");
  cr_assert_eq(sa_future_wait(f, &value), 0, "SA-BAT-1: the waited empty batch failed");
  cr_assert_null(value);
  cr_assert_eq(sa_future_release(f), 0);
}

/* SA-BAT-2: async context, the batch as one future. */
struct async_batch {
  struct batch_case c;
  int rc;
  int delivered_before_return;
  struct cont_rec cont;
  sa_batch_kind_t kind;
};

static void async_batch_in_loop(uv_loop_t *loop, void *data) {
  struct async_batch *a = data;
  (void)loop;
  sa_future_t f;
  a->rc = sa_batch(a->c.items, N, a->kind, SA_MODE_AUTO, NULL, &f);
  a->delivered_before_return = a->cont.calls;
  if (a->rc == SA_PENDING) {
    a->cont.release = true;
    cr_assert_eq(sa_future_then(f, record_cont, &a->cont), 0);
  }
}

Test(SA_BAT_2, async_batch_is_one_future_delivered_once) {
  struct async_batch a = {.kind = SA_BATCH_ALL};
  batch_case_init(&a.c, mixed_delays, two_fail);
  sa_test_in_loop(async_batch_in_loop, &a);
  cr_assert_eq(a.rc, SA_PENDING, "SA-BAT-2: async batch returned %d", a.rc);
  cr_assert_eq(a.delivered_before_return, 0, "SA-BAT-2: delivered inside the call");
  cr_assert_eq(a.cont.calls, 1, "SA-BAT-2: %d deliveries", a.cont.calls);
  cr_assert_eq(a.cont.status, -11, "SA-BAT-2: delivered %d", a.cont.status);
  cr_assert_eq(a.cont.value, &a.c.items[1], "SA-BAT-2: delivered the wrong item");
  cr_assert_eq(a.c.flight.max, N, "SA-BAT-2: only %d calls overlapped", a.c.flight.max);
}

Test(SA_BAT_2, forced_async_batch_from_sync_context_is_waited_for) {
  struct batch_case c;
  batch_case_init(&c, mixed_delays, all_ok);
  sa_future_t f;
  cr_assert_eq(sa_batch(c.items, N, SA_BATCH_ALL, SA_MODE_ASYNC, NULL, &f), SA_PENDING);
  cr_assert_eq(sa_future_wait(f, NULL), 0, "SA-BAT-2: waited batch failed");
  check_all_ok(&c);
  cr_assert_eq(sa_future_release(f), 0);
}

/* SA-BAT-3: the first to finish wins; the others are cancelled. */
/* LONG_MS outlasts the quick item by far; only cancellation ends it soon. */
#define LONG_MS 2000
static const unsigned one_quick[N] = {LONG_MS, LONG_MS, 5, LONG_MS, LONG_MS};
static const int quick_fails[N] = {0, 0, -5, 0, 0};

static void check_first(const struct batch_case *c, int rc, void *value) {
  cr_assert_eq(rc, -5, "SA-BAT-3: first-finished batch returned %d", rc);
  cr_assert_eq(value, &c->items[2], "SA-BAT-3: the value must be the winning item");
  cr_assert_eq(c->items[2].status, -5, "SA-BAT-3: the winner's status is %d", c->items[2].status);
  for (int i = 0; i < N; i++) {
    if (i == 2)
      continue;
    cr_assert_eq(c->t[i].hooks, 1, "SA-BAT-3: loser %d: cancel hook ran %d times", i,
                 c->t[i].hooks);
    cr_assert_eq(c->items[i].status, SA_ECANCELED, "SA-BAT-3: loser %d status %d", i,
                 c->items[i].status);
  }
  cr_assert_eq(c->flight.max, N, "SA-BAT-3: only %d calls overlapped", c->flight.max);
}

Test(SA_BAT_3, sync_first_finished_cancels_the_others, .timeout = 8) {
  struct batch_case c;
  batch_case_init(&c, one_quick, quick_fails);
  void *value = NULL;
  sa_future_t f;
  int rc = sa_batch(c.items, N, SA_BATCH_FIRST, SA_MODE_AUTO, &value, &f);
  check_first(&c, rc, value);
  cr_assert_eq(sa_thread_cleanup(), 0);
}

Test(SA_BAT_3, async_first_finished_cancels_the_others, .timeout = 8) {
  struct async_batch a = {.kind = SA_BATCH_FIRST};
  batch_case_init(&a.c, one_quick, quick_fails);
  sa_test_in_loop(async_batch_in_loop, &a);
  cr_assert_eq(a.rc, SA_PENDING, "SA-BAT-3: async batch returned %d", a.rc);
  cr_assert_eq(a.cont.calls, 1, "SA-BAT-3: %d deliveries", a.cont.calls);
  check_first(&a.c, a.cont.status, a.cont.value);
}

/* Cancelling a batch cancels what is still running in it. */
Test(SA_BAT_3, cancelling_a_batch_cancels_its_calls, .timeout = 8) {
  struct batch_case c;
  static const unsigned slow[N] = {LONG_MS, LONG_MS, LONG_MS, LONG_MS, LONG_MS};
  batch_case_init(&c, slow, all_ok);
  sa_future_t f;
  cr_assert_eq(sa_batch(c.items, N, SA_BATCH_ALL, SA_MODE_ASYNC, NULL, &f), SA_PENDING);
  cr_assert_eq(sa_future_cancel(f), 0);
  int rc = sa_future_wait(f, NULL);
  cr_assert_eq(rc, SA_ECANCELED, "SA-BAT-3: cancelled batch returned %d", rc);
  for (int i = 0; i < N; i++)
    cr_assert_eq(c.t[i].hooks, 1, "SA-BAT-3: item %d not cancelled", i);
  cr_assert_eq(sa_future_release(f), 0);

  /* Items without a hook: the cancel is accepted, they run on and keep
   * their own results. */
  static const unsigned quick[N] = {20, 20, 20, 20, 20};
  batch_case_init(&c, quick, two_fail);
  for (int i = 0; i < N; i++)
    c.items[i].op = &timed_op_without_hook;
  cr_assert_eq(sa_batch(c.items, N, SA_BATCH_ALL, SA_MODE_ASYNC, NULL, &f), SA_PENDING);
  cr_assert_eq(sa_future_cancel(f), 0, "SA-BAT-3: a batch refused a cancel");
  void *value = NULL;
  rc = sa_future_wait(f, &value);
  cr_assert_eq(rc, -11, "SA-BAT-3: a batch of hook-less items returned %d after a cancel", rc);
  cr_assert_eq(value, &c.items[1]);
  for (int i = 0; i < N; i++)
    cr_assert_eq(c.items[i].status, two_fail[i],
                 "SA-BAT-3: hook-less item %d holds %d, not its own result", i,
                 c.items[i].status);
  cr_assert_eq(sa_future_release(f), 0);
}

/* SA-BAT-3: a FIRST batch completes once every loser with a cancel hook
 * has completed (here one that stops 20 ms after its hook), and does not
 * wait for a loser without a hook (here one that ends after 800 ms). The
 * hook-less loser's result, when it comes, is dropped: its item keeps
 * SA_ECANCELED. */
#define STOPS_MS 20
#define HOOKLESS_MS 800

enum { WINNER, STOPPING_LOSER, HOOKLESS_LOSER, RACERS };

struct race {
  struct flight flight;
  struct timed t[RACERS];
  sa_batch_item_t items[RACERS];
  /* when the batch's result came */
  int stopping_completions, hookless_completions;
  int rc;
  struct cont_rec cont;
};

static void race_init(struct race *r) {
  *r = (struct race){0};
  r->t[WINNER] = (struct timed){.flight = &r->flight, .delay_ms = 5, .status = -5};
  r->t[STOPPING_LOSER] = (struct timed){.flight = &r->flight, .delay_ms = LONG_MS,
                                        .stop_ms = STOPS_MS};
  r->t[HOOKLESS_LOSER] = (struct timed){.flight = &r->flight, .delay_ms = HOOKLESS_MS};
  for (int i = 0; i < RACERS; i++)
    r->items[i] = (sa_batch_item_t){.op = &timed_op, .arg = &r->t[i]};
  r->items[HOOKLESS_LOSER].op = &timed_op_without_hook;
}

static void note_race_result(struct race *r) {
  r->stopping_completions = r->t[STOPPING_LOSER].completions;
  r->hookless_completions = r->t[HOOKLESS_LOSER].completions;
}

static void check_race(const struct race *r, int status, void *value, const char *mode) {
  cr_assert_eq(status, -5, "SA-BAT-3 (%s): the batch gave %d, not the winner's -5", mode, status);
  cr_assert_eq(value, &r->items[WINNER], "SA-BAT-3 (%s): the value is not the winner's item",
               mode);
  cr_assert_eq(r->t[STOPPING_LOSER].hooks, 1, "SA-BAT-3 (%s): the loser's hook ran %d times",
               mode, r->t[STOPPING_LOSER].hooks);
  cr_assert_eq(r->stopping_completions, 1,
               "SA-BAT-3 (%s): the batch completed before its loser with a hook had", mode);
  cr_assert_eq(r->hookless_completions, 0,
               "SA-BAT-3 (%s): the batch waited for its loser without a hook", mode);
}

/* The hook-less loser ends later; its result must not reach its item. */
static void check_hookless_loser_dropped(const struct race *r, const char *mode) {
  cr_assert_eq(r->t[HOOKLESS_LOSER].completions, 1, "SA-BAT-3 (%s): the loser never ended",
               mode);
  for (int i = STOPPING_LOSER; i < RACERS; i++)
    cr_assert_eq(r->items[i].status, SA_ECANCELED, "SA-BAT-3 (%s): loser %d's item holds %d",
                 mode, i, r->items[i].status);
}

static void note_race_cont(sa_future_t f, int status, void *value, void *data) {
  struct race *r = data;
  note_race_result(r);
  record_cont(f, status, value, &r->cont);
}

static void race_in_loop(uv_loop_t *loop, void *data) {
  struct race *r = data;
  sa_future_t f;
  (void)loop;
  r->rc = sa_batch(r->items, RACERS, SA_BATCH_FIRST, SA_MODE_AUTO, NULL, &f);
  if (r->rc != SA_PENDING)
    return;
  r->cont.release = true;
  cr_assert_eq(sa_future_then(f, note_race_cont, r), 0);
}

Test(SA_BAT_3, first_waits_for_losers_with_a_hook_only, .timeout = 10) {
  struct race sync;
  race_init(&sync);
  void *value = NULL;
  int rc = sa_batch(sync.items, RACERS, SA_BATCH_FIRST, SA_MODE_SYNC, &value, NULL);
  note_race_result(&sync);
  check_race(&sync, rc, value, "sync");
  /* The thread's private loop runs on past the hook-less loser's end. */
  struct value_req after = {.when = SA_TEST_LATER, .delay_ms = HOOKLESS_MS};
  cr_assert_eq(sa_dispatch(&value_op, &after, SA_MODE_SYNC, NULL, NULL), 0);
  check_hookless_loser_dropped(&sync, "sync");

  struct race async;
  race_init(&async);
  sa_test_in_loop(race_in_loop, &async); /* runs until the hook-less loser ends */
  cr_assert_eq(async.rc, SA_PENDING, "SA-BAT-3 (async): the batch returned %d", async.rc);
  cr_assert_eq(async.cont.calls, 1, "SA-BAT-3 (async): %d deliveries", async.cont.calls);
  check_race(&async, async.cont.status, async.cont.value, "async");
  check_hookless_loser_dropped(&async, "async");
}

Test(SA_BAT_4, bad_input_is_refused_without_starting_anything) {
  struct batch_case c;
  batch_case_init(&c, mixed_delays, all_ok);
  sa_future_t f;
  cr_assert_eq(sa_batch(NULL, 2, SA_BATCH_ALL, SA_MODE_SYNC, NULL, NULL), SA_EINVAL);
  cr_assert_eq(sa_batch(c.items, N, (sa_batch_kind_t)9, SA_MODE_SYNC, NULL, NULL), SA_EINVAL);
  cr_assert_eq(sa_batch(c.items, 0, SA_BATCH_FIRST, SA_MODE_SYNC, NULL, NULL), SA_EINVAL);
  cr_assert_eq(sa_batch(c.items, N, SA_BATCH_ALL, (sa_mode_t)9, NULL, &f), SA_EINVAL);
  cr_assert_eq(sa_batch(c.items, N, SA_BATCH_ALL, SA_MODE_ASYNC, NULL, NULL), SA_EINVAL);
  c.items[3].op = NULL;
  cr_assert_eq(sa_batch(c.items, N, SA_BATCH_ALL, SA_MODE_SYNC, NULL, NULL), SA_EINVAL);
  for (int i = 0; i < N; i++)
    cr_assert_eq(c.t[i].starts, 0, "SA-BAT-4: item %d started despite bad input", i);
}
