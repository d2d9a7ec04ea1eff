/*
 * private.c - private loops and thread exit: each thread's own loops, which
 * run its sync calls (loop 0 those from plain code and the async calls it
 * starts there, the others sync calls nested in a running loop), taken on
 * demand and wound down when the thread exits; and the wind-down of any
 * loop the dispatcher owns.
 *
 * A loop costs ten system calls to make and to close. The loops of
 * exited threads are kept open, wound down and cleared of every handle
 * their ops left, for the first calls of later threads: a thread that makes
 * a sync call and exits then costs about what a warm call does. A few are
 * kept, WARM_PER_CPU per CPU and WARM_MAX at most (each holds an epoll and
 * an eventfd descriptor), whatever the number of threads that exited
 * [SA-THR-2]; the others are closed. One thread at a time has a loop
 * [SA-SYNC-4]: it passes on only when its thread is done with it. A fork
 * child abandons those it inherits with the rest [SA-THR-3].
 */
#include "internal.h"

#include <stdlib.h>
#include <unistd.h>

#define WARM_PER_CPU 4
#define WARM_MAX 64

/* Under sa__registry_mutex. */
static struct sa_private *sa_spare_privates; /* memory of closed loops */
static struct sa_private *sa_warm_privates;  /* open loops, for later threads */
static unsigned sa_nwarm;
static unsigned sa_warm_max; /* 0 until the first is kept */
/* Private loops inherited by a fork child: never touched, kept reachable.
 * Written by the forking thread, alone in the child. */
static struct sa_private *sa_abandoned;

static unsigned warm_max(void) {
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  return cpus < 1                           ? WARM_PER_CPU
         : cpus >= WARM_MAX / WARM_PER_CPU ? WARM_MAX
                                            : (unsigned)cpus * WARM_PER_CPU;
}

static void close_any(uv_handle_t *handle, void *unused) {
  (void)unused;
  if (!uv_is_closing(handle))
    uv_close(handle, NULL);
}

/* close_any(), but for the dispatcher's own handles on `ctx`'s loop. */
static void close_ops_handle(uv_handle_t *handle, void *arg) {
  struct sa_ctx *ctx = arg;
  if (handle != (uv_handle_t *)&ctx->wakeup && handle != (uv_handle_t *)&ctx->drain)
    close_any(handle, NULL);
}

/* Keep `p`'s memory for a later private loop: futures may still read its
 * context [type-stable, see struct sa_ctx]. */
static void private_to_spares(struct sa_private *p) {
  sa__ctx_retire(&p->ctx);
  pthread_mutex_lock(&sa__registry_mutex);
  p->next_spare = sa_spare_privates;
  sa_spare_privates = p;
  pthread_mutex_unlock(&sa__registry_mutex);
}

/* A call the wind-down waits for has completed: the last one ends the
 * wait. */
void sa__wind_completed(sa_call_t *call) {
  struct sa_ctx *ctx = sa__call_ctx(call);
  call->flags &= ~CALL_WINDING;
  if (--ctx->winding == 0)
    uv_stop(ctx->loop);
}

/* Ask every call pending on `ctx` to stop: run the cancel hook of those whose
 * op has one (a call timed out has had it already) and count them in
 * ctx->winding until they complete. A hook may complete, and deliver, any
 * call of the list: a cursor in the list keeps the walk's place. */
static void wind_cancel_all(struct sa_ctx *ctx) {
  struct sa_future_rec *cursor = &ctx->wind_cursor, *r;
  cursor->prev_pending = NULL;
  cursor->next_pending = ctx->pending;
  if (ctx->pending)
    ctx->pending->prev_pending = cursor;
  ctx->pending = cursor;
  while ((r = cursor->next_pending) != NULL) {
    /* Step the cursor past r. */
    if (cursor->prev_pending)
      cursor->prev_pending->next_pending = r;
    else
      ctx->pending = r;
    r->prev_pending = cursor->prev_pending;
    cursor->next_pending = r->next_pending;
    if (r->next_pending)
      r->next_pending->prev_pending = cursor;
    r->next_pending = cursor;
    cursor->prev_pending = r;
    if ((r->call.flags & CALL_COMPLETED) || !r->call.op->cancel)
      continue;
    r->call.flags |= CALL_WINDING;
    ctx->winding++;
    if (!(r->call.flags & CALL_TIMED_OUT))
      r->call.op->cancel(&r->call, ctx->loop, r->call.arg);
  }
  if (cursor->prev_pending)
    cursor->prev_pending->next_pending = NULL;
  else
    ctx->pending = NULL;
}

/* Deliver every call still pending on `ctx` once, as its loop goes: with
 * SA_ECANCELED unless its op completed (a call timed out keeps
 * SA_ETIMEDOUT; one whose result went out at its deadline is not delivered
 * again). The op may still hold the call (it has no hook): each record
 * stays held, out of the pool, until the loop is closed. Returns them,
 * linked through `next`. */
static struct sa_future_rec *wind_settle(struct sa_ctx *ctx) {
  struct sa_future_rec *held = NULL;
  while (ctx->pending) {
    struct sa_future_rec *r = ctx->pending;
    sa__pending_unlink(ctx, r);
    if (r->deadline)
      sa__deadline_disarm(r);
    if (!(r->call.flags & (CALL_COMPLETED | CALL_TIMED_OUT)))
      sa__call_settle(&r->call, SA_ECANCELED, NULL);
    r->call.flags |= CALL_COMPLETED;
    r->next = held;
    held = r;
    if (r->call.flags & CALL_THEN) {
      r->cont(SA_FUTURE_NULL, sa__call_status(&r->call), sa__call_value(&r->call),
              r->cont_data);
      continue;
    }
    if (r->call.flags & CALL_HELD)
      continue; /* its result went out at its deadline */
    r->call.flags |= CALL_HELD;
    uint64_t w = sa__mark_done(r, W_DONE | W_HELD, true);
    if (!(w & W_RELEASED) && r->cont)
      r->cont(sa__handle_of(w), sa__call_status(&r->call), sa__call_value(&r->call),
              r->cont_data);
  }
  return held;
}

/* Wind down the calls on a loop the dispatcher owns, as it goes [SA-THR-2,
 * SA-HOME-4]. New calls on it are refused; results queued are delivered;
 * every pending call whose op has a cancel hook is asked to stop and waited
 * for (the loop runs until they complete), so that the ops' own callbacks
 * free what they hold; every call still pending is then delivered, with
 * SA_ECANCELED unless its op completed; messages are refused. Callbacks run
 * in async context on the loop. Returns the records the ops may still hold,
 * for let_go_held() once no op can reach them. */
static struct sa_future_rec *wind_calls(struct sa_ctx *ctx) {
  struct sa_thread *t = &sa__self;
  bool pushed = sa__scope_for_callbacks(t, ctx);
  ctx->closing = true;
  sa__drain_now(ctx);
  wind_cancel_all(ctx);
  ctx->waiting++;
  while (ctx->winding && uv_run(ctx->loop, UV_RUN_DEFAULT) != 0)
    ;
  ctx->waiting--;
  sa__drain_now(ctx);
  struct sa_future_rec *held = wind_settle(ctx);
  if (pushed)
    sa__scope_pop(t);
  sa__ctx_retire(ctx);
  return held;
}

static void let_go_held(struct sa_future_rec *held) {
  while (held) {
    struct sa_future_rec *r = held;
    held = r->next;
    if (r->call.flags & CALL_THEN)
      sa__rec_recycle(r);
    else
      sa__let_go(r, W_HELD);
  }
}

/* Close every handle left on `loop`, then the loop, once what is in
 * flight on it has finished. */
static void loop_close(uv_loop_t *loop) {
  uv_walk(loop, close_any, NULL);
  while (uv_loop_close(loop) == UV_EBUSY)
    uv_run(loop, UV_RUN_DEFAULT);
}

/* Close a loop the dispatcher owns, whatever is still on it: its calls
 * wound down, every handle left closed, and the loop. */
void sa__wind_down(struct sa_ctx *ctx) {
  struct sa_future_rec *held = wind_calls(ctx);
  loop_close(ctx->loop);
  let_go_held(held); /* no op can reach them now */
}

/* Close every handle the ops left on private loop `p`, but the
 * dispatcher's own, and let what is in flight on it finish: the loop is
 * then as a new one (its own handles idle and unreferenced). */
static void private_scrub(struct sa_private *p) {
  uv_walk(&p->loop, close_ops_handle, &p->ctx);
  while (uv_run(&p->loop, UV_RUN_DEFAULT) != 0)
    ;
  p->loop.data = NULL; /* as uv_loop_init() leaves it: an op may have used it */
}

/* Keep `p`, open, for a later thread, if fewer than sa_warm_max are. */
static bool private_to_warm(struct sa_private *p) {
  pthread_mutex_lock(&sa__registry_mutex);
  if (!sa_warm_max)
    sa_warm_max = warm_max();
  bool room = sa_nwarm < sa_warm_max;
  if (room) {
    p->next_spare = sa_warm_privates;
    sa_warm_privates = p;
    sa_nwarm++;
  }
  pthread_mutex_unlock(&sa__registry_mutex);
  return room;
}

/* Its thread is done with private loop `p`: wind it down, and keep it
 * open for a later thread, or close it. */
static void private_destroy(struct sa_private *p) {
  struct sa_future_rec *held = wind_calls(&p->ctx);
  private_scrub(p);
  let_go_held(held); /* no op can reach them now */
  if (!private_to_warm(p)) {
    loop_close(&p->loop);
    private_to_spares(p);
  }
}

/* Continuations run by a wind-down may make sync calls on new private
 * loops: look again until none is left. */
static void private_destroy_all(struct sa_thread *t) {
  bool destroyed;
  do {
    destroyed = false;
    for (unsigned k = 0; k < SA_MAX_SYNC_DEPTH; k++) {
      struct sa_private *p = t->priv[k];
      if (p) {
        private_destroy(p);
        t->priv[k] = NULL;
        destroyed = true;
      }
    }
  } while (destroyed);
}

void sa__thread_exit(void *arg) {
  struct sa_thread *t = arg;
  private_destroy_all(t);
  sa__cache_spill(t, 0);
  t->exit_hook_set = false;
}

int sa_thread_cleanup(void) {
  struct sa_thread *t = &sa__self;
  if (t->depth)
    return SA_EBUSY;
  private_destroy_all(t);
  return 0;
}

/* Open a new loop in `p`, memory kept or NULL (then allocated). */
static int private_open(struct sa_private **out, struct sa_private *p) {
  if (!p) {
    if (!(p = malloc(sizeof *p)))
      return SA_ENOMEM;
    sa__ctx_alloc_init(&p->ctx);
  }
  sa__ctx_init(&p->ctx, &p->loop);
  int err = uv_loop_init(&p->loop);
  if (!err && (err = sa__wakeup_init(&p->ctx)) != 0)
    uv_loop_close(&p->loop);
  if (err) {
    private_to_spares(p);
    return err;
  }
  atomic_store_explicit(&p->call.ctx, &p->ctx, memory_order_relaxed);
  *out = p;
  return 0;
}

/* A private loop for thread `t`: one an exited thread left open, as new
 * but for its id, or a new one. */
static int private_take(struct sa_thread *t, struct sa_private **out) {
  struct sa_private *p, *spare = NULL;
  pthread_mutex_lock(&sa__registry_mutex);
  if ((p = sa_warm_privates) != NULL) {
    sa_warm_privates = p->next_spare;
    sa_nwarm--;
  } else if ((spare = sa_spare_privates) != NULL) {
    sa_spare_privates = spare->next_spare;
  }
  pthread_mutex_unlock(&sa__registry_mutex);
  if (p) {
    sa__ctx_renew(&p->ctx);
  } else {
    int err = private_open(&p, spare);
    if (err)
      return err;
  }
  atomic_store_explicit(&p->call.owner, t, memory_order_relaxed);
  *out = p;
  return 0;
}

/* The lowest private loop not running on this thread, taken on demand. */
static int pick_private(struct sa_thread *t, struct sa_private **out) {
  for (unsigned k = 0; k < SA_MAX_SYNC_DEPTH; k++) {
    if (!t->priv[k]) {
      sa__set_exit_hook(t);
      int err = private_take(t, &t->priv[k]);
      if (err)
        return err;
    }
    struct sa_private *p = t->priv[k];
    if (!sa__in_scope(t, &p->ctx)) {
      *out = p;
      return 0;
    }
  }
  return SA_ELOOP;
}

/* In a fork child, on the forking thread, alone: every private loop it
 * inherited shares its epoll and eventfd file descriptions with the
 * parent's, and closing or stopping a handle of one would unregister the
 * parent's fds. The thread's own loops and the warm ones are abandoned,
 * never touched (a call that returns into one from the fork is refused);
 * the next call makes a new one [SA-THR-3]. */
void sa__privates_abandon(struct sa_thread *t) {
  for (unsigned k = 0; k < SA_MAX_SYNC_DEPTH; k++) {
    struct sa_private *p = t->priv[k];
    if (p) {
      p->ctx.closing = true;
      p->next_spare = sa_abandoned;
      sa_abandoned = p;
      t->priv[k] = NULL;
    }
  }
  while (sa_warm_privates) {
    struct sa_private *p = sa_warm_privates;
    sa_warm_privates = p->next_spare;
    p->next_spare = sa_abandoned;
    sa_abandoned = p;
  }
  sa_nwarm = 0;
}

/* Whether `loop` is one of the private loops a fork child inherited. */
bool sa__loop_abandoned(const uv_loop_t *loop) {
  for (const struct sa_private *p = sa_abandoned; p; p = p->next_spare)
    if (&p->loop == loop)
      return true;
  return false;
}

/* Read the loop's clock: calls start with a current time [SA-OP-5]. */
void sa__private_time_refresh(struct sa_private *p) {
  sa__private_time_read(p);
  uv_update_time(&p->loop);
}

/* Pick a private loop and put the thread in async context on it, to start
 * calls there; the caller pops the scope. */
int sa__enter_private(struct sa_thread *t, struct sa_private **out) {
  int rc = pick_private(t, out);
  if (rc)
    return rc;
  sa__private_time_refresh(*out);
  return sa__scope_push(t, &(*out)->ctx);
}
