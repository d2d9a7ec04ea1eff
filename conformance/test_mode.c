/* SA-MODE-*: the explicit mode is always honoured. */
#include "sa_test.h"

#include <criterion/criterion.h>

/* SA-MODE-1 and SA-MODE-2: forced sync inside a loop callback, with a timer
 * on the running loop that must not fire while the sync call runs. */
struct forced_sync {
  struct value_req req[3];
  int rc[3];
  void *value[3];
  uv_loop_t *app_loop;
  uv_timer_t outer_timer;
  bool outer_fired;
  bool outer_fired_during_sync;
};

static void outer_timer_cb(uv_timer_t *timer) {
  struct forced_sync *s = timer->data;
  s->outer_fired = true;
  uv_close((uv_handle_t *)timer, NULL);
}

static void forced_sync_in_loop(uv_loop_t *loop, void *data) {
  struct forced_sync *s = data;
  s->app_loop = loop;
  uv_timer_init(loop, &s->outer_timer);
  s->outer_timer.data = s;
  uv_timer_start(&s->outer_timer, outer_timer_cb, 0, 0); /* due at once */
  for (int i = 0; i < 3; i++) {
    sa_future_t f; /* given so that an implementation going async fails cleanly */
    s->rc[i] = sa_dispatch(&value_op, &s->req[i], SA_MODE_SYNC, &s->value[i], &f);
    if (s->rc[i] == SA_PENDING)
      sa_future_release(f);
    if (s->outer_fired)
      s->outer_fired_during_sync = true;
  }
}

static void run_forced_sync(struct forced_sync *s) {
  static int marker;
  for (int i = 0; i < 3; i++)
    s->req[i] = (struct value_req){.when = sa_test_whens[i], .status = -7,
                                   .value = &marker, .delay_ms = 10};
  sa_test_in_loop(forced_sync_in_loop, s);
}

Test(SA_MODE_1, forced_sync_in_async_context_returns_result) {
  struct forced_sync s = {0};
  run_forced_sync(&s);
  for (int i = 0; i < 3; i++) {
    const char *w = sa_test_when_name(sa_test_whens[i]);
    cr_assert_neq(s.rc[i], SA_PENDING,
                  "SA-MODE-1 (%s): SA_MODE_SYNC in a loop callback returned a future", w);
    cr_assert_eq(s.rc[i], -7, "SA-MODE-1 (%s): status %d", w, s.rc[i]);
    cr_assert_eq(s.req[i].completions, 1, "SA-MODE-1 (%s): returned before completion", w);
    cr_assert_not_null(s.value[i], "SA-MODE-1 (%s): value lost", w);
  }
}

Test(SA_MODE_2, forced_sync_never_reenters_running_loop) {
  struct forced_sync s = {0};
  run_forced_sync(&s);
  for (int i = 0; i < 3; i++) {
    const char *w = sa_test_when_name(sa_test_whens[i]);
    cr_assert_neq(s.req[i].start_loop, s.app_loop,
                  "SA-MODE-2 (%s): forced sync ran on the running loop", w);
    cr_assert_eq(s.req[i].loop_at_start, s.req[i].start_loop,
                 "SA-MODE-2 (%s): the nested op is not in async context on its loop", w);
  }
  cr_assert(!s.outer_fired_during_sync,
            "SA-MODE-2: a callback of the running loop ran during a forced sync call");
  cr_assert(s.outer_fired, "SA-MODE-2: the outer loop never resumed");
}

/* SA-MODE-3: an op that makes a forced sync call of itself, `target` deep,
 * under an outermost sync call made in `mode`. */
struct nest {
  sa_mode_t mode; /* of the outermost call */
  int level;
  int target;
  int deepest_started;
  int rc_at[SA_MAX_SYNC_DEPTH + 2];
  uv_loop_t *loop_at[SA_MAX_SYNC_DEPTH + 2];
};

static void nest_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  struct nest *n = arg;
  int me = ++n->level;
  n->deepest_started = me;
  n->loop_at[me] = loop;
  if (me < n->target) {
    extern const sa_op_t nest_op;
    n->rc_at[me + 1] = sa_dispatch(&nest_op, n, SA_MODE_SYNC, NULL, NULL);
  }
  n->level--;
  sa_complete(call, -me, NULL);
}

const sa_op_t nest_op = {nest_start, NULL};

static void nest_outermost(struct nest *n) {
  n->target = SA_MAX_SYNC_DEPTH + 1;
  n->rc_at[1] = sa_dispatch(&nest_op, n, n->mode, NULL, &(sa_future_t){0});
}

static void nest_in_loop(uv_loop_t *loop, void *data) {
  (void)loop;
  nest_outermost(data);
}

/* The outermost call counts, whatever the context: SA_MAX_SYNC_DEPTH calls
 * in progress at once work, one more fails without starting its op. */
static void check_nesting(const struct nest *n, const char *where) {
  for (int k = 1; k <= SA_MAX_SYNC_DEPTH; k++) {
    cr_assert_eq(n->rc_at[k], -k, "SA-MODE-3 (%s): sync call at depth %d failed: %s", where, k,
                 sa_strerror(n->rc_at[k]));
    for (int j = 1; j < k; j++)
      cr_assert_neq(n->loop_at[j], n->loop_at[k],
                    "SA-MODE-3 (%s): depths %d and %d share a loop (re-entered)", where, j, k);
  }
  cr_assert_eq(n->rc_at[SA_MAX_SYNC_DEPTH + 1], SA_ELOOP,
               "SA-MODE-3 (%s): a sync call at depth %d returned %d, not SA_ELOOP", where,
               SA_MAX_SYNC_DEPTH + 1, n->rc_at[SA_MAX_SYNC_DEPTH + 1]);
  cr_assert_eq(n->deepest_started, SA_MAX_SYNC_DEPTH,
               "SA-MODE-3 (%s): the op beyond the bound was started", where);
}

Test(SA_MODE_3, nesting_is_bounded) {
  struct nest n = {.mode = SA_MODE_SYNC};
  nest_outermost(&n);
  check_nesting(&n, "from plain code, forced sync");
  /* The bound is per moment, not a budget: the thread still works. */
  struct value_req req = {.when = SA_TEST_LATER};
  cr_assert_eq(sa_dispatch(&value_op, &req, SA_MODE_SYNC, NULL, NULL), 0);
}

Test(SA_MODE_3, outermost_call_counts_in_every_context) {
  struct nest plain = {.mode = SA_MODE_AUTO};
  nest_outermost(&plain);
  check_nesting(&plain, "from plain code, auto");
  struct nest in_loop = {.mode = SA_MODE_SYNC};
  sa_test_in_loop(nest_in_loop, &in_loop);
  check_nesting(&in_loop, "from a loop callback, forced sync");
}

/* SA-MODE-4: forced async from plain code; N calls overlap. */
#define BATCH 8
Test(SA_MODE_4, forced_async_in_sync_context_batches) {
  for (int i = 0; i < 3; i++) {
    const char *w = sa_test_when_name(sa_test_whens[i]);
    struct value_req req[BATCH];
    sa_future_t f[BATCH];
    int completions_before = value_op_completions;
    for (int k = 0; k < BATCH; k++) {
      req[k] = (struct value_req){.when = sa_test_whens[i], .status = -k,
                                  .value = &req[k], .delay_ms = 5};
      int rc = sa_dispatch(&value_op, &req[k], SA_MODE_ASYNC, NULL, &f[k]);
      cr_assert_eq(rc, SA_PENDING,
                   "SA-MODE-4 (%s): SA_MODE_ASYNC from plain code returned %d", w, rc);
      cr_assert_eq(sa_future_status(f[k], NULL), SA_PENDING,
                   "SA-MODE-4 (%s): result delivered inside the call", w);
    }
    if (sa_test_whens[i] != SA_TEST_INLINE)
      cr_assert_eq(value_op_completions, completions_before,
                   "SA-MODE-4 (%s): calls ran one after another, not together", w);
    for (int k = BATCH - 1; k >= 0; k--) {
      void *value = NULL;
      int rc = sa_future_wait(f[k], &value);
      cr_assert_eq(rc, -k, "SA-MODE-4 (%s): wait on call %d returned %d", w, k, rc);
      cr_assert_eq(value, &req[k]);
      cr_assert_not_null(req[k].loop_at_start,
                         "SA-MODE-4 (%s): op did not run in async context", w);
      cr_assert_eq(sa_future_release(f[k]), 0);
    }
    cr_assert_null(sa_current_loop(), "SA-MODE-4: left in async context after the waits");
  }
}

struct explicit_same {
  int rc_async;
  sa_future_t f;
  struct value_req req;
};

static void explicit_async_in_loop(uv_loop_t *loop, void *data) {
  (void)loop;
  struct explicit_same *s = data;
  s->rc_async = sa_dispatch(&value_op, &s->req, SA_MODE_ASYNC, NULL, &s->f);
}

Test(SA_MODE_5, invalid_mode_rejected) {
  struct value_req req = {.when = SA_TEST_INLINE};
  sa_future_t f;
  void *value;
  const int bad_modes[] = {3, 42, -1};
  for (size_t k = 0; k < 3; k++) {
    int rc = sa_dispatch(&value_op, &req, (sa_mode_t)bad_modes[k], &value, &f);
    cr_assert_eq(rc, SA_EINVAL, "SA-MODE-5: mode %d returned %d, not SA_EINVAL",
                 bad_modes[k], rc);
  }
  cr_assert_eq(req.starts, 0, "SA-MODE-5: an invalid mode started the op");
  /* The valid explicit modes, in the context that matches them, work. */
  cr_assert_eq(sa_dispatch(&value_op, &req, SA_MODE_SYNC, &value, &f), 0);
  struct explicit_same s = {.req = {.when = SA_TEST_INLINE}};
  sa_test_in_loop(explicit_async_in_loop, &s);
  cr_assert_eq(s.rc_async, SA_PENDING);
  cr_assert_eq(sa_future_release(s.f), 0);
}
