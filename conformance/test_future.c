/* SA-FUT-*: futures. */
#include "sa_test.h"

#include <criterion/criterion.h>
#include <time.h>
#include <unistd.h>

Test(SA_FUT_1, status_pending_then_result_from_any_thread) {
  for (int i = 0; i < 3; i++) {
    const char *w = sa_test_when_name(sa_test_whens[i]);
    int marker;
    struct value_req req = {.when = sa_test_whens[i], .status = -8, .value = &marker};
    sa_future_t f;
    void *value = NULL;
    cr_assert_eq(sa_dispatch(&value_op, &req, SA_MODE_ASYNC, NULL, &f), SA_PENDING);
    cr_assert_eq(sa_future_status(f, &value), SA_PENDING,
                 "SA-FUT-1 (%s): not pending before the loop ran", w);
    cr_assert_null(value, "SA-FUT-1 (%s): value written while pending", w);
    cr_assert_eq(sa_future_wait(f, NULL), -8);
    cr_assert_eq(sa_future_status(f, &value), -8, "SA-FUT-1 (%s): status after delivery", w);
    cr_assert_eq(value, &marker, "SA-FUT-1 (%s): value after delivery", w);
    cr_assert_eq(sa_future_status(f, NULL), -8, "SA-FUT-1 (%s): NULL value pointer refused", w);
    cr_assert_eq(sa_future_release(f), 0);
  }
}

/* SA-FUT-2: continuation attached before and after delivery, from a loop. */
struct then_case {
  struct value_req req;
  struct cont_rec early, late;
  sa_future_t f, g;
  struct value_req req_late;
  uv_timer_t timer;
  uv_loop_t *loop;
};

static void attach_late(uv_timer_t *timer) {
  struct then_case *c = timer->data;
  uv_close((uv_handle_t *)timer, NULL);
  cr_assert_eq(sa_future_then(c->g, record_cont, &c->late), 0);
}

static void then_in_loop(uv_loop_t *loop, void *data) {
  struct then_case *c = data;
  c->loop = loop;
  cr_assert_eq(sa_dispatch(&value_op, &c->req, SA_MODE_AUTO, NULL, &c->f), SA_PENDING);
  cr_assert_eq(sa_future_then(c->f, record_cont, &c->early), 0);
  cr_assert_eq(sa_dispatch(&value_op, &c->req_late, SA_MODE_AUTO, NULL, &c->g), SA_PENDING);
  uv_timer_init(loop, &c->timer);
  c->timer.data = c;
  uv_timer_start(&c->timer, attach_late, 30, 0);
}

Test(SA_FUT_2, continuation_called_once_on_loop) {
  for (int i = 0; i < 3; i++) {
    const char *w = sa_test_when_name(sa_test_whens[i]);
    struct then_case c = {.req = {.when = sa_test_whens[i], .status = -1},
                          .req_late = {.when = sa_test_whens[i], .status = -2}};
    sa_test_in_loop(then_in_loop, &c);
    cr_assert_eq(c.early.calls, 1, "SA-FUT-2 (%s): continuation called %d times", w,
                 c.early.calls);
    cr_assert_eq(c.early.status, -1);
    cr_assert_eq(c.early.loop, c.loop,
                 "SA-FUT-2 (%s): continuation not in async context on its loop", w);
    cr_assert_eq(c.late.calls, 1, "SA-FUT-2 (%s): late continuation called %d times", w,
                 c.late.calls);
    cr_assert_eq(c.late.status, -2);
    cr_assert_eq(c.late.loop, c.loop, "SA-FUT-2 (%s): late continuation out of context", w);
    cr_assert_eq(sa_future_release(c.f), 0);
    cr_assert_eq(sa_future_release(c.g), 0);
  }
}

Test(SA_FUT_3, wait_on_owner_thread_drives_loop) {
  for (int i = 0; i < 3; i++) {
    const char *w = sa_test_when_name(sa_test_whens[i]);
    struct value_req req = {.when = sa_test_whens[i], .status = -3, .value = &req};
    struct cont_rec cont = {0};
    sa_future_t f;
    void *value = NULL;
    cr_assert_eq(sa_dispatch(&value_op, &req, SA_MODE_ASYNC, NULL, &f), SA_PENDING);
    cr_assert_eq(sa_future_then(f, record_cont, &cont), 0);
    int rc = sa_future_wait(f, &value);
    cr_assert_eq(rc, -3, "SA-FUT-3 (%s): wait returned %d", w, rc);
    cr_assert_eq(value, &req, "SA-FUT-3 (%s): value lost", w);
    cr_assert_eq(cont.calls, 1, "SA-FUT-3 (%s): the wait did not deliver to the continuation", w);
    cr_assert_eq(sa_future_wait(f, NULL), -3, "SA-FUT-3 (%s): a second wait differs", w);
    cr_assert_eq(sa_future_release(f), 0);
  }
}

struct deadlock_case {
  struct value_req req;
  sa_future_t f;
  int wait_rc;
};

static void deadlock_in_loop(uv_loop_t *loop, void *data) {
  (void)loop;
  struct deadlock_case *c = data;
  cr_assert_eq(sa_dispatch(&value_op, &c->req, SA_MODE_AUTO, NULL, &c->f), SA_PENDING);
  c->wait_rc = sa_future_wait(c->f, NULL);
}

Test(SA_FUT_4, wait_inside_own_running_loop_is_edeadlk, .timeout = 10) {
  for (int i = 0; i < 3; i++) {
    struct deadlock_case c = {.req = {.when = sa_test_whens[i], .delay_ms = 20}};
    sa_test_in_loop(deadlock_in_loop, &c);
    cr_assert_eq(c.wait_rc, SA_EDEADLK,
                 "SA-FUT-4 (%s): wait inside the running loop returned %d, not SA_EDEADLK",
                 sa_test_when_name(sa_test_whens[i]), c.wait_rc);
    cr_assert_eq(sa_future_status(c.f, NULL), 0);
    cr_assert_eq(sa_future_release(c.f), 0);
  }
}

/* SA-FUT-5: a loop thread publishes a future; another thread waits on it. */
struct cross_wait {
  pthread_barrier_t published;
  sa_future_t f;
  struct value_req req;
  int rc;
  void *value;
  double cpu_ms, wall_ms;
};

static double ms_of(clockid_t clock) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void cross_in_loop(uv_loop_t *loop, void *data) {
  (void)loop;
  struct cross_wait *c = data;
  cr_assert_eq(sa_dispatch(&value_op, &c->req, SA_MODE_AUTO, NULL, &c->f), SA_PENDING);
  pthread_barrier_wait(&c->published);
}

static void *cross_loop_thread(void *arg) {
  sa_test_in_loop(cross_in_loop, arg);
  return NULL;
}

Test(SA_FUT_5, wait_from_another_thread_sleeps_until_result) {
  for (int i = 0; i < 3; i++) {
    const char *w = sa_test_when_name(sa_test_whens[i]);
    struct cross_wait c = {.req = {.when = sa_test_whens[i], .status = -4, .value = &c,
                                   .delay_ms = 200}};
    pthread_t loop_thread;
    pthread_barrier_init(&c.published, NULL, 2);
    cr_assert_eq(pthread_create(&loop_thread, NULL, cross_loop_thread, &c), 0);
    pthread_barrier_wait(&c.published);
    double cpu0 = ms_of(CLOCK_THREAD_CPUTIME_ID), wall0 = ms_of(CLOCK_MONOTONIC);
    c.rc = sa_future_wait(c.f, &c.value);
    c.cpu_ms = ms_of(CLOCK_THREAD_CPUTIME_ID) - cpu0;
    c.wall_ms = ms_of(CLOCK_MONOTONIC) - wall0;
    pthread_join(loop_thread, NULL);
    cr_assert_eq(c.rc, -4, "SA-FUT-5 (%s): cross-thread wait returned %d", w, c.rc);
    cr_assert_eq(c.value, &c, "SA-FUT-5 (%s): value lost", w);
    /* Sleeping, not spinning: a generous bound, far from a timing test. */
    if (sa_test_whens[i] == SA_TEST_LATER)
      cr_assert_lt(c.cpu_ms, c.wall_ms / 2 + 5,
                   "SA-FUT-5 (%s): the waiter burned %.1f ms of CPU in %.1f ms", w,
                   c.cpu_ms, c.wall_ms);
    cr_assert_eq(sa_future_release(c.f), 0);
    pthread_barrier_destroy(&c.published);
  }
}

/* SA-FUT-6: misuse gets error codes. */
static void noop_cont(sa_future_t f, int status, void *value, void *data) {
  (void)f;
  (void)status;
  (void)value;
  (void)data;
}

struct foreign_use {
  sa_future_t f;
  int then_rc, status_rc;
};

static void *use_from_other_thread(void *arg) {
  struct foreign_use *u = arg;
  u->then_rc = sa_future_then(u->f, noop_cont, NULL);
  u->status_rc = sa_future_status(u->f, NULL);
  return NULL;
}

Test(SA_FUT_6, misuse_returns_error_codes) {
  struct value_req req = {.when = SA_TEST_LATER};
  sa_future_t f, g;
  cr_assert_eq(sa_future_status(SA_FUTURE_NULL, NULL), SA_EINVAL, "SA-FUT-6: null future status");
  cr_assert_eq(sa_future_wait(SA_FUTURE_NULL, NULL), SA_EINVAL, "SA-FUT-6: null future wait");
  cr_assert_eq(sa_future_release(SA_FUTURE_NULL), SA_EINVAL, "SA-FUT-6: null future release");
  cr_assert_eq(sa_future_then(SA_FUTURE_NULL, noop_cont, NULL), SA_EINVAL,
               "SA-FUT-6: null future then");
  cr_assert_eq(sa_future_cancel(SA_FUTURE_NULL), SA_EINVAL, "SA-FUT-6: null future cancel");

  cr_assert_eq(sa_dispatch(&value_op, &req, SA_MODE_ASYNC, NULL, &f), SA_PENDING);
  cr_assert_eq(sa_future_then(f, noop_cont, NULL), 0);
  cr_assert_eq(sa_future_then(f, noop_cont, NULL), SA_EALREADY,
               "SA-FUT-6: a second continuation was not refused with SA_EALREADY");
  struct foreign_use u = {.f = f};
  pthread_t thread;
  cr_assert_eq(pthread_create(&thread, NULL, use_from_other_thread, &u), 0);
  pthread_join(thread, NULL);
  cr_assert_eq(u.then_rc, SA_EPERM, "SA-FUT-6: then from a foreign thread returned %d",
               u.then_rc);
  cr_assert_eq(u.status_rc, SA_PENDING, "SA-FUT-6: status from a foreign thread refused");
  cr_assert_eq(sa_future_wait(f, NULL), 0);
  cr_assert_eq(sa_future_release(f), 0);

  /* Every use of a released handle is SA_ESTALE, even once its slot is
   * reused by a new future. */
  cr_assert_eq(sa_future_release(f), SA_ESTALE, "SA-FUT-6: double release not SA_ESTALE");
  cr_assert_eq(sa_future_wait(f, NULL), SA_ESTALE, "SA-FUT-6: wait on released not SA_ESTALE");
  cr_assert_eq(sa_future_status(f, NULL), SA_ESTALE, "SA-FUT-6: status on released");
  cr_assert_eq(sa_future_then(f, noop_cont, NULL), SA_ESTALE, "SA-FUT-6: then on released");
  cr_assert_eq(sa_future_cancel(f), SA_ESTALE, "SA-FUT-6: cancel on released");
  struct value_req req2 = {.when = SA_TEST_INLINE};
  cr_assert_eq(sa_dispatch(&value_op, &req2, SA_MODE_ASYNC, NULL, &g), SA_PENDING);
  cr_assert_eq(sa_future_release(f), SA_ESTALE, "SA-FUT-6: stale handle hit a new future");
  cr_assert_eq(sa_future_status(g, NULL), SA_PENDING, "SA-FUT-6: the new future was disturbed");
  cr_assert_eq(sa_future_wait(g, NULL), 0);
  cr_assert_eq(sa_future_release(g), 0);
  cr_assert_eq(sa_future_release(g), SA_ESTALE);
  /* A handle that was never issued. */
  cr_assert_eq(sa_future_status((sa_future_t){0x7fffffff12345678ull}, NULL), SA_ESTALE,
               "SA-FUT-6: forged handle not SA_ESTALE");
}

/* SA-ENTRY-5: a released handle stays stale however often its call's slot
 * is reused: rounds of thousands of futures, each ended and released, and
 * while the next round's calls are pending every earlier round's handle is
 * checked. A dispatcher that recycles its records in bulk, or gives their
 * memory back and takes it again, must not let an old handle name a new
 * call. */
#define REUSE_ROUNDS 4
#define REUSE_FUTURES 3000
Test(SA_ENTRY_5, released_handles_stay_stale_while_their_slots_are_reused, .timeout = 60) {
  static sa_future_t made[REUSE_ROUNDS][REUSE_FUTURES];
  struct value_req req = {.when = SA_TEST_NEXT_TICK};
  for (int round = 0; round < REUSE_ROUNDS; round++) {
    for (int i = 0; i < REUSE_FUTURES; i++)
      cr_assert_eq(sa_dispatch(&value_op, &req, SA_MODE_ASYNC, NULL, &made[round][i]),
                   SA_PENDING);
    for (int earlier = 0; earlier < round; earlier++)
      for (int i = 0; i < REUSE_FUTURES; i++)
        cr_assert_eq(sa_future_status(made[earlier][i], NULL), SA_ESTALE,
                     "SA-ENTRY-5: a handle of round %d, released, answered as a call of "
                     "round %d",
                     earlier, round);
    for (int i = 0; i < REUSE_FUTURES; i++) {
      cr_assert_eq(sa_future_wait(made[round][i], NULL), 0);
      cr_assert_eq(sa_future_release(made[round][i]), 0);
    }
  }
}

/* SA-FUT-6: a future released while its call is pending is stale at once,
 * for every future function, on its own thread. */
Test(SA_FUT_6, released_pending_future_is_stale_at_once) {
  for (int i = 1; i < 3; i++) { /* pending: next tick or later */
    const char *w = sa_test_when_name(sa_test_whens[i]);
    struct value_req req = {.when = sa_test_whens[i]}, after = {.when = SA_TEST_LATER,
                                                                .delay_ms = 20};
    sa_future_t f, g;
    void *value = &req;
    cr_assert_eq(sa_dispatch(&value_op, &req, SA_MODE_ASYNC, NULL, &f), SA_PENDING);
    cr_assert_eq(sa_future_release(f), 0);
    cr_assert_eq(sa_future_status(f, &value), SA_ESTALE, "SA-FUT-6 (%s): status", w);
    cr_assert_eq(value, &req, "SA-FUT-6 (%s): a stale status wrote the value", w);
    cr_assert_eq(sa_future_then(f, noop_cont, NULL), SA_ESTALE, "SA-FUT-6 (%s): then", w);
    cr_assert_eq(sa_future_cancel(f), SA_ESTALE, "SA-FUT-6 (%s): cancel", w);
    cr_assert_eq(req.cancels, 0, "SA-FUT-6 (%s): a stale cancel ran the hook", w);
    cr_assert_eq(sa_future_wait(f, NULL), SA_ESTALE, "SA-FUT-6 (%s): wait", w);
    cr_assert_eq(sa_future_wait_until(f, sa_deadline_in(1000), NULL), SA_ESTALE,
                 "SA-FUT-6 (%s): wait_until", w);
    cr_assert_eq(sa_future_release(f), SA_ESTALE, "SA-FUT-6 (%s): second release", w);
    /* The call itself runs on to its end (SA-FUT-7). */
    cr_assert_eq(sa_dispatch(&value_op, &after, SA_MODE_ASYNC, NULL, &g), SA_PENDING);
    cr_assert_eq(sa_future_wait(g, NULL), 0);
    cr_assert_eq(sa_future_release(g), 0);
    cr_assert_eq(req.completions, 1, "SA-FUT-6 (%s): the released call did not complete", w);
  }
}

/* SA-FUT-6: a wait in progress when another thread releases the future
 * returns promptly: here nothing would ever complete the call (a parked op
 * without a hook), so only the release can end the owner's wait. */
struct release_later {
  sa_future_t f;
  int rc;
};

static void *release_after_a_while(void *arg) {
  struct release_later *r = arg;
  usleep(50 * 1000);
  r->rc = sa_future_release(r->f);
  return NULL;
}

static void *wait_on_foreign_future(void *arg) {
  struct release_later *r = arg;
  r->rc = sa_future_wait(r->f, NULL);
  return NULL;
}

Test(SA_FUT_6, release_from_another_thread_ends_the_owners_wait, .timeout = 20) {
  struct value_req parked = {.when = SA_TEST_LATER, .delay_ms = 60000};
  struct release_later r;
  pthread_t releaser;
  cr_assert_eq(sa_dispatch(&value_op_no_cancel, &parked, SA_MODE_ASYNC, NULL, &r.f), SA_PENDING);
  cr_assert_eq(pthread_create(&releaser, NULL, release_after_a_while, &r), 0);
  double start = ms_of(CLOCK_MONOTONIC);
  int rc = sa_future_wait(r.f, NULL);
  double waited = ms_of(CLOCK_MONOTONIC) - start;
  pthread_join(releaser, NULL);
  cr_assert_eq(r.rc, 0, "SA-FUT-6: the release from another thread failed");
  cr_assert_eq(rc, SA_ESTALE, "SA-FUT-6: the owner's wait on a released future returned %d", rc);
  cr_assert_lt(waited, 10000, "SA-FUT-6: the owner's wait took %.0f ms to notice the release",
               waited);
}

Test(SA_FUT_6, release_from_another_thread_ends_a_foreign_wait, .timeout = 20) {
  struct value_req parked = {.when = SA_TEST_LATER, .delay_ms = 60000};
  struct release_later r, waiter;
  pthread_t releaser, waiting;
  cr_assert_eq(sa_dispatch(&value_op_no_cancel, &parked, SA_MODE_ASYNC, NULL, &r.f), SA_PENDING);
  waiter.f = r.f;
  cr_assert_eq(pthread_create(&waiting, NULL, wait_on_foreign_future, &waiter), 0);
  cr_assert_eq(pthread_create(&releaser, NULL, release_after_a_while, &r), 0);
  pthread_join(releaser, NULL);
  pthread_join(waiting, NULL);
  cr_assert_eq(r.rc, 0);
  cr_assert_eq(waiter.rc, SA_ESTALE, "SA-FUT-6: a foreign wait on a released future returned %d",
               waiter.rc);
}

/* The legal sequence that used to hang the owner: another thread waits for
 * the result, then releases the future, while the owner waits too. The
 * owner's wait returns the result or SA_ESTALE, whichever the race gives.
 * A parked call keeps the loop alive, so a wait that missed the release
 * would never return. */
Test(SA_FUT_6, wait_then_release_by_another_thread_while_the_owner_waits, .timeout = 20) {
  struct value_req parked = {.when = SA_TEST_LATER, .delay_ms = 60000};
  sa_future_t p;
  cr_assert_eq(sa_dispatch(&value_op_no_cancel, &parked, SA_MODE_ASYNC, NULL, &p), SA_PENDING);
  for (int round = 0; round < 200; round++) {
    struct value_req req = {.when = (sa_test_when)(1 + round % 2), .delay_ms = 1,
                            .status = -3};
    struct release_later other;
    pthread_t t;
    cr_assert_eq(sa_dispatch(&value_op, &req, SA_MODE_ASYNC, NULL, &other.f), SA_PENDING);
    cr_assert_eq(pthread_create(&t, NULL, wait_on_foreign_future, &other), 0);
    int rc = sa_future_wait(other.f, NULL);
    pthread_join(t, NULL);
    cr_assert_eq(other.rc, -3, "SA-FUT-6: the other thread's wait returned %d", other.rc);
    int released = sa_future_release(other.f);
    cr_assert(rc == -3 || (rc == SA_ESTALE && released == SA_ESTALE),
              "SA-FUT-6: round %d: the owner's wait returned %d", round, rc);
  }
}

/* SA-FUT-7: release while pending. */
Test(SA_FUT_7, release_pending_lets_call_finish) {
  for (int i = 0; i < 3; i++) {
    const char *w = sa_test_when_name(sa_test_whens[i]);
    struct value_req req = {.when = sa_test_whens[i]}, after = {.when = SA_TEST_LATER,
                                                                .delay_ms = 20};
    struct cont_rec cont = {0};
    sa_future_t f, g;
    cr_assert_eq(sa_dispatch(&value_op, &req, SA_MODE_ASYNC, NULL, &f), SA_PENDING);
    cr_assert_eq(sa_future_then(f, record_cont, &cont), 0);
    cr_assert_eq(sa_future_release(f), 0, "SA-FUT-7 (%s): releasing a pending future failed", w);
    /* Drive the private loop past the released call's completion. */
    cr_assert_eq(sa_dispatch(&value_op, &after, SA_MODE_ASYNC, NULL, &g), SA_PENDING);
    cr_assert_eq(sa_future_wait(g, NULL), 0);
    cr_assert_eq(sa_future_release(g), 0);
    cr_assert_eq(req.completions, 1, "SA-FUT-7 (%s): the released call did not complete", w);
    cr_assert_eq(cont.calls, 0, "SA-FUT-7 (%s): continuation of a released future called", w);
    cr_assert_eq(sa_future_status(f, NULL), SA_ESTALE);
  }
}

/* SA-FUT-8: cancellation through the op's hook. */
struct cancel_case {
  struct value_req req;
  struct cont_rec cont;
  sa_future_t f;
  int cancel_rc;
  int cancel_rc_after;
};

static void cancel_in_loop(uv_loop_t *loop, void *data) {
  (void)loop;
  struct cancel_case *c = data;
  cr_assert_eq(sa_dispatch(&value_op, &c->req, SA_MODE_AUTO, NULL, &c->f), SA_PENDING);
  cr_assert_eq(sa_future_then(c->f, record_cont, &c->cont), 0);
  c->cancel_rc = sa_future_cancel(c->f);
}

Test(SA_FUT_8, cancel_runs_hook_and_delivers_once) {
  for (int i = 1; i < 3; i++) { /* a call that completed inline cannot be cancelled */
    const char *w = sa_test_when_name(sa_test_whens[i]);
    struct cancel_case c = {.req = {.when = sa_test_whens[i], .delay_ms = 1000}};
    sa_test_in_loop(cancel_in_loop, &c);
    cr_assert_eq(c.cancel_rc, 0, "SA-FUT-8 (%s): cancel returned %d", w, c.cancel_rc);
    cr_assert_eq(c.req.cancels, 1, "SA-FUT-8 (%s): cancel hook called %d times", w,
                 c.req.cancels);
    cr_assert_eq(c.cont.calls, 1, "SA-FUT-8 (%s): outcome delivered %d times", w, c.cont.calls);
    cr_assert_eq(c.cont.status, SA_ECANCELED, "SA-FUT-8 (%s): outcome %d", w, c.cont.status);
    cr_assert_eq(sa_future_cancel(c.f), 0, "SA-FUT-8 (%s): cancel after completion", w);
    cr_assert_eq(c.req.cancels, 1, "SA-FUT-8 (%s): hook called after completion", w);
    cr_assert_eq(sa_future_release(c.f), 0);
  }
  struct value_req req = {.when = SA_TEST_LATER};
  sa_future_t f;
  cr_assert_eq(sa_dispatch(&value_op_no_cancel, &req, SA_MODE_ASYNC, NULL, &f), SA_PENDING);
  cr_assert_eq(sa_future_cancel(f), SA_ENOTSUP, "SA-FUT-8: cancel without a hook");
  cr_assert_eq(sa_future_wait(f, NULL), 0);
  cr_assert_eq(sa_future_release(f), 0);
}
