/* SA-DET-*: context detection in auto mode. */
#include "sa_test.h"

#include <criterion/criterion.h>

/* Dispatch value_op in auto mode; the call must run synchronously. */
static void expect_sync_auto(const char *req_id, const char *where) {
  for (int i = 0; i < 3; i++) {
    sa_test_when when = sa_test_whens[i];
    int marker;
    struct value_req req = {.when = when, .status = -3, .value = &marker};
    sa_future_t f = {12345};
    void *value = NULL;
    int rc = sa_dispatch(&value_op, &req, SA_MODE_AUTO, &value, &f);
    cr_assert_neq(rc, SA_PENDING, "%s (%s): auto mode %s returned a future",
                  req_id, sa_test_when_name(when), where);
    cr_assert_eq(rc, -3, "%s (%s): auto mode %s: status %d", req_id,
                 sa_test_when_name(when), where, rc);
    cr_assert_eq(value, &marker, "%s (%s): value lost", req_id, sa_test_when_name(when));
    cr_assert_eq(f.id, 0, "%s (%s): future not set to null", req_id,
                 sa_test_when_name(when));
    cr_assert_eq(req.completions, 1, "%s (%s): op did not complete before return",
                 req_id, sa_test_when_name(when));
  }
}

Test(SA_DET_1, plain_thread_is_sync_context) {
  cr_assert_null(sa_current_loop(), "SA-DET-1: sa_current_loop() is not NULL in plain code");
  expect_sync_auto("SA-DET-1", "in plain code");
}

struct det2 {
  struct value_req req[3];
  sa_future_t f[3];
  uv_loop_t *current;
  int rc[3];
};

static void det2_in_loop(uv_loop_t *loop, void *data) {
  struct det2 *s = data;
  s->current = sa_current_loop();
  cr_assert_eq(s->current, loop, "SA-DET-2: sa_current_loop() is not the running loop");
  for (int i = 0; i < 3; i++) {
    s->rc[i] = sa_dispatch(&value_op, &s->req[i], SA_MODE_AUTO, NULL, &s->f[i]);
    cr_assert_eq(s->rc[i], SA_PENDING,
                 "SA-DET-2 (%s): auto mode in a loop callback returned %d, not SA_PENDING",
                 sa_test_when_name(s->req[i].when), s->rc[i]);
    cr_assert_eq(s->req[i].start_loop, loop, "SA-DET-2 (%s): op not started on the running loop",
                 sa_test_when_name(s->req[i].when));
  }
}

Test(SA_DET_2, loop_callback_is_async_context) {
  struct det2 s = {.req = {{.when = SA_TEST_INLINE, .status = -4},
                           {.when = SA_TEST_NEXT_TICK, .status = -4},
                           {.when = SA_TEST_LATER, .status = -4}}};
  sa_test_in_loop(det2_in_loop, &s);
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(sa_future_status(s.f[i], NULL), -4);
    cr_assert_eq(sa_future_release(s.f[i]), 0);
  }
}

/* SA-DET-3: scopes around the application's own uv_run, and around a
 * callback body; no scope means sync context. */
struct det3 {
  uv_loop_t *seen;
  uv_loop_t *in_scope;
  uv_loop_t *after_leave;
  int rc_in_scope;
  int rc_unscoped;
  sa_future_t f;
  struct value_req req;
  struct value_req req_unscoped;
  bool bracket_callback;
};

static void det3_cb(uv_timer_t *timer) {
  struct det3 *s = timer->data;
  uv_close((uv_handle_t *)timer, NULL);
  if (!s->bracket_callback) {
    s->seen = sa_current_loop();
    s->rc_in_scope = sa_dispatch(&value_op, &s->req, SA_MODE_AUTO, NULL, &s->f);
    return;
  }
  s->seen = sa_current_loop();
  s->rc_unscoped = sa_dispatch(&value_op, &s->req_unscoped, SA_MODE_AUTO, NULL, &s->f);
  cr_assert_eq(sa_enter(timer->loop), 0);
  s->in_scope = sa_current_loop();
  s->rc_in_scope = sa_dispatch(&value_op, &s->req, SA_MODE_AUTO, NULL, &s->f);
  cr_assert_eq(sa_leave(timer->loop), 0);
  s->after_leave = sa_current_loop();
}

static void det3_run(struct det3 *s) {
  uv_loop_t loop;
  uv_timer_t timer;
  cr_assert_eq(uv_loop_init(&loop), 0);
  uv_timer_init(&loop, &timer);
  timer.data = s;
  uv_timer_start(&timer, det3_cb, 0, 0);
  if (s->bracket_callback) {
    uv_run(&loop, UV_RUN_DEFAULT);
  } else {
    cr_assert_eq(sa_enter(&loop), 0);
    uv_run(&loop, UV_RUN_DEFAULT);
    cr_assert_eq(sa_leave(&loop), 0);
  }
  /* Deliver a result still pending (an implementation may need more runs). */
  for (int n = 0; n < 100 && sa_future_status(s->f, NULL) == SA_PENDING; n++)
    sa_run(&loop, UV_RUN_NOWAIT);
  cr_assert_neq(sa_future_status(s->f, NULL), SA_PENDING, "SA-DET-3: result never delivered");
  cr_assert_eq(sa_future_release(s->f), 0);
  cr_assert_eq(sa_loop_close(&loop), 0);
}

Test(SA_DET_3, scope_around_application_uv_run) {
  for (int i = 0; i < 3; i++) {
    struct det3 s = {.req = {.when = sa_test_whens[i]}};
    det3_run(&s);
    cr_assert_not_null(s.seen, "SA-DET-3 (%s): no async context inside sa_enter/uv_run",
                       sa_test_when_name(sa_test_whens[i]));
    cr_assert_eq(s.rc_in_scope, SA_PENDING, "SA-DET-3 (%s): auto mode inside the scope ran sync",
                 sa_test_when_name(sa_test_whens[i]));
  }
}

Test(SA_DET_3, scope_around_callback_body) {
  for (int i = 0; i < 3; i++) {
    struct det3 s = {.bracket_callback = true,
                     .req = {.when = sa_test_whens[i]},
                     .req_unscoped = {.when = sa_test_whens[i], .status = -2}};
    det3_run(&s);
    const char *w = sa_test_when_name(sa_test_whens[i]);
    cr_assert_null(s.seen, "SA-DET-3 (%s): plain uv_run without a scope is not sync context", w);
    cr_assert_eq(s.rc_unscoped, -2, "SA-DET-3 (%s): unscoped auto call did not run sync", w);
    cr_assert_not_null(s.in_scope, "SA-DET-3 (%s): no async context inside sa_enter", w);
    cr_assert_eq(s.rc_in_scope, SA_PENDING, "SA-DET-3 (%s): auto call in scope ran sync", w);
    cr_assert_null(s.after_leave, "SA-DET-3 (%s): still async after sa_leave", w);
  }
}

static void det4_in_loop(uv_loop_t *loop, void *data) {
  (void)loop;
  *(uv_loop_t **)data = sa_current_loop();
}

Test(SA_DET_4, leaving_the_loop_restores_sync_context) {
  for (int round = 0; round < 2; round++) {
    uv_loop_t *seen = NULL;
    sa_test_in_loop(det4_in_loop, &seen);
    cr_assert_not_null(seen);
    cr_assert_null(sa_current_loop(), "SA-DET-4: still async context after sa_run returned");
    expect_sync_auto("SA-DET-4", "after a loop has run on this thread");
  }
}

/* SA-DET-4: once a loop has run on the thread and returned, a sync call's
 * op runs in async context on the call's own loop, not on the loop that
 * ran before: what the op sees, and so what its own calls do, is of the
 * present moment. */
static void det4_nothing(uv_loop_t *loop, void *data) {
  (void)loop;
  (void)data;
}

Test(SA_DET_4, sync_call_after_a_loop_ran_sees_its_own_loop) {
  for (int i = 0; i < 3; i++) {
    struct value_req warm = {.when = sa_test_whens[i]};
    cr_assert_eq(sa_dispatch(&value_op, &warm, SA_MODE_SYNC, NULL, NULL), 0);
    sa_test_in_loop(det4_nothing, NULL);
    struct value_req req = {.when = sa_test_whens[i]};
    cr_assert_eq(sa_dispatch(&value_op, &req, SA_MODE_AUTO, NULL, &(sa_future_t){0}), 0);
    cr_assert_eq(req.loop_at_start, req.start_loop,
                 "SA-DET-4 (%s): inside a sync call made after a loop ran on the thread, "
                 "sa_current_loop() is not the call's loop",
                 sa_test_when_name(sa_test_whens[i]));
  }
}

/* SA-DET-5: one thread sits inside a loop callback while another
 * dispatches in auto mode from plain code, at the same moment. */
struct det5 {
  pthread_barrier_t inside, done;
  struct value_req req; /* outlives the callback: the call runs on */
};

static void det5_in_loop(uv_loop_t *loop, void *data) {
  struct det5 *s = data;
  sa_future_t f;
  s->req = (struct value_req){.when = SA_TEST_LATER};
  pthread_barrier_wait(&s->inside);
  cr_assert_eq(sa_current_loop(), loop);
  cr_assert_eq(sa_dispatch(&value_op, &s->req, SA_MODE_AUTO, NULL, &f), SA_PENDING,
               "SA-DET-5: a thread in a loop turned sync while another thread is sync");
  cr_assert_eq(sa_future_release(f), 0);
  pthread_barrier_wait(&s->done);
}

static void *det5_loop_thread(void *arg) {
  sa_test_in_loop(det5_in_loop, arg);
  return NULL;
}

static void *det5_sync_thread(void *arg) {
  struct det5 *s = arg;
  pthread_barrier_wait(&s->inside);
  expect_sync_auto("SA-DET-5", "while another thread is inside a loop");
  pthread_barrier_wait(&s->done);
  return NULL;
}

Test(SA_DET_5, detection_is_per_thread) {
  struct det5 s;
  pthread_t a, b;
  pthread_barrier_init(&s.inside, NULL, 2);
  pthread_barrier_init(&s.done, NULL, 2);
  cr_assert_eq(pthread_create(&a, NULL, det5_loop_thread, &s), 0);
  cr_assert_eq(pthread_create(&b, NULL, det5_sync_thread, &s), 0);
  pthread_join(a, NULL);
  pthread_join(b, NULL);
  pthread_barrier_destroy(&s.inside);
  pthread_barrier_destroy(&s.done);
}
