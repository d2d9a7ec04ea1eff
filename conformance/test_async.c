/* SA-ASYNC-*: async mode, each requirement the three ways an op can
 * complete (SA-ASYNC-6 is about inline completions alone). */
#include "sa_test.h"

#include <criterion/criterion.h>
#include <string.h>

/* Per way: what happened around one async call made in a loop callback. */
struct async_case {
  struct value_req req;
  struct cont_rec cont;
  sa_future_t f;
  int rc;
  int starts_at_return;
  int status_at_return;
  int then_rc;
  int cont_calls_after_then;
  pthread_t loop_thread;
  uv_loop_t *loop;
};

struct async_run {
  struct async_case c[3];
};

static void async_in_loop(uv_loop_t *loop, void *data) {
  struct async_run *s = data;
  for (int i = 0; i < 3; i++) {
    struct async_case *c = &s->c[i];
    c->loop = loop;
    c->loop_thread = pthread_self();
    c->rc = sa_dispatch(&value_op, &c->req, SA_MODE_AUTO, NULL, &c->f);
    c->starts_at_return = c->req.starts;
    c->status_at_return = sa_future_status(c->f, NULL);
    c->then_rc = sa_future_then(c->f, record_cont, &c->cont);
    c->cont_calls_after_then = c->cont.calls;
  }
}

static void run_async_cases(struct async_run *s, int status, void *value) {
  for (int i = 0; i < 3; i++)
    s->c[i] = (struct async_case){
        .req = {.when = sa_test_whens[i], .status = status, .value = value}};
  sa_test_in_loop(async_in_loop, s);
}

static void release_all(struct async_run *s) {
  for (int i = 0; i < 3; i++)
    cr_assert_eq(sa_future_release(s->c[i].f), 0);
}

Test(SA_ASYNC_1, starts_on_running_loop_and_returns_future) {
  struct async_run s;
  run_async_cases(&s, 0, NULL);
  for (int i = 0; i < 3; i++) {
    struct async_case *c = &s.c[i];
    const char *w = sa_test_when_name(c->req.when);
    cr_assert_eq(c->rc, SA_PENDING, "SA-ASYNC-1 (%s): returned %d, not SA_PENDING", w, c->rc);
    cr_assert_neq(c->f.id, 0, "SA-ASYNC-1 (%s): null future", w);
    cr_assert_eq(c->starts_at_return, 1, "SA-ASYNC-1 (%s): op not started before return", w);
    cr_assert_eq(c->req.start_loop, c->loop, "SA-ASYNC-1 (%s): op not on the running loop", w);
  }
  release_all(&s);
}

Test(SA_ASYNC_2, delivered_exactly_once_on_loop_thread) {
  struct async_run s;
  run_async_cases(&s, 0, NULL);
  for (int i = 0; i < 3; i++) {
    struct async_case *c = &s.c[i];
    const char *w = sa_test_when_name(c->req.when);
    cr_assert_eq(c->cont.calls, 1, "SA-ASYNC-2 (%s): continuation called %d times", w,
                 c->cont.calls);
    cr_assert(pthread_equal(c->cont.thread, c->loop_thread),
              "SA-ASYNC-2 (%s): delivered on another thread", w);
    cr_assert_eq(c->cont.loop, c->loop,
                 "SA-ASYNC-2 (%s): continuation not in async context on the loop", w);
    cr_assert_neq(sa_future_status(c->f, NULL), SA_PENDING,
                  "SA-ASYNC-2 (%s): the future never saw the result", w);
  }
  release_all(&s);
}

Test(SA_ASYNC_3, never_delivered_before_dispatch_returns) {
  struct async_run s;
  run_async_cases(&s, 0, NULL);
  for (int i = 0; i < 3; i++) {
    struct async_case *c = &s.c[i];
    const char *w = sa_test_when_name(c->req.when);
    cr_assert_eq(c->status_at_return, SA_PENDING,
                 "SA-ASYNC-3 (%s): result visible as %d right after dispatch returned "
                 "(delivered inline)",
                 w, c->status_at_return);
    cr_assert_eq(c->then_rc, 0, "SA-ASYNC-3 (%s): sa_future_then failed: %d", w, c->then_rc);
    cr_assert_eq(c->cont_calls_after_then, 0,
                 "SA-ASYNC-3 (%s): continuation called inside sa_future_then", w);
    cr_assert_eq(c->cont.calls, 1, "SA-ASYNC-3 (%s): continuation called %d times", w,
                 c->cont.calls);
  }
  release_all(&s);
}

/* SA-ASYNC-3 again, for a continuation attached after delivery. */
struct late {
  sa_future_t f;
  struct value_req req;
  struct cont_rec cont;
  int calls_after_then;
  int status_before_then;
};

static void late_attach(uv_timer_t *timer) {
  struct late *l = timer->data;
  uv_close((uv_handle_t *)timer, NULL);
  l->status_before_then = sa_future_status(l->f, NULL);
  cr_assert_eq(sa_future_then(l->f, record_cont, &l->cont), 0);
  l->calls_after_then = l->cont.calls;
}

static void late_in_loop(uv_loop_t *loop, void *data) {
  struct late *l = data;
  static uv_timer_t timer;
  cr_assert_eq(sa_dispatch(&value_op, &l->req, SA_MODE_AUTO, NULL, &l->f), SA_PENDING);
  uv_timer_init(loop, &timer);
  timer.data = l;
  uv_timer_start(&timer, late_attach, 20, 0); /* long after the op completed */
}

Test(SA_ASYNC_3, continuation_attached_late_runs_later) {
  for (int i = 0; i < 3; i++) {
    const char *w = sa_test_when_name(sa_test_whens[i]);
    struct late l = {.req = {.when = sa_test_whens[i], .status = -6}};
    sa_test_in_loop(late_in_loop, &l);
    cr_assert_eq(l.status_before_then, -6, "SA-ASYNC-3 (%s): result not delivered", w);
    cr_assert_eq(l.calls_after_then, 0,
                 "SA-ASYNC-3 (%s): late continuation called inside sa_future_then", w);
    cr_assert_eq(l.cont.calls, 1, "SA-ASYNC-3 (%s): late continuation called %d times", w,
                 l.cont.calls);
    cr_assert_eq(l.cont.status, -6);
    cr_assert_eq(sa_future_release(l.f), 0);
  }
}

Test(SA_ASYNC_4, result_is_the_ops) {
  static int marker;
  const int statuses[] = {0, -1, UV_ECONNREFUSED};
  for (size_t k = 0; k < sizeof statuses / sizeof *statuses; k++) {
    struct async_run s;
    run_async_cases(&s, statuses[k], &marker);
    for (int i = 0; i < 3; i++) {
      struct async_case *c = &s.c[i];
      const char *w = sa_test_when_name(c->req.when);
      void *value = NULL;
      cr_assert_eq(c->cont.status, statuses[k], "SA-ASYNC-4 (%s): continuation got %d, op said %d",
                   w, c->cont.status, statuses[k]);
      cr_assert_eq(c->cont.value, &marker, "SA-ASYNC-4 (%s): continuation got another value", w);
      cr_assert_eq(sa_future_status(c->f, &value), statuses[k],
                   "SA-ASYNC-4 (%s): future status differs", w);
      cr_assert_eq(value, &marker, "SA-ASYNC-4 (%s): future value differs", w);
    }
    release_all(&s);
  }
}

/* SA-ASYNC-6: calls made one after another in one callback, each completing
 * inline, taken by sa_dispatch_then ('T') or through a future ('F') in the
 * order a pattern gives; each continuation notes its call's index. */
#define ORDER_MAX 16

struct order_item {
  struct value_req req;
  struct order_run *run;
  int index;
  sa_future_t f;
  int rc;
};

struct order_run {
  const char *pattern;
  struct order_item item[ORDER_MAX];
  int delivered[ORDER_MAX];
  int ndelivered;
  int failed; /* calls or attachments that did not return what they must */
};

static void order_cont(sa_future_t future, int status, void *value, void *data) {
  (void)future;
  (void)status;
  (void)value;
  struct order_item *it = data;
  struct order_run *o = it->run;
  if (o->ndelivered < ORDER_MAX)
    o->delivered[o->ndelivered] = it->index;
  o->ndelivered++;
}

static void order_in_loop(uv_loop_t *loop, void *data) {
  (void)loop;
  struct order_run *o = data;
  for (int i = 0; o->pattern[i]; i++) {
    struct order_item *it = &o->item[i];
    *it = (struct order_item){.req = {.when = SA_TEST_INLINE}, .run = o, .index = i};
    if (o->pattern[i] == 'T') {
      it->rc = sa_dispatch_then(&value_op, &it->req, SA_MODE_ASYNC, NULL, order_cont, it);
    } else {
      it->rc = sa_dispatch(&value_op, &it->req, SA_MODE_ASYNC, NULL, &it->f);
      if (it->rc == SA_PENDING && sa_future_then(it->f, order_cont, it) != 0)
        o->failed++;
    }
    if (it->rc != SA_PENDING)
      o->failed++;
  }
}

Test(SA_ASYNC_6, inline_completions_delivered_in_call_order) {
  /* Each kind alone, then mixed: every change of kind in both directions,
   * and runs of each. */
  const char *patterns[] = {"TTTTTTTT", "FFFFFFFF", "TFTTFFFTTTFT", "FTTTFTFF"};
  for (size_t k = 0; k < sizeof patterns / sizeof *patterns; k++) {
    struct order_run o = {.pattern = patterns[k]};
    int n = (int)strlen(o.pattern);
    sa_test_in_loop(order_in_loop, &o);
    cr_assert_eq(o.failed, 0, "SA-ASYNC-6 (%s): %d calls failed", o.pattern, o.failed);
    cr_assert_eq(o.ndelivered, n, "SA-ASYNC-6 (%s): %d of %d calls delivered", o.pattern,
                 o.ndelivered, n);
    for (int i = 0; i < n; i++)
      cr_assert_eq(o.delivered[i], i,
                   "SA-ASYNC-6 (%s): delivery %d was call %d's (calls deliver in the order made)",
                   o.pattern, i, o.delivered[i]);
    for (int i = 0; i < n; i++)
      if (o.pattern[i] == 'F')
        cr_assert_eq(sa_future_release(o.item[i].f), 0);
  }
}
