/*
 * future.c - futures [SA-FUT-*]: what the holder of an async call's handle
 * can do with it: look, attach a continuation, wait, cancel, release. A
 * handle names a pool record and its generation, so a stale one is
 * detected, never dereferenced [SA-FUT-6].
 */
#include "internal.h"

#include <errno.h>
#include <time.h>

static int result_of(struct sa_future_rec *r, sa_future_t f, void **value) {
  SA_HAPPENS_AFTER(&r->word); /* the caller saw W_DONE */
  int status = sa__call_status(&r->call);
  void *v = sa__call_value(&r->call);
  /* Read the result before the word again [sa__call_settle()]. */
  atomic_thread_fence(memory_order_acquire);
  SA_HAPPENS_BEFORE(&r->word); /* before the record's reuse [sa__rec_take()] */
  uint64_t w = atomic_load_explicit(&r->word, memory_order_relaxed);
  if (W_HANDLE(w) != f.id || (w & W_RELEASED))
    return SA_ESTALE; /* released while we looked */
  if (value)
    *value = v;
  return status;
}

int sa_future_status(sa_future_t future, void **value) {
  uint64_t w;
  if (future.id == 0)
    return SA_EINVAL;
  struct sa_future_rec *r = sa__lookup_live(future, &w);
  if (!r)
    return SA_ESTALE;
  if (!(w & W_DONE))
    return SA_PENDING;
  return result_of(r, future, value);
}

/* sa_future_then on a future already delivered: queue the continuation
 * on the loop, unless the loop is gone or going: nowhere to run it. The
 * holder may release from another thread meanwhile, hence the
 * compare-exchange; before it, the record may even have been freed by that
 * release and given back [pool.c]. */
SA_COLD static int then_delivered(struct sa_future_rec *r, sa_future_t future, uint64_t w,
                                  sa_continuation_cb cb, void *data) {
  struct sa_ctx *ctx = sa__call_ctx(&r->call);
  if (!ctx)
    return SA_ESTALE;
  if (atomic_load_explicit(&ctx->id, memory_order_relaxed) !=
          atomic_load_explicit(&r->ctx_id, memory_order_relaxed) ||
      ctx->closing)
    return SA_ECANCELED;
  SA_HAPPENS_BEFORE(&r->word);
  do {
    if (W_HANDLE(w) != future.id || (w & W_RELEASED))
      return SA_ESTALE;
  } while (!atomic_compare_exchange_weak(&r->word, &w, w | W_QUEUED));
  SA_HAPPENS_AFTER(&r->word);
  r->cont = cb;
  r->cont_data = data;
  int err = sa__defer(ctx, r);
  if (err) {
    r->cont = NULL;
    sa__let_go(r, W_QUEUED); /* freed here if released meanwhile */
  }
  return err;
}

int sa_future_then(sa_future_t future, sa_continuation_cb cb, void *data) {
  uint64_t w;
  if (future.id == 0 || !cb)
    return SA_EINVAL;
  struct sa_future_rec *r = sa__lookup_live(future, &w);
  if (!r)
    return SA_ESTALE;
  if (sa__call_owner(&r->call) != &sa__self)
    return SA_EPERM;
  if (r->cont)
    return SA_EALREADY;
  if (w & W_DONE)
    return then_delivered(r, future, w, cb, data);
  /* Pending: its loop is there, for a loop going away delivers every call
   * before it retires its id. */
  r->cont = cb;
  r->cont_data = data;
  return 0;
}

/* Whether a wait on `r` for `handle` goes on: not delivered, not released
 * [SA-FUT-6]. */
static bool still_pending(struct sa_future_rec *r, uint64_t handle) {
  uint64_t w = atomic_load_explicit(&r->word, memory_order_acquire);
  return W_HANDLE(w) == handle && !(w & (W_DONE | W_RELEASED));
}

/* The parking lot. A thread that waits for a call another thread delivers
 * sleeps on one of a few condition variables, picked by the record's
 * index, rather than on a pair of its own in every record (88 bytes a
 * call). It marks the record W_SLEPT first, with the slot's mutex held;
 * whoever then delivers or releases the record sees the mark in the word
 * it replaces and broadcasts on the slot, under the same mutex, so that no
 * wake-up falls between a sleeper's last look and its sleep. Sleepers of
 * other records on the slot wake too, look at their own record again, and
 * sleep on. The mark stays until the record is freed: a wake-up too many
 * costs a broadcast, never a missed one. */
#define PARK_SLOTS 64

static struct park_slot {
  pthread_mutex_t mutex;
  pthread_cond_t cond; /* on uv_hrtime()'s clock, as deadlines */
} sa_park[PARK_SLOTS];

static pthread_once_t sa_park_once = PTHREAD_ONCE_INIT;

static void park_init(void) {
  pthread_condattr_t monotonic;
  pthread_condattr_init(&monotonic);
  pthread_condattr_setclock(&monotonic, CLOCK_MONOTONIC);
  for (unsigned i = 0; i < PARK_SLOTS; i++) {
    pthread_mutex_init(&sa_park[i].mutex, NULL);
    pthread_cond_init(&sa_park[i].cond, &monotonic);
  }
  pthread_condattr_destroy(&monotonic);
  SA_HAPPENS_BEFORE(&sa_park_once); /* glibc's pthread_once uses bare atomics */
}

/* The slot of the record whose word or handle is `word`; the lot is set up
 * by the first sleeper, or waker, that needs it. */
static struct park_slot *park_slot(uint64_t word) {
  pthread_once(&sa_park_once, park_init);
  SA_HAPPENS_AFTER(&sa_park_once);
  return &sa_park[W_INDEX(word) % PARK_SLOTS];
}

SA_COLD void sa__unpark(uint64_t word) {
  struct park_slot *slot = park_slot(word);
  pthread_mutex_lock(&slot->mutex);
  pthread_cond_broadcast(&slot->cond);
  pthread_mutex_unlock(&slot->mutex);
}

/* still_pending(), marking the record W_SLEPT if it is. Under the slot's
 * mutex. */
static bool mark_sleeping(struct sa_future_rec *r, uint64_t handle) {
  uint64_t w = atomic_load_explicit(&r->word, memory_order_acquire);
  do {
    if (W_HANDLE(w) != handle || (w & (W_DONE | W_RELEASED)))
      return false;
    if (w & W_SLEPT)
      return true;
  } while (!atomic_compare_exchange_weak(&r->word, &w, w | W_SLEPT));
  return true;
}

/* Sleep until another thread delivers `r`, it is released under us, or the
 * deadline passes (then false). */
static bool sleep_until_done(struct sa_future_rec *r, uint64_t handle, uint64_t deadline) {
  struct timespec at = {(time_t)(deadline / 1000000000u), (long)(deadline % 1000000000u)};
  struct park_slot *slot = park_slot(handle);
  bool done = true;
  pthread_mutex_lock(&slot->mutex);
  while (mark_sleeping(r, handle)) {
    if (deadline == SA_NO_DEADLINE)
      pthread_cond_wait(&slot->cond, &slot->mutex);
    else if (pthread_cond_timedwait(&slot->cond, &slot->mutex, &at) == ETIMEDOUT &&
             still_pending(r, handle)) {
      done = false;
      break;
    }
  }
  pthread_mutex_unlock(&slot->mutex);
  return done;
}

/* sa_future_wait with a deadline [SA-FUT-3..5, SA-DL-3]. */
int sa__wait_for(struct sa_thread *t, sa_future_t future, uint64_t deadline,
                 void **value) {
  uint64_t w;
  if (future.id == 0)
    return SA_EINVAL;
  struct sa_future_rec *r = sa__lookup_live(future, &w);
  if (!r)
    return SA_ESTALE;
  if (w & W_DONE)
    return result_of(r, future, value);
  struct sa_ctx *ctx = sa__call_ctx(&r->call);
  bool mine = sa__call_owner(&r->call) == t;
  if (mine && sa__in_scope(t, ctx))
    return SA_EDEADLK; /* only this thread could deliver it */
  if (!mine || atomic_load_explicit(&ctx->running, memory_order_relaxed)) {
    if (!sleep_until_done(r, future.id, deadline)) {
      sa__request_time_out(r, future);
      return SA_ETIMEDOUT;
    }
    return result_of(r, future, value);
  }
  int err = 0;
  if (deadline != SA_NO_DEADLINE && (err = sa__deadline_arm(r, deadline)) != 0)
    return err;
  if ((err = sa__scope_push(t, ctx)) != 0)
    return err;
  ctx->waiting++;
  while (still_pending(r, future.id)) {
    if (ctx->closing) {
      err = SA_ECANCELED; /* a fork child back from an op: the parent's loop */
      break;
    }
    if (uv_run(ctx->loop, UV_RUN_DEFAULT) == 0 && still_pending(r, future.id)) {
      err = SA_EDEADLK; /* nothing left on the loop can complete it */
      break;
    }
  }
  ctx->waiting--;
  sa__scope_pop(t);
  return err ? err : result_of(r, future, value);
}

int sa_future_wait(sa_future_t future, void **value) {
  return sa__wait_for(&sa__self, future, SA_NO_DEADLINE, value);
}

int sa_future_wait_until(sa_future_t future, uint64_t deadline, void **value) {
  return sa__wait_for(&sa__self, future, deadline, value);
}

/* On the call's loop thread: run its cancel hook unless it has ended or
 * is already stopping [SA-FUT-8]. SA_ENOTSUP if the op has no hook. */
int sa__cancel_here(struct sa_future_rec *r) {
  if (r->call.flags & (CALL_COMPLETED | CALL_TIMED_OUT))
    return 0;
  if (!r->call.op->cancel)
    return SA_ENOTSUP;
  r->call.op->cancel(&r->call, sa__call_ctx(&r->call)->loop, r->call.arg);
  return 0;
}

int sa_future_cancel(sa_future_t future) {
  uint64_t w;
  if (future.id == 0)
    return SA_EINVAL;
  struct sa_future_rec *r = sa__lookup_live(future, &w);
  if (!r)
    return SA_ESTALE;
  if (w & W_DONE)
    return 0; /* delivered (or timed out) already */
  if (sa__call_owner(&r->call) != &sa__self)
    return sa__request_cancel(r, future); /* [SA-CAN-1] */
  return sa__cancel_here(r);
}

/* A pending future was released: waits on it end [SA-FUT-6]. A sleeper is
 * woken here; a wait that drives the call's loop runs on the owner's thread,
 * and is stopped there: at once from that thread, else by a wake-up of its
 * loop (message.c). */
static void end_waits(struct sa_future_rec *r, uint64_t w) {
  struct sa_ctx *ctx = sa__call_ctx(&r->call);
  sa__wake_sleepers(w);
  if (!ctx)
    return; /* delivered and freed meanwhile, and given back [pool.c] */
  if (sa__call_owner(&r->call) != &sa__self)
    sa__wake_loop(ctx, atomic_load_explicit(&r->ctx_id, memory_order_relaxed));
  else if (ctx->waiting)
    uv_stop(ctx->loop);
}

int sa_future_release(sa_future_t future) {
  uint64_t w, next;
  if (future.id == 0)
    return SA_EINVAL;
  struct sa_future_rec *r = sa__lookup_live(future, &w);
  if (!r)
    return SA_ESTALE;
  SA_HAPPENS_BEFORE(&r->word);
  do {
    if (W_HANDLE(w) != future.id || (w & (W_RELEASED | W_FREE)))
      return SA_ESTALE;
    /* Delivered, no continuation queued, no op holding it: free now.
     * Otherwise whoever lets go last frees it. */
    next = (w & W_DONE) && !(w & (W_QUEUED | W_HELD)) ? W_NEXT_GEN_FREE(w) : w | W_RELEASED;
  } while (!atomic_compare_exchange_weak(&r->word, &w, next));
  SA_HAPPENS_AFTER(&r->word);
  if (next & W_FREE)
    sa__rec_recycle(r);
  else if (!(w & W_DONE))
    end_waits(r, w);
  return 0;
}
