/* SA-DL-*: deadlines on sync calls, async calls and future waits. */
#include "sa_test.h"

#include <criterion/criterion.h>

static int marker;

/* A call that outlasts every deadline below by far: only its cancel hook
 * ends it in time. */
#define LONG_OP_MS 3000
/* A deadline no call here reaches. */
#define FAR_MS 60000

Test(SA_DL_1, sync_call_that_finishes_first_returns_its_result) {
  for (int i = 0; i < 3; i++) {
    struct value_req req = {.when = sa_test_whens[i], .status = -7, .value = &marker};
    void *value = NULL;
    sa_future_t f;
    int rc = sa_dispatch_until(&value_op, &req, SA_MODE_AUTO, sa_deadline_in(FAR_MS),
                               &value, &f);
    cr_assert_eq(rc, -7, "SA-DL-1 (%s): status %d", sa_test_when_name(sa_test_whens[i]), rc);
    cr_assert_eq(value, &marker, "SA-DL-1: value lost");
    cr_assert_eq(req.cancels, 0, "SA-DL-1: cancel hook ran for a call that finished");
  }
  struct value_req req = {.when = SA_TEST_INLINE, .status = 0};
  cr_assert_eq(sa_dispatch_until(&value_op, &req, SA_MODE_SYNC, SA_NO_DEADLINE, NULL, NULL),
               0, "SA-DL-1: SA_NO_DEADLINE must behave as sa_dispatch");
}

Test(SA_DL_1, sync_call_times_out_no_earlier_than_the_deadline) {
  struct value_req req = {.when = SA_TEST_LATER, .delay_ms = LONG_OP_MS, .value = &marker};
  void *value = &req;
  uint64_t start = uv_hrtime();
  uint64_t deadline = sa_deadline_in(30);
  sa_future_t f = {42};
  int rc = sa_dispatch_until(&value_op, &req, SA_MODE_AUTO, deadline, &value, &f);
  uint64_t end = uv_hrtime();
  cr_assert_eq(rc, SA_ETIMEDOUT, "SA-DL-1: a late call returned %d (%s), not SA_ETIMEDOUT",
               rc, sa_strerror(rc));
  cr_assert_geq(end, deadline, "SA-DL-1: timed out after %.1f ms, before the 30 ms deadline",
                (double)(end - start) / 1e6);
  cr_assert_null(value, "SA-DL-1: a timed-out call must give a NULL value");
  cr_assert_eq(f.id, 0, "SA-DL-1: a sync call must set the future to null");
  cr_assert_eq(req.cancels, 1, "SA-DL-1: the cancel hook ran %d times", req.cancels);
  cr_assert_eq(req.completions, 1, "SA-DL-1: the op completed %d times", req.completions);
  cr_assert_neq(SA_ETIMEDOUT, SA_ECANCELED);
  cr_assert_str_neq(sa_strerror(SA_ETIMEDOUT), "", "SA-DL-1: no description");
}

/* The loop's clock is coarse (libuv reads a coarse clock: 4 ms steps on
 * some kernels), the deadline is on uv_hrtime()'s: a time-out taken on the
 * loop's word alone comes early by up to a step. Many short deadlines, so
 * that every phase of the step is met. */
#define EARLY_PROBES 40

Test(SA_DL_1, short_deadlines_never_time_out_early) {
  for (int i = 0; i < EARLY_PROBES; i++) {
    struct value_req req = {.when = SA_TEST_LATER, .delay_ms = LONG_OP_MS};
    uint64_t deadline = sa_deadline_in(1 + i % 7);
    int rc = sa_dispatch_until(&value_op, &req, SA_MODE_SYNC, deadline, NULL, NULL);
    uint64_t end = uv_hrtime();
    cr_assert_eq(rc, SA_ETIMEDOUT, "SA-DL-1: call %d returned %d", i, rc);
    cr_assert_geq(end, deadline, "SA-DL-1: call %d timed out %.2f ms before its deadline", i,
                  (double)(deadline - end) / 1e6);
  }
}

struct early_probe {
  uint64_t deadline;
  uint64_t delivered_at;
  int status;
  struct value_req req;
};

static void on_early_probe(sa_future_t f, int status, void *value, void *data) {
  (void)value;
  struct early_probe *p = data;
  p->delivered_at = uv_hrtime();
  p->status = status;
  sa_future_release(f);
}

static void start_early_probes(uv_loop_t *loop, void *data) {
  (void)loop;
  struct early_probe *probes = data;
  for (int i = 0; i < EARLY_PROBES; i++) {
    struct early_probe *p = &probes[i];
    sa_future_t f;
    p->req = (struct value_req){.when = SA_TEST_LATER, .delay_ms = LONG_OP_MS};
    p->deadline = sa_deadline_in(1 + i % 7);
    cr_assert_eq(sa_dispatch_until(&value_op, &p->req, SA_MODE_AUTO, p->deadline, NULL, &f),
                 SA_PENDING);
    cr_assert_eq(sa_future_then(f, on_early_probe, p), 0);
  }
}

Test(SA_DL_3, short_deadlines_never_delivered_early) {
  static struct early_probe probes[EARLY_PROBES];
  sa_test_in_loop(start_early_probes, probes);
  for (int i = 0; i < EARLY_PROBES; i++) {
    cr_assert_eq(probes[i].status, SA_ETIMEDOUT, "SA-DL-3: call %d delivered %d", i,
                 probes[i].status);
    cr_assert_geq(probes[i].delivered_at, probes[i].deadline,
                  "SA-DL-3: call %d timed out %.2f ms before its deadline", i,
                  (double)(probes[i].deadline - probes[i].delivered_at) / 1e6);
  }
}

/* An op whose cancel hook finishes asynchronously: it closes its timer and
 * completes from the close callback, as real ops do with their handles. */
struct closing {
  uv_timer_t timer;
  sa_call_t *call;
  int hooks, completions, complete_rc;
};

static void closing_closed(uv_handle_t *handle) {
  struct closing *c = handle->data;
  c->completions++;
  c->complete_rc = sa_complete(c->call, SA_ECANCELED, NULL);
}

static void closing_fire(uv_timer_t *timer) {
  uv_close((uv_handle_t *)timer, closing_closed);
}

static void closing_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  struct closing *c = arg;
  c->call = call;
  cr_assert_eq(uv_timer_init(loop, &c->timer), 0);
  c->timer.data = c;
  cr_assert_eq(uv_timer_start(&c->timer, closing_fire, LONG_OP_MS, 0), 0);
}

static void closing_cancel(sa_call_t *call, uv_loop_t *loop, void *arg) {
  struct closing *c = arg;
  (void)call;
  (void)loop;
  c->hooks++;
  uv_close((uv_handle_t *)&c->timer, closing_closed);
}

static const sa_op_t closing_op = {closing_start, closing_cancel};

Test(SA_DL_1, op_with_a_hook_is_done_when_the_time_out_returns) {
  struct closing c = {0};
  sa_future_t f;
  int rc = sa_dispatch_until(&closing_op, &c, SA_MODE_AUTO, sa_deadline_in(10), NULL, &f);
  cr_assert_eq(rc, SA_ETIMEDOUT, "SA-DL-1: returned %d", rc);
  cr_assert_eq(c.hooks, 1, "SA-DL-1: cancel hook ran %d times", c.hooks);
  cr_assert_eq(c.completions, 1,
               "SA-DL-1: the time-out was returned before the op finished stopping: its "
               "argument is still in use");
  cr_assert_eq(c.complete_rc, 0,
               "SA-OP-2: the op's one completion after the time-out returned %d, not 0",
               c.complete_rc);
}

/* Forced sync in async context: the running loop is blocked, the deadline
 * still holds (the call runs on a nested private loop). */
struct nested {
  struct value_req req;
  int rc;
};

static void forced_sync_in_loop(uv_loop_t *loop, void *data) {
  struct nested *n = data;
  (void)loop;
  n->rc = sa_dispatch_until(&value_op, &n->req, SA_MODE_SYNC, sa_deadline_in(20), NULL, NULL);
}

Test(SA_DL_1, forced_sync_call_in_async_context_times_out) {
  struct nested n = {.req = {.when = SA_TEST_LATER, .delay_ms = LONG_OP_MS}};
  sa_test_in_loop(forced_sync_in_loop, &n);
  cr_assert_eq(n.rc, SA_ETIMEDOUT, "SA-DL-1: forced sync call in a loop returned %d", n.rc);
  cr_assert_eq(n.req.cancels, 1, "SA-DL-1: cancel hook ran %d times", n.req.cancels);
}

/* SA-DL-1: a deadline already past when the call is made still starts the
 * op; a result it gives inside its start function stands, otherwise the
 * call times out as soon as its loop runs (the op's hook stops it). From
 * plain code and as a forced sync call in a loop callback. */
struct past_deadline {
  struct value_req req[3];
  int rc[3];
  void *value[3];
};

static void past_deadline_calls(struct past_deadline *p) {
  for (int i = 0; i < 3; i++) {
    p->req[i] = (struct value_req){.when = sa_test_whens[i], .status = -7, .value = &marker,
                                   .delay_ms = LONG_OP_MS};
    p->value[i] = &p->value[i];
    uint64_t past = uv_hrtime() - 1000000; /* a millisecond ago */
    p->rc[i] = sa_dispatch_until(&value_op, &p->req[i], SA_MODE_SYNC, past, &p->value[i], NULL);
  }
}

static void past_deadline_in_loop(uv_loop_t *loop, void *data) {
  (void)loop;
  past_deadline_calls(data);
}

static void check_past_deadline(const struct past_deadline *p, const char *where) {
  for (int i = 0; i < 3; i++) {
    const char *w = sa_test_when_name(sa_test_whens[i]);
    const struct value_req *req = &p->req[i];
    cr_assert_eq(req->starts, 1, "SA-DL-1 (%s, %s): a past deadline kept the op from starting",
                 where, w);
    if (sa_test_whens[i] == SA_TEST_INLINE) {
      cr_assert_eq(p->rc[i], -7, "SA-DL-1 (%s, %s): the op's inline result -7 became %d", where,
                   w, p->rc[i]);
      cr_assert_eq(p->value[i], &marker, "SA-DL-1 (%s, %s): the op's value was lost", where, w);
      cr_assert_eq(req->cancels, 0, "SA-DL-1 (%s, %s): the hook ran for a finished op", where, w);
      continue;
    }
    cr_assert_eq(p->rc[i], SA_ETIMEDOUT, "SA-DL-1 (%s, %s): returned %d, not SA_ETIMEDOUT",
                 where, w, p->rc[i]);
    cr_assert_null(p->value[i], "SA-DL-1 (%s, %s): a timed-out call gave a value", where, w);
    cr_assert_eq(req->cancels, 1, "SA-DL-1 (%s, %s): the cancel hook ran %d times", where, w,
                 req->cancels);
    cr_assert_eq(req->completions, 1, "SA-DL-1 (%s, %s): the op had not completed", where, w);
  }
}

Test(SA_DL_1, deadline_already_past_keeps_an_inline_result_else_times_out) {
  struct past_deadline plain;
  past_deadline_calls(&plain);
  check_past_deadline(&plain, "plain code");
  struct past_deadline in_loop;
  sa_test_in_loop(past_deadline_in_loop, &in_loop);
  check_past_deadline(&in_loop, "forced sync in a loop callback");
}

/* The same, async: in a loop callback (auto) and forced from plain code,
 * the result taken through the future. */
struct past_async {
  struct value_req req[3];
  sa_future_t f[3];
  int rc[3];
};

static void past_async_calls(struct past_async *a, sa_mode_t mode) {
  for (int i = 0; i < 3; i++) {
    a->req[i] = (struct value_req){.when = sa_test_whens[i], .status = -7, .value = &marker,
                                   .delay_ms = LONG_OP_MS};
    uint64_t past = uv_hrtime() - 1000000; /* a millisecond ago */
    a->rc[i] = sa_dispatch_until(&value_op, &a->req[i], mode, past, NULL, &a->f[i]);
  }
}

static void past_async_in_loop(uv_loop_t *loop, void *data) {
  (void)loop;
  past_async_calls(data, SA_MODE_AUTO);
}

static void check_past_async(struct past_async *a, const char *where) {
  for (int i = 0; i < 3; i++) {
    const char *w = sa_test_when_name(sa_test_whens[i]);
    void *value = NULL;
    cr_assert_eq(a->rc[i], SA_PENDING, "SA-DL-1 (%s, %s): returned %d", where, w, a->rc[i]);
    int status = sa_future_wait(a->f[i], &value);
    cr_assert_eq(a->req[i].starts, 1, "SA-DL-1 (%s, %s): the op did not start", where, w);
    if (sa_test_whens[i] == SA_TEST_INLINE) {
      cr_assert_eq(status, -7, "SA-DL-1 (%s, %s): the inline result -7 became %d", where, w,
                   status);
      cr_assert_eq(value, &marker, "SA-DL-1 (%s, %s): the op's value was lost", where, w);
    } else {
      cr_assert_eq(status, SA_ETIMEDOUT, "SA-DL-1 (%s, %s): delivered %d, not SA_ETIMEDOUT",
                   where, w, status);
      cr_assert_eq(a->req[i].cancels, 1, "SA-DL-1 (%s, %s): the hook ran %d times", where, w,
                   a->req[i].cancels);
    }
    cr_assert_eq(sa_future_release(a->f[i]), 0);
  }
}

Test(SA_DL_1, deadline_already_past_async_keeps_an_inline_result_else_times_out) {
  struct past_async forced, in_loop;
  past_async_calls(&forced, SA_MODE_ASYNC);
  check_past_async(&forced, "forced async from plain code");
  sa_test_in_loop(past_async_in_loop, &in_loop);
  check_past_async(&in_loop, "auto in a loop callback");
}

/* SA-DL-2: an op without a cancel hook completes after the time-out. Its
 * completion is accepted and dropped; the next call on the thread's loop
 * gives it the time to happen. Valgrind (conformance-valgrind) checks that
 * nothing touched freed memory and nothing leaked. */
Test(SA_DL_2, late_completion_after_a_time_out_is_accepted_and_dropped) {
  struct value_req late = {.when = SA_TEST_LATER, .delay_ms = 40, .value = &marker};
  sa_future_t f;
  int rc = sa_dispatch_until(&value_op_no_cancel, &late, SA_MODE_AUTO, sa_deadline_in(5),
                             NULL, &f);
  cr_assert_eq(rc, SA_ETIMEDOUT, "SA-DL-2: returned %d", rc);
  cr_assert_eq(late.completions, 0, "SA-DL-2: the op cannot have completed yet");
  /* A later call on the same thread runs its loop past the op's timer. */
  struct value_req next = {.when = SA_TEST_LATER, .delay_ms = 100, .status = -4};
  rc = sa_dispatch(&value_op, &next, SA_MODE_AUTO, NULL, &f);
  cr_assert_eq(rc, -4, "SA-DL-2: the next call's result was changed to %d", rc);
  cr_assert_eq(late.completions, 1, "SA-DL-2: the late op completed %d times", late.completions);
  cr_assert_eq(late.complete_rc, 0,
               "SA-DL-2: sa_complete of a timed-out call returned %d, not 0", late.complete_rc);
  cr_assert_eq(sa_thread_cleanup(), 0);
}

/* The same in async context: the time-out is delivered at the deadline,
 * the op's completion later is accepted, and nothing is delivered twice. */
struct late_async {
  struct value_req late;
  struct cont_rec cont;
  int rc;
};

static void late_completion_in_loop(uv_loop_t *loop, void *data) {
  struct late_async *a = data;
  (void)loop;
  sa_future_t f;
  a->rc = sa_dispatch_until(&value_op_no_cancel, &a->late, SA_MODE_AUTO, sa_deadline_in(5),
                            NULL, &f);
  if (a->rc == SA_PENDING) {
    a->cont.release = true;
    cr_assert_eq(sa_future_then(f, record_cont, &a->cont), 0);
  }
}

Test(SA_DL_2, late_completion_in_async_context_is_accepted_and_dropped) {
  struct late_async a = {.late = {.when = SA_TEST_LATER, .delay_ms = 40, .value = &marker}};
  sa_test_in_loop(late_completion_in_loop, &a); /* runs until the op's timer is done */
  cr_assert_eq(a.rc, SA_PENDING, "SA-DL-2: async call returned %d", a.rc);
  cr_assert_eq(a.cont.calls, 1, "SA-DL-2: %d deliveries", a.cont.calls);
  cr_assert_eq(a.cont.status, SA_ETIMEDOUT, "SA-DL-2: delivered %d", a.cont.status);
  cr_assert_eq(a.late.completions, 1, "SA-DL-2: the op completed %d times", a.late.completions);
  cr_assert_eq(a.late.complete_rc, 0,
               "SA-DL-2: sa_complete of a timed-out call returned %d, not 0", a.late.complete_rc);
}

/* SA-DL-3: async calls and future waits. */
struct async_dl {
  struct value_req req;
  unsigned timeout_ms;
  int rc;
  int delivered_before_return;
  struct cont_rec cont;
};

static void async_deadline_in_loop(uv_loop_t *loop, void *data) {
  struct async_dl *a = data;
  (void)loop;
  sa_future_t f;
  a->rc = sa_dispatch_until(&value_op, &a->req, SA_MODE_AUTO, sa_deadline_in(a->timeout_ms),
                            NULL, &f);
  a->delivered_before_return = a->cont.calls;
  if (a->rc == SA_PENDING) {
    a->cont.release = true;
    cr_assert_eq(sa_future_then(f, record_cont, &a->cont), 0);
  }
}

Test(SA_DL_3, async_call_gets_a_time_out_through_its_future_once) {
  struct async_dl a = {.req = {.when = SA_TEST_LATER, .delay_ms = LONG_OP_MS}, .timeout_ms = 20};
  sa_test_in_loop(async_deadline_in_loop, &a);
  cr_assert_eq(a.rc, SA_PENDING, "SA-DL-3: async call returned %d", a.rc);
  cr_assert_eq(a.delivered_before_return, 0, "SA-DL-3: delivered inside the call");
  cr_assert_eq(a.cont.calls, 1, "SA-DL-3: %d deliveries", a.cont.calls);
  cr_assert_eq(a.cont.status, SA_ETIMEDOUT, "SA-DL-3: delivered %d, not SA_ETIMEDOUT",
               a.cont.status);
  cr_assert_eq(a.req.cancels, 1, "SA-DL-3: cancel hook ran %d times", a.req.cancels);
  cr_assert_eq(a.req.completions, 1, "SA-DL-3: op completed %d times", a.req.completions);
}

Test(SA_DL_3, async_call_that_finishes_first_delivers_its_result) {
  for (int i = 0; i < 3; i++) {
    struct async_dl a = {.req = {.when = sa_test_whens[i], .status = -3, .value = &marker},
                         .timeout_ms = FAR_MS};
    sa_test_in_loop(async_deadline_in_loop, &a);
    cr_assert_eq(a.cont.calls, 1, "SA-DL-3: %d deliveries", a.cont.calls);
    cr_assert_eq(a.cont.status, -3, "SA-DL-3 (%s): delivered %d",
                 sa_test_when_name(sa_test_whens[i]), a.cont.status);
    cr_assert_eq(a.cont.value, &marker, "SA-DL-3: value lost");
    cr_assert_eq(a.req.cancels, 0, "SA-DL-3: cancel hook ran for a call that finished");
  }
}

Test(SA_DL_3, wait_until_times_the_call_out) {
  struct value_req req = {.when = SA_TEST_LATER, .delay_ms = LONG_OP_MS};
  sa_future_t f;
  cr_assert_eq(sa_dispatch(&value_op, &req, SA_MODE_ASYNC, NULL, &f), SA_PENDING);
  uint64_t deadline = sa_deadline_in(20);
  int rc = sa_future_wait_until(f, deadline, NULL);
  cr_assert_eq(rc, SA_ETIMEDOUT, "SA-DL-3: wait_until returned %d", rc);
  cr_assert_geq(uv_hrtime(), deadline, "SA-DL-3: the wait gave up before its deadline");
  cr_assert_eq(req.cancels, 1, "SA-DL-3: cancel hook ran %d times", req.cancels);
  cr_assert_eq(sa_future_status(f, NULL), SA_ETIMEDOUT,
               "SA-DL-3: the future must hold SA_ETIMEDOUT after the wait timed out");
  cr_assert_eq(sa_future_release(f), 0);

  struct value_req quick = {.when = SA_TEST_LATER, .delay_ms = 2, .status = -6};
  cr_assert_eq(sa_dispatch(&value_op, &quick, SA_MODE_ASYNC, NULL, &f), SA_PENDING);
  rc = sa_future_wait_until(f, sa_deadline_in(FAR_MS), NULL);
  cr_assert_eq(rc, -6, "SA-DL-3: a wait that the result beat returned %d", rc);
  cr_assert_eq(quick.cancels, 0, "SA-DL-3: cancel hook ran for a call that finished");
  cr_assert_eq(sa_future_release(f), 0);
}

/* From another thread: the waiter gives up at its deadline, and the call
 * times out on its own thread when that thread next runs its loop. */
struct foreign_wait {
  sa_future_t f;
  uint64_t deadline;
  int rc;
  uint64_t returned_at;
};

static void *wait_from_other_thread(void *arg) {
  struct foreign_wait *fw = arg;
  fw->rc = sa_future_wait_until(fw->f, fw->deadline, NULL);
  fw->returned_at = uv_hrtime();
  return NULL;
}

Test(SA_DL_3, wait_until_from_another_thread_times_the_call_out) {
  struct value_req req = {.when = SA_TEST_LATER, .delay_ms = LONG_OP_MS};
  struct foreign_wait fw = {.deadline = sa_deadline_in(20)};
  cr_assert_eq(sa_dispatch(&value_op, &req, SA_MODE_ASYNC, NULL, &fw.f), SA_PENDING);
  pthread_t thread;
  cr_assert_eq(pthread_create(&thread, NULL, wait_from_other_thread, &fw), 0);
  int rc = sa_future_wait(fw.f, NULL); /* drives the loop the time-out needs */
  pthread_join(thread, NULL);
  cr_assert_eq(fw.rc, SA_ETIMEDOUT, "SA-DL-3: the foreign wait returned %d", fw.rc);
  cr_assert_geq(fw.returned_at, fw.deadline, "SA-DL-3: the foreign wait gave up early");
  cr_assert_eq(rc, SA_ETIMEDOUT, "SA-DL-3: the call was not timed out (owner got %d)", rc);
  cr_assert_eq(req.cancels, 1, "SA-DL-3: cancel hook ran %d times", req.cancels);
  cr_assert_eq(sa_future_release(fw.f), 0);
}

Test(SA_DL_4, bad_arguments_are_refused) {
  struct value_req req = {.when = SA_TEST_INLINE};
  sa_future_t f;
  uint64_t d = sa_deadline_in(1000);
  cr_assert_eq(sa_dispatch_until(NULL, &req, SA_MODE_AUTO, d, NULL, &f), SA_EINVAL);
  cr_assert_eq(sa_dispatch_until(&value_op, &req, (sa_mode_t)7, d, NULL, &f), SA_EINVAL);
  cr_assert_eq(sa_dispatch_until(&value_op, &req, SA_MODE_ASYNC, d, NULL, NULL), SA_EINVAL);
  cr_assert_eq(req.starts, 0, "SA-DL-4: the op started despite bad arguments");
  cr_assert_eq(sa_future_wait_until(SA_FUTURE_NULL, d, NULL), SA_EINVAL);
  uint64_t now = uv_hrtime();
  uint64_t in_a_second = sa_deadline_in(1000);
  cr_assert(in_a_second >= now + 1000000000u && in_a_second < now + 2000000000u,
            "SA-DL-4: sa_deadline_in(1000) is not a second from now on uv_hrtime's clock");
  cr_assert_eq(sa_deadline_in(UINT64_MAX), SA_NO_DEADLINE,
               "SA-DL-4: an overflowing timeout must give SA_NO_DEADLINE");
  cr_assert_eq(sa_deadline_in(UINT64_MAX / 1000000), SA_NO_DEADLINE,
               "SA-DL-4: a timeout past the clock's end must give SA_NO_DEADLINE");
  /* Far, but on the clock: thirty years are no overflow. */
  uint64_t ms = 30ull * 365 * 24 * 3600 * 1000;
  now = uv_hrtime();
  uint64_t far = sa_deadline_in(ms);
  cr_assert(far != SA_NO_DEADLINE && far >= now + ms * 1000000 &&
                far < now + ms * 1000000 + 1000000000u,
            "SA-DL-4: sa_deadline_in(30 years) is not thirty years from now");
  /* The last whole second before the clock's end: on the clock still. */
  now = uv_hrtime();
  ms = (SA_NO_DEADLINE - now) / 1000000 - 1000;
  far = sa_deadline_in(ms);
  cr_assert(far != SA_NO_DEADLINE && far >= now + ms * 1000000,
            "SA-DL-4: a timeout a second short of the clock's end saturated");
}
