/*
 * private.c - private loops and thread exit: each thread's own loops, which
 * run its sync calls (loop 0 those from plain code and the async calls it
 * starts there, the others sync calls nested in a running loop), taken on
 * demand and wound down when the thread exits; and the wind-down of any
 * loop the dispatcher owns.
 */
#include "internal.h"

#include <stdlib.h>

static struct sa_private *sa_spare_privates; /* under sa__registry_mutex */

static void close_any(uv_handle_t *handle, void *unused) {
  (void)unused;
  if (!uv_is_closing(handle))
    uv_close(handle, NULL);
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

/* Close a loop the dispatcher owns, whatever is still on it [SA-THR-2,
 * SA-HOME-4]. New calls on it are refused; results queued are delivered;
 * every pending call whose op has a cancel hook is asked to stop and waited
 * for (the loop runs until they complete), so that the ops' own callbacks
 * free what they hold; every call still pending is then delivered, with
 * SA_ECANCELED unless its op completed; messages are refused, every handle
 * left is closed and the loop closed. Callbacks run in async context on the
 * loop. */
void sa__wind_down(struct sa_ctx *ctx) {
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
  uv_walk(ctx->loop, close_any, NULL);
  while (uv_loop_close(ctx->loop) == UV_EBUSY)
    uv_run(ctx->loop, UV_RUN_DEFAULT);
  while (held) { /* no op can reach them now */
    struct sa_future_rec *r = held;
    held = r->next;
    if (r->call.flags & CALL_THEN)
      sa__rec_recycle(r);
    else
      sa__let_go(r, W_HELD);
  }
}

static void private_destroy(struct sa_private *p) {
  sa__wind_down(&p->ctx);
  private_to_spares(p);
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

/* The lowest private loop not running on this thread, created on demand. */
static int pick_private(struct sa_thread *t, struct sa_private **out) {
  for (unsigned k = 0; k < SA_MAX_SYNC_DEPTH; k++) {
    struct sa_private *p = t->priv[k];
    if (!p) {
      sa__set_exit_hook(t);
      pthread_mutex_lock(&sa__registry_mutex);
      if ((p = sa_spare_privates) != NULL)
        sa_spare_privates = p->next_spare;
      pthread_mutex_unlock(&sa__registry_mutex);
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
      atomic_store_explicit(&p->call.owner, t, memory_order_relaxed);
      atomic_store_explicit(&p->call.ctx, &p->ctx, memory_order_relaxed);
      t->priv[k] = p;
    }
    if (!sa__in_scope(t, &p->ctx)) {
      *out = p;
      return 0;
    }
  }
  return SA_ELOOP;
}

/* Read the loop's clock: calls start with a current time [SA-OP-5]. */
void sa__private_time_refresh(struct sa_private *p) {
  p->refreshed_at = sa__ticks();
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
