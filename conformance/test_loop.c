/* SA-LOOP-*: loops run through the dispatcher. */
#include "sa_test.h"

#include <criterion/criterion.h>
#include <semaphore.h>

struct reenter {
  int run_rc;
  int enter_rc;
};

static void reenter_in_loop(uv_loop_t *loop, void *data) {
  struct reenter *r = data;
  r->run_rc = sa_run(loop, UV_RUN_NOWAIT);
  r->enter_rc = sa_enter(loop);
  cr_assert_eq(sa_current_loop(), loop);
}

Test(SA_LOOP_1, reentering_a_running_loop_is_ebusy) {
  struct reenter r = {0};
  sa_test_in_loop(reenter_in_loop, &r);
  cr_assert_eq(r.run_rc, SA_EBUSY, "SA-LOOP-1: sa_run inside its own loop returned %d",
               r.run_rc);
  cr_assert_eq(r.enter_rc, SA_EBUSY, "SA-LOOP-1: sa_enter inside its own loop returned %d",
               r.enter_rc);
  cr_assert_null(sa_current_loop());
}

struct pending_close {
  struct value_req slow, req;
  sa_future_t slow_f, f;
};

static void start_pending(uv_timer_t *timer) {
  struct pending_close *p = timer->data;
  uv_close((uv_handle_t *)timer, NULL);
  cr_assert_eq(sa_dispatch(&value_op, &p->slow, SA_MODE_AUTO, NULL, &p->slow_f), SA_PENDING);
  cr_assert_eq(sa_dispatch(&value_op, &p->req, SA_MODE_AUTO, NULL, &p->f), SA_PENDING);
  uv_stop(timer->loop);
}

Test(SA_LOOP_2, close_refuses_pending_then_releases_everything) {
  for (int i = 0; i < 3; i++) {
    const char *w = sa_test_when_name(sa_test_whens[i]);
    int fds_before = sa_test_count_fds();
    uv_loop_t loop;
    uv_timer_t timer;
    struct pending_close p = {.slow = {.when = SA_TEST_LATER, .delay_ms = 20},
                              .req = {.when = sa_test_whens[i]}};
    cr_assert_eq(uv_loop_init(&loop), 0);
    uv_timer_init(&loop, &timer);
    timer.data = &p;
    uv_timer_start(&timer, start_pending, 0, 0);
    sa_run(&loop, UV_RUN_DEFAULT); /* stops right after the dispatches */
    cr_assert_eq(sa_future_status(p.slow_f, NULL), SA_PENDING);
    cr_assert_eq(sa_loop_close(&loop), SA_EBUSY,
                 "SA-LOOP-2 (%s): closing a loop with a pending call did not say SA_EBUSY", w);
    sa_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(sa_future_status(p.slow_f, NULL), 0);
    cr_assert_eq(sa_future_status(p.f, NULL), 0);
    cr_assert_eq(sa_future_release(p.slow_f), 0);
    cr_assert_eq(sa_future_release(p.f), 0);
    int rc = sa_loop_close(&loop);
    cr_assert_eq(rc, 0, "SA-LOOP-2 (%s): sa_loop_close returned %s", w, sa_strerror(rc));
    cr_assert_eq(sa_test_count_fds(), fds_before, "SA-LOOP-2 (%s): file descriptors leaked", w);
  }
  /* A loop the dispatcher never ran closes too. */
  uv_loop_t plain;
  cr_assert_eq(uv_loop_init(&plain), 0);
  cr_assert_eq(sa_loop_close(&plain), 0, "SA-LOOP-2: plain loop");
}

/* SA-LOOP-2: a future that outlives its loop keeps its result, and a
 * continuation attached to it after the close is refused with SA_ECANCELED
 * and never called: there is no loop left to call it on. The loops of the
 * three rounds share their memory (sa_test_in_loop's frame), and the
 * thread's private loop runs after: neither may call one of them. */
struct outliving {
  struct value_req req;
  sa_future_t f;
};

static void dispatch_outliving(uv_loop_t *loop, void *data) {
  struct outliving *o = data;
  (void)loop;
  cr_assert_eq(sa_dispatch(&value_op, &o->req, SA_MODE_AUTO, NULL, &o->f), SA_PENDING);
}

Test(SA_LOOP_2, continuation_on_a_future_of_a_closed_loop_is_refused) {
  struct outliving o[3];
  struct cont_rec cont[3] = {{0}};
  for (int i = 0; i < 3; i++) {
    const char *w = sa_test_when_name(sa_test_whens[i]);
    o[i] = (struct outliving){.req = {.when = sa_test_whens[i], .status = -3, .value = &o[i]}};
    sa_test_in_loop(dispatch_outliving, &o[i]); /* closes the loop */
    void *value = NULL;
    cr_assert_eq(sa_future_status(o[i].f, &value), -3,
                 "SA-LOOP-2 (%s): a future lost its result when its loop closed", w);
    cr_assert_eq(value, &o[i], "SA-LOOP-2 (%s): a future lost its value", w);
    cr_assert_eq(sa_future_then(o[i].f, record_cont, &cont[i]), SA_ECANCELED,
                 "SA-LOOP-2 (%s): a continuation on a future of a closed loop was accepted", w);
  }
  struct value_req after = {.when = SA_TEST_LATER};
  cr_assert_eq(sa_dispatch(&value_op, &after, SA_MODE_SYNC, NULL, NULL), 0);
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(cont[i].calls, 0, "SA-LOOP-2 (%s): a refused continuation was called",
                 sa_test_when_name(sa_test_whens[i]));
    cr_assert_eq(sa_future_release(o[i].f), 0);
  }
}

/* SA-LOOP-3: a closed loop is refused, by either way of closing it; the same
 * memory initialised again is a new loop. A dangling loop pointer used to be
 * accepted by sa_run and sa_enter, and the next dispatch on it crashed inside
 * libuv. */
static void refuse_closed_loop(uv_loop_t *loop, const char *how) {
  cr_assert_eq(sa_run(loop, UV_RUN_DEFAULT), SA_EINVAL,
               "SA-LOOP-3: sa_run on a loop closed by %s was not refused", how);
  cr_assert_eq(sa_run(loop, UV_RUN_NOWAIT), SA_EINVAL,
               "SA-LOOP-3: sa_run(UV_RUN_NOWAIT) on a loop closed by %s was not refused", how);
  cr_assert_eq(sa_enter(loop), SA_EINVAL,
               "SA-LOOP-3: sa_enter on a loop closed by %s was not refused", how);
  cr_assert_null(sa_current_loop(), "SA-LOOP-3: a refused sa_enter left a scope open");
  cr_assert_eq(sa_loop_close(loop), SA_EINVAL,
               "SA-LOOP-3: sa_loop_close on a loop closed by %s was not refused", how);
}

static void dispatch_once_in_loop(uv_loop_t *loop, void *data) {
  (void)loop;
  struct value_req *req = data;
  sa_future_t f;
  cr_assert_eq(sa_dispatch(&value_op, req, SA_MODE_AUTO, NULL, &f), SA_PENDING);
  cr_assert_eq(sa_future_release(f), 0);
}

Test(SA_LOOP_3, closed_loops_are_refused_until_initialised_again) {
  uv_loop_t loop;
  /* Closed by sa_loop_close after the dispatcher ran it with calls on it. */
  cr_assert_eq(uv_loop_init(&loop), 0);
  cr_assert_eq(sa_enter(&loop), 0);
  struct value_req req = {.when = SA_TEST_NEXT_TICK, .status = -5};
  sa_future_t f;
  cr_assert_eq(sa_dispatch(&value_op, &req, SA_MODE_AUTO, NULL, &f), SA_PENDING);
  cr_assert_geq(uv_run(&loop, UV_RUN_DEFAULT), 0);
  cr_assert_eq(sa_leave(&loop), 0);
  cr_assert_eq(sa_future_status(f, NULL), -5);
  cr_assert_eq(sa_future_release(f), 0);
  cr_assert_eq(sa_loop_close(&loop), 0);
  refuse_closed_loop(&loop, "sa_loop_close");

  /* Initialised again: a new loop, accepted and working. */
  cr_assert_eq(uv_loop_init(&loop), 0);
  struct value_req again = {.when = SA_TEST_LATER, .status = -6};
  cr_assert_eq(sa_enter(&loop), 0, "SA-LOOP-3: a loop initialised again was refused");
  cr_assert_eq(sa_dispatch(&value_op, &again, SA_MODE_AUTO, NULL, &f), SA_PENDING);
  cr_assert_geq(uv_run(&loop, UV_RUN_DEFAULT), 0);
  cr_assert_eq(sa_leave(&loop), 0);
  cr_assert_eq(sa_future_status(f, NULL), -6, "SA-LOOP-3: the new loop did not run its call");
  cr_assert_eq(sa_future_release(f), 0);
  cr_assert_eq(sa_loop_close(&loop), 0);

  /* Closed by uv_loop_close, never run by the dispatcher. */
  cr_assert_eq(uv_loop_init(&loop), 0);
  cr_assert_eq(uv_loop_close(&loop), 0);
  refuse_closed_loop(&loop, "uv_loop_close");

  /* Other loops still work. */
  struct value_req inline_req = {.when = SA_TEST_INLINE};
  sa_test_in_loop(dispatch_once_in_loop, &inline_req);
  cr_assert_eq(inline_req.completions, 1);
}

/* SA-LOOP-1: a loop running on another thread is refused too. */
struct elsewhere {
  uv_loop_t loop;
  uv_timer_t timer;
  sem_t running, checked;
};

static void on_elsewhere_timer(uv_timer_t *timer) {
  struct elsewhere *e = timer->data;
  sem_post(&e->running);
  sem_wait(&e->checked); /* the loop runs, inside this callback, meanwhile */
  uv_close((uv_handle_t *)timer, NULL);
}

static void *run_elsewhere(void *arg) {
  struct elsewhere *e = arg;
  cr_assert_eq(sa_run(&e->loop, UV_RUN_DEFAULT), 0);
  return NULL;
}

Test(SA_LOOP_1, a_loop_running_on_another_thread_is_refused, .timeout = 10) {
  struct elsewhere e;
  pthread_t thread;
  sem_init(&e.running, 0, 0);
  sem_init(&e.checked, 0, 0);
  cr_assert_eq(uv_loop_init(&e.loop), 0);
  cr_assert_eq(uv_timer_init(&e.loop, &e.timer), 0);
  e.timer.data = &e;
  cr_assert_eq(uv_timer_start(&e.timer, on_elsewhere_timer, 0, 0), 0);
  cr_assert_eq(pthread_create(&thread, NULL, run_elsewhere, &e), 0);
  sem_wait(&e.running);
  int run_rc = sa_run(&e.loop, UV_RUN_NOWAIT);
  int enter_rc = sa_enter(&e.loop);
  int close_rc = sa_loop_close(&e.loop);
  sem_post(&e.checked);
  pthread_join(thread, NULL);
  cr_assert_eq(run_rc, SA_EBUSY, "SA-LOOP-1: sa_run of a loop running elsewhere returned %d",
               run_rc);
  cr_assert_eq(enter_rc, SA_EBUSY,
               "SA-LOOP-1: sa_enter of a loop running elsewhere returned %d", enter_rc);
  cr_assert_null(sa_current_loop());
  cr_assert_eq(close_rc, SA_EBUSY,
               "SA-LOOP-1: sa_loop_close of a loop running elsewhere returned %d", close_rc);
  cr_assert_eq(sa_loop_close(&e.loop), 0, "SA-LOOP-2: the loop, stopped, did not close");
  sem_destroy(&e.running);
  sem_destroy(&e.checked);
}

/* SA-LOOP-2: results queued for delivery keep a loop from closing. A check
 * callback, after the loop's idle phase, makes an inline call and stops the
 * loop: its result is queued when uv_run returns. Each kind of call alone:
 * a continuation given with the call, and a future. */
struct queued_close {
  uv_check_t check;
  uv_idle_t spin; /* keeps the loop from blocking in its poll before the check */
  bool with_future;
  struct value_req req;
  struct cont_rec cont;
  sa_future_t f;
};

static void record_then(sa_future_t f, int status, void *value, void *data) {
  record_cont(f, status, value, data);
}

static void spin(uv_idle_t *idle) { (void)idle; }

static void queue_and_stop(uv_check_t *check) {
  struct queued_close *q = check->data;
  uv_close((uv_handle_t *)check, NULL);
  uv_close((uv_handle_t *)&q->spin, NULL);
  if (q->with_future)
    cr_assert_eq(sa_dispatch(&value_op, &q->req, SA_MODE_AUTO, NULL, &q->f), SA_PENDING);
  else
    cr_assert_eq(sa_dispatch_then(&value_op, &q->req, SA_MODE_AUTO, NULL, record_then, &q->cont),
                 SA_PENDING);
  uv_stop(check->loop);
}

Test(SA_LOOP_2, queued_results_keep_the_loop_from_closing) {
  for (int with_future = 0; with_future < 2; with_future++) {
    const char *kind = with_future ? "a future's" : "a continuation's";
    uv_loop_t loop;
    struct queued_close q = {.with_future = with_future,
                             .req = {.when = SA_TEST_INLINE, .status = -2}};
    cr_assert_eq(uv_loop_init(&loop), 0);
    cr_assert_eq(uv_check_init(&loop, &q.check), 0);
    q.check.data = &q;
    cr_assert_eq(uv_check_start(&q.check, queue_and_stop), 0);
    cr_assert_eq(uv_idle_init(&loop, &q.spin), 0);
    cr_assert_eq(uv_idle_start(&q.spin, spin), 0);
    cr_assert_eq(sa_enter(&loop), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(sa_leave(&loop), 0);
    cr_assert_eq(q.req.completions, 1);
    cr_assert_eq(q.cont.calls, 0, "not the case under test: the result went out already");
    cr_assert_eq(sa_loop_close(&loop), SA_EBUSY,
                 "SA-LOOP-2: a loop with %s result queued for delivery was closed", kind);
    cr_assert_eq(sa_run(&loop, UV_RUN_DEFAULT), 0);
    if (with_future) {
      cr_assert_eq(sa_future_status(q.f, NULL), -2, "SA-LOOP-2: the queued result was lost");
      cr_assert_eq(sa_future_release(q.f), 0);
    } else {
      cr_assert_eq(q.cont.calls, 1, "SA-LOOP-2: the queued result was lost");
      cr_assert_eq(q.cont.status, -2);
    }
    cr_assert_eq(sa_loop_close(&loop), 0);
  }
}

/* SA-LOOP-2: the dispatcher's own private loops are not the application's
 * to close. */
static void note_loop(sa_call_t *call, uv_loop_t *loop, void *arg) {
  *(uv_loop_t **)arg = loop;
  sa_complete(call, 0, NULL);
}

static const sa_op_t note_loop_op = {note_loop, NULL};

Test(SA_LOOP_2, a_private_loop_is_not_closed) {
  uv_loop_t *private_loop = NULL, *again = NULL;
  cr_assert_eq(sa_dispatch(&note_loop_op, &private_loop, SA_MODE_SYNC, NULL, NULL), 0);
  cr_assert_not_null(private_loop);
  int rc = sa_loop_close(private_loop);
  cr_assert_eq(rc, SA_EPERM, "SA-LOOP-2: sa_loop_close of a private loop returned %d", rc);
  cr_assert_eq(sa_dispatch(&note_loop_op, &again, SA_MODE_SYNC, NULL, NULL), 0,
               "SA-LOOP-2: the private loop no longer works");
  cr_assert_eq(again, private_loop, "SA-SYNC-3: the private loop changed");
  cr_assert_eq(sa_thread_cleanup(), 0);
}
