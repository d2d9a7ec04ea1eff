/* SA-OP-*: the operation model. */
#include "sa_test.h"

#include <criterion/criterion.h>
#include <string.h>

/* SA-OP-1, sync context. */
Test(SA_OP_1, start_gets_call_loop_and_arg_sync) {
  for (int i = 0; i < 3; i++) {
    sa_test_when when = sa_test_whens[i];
    struct value_req req = {.when = when, .value = &req};
    void *value = NULL;
    int rc = sa_dispatch(&value_op, &req, SA_MODE_AUTO, &value, &(sa_future_t){0});
    cr_assert_eq(rc, 0, "SA-OP-1 (%s): status %d", sa_test_when_name(when), rc);
    cr_assert_eq(req.starts, 1, "SA-OP-1 (%s): start ran %d times",
                 sa_test_when_name(when), req.starts);
    cr_assert(pthread_equal(req.start_thread, pthread_self()),
              "SA-OP-1 (%s): start ran on another thread", sa_test_when_name(when));
    cr_assert_not_null(req.start_loop, "SA-OP-1 (%s): start got no loop",
                       sa_test_when_name(when));
    cr_assert_eq(value, &req, "SA-OP-1 (%s): argument or value altered",
                 sa_test_when_name(when));
  }
}

struct op1_async {
  struct value_req req[3];
  sa_future_t f[3];
  uv_loop_t *loop;
};

static void op1_in_loop(uv_loop_t *loop, void *data) {
  struct op1_async *s = data;
  s->loop = loop;
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(sa_dispatch(&value_op, &s->req[i], SA_MODE_AUTO, NULL, &s->f[i]),
                 SA_PENDING);
    cr_assert_eq(s->req[i].starts, 1, "SA-OP-1 (%s): start not called once during dispatch",
                 sa_test_when_name(s->req[i].when));
    cr_assert_eq(s->req[i].start_loop, loop,
                 "SA-OP-1 (%s): async op not given the running loop",
                 sa_test_when_name(s->req[i].when));
  }
}

/* SA-OP-1, async context. */
Test(SA_OP_1, start_gets_call_loop_and_arg_async) {
  struct op1_async s = {.req = {{.when = SA_TEST_INLINE},
                                {.when = SA_TEST_NEXT_TICK},
                                {.when = SA_TEST_LATER}}};
  sa_test_in_loop(op1_in_loop, &s);
  for (int i = 0; i < 3; i++) {
    void *value;
    cr_assert_eq(sa_future_status(s.f[i], &value), 0);
    cr_assert_eq(s.req[i].starts, 1);
    cr_assert(pthread_equal(s.req[i].start_thread, pthread_self()));
    cr_assert_eq(sa_future_release(s.f[i]), 0);
  }
}

/* SA-OP-2, sync context: a second completion is refused and changes nothing. */
Test(SA_OP_2, second_completion_refused_sync) {
  for (int i = 0; i < 3; i++) {
    sa_test_when when = sa_test_whens[i];
    int marker;
    struct value_req req = {.when = when, .status = -5, .value = &marker,
                            .complete_twice = true};
    void *value = NULL;
    int rc = sa_dispatch(&value_op, &req, SA_MODE_SYNC, &value, NULL);
    cr_assert_eq(req.complete_rc, 0, "SA-OP-2 (%s): first completion refused",
                 sa_test_when_name(when));
    cr_assert_eq(req.second_complete_rc, SA_EALREADY,
                 "SA-OP-2 (%s): second completion returned %d, not SA_EALREADY",
                 sa_test_when_name(when), req.second_complete_rc);
    cr_assert_eq(rc, -5, "SA-OP-2 (%s): the second completion changed the status",
                 sa_test_when_name(when));
    cr_assert_eq(value, &marker, "SA-OP-2 (%s): the second completion changed the value",
                 sa_test_when_name(when));
  }
}

struct op2_async {
  struct value_req req[3];
  struct cont_rec cont[3];
  sa_future_t f[3];
};

static void op2_in_loop(uv_loop_t *loop, void *data) {
  (void)loop;
  struct op2_async *s = data;
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(sa_dispatch(&value_op, &s->req[i], SA_MODE_AUTO, NULL, &s->f[i]),
                 SA_PENDING);
    cr_assert_eq(sa_future_then(s->f[i], record_cont, &s->cont[i]), 0);
  }
}

/* SA-OP-2, async context. */
Test(SA_OP_2, second_completion_refused_async) {
  static int marker;
  struct op2_async s;
  for (int i = 0; i < 3; i++)
    s.req[i] = (struct value_req){.when = sa_test_whens[i], .status = -5, .value = &marker,
                                  .complete_twice = true};
  memset(s.cont, 0, sizeof s.cont);
  sa_test_in_loop(op2_in_loop, &s);
  for (int i = 0; i < 3; i++) {
    const char *w = sa_test_when_name(sa_test_whens[i]);
    cr_assert_eq(s.req[i].second_complete_rc, SA_EALREADY,
                 "SA-OP-2 (%s): second completion returned %d", w,
                 s.req[i].second_complete_rc);
    cr_assert_eq(s.cont[i].calls, 1, "SA-OP-2 (%s): delivered %d times", w,
                 s.cont[i].calls);
    cr_assert_eq(s.cont[i].status, -5, "SA-OP-2 (%s): status changed", w);
    cr_assert_eq(s.cont[i].value, &marker, "SA-OP-2 (%s): value changed", w);
    cr_assert_eq(sa_future_release(s.f[i]), 0);
  }
}

/* SA-OP-3: an op that hands its call to another thread, which tries to
 * complete it; the real completion then comes from the loop. */
struct foreign {
  sa_call_t *call;
  int foreign_rc;
  uv_timer_t timer;
};

static void *complete_from_thread(void *arg) {
  struct foreign *f = arg;
  f->foreign_rc = sa_complete(f->call, 0, NULL);
  return NULL;
}

static void foreign_timer(uv_timer_t *timer) {
  struct foreign *f = timer->data;
  uv_close((uv_handle_t *)timer, NULL);
  sa_complete(f->call, -1, f); /* the real result */
}

static void foreign_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  struct foreign *f = arg;
  pthread_t thread;
  f->call = call;
  cr_assert_eq(pthread_create(&thread, NULL, complete_from_thread, f), 0);
  pthread_join(thread, NULL);
  uv_timer_init(loop, &f->timer);
  f->timer.data = f;
  uv_timer_start(&f->timer, foreign_timer, 1, 0);
}

static const sa_op_t foreign_op = {foreign_start, NULL};

Test(SA_OP_3, completion_from_another_thread_refused) {
  struct foreign f = {0};
  void *value = NULL;
  int rc = sa_dispatch(&foreign_op, &f, SA_MODE_SYNC, &value, NULL);
  cr_assert_eq(f.foreign_rc, SA_EPERM,
               "SA-OP-3: sa_complete from a foreign thread returned %d, not SA_EPERM",
               f.foreign_rc);
  cr_assert_eq(rc, -1, "SA-OP-3: the foreign completion was taken (status %d)", rc);
  cr_assert_eq(value, &f, "SA-OP-3: the foreign completion was taken");
}

/* SA-OP-2: a positive status is refused and changes nothing: the call stays
 * pending until the op completes it validly. The op tries a positive status
 * the way `when` says, then completes validly from its timer's close
 * callback, looking at the call's future in between. */
struct positive {
  sa_test_when when;
  sa_call_t *call;
  uv_timer_t timer;
  sa_future_t future; /* set once the async call has returned */
  int refused_rc, valid_rc;
  int status_between; /* the future's, after the refused completion */
  struct cont_rec cont;
};

static void positive_closed(uv_handle_t *handle) {
  struct positive *p = handle->data;
  if (p->future.id)
    p->status_between = sa_future_status(p->future, NULL);
  p->valid_rc = sa_complete(p->call, -5, p);
}

static void try_positive(struct positive *p) {
  static int junk;
  p->refused_rc = sa_complete(p->call, 1, &junk);
  uv_close((uv_handle_t *)&p->timer, positive_closed);
}

static void positive_fire(uv_timer_t *timer) { try_positive(timer->data); }

static void positive_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  struct positive *p = arg;
  p->call = call;
  cr_assert_eq(uv_timer_init(loop, &p->timer), 0);
  p->timer.data = p;
  if (p->when == SA_TEST_INLINE)
    try_positive(p);
  else
    cr_assert_eq(uv_timer_start(&p->timer, positive_fire, p->when == SA_TEST_LATER ? 2 : 0, 0),
                 0);
}

static const sa_op_t positive_op = {positive_start, NULL};

static void positive_in_loop(uv_loop_t *loop, void *data) {
  struct positive *p = data;
  sa_future_t f;
  (void)loop;
  cr_assert_eq(sa_dispatch(&positive_op, p, SA_MODE_AUTO, NULL, &f), SA_PENDING);
  p->future = f;
  cr_assert_eq(sa_future_then(f, record_cont, &p->cont), 0);
}

static void check_positive(const struct positive *p, const char *mode) {
  const char *w = sa_test_when_name(p->when);
  cr_assert_eq(p->refused_rc, SA_EINVAL,
               "SA-OP-2 (%s, %s): sa_complete with status 1 returned %d, not SA_EINVAL", mode, w,
               p->refused_rc);
  cr_assert_eq(p->valid_rc, 0,
               "SA-OP-2 (%s, %s): the valid completion after the refused one returned %d", mode,
               w, p->valid_rc);
}

Test(SA_OP_2, positive_status_refused_and_the_call_stays_pending) {
  for (int i = 0; i < 3; i++) {
    const char *w = sa_test_when_name(sa_test_whens[i]);
    struct positive sync = {.when = sa_test_whens[i]};
    void *value = NULL;
    int rc = sa_dispatch(&positive_op, &sync, SA_MODE_SYNC, &value, NULL);
    check_positive(&sync, "sync");
    cr_assert_eq(rc, -5, "SA-OP-2 (sync, %s): the call returned %d, not the valid -5", w, rc);
    cr_assert_eq(value, &sync, "SA-OP-2 (sync, %s): the refused completion's value stuck", w);

    struct positive async = {.when = sa_test_whens[i]};
    sa_test_in_loop(positive_in_loop, &async);
    check_positive(&async, "async");
    cr_assert_eq(async.status_between, SA_PENDING,
                 "SA-OP-2 (async, %s): after the refused completion the future read %d", w,
                 async.status_between);
    cr_assert_eq(async.cont.calls, 1, "SA-OP-2 (async, %s): delivered %d times", w,
                 async.cont.calls);
    cr_assert_eq(async.cont.status, -5, "SA-OP-2 (async, %s): delivered %d, not the valid -5", w,
                 async.cont.status);
    cr_assert_eq(async.cont.value, &async);
    cr_assert_eq(sa_future_release(async.future), 0);
  }
}
