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
  if (t->pending)
    timed_finish(t, SA_ECANCELED);
}

static const sa_op_t timed_op = {timed_start, timed_cancel};

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
  void *value = &c;
  cr_assert_eq(sa_batch(c.items, 0, SA_BATCH_ALL, SA_MODE_SYNC, &value, NULL), 0,
               "SA-BAT-4: an empty batch succeeds");
  cr_assert_null(value);
}
