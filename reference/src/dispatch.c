/*
 * dispatch.c - the calls: sa_dispatch and sa_dispatch_then, which detect the
 * context and run an op synchronously on a private loop or start it on the
 * running loop, and sa_complete, which ends a call. The hot paths are here,
 * in one file with the small functions of internal.h: the sync fast path
 * of sa_dispatch and run_sync, run_then, and sa_complete.
 */
#include "internal.h"

/* Drive private loop `p` until its sync call completes. */
static void sync_wait(struct sa_private *p) {
  struct sa_call *call = &p->call;
  call->flags |= CALL_NOTIFY;
  sa__private_time_read(p); /* uv_run reads the loop's time as it starts */
  do {
    if (SA_UNLIKELY(p->ctx.closing)) {
      /* A fork child back from the op: the loop is the parent's [SA-THR-3]. */
      call->flags |= CALL_COMPLETED;
      sa__call_settle(call, SA_ECANCELED, NULL);
      return;
    }
    /* uv_run returns 0 when nothing is left that could complete the call. */
    if (uv_run(&p->loop, UV_RUN_DEFAULT) == 0 && !(call->flags & CALL_COMPLETED)) {
      call->flags |= CALL_COMPLETED;
      sa__call_settle(call, SA_EDEADLK, NULL);
    }
  } while (!(call->flags & CALL_COMPLETED));
}

/* Run `op` to completion on private loop `p`, the thread in scope on it;
 * returns the call's status and stores its value. */
static inline int run_sync(struct sa_private *p, const sa_op_t *op, void *arg, void **value) {
  p->call.flags = 0;
  p->value_out = value;
  op->start(&p->call, &p->loop, arg);
  if (SA_UNLIKELY(!(p->call.flags & CALL_COMPLETED)))
    sync_wait(p);
  if (p->value_out)
    *p->value_out = sa__call_value(&p->call);
  return sa__call_status(&p->call);
}

/* A sync call needing another private loop than the first: nested in a
 * running loop, or the thread's first call. */
SA_COLD static int run_sync_slow(struct sa_thread *t, const sa_op_t *op, void *arg,
                                 void **value) {
  struct sa_private *p;
  int rc = sa__enter_private(t, &p);
  if (rc == 0) {
    rc = run_sync(p, op, arg, value);
    sa__scope_pop(t);
  }
  return rc;
}

int sa__run_async(struct sa_thread *t, struct sa_ctx *ctx, const sa_op_t *op,
                  void *arg, sa_future_t *future) {
  if (SA_UNLIKELY(ctx->closing))
    return SA_ECANCELED; /* its loop is going away [SA-THR-2] */
  if (SA_UNLIKELY(!ctx->wakeup_ready)) { /* an application loop's first call */
    int err = sa__wakeup_init(ctx);
    if (err)
      return err;
  }
  struct sa_future_rec *r = sa__rec_alloc(t);
  if (SA_UNLIKELY(!r))
    return SA_ENOMEM;
  atomic_store_explicit(&r->call.owner, t, memory_order_relaxed);
  r->call.flags = CALL_ASYNC;
  atomic_store_explicit(&r->call.ctx, ctx, memory_order_relaxed);
  r->call.op = op;
  r->call.arg = arg;
  atomic_store_explicit(&r->ctx_id, atomic_load_explicit(&ctx->id, memory_order_relaxed),
                        memory_order_relaxed);
  r->cont = NULL;
  sa__pending_link(ctx, r);
  *future = sa__handle_of(atomic_load_explicit(&r->word, memory_order_relaxed));
  op->start(&r->call, ctx->loop, arg);
  r->call.flags |= CALL_NOTIFY;
  if (r->call.flags & CALL_COMPLETED) {
    int err = sa__defer(ctx, r); /* completed inline: deliver after we return */
    if (SA_UNLIKELY(err)) {
      sa__deliver(r); /* cannot defer: never lose a result */
      return err;
    }
  }
  return SA_PENDING;
}

static int start_async_from_sync(struct sa_thread *t, const sa_op_t *op, void *arg,
                                 uint64_t deadline, sa_future_t *future);

static int run_then_slow(struct sa_thread *t, struct sa_ctx *ctx, const sa_op_t *op,
                         void *arg, sa_continuation_cb cb, void *data);

/* The result could not be queued: deliver it now rather than lose it. */
SA_COLD static int deliver_undeferred(struct sa_future_rec *r, int err) {
  sa__deliver(r);
  return err;
}

/* sa__run_async for sa_dispatch_then: the record has no handle, so it needs no
 * word, no wake-up handle (no other thread can name it) and, if the op
 * completes inside start, no place on the pending list. */
static inline int run_then(struct sa_thread *t, struct sa_ctx *ctx, const sa_op_t *op,
                           void *arg, sa_continuation_cb cb, void *data) {
  /* sa__rec_take(), with the refill out of line: no call before op->start
   * keeps the arguments in registers (callgrind: 20 instructions less). */
  struct sa_future_rec *r = t->free_head;
  if (SA_UNLIKELY(!r || ctx->closing))
    return run_then_slow(t, ctx, op, arg, cb, data);
  t->free_head = r->next;
  t->free_count--;
  SA_HAPPENS_AFTER(&r->word); /* as sa__rec_take() */
  atomic_store_explicit(&r->call.owner, t, memory_order_relaxed);
  r->call.flags = CALL_ASYNC | CALL_THEN;
  atomic_store_explicit(&r->call.ctx, ctx, memory_order_relaxed);
  r->call.op = op;
  r->call.arg = arg;
  r->cont = cb;
  r->cont_data = data;
  op->start(&r->call, ctx->loop, arg);
  /* Read back: past the call only r stays in a register (callgrind: 3
   * instructions less). */
  ctx = sa__call_ctx(&r->call);
  if (SA_LIKELY(r->call.flags & CALL_COMPLETED)) {
    int err = sa__defer_then(ctx, r);
    if (SA_UNLIKELY(err))
      return deliver_undeferred(r, err);
  } else {
    sa__pending_link(ctx, r);
    r->call.flags |= CALL_NOTIFY;
  }
  return SA_PENDING;
}

/* run_then past its fast path: the thread's cache is empty, or the loop is
 * going away. */
SA_COLD static int run_then_slow(struct sa_thread *t, struct sa_ctx *ctx, const sa_op_t *op,
                                 void *arg, sa_continuation_cb cb, void *data) {
  if (ctx->closing)
    return SA_ECANCELED; /* [SA-THR-2] */
  if (sa__cache_refill(t) != 0)
    return SA_ENOMEM;
  return run_then(t, ctx, op, arg, cb, data);
}

/* sa_dispatch past its fast path: the thread's first call, a call whose
 * private loop's time is due for a refresh, nested calls, async calls and
 * bad arguments. */
SA_COLD static int dispatch_slow(struct sa_thread *t, const sa_op_t *op, void *arg,
                                 sa_mode_t mode, void **value, sa_future_t *future) {
  if (sa__bad_mode(mode, future))
    return SA_EINVAL;
  if (sa__runs_sync(t, mode))
    return run_sync_slow(t, op, arg, value);
  if (value)
    *value = NULL;
  if (t->depth)
    return sa__run_async(t, sa__top_ctx(t), op, arg, future);
  return start_async_from_sync(t, op, arg, SA_NO_DEADLINE, future);
}

int sa_dispatch(const sa_op_t *op, void *arg, sa_mode_t mode, void **value,
                sa_future_t *future) {
  struct sa_thread *t = &sa__self;
  if (SA_UNLIKELY(!op || !op->start))
    return SA_EINVAL;
  if (future)
    future->id = 0;
  else if (mode != SA_MODE_SYNC)
    return SA_EINVAL; /* [SA-ERR-3] */
  /* A blocking call from plain code (auto or sync; an invalid mode goes to
   * dispatch_slow). With no scope open, no private loop of this thread is
   * running: only their own thread runs them. The hot path: every
   * instruction here shows in the benchmark's callgrind count. */
  struct sa_private *p = t->priv[0];
  if (SA_LIKELY((unsigned)mode < SA_MODE_ASYNC && t->depth == 0 && p != NULL &&
                !sa__private_time_stale(p))) {
    t->scopes[0] = &p->ctx; /* in async context on p while the op runs */
    t->depth = 1;
    int rc = run_sync(p, op, arg, value);
    /* The owner is t: reading it back keeps one register fewer live. */
    sa__call_owner(&p->call)->depth = 0;
    return rc;
  }
  return dispatch_slow(t, op, arg, mode, value, future);
}

/* sa_dispatch_then's async call from sync context: on private loop 0, as
 * start_async_from_sync. */
SA_COLD static int then_from_sync(struct sa_thread *t, const sa_op_t *op, void *arg,
                                  sa_continuation_cb cb, void *data) {
  struct sa_private *p;
  int rc = sa__enter_private(t, &p);
  if (rc == 0) {
    rc = run_then(t, &p->ctx, op, arg, cb, data);
    sa__scope_pop(t);
  }
  return rc;
}

int sa_dispatch_then(const sa_op_t *op, void *arg, sa_mode_t mode, void **value,
                     sa_continuation_cb cb, void *data) {
  struct sa_thread *t = &sa__self;
  if (SA_UNLIKELY(!op || !op->start || !cb))
    return SA_EINVAL;
  unsigned depth = t->depth;
  if (SA_LIKELY(depth != 0 && (mode == SA_MODE_AUTO || mode == SA_MODE_ASYNC))) {
    if (value)
      *value = NULL;
    return run_then(t, t->scopes[depth - 1], op, arg, cb, data);
  }
  if ((unsigned)mode > SA_MODE_ASYNC)
    return SA_EINVAL;
  if (mode != SA_MODE_ASYNC)
    return sa_dispatch(op, arg, SA_MODE_SYNC, value, NULL);
  if (value)
    *value = NULL;
  return then_from_sync(t, op, arg, cb, data); /* no scope is open */
}

/* Start an async call on `ctx` (in scope on this thread), with a deadline
 * unless it is SA_NO_DEADLINE. */
static int start_async(struct sa_thread *t, struct sa_ctx *ctx, const sa_op_t *op,
                       void *arg, uint64_t deadline, sa_future_t *future) {
  if (deadline == SA_NO_DEADLINE)
    return sa__run_async(t, ctx, op, arg, future);
  return sa__run_async_until(t, ctx, op, arg, deadline, future);
}

/* Async forced in sync context: start on private loop 0, in async context
 * on it; waiting on the future drives it [SA-MODE-4]. */
SA_COLD static int start_async_from_sync(struct sa_thread *t, const sa_op_t *op, void *arg,
                                         uint64_t deadline, sa_future_t *future) {
  struct sa_private *p;
  int rc = sa__enter_private(t, &p);
  if (rc == 0) {
    rc = start_async(t, &p->ctx, op, arg, deadline, future);
    sa__scope_pop(t);
  }
  return rc;
}

/* A sync call through a future: started on a private loop that is not
 * running and waited for by driving it. For calls that need a record: a
 * deadline, or a result that comes from another thread. */
static int call_on_private(struct sa_thread *t, const sa_op_t *op, void *arg,
                           uint64_t deadline, void **value) {
  struct sa_private *p;
  sa_future_t f;
  int rc = sa__enter_private(t, &p);
  if (rc == 0) {
    rc = start_async(t, &p->ctx, op, arg, deadline, &f);
    sa__scope_pop(t);
  }
  if (value)
    *value = NULL;
  if (rc != SA_PENDING)
    return rc;
  rc = sa__wait_for(t, f, SA_NO_DEADLINE, value);
  sa_future_release(f);
  return rc;
}

/* sa_dispatch for calls that need a record in both modes. */
int sa__dispatch_record(const sa_op_t *op, void *arg, sa_mode_t mode, uint64_t deadline,
                        void **value, sa_future_t *future) {
  struct sa_thread *t = &sa__self;
  if (future)
    future->id = 0;
  if (sa__runs_sync(t, mode))
    return call_on_private(t, op, arg, deadline, value);
  if (value)
    *value = NULL;
  if (t->depth)
    return start_async(t, sa__top_ctx(t), op, arg, deadline, future);
  return start_async_from_sync(t, op, arg, deadline, future);
}

/* An async call completed after op->start returned: deliver it now if its
 * loop is the thread's current one, else after the current callback. */
static void notify_async(struct sa_thread *t, sa_call_t *call) {
  struct sa_future_rec *r = (struct sa_future_rec *)call;
  struct sa_ctx *ctx = sa__call_ctx(call);
  if (sa__top_ctx(t) == ctx) {
    sa__deliver(r);
    sa__cache_settle(t, ctx);
    return;
  }
  int err;
  if (call->flags & CALL_THEN) {
    sa__then_unpend(r);
    err = sa__defer_then(ctx, r);
  } else {
    err = sa__defer(ctx, r);
  }
  if (err)
    sa__deliver(r);
}

/* A completion after op->start returned: wake the sync wait, or deliver.
 * Inlined, as the cold paths that call it would not: a sync call's wake-up
 * is then uv_stop() and no more (callgrind: sa/sync/tick 5 instructions
 * less). */
static inline __attribute__((always_inline)) void notify(struct sa_thread *t,
                                                          sa_call_t *call) {
  if (call->flags & CALL_ASYNC)
    notify_async(t, call);
  else
    uv_stop(sa__call_ctx(call)->loop); /* the sync wait checks at once */
}

/* The op completes a call that timed out (or completes twice). The result
 * stays SA_ETIMEDOUT: delivered now if the op was asked to stop, else it
 * went out at the deadline and the record is the holder's alone from now
 * on [SA-DL-2]. */
SA_COLD static int complete_timed_out(struct sa_thread *t, sa_call_t *call) {
  struct sa_future_rec *r = (struct sa_future_rec *)call;
  if (call->flags & CALL_COMPLETED)
    return SA_EALREADY;
  call->flags |= CALL_COMPLETED;
  if (!(call->flags & CALL_HELD)) {
    notify(t, call);
    return 0;
  }
  sa__pending_unlink(sa__call_ctx(call), r);
  sa__let_go(r, W_HELD);
  return 0;
}

static int complete_slow(struct sa_thread *t, sa_call_t *call, int status, void *value);

/* complete_slow() of a call its loop's wind-down waits for, of one that
 * timed out, or of one completed already. */
SA_COLD static int complete_special(struct sa_thread *t, sa_call_t *call, int status,
                                    void *value) {
  if (call->flags & CALL_WINDING) {
    sa__wind_completed(call);
    return complete_slow(t, call, status, value);
  }
  return complete_timed_out(t, call);
}

/* sa_complete after op->start returned (the dispatcher must act), of a
 * call that timed out, of one its loop's wind-down waits for, or of one
 * completed already. */
SA_COLD static int complete_slow(struct sa_thread *t, sa_call_t *call, int status,
                                 void *value) {
  if (call->flags & (CALL_COMPLETED | CALL_TIMED_OUT | CALL_WINDING))
    return complete_special(t, call, status, value);
  call->flags |= CALL_COMPLETED;
  sa__call_settle(call, status, value);
  notify(t, call);
  return 0;
}

int sa_complete(sa_call_t *call, int status, void *value) {
  if (SA_UNLIKELY(!call || status > 0))
    return SA_EINVAL;
  struct sa_thread *t = &sa__self;
  unsigned flags = call->flags;
  if (SA_UNLIKELY(sa__call_owner(call) != t))
    return SA_EPERM;
  if (SA_UNLIKELY(flags & (CALL_COMPLETED | CALL_TIMED_OUT | CALL_NOTIFY)))
    return complete_slow(t, call, status, value);
  /* Inside op->start: the dispatcher looks when it returns. */
  call->flags = flags | CALL_COMPLETED;
  sa__call_settle(call, status, value);
  return 0;
}
