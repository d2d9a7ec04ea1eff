/*
 * message.c - messages between threads: another thread asks a loop's thread
 * to act by queueing a message on the loop's context and waking it through
 * its one uv_async_t. The inbox, the wake-up, and the message that cancels a
 * call from another thread [SA-CAN-1]; what a message does is its own
 * (struct sa_msg).
 */
#include "internal.h"

#include <stdlib.h>

/* Queue `m` on `ctx` if it still has id `id`, and wake its loop. Any
 * thread. SA_ECANCELED (and `m` untouched) if that loop is gone. */
int sa__post(struct sa_ctx *ctx, uint64_t id, struct sa_msg *m) {
  m->next = NULL;
  pthread_mutex_lock(&ctx->inbox_mutex);
  /* The id is retired under this lock before the wake-up handle closes. */
  bool open = id != 0 && atomic_load_explicit(&ctx->id, memory_order_relaxed) == id &&
              ctx->wakeup_ready;
  if (open) {
    if (ctx->inbox_tail)
      ctx->inbox_tail->next = m;
    else
      ctx->inbox_head = m;
    ctx->inbox_tail = m;
    uv_async_send(&ctx->wakeup);
  }
  pthread_mutex_unlock(&ctx->inbox_mutex);
  return open ? 0 : SA_ECANCELED;
}

/* Wake `ctx`'s loop if it still has id `id`, with no message: its thread
 * looks again at what it waits for (on_wakeup). Any thread. */
void sa__wake_loop(struct sa_ctx *ctx, uint64_t id) {
  pthread_mutex_lock(&ctx->inbox_mutex);
  if (id != 0 && atomic_load_explicit(&ctx->id, memory_order_relaxed) == id && ctx->wakeup_ready)
    uv_async_send(&ctx->wakeup);
  pthread_mutex_unlock(&ctx->inbox_mutex);
}

/* Post a request about call `target` (a cancel, a time-out) to `ctx`. If
 * that loop is gone, so is the call, settled with it: nothing to do. */
int sa__post_request(struct sa_ctx *ctx, uint64_t id, sa_msg_fn *handle, sa_future_t target) {
  struct sa_msg *m = malloc(sizeof *m);
  if (!m)
    return SA_ENOMEM;
  m->handle = handle;
  m->drop = sa__msg_free;
  m->target = target;
  if (sa__post(ctx, id, m) != 0)
    free(m);
  return 0;
}

static struct sa_msg *take_inbox(struct sa_ctx *ctx, bool retire) {
  pthread_mutex_lock(&ctx->inbox_mutex);
  struct sa_msg *m = ctx->inbox_head;
  ctx->inbox_head = ctx->inbox_tail = NULL;
  if (retire)
    atomic_store(&ctx->id, 0);
  pthread_mutex_unlock(&ctx->inbox_mutex);
  return m;
}

/* The loop is going away: no message gets in from now on, and those that
 * did are refused. Results of home-loop calls can no longer come: they no
 * longer keep the loop alive. */
void sa__ctx_retire(struct sa_ctx *ctx) {
  struct sa_msg *m = take_inbox(ctx, true);
  while (m) {
    struct sa_msg *next = m->next;
    m->drop(m);
    m = next;
  }
  if (ctx->remote) {
    ctx->remote = 0;
    uv_unref((uv_handle_t *)&ctx->wakeup);
  }
}

static void on_wakeup(uv_async_t *async) {
  struct sa_ctx *ctx = async->data;
  struct sa_thread *t = &sa__self;
  struct sa_msg *m = take_inbox(ctx, false);
  bool pushed = sa__scope_for_callbacks(t, ctx);
  while (m) {
    struct sa_msg *next = m->next;
    m->handle(t, ctx, m);
    m = next;
  }
  if (ctx->home && sa__home_stopping(ctx))
    sa__home_begin_stop(ctx);
  if (ctx->waiting)
    uv_stop(ctx->loop); /* a wait whose future was released [future.c] */
  if (pushed)
    sa__scope_pop(t);
}

/* On the loop's thread, before any handle of one of its calls escapes. */
SA_COLD int sa__wakeup_init(struct sa_ctx *ctx) {
  int err = uv_async_init(ctx->loop, &ctx->wakeup, on_wakeup);
  if (err)
    return err;
  ctx->wakeup.data = ctx;
  uv_unref((uv_handle_t *)&ctx->wakeup); /* messages alone keep no loop alive */
  pthread_mutex_lock(&ctx->inbox_mutex);
  ctx->wakeup_ready = true;
  pthread_mutex_unlock(&ctx->inbox_mutex);
  return 0;
}

/* The record `f` names if it is a call of `ctx` that this thread may act
 * on: not completed by its op. A record that is pending or held can only be
 * freed by its loop's thread, this one, so reading it is safe. */
struct sa_future_rec *sa__local_call(struct sa_thread *t, struct sa_ctx *ctx,
                                     sa_future_t f) {
  uint64_t w;
  struct sa_future_rec *r = sa__lookup(f, &w);
  if (!r || ((w & W_DONE) && !(w & W_HELD)) || sa__call_owner(&r->call) != t ||
      sa__call_ctx(&r->call) != ctx || (r->call.flags & CALL_COMPLETED))
    return NULL;
  return r;
}

/* Ask the loop that owns `r` to act on it (`handle`: a cancel, a time-out):
 * from a thread that does not run that loop. The handle may have gone
 * stale meanwhile: the loop's thread checks it again. */
int sa__request(struct sa_future_rec *r, sa_future_t future, sa_msg_fn *handle) {
  struct sa_ctx *ctx = sa__call_ctx(&r->call);
  if (!ctx)
    return 0; /* freed meanwhile, and given back [pool.c]: the call is over */
  return sa__post_request(ctx, atomic_load_explicit(&r->ctx_id, memory_order_relaxed), handle,
                          future);
}

/* What a message that needs no answer leaves when its loop goes away. */
void sa__msg_free(struct sa_msg *m) { free(m); }

/* A message: cancel the call `target` [SA-CAN-1]. */
static void handle_cancel(struct sa_thread *t, struct sa_ctx *ctx, struct sa_msg *m) {
  struct sa_future_rec *r = sa__local_call(t, ctx, m->target);
  if (r)
    sa__cancel_here(r);
  free(m);
}

/* Cancel `r` from a thread that does not run its loop: its cancel hook runs
 * on that loop's thread [SA-CAN-1]. */
int sa__request_cancel(struct sa_future_rec *r, sa_future_t future) {
  return sa__request(r, future, handle_cancel);
}
