/* SA-SYNC-*: sync mode. */
#include "sa_test.h"

#include <criterion/criterion.h>

Test(SA_SYNC_1, returns_status_and_value_never_pending) {
  for (int i = 0; i < 3; i++) {
    sa_test_when when = sa_test_whens[i];
    for (int status = 0; status >= -1; status--) {
      int marker;
      struct value_req req = {.when = when, .status = status, .value = &marker};
      sa_future_t f = {99};
      void *value = NULL;
      int rc = sa_dispatch(&value_op, &req, SA_MODE_SYNC, &value, &f);
      cr_assert_neq(rc, SA_PENDING, "SA-SYNC-1 (%s): sync call returned SA_PENDING",
                    sa_test_when_name(when));
      cr_assert_eq(rc, status, "SA-SYNC-1 (%s): status %d, op said %d",
                   sa_test_when_name(when), rc, status);
      cr_assert_eq(value, &marker, "SA-SYNC-1 (%s): value lost", sa_test_when_name(when));
      cr_assert_eq(req.completions, 1, "SA-SYNC-1 (%s): returned before the op completed",
                   sa_test_when_name(when));
      cr_assert_eq(f.id, 0, "SA-SYNC-1 (%s): future not nulled", sa_test_when_name(when));
    }
  }
}

struct on_app_loop {
  uv_loop_t *app_loop;
  struct value_req req[3];
};

static void sync2_in_loop(uv_loop_t *loop, void *data) {
  struct on_app_loop *s = data;
  s->app_loop = loop;
  for (int i = 0; i < 3; i++)
    cr_assert_eq(sa_dispatch(&value_op, &s->req[i], SA_MODE_SYNC, NULL, NULL), 0);
}

Test(SA_SYNC_2, runs_on_calling_thread_and_private_loop) {
  for (int i = 0; i < 3; i++) {
    struct value_req req = {.when = sa_test_whens[i]};
    cr_assert_eq(sa_dispatch(&value_op, &req, SA_MODE_SYNC, NULL, NULL), 0);
    cr_assert(pthread_equal(req.start_thread, pthread_self()) &&
                  pthread_equal(req.complete_thread, pthread_self()),
              "SA-SYNC-2 (%s): op ran on another thread", sa_test_when_name(sa_test_whens[i]));
    cr_assert_not_null(req.start_loop);
  }
  struct on_app_loop s = {.req = {{.when = SA_TEST_INLINE},
                                  {.when = SA_TEST_NEXT_TICK},
                                  {.when = SA_TEST_LATER}}};
  sa_test_in_loop(sync2_in_loop, &s);
  for (int i = 0; i < 3; i++)
    cr_assert_neq(s.req[i].start_loop, s.app_loop,
                  "SA-SYNC-2 (%s): sync call ran on the application's loop",
                  sa_test_when_name(sa_test_whens[i]));
}

/* SA-SYNC-3: one op leaves a timer handle open on its loop; the next call's
 * op must find it there, on the same loop. */
static uv_timer_t kept_timer;
static uv_loop_t *kept_on;

static void keep_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  (void)arg;
  kept_on = loop;
  cr_assert_eq(uv_timer_init(loop, &kept_timer), 0);
  uv_unref((uv_handle_t *)&kept_timer);
  sa_complete(call, 0, NULL);
}

static void find_kept(uv_handle_t *handle, void *found) {
  if (handle == (uv_handle_t *)&kept_timer)
    *(bool *)found = true;
}

static void use_kept_fire(uv_timer_t *timer) { sa_complete(timer->data, 0, NULL); }

/* Uses the kept handle: completes from its timer, so the handle must still be
 * alive and on this loop. */
static void use_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  bool found = false;
  uv_walk(loop, find_kept, &found);
  *(uv_loop_t **)arg = loop;
  if (!found) {
    sa_complete(call, -ENOENT, NULL);
    return;
  }
  kept_timer.data = call;
  uv_ref((uv_handle_t *)&kept_timer);
  uv_timer_start(&kept_timer, use_kept_fire, 1, 0);
}

static void close_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  (void)loop;
  (void)arg;
  uv_close((uv_handle_t *)&kept_timer, NULL);
  sa_complete(call, 0, NULL);
}

static const sa_op_t keep_op = {keep_start, NULL};
static const sa_op_t use_op = {use_start, NULL};
static const sa_op_t close_op = {close_start, NULL};

Test(SA_SYNC_3, private_loop_persists_across_calls) {
  uv_loop_t *used_on = NULL;
  cr_assert_eq(sa_dispatch(&keep_op, NULL, SA_MODE_AUTO, NULL, &(sa_future_t){0}), 0);
  for (int i = 0; i < 3; i++) {
    struct value_req req = {.when = sa_test_whens[i]};
    cr_assert_eq(sa_dispatch(&value_op, &req, SA_MODE_AUTO, NULL, &(sa_future_t){0}), 0);
    cr_assert_eq(req.start_loop, kept_on, "SA-SYNC-3 (%s): a later sync call used another loop",
                 sa_test_when_name(sa_test_whens[i]));
  }
  int rc = sa_dispatch(&use_op, &used_on, SA_MODE_AUTO, NULL, &(sa_future_t){0});
  cr_assert_eq(rc, 0, "SA-SYNC-3: a handle left open by an earlier call is gone (%s)",
               sa_strerror(rc));
  cr_assert_eq(used_on, kept_on);
  cr_assert_eq(sa_dispatch(&close_op, NULL, SA_MODE_AUTO, NULL, &(sa_future_t){0}), 0);
}

/* SA-SYNC-3: handles an op leaves on the private loop stay active there,
 * referenced, across calls; a later sync call still returns when its own op
 * completes, the three ways. (The wait runs the loop until the call
 * completes, not until the loop has nothing left: with a repeating timer
 * kept on it, that would be never.) */
static uv_timer_t ticking;
static int ticks;

static void tick(uv_timer_t *timer) {
  (void)timer;
  ticks++;
}

static void start_ticking(sa_call_t *call, uv_loop_t *loop, void *arg) {
  (void)arg;
  cr_assert_eq(uv_timer_init(loop, &ticking), 0);
  cr_assert_eq(uv_timer_start(&ticking, tick, 1, 1), 0);
  sa_complete(call, 0, NULL);
}

static void stop_ticking(sa_call_t *call, uv_loop_t *loop, void *arg) {
  (void)loop;
  (void)arg;
  uv_close((uv_handle_t *)&ticking, NULL);
  sa_complete(call, 0, NULL);
}

static const sa_op_t start_ticking_op = {start_ticking, NULL};
static const sa_op_t stop_ticking_op = {stop_ticking, NULL};

Test(SA_SYNC_3, calls_return_while_a_kept_handle_stays_active) {
  cr_assert_eq(sa_dispatch(&start_ticking_op, NULL, SA_MODE_SYNC, NULL, NULL), 0);
  for (int i = 0; i < 3; i++) {
    struct value_req req = {.when = sa_test_whens[i], .delay_ms = 5, .status = -3};
    int rc = sa_dispatch(&value_op, &req, SA_MODE_AUTO, NULL, &(sa_future_t){0});
    cr_assert_eq(rc, -3, "SA-SYNC-3 (%s): returned %d", sa_test_when_name(sa_test_whens[i]),
                 rc);
  }
  cr_assert_gt(ticks, 0, "the kept timer never ran while the calls ran the loop");
  cr_assert_eq(sa_dispatch(&stop_ticking_op, NULL, SA_MODE_SYNC, NULL, NULL), 0);
}

struct sync4 {
  pthread_barrier_t both_called;
  uv_loop_t *loop[2];
  int next;
  pthread_mutex_t mutex;
};

static void *sync4_thread(void *arg) {
  struct sync4 *s = arg;
  struct value_req req = {.when = SA_TEST_LATER};
  cr_assert_eq(sa_dispatch(&value_op, &req, SA_MODE_SYNC, NULL, NULL), 0);
  pthread_mutex_lock(&s->mutex);
  s->loop[s->next++] = req.start_loop;
  pthread_mutex_unlock(&s->mutex);
  pthread_barrier_wait(&s->both_called); /* both threads alive at once */
  return NULL;
}

Test(SA_SYNC_4, private_loops_are_per_thread) {
  struct sync4 s = {.next = 0};
  pthread_t t[2];
  pthread_mutex_init(&s.mutex, NULL);
  pthread_barrier_init(&s.both_called, NULL, 2);
  for (int i = 0; i < 2; i++)
    cr_assert_eq(pthread_create(&t[i], NULL, sync4_thread, &s), 0);
  for (int i = 0; i < 2; i++)
    pthread_join(t[i], NULL);
  cr_assert_neq(s.loop[0], s.loop[1], "SA-SYNC-4: two live threads share a private loop");
  pthread_barrier_destroy(&s.both_called);
  pthread_mutex_destroy(&s.mutex);
}

/* SA-SYNC-5: an op that, from its own start and callbacks, dispatches
 * another op in auto mode and completes with that op's result. */
struct composite {
  sa_test_when inner_when;
  struct value_req inner;
  uv_loop_t *outer_loop;
  uv_loop_t *loop_in_start;
  int inner_rc;
  sa_future_t inner_f;
  sa_call_t *call;
};

static void composite_done(sa_future_t f, int status, void *value, void *data) {
  struct composite *c = data;
  cr_assert_eq(sa_future_release(f), 0);
  sa_complete(c->call, status, value);
}

static void composite_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  struct composite *c = arg;
  c->call = call;
  c->outer_loop = loop;
  c->loop_in_start = sa_current_loop();
  c->inner = (struct value_req){.when = c->inner_when, .status = -9, .value = c};
  c->inner_rc = sa_dispatch(&value_op, &c->inner, SA_MODE_AUTO, NULL, &c->inner_f);
  if (c->inner_rc != SA_PENDING) {
    sa_complete(call, -1000, NULL);
    return;
  }
  sa_future_then(c->inner_f, composite_done, c);
}

static const sa_op_t composite_op = {composite_start, NULL};

Test(SA_SYNC_5, op_runs_in_async_context_and_composes) {
  for (int i = 0; i < 3; i++) {
    const char *w = sa_test_when_name(sa_test_whens[i]);
    struct composite c = {.inner_when = sa_test_whens[i]};
    void *value = NULL;
    int rc = sa_dispatch(&composite_op, &c, SA_MODE_AUTO, &value, &(sa_future_t){0});
    cr_assert_eq(c.loop_in_start, c.outer_loop,
                 "SA-SYNC-5 (%s): the op does not run in async context on its loop", w);
    cr_assert_eq(c.inner_rc, SA_PENDING,
                 "SA-SYNC-5 (%s): an auto call from inside a sync op did not run async", w);
    cr_assert_eq(c.inner.start_loop, c.outer_loop,
                 "SA-SYNC-5 (%s): the nested call ran on another loop", w);
    cr_assert_eq(c.inner.loop_at_complete, c.outer_loop,
                 "SA-SYNC-5 (%s): the nested op completed outside async context", w);
    cr_assert_eq(rc, -9, "SA-SYNC-5 (%s): composite status %d", w, rc);
    cr_assert_eq(value, &c, "SA-SYNC-5 (%s): composite value lost", w);
  }
}

/* SA-SYNC-3: the same loop also after a sync call nested in another sync
 * call's op, which needs a private loop of its own: plain code's next sync
 * calls are back on the loop they used before. */
static void nesting_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  (void)loop;
  struct value_req *inner = arg;
  sa_complete(call, sa_dispatch(&value_op, inner, SA_MODE_SYNC, NULL, NULL), NULL);
}

static const sa_op_t nesting_op = {nesting_start, NULL};

Test(SA_SYNC_3, same_loop_after_a_nested_sync_call) {
  struct value_req first = {.when = SA_TEST_NEXT_TICK};
  cr_assert_eq(sa_dispatch(&value_op, &first, SA_MODE_SYNC, NULL, NULL), 0);
  struct value_req inner = {.when = SA_TEST_NEXT_TICK};
  cr_assert_eq(sa_dispatch(&nesting_op, &inner, SA_MODE_SYNC, NULL, NULL), 0);
  cr_assert_neq(inner.start_loop, first.start_loop, "SA-MODE-2: a nested sync call re-entered");
  for (int i = 0; i < 3; i++) {
    struct value_req req = {.when = sa_test_whens[i]};
    cr_assert_eq(sa_dispatch(&value_op, &req, SA_MODE_AUTO, NULL, &(sa_future_t){0}), 0);
    cr_assert_eq(req.start_loop, first.start_loop,
                 "SA-SYNC-3 (%s): after a nested sync call, plain code's sync call used "
                 "another loop",
                 sa_test_when_name(sa_test_whens[i]));
  }
}
