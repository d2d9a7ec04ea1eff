/* SA-ENTRY-1..5 and SA-OP-5, for every entry point: the matrix (matrix.h).
 * One test per requirement and entry point runs every cell the requirement
 * needs (context and mode x the three ways x each way of taking the result
 * x success and failure) and checks each; a failure names its cell, and
 * the other cells still run. Each test logs how many cells it checked. */
#include "matrix.h"

#include <criterion/criterion.h>
#include <stdio.h>

#define COUNT(array) (sizeof(array) / sizeof *(array))

/* SA-OP-5: the call's loop sits idle 30 ms while the thread works, then the
 * op starts a 20 ms timer. A current loop time fires it 20 ms after the
 * call, less the loop clock's resolution (1 ms) and that of a coarse clock
 * libuv may read (1 ms more); a stale one fires it at once. */
enum { IDLE_MS = 30, TIMER_MS = 20, CLOCK_SLACK_MS = 3 };

/* Which cells a requirement needs, and what each must show. */
struct plan {
  const char *requirement;
  bool async_only;      /* only async calls */
  bool idle_loops_only; /* only calls whose op starts on a loop that is not running */
  bool clock;           /* SA-OP-5's cells: later, the loop idle first */
  const enum mx_way *ways;
  size_t nways;
  const int *statuses;
  size_t nstatuses;
  bool (*check)(const struct mx_cell *cell, char *why, size_t size);
};

/* ---- the checks -------------------------------------------------------- */

/* SA-ENTRY-1: where the op ran, for the entry point and the mode. */
static bool ran_where_it_must(const struct mx_cell *c, char *why, size_t size) {
  const struct mx_work *w = &c->call.work;
  bool sync = c->context->sync;
  bool on_caller = pthread_equal(w->start_thread, c->caller);
  switch (c->entry->site) {
  case MX_ON_CALLER:
    if (!on_caller)
      return mx_why(why, size, "the op ran on another thread than the caller's");
    if (!w->start_loop)
      return mx_why(why, size, "the op was given no loop");
    if (sync && w->start_loop == c->app_loop)
      return mx_why(why, size, "the sync call ran its op on the running loop");
    if (!sync && c->app_loop && w->start_loop != c->app_loop)
      return mx_why(why, size, "the async call ran its op on another loop than the callback's");
    return true;
  case MX_ON_HOME:
    if (!pthread_equal(w->start_thread, mx_home_thread()))
      return mx_why(why, size, "the op ran off the home thread");
    return true;
  case MX_ON_POOL:
    if (sync && !on_caller)
      return mx_why(why, size, "the sync call did not call the function on its own thread");
    if (!sync && on_caller)
      return mx_why(why, size, "the async call ran the function on the caller's thread");
    return true;
  }
  return true;
}

static bool check_entry_1(const struct mx_cell *c, char *why, size_t size) {
  const struct mx_entry *e = c->entry;
  if (c->context->sync) {
    if (c->rc == SA_PENDING)
      return mx_why(why, size, "a sync call returned SA_PENDING");
    if (e->has_future && c->call.future.id != 0)
      return mx_why(why, size, "a sync call left *future at %#llx, not the null future",
                    (unsigned long long)c->call.future.id);
    if (c->completions_at_return != 1)
      return mx_why(why, size, "a sync call returned before its op completed");
  } else {
    if (c->rc != SA_PENDING)
      return mx_why(why, size, "an async call returned %d (%s), not SA_PENDING", c->rc,
                    sa_strerror(c->rc));
    if (e->has_future && c->call.future.id == 0)
      return mx_why(why, size, "an async call gave the null future");
    if (e->site == MX_ON_CALLER && c->starts_at_return != 1)
      return mx_why(why, size, "an async call returned before it started its op");
  }
  int starts = atomic_load(&c->call.work.starts);
  if (starts != 1)
    return mx_why(why, size, "the op started %d times", starts);
  return ran_where_it_must(c, why, size);
}

static bool check_entry_2(const struct mx_cell *c, char *why, size_t size) {
  if (c->rc != SA_PENDING)
    return mx_why(why, size, "the async call returned %d (%s): its result came inside the call",
                  c->rc, sa_strerror(c->rc));
  if (c->calls_at_return != 0)
    return mx_why(why, size, "the continuation was called inside the call");
  if (c->entry->has_future && c->status_at_return != SA_PENDING)
    return mx_why(why, size, "the future read %d (%s) right after the call returned",
                  c->status_at_return, sa_strerror(c->status_at_return));
  return true;
}

/* The result as the cell's way took it, if it came. */
static bool result_taken(const struct mx_cell *c, int *status, void **value) {
  if (mx_way_continues(c->way)) {
    *status = c->call.cont.status;
    *value = c->call.cont.value;
    return c->call.cont.calls > 0;
  }
  *status = c->taken_status;
  *value = c->taken_value;
  return c->taken;
}

static bool check_entry_3(const struct mx_cell *c, char *why, size_t size) {
  int status = c->rc;
  void *value = c->value_at_return;
  if (c->rc == SA_PENDING) {
    if (c->value_at_return != NULL)
      return mx_why(why, size, "*value was %p after SA_PENDING, not NULL", c->value_at_return);
    if (c->call.then_rc != 0)
      return mx_why(why, size, "sa_future_then returned %d (%s)", c->call.then_rc,
                    sa_strerror(c->call.then_rc));
    if (!result_taken(c, &status, &value))
      return mx_why(why, size, "no result within %d ms", MX_PATIENCE_MS);
  }
  void *expected = mx_expected_value(c);
  if (status != c->status || value != expected)
    return mx_why(why, size, "the result is %d, %p: the op's is %d, %p", status, value, c->status,
                  expected);
  return !c->entry->items_ok || c->entry->items_ok(&c->call, why, size);
}

static bool check_entry_4(const struct mx_cell *c, char *why, size_t size) {
  if (c->rc != SA_PENDING)
    return mx_why(why, size, "the async call returned %d (%s): nothing was delivered", c->rc,
                  sa_strerror(c->rc));
  if (mx_way_continues(c->way) && c->final_calls != 1)
    return mx_why(why, size, "the continuation was called %d times", c->final_calls);
  void *expected = mx_expected_value(c);
  if (c->entry->has_future && (c->final_status != c->status || c->final_value != expected))
    return mx_why(why, size, "once the loop had run on, the future read %d, %p, not %d, %p",
                  c->final_status, c->final_value, c->status, expected);
  if (c->close_rc != 0)
    return mx_why(why, size, "sa_loop_close returned %d (%s) once every call was delivered",
                  c->close_rc, sa_strerror(c->close_rc));
  return true;
}

/* What every future function did on the released handle, if any did wrong. */
static bool stale_handle_refused(const struct mx_cell *c, char *why, size_t size) {
  int len = snprintf(why, size, "on the released handle:");
  bool refused = true;
  for (int fn = 0; fn < MX_FUTURE_FNS && len >= 0 && (size_t)len < size; fn++) {
    int rc = c->stale_rc[fn];
    if (rc == SA_ESTALE)
      continue;
    refused = false;
    if (rc == MX_NOT_TRIED)
      len += snprintf(why + len, size - (size_t)len, " %s not tried (%s waited);",
                      mx_future_fn_names[fn], mx_future_fn_names[MX_FN_WAIT_UNTIL]);
    else
      len += snprintf(why + len, size - (size_t)len, " %s gave %d (%s);", mx_future_fn_names[fn],
                      rc, sa_strerror(rc));
  }
  return refused;
}

static bool check_entry_5(const struct mx_cell *c, char *why, size_t size) {
  if (c->rc != SA_PENDING)
    return mx_why(why, size, "the async call returned %d (%s): no future", c->rc,
                  sa_strerror(c->rc));
  if (c->release_rc != 0)
    return mx_why(why, size, "sa_future_release returned %d (%s)", c->release_rc,
                  sa_strerror(c->release_rc));
  if (!stale_handle_refused(c, why, size))
    return false;
  if (c->way != MX_STALE_DELIVERED)
    return true;
  /* The new call may hold the released record: the stale handle must not
   * reach it. */
  const struct mx_call *fresh = &c->fresh;
  void *expected = c->entry->value(fresh);
  if (fresh->cont.calls != 1 || fresh->cont.status != 0 || fresh->cont.value != expected)
    return mx_why(why, size, "the call made after the release was delivered %d times (%d, %p), "
                  "not once with 0, %p", fresh->cont.calls, fresh->cont.status,
                  fresh->cont.value, expected);
  if (atomic_load(&fresh->work.hooks) != 0)
    return mx_why(why, size, "cancelling the released handle ran the new call's cancel hook");
  return true;
}

static bool check_op_5(const struct mx_cell *c, char *why, size_t size) {
  const struct mx_work *w = &c->call.work;
  if (atomic_load(&w->completions) != 1)
    return mx_why(why, size, "the op did not complete");
  double elapsed_ms = (double)(w->done_ns - c->called_ns) / 1e6;
  if (elapsed_ms < TIMER_MS - CLOCK_SLACK_MS)
    return mx_why(why, size, "the op's %d ms timer fired %.1f ms after the call: its loop's "
                  "time was that of before the %d ms the loop sat idle", TIMER_MS, elapsed_ms,
                  IDLE_MS);
  return true;
}

/* ---- the plans --------------------------------------------------------- */

static const enum mx_way result_ways[] = {MX_RETURNED,   MX_GIVEN,           MX_THEN_BEFORE,
                                          MX_THEN_AFTER, MX_THEN_AFTER_WAIT, MX_WAIT,
                                          MX_WAIT_UNTIL, MX_STATUS};
/* SA-ENTRY-2 looks at the call as it returns: one way per call will do. */
static const enum mx_way first_look_ways[] = {MX_GIVEN, MX_THEN_BEFORE};
static const enum mx_way stale_ways[] = {MX_STALE_PENDING, MX_STALE_DELIVERED};
/* One way per context, the plainest: SA-OP-5 needs a wait per cell, not per
 * way of taking the result. */
static const enum mx_way plainest_ways[] = {MX_RETURNED, MX_GIVEN, MX_THEN_BEFORE};
static const int success_and_failure[] = {0, UV_ECONNREFUSED};
static const int success[] = {0};

static const struct plan plan_SA_ENTRY_1 = {
    .requirement = "SA-ENTRY-1",
    .ways = result_ways, .nways = COUNT(result_ways),
    .statuses = success_and_failure, .nstatuses = COUNT(success_and_failure),
    .check = check_entry_1};
static const struct plan plan_SA_ENTRY_2 = {
    .requirement = "SA-ENTRY-2", .async_only = true,
    .ways = first_look_ways, .nways = COUNT(first_look_ways),
    .statuses = success_and_failure, .nstatuses = COUNT(success_and_failure),
    .check = check_entry_2};
static const struct plan plan_SA_ENTRY_3 = {
    .requirement = "SA-ENTRY-3",
    .ways = result_ways, .nways = COUNT(result_ways),
    .statuses = success_and_failure, .nstatuses = COUNT(success_and_failure),
    .check = check_entry_3};
static const struct plan plan_SA_ENTRY_4 = {
    .requirement = "SA-ENTRY-4", .async_only = true,
    .ways = result_ways, .nways = COUNT(result_ways),
    .statuses = success_and_failure, .nstatuses = COUNT(success_and_failure),
    .check = check_entry_4};
static const struct plan plan_SA_ENTRY_5 = {
    .requirement = "SA-ENTRY-5", .async_only = true,
    .ways = stale_ways, .nways = COUNT(stale_ways),
    .statuses = success, .nstatuses = COUNT(success),
    .check = check_entry_5};
static const struct plan plan_SA_OP_5 = {
    .requirement = "SA-OP-5", .idle_loops_only = true, .clock = true,
    .ways = plainest_ways, .nways = COUNT(plainest_ways),
    .statuses = success, .nstatuses = COUNT(success),
    .check = check_op_5};

/* ---- running a plan ---------------------------------------------------- */

#define MAX_CELLS 256
static struct mx_cell cells[MAX_CELLS]; /* each used once: calls may outlive a cell's turn */

static bool context_fits(const struct plan *p, const struct mx_context *x) {
  if (p->async_only && x->sync)
    return false;
  return !p->idle_loops_only || x->sync || x->place == MX_PLAIN;
}

static bool when_fits(const struct plan *p, const struct mx_entry *e, sa_test_when when) {
  return mx_when_fits(e, when) && (!p->clock || when == SA_TEST_LATER);
}

/* The plan's cells for entry point `e`, coordinates only. */
static int lay_out(const struct plan *p, const struct mx_entry *e) {
  int n = 0;
  for (int x = 0; x < MX_CONTEXTS; x++)
    for (int t = 0; t < 3; t++)
      for (size_t w = 0; w < p->nways; w++)
        for (size_t s = 0; s < p->nstatuses; s++) {
          const struct mx_context *context = &mx_contexts[x];
          if (!context_fits(p, context) || !when_fits(p, e, sa_test_whens[t]) ||
              !mx_way_fits(e, context, p->ways[w]))
            continue;
          cr_assert_lt(n, MAX_CELLS);
          cells[n++] = (struct mx_cell){.entry = e, .context = context,
                                        .when = sa_test_whens[t], .way = p->ways[w],
                                        .status = p->statuses[s],
                                        .delay_ms = p->clock ? TIMER_MS : 0,
                                        .idle_ms = p->clock ? IDLE_MS : 0};
        }
  return n;
}

static void check_matrix(const struct plan *p, const struct mx_entry *e) {
  int n = lay_out(p, e);
  cr_assert_gt(n, 0, "%s, %s: no cell; its row and its adapter disagree", p->requirement,
               e->name);
  int failed = 0;
  for (int i = 0; i < n; i++) {
    char why[512];
    mx_run_cell(&cells[i]);
    if (!p->check(&cells[i], why, sizeof why)) {
      failed++;
      cr_expect_fail("%s %s: %s", p->requirement, cells[i].name, why);
    }
  }
  mx_finish();
  cr_log_info("matrix: %s, %s: %d cells checked, %d failed", p->requirement, e->name, n, failed);
}

/* ---- the tests: from the rows of MX_ENTRY_ROWS ------------------------- */

#define MX_IF_0(...)
#define MX_IF_1(...) __VA_ARGS__

#define MX_TEST(requirement, entry)                  \
  Test(requirement, entry, .timeout = 30) {          \
    check_matrix(&plan_##requirement, &mx_##entry); \
  }

#define MX_TESTS(entry, has_future, on_callers_loops) \
  MX_TEST(SA_ENTRY_1, entry)                          \
  MX_TEST(SA_ENTRY_2, entry)                          \
  MX_TEST(SA_ENTRY_3, entry)                          \
  MX_TEST(SA_ENTRY_4, entry)                          \
  MX_IF_##has_future(MX_TEST(SA_ENTRY_5, entry))      \
  MX_IF_##on_callers_loops(MX_TEST(SA_OP_5, entry))

MX_ENTRY_ROWS(MX_TESTS)

/* SA-ENTRY-5: handles that never named a call, one far beyond any record
 * and one near the first, once calls have been made. */
Test(SA_ENTRY_5, handles_that_never_named_a_call, .timeout = 30) {
  const sa_future_t forged[] = {{0x7fffffff12345678ull}, {0x0000dead00000001ull}};
  struct value_req req = {.when = SA_TEST_INLINE};
  sa_future_t f;
  cr_assert_eq(sa_dispatch(&value_op, &req, SA_MODE_ASYNC, NULL, &f), SA_PENDING);
  cr_assert_eq(sa_future_wait(f, NULL), 0);
  for (size_t i = 0; i < COUNT(forged); i++) {
    sa_future_t g = forged[i];
    struct cont_rec cont = {0};
    const char *id = i ? "near the first record" : "beyond every record";
    cr_assert_eq(sa_future_status(g, NULL), SA_ESTALE, "SA-ENTRY-5: status of a forged handle "
                 "(%s)", id);
    cr_assert_eq(sa_future_then(g, record_cont, &cont), SA_ESTALE, "SA-ENTRY-5: then (%s)", id);
    cr_assert_eq(sa_future_cancel(g), SA_ESTALE, "SA-ENTRY-5: cancel (%s)", id);
    cr_assert_eq(sa_future_release(g), SA_ESTALE, "SA-ENTRY-5: release (%s)", id);
    cr_assert_eq(sa_future_wait_until(g, sa_deadline_in(MX_PATIENCE_MS), NULL), SA_ESTALE,
                 "SA-ENTRY-5: wait_until (%s)", id);
    cr_assert_eq(sa_future_wait(g, NULL), SA_ESTALE, "SA-ENTRY-5: wait (%s)", id);
  }
  cr_assert_eq(sa_future_status(f, NULL), 0, "SA-ENTRY-5: a forged handle disturbed a future");
  cr_assert_eq(sa_future_release(f), 0);
}
