/*
 * The model: for each thing a program does, the set of outcomes SPEC.md
 * allows, and the checks.
 *
 * Time is one global counter (tick()), taken before and after every API
 * call and at every event the ops and continuations see, so "A happened
 * before B" is "A's end < B's begin". What a call may deliver is decided
 * from what happened to it:
 *
 *   the op's own completion (status, value: the op's record), always;
 *   SA_ETIMEDOUT, NULL if it had a deadline or a wait with a deadline began
 *     on it, unless the op completed before that could take effect;
 *   SA_ECANCELED, NULL if its private loop went away (thread exit,
 *     sa_thread_cleanup) or its home stopped, unless the op completed
 *     first (a result the op gave stands).
 *
 * The first outcome that shows the result (a sync return, a continuation,
 * a status or wait) fixes it; every later one must show the same. Where
 * timing decides (a cancel racing completion, a release racing a wait)
 * every outcome SPEC allows is accepted, and nothing more. Where SPEC is
 * silent or ambiguous the model accepts every reasonable answer; those
 * places say so.
 */
#include "model.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

tick_t tick(void) {
  atomic_fetch_add(&run.progress, 1);
  return atomic_fetch_add(&run.clock, 1) + 1;
}

uint64_t now_ms(void) { return uv_hrtime() / 1000000u; }

/* One lock for the records. A fork child is single-threaded and may have
 * inherited the lock held: it takes none. */
void model_lock(void) {
  if (!run.in_child)
    pthread_mutex_lock(&run.mu);
}

void model_unlock(void) {
  if (!run.in_child)
    pthread_mutex_unlock(&run.mu);
}

/* ---- failures ------------------------------------------------------------- */

/* write(2), not stdio: a fork child may inherit a stdio lock held. */
static void say(const char *text) {
  size_t n = strlen(text);
  while (n > 0) {
    ssize_t w = write(STDERR_FILENO, text, n);
    if (w <= 0)
      return;
    text += w;
    n -= (size_t)w;
  }
}

void fail(int action, const char *check, const char *expect, const char *fmt, ...) {
  struct verdict *v = run.verdict;
  char detail[sizeof v->detail];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(detail, sizeof detail, fmt, ap);
  va_end(ap);
  int n = atomic_fetch_add(&v->failures, 1);
  int pass = V_PASS;
  if (atomic_compare_exchange_strong(&v->failed, &pass, V_FAILED)) {
    v->action = action;
    snprintf(v->check, sizeof v->check, "%s", check);
    snprintf(v->detail, sizeof v->detail, "%s", detail);
    snprintf(v->expect, sizeof v->expect, "%s", expect ? expect : "");
  }
  if (run.quiet || n >= 20)
    return;
  char line[sizeof detail + 160];
  snprintf(line, sizeof line, "model: seed %llu: FAILED %s%s: %s (action %d)\n",
           (unsigned long long)run.prog->seed, run.in_child ? "[fork child] " : "", check,
           detail, action);
  say(line);
}

/* ---- sets of allowed codes -------------------------------------------------- */

struct allow {
  int n;
  int codes[MAX_ALLOWED];
};

static void allow(struct allow *a, int code) {
  for (int i = 0; i < a->n; i++)
    if (a->codes[i] == code)
      return;
  if (a->n < MAX_ALLOWED)
    a->codes[a->n++] = code;
}

static bool allows(const struct allow *a, int code) {
  for (int i = 0; i < a->n; i++)
    if (a->codes[i] == code)
      return true;
  return false;
}

static const char *codes_text(const struct allow *a, char *buf, size_t size) {
  size_t used = 0;
  buf[0] = 0;
  for (int i = 0; i < a->n && used < size; i++)
    used += (size_t)snprintf(buf + used, size - used, "%s%d", i ? ", " : "", a->codes[i]);
  return buf;
}

void note_outcome(int action, int rc, const int *allowed, int n) {
  if (action < 0 || action >= MAX_ACTIONS)
    return;
  struct outcome *o = &run.verdict->outcome[action];
  o->ran = true;
  o->rc = rc;
  o->nallowed = n < MAX_ALLOWED ? n : MAX_ALLOWED;
  memcpy(o->allowed, allowed, (size_t)o->nallowed * sizeof *allowed);
}

/* rc must be one of `a`; else a failure named `check`. */
static void expect_code(const struct obs *o, const struct allow *a, const char *check,
                        const char *what) {
  note_outcome(o->action, o->rc, a->codes, a->n);
  if (allows(a, o->rc))
    return;
  char buf[96];
  fail(o->action, check, NULL, "%s returned %d (%s), allowed {%s}", what, o->rc,
       sa_strerror(o->rc), codes_text(a, buf, sizeof buf));
}

void model_simple(const struct obs *o, const int *allowed, int n, const char *check) {
  struct allow a = {0};
  for (int i = 0; i < n; i++)
    allow(&a, allowed[i]);
  expect_code(o, &a, check, check);
}

/* ---- calls --------------------------------------------------------------- */

struct call_rec *model_new_call(int action, int slot, int owner, int kind, int mode) {
  struct call_rec *c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  /* Whole before other threads can see it in run.calls. */
  c->slot = slot;
  c->action = action;
  c->owner = owner;
  c->kind = kind;
  c->mode = mode;
  c->in_child = run.in_child;
  c->home = -1;
  c->deadline = SA_NO_DEADLINE;
  for (int k = 0; k < MAX_ITEMS; k++) {
    c->op[k].call = c;
    c->op[k].item = k;
  }
  c->blk.call = c;
  model_lock();
  if (run.ncalls == MAX_CALLS) {
    model_unlock();
    free(c);
    return NULL;
  }
  c->index = run.ncalls;
  run.calls[run.ncalls++] = c;
  if (slot >= 0)
    run.slots[slot] = c;
  model_unlock();
  return c;
}

static bool single_op(const struct call_rec *c) {
  return c->kind == ACT_DISPATCH || c->kind == ACT_DISPATCH_THEN ||
         c->kind == ACT_DISPATCH_UNTIL;
}

static tick_t op_done(const struct op_rec *op) { return atomic_load(&op->done_tick); }

static bool op_started(const struct op_rec *op) { return atomic_load(&op->starts) > 0; }

static bool op_result_is(const struct op_rec *op, int status, void *value) {
  return op_done(op) && op->done_status == status && op->done_value == value;
}

/* When the dispatcher certainly had the call's completion (0: not yet, or
 * unknown): its op called sa_complete. A blocking function's return
 * reaches the dispatcher only when the call's loop runs; a batch completes
 * when its items say so, which the batch checks itself. */
static tick_t completed_at(const struct call_rec *c) {
  if (c->kind == ACT_CALL_BLOCKING)
    return 0;
  if (c->kind == ACT_BATCH)
    return c->nops == 0 ? c->made_begin : 0;
  return op_done(&c->op[0]);
}

/* When the call was certainly still pending until (0: still is): a
 * blocking call cannot end before its function returns, nor a batch before
 * its first item does. */
static tick_t pending_until(const struct call_rec *c) {
  if (c->kind == ACT_CALL_BLOCKING)
    return atomic_load(&c->blk.returned_tick);
  if (c->kind != ACT_BATCH || c->nops == 0)
    return completed_at(c);
  tick_t first = 0;
  for (int k = 0; k < c->nops; k++) {
    tick_t d = op_done(&c->op[k]);
    if (d && (!first || d < first))
      first = d;
  }
  return first;
}

static int blocking_status(int status) { return status > 0 ? SA_EINVAL : status; }

/* SA_ETIMEDOUT may be the call's result [SA-DL-1, SA-DL-3]: its own
 * deadline passed, or a wait with a deadline timed it out. */
static bool timeout_ok(const struct call_rec *c) {
  tick_t done = completed_at(c);
  if (c->timeout_from && (!done || done > c->timeout_from))
    return true;
  if (c->deadline == SA_NO_DEADLINE)
    return false;
  /* A result given inside start stands, even past a deadline; one given
   * before the deadline is the result. One given after it but before the
   * time-out took effect may stand too: either is accepted. */
  const struct op_rec *op = &c->op[0];
  return !done || (!op->done_in_start && op->done_ns >= c->deadline);
}

/* SA_ECANCELED may be the call's result, given by the dispatcher itself. */
static bool cancel_ok(const struct call_rec *c) {
  tick_t done = completed_at(c);
  if (c->kind == ACT_CALL_BLOCKING) /* waited for when its loop goes away [SA-THR-2] */
    done = atomic_load(&c->blk.returned_tick);
  /* Thread exit: with SA_ECANCELED unless its op completed [SA-THR-2]. A
   * home call's op completes on the home, its result on its way to the
   * exiting thread: SPEC does not say whether it stands. Both accepted. */
  if (c->teardown_from && (c->kind == ACT_HOME_CALL || !done || done > c->teardown_from))
    return true;
  /* Home stop: a call that finished keeps its result [SA-HOME-4]. */
  if (c->stop_from && (!done || done > c->stop_from))
    return true;
  /* A blocking function cancelled before it started [SA-BLK-4]. */
  return c->kind == ACT_CALL_BLOCKING && c->cancel_from && atomic_load(&c->blk.runs) == 0;
}

/* SA-BAT-1, SA-BAT-3: the batch's result and its items. */
static const char *batch_why_not(const struct call_rec *c, int status, void *value) {
  const sa_batch_item_t *items = c->items;
  if (c->nops == 0)
    return status == 0 && value == NULL ? NULL : "SA-BAT-1: an empty batch gives 0, NULL";
  if (c->batch_kind == SA_BATCH_ALL) {
    const sa_batch_item_t *first = NULL;
    for (int k = 0; k < c->nops; k++) {
      if (!op_result_is(&c->op[k], items[k].status, items[k].value))
        return "SA-BAT-1: an item's status and value are not its op's";
      if (!first && items[k].status < 0)
        first = &items[k];
    }
    if (status != (first ? first->status : 0) || value != (void *)first)
      return "SA-BAT-1: not the first error in the items' order (its item), or 0 and NULL";
    return NULL;
  }
  for (int w = 0; w < c->nops; w++) {
    if (value != (void *)&items[w])
      continue;
    if (status != items[w].status || !op_result_is(&c->op[w], items[w].status, items[w].value))
      return "SA-BAT-3: the winner's status and value are not its op's";
    for (int k = 0; k < c->nops; k++) {
      if (k == w)
        continue;
      if (items[k].status != SA_ECANCELED || items[k].value != NULL)
        return "SA-BAT-3: a loser's item is not SA_ECANCELED, NULL";
      if (c->op[k].spec.hook && op_started(&c->op[k]) && !op_done(&c->op[k]))
        return "SA-BAT-3: the batch completed before a loser with a hook did";
    }
    return NULL;
  }
  return "SA-BAT-3: the value is not one of the items";
}

/* A deadline passes first when the op, left alone, would complete this long
 * after it: then the result is SA_ETIMEDOUT [SA-DL-1, SA-DL-3], whatever the
 * implementation's timer resolution. Only on a loop whose time is current
 * when the op starts (SA-OP-5: a private loop): an op started in a callback
 * of a running loop times itself from the loop's cached time, and if the
 * loop is then held up its timer may be due, and fire, before the
 * deadline's. */
#define DEADLINE_GRACE_NS (5 * 1000000u)

static bool deadline_passed_first(const struct call_rec *c) {
  const struct op_rec *op = &c->op[0];
  if (c->deadline == SA_NO_DEADLINE || c->app_loop || op->spec.when != WHEN_LATER ||
      !op_done(op) || op->done_by_hook)
    return false;
  uint64_t late = c->deadline + DEADLINE_GRACE_NS;
  return op->start_ns + op->spec.ms * 1000000u >= late && op->done_ns >= late;
}

/* Why (status, value) cannot be the result of call c, or NULL if it can. */
static const char *result_why_not(const struct call_rec *c, int status, void *value) {
  if (status == SA_ETIMEDOUT && value == NULL && timeout_ok(c))
    return NULL;
  if (status == SA_ECANCELED && value == NULL && cancel_ok(c))
    return NULL;
  if (deadline_passed_first(c))
    return "SA-DL-3: the deadline passed well before the op completed: SA_ETIMEDOUT";
  switch (c->kind) {
  case ACT_CALL_BLOCKING:
    if (atomic_load(&c->blk.returned_tick) && status == blocking_status(c->blk.status) &&
        (value == &c->blk || c->blk.status > 0))
      return NULL;
    return "SA-ENTRY-3: not the blocking function's status and value";
  case ACT_BATCH:
    return batch_why_not(c, status, value);
  default:
    return op_result_is(&c->op[0], status, value) ? NULL
                                                   : "SA-ENTRY-3: not the op's status and value";
  }
}

/* The codes a result of c may have now, for the reproduction. */
static void result_codes(const struct call_rec *c, struct allow *a) {
  if (c->res_known) {
    allow(a, c->res_status);
    return;
  }
  if (c->kind == ACT_CALL_BLOCKING && atomic_load(&c->blk.returned_tick))
    allow(a, blocking_status(c->blk.status));
  else if (c->kind != ACT_BATCH && c->kind != ACT_CALL_BLOCKING && op_done(&c->op[0]))
    allow(a, c->op[0].done_status);
  if (timeout_ok(c))
    allow(a, SA_ETIMEDOUT);
  if (cancel_ok(c))
    allow(a, SA_ECANCELED);
}

/* Something showed the call's result: check it, or that it is the one
 * shown before [SA-ENTRY-3, SA-ENTRY-4]. */
static void observe_result(struct call_rec *c, int action, tick_t at, int status, void *value,
                           const char *what) {
  if (c->res_known) {
    if (status != c->res_status || value != c->res_value)
      fail(action, "SA-ENTRY-4 one result per call", NULL,
           "%s gave %d (%s) value %p for call %d, which already gave %d (%s) value %p", what,
           status, sa_strerror(status), value, c->index, c->res_status,
           sa_strerror(c->res_status), c->res_value);
    if (at < c->res_by)
      c->res_by = at;
    return;
  }
  const char *why = result_why_not(c, status, value);
  char expect[64] = "";
  if (why && c->slot >= 0 && c->f.id) /* for the reproduction */
    snprintf(expect, sizeof expect, "sa_future_status(f[%d], NULL) != %d", c->slot, status);
  if (why)
    fail(action, "SA-ENTRY-3 the call's result", expect,
         "%s gave %d (%s) value %p for call %d: %s", what, status, sa_strerror(status), value,
         c->index, why);
  /* SA-DL-3: a time-out is given once the hook has run and the op completed. */
  const struct op_rec *op = &c->op[0];
  if (status == SA_ETIMEDOUT && !why && single_op(c) && op->spec.hook && op_started(op) &&
      !op_done(op))
    fail(action, "SA-DL-3 the op completed before its time-out is given", NULL,
         "%s gave SA_ETIMEDOUT for call %d while its op (with a hook) was still running", what,
         c->index);
  c->res_known = true;
  c->res_status = status;
  c->res_value = value;
  c->res_by = at;
}

/* ---- entry points ----------------------------------------------------------- */

static bool has_future(const struct call_rec *c) { return c->kind != ACT_DISPATCH_THEN; }

static void expect_not_started(const struct call_rec *c, const struct obs *o, const char *check) {
  for (int k = 0; k < c->nops; k++)
    if (op_started(&c->op[k]))
      fail(o->action, check, NULL, "the op of call %d was started", c->index);
  if (c->kind == ACT_CALL_BLOCKING && atomic_load(&c->blk.runs))
    fail(o->action, check, NULL, "the blocking function of call %d ran", c->index);
}

static void entry_sync(struct call_rec *c, const struct obs *o, sa_future_t f) {
  struct allow a = {0};
  result_codes(c, &a);
  note_outcome(o->action, o->rc, a.codes, a.n);
  if (o->rc == SA_PENDING) {
    fail(o->action, "SA-ENTRY-1 a sync call blocks", NULL,
         "%s in a sync call returned SA_PENDING", act_name((enum act)c->kind));
    return;
  }
  if (f.id != 0 && has_future(c))
    fail(o->action, "SA-ENTRY-1 a sync call gives the null future", NULL,
         "%s in a sync call set *future", act_name((enum act)c->kind));
  observe_result(c, o->action, o->end, o->rc, o->value, "the sync call");
  const struct op_rec *op = &c->op[0];
  if (c->kind == ACT_DISPATCH_UNTIL && o->rc == SA_ETIMEDOUT) {
    if (o->end_ns < c->deadline)
      fail(o->action, "SA-DL-1 no time-out before the deadline", NULL,
           "sa_dispatch_until returned SA_ETIMEDOUT %.3f ms before its deadline",
           (double)(c->deadline - o->end_ns) / 1e6);
    if (op->spec.hook && (!op_done(op) || atomic_load(&op->hooks) != 1))
      fail(o->action, "SA-DL-1 the hook ran, the op completed", NULL,
           "a timed-out sync call with a hook returned with its hook run %d times and its "
           "op %s",
           atomic_load(&op->hooks), op_done(op) ? "completed" : "still running");
  } else if (single_op(c) || c->kind == ACT_HOME_CALL) {
    if (!op_done(op))
      fail(o->action, "SA-SYNC-1 the op ran to completion", NULL,
           "%s returned before its op completed", act_name((enum act)c->kind));
  }
  if (c->kind == ACT_CALL_BLOCKING &&
      (atomic_load(&c->blk.runs) != 1 || atomic_load(&c->blk.run_actor) != c->owner + 1))
    fail(o->action, "SA-BLK-1 called directly on the calling thread", NULL,
         "the blocking function ran %d times, last on actor %d", atomic_load(&c->blk.runs),
         atomic_load(&c->blk.run_actor) - 1);
}

static void entry_async(struct call_rec *c, const struct obs *o, sa_future_t f) {
  int pending[] = {SA_PENDING};
  note_outcome(o->action, o->rc, pending, 1);
  if (o->rc != SA_PENDING) {
    fail(o->action, "SA-ENTRY-1 an async call returns SA_PENDING", NULL,
         "%s in an async call returned %d (%s)", act_name((enum act)c->kind), o->rc,
         sa_strerror(o->rc));
    return;
  }
  c->async = true;
  c->f = f;
  if (o->value != NULL)
    fail(o->action, "SA-ENTRY-3 *value is NULL after SA_PENDING", NULL,
         "%s returned SA_PENDING with *value %p", act_name((enum act)c->kind), o->value);
  if (has_future(c) && f.id == 0)
    fail(o->action, "SA-ENTRY-1 an async call gives a future", NULL,
         "%s returned SA_PENDING with the null future", act_name((enum act)c->kind));
  if (single_op(c) && atomic_load(&c->op[0].starts) != 1)
    fail(o->action, "SA-ASYNC-1 the op starts before the call returns", NULL,
         "%s returned SA_PENDING with its op started %d times", act_name((enum act)c->kind),
         atomic_load(&c->op[0].starts));
  if (has_future(c) && f.id != 0 && o->probe != SA_PENDING)
    fail(o->action, "SA-ENTRY-2 no delivery before the call returned", NULL,
         "sa_future_status right after %s returned %d (%s), not SA_PENDING",
         act_name((enum act)c->kind), o->probe, sa_strerror(o->probe));
  if (c->kind == ACT_DISPATCH_THEN && atomic_load(&c->conts) != 0)
    fail(o->action, "SA-ASYNC-5 the continuation comes after the call", NULL,
         "sa_dispatch_then called its continuation before it returned");
}

void model_entry_returned(struct call_rec *c, const struct obs *o, enum expect e,
                          sa_future_t f) {
  model_lock();
  c->made_begin = o->begin;
  struct allow a = {0};
  switch (e) {
  case EXPECT_SYNC:
    entry_sync(c, o, f);
    break;
  case EXPECT_ASYNC:
    entry_async(c, o, f);
    break;
  case EXPECT_INVALID:
    allow(&a, SA_EINVAL);
    expect_code(o, &a, "SA-MODE-5 an invalid mode", act_name((enum act)c->kind));
    expect_not_started(c, o, "SA-MODE-5 nothing started");
    break;
  case EXPECT_TEARDOWN:
    allow(&a, SA_ECANCELED);
    expect_code(o, &a, "SA-THR-2 no call on a loop going away", act_name((enum act)c->kind));
    expect_not_started(c, o, "SA-THR-2 no call on a loop going away");
    break;
  case EXPECT_EPERM:
    allow(&a, SA_EPERM);
    expect_code(o, &a, "SA-THR-3 a home inherited by a fork child",
                act_name((enum act)c->kind));
    break;
  }
  model_unlock();
}

/* ---- future functions ------------------------------------------------------ */

static bool released_before(const struct call_rec *c, tick_t t) {
  return atomic_load(&c->releases) > 0 && c->released_end < t;
}

/* A release may have taken effect before the action at [begin, end] ended. */
static bool release_may_precede(const struct call_rec *c, tick_t end) {
  return (atomic_load(&c->releases) > 0 && c->released_begin < end) ||
         atomic_load(&c->releasing) > 0;
}

void model_future_begin(enum act kind, struct call_rec *c, tick_t begin) {
  if (!c || !c->async || c->f.id == 0)
    return;
  model_lock();
  bool stale = released_before(c, begin) || (run.in_child && !c->in_child);
  switch (kind) {
  case ACT_RELEASE:
    atomic_fetch_add(&c->releasing, 1);
    break;
  case ACT_CANCEL:
    if (!stale && !c->cancel_from)
      c->cancel_from = begin;
    break;
  case ACT_WAIT_UNTIL:
    if (!stale && !c->timeout_from)
      c->timeout_from = begin;
    break;
  default:
    break;
  }
  model_unlock();
}

/* The thread acting is the loop thread of c, and that loop is running
 * there: a loop actor's own call of its current session. */
static bool loop_running_here(const struct call_rec *c, int actor) {
  if (actor != c->owner || !c->app_loop || run.in_child)
    return false;
  const struct actor_rt *a = &run.actors[actor];
  return a->in_session && c->session == a->session;
}

static void then_codes(const struct call_rec *c, const struct obs *o, struct allow *a) {
  bool own = o->actor == c->owner;
  if (!own)
    allow(a, SA_EPERM);
  /* SA-LOOP-2, SA-THR-2: no loop left to run it. */
  if (c->loop_closed || c->owner_gone)
    allow(a, SA_ECANCELED);
  if (c->then_attached)
    allow(a, SA_EALREADY);
  if (a->n == 0)
    allow(a, 0);
}

static bool hookless(const struct call_rec *c) {
  return (single_op(c) || c->kind == ACT_HOME_CALL) && !c->op[0].spec.hook;
}

static void cancel_codes(const struct call_rec *c, const struct obs *o, struct allow *a) {
  if (!hookless(c) || o->actor != c->owner) {
    allow(a, 0); /* SA-CAN-3: 0 from another thread */
    return;
  }
  /* SA-FUT-8: SA_ENOTSUP on the call's own thread while it runs. Once it
   * may have ended (completed, or timed out and delivered) both clauses
   * apply; and for a home call "the call's own thread" may be the home's. */
  allow(a, SA_ENOTSUP);
  bool may_have_ended = op_done(&c->op[0]) || c->res_known || c->deadline != SA_NO_DEADLINE ||
                        c->timeout_from || c->kind == ACT_HOME_CALL;
  if (may_have_ended)
    allow(a, 0);
}

/* A wait returns the result, or times out at its deadline [SA-FUT-3,
 * SA-FUT-5, SA-DL-3]; nothing else (the caller handled SA_ESTALE and
 * SA_EDEADLK where they are allowed). */
static void wait_result(struct call_rec *c, const struct obs *o, uint64_t deadline,
                        bool stale_ok, struct allow *a) {
  result_codes(c, a);
  bool timed_out = o->rc == SA_ETIMEDOUT && o->value == NULL;
  if (timed_out && deadline != SA_NO_DEADLINE && o->end_ns >= deadline) {
    allow(a, SA_ETIMEDOUT);
    return;
  }
  if (timed_out && deadline != SA_NO_DEADLINE && result_why_not(c, o->rc, o->value))
    fail(o->action, "SA-DL-3 no time-out before the deadline", NULL,
         "sa_future_wait_until returned SA_ETIMEDOUT %.3f ms before its deadline",
         (double)(deadline - o->end_ns) / 1e6);
  else if (o->rc == SA_PENDING || o->rc == SA_EDEADLK || o->rc == SA_ESTALE)
    fail(o->action,
         stale_ok ? "SA-FUT-6 a wait returns when its future is released"
                  : "SA-FUT-3 a wait returns the result",
         NULL, "%s returned %d (%s) for call %d",
         act_name(deadline == SA_NO_DEADLINE ? ACT_WAIT : ACT_WAIT_UNTIL), o->rc,
         sa_strerror(o->rc), c->index);
  else
    observe_result(c, o->action, o->end, o->rc, o->value, "the wait");
}

static void status_result(struct call_rec *c, const struct obs *o, struct allow *a) {
  bool delivered = c->res_known && c->res_by < o->begin;
  if (!delivered)
    allow(a, SA_PENDING);
  result_codes(c, a);
  if (o->rc == SA_PENDING) {
    if (delivered)
      fail(o->action, "SA-FUT-1 status after delivery", NULL,
           "sa_future_status returned SA_PENDING for call %d, delivered before", c->index);
    return;
  }
  observe_result(c, o->action, o->end, o->rc, o->value, "sa_future_status");
}

static void release_done(struct call_rec *c, const struct obs *o) {
  if (o->rc == 0) {
    if (atomic_fetch_add(&c->releases, 1) > 0)
      fail(o->action, "SA-FUT-6 a second release is SA_ESTALE", NULL,
           "two releases of call %d's future returned 0", c->index);
    c->released_begin = o->begin;
    c->released_end = o->end;
  }
}

/* The rules for a future function on a live (not released, not inherited)
 * future. */
static void live_future_action(enum act kind, struct call_rec *c, const struct obs *o,
                               uint64_t deadline) {
  struct allow a = {0};
  bool stale_ok = kind == ACT_RELEASE
                      ? atomic_load(&c->releases) > 0 || atomic_load(&c->releasing) > 1
                      : release_may_precede(c, o->end);
  if (stale_ok)
    allow(&a, SA_ESTALE);
  if (o->rc == SA_ESTALE && stale_ok) {
    c->stale_seen = true;
    note_outcome(o->action, o->rc, a.codes, a.n);
    return;
  }
  switch (kind) {
  case ACT_STATUS:
    status_result(c, o, &a);
    note_outcome(o->action, o->rc, a.codes, a.n);
    return;
  case ACT_THEN:
    then_codes(c, o, &a);
    expect_code(o, &a, "SA-FUT-2 sa_future_then", "sa_future_then");
    if (o->rc == 0) {
      c->then_attached = true;
      c->then_slice = run.actors[o->actor].slice;
    }
    return;
  case ACT_WAIT:
  case ACT_WAIT_UNTIL:
    if (loop_running_here(c, o->actor)) {
      /* SA-FUT-4; a wait that finds the result delivered may return it. */
      allow(&a, SA_EDEADLK);
      if (o->rc == SA_EDEADLK) {
        note_outcome(o->action, o->rc, a.codes, a.n);
        return;
      }
    }
    wait_result(c, o, kind == ACT_WAIT_UNTIL ? deadline : SA_NO_DEADLINE, stale_ok, &a);
    note_outcome(o->action, o->rc, a.codes, a.n);
    return;
  case ACT_RELEASE:
    allow(&a, 0);
    expect_code(o, &a, "SA-FUT-6 sa_future_release", "sa_future_release");
    release_done(c, o);
    return;
  case ACT_CANCEL:
    cancel_codes(c, o, &a);
    expect_code(o, &a, "SA-FUT-8 sa_future_cancel", "sa_future_cancel");
    return;
  default:
    return;
  }
}

void model_future_action(enum act kind, struct call_rec *c, const struct obs *o,
                         uint64_t deadline) {
  model_lock();
  struct allow a = {0};
  if (!c || !c->async || c->f.id == 0) { /* no call, a sync call, or sa_dispatch_then */
    allow(&a, SA_EINVAL);
    expect_code(o, &a, "SA-FUT-6 the null future is SA_EINVAL", act_name(kind));
  } else if (run.in_child && !c->in_child) {
    allow(&a, SA_ESTALE);
    expect_code(o, &a, "SA-THR-3 a future inherited by a fork child", act_name(kind));
  } else if (released_before(c, o->begin)) {
    allow(&a, SA_ESTALE);
    /* SPEC also says a continuation from another thread is SA_EPERM. */
    if (kind == ACT_THEN && o->actor != c->owner)
      allow(&a, SA_EPERM);
    expect_code(o, &a, "SA-FUT-6 a released future is SA_ESTALE", act_name(kind));
  } else {
    live_future_action(kind, c, o, deadline);
  }
  if (kind == ACT_RELEASE && c && c->async && c->f.id)
    atomic_fetch_sub(&c->releasing, 1);
  model_unlock();
}

/* ---- deliveries ---------------------------------------------------------- */

/* SA-ASYNC-6: calls made on one loop whose ops completed inside start,
 * their continuations attached before the loop ran on (in one slice), are
 * delivered in the order they were made. On the loop's thread. */
static void check_order(const struct call_rec *c, int action) {
  if (!c->app_loop || c->slot < 0 || !single_op(c) || !c->op[0].done_in_start ||
      c->then_slice != c->slice)
    return;
  struct actor_rt *a = &run.actors[c->owner];
  if (a->order_slice == c->slice && a->order_made > c->made_begin)
    fail(action, "SA-ASYNC-6 inline completions delivered in call order", NULL,
         "call %d was delivered after a call made later on the same loop", c->index);
  if (a->order_slice != c->slice || a->order_made < c->made_begin) {
    a->order_slice = c->slice;
    a->order_made = c->made_begin;
  }
}

static bool continuation_expected(const struct call_rec *c) {
  return c->kind == ACT_DISPATCH_THEN || (c->then_attached && atomic_load(&c->releases) == 0);
}

void model_delivery(struct call_rec *c, sa_future_t f, int status, void *value) {
  uv_loop_t *current = sa_current_loop();
  model_lock();
  tick_t now = tick();
  int n = atomic_fetch_add(&c->conts, 1) + 1;
  int action = c->action;
  if (c->sync_expected)
    fail(action, "SA-ASYNC-5 no continuation for a sync call", NULL,
         "the continuation of sync call %d was called", c->index);
  else if (n > 1)
    fail(action, "SA-ENTRY-4 delivered exactly once", NULL,
         "the continuation of call %d was called %d times", c->index, n);
  if (t_actor - 1 != c->owner)
    fail(action, "SA-ASYNC-2 delivered on the loop's thread", NULL,
         "the continuation of call %d ran on actor %d's thread, not on actor %d's", c->index,
         t_actor - 1, c->owner);
  if (!current)
    fail(action, "SA-FUT-2 a continuation runs in async context", NULL,
         "sa_current_loop() is NULL in the continuation of call %d", c->index);
  else if (c->loop && current != c->loop)
    fail(action, "SA-FUT-2 a continuation runs on the call's loop", NULL,
         "the continuation of call %d ran in async context on %p, not on %p", c->index,
         (void *)current, (void *)c->loop);
  if (t_inside == c)
    fail(action, "SA-ASYNC-3 no delivery inside the call", NULL,
         "the continuation of call %d ran inside %s", c->index,
         atomic_load(&c->in_entry) ? act_name((enum act)c->kind) : "sa_future_then");
  if (c->kind == ACT_DISPATCH_THEN ? f.id != 0 : f.id != c->f.id)
    fail(action, "SA-ASYNC-5 the continuation's future", NULL,
         "the continuation of call %d got future %#llx", c->index, (unsigned long long)f.id);
  if (t_blocked_loop && current == t_blocked_loop)
    fail(action, "SA-MODE-2 no callback of the blocked loop", NULL,
         "the continuation of call %d ran while a forced sync call blocked its loop",
         c->index);
  /* SA-FUT-7: released while certainly pending, the continuation is not
   * called. (Released after delivery with a continuation queued: SPEC is
   * silent; either is accepted.) */
  tick_t done = pending_until(c);
  if (atomic_load(&c->releases) > 0 && c->released_end < now &&
      (!done || done > c->released_begin))
    fail(action, "SA-FUT-7 no continuation after a release", NULL,
         "the continuation of call %d ran after its future was released while pending",
         c->index);
  check_order(c, action);
  observe_result(c, action, now, status, value, "the continuation");
  model_unlock();
}

/* ---- ops ------------------------------------------------------------------ */

bool is_app_loop(const uv_loop_t *loop) {
  for (int a = 0; a < MAX_ACTORS; a++)
    if (loop == &run.actors[a].loops[0] || loop == &run.actors[a].loops[1])
      return true;
  return false;
}

/* The home thread and loop of call c's home: the first op there names them. */
static void check_home_op(const struct op_rec *op, const char *what) {
  const struct call_rec *c = op->call;
  struct home_rt *h = &run.homes[c->home];
  uintptr_t self = (uintptr_t)pthread_self(), none = 0;
  if (t_actor != 0)
    fail(c->action, "SA-HOME-1 ops run on the home thread", NULL,
         "the %s of home call %d ran on actor %d's thread", what, c->index, t_actor - 1);
  else if (!atomic_compare_exchange_strong(&h->thread, &none, self) && none != self)
    fail(c->action, "SA-HOME-3 one home thread", NULL,
         "the %s of home call %d ran on another thread than the home's first op", what,
         c->index);
}

void model_op_started(struct op_rec *op) {
  uv_loop_t *current = sa_current_loop();
  model_lock();
  struct call_rec *c = op->call;
  int action = c->action;
  if (atomic_load(&op->starts) > 1)
    fail(action, "SA-OP-1 started exactly once", NULL, "the op of call %d started twice",
         c->index);
  if (c->kind == ACT_HOME_CALL) {
    check_home_op(op, "op");
    uintptr_t none = 0, loop = (uintptr_t)op->loop;
    if (!atomic_compare_exchange_strong(&run.homes[c->home].loop, &none, loop) && none != loop)
      fail(action, "SA-HOME-1 ops run on the home loop", NULL,
           "home call %d's op got another loop than the home's first op", c->index);
  } else {
    if (t_actor - 1 != c->owner)
      fail(action, "SA-OP-1 the op starts on the calling thread", NULL,
           "the op of call %d started on actor %d's thread, not on actor %d's", c->index,
           t_actor - 1, c->owner);
    if (c->sync_expected && is_app_loop(op->loop))
      fail(action, "SA-SYNC-2 a sync call runs on a private loop", NULL,
           "the op of sync call %d was given an application loop", c->index);
    if (!c->sync_expected && c->app_loop && c->loop && op->loop != c->loop)
      fail(action, "SA-ASYNC-1 the op starts on the loop of the async context", NULL,
           "the op of call %d was given loop %p, not %p", c->index, (void *)op->loop,
           (void *)c->loop);
    if (!c->loop && !c->sync_expected)
      c->loop = op->loop; /* its future's private loop */
  }
  if (current != op->loop)
    fail(action, "SA-SYNC-5 the op runs in async context on its loop", NULL,
         "sa_current_loop() is %p inside the start of call %d's op, given loop %p",
         (void *)current, c->index, (void *)op->loop);
  /* SA-OP-5: on a loop that is not running (a private loop, for a sync
   * call or an async call from sync context) the time is read after the
   * call was made; a running loop's is libuv's own. */
  bool idle_loop = c->action >= 0 && !c->app_loop && c->kind != ACT_HOME_CALL;
  uint64_t now = uv_now(op->loop);
  if (idle_loop && now + 2 < c->made_ms)
    fail(action, "SA-OP-5 the loop's time is current", NULL,
         "uv_now() is %llu ms inside the start of call %d's op, made at %llu ms",
         (unsigned long long)now, c->index, (unsigned long long)c->made_ms);
  model_unlock();
}

/* SA-OP-2: the op's first completion returns 0. One that comes while its
 * loop is going away (thread exit, home stop), after the dispatcher settled
 * the call itself, may be told SA_EALREADY: SPEC says 0 only for a call
 * that timed out (SA-DL-2). */
void model_op_completed(struct op_rec *op, int rc) {
  model_lock();
  const struct call_rec *c = op->call;
  bool settled_maybe = c->teardown_from || c->stop_from;
  if (rc != 0 && !(rc == SA_EALREADY && settled_maybe))
    fail(c->action, "SA-OP-2 sa_complete", NULL,
         "the first completion (%s, status %d) of call %d's op %d returned %d (%s), not 0",
         op->done_in_start ? "inside start" : "later", op->done_status, c->index, op->item, rc,
         sa_strerror(rc));
  model_unlock();
}

/* Whether anything asked call c (or its batch) to stop before now. */
static bool hook_asked(const struct call_rec *c, const struct op_rec *op) {
  if (c->cancel_from || c->timeout_from || c->teardown_from || c->stop_from ||
      c->deadline != SA_NO_DEADLINE)
    return true;
  if (c->kind != ACT_BATCH || c->batch_kind != SA_BATCH_FIRST)
    return false;
  for (int k = 0; k < c->nops; k++) /* a winner cancels the losers */
    if (k != op->item && op_done(&c->op[k]))
      return true;
  return false;
}

void model_op_hooked(struct op_rec *op) {
  model_lock();
  struct call_rec *c = op->call;
  int action = c->action;
  if (atomic_load(&op->hooks) > 1)
    fail(action, "SA-CAN-2 the hook runs at most once", NULL,
         "the cancel hook of call %d ran %d times", c->index, atomic_load(&op->hooks));
  else if (op_done(op))
    fail(action, "SA-FUT-8 no hook for a completed call", NULL,
         "the cancel hook of call %d ran after its op completed", c->index);
  if (c->kind == ACT_HOME_CALL)
    check_home_op(op, "cancel hook");
  else if (t_actor - 1 != c->owner)
    fail(action, "SA-CAN-1 the hook runs on the call's loop thread", NULL,
         "the cancel hook of call %d ran on actor %d's thread, not on actor %d's", c->index,
         t_actor - 1, c->owner);
  if (run.in_child && !c->in_child)
    fail(action, "SA-THR-3 a fork child touches nothing of its parent's", NULL,
         "the cancel hook of call %d, made by the parent, ran in the fork child", c->index);
  else if (hook_asked(c, op))
    ;
  else if (atomic_load(&c->releases) > 0)
    fail(action, "SA-FUT-7 a release does not stop the call", NULL,
         "the cancel hook of call %d ran after its future was released", c->index);
  else
    fail(action, "SA-CAN-3 the hook runs only when asked", NULL,
         "the cancel hook of call %d ran though nothing asked the call to stop", c->index);
  model_unlock();
}

/* ---- loops going away, homes stopping ------------------------------------------- */

static bool mine_here(const struct call_rec *c) { return c->in_child == run.in_child; }

void model_teardown_began(int actor) {
  model_lock();
  tick_t now = tick();
  for (int i = 0; i < run.ncalls; i++) {
    struct call_rec *c = run.calls[i];
    if (c->owner == actor && !c->app_loop && c->async && mine_here(c) && !c->teardown_from)
      c->teardown_from = now;
  }
  model_unlock();
}

/* SA-THR-2, SA-HOME-4: an op with a hook that had started has completed,
 * and its close callback has run. */
static void expect_ops_ended(const struct call_rec *c, int action, const char *check) {
  for (int k = 0; k < c->nops; k++) {
    const struct op_rec *op = &c->op[k];
    if (!op->spec.hook || !op_started(op))
      continue;
    if (!op_done(op))
      fail(action, check, NULL, "call %d's op has a hook and never completed (hook ran %d times)",
           c->index, atomic_load(&op->hooks));
    else if (atomic_load(&op->handle_used) && !atomic_load(&op->handle_closed))
      fail(action, check, NULL, "call %d's op completed but its handle's close callback never ran",
           c->index);
  }
}

/* Calls whose delivery is due: their loop went away. Statuses are read
 * outside the lock (an API call), then checked under it. */
struct due {
  int n;
  struct call_rec *calls[MAX_CALLS];
  bool read[MAX_CALLS]; /* a future still held: its status was read */
  int status[MAX_CALLS];
  void *value[MAX_CALLS];
};

static void read_statuses(struct due *d) {
  for (int i = 0; i < d->n; i++) {
    struct call_rec *c = d->calls[i];
    d->value[i] = NULL;
    d->read[i] = c->f.id != 0 && atomic_load(&c->releases) == 0;
    if (d->read[i])
      d->status[i] = sa_future_status(c->f, &d->value[i]);
  }
}

static void expect_delivered(struct due *d, int action, const char *check) {
  read_statuses(d);
  model_lock();
  tick_t now = tick();
  for (int i = 0; i < d->n; i++) {
    struct call_rec *c = d->calls[i];
    if (continuation_expected(c) && atomic_load(&c->conts) == 0)
      fail(action, check, NULL, "call %d was never delivered to its continuation", c->index);
    if (!d->read[i])
      continue;
    if (d->status[i] == SA_PENDING)
      fail(action, check, NULL, "call %d's future still says SA_PENDING", c->index);
    else
      observe_result(c, action, now, d->status[i], d->value[i], "sa_future_status");
  }
  model_unlock();
}

void model_teardown_done(int actor, int action) {
  static struct due d; /* one thread at a time tears down (the turn) */
  d.n = 0;
  model_lock();
  for (int i = 0; i < run.ncalls; i++) {
    struct call_rec *c = run.calls[i];
    if (c->owner != actor || c->app_loop || !c->async || !mine_here(c) || !c->teardown_from)
      continue;
    c->owner_gone = true;
    if (c->kind != ACT_HOME_CALL)
      expect_ops_ended(c, action, "SA-THR-2 pending calls get their hook and are waited for");
    if (atomic_load(&c->blk.runs) && !atomic_load(&c->blk.returned_tick))
      fail(action, "SA-THR-2 blocking functions are waited for", NULL,
           "call %d's blocking function was still running", c->index);
    if (c->kind == ACT_DISPATCH_THEN || c->f.id)
      d.calls[d.n++] = c;
  }
  model_unlock();
  expect_delivered(&d, action, "SA-THR-2 every call is delivered when its loop goes away");
}

void model_session_closed(int actor, uv_loop_t *loop, int action) {
  static struct due d;
  d.n = 0;
  model_lock();
  for (int i = 0; i < run.ncalls; i++) {
    struct call_rec *c = run.calls[i];
    if (c->owner != actor || !c->app_loop || c->loop != loop || !c->async || !mine_here(c) ||
        c->session != run.actors[actor].session)
      continue;
    c->loop_closed = true;
    for (int k = 0; k < c->nops && c->kind != ACT_HOME_CALL; k++)
      if (op_started(&c->op[k]) && !op_done(&c->op[k]))
        fail(action, "SA-LOOP-2 no call pending on a closed loop", NULL,
             "sa_loop_close succeeded with call %d's op still running", c->index);
    d.calls[d.n++] = c;
  }
  model_unlock();
  expect_delivered(&d, action, "SA-LOOP-2 no call pending on a closed loop");
}

void model_home_stop_began(int home, int generation) {
  model_lock();
  tick_t now = tick();
  for (int i = 0; i < run.ncalls; i++) {
    struct call_rec *c = run.calls[i];
    if (c->home == home && c->home_gen == generation && mine_here(c) && !c->stop_from)
      c->stop_from = now;
  }
  model_unlock();
}

void model_home_stopped(int home, int generation, int action) {
  model_lock();
  for (int i = 0; i < run.ncalls; i++) {
    struct call_rec *c = run.calls[i];
    if (c->home == home && c->home_gen == generation && mine_here(c))
      expect_ops_ended(c, action, "SA-HOME-4 calls in flight get their hook and are waited for");
  }
  model_unlock();
}

/* ---- the end ------------------------------------------------------------- */

static void final_call_checks(const struct call_rec *c) {
  if (c->async && continuation_expected(c) && atomic_load(&c->conts) != 1)
    fail(-1, "SA-ENTRY-4 delivered exactly once", NULL,
         "call %d (action %d) was delivered to its continuation %d times", c->index, c->action,
         atomic_load(&c->conts));
  if (atomic_load(&c->blk.runs) && !atomic_load(&c->blk.returned_tick))
    fail(-1, "SA-THR-2 blocking functions are waited for", NULL,
         "call %d's blocking function never returned", c->index);
  if (c->stale_seen && atomic_load(&c->releases) == 0)
    fail(-1, "SA-FUT-6 SA_ESTALE only once released", NULL,
         "call %d's future said SA_ESTALE but was never released", c->index);
}

/* After every thread of the program has ended: every call delivered once,
 * every future still held readable and released, every op done. */
void model_final(void) {
  static struct due d;
  d.n = 0;
  model_lock();
  for (int i = 0; i < run.ncalls; i++) {
    struct call_rec *c = run.calls[i];
    if (c->async && mine_here(c) && c->f.id && atomic_load(&c->releases) == 0)
      d.calls[d.n++] = c;
  }
  model_unlock();
  expect_delivered(&d, -1, "SA-ENTRY-4 every call is delivered");
  for (int i = 0; i < d.n; i++) {
    struct obs o = {.action = -1, .actor = -1};
    o.begin = tick();
    model_future_begin(ACT_RELEASE, d.calls[i], o.begin);
    o.rc = sa_future_release(d.calls[i]->f);
    o.end = tick();
    model_future_action(ACT_RELEASE, d.calls[i], &o, SA_NO_DEADLINE);
  }
  model_lock();
  for (int i = 0; i < run.ncalls; i++)
    if (mine_here(run.calls[i]))
      final_call_checks(run.calls[i]);
  model_unlock();
}
