/*
 * What the programs call: one op (three timings, with or without a cancel
 * hook, success or error, optionally keeping a handle open on its loop or
 * forking inside its start function), one blocking function, and one
 * continuation. Each records what the implementation did to it, on the
 * model's clock, and hands it to the model.
 *
 * An op completes exactly once: inside start, from an idle handle on the
 * next loop iteration, or from a timer. Its cancel hook stops a started
 * handle and completes with SA_ECANCELED at once, so a call whose hook ran
 * has completed when the hook returns. The handle's memory is the
 * harness's (in the op's record): an implementation that closes it without
 * its close callback (an op without a hook, at thread exit) leaks nothing,
 * and the model can tell whether the close callback ran.
 */
#include "model.h"

#include <errno.h>
#include <time.h>
#include <unistd.h>

/* The op's own status: 0, or one of a few errors that mean nothing to the
 * dispatcher, so that any change of it is the dispatcher's doing. */
int spec_status(const struct op_spec *spec, int slot, int item) {
  static const int errors[] = {-EIO, -ENOENT, -ECONNREFUSED};
  return spec->fail ? errors[(slot + item) % 3] : 0;
}

int op_status(const struct op_rec *op) {
  return spec_status(&op->spec, op->call->slot, op->item);
}

/* A blocking function's: 0, an error, or a positive return, which the
 * dispatcher reports as SA_EINVAL [SA-BLK-4]. */
int blocking_spec_status(const struct op_spec *spec) {
  if (!spec->fail)
    return 0;
  return spec->when == WHEN_INLINE ? 1 : -EIO;
}

static void op_closed(uv_handle_t *handle) {
  struct op_rec *op = handle->data;
  atomic_store(&op->handle_closed, true);
}

static void op_complete(struct op_rec *op, int status, bool in_start, bool by_hook) {
  op->done_status = status;
  op->done_value = op;
  op->done_in_start = in_start;
  op->done_by_hook = by_hook;
  op->done_ns = uv_hrtime();
  atomic_store(&op->done_tick, tick()); /* publishes the fields above */
  model_op_completed(op, sa_complete(op->sa_call, status, op));
}

/* The handle fired, or the hook stopped it: close it and complete. */
static void op_finish(struct op_rec *op, int status, bool by_hook) {
  op->handle_open = false;
  uv_close(&op->u.handle, op_closed);
  op_complete(op, status, false, by_hook);
}

/* A callback of a loop that a forced sync call blocks [SA-MODE-2]. */
static void check_not_blocked(const struct op_rec *op) {
  if (t_blocked_loop == op->loop)
    fail(op->call->action, "SA-MODE-2 no callback of the blocked loop", NULL,
         "an op's callback ran on loop %p while a forced sync call blocked it",
         (void *)op->loop);
}

static void on_next_tick(uv_idle_t *idle) {
  struct op_rec *op = idle->data;
  check_not_blocked(op);
  uv_idle_stop(idle);
  op_finish(op, op_status(op), false);
}

static void on_later(uv_timer_t *timer) {
  struct op_rec *op = timer->data;
  check_not_blocked(op);
  op_finish(op, op_status(op), false);
}

static void kept_fired(uv_timer_t *timer) { (void)timer; }

/* A kept handle's memory is reused only once libuv is done with it. */
static void kept_closed(uv_handle_t *handle) {
  struct kept *k = handle->data;
  k->closing = false;
}

static void kept_close(struct kept *k) {
  k->open = false;
  k->closing = true;
  k->timer.data = k;
  uv_close((uv_handle_t *)&k->timer, kept_closed);
}

static bool handle_on_loop(uv_loop_t *loop, const uv_handle_t *wanted);

/* The kept handle of `a` on `loop`, or NULL. */
static struct kept *kept_find(struct actor_rt *a, uv_loop_t *loop) {
  for (int k = 0; k < MAX_KEPT; k++)
    if (a->kept[k].open && a->kept[k].loop == loop)
      return &a->kept[k];
  return NULL;
}

/* A fork child's loops are fresh [SA-THR-3]: none holds a handle kept
 * open by its parent. */
static void check_fresh_loop(struct actor_rt *a, const struct op_rec *op) {
  for (int k = 0; k < MAX_KEPT; k++) {
    const struct kept *kept = &a->kept[k];
    if (kept->open && kept->inherited && handle_on_loop(op->loop, (uv_handle_t *)&kept->timer))
      fail(op->call->action, "SA-THR-3 fresh private loop", NULL,
           "the fork child's loop %p holds a handle its parent kept on loop %p",
           (void *)op->loop, (void *)kept->loop);
  }
}

/* SA-SYNC-3: sync calls from sync context share one persistent private
 * loop. A kept handle left there by an earlier such call is still there. */
static void check_persistent_loop(struct actor_rt *a, const struct op_rec *op) {
  const struct call_rec *c = op->call;
  if (!c->sync_from_sync || c->kind == ACT_BATCH || a->sync_kept < 0)
    return;
  struct kept *k = &a->kept[a->sync_kept];
  if (k->open && (k->loop != op->loop || !handle_on_loop(op->loop, (uv_handle_t *)&k->timer)))
    fail(c->action, "SA-SYNC-3 persistent private loop", NULL,
         "a sync call from sync context ran on loop %p, not on %p where an earlier one "
         "left its handle open",
         (void *)op->loop, (void *)k->loop);
}

/* Keep a handle open on the op's loop (keep 1), or close the one kept
 * there (keep 2): connections and caches that live across calls. */
static void op_keep(struct op_rec *op) {
  if (t_actor == 0)
    return; /* not on an actor's thread (a home): nothing to keep */
  struct actor_rt *a = &run.actors[t_actor - 1];
  if (run.in_child)
    check_fresh_loop(a, op);
  check_persistent_loop(a, op);
  struct kept *k = kept_find(a, op->loop);
  if (k && k->inherited)
    k = NULL; /* the parent's: never touched (it is not on a fresh loop anyway) */
  if (op->spec.keep == 2) {
    if (k)
      kept_close(k);
    return;
  }
  for (int i = 0; i < MAX_KEPT && !k; i++) {
    if (!a->kept[i].open && !a->kept[i].closing) {
      k = &a->kept[i];
      *k = (struct kept){.loop = op->loop, .open = true};
      uv_timer_init(op->loop, &k->timer);
      /* Active and referenced: the loop never runs out of work while it is open. */
      uv_timer_start(&k->timer, kept_fired, 3600 * 1000, 3600 * 1000);
    }
  }
  if (k && op->call->sync_from_sync && op->call->kind != ACT_BATCH)
    a->sync_kept = (int)(k - a->kept);
}

/* Close what `a` keeps open on `loop` (a loop actor's session ends). */
void kept_close_all(struct actor_rt *a, uv_loop_t *loop) {
  for (int k = 0; k < MAX_KEPT; k++)
    if (a->kept[k].open && a->kept[k].loop == loop)
      kept_close(&a->kept[k]);
}

/* The private loops of `a` went away with their handles, closed or
 * closing (sa_thread_cleanup): their memory is free again. */
void kept_forget_private(struct actor_rt *a) {
  for (int k = 0; k < MAX_KEPT; k++) {
    struct kept *kept = &a->kept[k];
    if (!kept->inherited && !is_app_loop(kept->loop))
      kept->open = kept->closing = false;
  }
  a->sync_kept = -1;
}

struct walk_find {
  const uv_handle_t *wanted;
  bool found;
};

static void walk_find_cb(uv_handle_t *handle, void *arg) {
  struct walk_find *w = arg;
  if (handle == w->wanted)
    w->found = true;
}

static bool handle_on_loop(uv_loop_t *loop, const uv_handle_t *wanted) {
  struct walk_find w = {wanted, false};
  uv_walk(loop, walk_find_cb, &w);
  return w.found;
}

static void op_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  struct op_rec *op = arg;
  op->sa_call = call;
  op->loop = loop;
  op->start_ns = uv_hrtime();
  atomic_fetch_add(&op->starts, 1);
  model_op_started(op);
  if (op->spec.busy) {
    struct timespec work = {0, 2000000};
    nanosleep(&work, NULL);
  }
  if (op->spec.keep)
    op_keep(op);
  if (op->spec.fork)
    fork_now(op->call->action);
  op->u.handle.data = op;
  switch (op->spec.when) {
  case WHEN_INLINE:
    op_complete(op, op_status(op), true, false);
    return;
  case WHEN_NEXT_TICK:
    uv_idle_init(loop, &op->u.idle);
    uv_idle_start(&op->u.idle, on_next_tick);
    break;
  default:
    uv_timer_init(loop, &op->u.timer);
    uv_timer_start(&op->u.timer, on_later, op->spec.ms, 0);
    break;
  }
  atomic_store(&op->handle_used, true);
  op->handle_open = true;
}

static void op_cancel(sa_call_t *call, uv_loop_t *loop, void *arg) {
  struct op_rec *op = arg;
  (void)call;
  (void)loop;
  atomic_fetch_add(&op->hooks, 1);
  model_op_hooked(op);
  if (op->handle_open) {
    if (op->spec.when == WHEN_NEXT_TICK)
      uv_idle_stop(&op->u.idle);
    else
      uv_timer_stop(&op->u.timer);
    op_finish(op, SA_ECANCELED, true);
  }
}

const sa_op_t op_hooked = {op_start, op_cancel};
const sa_op_t op_unhooked = {op_start, NULL};

const sa_op_t *op_of(const struct op_spec *spec) {
  return spec->hook ? &op_hooked : &op_unhooked;
}

/* ---- the blocking function ---------------------------------------------- */

int blocking_fn(void *arg, void **value) {
  struct blocking_rec *b = arg;
  atomic_store(&b->run_actor, t_actor);
  atomic_fetch_add(&b->runs, 1);
  if (b->ms) {
    struct timespec ts = {0, (long)b->ms * 1000000L};
    nanosleep(&ts, NULL);
  }
  *value = b;
  atomic_store(&b->returned_tick, tick());
  return b->status;
}

/* ---- the continuation ---------------------------------------------------- */

/* A call made from a continuation: an async call on the same loop, whose
 * own continuation only records. */
static void follow_up(struct call_rec *parent) {
  struct call_rec *c = model_new_call(-1, -1, t_actor - 1, ACT_DISPATCH_THEN, SA_MODE_AUTO);
  if (!c)
    return;
  model_lock(); /* another thread's teardown may be reading the calls */
  c->app_loop = parent->app_loop;
  c->session = parent->session;
  c->loop = sa_current_loop();
  c->nops = 1;
  c->op[0].spec = (struct op_spec){.when = WHEN_NEXT_TICK, .hook = true};
  c->cont = CONT_RECORD;
  model_unlock();
  /* On a private loop that is going away, the call is refused [SA-THR-2]. */
  bool teardown = t_teardown && !c->app_loop;
  struct obs o = {.action = -1, .actor = t_actor - 1};
  void *value = &value;
  c->made_ms = now_ms();
  c->then_attached = true;
  struct call_rec *outer = t_inside; /* the continuation may run inside a call */
  o.begin = tick();
  atomic_store(&c->in_entry, true);
  t_inside = c;
  o.rc = sa_dispatch_then(op_of(&c->op[0].spec), &c->op[0], SA_MODE_AUTO, &value,
                          on_delivery, c);
  t_inside = outer;
  atomic_store(&c->in_entry, false);
  o.end = tick();
  o.end_ns = uv_hrtime();
  o.value = value;
  model_entry_returned(c, &o, teardown ? EXPECT_TEARDOWN : EXPECT_ASYNC, SA_FUTURE_NULL);
}

static void release_own(struct call_rec *c, sa_future_t f) {
  struct obs o = {.action = -1, .actor = t_actor - 1};
  o.begin = tick();
  model_future_begin(ACT_RELEASE, c, o.begin);
  o.rc = sa_future_release(f);
  o.end = tick();
  model_future_action(ACT_RELEASE, c, &o, SA_NO_DEADLINE);
}

void on_delivery(sa_future_t f, int status, void *value, void *data) {
  struct call_rec *c = data;
  model_delivery(c, f, status, value);
  if (c->cont == CONT_RELEASE && f.id != 0)
    release_own(c, f);
  else if (c->cont == CONT_FOLLOW)
    follow_up(c);
}
