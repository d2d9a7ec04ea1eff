/* SA-CAN-*: cancellation from any thread, delivered exactly once. */
#include "sa_test.h"

#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdlib.h>

/* An op that completes with 0 from a timer after `delay_ms`; its cancel
 * hook stops the timer and completes with SA_ECANCELED. Everything it
 * records happens on the call's loop thread. */
struct probe {
  unsigned delay_ms;
  uv_timer_t timer;
  sa_call_t *call;
  bool pending;
  int hooks;
  pthread_t hook_thread;
  int completions;
  int status; /* what the op completed with */
};

static void probe_finish(struct probe *p, int status) {
  p->pending = false;
  p->completions++;
  p->status = status;
  uv_close((uv_handle_t *)&p->timer, NULL);
  sa_complete(p->call, status, p);
}

static void probe_timer(uv_timer_t *timer) { probe_finish(timer->data, 0); }

static void probe_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  struct probe *p = arg;
  p->call = call;
  p->pending = true;
  cr_assert_eq(uv_timer_init(loop, &p->timer), 0);
  p->timer.data = p;
  cr_assert_eq(uv_timer_start(&p->timer, probe_timer, p->delay_ms, 0), 0);
}

static void probe_cancel(sa_call_t *call, uv_loop_t *loop, void *arg) {
  struct probe *p = arg;
  (void)call;
  (void)loop;
  p->hooks++;
  p->hook_thread = pthread_self();
  if (p->pending)
    probe_finish(p, SA_ECANCELED);
}

static const sa_op_t probe_op = {probe_start, probe_cancel};

struct canceller {
  sa_future_t *futures;
  size_t n;
  int rc[1]; /* the first call's return */
  pthread_t thread;
};

static void *cancel_all(void *arg) {
  struct canceller *c = arg;
  for (size_t i = 0; i < c->n; i++) {
    int rc = sa_future_cancel(c->futures[i]);
    if (i == 0)
      c->rc[0] = rc;
  }
  return NULL;
}

static void start_canceller(struct canceller *c, sa_future_t *futures, size_t n) {
  c->futures = futures;
  c->n = n;
  cr_assert_eq(pthread_create(&c->thread, NULL, cancel_all, c), 0);
}

/* SA-CAN-1, async context: the loop's thread runs the hook. */
struct one_async {
  struct probe p;
  sa_future_t f;
  struct canceller c;
  struct cont_rec cont;
  pthread_t loop_thread;
};

static void cancel_from_other_thread_in_loop(uv_loop_t *loop, void *data) {
  struct one_async *s = data;
  (void)loop;
  s->loop_thread = pthread_self();
  cr_assert_eq(sa_dispatch(&probe_op, &s->p, SA_MODE_AUTO, NULL, &s->f), SA_PENDING);
  cr_assert_eq(sa_future_then(s->f, record_cont, &s->cont), 0);
  start_canceller(&s->c, &s->f, 1);
}

Test(SA_CAN_1, cancel_from_another_thread_in_async_context) {
  struct one_async s = {.p = {.delay_ms = 60000}};
  sa_test_in_loop(cancel_from_other_thread_in_loop, &s);
  pthread_join(s.c.thread, NULL);
  cr_assert_eq(s.c.rc[0], 0, "SA-CAN-1: cancel from another thread returned %d", s.c.rc[0]);
  cr_assert_eq(s.p.hooks, 1, "SA-CAN-1: the cancel hook ran %d times", s.p.hooks);
  cr_assert(pthread_equal(s.p.hook_thread, s.loop_thread),
            "SA-CAN-1: the cancel hook ran off the loop's thread");
  cr_assert_eq(s.cont.calls, 1, "SA-CAN-1: %d deliveries", s.cont.calls);
  cr_assert_eq(s.cont.status, SA_ECANCELED, "SA-CAN-1: delivered %d", s.cont.status);
  cr_assert(pthread_equal(s.cont.thread, s.loop_thread), "SA-CAN-1: delivered off the loop");
  cr_assert_eq(sa_future_release(s.f), 0);
}

/* SA-CAN-1, sync context: the owner waits on its future (driving its private
 * loop); another thread cancels it. */
Test(SA_CAN_1, cancel_from_another_thread_in_sync_context) {
  struct probe p = {.delay_ms = 60000};
  sa_future_t f;
  cr_assert_eq(sa_dispatch(&probe_op, &p, SA_MODE_ASYNC, NULL, &f), SA_PENDING);
  struct canceller c = {0};
  start_canceller(&c, &f, 1);
  int rc = sa_future_wait(f, NULL);
  pthread_join(c.thread, NULL);
  cr_assert_eq(c.rc[0], 0, "SA-CAN-1: cancel from another thread returned %d", c.rc[0]);
  cr_assert_eq(rc, SA_ECANCELED, "SA-CAN-1: the wait returned %d", rc);
  cr_assert_eq(p.hooks, 1, "SA-CAN-1: the cancel hook ran %d times", p.hooks);
  cr_assert(pthread_equal(p.hook_thread, pthread_self()),
            "SA-CAN-1: the cancel hook ran off the future's thread");
  cr_assert_eq(sa_future_release(f), 0);
}

/* SA-CAN-2: cancel racing completion. Each call ends exactly one way, and
 * only a call whose hook ran ends cancelled. */
#define RACE_CALLS 200

struct race {
  struct probe p[RACE_CALLS];
  sa_future_t f[RACE_CALLS];
  struct cont_rec cont[RACE_CALLS];
  struct canceller c;
};

static void race_in_loop(uv_loop_t *loop, void *data) {
  struct race *r = data;
  (void)loop;
  for (int i = 0; i < RACE_CALLS; i++) {
    r->p[i].delay_ms = (unsigned)(i % 8); /* spread completions over a few ms */
    cr_assert_eq(sa_dispatch(&probe_op, &r->p[i], SA_MODE_AUTO, NULL, &r->f[i]), SA_PENDING);
    cr_assert_eq(sa_future_then(r->f[i], record_cont, &r->cont[i]), 0);
  }
  start_canceller(&r->c, r->f, RACE_CALLS);
}

static void check_race_outcome(const struct probe *p, int delivered, int status, int i) {
  cr_assert_eq(delivered, 1, "SA-CAN-2: call %d delivered %d times", i, delivered);
  cr_assert_eq(p->completions, 1, "SA-CAN-2: call %d completed %d times", i, p->completions);
  cr_assert(status == 0 || status == SA_ECANCELED, "SA-CAN-2: call %d got %d", i, status);
  cr_assert_eq(status, p->status, "SA-CAN-2: call %d: op completed with %d, delivered %d", i,
               p->status, status);
  cr_assert(p->hooks <= 1, "SA-CAN-2: call %d: hook ran %d times", i, p->hooks);
  if (status == SA_ECANCELED)
    cr_assert_eq(p->hooks, 1, "SA-CAN-2: call %d cancelled without its hook", i);
}

Test(SA_CAN_2, cancel_racing_completion_in_async_context_ends_once) {
  struct race *r = calloc(1, sizeof *r);
  cr_assert_not_null(r);
  sa_test_in_loop(race_in_loop, r);
  pthread_join(r->c.thread, NULL);
  for (int i = 0; i < RACE_CALLS; i++) {
    check_race_outcome(&r->p[i], r->cont[i].calls, r->cont[i].status, i);
    cr_assert_eq(sa_future_release(r->f[i]), 0);
  }
  free(r);
}

Test(SA_CAN_2, cancel_racing_completion_in_sync_context_ends_once) {
  for (int i = 0; i < 100; i++) {
    struct probe p = {.delay_ms = (unsigned)(i % 3)};
    sa_future_t f;
    cr_assert_eq(sa_dispatch(&probe_op, &p, SA_MODE_ASYNC, NULL, &f), SA_PENDING);
    struct canceller c = {0};
    start_canceller(&c, &f, 1);
    int status = sa_future_wait(f, NULL);
    pthread_join(c.thread, NULL);
    /* A cancel that arrives after the wait is moot: the call has ended. */
    check_race_outcome(&p, 1, status, i);
    cr_assert_eq(sa_future_status(f, NULL), status, "SA-CAN-2: the outcome changed");
    cr_assert_eq(sa_future_release(f), 0);
  }
}

/* SA-CAN-3: cancelling an ended call, or one whose op has no hook, from
 * another thread changes nothing. */
static const sa_op_t no_hook_op = {probe_start, NULL};

Test(SA_CAN_3, cancel_after_the_end_or_without_hook_changes_nothing) {
  struct probe done = {.delay_ms = 0};
  sa_future_t f;
  cr_assert_eq(sa_dispatch(&probe_op, &done, SA_MODE_ASYNC, NULL, &f), SA_PENDING);
  cr_assert_eq(sa_future_wait(f, NULL), 0);
  struct canceller c = {0};
  start_canceller(&c, &f, 1);
  pthread_join(c.thread, NULL);
  cr_assert_eq(c.rc[0], 0, "SA-CAN-3: cancel of an ended call returned %d", c.rc[0]);
  cr_assert_eq(sa_future_wait(f, NULL), 0, "SA-CAN-3: the result changed");
  cr_assert_eq(done.hooks, 0, "SA-CAN-3: the hook ran after the call ended");
  cr_assert_eq(sa_future_release(f), 0);

  struct probe p = {.delay_ms = 20};
  cr_assert_eq(sa_dispatch(&no_hook_op, &p, SA_MODE_ASYNC, NULL, &f), SA_PENDING);
  start_canceller(&c, &f, 1);
  pthread_join(c.thread, NULL);
  cr_assert_eq(c.rc[0], 0, "SA-CAN-3: cancel without a hook from another thread returned %d",
               c.rc[0]);
  cr_assert_eq(sa_future_wait(f, NULL), 0, "SA-CAN-3: a call without a hook must run on");
  cr_assert_eq(p.completions, 1);
  cr_assert_eq(sa_future_release(f), 0);
}
