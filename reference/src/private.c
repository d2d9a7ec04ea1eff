/*
 * private.c - private loops and thread exit: each thread's own loops, which
 * run its sync calls (loop 0 those from plain code and the async calls it
 * starts there, the others sync calls nested in a running loop), taken on
 * demand and torn down when the thread exits; and the teardown of any loop
 * the dispatcher owns.
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

/* Close a loop the dispatcher owns, whatever is still on it: refuse its
 * messages, settle every undelivered call with SA_ECANCELED (a timed-out
 * call keeps its SA_ETIMEDOUT), close every handle and close the loop.
 * Continuations are not called: the loop they would run on is going away. */
void sa__loop_teardown(struct sa_ctx *ctx) {
  sa__ctx_retire(ctx);
  struct sa_future_rec *released = NULL;
  sa__then_close(ctx);
  struct sa_future_rec *q = ctx->then_head;
  ctx->then_head = NULL;
  while (q) {
    struct sa_future_rec *r = q;
    q = r->next_free;
    sa__rec_recycle(r);
  }
  q = ctx->deferred_head;
  ctx->deferred_head = ctx->deferred_tail = NULL;
  while (q) {
    struct sa_future_rec *r = q;
    uint64_t w;
    q = r->next_deferred;
    if (r->call.flags & CALL_THEN) {
      sa__rec_recycle(r); /* a queued then-call is never pending */
    } else if (atomic_load_explicit(&r->word, memory_order_relaxed) & W_DONE) {
      sa__unqueue_late(r, &w); /* late continuation dropped with its loop */
    }
  }
  while (ctx->pending) {
    struct sa_future_rec *r = ctx->pending;
    sa__pending_unlink(ctx, r);
    if (r->deadline)
      sa__deadline_disarm(r);
    if (!(r->call.flags & (CALL_COMPLETED | CALL_TIMED_OUT)))
      sa__call_settle(&r->call, SA_ECANCELED, NULL);
    r->call.flags |= CALL_COMPLETED;
    /* Ops may still call sa_complete on it while the loop drains: keep a
     * released record out of the pool until then. */
    if (r->call.flags & CALL_THEN) { /* no handle: no word to mark */
      r->next_deferred = released;
      released = r;
      continue;
    }
    uint64_t w = sa__mark_done(r, W_DONE, true);
    if (w & W_RELEASED) {
      r->next_deferred = released;
      released = r;
    } else if (w & W_HELD) {
      sa__let_go(r, W_HELD); /* the holder frees it when it releases */
    }
  }
  uv_walk(ctx->loop, close_any, NULL);
  while (uv_loop_close(ctx->loop) == UV_EBUSY)
    uv_run(ctx->loop, UV_RUN_DEFAULT);
  while (released) {
    struct sa_future_rec *r = released;
    released = r->next_deferred;
    SA_HAPPENS_AFTER(&r->word); /* a releasing thread let go of it */
    atomic_store(&r->word, W_NEXT_GEN_FREE(atomic_load(&r->word)));
    sa__rec_recycle(r);
  }
}

static void private_destroy(struct sa_private *p) {
  sa__loop_teardown(&p->ctx);
  private_to_spares(p);
}

static void private_destroy_all(struct sa_thread *t) {
  for (unsigned k = 0; k < SA_MAX_SYNC_DEPTH; k++) {
    struct sa_private *p = t->priv[k];
    if (p) {
      t->priv[k] = NULL;
      private_destroy(p);
    }
  }
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
      p->call.loop = &p->loop;
      t->priv[k] = p;
    }
    if (!sa__in_scope(t, &p->ctx)) {
      *out = p;
      return 0;
    }
  }
  return SA_ELOOP;
}

/* Pick a private loop and put the thread in async context on it, to start
 * calls there; the caller pops the scope. */
int sa__enter_private(struct sa_thread *t, struct sa_private **out) {
  int rc = pick_private(t, out);
  return rc ? rc : sa__scope_push(t, &(*out)->ctx);
}
