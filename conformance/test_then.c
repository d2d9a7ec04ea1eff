/* SA-ASYNC-5: sa_dispatch_then, the continuation given with the call; each
 * property the three ways an op can complete. */
#include "sa_test.h"

#include <criterion/criterion.h>

/* What the continuation saw, and what the caller saw around the call. */
struct then_case {
  struct value_req req;
  int rc;
  void *value_at_return;
  int calls_at_return;
  /* the continuation */
  int calls;
  int status;
  void *value;
  uint64_t future_id;
  pthread_t thread;
  uv_loop_t *loop;
  /* the loop the call was made on */
  uv_loop_t *call_loop;
  pthread_t call_thread;
};

static void then_cont(sa_future_t future, int status, void *value, void *data) {
  struct then_case *c = data;
  c->calls++;
  c->status = status;
  c->value = value;
  c->future_id = future.id;
  c->thread = pthread_self();
  c->loop = sa_current_loop();
}

static int marker;

static void then_dispatch(struct then_case *c, sa_mode_t mode) {
  c->value_at_return = &marker; /* a sync call must overwrite it */
  c->rc = sa_dispatch_then(&value_op, &c->req, mode, &c->value_at_return, then_cont, c);
  c->calls_at_return = c->calls;
}

static void then_in_loop(uv_loop_t *loop, void *data) {
  struct then_case *cases = data;
  for (int i = 0; i < 3; i++) {
    cases[i].call_loop = loop;
    cases[i].call_thread = pthread_self();
    then_dispatch(&cases[i], SA_MODE_AUTO);
  }
}

static void init_cases(struct then_case *cases, int status) {
  for (int i = 0; i < 3; i++)
    cases[i] = (struct then_case){
        .req = {.when = sa_test_whens[i], .status = status, .value = &cases[i]}};
}

Test(SA_ASYNC_5, async_delivers_once_after_return) {
  struct then_case cases[3];
  init_cases(cases, -7);
  sa_test_in_loop(then_in_loop, cases);
  for (int i = 0; i < 3; i++) {
    struct then_case *c = &cases[i];
    const char *w = sa_test_when_name(c->req.when);
    cr_assert_eq(c->rc, SA_PENDING, "SA-ASYNC-5 (%s): async call returned %d", w, c->rc);
    cr_assert_eq(c->req.starts, 1, "SA-ASYNC-5 (%s): op started %d times", w, c->req.starts);
    cr_assert_eq(c->req.start_loop, c->call_loop, "SA-ASYNC-5 (%s): op not on the running loop",
                 w);
    cr_assert_eq(c->calls_at_return, 0,
                 "SA-ASYNC-5 (%s): continuation called inside sa_dispatch_then", w);
    cr_assert_eq(c->calls, 1, "SA-ASYNC-5 (%s): continuation called %d times", w, c->calls);
    cr_assert(pthread_equal(c->thread, c->call_thread),
              "SA-ASYNC-5 (%s): continuation on another thread", w);
    cr_assert_eq(c->loop, c->call_loop,
                 "SA-ASYNC-5 (%s): continuation not in async context on the loop", w);
    cr_assert_eq(c->status, -7, "SA-ASYNC-5 (%s): continuation got %d, op said -7", w,
                 c->status);
    cr_assert_eq(c->value, c, "SA-ASYNC-5 (%s): continuation got another value", w);
    cr_assert_eq(c->future_id, 0, "SA-ASYNC-5 (%s): continuation got a non-null future", w);
  }
}

/* Many calls from one callback, completing inline: each continuation once,
 * in no case inside the dispatching callback. */
#define MANY 3000

struct many {
  struct value_req req[MANY];
  int calls[MANY];
  int calls_during_dispatch;
  int failed;
};

static void many_cont(sa_future_t future, int status, void *value, void *data) {
  (void)future;
  (void)value;
  int *calls = data;
  (*calls)++;
  if (status != 0)
    (*calls) += 1000;
}

static void many_in_loop(uv_loop_t *loop, void *data) {
  (void)loop;
  struct many *m = data;
  for (int k = 0; k < MANY; k++) {
    m->req[k] = (struct value_req){.when = SA_TEST_INLINE};
    if (sa_dispatch_then(&value_op, &m->req[k], SA_MODE_AUTO, NULL, many_cont, &m->calls[k]) !=
        SA_PENDING)
      m->failed++;
  }
  for (int k = 0; k < MANY; k++)
    m->calls_during_dispatch += m->calls[k];
}

Test(SA_ASYNC_5, many_inline_calls_each_delivered_once) {
  static struct many m;
  sa_test_in_loop(many_in_loop, &m);
  cr_assert_eq(m.failed, 0, "SA-ASYNC-5: %d of %d calls not pending", m.failed, MANY);
  cr_assert_eq(m.calls_during_dispatch, 0,
               "SA-ASYNC-5: continuations ran inside the dispatching callback");
  for (int k = 0; k < MANY; k++)
    cr_assert_eq(m.calls[k], 1, "SA-ASYNC-5: call %d: continuation called %d times%s", k,
                 m.calls[k] % 1000, m.calls[k] >= 1000 ? " with an error" : "");
}

Test(SA_ASYNC_5, sync_returns_result_without_continuation) {
  const sa_mode_t modes[] = {SA_MODE_AUTO, SA_MODE_SYNC};
  for (size_t k = 0; k < 2; k++) {
    struct then_case cases[3];
    init_cases(cases, -9);
    for (int i = 0; i < 3; i++) {
      struct then_case *c = &cases[i];
      const char *w = sa_test_when_name(c->req.when);
      then_dispatch(c, modes[k]);
      cr_assert_eq(c->rc, -9, "SA-ASYNC-5 (%s, %s): sync call returned %d, op said -9", w,
                   k ? "sync" : "auto", c->rc);
      cr_assert_eq(c->value_at_return, c, "SA-ASYNC-5 (%s): sync call's value differs", w);
      cr_assert_eq(c->req.completions, 1);
      cr_assert_eq(c->calls, 0, "SA-ASYNC-5 (%s): continuation called for a sync call", w);
    }
    /* Anything left on the thread's loops would run now. */
    struct then_case extra = {.req = {.when = SA_TEST_LATER}};
    then_dispatch(&extra, SA_MODE_SYNC);
    for (int i = 0; i < 3; i++)
      cr_assert_eq(cases[i].calls, 0, "SA-ASYNC-5: continuation of a sync call called later");
  }
}

/* A forced sync call from inside a loop callback blocks and returns. */
static void sync_in_loop(uv_loop_t *loop, void *data) {
  (void)loop;
  struct then_case *cases = data;
  for (int i = 0; i < 3; i++)
    then_dispatch(&cases[i], SA_MODE_SYNC);
}

Test(SA_ASYNC_5, forced_sync_in_loop_returns_result) {
  struct then_case cases[3];
  init_cases(cases, -3);
  sa_test_in_loop(sync_in_loop, cases);
  for (int i = 0; i < 3; i++) {
    const char *w = sa_test_when_name(cases[i].req.when);
    cr_assert_eq(cases[i].rc, -3, "SA-ASYNC-5 (%s): forced sync in a loop returned %d", w,
                 cases[i].rc);
    cr_assert_eq(cases[i].value_at_return, &cases[i]);
    cr_assert_eq(cases[i].calls, 0, "SA-ASYNC-5 (%s): continuation called for a sync call", w);
  }
}

/* SA_MODE_ASYNC from plain code: started on the thread's private loop, and
 * delivered when a wait on a future of that loop drives it [SA-MODE-4]. */
Test(SA_ASYNC_5, forced_async_from_sync_context) {
  struct then_case cases[3];
  init_cases(cases, -4);
  for (int i = 0; i < 3; i++) {
    cases[i].call_thread = pthread_self();
    then_dispatch(&cases[i], SA_MODE_ASYNC);
    const char *w = sa_test_when_name(cases[i].req.when);
    cr_assert_eq(cases[i].rc, SA_PENDING, "SA-ASYNC-5 (%s): SA_MODE_ASYNC returned %d", w,
                 cases[i].rc);
    cr_assert_eq(cases[i].calls_at_return, 0,
                 "SA-ASYNC-5 (%s): continuation called inside sa_dispatch_then", w);
  }
  struct value_req last = {.when = SA_TEST_LATER, .delay_ms = 20};
  sa_future_t f;
  cr_assert_eq(sa_dispatch(&value_op, &last, SA_MODE_ASYNC, NULL, &f), SA_PENDING);
  cr_assert_eq(sa_future_wait(f, NULL), 0);
  cr_assert_eq(sa_future_release(f), 0);
  for (int i = 0; i < 3; i++) {
    const char *w = sa_test_when_name(cases[i].req.when);
    cr_assert_eq(cases[i].calls, 1, "SA-ASYNC-5 (%s): continuation called %d times", w,
                 cases[i].calls);
    cr_assert_eq(cases[i].status, -4);
    cr_assert_eq(cases[i].value, &cases[i]);
    cr_assert(pthread_equal(cases[i].thread, cases[i].call_thread));
  }
}

Test(SA_ASYNC_5, bad_arguments_rejected) {
  struct then_case c = {.req = {.when = SA_TEST_INLINE}};
  const sa_op_t no_start = {NULL, NULL};
  cr_assert_eq(sa_dispatch_then(&value_op, &c.req, SA_MODE_AUTO, NULL, NULL, NULL), SA_EINVAL,
               "SA-ASYNC-5: a NULL continuation was accepted");
  cr_assert_eq(sa_dispatch_then(NULL, &c.req, SA_MODE_AUTO, NULL, then_cont, &c), SA_EINVAL);
  cr_assert_eq(sa_dispatch_then(&no_start, &c.req, SA_MODE_AUTO, NULL, then_cont, &c),
               SA_EINVAL);
  cr_assert_eq(sa_dispatch_then(&value_op, &c.req, (sa_mode_t)7, NULL, then_cont, &c),
               SA_EINVAL);
  cr_assert_eq(c.req.starts, 0, "SA-ASYNC-5: op started despite bad arguments");
  cr_assert_eq(c.calls, 0);
}

/* A call still pending when its thread's loops go away (here at
 * sa_thread_cleanup) is delivered then, once, with SA_ECANCELED, on that
 * thread, in async context (SA-THR-2 says how). The op has no hook and holds
 * nothing but a timer in the test's memory, which the loop's end closes. */
static void hold_fire(uv_timer_t *timer) { (void)timer; }

static void hold_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  (void)call;
  uv_timer_t *timer = arg;
  uv_timer_init(loop, timer);
  uv_timer_start(timer, hold_fire, 60000, 0);
}

static const sa_op_t hold_op = {hold_start, NULL};

Test(SA_ASYNC_5, pending_call_delivered_when_its_loop_goes) {
  static uv_timer_t timer;
  struct then_case c = {.req = {.when = SA_TEST_INLINE}};
  cr_assert_eq(sa_dispatch_then(&hold_op, &timer, SA_MODE_ASYNC, NULL, then_cont, &c),
               SA_PENDING);
  cr_assert_eq(c.calls, 0);
  cr_assert_eq(sa_thread_cleanup(), 0);
  cr_assert_eq(c.calls, 1, "SA-ASYNC-5: a call pending when its loop went was delivered %d times",
               c.calls);
  cr_assert_eq(c.status, SA_ECANCELED, "SA-ASYNC-5: it was delivered %d, not SA_ECANCELED",
               c.status);
  cr_assert(pthread_equal(c.thread, pthread_self()), "SA-ASYNC-5: delivered on another thread");
  cr_assert_not_null(c.loop, "SA-ASYNC-5: delivered out of async context");
  struct then_case after = {.req = {.when = SA_TEST_NEXT_TICK, .status = -2}};
  then_dispatch(&after, SA_MODE_AUTO);
  cr_assert_eq(after.rc, -2, "SA-ASYNC-5: the thread's next sync call failed: %d", after.rc);
  cr_assert_eq(c.calls, 1);
}
