/*
 * delivery.c - handing results over: marking a record delivered exactly
 * once, calling continuations, and the drain, one idle handle per loop that
 * delivers what was queued for after the current call returned
 * [SA-ASYNC-3]: the then-queue of sa_dispatch_then's calls first, then the
 * deferred queue, in the order the calls were made [SA-ASYNC-6]. Queueing
 * (sa__defer, sa__defer_then) is in internal.h.
 */
#include "internal.h"

/* Clear `bits` (W_QUEUED or W_HELD) from a delivered record's word, and free
 * the record if that was the last thing keeping a released one. Returns the
 * word before. */
uint64_t sa__let_go(struct sa_future_rec *r, uint64_t bits) {
  uint64_t w = atomic_load_explicit(&r->word, memory_order_relaxed), next;
  SA_HAPPENS_BEFORE(&r->word);
  do {
    next = w & ~bits;
    if ((next & W_RELEASED) && !(next & (W_QUEUED | W_HELD)))
      next = W_NEXT_GEN_FREE(w);
  } while (!atomic_compare_exchange_weak_explicit(
      &r->word, &w, next, memory_order_acq_rel, memory_order_relaxed));
  SA_HAPPENS_AFTER(&r->word);
  if (next & W_FREE)
    sa__rec_recycle(r);
  return w;
}

/* Hand the result over: mark it done and call the continuation, unless the
 * holder released the future. A timed-out call (`held`) stays pending on
 * its loop and its record stays alive until the op completes it. */
static inline __attribute__((always_inline)) void deliver_as(struct sa_future_rec *r,
                                                              bool held) {
  struct sa_ctx *ctx = sa__call_ctx(&r->call);
  if (!held)
    sa__pending_unlink(ctx, r);
  if (SA_UNLIKELY(r->deadline != NULL))
    sa__deadline_disarm(r);
  /* Read everything before the record can change hands. */
  sa_continuation_cb cb = r->cont;
  void *data = r->cont_data;
  int status = sa__call_status(&r->call);
  void *value = sa__call_value(&r->call);
  uint64_t w = sa__mark_done(r, held ? W_DONE | W_HELD : W_DONE, held);
  if (ctx->waiting)
    uv_stop(ctx->loop); /* a future wait drives this loop: let it look */
  if (w & W_RELEASED) {
    if (!held)
      sa__rec_recycle(r);
    return;
  }
  if (cb)
    cb(sa__handle_of(w), status, value, data);
}

/* Deliver a call of sa_dispatch_then, off the pending list. No handle names
 * the record (its word keeps W_FREE, so lookups miss it): it goes back to
 * the cache before the continuation runs, which may reuse it at once. */
static inline void deliver_then(struct sa_thread *t, struct sa_future_rec *r) {
  sa_continuation_cb cb = r->cont;
  void *data = r->cont_data;
  int status = sa__call_status(&r->call);
  void *value = sa__call_value(&r->call);
  /* Into the cache of t, the thread running the loop: the owner, unless
   * another thread ran the loop since the call was made. The caller sets
   * t's exit hook and trims the cache (on_drain once for all it delivers). */
  sa__cache_push(t, r);
  cb(SA_FUTURE_NULL, status, value, data);
}

/* Deliver `r` on its owner's thread. */
void sa__deliver(struct sa_future_rec *r) {
  if (r->call.flags & CALL_THEN) {
    struct sa_thread *t = &sa__self;
    sa__then_unpend(r);
    sa__set_exit_hook(t);
    deliver_then(t, r);
    sa__cache_trim(t);
  } else {
    deliver_as(r, false);
  }
}

/* Deliver a timed-out call whose op still holds it [SA-DL-2]. */
void sa__deliver_held(struct sa_future_rec *r) { deliver_as(r, true); }

/* Take a late continuation off the queue. Returns true if the holder
 * still has the future; false if it was released meanwhile. */
static bool unqueue_late(struct sa_future_rec *r, uint64_t *word) {
  *word = sa__let_go(r, W_QUEUED);
  return !(*word & W_RELEASED);
}

/* A continuation attached after delivery: run it unless released since. */
static void run_late_continuation(struct sa_future_rec *r) {
  uint64_t w;
  if (unqueue_late(r, &w))
    r->cont(sa__handle_of(w), sa__call_status(&r->call), sa__call_value(&r->call), r->cont_data);
}

/* Deliver a closed then-queue, in order, then put its records in t's cache
 * at once: they are linked already. The cost per call is the continuation's
 * call and little more, so the loop below is the async hot path's. */
static inline void deliver_then_queue(struct sa_thread *t, struct sa_future_rec *first) {
  struct sa_future_rec *r = first;
  unsigned n = 1;
  for (;;) {
    struct sa_future_rec *next = r->next;
    r->cont(SA_FUTURE_NULL, sa__call_status(&r->call), sa__call_value(&r->call), r->cont_data);
    if (!next)
      break;
    r = next;
    n++;
  }
  r->next = t->free_head;
  t->free_head = first;
  t->free_count += n;
}

static void on_drain(uv_idle_t *idle) {
  struct sa_ctx *ctx = idle->data;
  struct sa_thread *t = &sa__self;
  sa__then_close(ctx);
  struct sa_future_rec *then = ctx->then_head;
  struct sa_future_rec *r = ctx->deferred_head;
  ctx->then_head = NULL;
  ctx->deferred_head = ctx->deferred_tail = NULL;
  ctx->drain_started = false;
  uv_idle_stop(idle);
  bool pushed = sa__scope_for_callbacks(t, ctx);
  sa__set_exit_hook(t); /* records go back to t's cache */
  if (then)
    deliver_then_queue(t, then);
  while (r) {
    struct sa_future_rec *next = r->next;
    if (r->call.flags & CALL_THEN)
      deliver_then(t, r);
    else if (atomic_load_explicit(&r->word, memory_order_relaxed) & W_DONE)
      run_late_continuation(r);
    else
      deliver_as(r, false);
    r = next;
  }
  sa__cache_trim(t);
  sa__cache_settle(t, ctx);
  if (pushed)
    sa__scope_pop(t);
}

/* Deliver the queues now rather than on the loop's next iteration: the
 * loop is going away [private.c]. */
void sa__drain_now(struct sa_ctx *ctx) {
  if (ctx->drain_started)
    on_drain(&ctx->drain);
}

/* Start the drain, unless a queue already has. */
SA_COLD static int drain_start(struct sa_ctx *ctx) {
  int err = 0;
  if (ctx->drain_started)
    return 0;
  if (!ctx->drain_ready) {
    if ((err = uv_idle_init(ctx->loop, &ctx->drain)) != 0)
      return err;
    ctx->drain.data = ctx;
    ctx->drain_ready = true;
  }
  if ((err = uv_idle_start(&ctx->drain, on_drain)) == 0)
    ctx->drain_started = true;
  return err;
}

SA_COLD int sa__defer_first(struct sa_ctx *ctx, struct sa_future_rec *r) {
  int err = drain_start(ctx);
  if (err)
    return err;
  sa__then_close(ctx); /* then-calls queued from now on come after r */
  ctx->deferred_head = ctx->deferred_tail = r;
  return 0;
}

/* sa__defer() for a then-call while the then-queue is closed: empty, or behind
 * the deferred queue. */
SA_COLD int sa__defer_then_first(struct sa_ctx *ctx, struct sa_future_rec *r) {
  if (ctx->deferred_tail)
    return sa__defer(ctx, r);
  int err = drain_start(ctx);
  if (err)
    return err;
  ctx->then_head = ctx->then_tail = r;
  return 0;
}
