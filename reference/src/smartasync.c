/*
 * smartasync.c - the reference dual-mode dispatcher.
 *
 * How it works, in one page:
 *
 * - Context. Each thread keeps a stack of scopes in thread-local storage; a
 *   scope names a loop the thread is inside (sa_run, sa_enter, a sync call,
 *   a future wait). Empty stack = sync context. Nothing is process-wide, so
 *   no thread and no past run can fool the detection [SA-DET-*].
 *
 * - Sync calls run on the thread's private loops. Private loop 0 serves
 *   calls from sync context and lives until the thread exits; a forced sync
 *   call made while a loop is running takes the lowest private loop that is
 *   not running, so no loop is ever re-entered [SA-MODE-2, SA-MODE-3]. The
 *   call record is the private loop's own, as it serves one call at a
 *   time; a sync call from plain code costs a few stores. The wait is
 *   `while (!done) uv_run(UV_RUN_DEFAULT)` with the completion calling
 *   uv_stop(): UV_RUN_ONCE can hang in libuv 1.44.2 when a timer completes
 *   the call while another handle is alive.
 *
 * - Async calls get a record from a pool of type-stable records (never
 *   freed while the process lives) addressed by handles carrying a
 *   generation, so a released future is detected, not dereferenced
 *   [SA-FUT-6]. A completion made inside the op's start function is queued
 *   on the loop's context and delivered by an idle handle once the call has
 *   returned [SA-ASYNC-3]; a later completion is delivered at once. A call
 *   of sa_dispatch_then takes a record too but no handle names it: no
 *   atomic operation on its path, and the record is back in the thread's
 *   cache before its continuation runs.
 *
 * - Every cross-thread transition of a record goes through one atomic word
 *   (generation | flags), so "delivered", "released" and "freed" happen
 *   exactly once whatever the interleaving.
 */
#include "smartasync.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__GNUC__)
#define SA_TLS_MODEL __attribute__((tls_model("initial-exec")))
#define SA_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define SA_LIKELY(x) __builtin_expect(!!(x), 1)
#define SA_COLD __attribute__((noinline, cold))
#define SA_NOINLINE __attribute__((noinline))
#else
#define SA_TLS_MODEL
#define SA_UNLIKELY(x) (x)
#define SA_LIKELY(x) (x)
#define SA_COLD
#define SA_NOINLINE
#endif

/* helgrind and DRD understand pthread primitives, not C11 atomics: a build
 * for them (SA_VALGRIND_ANNOTATIONS) tells them about each hand-off through
 * a record's word. Elsewhere these cost nothing. Each tool ignores the
 * other's requests; the raw requests are used because the two headers'
 * ANNOTATE_* macros collide. */
#ifdef SA_VALGRIND_ANNOTATIONS
#include <valgrind/helgrind.h>
#include <valgrind/drd.h>
#define SA_HAPPENS_BEFORE(addr)                                                          \
  do {                                                                                   \
    VALGRIND_DO_CLIENT_REQUEST_STMT(_VG_USERREQ__HG_USERSO_SEND_PRE, addr, 0, 0, 0, 0);  \
    VALGRIND_DO_CLIENT_REQUEST_STMT(VG_USERREQ__DRD_ANNOTATE_HAPPENS_BEFORE, addr, 0, 0, \
                                    0, 0);                                               \
  } while (0)
#define SA_HAPPENS_AFTER(addr)                                                           \
  do {                                                                                   \
    VALGRIND_DO_CLIENT_REQUEST_STMT(_VG_USERREQ__HG_USERSO_RECV_POST, addr, 0, 0, 0, 0); \
    VALGRIND_DO_CLIENT_REQUEST_STMT(VG_USERREQ__DRD_ANNOTATE_HAPPENS_AFTER, addr, 0, 0,  \
                                    0, 0);                                               \
  } while (0)
/* For atomics whose ordering is carried by a protocol, not by HB edges. */
#define SA_ATOMIC_VARIABLE(addr, size)                                                   \
  do {                                                                                   \
    VALGRIND_HG_DISABLE_CHECKING(addr, size);                                            \
    VALGRIND_DO_CLIENT_REQUEST_STMT(VG_USERREQ__DRD_START_SUPPRESSION, addr, size, 0, 0, \
                                    0);                                                  \
  } while (0)
#else
#define SA_HAPPENS_BEFORE(addr) ((void)0)
#define SA_HAPPENS_AFTER(addr) ((void)0)
#define SA_ATOMIC_VARIABLE(addr, size) ((void)0)
#endif

#define SA_MAX_SCOPES 32
#define CHUNK_BITS 10
#define CHUNK_SIZE (1u << CHUNK_BITS)
#define MAX_CHUNKS 4096u /* 4 Mi futures alive at once */
#define CACHE_REFILL 256u /* records a thread takes from the pool at once */
#define CACHE_HIGH 4096u  /* a thread's cache spills half above this */

/* Flags in the low bits of a record's word; the generation is the high half. */
#define W_DONE 1u     /* result delivered: visible to the future's holder */
#define W_RELEASED 2u /* the holder gave the future back */
#define W_QUEUED 4u   /* a late continuation is queued on the loop */
#define W_FREE 8u     /* in the pool: no handle refers to it */
#define W_HELD 16u    /* timed out: the result is out, but the op still holds
                         the call until it completes it */
#define W_GEN(w) ((uint32_t)((w) >> 32))
#define W_NEXT_GEN_FREE(w) ((((uint64_t)W_GEN(w) + 1) << 32) | W_FREE)

struct sa_thread;
struct sa_future_rec;
struct sa_msg;
struct sa_home;

/* The dispatcher's state for one loop. Touched only by the thread running
 * the loop, except `running` and `id`, which other threads may read.
 * Type-stable: kept for reuse, never freed, so a future that outlived its
 * loop can still check `id` safely. */
struct sa_ctx {
  /* Other threads may touch these three at any time: initialised once per
   * allocation (the mutex) or changed atomically, never cleared in bulk. */
  pthread_mutex_t inbox_mutex; /* guards the inbox, and changes of `id` */
  _Atomic uint64_t id;         /* unique per use; 0 once the loop is gone */
  /* Scopes on it, on whichever thread runs it. Meaningful for application
   * loops only: a private loop runs on its own thread alone, which asks
   * in_scope(), and its sync calls skip the count. */
  atomic_uint running;
  uv_loop_t *loop;
  unsigned waiting;      /* future waits driving it: deliveries stop it */
  bool drain_ready;      /* `drain` initialised */
  bool drain_started;    /* `drain` active: a queue below is not empty */
  uv_idle_t drain;       /* delivers the queues: the then-queue first */
  /* Completed calls of sa_dispatch_then, linked through next_free so that,
   * delivered, they join the cache in one splice. Everything on it was
   * queued before everything on the deferred queue: then_tail is NULL
   * while that queue is not empty, and later then-calls queue there. */
  struct sa_future_rec *then_head, *then_tail;
  struct sa_future_rec *deferred_head, *deferred_tail; /* the rest */
  struct sa_future_rec *pending; /* undelivered async calls */
  unsigned npending;
  /* Messages from other threads, woken by `wakeup` (unreferenced unless
   * results of home-loop calls are awaited: `remote` counts them). */
  bool wakeup_ready;
  uv_async_t wakeup;
  struct sa_msg *inbox_head, *inbox_tail;
  unsigned remote;
  struct sa_home *home; /* the home object this loop serves, if any */
  struct sa_ctx *next_registered; /* application loops only */
};

/* Call flags. */
#define CALL_ASYNC 1u     /* a pool record behind a future */
#define CALL_NOTIFY 2u    /* completing must act: stop the sync wait, or deliver.
                             Clear while op->start runs: the dispatcher looks
                             when it returns. */
#define CALL_COMPLETED 4u /* sa_complete was called */
#define CALL_TIMED_OUT 8u /* the deadline passed first: the result is SA_ETIMEDOUT */
#define CALL_HELD 16u     /* timed out and delivered; the op still holds the call */
#define CALL_THEN 32u     /* sa_dispatch_then: no handle; the record is the
                             dispatcher's until its continuation is called */

/* A sync call's record is its private loop's (owner and loop set once,
 * flags per call); a call of sa_dispatch_then sets owner, flags and ctx;
 * an async call with a future sets everything. */
/* `owner`, `ctx`, `status` and `value` are atomic (relaxed: plain moves)
 * because other threads read them through future handles that may have
 * gone stale, the record reused meanwhile [result_of()]. */
struct sa_call {
  _Atomic(struct sa_thread *) owner;
  uv_loop_t *loop;
  unsigned flags;
  _Atomic int status;
  _Atomic(void *) value;
  _Atomic(struct sa_ctx *) ctx;
  const sa_op_t *op;
  void *arg;
};

struct sa_future_rec {
  struct sa_call call;
  _Atomic uint64_t ctx_id; /* call.ctx->id when dispatched */
  struct sa_deadline *deadline; /* armed deadline timer, else NULL */
  _Atomic uint64_t word; /* generation << 32 | W_* flags */
  uint32_t index;
  struct sa_future_rec *next_free; /* in the pool, a thread's cache or a then-queue */
  sa_continuation_cb cont;
  void *cont_data;
  struct sa_future_rec *next_deferred;
  struct sa_future_rec *prev_pending, *next_pending;
  atomic_int sleepers; /* threads blocked in sa_future_wait */
  pthread_mutex_t mutex;
  pthread_cond_t cond;
};

/* A private loop: the loop and its context in one allocation. It runs one
 * sync call at a time (it is never re-entered), whose record is `call`:
 * its owner and loop are set once, when the thread takes the loop. */
struct sa_private {
  struct sa_call call; /* first: the hot path passes p as &p->call */
  struct sa_ctx ctx;
  uv_loop_t loop;
  struct sa_private *next_spare; /* in sa_spare_privates or sa_abandoned */
};

struct sa_thread {
  unsigned depth;
  struct sa_ctx *scopes[SA_MAX_SCOPES];
  struct sa_private *priv[SA_MAX_SYNC_DEPTH];
  struct sa_future_rec *free_head; /* this thread's cache of pool records */
  unsigned free_count;
  bool exit_hook_set;
};

static inline struct sa_thread *call_owner(const struct sa_call *call) {
  return atomic_load_explicit(&call->owner, memory_order_relaxed);
}

static inline struct sa_ctx *call_ctx(const struct sa_call *call) {
  return atomic_load_explicit(&call->ctx, memory_order_relaxed);
}

static inline int call_status(const struct sa_call *call) {
  return atomic_load_explicit(&call->status, memory_order_relaxed);
}

static inline void *call_value(const struct sa_call *call) {
  return atomic_load_explicit(&call->value, memory_order_relaxed);
}

/* Store the call's result. The fence pairs with result_of()'s: a reader of
 * a stale handle that sees this result also sees the record's new
 * generation, and answers SA_ESTALE (on x86, both fences are free). */
static inline void call_settle(struct sa_call *call, int status, void *value) {
  atomic_thread_fence(memory_order_release);
  atomic_store_explicit(&call->status, status, memory_order_relaxed);
  atomic_store_explicit(&call->value, value, memory_order_relaxed);
}

/* initial-exec: a TLS read costs a few instructions even in a shared
 * library (the general-dynamic model calls __tls_get_addr). */
static _Thread_local struct sa_thread sa_self SA_TLS_MODEL;

static pthread_once_t sa_once = PTHREAD_ONCE_INIT;
static pthread_key_t sa_exit_key;
static pthread_mutex_t sa_pool_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t sa_registry_mutex = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(struct sa_future_rec *) sa_chunks[MAX_CHUNKS];
static unsigned sa_nchunks;             /* under sa_pool_mutex */
static struct sa_future_rec *sa_pool_free; /* under sa_pool_mutex */
static struct sa_ctx *sa_registry;      /* under sa_registry_mutex */
/* Contexts of closed loops, for reuse (under sa_registry_mutex). */
static struct sa_ctx *sa_spare_ctxs;
static struct sa_private *sa_spare_privates;
static _Atomic uint64_t sa_next_ctx_id = 1;
/* Private loops inherited by a fork child: never touched, kept reachable. */
static struct sa_private *sa_abandoned;

static void thread_exit(void *arg);

/* Condition variables time out on uv_hrtime()'s clock, as deadlines do. */
static pthread_condattr_t sa_monotonic_cond;

/* ---- process-wide set-up and fork ---------------------------------------- */

static void atfork_prepare(void) {
  pthread_mutex_lock(&sa_registry_mutex);
  pthread_mutex_lock(&sa_pool_mutex);
}

/* In the parent, and in the child, where the forking thread still owns
 * the locks taken in atfork_prepare. */
static void atfork_release(void) {
  pthread_mutex_unlock(&sa_pool_mutex);
  pthread_mutex_unlock(&sa_registry_mutex);
}

/* In the child, the forking thread's private loops share their epoll and
 * eventfd file descriptions with the parent: closing their handles would
 * unregister the parent's fds. Abandon them; the next call makes new ones
 * [SA-THR-3]. */
static void atfork_child(void) {
  atfork_release();
  struct sa_thread *t = &sa_self;
  for (unsigned k = 0; k < SA_MAX_SYNC_DEPTH; k++) {
    if (t->priv[k]) {
      t->priv[k]->next_spare = sa_abandoned;
      sa_abandoned = t->priv[k];
      t->priv[k] = NULL;
    }
  }
}

static void init_once(void) {
  pthread_condattr_init(&sa_monotonic_cond);
  pthread_condattr_setclock(&sa_monotonic_cond, CLOCK_MONOTONIC);
  if (pthread_key_create(&sa_exit_key, thread_exit) != 0)
    abort(); /* only at start-up, with no keys left: nothing can work */
  pthread_atfork(atfork_prepare, atfork_release, atfork_child);
  SA_HAPPENS_BEFORE(&sa_once); /* glibc's pthread_once uses bare atomics */
}

/* Ask for thread_exit() to run when this thread ends. */
static void set_exit_hook(struct sa_thread *t) {
  if (SA_UNLIKELY(!t->exit_hook_set)) {
    pthread_once(&sa_once, init_once);
    SA_HAPPENS_AFTER(&sa_once);
    pthread_setspecific(sa_exit_key, t);
    t->exit_hook_set = true;
  }
}

/* ---- record pool ------------------------------------------------------- */

static inline sa_future_t handle_of(struct sa_future_rec *r, uint64_t word) {
  return (sa_future_t){((uint64_t)W_GEN(word) << 32) | ((uint64_t)r->index + 1)};
}

/* The live record a handle names, or NULL; *word gets its word. */
static inline struct sa_future_rec *lookup(sa_future_t f, uint64_t *word) {
  uint32_t index = (uint32_t)f.id - 1;
  if ((uint32_t)f.id == 0 || (index >> CHUNK_BITS) >= MAX_CHUNKS)
    return NULL;
  struct sa_future_rec *chunk =
      atomic_load_explicit(&sa_chunks[index >> CHUNK_BITS], memory_order_acquire);
  if (!chunk)
    return NULL;
  struct sa_future_rec *r = &chunk[index & (CHUNK_SIZE - 1)];
  uint64_t w = atomic_load_explicit(&r->word, memory_order_acquire);
  if (W_GEN(w) != (uint32_t)(f.id >> 32) || (w & W_FREE))
    return NULL;
  *word = w;
  return r;
}

/* Under sa_pool_mutex: add a chunk of free records to the pool. */
static int pool_grow(void) {
  if (sa_nchunks == MAX_CHUNKS)
    return SA_ENOMEM;
  struct sa_future_rec *chunk = calloc(CHUNK_SIZE, sizeof *chunk);
  if (!chunk)
    return SA_ENOMEM;
  uint32_t base = sa_nchunks << CHUNK_BITS;
  for (uint32_t i = 0; i < CHUNK_SIZE; i++) {
    struct sa_future_rec *r = &chunk[i];
    r->index = base + i;
    r->next_free = i + 1 < CHUNK_SIZE ? &chunk[i + 1] : sa_pool_free;
    atomic_init(&r->word, ((uint64_t)1 << 32) | W_FREE);
    SA_ATOMIC_VARIABLE(&r->word, sizeof r->word);
    SA_ATOMIC_VARIABLE(&r->sleepers, sizeof r->sleepers);
    /* Read by other threads through handles that may be stale [request()]. */
    SA_ATOMIC_VARIABLE(&r->call.owner, sizeof r->call.owner);
    SA_ATOMIC_VARIABLE(&r->call.ctx, sizeof r->call.ctx);
    SA_ATOMIC_VARIABLE(&r->ctx_id, sizeof r->ctx_id);
    pthread_mutex_init(&r->mutex, NULL);
    pthread_cond_init(&r->cond, &sa_monotonic_cond);
  }
  atomic_store_explicit(&sa_chunks[sa_nchunks], chunk, memory_order_release);
  sa_nchunks++;
  sa_pool_free = chunk;
  return 0;
}

/* Put `r` in t's cache; cache_trim() keeps the cache bounded. */
static inline void cache_push(struct sa_thread *t, struct sa_future_rec *r) {
  r->next_free = t->free_head;
  t->free_head = r;
  t->free_count++;
}

SA_COLD static int cache_refill(struct sa_thread *t) {
  int err = 0;
  set_exit_hook(t);
  pthread_mutex_lock(&sa_pool_mutex);
  if (!sa_pool_free)
    err = pool_grow();
  for (unsigned n = 0; n < CACHE_REFILL && sa_pool_free; n++) {
    struct sa_future_rec *r = sa_pool_free;
    sa_pool_free = r->next_free;
    cache_push(t, r);
  }
  pthread_mutex_unlock(&sa_pool_mutex);
  return t->free_count ? 0 : err;
}

SA_COLD static void cache_spill(struct sa_thread *t, unsigned keep) {
  pthread_mutex_lock(&sa_pool_mutex);
  while (t->free_count > keep) {
    struct sa_future_rec *r = t->free_head;
    t->free_head = r->next_free;
    t->free_count--;
    r->next_free = sa_pool_free;
    sa_pool_free = r;
  }
  pthread_mutex_unlock(&sa_pool_mutex);
}

/* A record from this thread's cache; its word still says W_FREE. Readers
 * of stale handles may have read its last result [result_of()]: helgrind
 * and DRD, which see no atomics, are told that the reuse comes after those
 * reads. One that races the reuse itself they still report. */
static inline struct sa_future_rec *rec_take(struct sa_thread *t) {
  if (SA_UNLIKELY(t->free_count == 0) && cache_refill(t) != 0)
    return NULL;
  struct sa_future_rec *r = t->free_head;
  t->free_head = r->next_free;
  t->free_count--;
  SA_HAPPENS_AFTER(&r->word);
  return r;
}

/* A record for a future: handles may name it from now on. */
static inline struct sa_future_rec *rec_alloc(struct sa_thread *t) {
  struct sa_future_rec *r = rec_take(t);
  if (SA_UNLIKELY(!r))
    return NULL;
  /* Nobody else can see the record yet: a relaxed store suffices. */
  uint64_t w = atomic_load_explicit(&r->word, memory_order_relaxed);
  atomic_store_explicit(&r->word, w & ~(uint64_t)W_FREE, memory_order_relaxed);
  return r;
}

static inline void cache_trim(struct sa_thread *t) {
  if (SA_UNLIKELY(t->free_count > CACHE_HIGH))
    cache_spill(t, CACHE_HIGH / 2);
}

static inline void cache_put(struct sa_thread *t, struct sa_future_rec *r) {
  cache_push(t, r);
  cache_trim(t);
}

/* Return a record whose word already says W_FREE to this thread's cache,
 * which the thread-exit hook gives back to the pool. */
static inline void rec_recycle(struct sa_future_rec *r) {
  struct sa_thread *t = &sa_self;
  set_exit_hook(t);
  cache_put(t, r);
}

/* ---- scopes ------------------------------------------------------------ */

static inline void ctx_running_add(struct sa_ctx *ctx, int delta) {
  /* Only the thread running the loop writes: no read-modify-write needed. */
  unsigned n = atomic_load_explicit(&ctx->running, memory_order_relaxed);
  atomic_store_explicit(&ctx->running, n + (unsigned)delta, memory_order_relaxed);
}

static inline int scope_push(struct sa_thread *t, struct sa_ctx *ctx) {
  if (SA_UNLIKELY(t->depth == SA_MAX_SCOPES))
    return SA_ELOOP;
  t->scopes[t->depth++] = ctx;
  ctx_running_add(ctx, 1);
  return 0;
}

static inline void scope_pop(struct sa_thread *t) {
  ctx_running_add(t->scopes[--t->depth], -1);
}

static inline struct sa_ctx *top_ctx(const struct sa_thread *t) {
  return t->depth ? t->scopes[t->depth - 1] : NULL;
}

static bool in_scope(const struct sa_thread *t, const struct sa_ctx *ctx) {
  for (unsigned i = 0; i < t->depth; i++)
    if (t->scopes[i] == ctx)
      return true;
  return false;
}

uv_loop_t *sa_current_loop(void) {
  const struct sa_thread *t = &sa_self;
  return t->depth ? t->scopes[t->depth - 1]->loop : NULL;
}

/* ---- delivery ---------------------------------------------------------- */

static inline void pending_link(struct sa_ctx *ctx, struct sa_future_rec *r) {
  r->prev_pending = NULL;
  r->next_pending = ctx->pending;
  if (ctx->pending)
    ctx->pending->prev_pending = r;
  ctx->pending = r;
  ctx->npending++;
}

static inline void pending_unlink(struct sa_ctx *ctx, struct sa_future_rec *r) {
  if (r->prev_pending)
    r->prev_pending->next_pending = r->next_pending;
  else
    ctx->pending = r->next_pending;
  if (r->next_pending)
    r->next_pending->prev_pending = r->prev_pending;
  ctx->npending--;
}

SA_COLD static void wake_sleepers_now(struct sa_future_rec *r) {
  pthread_mutex_lock(&r->mutex);
  pthread_cond_broadcast(&r->cond);
  pthread_mutex_unlock(&r->mutex);
}

static inline void wake_sleepers(struct sa_future_rec *r) {
  if (SA_UNLIKELY(atomic_load(&r->sleepers)))
    wake_sleepers_now(r);
}

/* Mark the result delivered, adding `set` (W_DONE, and W_HELD while the op
 * still holds the call). Returns the word before, whose W_RELEASED says
 * whether the holder already let go (the record is then freed, unless
 * `keep_released` asks the caller to see to it). */
static inline uint64_t mark_done(struct sa_future_rec *r, uint64_t set, bool keep_released) {
  uint64_t w = atomic_load_explicit(&r->word, memory_order_relaxed), next;
  SA_HAPPENS_BEFORE(&r->word);
  do {
    next = (w & W_RELEASED) && !keep_released ? W_NEXT_GEN_FREE(w) : w | set;
  } while (!atomic_compare_exchange_weak_explicit(
      &r->word, &w, next, memory_order_acq_rel, memory_order_relaxed));
  SA_HAPPENS_AFTER(&r->word);
  wake_sleepers(r);
  return w;
}

/* Clear `bits` (W_QUEUED or W_HELD) from a delivered record's word, and free
 * the record if that was the last thing keeping a released one. Returns the
 * word before. */
static uint64_t let_go(struct sa_future_rec *r, uint64_t bits) {
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
    rec_recycle(r);
  return w;
}

static void deadline_disarm(struct sa_future_rec *r);

/* Hand the result over: mark it done and call the continuation, unless the
 * holder released the future. A timed-out call (`held`) stays pending on
 * its loop and its record stays alive until the op completes it. */
static inline __attribute__((always_inline)) void deliver_as(struct sa_future_rec *r,
                                                              bool held) {
  struct sa_ctx *ctx = call_ctx(&r->call);
  if (!held)
    pending_unlink(ctx, r);
  if (SA_UNLIKELY(r->deadline != NULL))
    deadline_disarm(r);
  /* Read everything before the record can change hands. */
  sa_continuation_cb cb = r->cont;
  void *data = r->cont_data;
  int status = call_status(&r->call);
  void *value = call_value(&r->call);
  uint64_t w = mark_done(r, held ? W_DONE | W_HELD : W_DONE, held);
  if (ctx->waiting)
    uv_stop(ctx->loop); /* a future wait drives this loop: let it look */
  if (w & W_RELEASED) {
    if (!held)
      rec_recycle(r);
    return;
  }
  if (cb)
    cb(handle_of(r, w), status, value, data);
}

/* Take a completed call of sa_dispatch_then off the pending list, if it
 * completed after op->start returned: one completed inside never was on it.
 * Before it is queued for the drain, so that the drain need not look. */
static inline void then_unpend(struct sa_future_rec *r) {
  if (r->call.flags & CALL_NOTIFY) {
    pending_unlink(call_ctx(&r->call), r);
    r->call.flags &= ~CALL_NOTIFY;
  }
}

/* Deliver a call of sa_dispatch_then, off the pending list. No handle names
 * the record (its word keeps W_FREE, so lookups miss it): it goes back to
 * the cache before the continuation runs, which may reuse it at once. */
static inline void deliver_then(struct sa_thread *t, struct sa_future_rec *r) {
  sa_continuation_cb cb = r->cont;
  void *data = r->cont_data;
  int status = call_status(&r->call);
  void *value = call_value(&r->call);
  /* Into the cache of t, the thread running the loop: the owner, unless
   * another thread ran the loop since the call was made. The caller sets
   * t's exit hook and trims the cache (on_drain once for all it delivers). */
  cache_push(t, r);
  cb(SA_FUTURE_NULL, status, value, data);
}

/* Deliver `r` on its owner's thread. */
static void deliver(struct sa_future_rec *r) {
  if (r->call.flags & CALL_THEN) {
    struct sa_thread *t = &sa_self;
    then_unpend(r);
    set_exit_hook(t);
    deliver_then(t, r);
    cache_trim(t);
  } else {
    deliver_as(r, false);
  }
}

/* Take a late continuation off the queue. Returns true if the holder
 * still has the future; false if it was released meanwhile. */
static bool unqueue_late(struct sa_future_rec *r, uint64_t *word) {
  *word = let_go(r, W_QUEUED);
  return !(*word & W_RELEASED);
}

/* A continuation attached after delivery: run it unless released since. */
static void run_late_continuation(struct sa_future_rec *r) {
  uint64_t w;
  if (unqueue_late(r, &w))
    r->cont(handle_of(r, w), call_status(&r->call), call_value(&r->call), r->cont_data);
}

/* Run callbacks for `ctx` in async context on it, also when the application
 * runs the loop without a scope around uv_run. Returns whether it pushed. */
static inline bool scope_for_callbacks(struct sa_thread *t, struct sa_ctx *ctx) {
  return top_ctx(t) != ctx && scope_push(t, ctx) == 0;
}

/* End the then-queue: what is queued next goes on the deferred queue. */
static inline void then_close(struct sa_ctx *ctx) {
  if (ctx->then_tail) {
    ctx->then_tail->next_free = NULL;
    ctx->then_tail = NULL;
  }
}

/* Deliver a closed then-queue, in order, then put its records in t's cache
 * at once: they are linked already. The cost per call is the continuation's
 * call and little more, so the loop below is the async hot path's. */
static inline void deliver_then_queue(struct sa_thread *t, struct sa_future_rec *first) {
  struct sa_future_rec *r = first;
  unsigned n = 1;
  for (;;) {
    struct sa_future_rec *next = r->next_free;
    r->cont(SA_FUTURE_NULL, call_status(&r->call), call_value(&r->call), r->cont_data);
    if (!next)
      break;
    r = next;
    n++;
  }
  r->next_free = t->free_head;
  t->free_head = first;
  t->free_count += n;
}

static void on_drain(uv_idle_t *idle) {
  struct sa_ctx *ctx = idle->data;
  struct sa_thread *t = &sa_self;
  then_close(ctx);
  struct sa_future_rec *then = ctx->then_head;
  struct sa_future_rec *r = ctx->deferred_head;
  ctx->then_head = NULL;
  ctx->deferred_head = ctx->deferred_tail = NULL;
  ctx->drain_started = false;
  uv_idle_stop(idle);
  bool pushed = scope_for_callbacks(t, ctx);
  set_exit_hook(t); /* records go back to t's cache */
  if (then)
    deliver_then_queue(t, then);
  while (r) {
    struct sa_future_rec *next = r->next_deferred;
    if (r->call.flags & CALL_THEN)
      deliver_then(t, r);
    else if (atomic_load_explicit(&r->word, memory_order_relaxed) & W_DONE)
      run_late_continuation(r);
    else
      deliver_as(r, false);
    r = next;
  }
  cache_trim(t);
  if (pushed)
    scope_pop(t);
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

SA_COLD static int defer_first(struct sa_ctx *ctx, struct sa_future_rec *r) {
  int err = drain_start(ctx);
  if (err)
    return err;
  then_close(ctx); /* then-calls queued from now on come after r */
  ctx->deferred_head = ctx->deferred_tail = r;
  return 0;
}

/* Queue `r` for delivery from the loop, after the current call returns.
 * A queue that is not empty has its drain started. */
static inline int defer(struct sa_ctx *ctx, struct sa_future_rec *r) {
  r->next_deferred = NULL;
  if (SA_UNLIKELY(!ctx->deferred_tail))
    return defer_first(ctx, r);
  ctx->deferred_tail->next_deferred = r;
  ctx->deferred_tail = r;
  return 0;
}

/* defer() for a then-call while the then-queue is closed: empty, or behind
 * the deferred queue. */
SA_COLD static int defer_then_first(struct sa_ctx *ctx, struct sa_future_rec *r) {
  if (ctx->deferred_tail)
    return defer(ctx, r);
  int err = drain_start(ctx);
  if (err)
    return err;
  ctx->then_head = ctx->then_tail = r;
  return 0;
}

/* defer() for a completed call of sa_dispatch_then. The then-queue ends
 * where then_tail points: its last link is set when it closes. */
static inline int defer_then(struct sa_ctx *ctx, struct sa_future_rec *r) {
  struct sa_future_rec *tail = ctx->then_tail;
  if (SA_UNLIKELY(!tail))
    return defer_then_first(ctx, r);
  tail->next_free = r;
  ctx->then_tail = r;
  return 0;
}

/* ---- deadlines --------------------------------------------------------- */

/* A call's deadline: a timer on the call's loop, freed when closed. */
struct sa_deadline {
  uv_timer_t timer; /* first: the close callback frees the struct */
  struct sa_future_rec *rec;
  uint64_t at; /* uv_hrtime() */
};

static void free_handle(uv_handle_t *handle) { free(handle); }

static void deadline_disarm(struct sa_future_rec *r) {
  struct sa_deadline *d = r->deadline;
  r->deadline = NULL;
  uv_close((uv_handle_t *)&d->timer, free_handle);
}

/* Time the call out: its result is SA_ETIMEDOUT. An op with a cancel hook
 * is asked to stop, and the result is delivered when it has completed, so
 * that nothing of the op's outlives the answer. An op without one cannot
 * be stopped: the answer goes out now and the op keeps its call until it
 * completes it; that completion is dropped [SA-DL-2]. */
static void time_out(struct sa_future_rec *r) {
  if (r->call.flags & (CALL_COMPLETED | CALL_TIMED_OUT))
    return;
  if (r->deadline)
    deadline_disarm(r);
  r->call.flags |= CALL_TIMED_OUT;
  call_settle(&r->call, SA_ETIMEDOUT, NULL);
  if (r->call.op->cancel) {
    r->call.op->cancel(&r->call, r->call.loop, r->call.arg);
    return;
  }
  r->call.flags |= CALL_HELD;
  deliver_as(r, true);
}

static int deadline_start(struct sa_deadline *d);

static void on_deadline(uv_timer_t *timer) {
  struct sa_deadline *d = (struct sa_deadline *)timer;
  if (uv_hrtime() < d->at) { /* loop time is coarse: never expire early */
    if (deadline_start(d) == 0)
      return;
  }
  struct sa_future_rec *r = d->rec;
  struct sa_ctx *ctx = call_ctx(&r->call);
  struct sa_thread *t = &sa_self;
  bool pushed = scope_for_callbacks(t, ctx);
  time_out(r);
  if (pushed)
    scope_pop(t);
}

static int deadline_start(struct sa_deadline *d) {
  uint64_t now = uv_hrtime();
  /* Whole milliseconds, rounded up, plus one for the loop's coarse clock. */
  uint64_t ms = d->at > now ? (d->at - now + 999999) / 1000000 + 1 : 0;
  uv_update_time(d->timer.loop);
  return uv_timer_start(&d->timer, on_deadline, ms, 0);
}

/* Give pending record `r` a deadline (an earlier one stands). On its loop's
 * thread. */
static int deadline_arm(struct sa_future_rec *r, uint64_t at) {
  struct sa_deadline *d = r->deadline;
  if (d && d->at <= at)
    return 0;
  if (!d) {
    if (!(d = malloc(sizeof *d)))
      return SA_ENOMEM;
    int err = uv_timer_init(r->call.loop, &d->timer);
    if (err) {
      free(d);
      return err;
    }
    d->rec = r;
    r->deadline = d;
  }
  d->at = at;
  return deadline_start(d);
}

uint64_t sa_deadline_in(uint64_t timeout_ms) {
  uint64_t now = uv_hrtime();
  if (timeout_ms >= (SA_NO_DEADLINE - now) / 1000000)
    return SA_NO_DEADLINE;
  return now + timeout_ms * 1000000;
}

/* ---- loops and contexts ------------------------------------------------ */

/* For memory that will hold contexts: once per allocation. */
static void ctx_alloc_init(struct sa_ctx *ctx) {
  pthread_mutex_init(&ctx->inbox_mutex, NULL);
  atomic_init(&ctx->id, 0);
  atomic_init(&ctx->running, 0);
}

static void ctx_init(struct sa_ctx *ctx, uv_loop_t *loop) {
  memset(&ctx->loop, 0, sizeof *ctx - offsetof(struct sa_ctx, loop));
  ctx->loop = loop;
  atomic_store(&ctx->running, 0);
  atomic_store(&ctx->id, atomic_fetch_add(&sa_next_ctx_id, 1));
}

/* ---- messages between threads ------------------------------------------ */

/* Other threads never touch a loop: they queue a message on its context and
 * wake it through its one uv_async_t, and the loop's thread acts. */
enum sa_msg_kind {
  MSG_CANCEL,      /* cancel the call `target` [SA-CAN-1] */
  MSG_TIMEOUT,     /* time out the call `target` [SA-DL-3] */
  MSG_RESULT,      /* a home-loop call's result for the caller's `target` */
  MSG_HOME_CALL,   /* run a call on the home loop for the caller's `target` */
  MSG_HOME_CANCEL, /* cancel the home-loop side of the caller's `target` */
};

struct sa_msg {
  struct sa_msg *next;
  enum sa_msg_kind kind;
  sa_future_t target;
};

static void handle_msg(struct sa_thread *t, struct sa_ctx *ctx, struct sa_msg *m);
static void drop_msg(struct sa_msg *m);

/* Queue `m` on `ctx` if it still has id `id`, and wake its loop. Any
 * thread. SA_ECANCELED (and `m` untouched) if that loop is gone. */
static int post(struct sa_ctx *ctx, uint64_t id, struct sa_msg *m) {
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

/* Post a request about call `target` (a cancel, a time-out) to `ctx`. If
 * that loop is gone, so is the call, settled with it: nothing to do. */
static int post_request(struct sa_ctx *ctx, uint64_t id, enum sa_msg_kind kind,
                        sa_future_t target) {
  struct sa_msg *m = malloc(sizeof *m);
  if (!m)
    return SA_ENOMEM;
  m->kind = kind;
  m->target = target;
  if (post(ctx, id, m) != 0)
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
 * did are refused. */
static void ctx_retire(struct sa_ctx *ctx) {
  struct sa_msg *m = take_inbox(ctx, true);
  while (m) {
    struct sa_msg *next = m->next;
    drop_msg(m);
    m = next;
  }
}

static bool home_stopping(struct sa_ctx *ctx);
static void home_begin_stop(struct sa_ctx *ctx);

static void on_wakeup(uv_async_t *async) {
  struct sa_ctx *ctx = async->data;
  struct sa_thread *t = &sa_self;
  struct sa_msg *m = take_inbox(ctx, false);
  bool pushed = scope_for_callbacks(t, ctx);
  while (m) {
    struct sa_msg *next = m->next;
    handle_msg(t, ctx, m);
    m = next;
  }
  if (ctx->home && home_stopping(ctx))
    home_begin_stop(ctx);
  if (pushed)
    scope_pop(t);
}

/* On the loop's thread, before any handle of one of its calls escapes. */
SA_COLD static int wakeup_init(struct sa_ctx *ctx) {
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

/* Results of home-loop calls are awaited on `ctx`: keep its loop alive. */
static void remote_add(struct sa_ctx *ctx) {
  if (ctx->remote++ == 0)
    uv_ref((uv_handle_t *)&ctx->wakeup);
}

static void remote_done(struct sa_ctx *ctx) {
  if (--ctx->remote == 0)
    uv_unref((uv_handle_t *)&ctx->wakeup);
}

/* The record `f` names if it is a call of `ctx` that this thread may act
 * on: not completed by its op. A record that is pending or held can only be
 * freed by its loop's thread, this one, so reading it is safe. */
static struct sa_future_rec *local_call(struct sa_thread *t, struct sa_ctx *ctx,
                                        sa_future_t f) {
  uint64_t w;
  struct sa_future_rec *r = lookup(f, &w);
  if (!r || ((w & W_DONE) && !(w & W_HELD)) || call_owner(&r->call) != t ||
      call_ctx(&r->call) != ctx || (r->call.flags & CALL_COMPLETED))
    return NULL;
  return r;
}

/* On the call's loop thread: run its cancel hook unless it has ended or
 * is already stopping [SA-FUT-8]. SA_ENOTSUP if the op has no hook. */
static int cancel_here(struct sa_future_rec *r) {
  if (r->call.flags & (CALL_COMPLETED | CALL_TIMED_OUT))
    return 0;
  if (!r->call.op->cancel)
    return SA_ENOTSUP;
  r->call.op->cancel(&r->call, r->call.loop, r->call.arg);
  return 0;
}

/* ---- loops going away --------------------------------------------------- */

static void close_any(uv_handle_t *handle, void *unused) {
  (void)unused;
  if (!uv_is_closing(handle))
    uv_close(handle, NULL);
}

/* Keep `p`'s memory for a later private loop: futures may still read its
 * context [type-stable, see struct sa_ctx]. */
static void private_to_spares(struct sa_private *p) {
  ctx_retire(&p->ctx);
  pthread_mutex_lock(&sa_registry_mutex);
  p->next_spare = sa_spare_privates;
  sa_spare_privates = p;
  pthread_mutex_unlock(&sa_registry_mutex);
}

/* Close a loop the dispatcher owns, whatever is still on it: refuse its
 * messages, settle every undelivered call with SA_ECANCELED (a timed-out
 * call keeps its SA_ETIMEDOUT), close every handle and close the loop.
 * Continuations are not called: the loop they would run on is going away. */
static void loop_teardown(struct sa_ctx *ctx) {
  ctx_retire(ctx);
  struct sa_future_rec *released = NULL;
  then_close(ctx);
  struct sa_future_rec *q = ctx->then_head;
  ctx->then_head = NULL;
  while (q) {
    struct sa_future_rec *r = q;
    q = r->next_free;
    rec_recycle(r);
  }
  q = ctx->deferred_head;
  ctx->deferred_head = ctx->deferred_tail = NULL;
  while (q) {
    struct sa_future_rec *r = q;
    uint64_t w;
    q = r->next_deferred;
    if (r->call.flags & CALL_THEN) {
      rec_recycle(r); /* a queued then-call is never pending */
    } else if (atomic_load_explicit(&r->word, memory_order_relaxed) & W_DONE) {
      unqueue_late(r, &w); /* late continuation dropped with its loop */
    }
  }
  while (ctx->pending) {
    struct sa_future_rec *r = ctx->pending;
    pending_unlink(ctx, r);
    if (r->deadline)
      deadline_disarm(r);
    if (!(r->call.flags & (CALL_COMPLETED | CALL_TIMED_OUT)))
      call_settle(&r->call, SA_ECANCELED, NULL);
    r->call.flags |= CALL_COMPLETED;
    /* Ops may still call sa_complete on it while the loop drains: keep a
     * released record out of the pool until then. */
    if (r->call.flags & CALL_THEN) { /* no handle: no word to mark */
      r->next_deferred = released;
      released = r;
      continue;
    }
    uint64_t w = mark_done(r, W_DONE, true);
    if (w & W_RELEASED) {
      r->next_deferred = released;
      released = r;
    } else if (w & W_HELD) {
      let_go(r, W_HELD); /* the holder frees it when it releases */
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
    rec_recycle(r);
  }
}

static void private_destroy(struct sa_private *p) {
  loop_teardown(&p->ctx);
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

static void thread_exit(void *arg) {
  struct sa_thread *t = arg;
  private_destroy_all(t);
  cache_spill(t, 0);
  t->exit_hook_set = false;
}

int sa_thread_cleanup(void) {
  struct sa_thread *t = &sa_self;
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
      set_exit_hook(t);
      pthread_mutex_lock(&sa_registry_mutex);
      if ((p = sa_spare_privates) != NULL)
        sa_spare_privates = p->next_spare;
      pthread_mutex_unlock(&sa_registry_mutex);
      if (!p) {
        if (!(p = malloc(sizeof *p)))
          return SA_ENOMEM;
        ctx_alloc_init(&p->ctx);
      }
      ctx_init(&p->ctx, &p->loop);
      int err = uv_loop_init(&p->loop);
      if (!err && (err = wakeup_init(&p->ctx)) != 0)
        uv_loop_close(&p->loop);
      if (err) {
        private_to_spares(p);
        return err;
      }
      atomic_store_explicit(&p->call.owner, t, memory_order_relaxed);
      p->call.loop = &p->loop;
      t->priv[k] = p;
    }
    if (!in_scope(t, &p->ctx)) {
      *out = p;
      return 0;
    }
  }
  return SA_ELOOP;
}

/* Pick a private loop and put the thread in async context on it, to start
 * calls there; the caller pops the scope. */
static int enter_private(struct sa_thread *t, struct sa_private **out) {
  int rc = pick_private(t, out);
  return rc ? rc : scope_push(t, &(*out)->ctx);
}

/* Under sa_registry_mutex: the link to `loop`'s context in the registry,
 * pointing to NULL if it has none. */
static struct sa_ctx **registry_link(uv_loop_t *loop) {
  struct sa_ctx **link = &sa_registry;
  while (*link && (*link)->loop != loop)
    link = &(*link)->next_registered;
  return link;
}

/* The context of `loop`: a private loop of this thread, or an application
 * loop from the registry (added if `create`). */
static struct sa_ctx *ctx_of(struct sa_thread *t, uv_loop_t *loop, bool create) {
  for (unsigned k = 0; k < SA_MAX_SYNC_DEPTH; k++)
    if (t->priv[k] && &t->priv[k]->loop == loop)
      return &t->priv[k]->ctx;
  pthread_mutex_lock(&sa_registry_mutex);
  struct sa_ctx *ctx = *registry_link(loop);
  if (!ctx && create) {
    if ((ctx = sa_spare_ctxs) != NULL)
      sa_spare_ctxs = ctx->next_registered;
    else if ((ctx = malloc(sizeof *ctx)) != NULL)
      ctx_alloc_init(ctx);
    else
      goto out;
    ctx_init(ctx, loop);
    ctx->next_registered = sa_registry;
    sa_registry = ctx;
  }
out:
  pthread_mutex_unlock(&sa_registry_mutex);
  return ctx;
}

/* Keep a closed application loop's context for reuse [type-stable]. */
static void ctx_to_spares(struct sa_ctx *ctx) {
  pthread_mutex_lock(&sa_registry_mutex);
  ctx->next_registered = sa_spare_ctxs;
  sa_spare_ctxs = ctx;
  pthread_mutex_unlock(&sa_registry_mutex);
}

static void ctx_unregister(struct sa_ctx *ctx) {
  pthread_mutex_lock(&sa_registry_mutex);
  struct sa_ctx **link = registry_link(ctx->loop);
  if (*link)
    *link = ctx->next_registered;
  pthread_mutex_unlock(&sa_registry_mutex);
}

int sa_enter(uv_loop_t *loop) {
  struct sa_thread *t = &sa_self;
  if (!loop)
    return SA_EINVAL;
  if (t->depth >= SA_MAX_SCOPES - 1) /* keep a slot for on_drain */
    return SA_ELOOP;
  struct sa_ctx *ctx = ctx_of(t, loop, true);
  if (!ctx)
    return SA_ENOMEM;
  if (atomic_load_explicit(&ctx->running, memory_order_relaxed) || in_scope(t, ctx))
    return SA_EBUSY;
  return scope_push(t, ctx);
}

int sa_leave(uv_loop_t *loop) {
  struct sa_thread *t = &sa_self;
  if (!loop || !t->depth || t->scopes[t->depth - 1]->loop != loop)
    return SA_EINVAL;
  scope_pop(t);
  return 0;
}

int sa_run(uv_loop_t *loop, uv_run_mode mode) {
  if (mode != UV_RUN_DEFAULT && mode != UV_RUN_ONCE && mode != UV_RUN_NOWAIT)
    return SA_EINVAL;
  int err = sa_enter(loop);
  if (err)
    return err;
  int r = uv_run(loop, mode);
  sa_leave(loop);
  return r;
}

int sa_loop_close(uv_loop_t *loop) {
  struct sa_thread *t = &sa_self;
  if (!loop)
    return SA_EINVAL;
  for (unsigned k = 0; k < SA_MAX_SYNC_DEPTH; k++)
    if (t->priv[k] && &t->priv[k]->loop == loop)
      return SA_EPERM; /* the dispatcher's own: freed at thread exit */
  pthread_mutex_lock(&sa_registry_mutex);
  struct sa_ctx **link = registry_link(loop);
  struct sa_ctx *ctx = *link;
  if (ctx) {
    if (atomic_load_explicit(&ctx->running, memory_order_relaxed) ||
        ctx->npending || ctx->then_head || ctx->deferred_head) {
      pthread_mutex_unlock(&sa_registry_mutex);
      return SA_EBUSY;
    }
    *link = ctx->next_registered;
  }
  pthread_mutex_unlock(&sa_registry_mutex);
  if (ctx) {
    ctx_retire(ctx); /* no call is pending: the messages left are moot */
    if (ctx->drain_ready)
      uv_close((uv_handle_t *)&ctx->drain, NULL);
    if (ctx->wakeup_ready)
      uv_close((uv_handle_t *)&ctx->wakeup, NULL);
    if (ctx->drain_ready || ctx->wakeup_ready)
      uv_run(loop, UV_RUN_NOWAIT); /* finishes the closes */
    ctx_to_spares(ctx);
  }
  return uv_loop_close(loop);
}

/* ---- dispatch ---------------------------------------------------------- */

/* Drive private loop `p` until the sync call completes. */
static void sync_wait(struct sa_private *p, struct sa_call *call) {
  call->flags |= CALL_NOTIFY;
  while (!(call->flags & CALL_COMPLETED)) {
    /* uv_run returns 0 when nothing is left that could complete the call. */
    if (uv_run(&p->loop, UV_RUN_DEFAULT) == 0 && !(call->flags & CALL_COMPLETED)) {
      call->flags |= CALL_COMPLETED;
      call_settle(call, SA_EDEADLK, NULL);
    }
  }
}

/* Run `op` to completion on private loop `p`, the thread in scope on it;
 * returns the call's status and stores its value. */
static inline int run_sync(struct sa_private *p, const sa_op_t *op, void *arg, void **value) {
  p->call.flags = 0;
  op->start(&p->call, &p->loop, arg);
  if (SA_UNLIKELY(!(p->call.flags & CALL_COMPLETED)))
    sync_wait(p, &p->call);
  if (value)
    *value = call_value(&p->call);
  return call_status(&p->call);
}

/* A sync call needing another private loop than the first: nested in a
 * running loop, or the thread's first call. */
SA_COLD static int run_sync_slow(struct sa_thread *t, const sa_op_t *op, void *arg,
                                 void **value) {
  struct sa_private *p;
  int rc = enter_private(t, &p);
  if (rc == 0) {
    rc = run_sync(p, op, arg, value);
    scope_pop(t);
  }
  return rc;
}

static int run_async(struct sa_thread *t, struct sa_ctx *ctx, const sa_op_t *op,
                     void *arg, sa_future_t *future) {
  if (SA_UNLIKELY(!ctx->wakeup_ready)) { /* an application loop's first call */
    int err = wakeup_init(ctx);
    if (err)
      return err;
  }
  struct sa_future_rec *r = rec_alloc(t);
  if (SA_UNLIKELY(!r))
    return SA_ENOMEM;
  atomic_store_explicit(&r->call.owner, t, memory_order_relaxed);
  r->call.loop = ctx->loop;
  r->call.flags = CALL_ASYNC;
  atomic_store_explicit(&r->call.ctx, ctx, memory_order_relaxed);
  r->call.op = op;
  r->call.arg = arg;
  atomic_store_explicit(&r->ctx_id, atomic_load_explicit(&ctx->id, memory_order_relaxed),
                        memory_order_relaxed);
  r->cont = NULL;
  pending_link(ctx, r);
  *future = handle_of(r, atomic_load_explicit(&r->word, memory_order_relaxed));
  op->start(&r->call, ctx->loop, arg);
  r->call.flags |= CALL_NOTIFY;
  if (r->call.flags & CALL_COMPLETED) {
    int err = defer(ctx, r); /* completed inline: deliver after we return */
    if (SA_UNLIKELY(err)) {
      deliver(r); /* cannot defer: never lose a result */
      return err;
    }
  }
  return SA_PENDING;
}

static int start_async_from_sync(struct sa_thread *t, const sa_op_t *op, void *arg,
                                 uint64_t deadline, sa_future_t *future);

static int run_then_refill(struct sa_thread *t, struct sa_ctx *ctx, const sa_op_t *op,
                           void *arg, sa_continuation_cb cb, void *data);

/* The result could not be queued: deliver it now rather than lose it. */
SA_COLD static int deliver_undeferred(struct sa_future_rec *r, int err) {
  deliver(r);
  return err;
}

/* run_async for sa_dispatch_then: the record has no handle, so it needs no
 * word, no wake-up handle (no other thread can name it) and, if the op
 * completes inside start, no place on the pending list. */
static inline int run_then(struct sa_thread *t, struct sa_ctx *ctx, const sa_op_t *op,
                           void *arg, sa_continuation_cb cb, void *data) {
  /* rec_take(), with the refill out of line: no call before op->start
   * keeps the arguments in registers (callgrind: 20 instructions less). */
  struct sa_future_rec *r = t->free_head;
  if (SA_UNLIKELY(!r))
    return run_then_refill(t, ctx, op, arg, cb, data);
  t->free_head = r->next_free;
  t->free_count--;
  SA_HAPPENS_AFTER(&r->word); /* as rec_take() */
  /* No loop, op or arg: only a cancel reads them, and without a handle
   * nothing can cancel this call. */
  atomic_store_explicit(&r->call.owner, t, memory_order_relaxed);
  r->call.flags = CALL_ASYNC | CALL_THEN;
  atomic_store_explicit(&r->call.ctx, ctx, memory_order_relaxed);
  r->cont = cb;
  r->cont_data = data;
  op->start(&r->call, ctx->loop, arg);
  /* Read back: past the call only r stays in a register (callgrind: 3
   * instructions less). */
  ctx = call_ctx(&r->call);
  if (SA_LIKELY(r->call.flags & CALL_COMPLETED)) {
    int err = defer_then(ctx, r);
    if (SA_UNLIKELY(err))
      return deliver_undeferred(r, err);
  } else {
    pending_link(ctx, r);
    r->call.flags |= CALL_NOTIFY;
  }
  return SA_PENDING;
}

SA_COLD static int run_then_refill(struct sa_thread *t, struct sa_ctx *ctx, const sa_op_t *op,
                                   void *arg, sa_continuation_cb cb, void *data) {
  if (cache_refill(t) != 0)
    return SA_ENOMEM;
  return run_then(t, ctx, op, arg, cb, data);
}

/* What every dispatching call checks [SA-ERR-3]: a known mode, and a place
 * for the future wherever the call may be async. */
static inline bool bad_mode(sa_mode_t mode, const sa_future_t *future) {
  return (unsigned)mode > SA_MODE_ASYNC || (!future && mode != SA_MODE_SYNC);
}

/* Whether a call in `mode` runs synchronously: forced, or auto in sync
 * context [SA-DET-1, SA-MODE-1]. */
static inline bool runs_sync(const struct sa_thread *t, sa_mode_t mode) {
  return mode == SA_MODE_SYNC || (mode == SA_MODE_AUTO && t->depth == 0);
}

/* sa_dispatch past its fast path: the thread's first call, nested calls,
 * async calls and bad arguments. */
SA_COLD static int dispatch_slow(struct sa_thread *t, const sa_op_t *op, void *arg,
                                 sa_mode_t mode, void **value, sa_future_t *future) {
  if (bad_mode(mode, future))
    return SA_EINVAL;
  if (runs_sync(t, mode))
    return run_sync_slow(t, op, arg, value);
  if (value)
    *value = NULL;
  if (t->depth)
    return run_async(t, top_ctx(t), op, arg, future);
  return start_async_from_sync(t, op, arg, SA_NO_DEADLINE, future);
}

int sa_dispatch(const sa_op_t *op, void *arg, sa_mode_t mode, void **value,
                sa_future_t *future) {
  struct sa_thread *t = &sa_self;
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
  if (SA_LIKELY((unsigned)mode < SA_MODE_ASYNC && t->depth == 0 && p != NULL)) {
    t->scopes[0] = &p->ctx; /* in async context on p while the op runs */
    t->depth = 1;
    int rc = run_sync(p, op, arg, value);
    /* The owner is t: reading it back keeps one register fewer live. */
    call_owner(&p->call)->depth = 0;
    return rc;
  }
  return dispatch_slow(t, op, arg, mode, value, future);
}

/* sa_dispatch_then's async call from sync context: on private loop 0, as
 * start_async_from_sync. */
SA_COLD static int then_from_sync(struct sa_thread *t, const sa_op_t *op, void *arg,
                                  sa_continuation_cb cb, void *data) {
  struct sa_private *p;
  int rc = enter_private(t, &p);
  if (rc == 0) {
    rc = run_then(t, &p->ctx, op, arg, cb, data);
    scope_pop(t);
  }
  return rc;
}

int sa_dispatch_then(const sa_op_t *op, void *arg, sa_mode_t mode, void **value,
                     sa_continuation_cb cb, void *data) {
  struct sa_thread *t = &sa_self;
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

/* ---- calls with a deadline, calls waited for ---------------------------- */

static void notify(struct sa_thread *t, sa_call_t *call);

static int wait_for(struct sa_thread *t, sa_future_t future, uint64_t deadline,
                    void **value);

/* Start an async call on `ctx` (in scope on this thread), with a deadline
 * unless it is SA_NO_DEADLINE. */
static int start_async(struct sa_thread *t, struct sa_ctx *ctx, const sa_op_t *op,
                       void *arg, uint64_t deadline, sa_future_t *future) {
  if (deadline == SA_NO_DEADLINE)
    return run_async(t, ctx, op, arg, future);
  /* Allocated first: past op->start, nothing may fail. */
  struct sa_deadline *d = malloc(sizeof *d);
  if (!d)
    return SA_ENOMEM;
  uv_timer_init(ctx->loop, &d->timer); /* cannot fail */
  int rc = run_async(t, ctx, op, arg, future);
  uint64_t w;
  struct sa_future_rec *r = rc == SA_PENDING ? lookup(*future, &w) : NULL;
  if (r && !(r->call.flags & CALL_COMPLETED)) {
    d->rec = r;
    d->at = deadline;
    r->deadline = d;
    deadline_start(d);
  } else {
    uv_close((uv_handle_t *)&d->timer, free_handle);
  }
  return rc;
}

/* Async forced in sync context: start on private loop 0, in async context
 * on it; waiting on the future drives it [SA-MODE-4]. */
SA_COLD static int start_async_from_sync(struct sa_thread *t, const sa_op_t *op, void *arg,
                                         uint64_t deadline, sa_future_t *future) {
  struct sa_private *p;
  int rc = enter_private(t, &p);
  if (rc == 0) {
    rc = start_async(t, &p->ctx, op, arg, deadline, future);
    scope_pop(t);
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
  int rc = enter_private(t, &p);
  if (rc == 0) {
    rc = start_async(t, &p->ctx, op, arg, deadline, &f);
    scope_pop(t);
  }
  if (value)
    *value = NULL;
  if (rc != SA_PENDING)
    return rc;
  rc = wait_for(t, f, SA_NO_DEADLINE, value);
  sa_future_release(f);
  return rc;
}

/* sa_dispatch for calls that need a record in both modes. */
static int dispatch_record(const sa_op_t *op, void *arg, sa_mode_t mode, uint64_t deadline,
                           void **value, sa_future_t *future) {
  struct sa_thread *t = &sa_self;
  if (future)
    future->id = 0;
  if (runs_sync(t, mode))
    return call_on_private(t, op, arg, deadline, value);
  if (value)
    *value = NULL;
  if (t->depth)
    return start_async(t, top_ctx(t), op, arg, deadline, future);
  return start_async_from_sync(t, op, arg, deadline, future);
}

int sa_dispatch_until(const sa_op_t *op, void *arg, sa_mode_t mode, uint64_t deadline,
                      void **value, sa_future_t *future) {
  if (deadline == SA_NO_DEADLINE)
    return sa_dispatch(op, arg, mode, value, future);
  if (!op || !op->start || bad_mode(mode, future))
    return SA_EINVAL;
  return dispatch_record(op, arg, mode, deadline, value, future);
}

/* A completion after op->start returned: wake the sync wait, or deliver. */
static void notify(struct sa_thread *t, sa_call_t *call) {
  if (!(call->flags & CALL_ASYNC)) {
    uv_stop(call->loop); /* the sync wait checks at once */
    return;
  }
  struct sa_future_rec *r = (struct sa_future_rec *)call;
  struct sa_ctx *ctx = call_ctx(call);
  if (top_ctx(t) == ctx) {
    deliver(r);
    return;
  }
  int err;
  if (call->flags & CALL_THEN) {
    then_unpend(r);
    err = defer_then(ctx, r);
  } else {
    err = defer(ctx, r);
  }
  if (err)
    deliver(r);
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
  pending_unlink(call_ctx(call), r);
  let_go(r, W_HELD);
  return 0;
}

/* sa_complete after op->start returned (the dispatcher must act), of a
 * call that timed out, or of one completed already. */
SA_COLD static int complete_slow(struct sa_thread *t, sa_call_t *call, int status,
                                 void *value) {
  if (call->flags & (CALL_COMPLETED | CALL_TIMED_OUT))
    return complete_timed_out(t, call);
  call->flags |= CALL_COMPLETED;
  call_settle(call, status, value);
  notify(t, call);
  return 0;
}

int sa_complete(sa_call_t *call, int status, void *value) {
  if (SA_UNLIKELY(!call || status > 0))
    return SA_EINVAL;
  struct sa_thread *t = &sa_self;
  unsigned flags = call->flags;
  if (SA_UNLIKELY(call_owner(call) != t))
    return SA_EPERM;
  if (SA_UNLIKELY(flags & (CALL_COMPLETED | CALL_TIMED_OUT | CALL_NOTIFY)))
    return complete_slow(t, call, status, value);
  /* Inside op->start: the dispatcher looks when it returns. */
  call->flags = flags | CALL_COMPLETED;
  call_settle(call, status, value);
  return 0;
}

/* ---- blocking functions ------------------------------------------------ */

/* An async blocking call: the work request and fn's result, freed when the
 * work is done (or by sa_call_blocking if it was never queued). */
struct blocking_job {
  uv_work_t work;
  sa_call_t *call;
  sa_blocking_fn fn;
  void *arg;
  int status;
  void *value;
  bool queued;
};

static int blocking_status(int status) { return status > 0 ? SA_EINVAL : status; }

static void blocking_run(uv_work_t *work) { /* on a threadpool thread */
  struct blocking_job *job = work->data;
  job->value = NULL;
  job->status = blocking_status(job->fn(job->arg, &job->value));
}

static void blocking_done(uv_work_t *work, int status) { /* on the loop thread */
  struct blocking_job *job = work->data;
  sa_call_t *call = job->call;
  bool cancelled = status == UV_ECANCELED;
  int result = cancelled ? SA_ECANCELED : job->status;
  void *value = cancelled ? NULL : job->value;
  free(job);
  sa_complete(call, result, value);
}

static void blocking_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  struct blocking_job *job = arg;
  job->call = call;
  job->work.data = job;
  int err = uv_queue_work(loop, &job->work, blocking_run, blocking_done);
  job->queued = err == 0;
  if (err)
    sa_complete(call, err, NULL);
}

/* Only reached while the call is pending, so the job is alive. */
static void blocking_cancel(sa_call_t *call, uv_loop_t *loop, void *arg) {
  struct blocking_job *job = arg;
  (void)call;
  (void)loop;
  uv_cancel((uv_req_t *)&job->work); /* fails harmlessly once fn started */
}

static const sa_op_t blocking_op = {blocking_start, blocking_cancel};

int sa_call_blocking(sa_blocking_fn fn, void *arg, sa_mode_t mode, void **value,
                     sa_future_t *future) {
  if (!fn || bad_mode(mode, future))
    return SA_EINVAL;
  if (future)
    future->id = 0;
  if (runs_sync(&sa_self, mode)) {
    void *v = NULL;
    int status = blocking_status(fn(arg, &v));
    if (value)
      *value = v;
    return status;
  }
  struct blocking_job *job = malloc(sizeof *job);
  if (!job)
    return SA_ENOMEM;
  job->fn = fn;
  job->arg = arg;
  job->queued = false;
  int rc = sa_dispatch(&blocking_op, job, mode, value, future);
  /* The work cannot finish before this thread returns to its loop. */
  if (!job->queued)
    free(job); /* never started, or failed to queue: nothing refers to it */
  return rc;
}

/* ---- futures ----------------------------------------------------------- */

static int result_of(struct sa_future_rec *r, sa_future_t f, void **value) {
  SA_HAPPENS_AFTER(&r->word); /* the caller saw W_DONE */
  int status = call_status(&r->call);
  void *v = call_value(&r->call);
  /* Read the result before the word again [call_settle()]. */
  atomic_thread_fence(memory_order_acquire);
  SA_HAPPENS_BEFORE(&r->word); /* before the record's reuse [rec_take()] */
  uint64_t w = atomic_load_explicit(&r->word, memory_order_relaxed);
  if (W_GEN(w) != (uint32_t)(f.id >> 32))
    return SA_ESTALE; /* released while we looked */
  if (value)
    *value = v;
  return status;
}

int sa_future_status(sa_future_t future, void **value) {
  uint64_t w;
  if (future.id == 0)
    return SA_EINVAL;
  struct sa_future_rec *r = lookup(future, &w);
  if (!r)
    return SA_ESTALE;
  if (!(w & W_DONE))
    return SA_PENDING;
  return result_of(r, future, value);
}

int sa_future_then(sa_future_t future, sa_continuation_cb cb, void *data) {
  uint64_t w;
  if (future.id == 0 || !cb)
    return SA_EINVAL;
  struct sa_future_rec *r = lookup(future, &w);
  if (!r)
    return SA_ESTALE;
  if (call_owner(&r->call) != &sa_self)
    return SA_EPERM;
  if (r->cont)
    return SA_EALREADY;
  struct sa_ctx *ctx = call_ctx(&r->call);
  if (atomic_load_explicit(&ctx->id, memory_order_relaxed) !=
      atomic_load_explicit(&r->ctx_id, memory_order_relaxed))
    return SA_ECANCELED; /* its loop is gone: nowhere to run it */
  if (!(w & W_DONE)) {
    r->cont = cb;
    r->cont_data = data;
    return 0;
  }
  /* Already delivered: queue the continuation on the loop. The holder may
   * release from another thread meanwhile, hence the compare-exchange. */
  SA_HAPPENS_BEFORE(&r->word);
  do {
    if (W_GEN(w) != (uint32_t)(future.id >> 32) || (w & W_RELEASED))
      return SA_ESTALE;
  } while (!atomic_compare_exchange_weak(&r->word, &w, w | W_QUEUED));
  SA_HAPPENS_AFTER(&r->word);
  r->cont = cb;
  r->cont_data = data;
  int err = defer(ctx, r);
  if (err) {
    r->cont = NULL;
    atomic_fetch_and(&r->word, ~(uint64_t)W_QUEUED);
  }
  return err;
}

/* Ask the loop that owns `r` to act on it (MSG_CANCEL, MSG_TIMEOUT): from a
 * thread that does not run that loop. The handle may have gone stale
 * meanwhile: the loop's thread checks it again. */
static int request(struct sa_future_rec *r, sa_future_t future, enum sa_msg_kind kind) {
  return post_request(call_ctx(&r->call), atomic_load_explicit(&r->ctx_id, memory_order_relaxed),
                      kind, future);
}

/* Sleep until another thread delivers `r`, it is released under us, or the
 * deadline passes (then false). */
static bool sleep_until_done(struct sa_future_rec *r, uint32_t gen, uint64_t deadline) {
  struct timespec at = {(time_t)(deadline / 1000000000u), (long)(deadline % 1000000000u)};
  bool done = true;
  uint64_t w;
  atomic_fetch_add(&r->sleepers, 1);
  pthread_mutex_lock(&r->mutex);
  while (!((w = atomic_load(&r->word)) & W_DONE) && W_GEN(w) == gen) {
    if (deadline == SA_NO_DEADLINE)
      pthread_cond_wait(&r->cond, &r->mutex);
    else if (pthread_cond_timedwait(&r->cond, &r->mutex, &at) == ETIMEDOUT &&
             !((w = atomic_load(&r->word)) & W_DONE) && W_GEN(w) == gen) {
      done = false;
      break;
    }
  }
  pthread_mutex_unlock(&r->mutex);
  atomic_fetch_sub(&r->sleepers, 1);
  return done;
}

/* sa_future_wait with a deadline [SA-FUT-3..5, SA-DL-3]. */
static int wait_for(struct sa_thread *t, sa_future_t future, uint64_t deadline,
                    void **value) {
  uint64_t w;
  if (future.id == 0)
    return SA_EINVAL;
  struct sa_future_rec *r = lookup(future, &w);
  if (!r)
    return SA_ESTALE;
  if (w & W_DONE)
    return result_of(r, future, value);
  struct sa_ctx *ctx = call_ctx(&r->call);
  bool mine = call_owner(&r->call) == t;
  if (mine && in_scope(t, ctx))
    return SA_EDEADLK; /* only this thread could deliver it */
  if (!mine || atomic_load_explicit(&ctx->running, memory_order_relaxed)) {
    if (!sleep_until_done(r, (uint32_t)(future.id >> 32), deadline)) {
      request(r, future, MSG_TIMEOUT);
      return SA_ETIMEDOUT;
    }
    return result_of(r, future, value);
  }
  int err = 0;
  if (deadline != SA_NO_DEADLINE && (err = deadline_arm(r, deadline)) != 0)
    return err;
  if ((err = scope_push(t, ctx)) != 0)
    return err;
  ctx->waiting++;
  while (!(atomic_load_explicit(&r->word, memory_order_acquire) & W_DONE)) {
    if (uv_run(ctx->loop, UV_RUN_DEFAULT) == 0 &&
        !(atomic_load_explicit(&r->word, memory_order_acquire) & W_DONE)) {
      err = SA_EDEADLK; /* nothing left on the loop can complete it */
      break;
    }
  }
  ctx->waiting--;
  scope_pop(t);
  return err ? err : result_of(r, future, value);
}

int sa_future_wait(sa_future_t future, void **value) {
  return wait_for(&sa_self, future, SA_NO_DEADLINE, value);
}

int sa_future_wait_until(sa_future_t future, uint64_t deadline, void **value) {
  return wait_for(&sa_self, future, deadline, value);
}

int sa_future_cancel(sa_future_t future) {
  uint64_t w;
  if (future.id == 0)
    return SA_EINVAL;
  struct sa_future_rec *r = lookup(future, &w);
  if (!r)
    return SA_ESTALE;
  if (w & W_DONE)
    return 0; /* delivered (or timed out) already */
  if (call_owner(&r->call) != &sa_self)
    return request(r, future, MSG_CANCEL); /* [SA-CAN-1] */
  return cancel_here(r);
}

int sa_future_release(sa_future_t future) {
  uint64_t w, next;
  if (future.id == 0)
    return SA_EINVAL;
  struct sa_future_rec *r = lookup(future, &w);
  if (!r)
    return SA_ESTALE;
  SA_HAPPENS_BEFORE(&r->word);
  do {
    if (W_GEN(w) != (uint32_t)(future.id >> 32) || (w & (W_RELEASED | W_FREE)))
      return SA_ESTALE;
    /* Delivered, no continuation queued, no op holding it: free now.
     * Otherwise whoever lets go last frees it. */
    next = (w & W_DONE) && !(w & (W_QUEUED | W_HELD)) ? W_NEXT_GEN_FREE(w) : w | W_RELEASED;
  } while (!atomic_compare_exchange_weak(&r->word, &w, next));
  SA_HAPPENS_AFTER(&r->word);
  if (next & W_FREE)
    rec_recycle(r);
  return 0;
}

/* ---- batches [SA-BAT-*] ------------------------------------------------- */

/* A batch is itself an op: its start function starts every item as an async
 * call on the loop it runs on, so in sync mode the items overlap on the
 * private loop that the sync call drives. */
struct batch_slot {
  struct batch *batch;
  sa_future_t future; /* null once the item's result is in, or dropped */
};

struct batch {
  sa_call_t *call;
  sa_batch_item_t *items;
  size_t n;
  size_t left; /* items still running */
  sa_batch_kind_t kind;
  sa_batch_item_t *decider; /* the batch's value */
  unsigned busy;            /* inside a loop over the slots, which frees it */
  bool finished;
  struct batch_slot slots[];
};

struct batch_request {
  sa_batch_item_t *items;
  size_t n;
  sa_batch_kind_t kind;
};

static void batch_finish(struct batch *b, int status) {
  b->finished = true;
  b->left = 0;
  sa_complete(b->call, status, b->decider);
  if (!b->busy)
    free(b);
}

/* Item `i` has its result. */
static void batch_settle(struct batch *b, size_t i, int status, void *value) {
  sa_batch_item_t *item = &b->items[i];
  item->status = status;
  item->value = value;
  if (b->kind == SA_BATCH_ALL) {
    if (status < 0 && (!b->decider || item < b->decider))
      b->decider = item; /* the first error in the items' order */
    if (--b->left == 0)
      batch_finish(b, b->decider ? b->decider->status : 0);
    return;
  }
  if (b->decider) { /* a loser has stopped: its result is dropped */
    item->status = SA_ECANCELED;
    item->value = NULL;
    if (--b->left == 0)
      batch_finish(b, b->decider->status);
    return;
  }
  /* The first to finish wins. The others are asked to stop, and the batch
   * completes once they have, so that none of them outlives the answer; one
   * that cannot be stopped (no cancel hook) is let go at once. */
  b->decider = item;
  b->left--;
  b->busy++;
  for (size_t j = 0; j < b->n; j++) {
    sa_future_t f = b->slots[j].future;
    if (f.id == 0)
      continue;
    b->items[j].status = SA_ECANCELED;
    if (sa_future_cancel(f) == SA_ENOTSUP && b->slots[j].future.id == f.id) {
      b->slots[j].future.id = 0;
      sa_future_release(f);
      b->left--;
    }
  }
  b->busy--;
  if (b->left == 0 && !b->finished)
    batch_finish(b, status);
  else if (b->finished && !b->busy)
    free(b);
}

static void batch_continuation(sa_future_t future, int status, void *value, void *data) {
  struct batch_slot *slot = data;
  if (slot->future.id != future.id)
    return; /* a loser delivering while the winner cancels it */
  slot->future.id = 0;
  sa_future_release(future);
  batch_settle(slot->batch, (size_t)(slot - slot->batch->slots), status, value);
}

static void batch_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  const struct batch_request *req = arg;
  (void)loop;
  if (req->n == 0) {
    sa_complete(call, 0, NULL);
    return;
  }
  struct batch *b = malloc(sizeof *b + req->n * sizeof b->slots[0]);
  if (!b) {
    sa_complete(call, SA_ENOMEM, NULL);
    return;
  }
  *b = (struct batch){.call = call, .items = req->items, .n = req->n, .left = req->n,
                      .kind = req->kind};
  call->arg = b; /* what the cancel hook gets */
  for (size_t i = 0; i < req->n; i++) {
    b->slots[i] = (struct batch_slot){b, SA_FUTURE_NULL};
    req->items[i].status = SA_PENDING;
    req->items[i].value = NULL;
  }
  /* Start them all. No continuation runs before this function returns
   * [SA-ASYNC-3], so `b` stays whole meanwhile. */
  for (size_t i = 0; i < req->n; i++) {
    sa_batch_item_t *item = &req->items[i];
    sa_future_t *f = &b->slots[i].future;
    int rc = sa_dispatch(item->op, item->arg, SA_MODE_ASYNC, NULL, f);
    if (rc == SA_PENDING && (rc = sa_future_then(*f, batch_continuation, &b->slots[i])) != 0)
      sa_future_release(*f);
    if (rc != 0) {
      f->id = 0;
      item->status = rc;
    }
  }
  /* An item that could not start has finished, with its error. */
  b->busy++;
  for (size_t i = 0; i < req->n && !b->finished; i++)
    if (b->slots[i].future.id == 0 && req->items[i].status != SA_PENDING)
      batch_settle(b, i, req->items[i].status, NULL);
  if (--b->busy == 0 && b->finished)
    free(b);
}

static void batch_cancel(sa_call_t *call, uv_loop_t *loop, void *arg) {
  struct batch *b = arg;
  (void)call;
  (void)loop;
  b->busy++;
  for (size_t i = 0; i < b->n && !b->finished; i++)
    if (b->slots[i].future.id != 0)
      sa_future_cancel(b->slots[i].future);
  if (--b->busy == 0 && b->finished)
    free(b);
}

static const sa_op_t batch_op = {batch_start, batch_cancel};

int sa_batch(sa_batch_item_t *items, size_t n, sa_batch_kind_t kind, sa_mode_t mode,
             void **value, sa_future_t *future) {
  if ((!items && n) || (kind != SA_BATCH_ALL && kind != SA_BATCH_FIRST) ||
      (kind == SA_BATCH_FIRST && n == 0) || n > SIZE_MAX / 2 / sizeof(struct batch_slot))
    return SA_EINVAL;
  for (size_t i = 0; i < n; i++)
    if (!items[i].op || !items[i].op->start)
      return SA_EINVAL;
  struct batch_request req = {items, n, kind};
  return sa_dispatch(&batch_op, &req, mode, value, future);
}

/* ---- home loops [SA-HOME-*] --------------------------------------------- */

/* A caller's call on a home loop. The caller's side is an async call of
 * home_op (a record on the caller's loop); its start function posts this
 * job to the home loop, which runs the real op there as an async call of
 * its own and posts the result back. Ownership follows the message: the
 * home loop until it replies, then the caller's loop, which frees it. */
struct home_job {
  struct sa_msg msg; /* MSG_HOME_CALL, then MSG_RESULT; target: the caller's call */
  const sa_op_t *op;
  void *arg;
  struct sa_ctx *home_ctx; /* fixed at creation: read by the caller's cancel hook */
  uint64_t home_ctx_id;
  struct sa_ctx *reply_ctx;
  uint64_t reply_ctx_id;
  int status; /* the result */
  void *value;
  sa_future_t inner; /* the call on the home loop, while in flight */
  bool cancel_sent;
  struct home_job *prev, *next; /* in flight on the home loop */
};

struct sa_home {
  pthread_t thread;
  uv_loop_t loop;
  struct sa_ctx *ctx; /* set before sa_home_start returns */
  uint64_t ctx_id;
  bool stopping; /* under ctx->inbox_mutex */
  struct home_job *inflight;
  /* start-up hand-shake */
  pthread_mutex_t mutex;
  pthread_cond_t cond;
  bool started;
  int start_err;
};

static bool home_stopping(struct sa_ctx *ctx) {
  pthread_mutex_lock(&ctx->inbox_mutex);
  bool stopping = ctx->home->stopping;
  pthread_mutex_unlock(&ctx->inbox_mutex);
  return stopping;
}

/* On the home thread: send the result back. The job is the caller's now. */
static void home_reply(struct home_job *job, int status, void *value) {
  job->status = status;
  job->value = value;
  job->msg.kind = MSG_RESULT;
  if (post(job->reply_ctx, job->reply_ctx_id, &job->msg) != 0)
    free(job); /* the caller's loop is gone, and its call with it */
}

static void home_unlink(struct sa_home *h, struct home_job *job) {
  if (job->prev)
    job->prev->next = job->next;
  else
    h->inflight = job->next;
  if (job->next)
    job->next->prev = job->prev;
}

static void home_call_done(sa_future_t inner, int status, void *value, void *data) {
  struct home_job *job = data;
  home_unlink(job->home_ctx->home, job);
  sa_future_release(inner);
  home_reply(job, status, value);
}

/* On the home thread, in async context on the home loop. */
static void home_call_start(struct sa_thread *t, struct sa_ctx *ctx, struct home_job *job) {
  struct sa_home *h = ctx->home;
  int rc = run_async(t, ctx, job->op, job->arg, &job->inner);
  if (rc == SA_PENDING && (rc = sa_future_then(job->inner, home_call_done, job)) != 0)
    sa_future_release(job->inner);
  if (rc != 0) {
    home_reply(job, rc, NULL);
    return;
  }
  job->cancel_sent = false;
  job->prev = NULL;
  job->next = h->inflight;
  if (h->inflight)
    h->inflight->prev = job;
  h->inflight = job;
}

static void home_call_cancel(struct sa_ctx *ctx, sa_future_t caller) {
  for (struct home_job *job = ctx->home->inflight; job; job = job->next) {
    if (job->msg.target.id == caller.id) {
      sa_future_cancel(job->inner);
      return;
    }
  }
}

/* sa_home_stop was called: give every call in flight its cancel hook; the
 * loop then stops and home_main settles what is left. */
static void home_begin_stop(struct sa_ctx *ctx) {
  struct sa_home *h = ctx->home;
  struct home_job *job;
  do { /* a cancel may finish any number of jobs: look again each time */
    for (job = h->inflight; job && job->cancel_sent; job = job->next)
      ;
    if (job) {
      job->cancel_sent = true;
      sa_future_cancel(job->inner);
    }
  } while (job);
  uv_stop(ctx->loop);
}

/* The caller's side: post the job, or settle at once if the home is gone. */
struct home_request {
  struct sa_home *home;
  const sa_op_t *op;
  void *arg;
};

static void home_op_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  const struct home_request *req = arg;
  struct sa_future_rec *r = (struct sa_future_rec *)call;
  struct sa_ctx *ctx = call_ctx(call);
  (void)loop;
  struct home_job *job = malloc(sizeof *job);
  if (!job) {
    sa_complete(call, SA_ENOMEM, NULL);
    return;
  }
  job->msg.kind = MSG_HOME_CALL;
  job->msg.target = handle_of(r, atomic_load_explicit(&r->word, memory_order_relaxed));
  job->op = req->op;
  job->arg = req->arg;
  job->home_ctx = req->home->ctx;
  job->home_ctx_id = req->home->ctx_id;
  job->reply_ctx = ctx;
  job->reply_ctx_id = atomic_load_explicit(&r->ctx_id, memory_order_relaxed);
  call->arg = job; /* what the cancel hook gets */
  if (post(job->home_ctx, job->home_ctx_id, &job->msg) != 0) {
    free(job);
    sa_complete(call, SA_ECANCELED, NULL); /* stopped [SA-HOME-4] */
    return;
  }
  remote_add(ctx);
}

/* Only while the caller's call is pending, so the job is alive; it reads
 * only fields fixed before the job was posted. */
static void home_op_cancel(sa_call_t *call, uv_loop_t *loop, void *arg) {
  const struct home_job *job = arg;
  (void)call;
  (void)loop;
  post_request(job->home_ctx, job->home_ctx_id, MSG_HOME_CANCEL, job->msg.target);
}

static const sa_op_t home_op = {home_op_start, home_op_cancel};

static void home_started(struct sa_home *h, int err) {
  pthread_mutex_lock(&h->mutex);
  h->started = true;
  h->start_err = err;
  pthread_cond_signal(&h->cond);
  pthread_mutex_unlock(&h->mutex);
}

static void *home_main(void *arg) {
  struct sa_home *h = arg;
  struct sa_thread *t = &sa_self;
  int err = uv_loop_init(&h->loop);
  if (err) {
    home_started(h, err);
    return NULL;
  }
  if ((err = sa_enter(&h->loop)) == 0) {
    struct sa_ctx *ctx = top_ctx(t);
    if ((err = wakeup_init(ctx)) == 0) {
      ctx->home = h;
      uv_ref((uv_handle_t *)&ctx->wakeup); /* the loop runs until stopped */
      h->ctx = ctx;
      h->ctx_id = atomic_load(&ctx->id);
    }
  }
  home_started(h, err);
  if (err) {
    if (t->depth)
      sa_leave(&h->loop);
    sa_loop_close(&h->loop);
    return NULL;
  }
  while (!home_stopping(h->ctx)) /* an op may have stopped the loop */
    uv_run(&h->loop, UV_RUN_DEFAULT);
  sa_leave(&h->loop);
  /* Stopping. Calls still queued are answered with SA_ECANCELED by
   * loop_teardown, which lets nothing new in [SA-HOME-4]. */
  /* A result the op produced but the loop had no time to deliver stands. */
  for (struct home_job *job = h->inflight; job; job = job->next) {
    uint64_t w;
    struct sa_future_rec *r = lookup(job->inner, &w);
    bool done = r && (r->call.flags & CALL_COMPLETED) && !(r->call.flags & CALL_TIMED_OUT);
    job->status = done ? r->call.status : SA_ECANCELED;
    job->value = done ? r->call.value : NULL;
    sa_future_release(job->inner);
  }
  /* Answer only once the loop is drained: close callbacks of the ops may
   * still use their arguments until then. */
  loop_teardown(h->ctx);
  struct home_job *job;
  while ((job = h->inflight) != NULL) {
    home_unlink(h, job);
    home_reply(job, job->status, job->value); /* the job is the caller's now */
  }
  ctx_unregister(h->ctx);
  ctx_to_spares(h->ctx);
  sa_thread_cleanup();
  return NULL;
}

int sa_home_start(sa_home_t **home) {
  if (!home)
    return SA_EINVAL;
  *home = NULL;
  struct sa_home *h = calloc(1, sizeof *h);
  if (!h)
    return SA_ENOMEM;
  pthread_mutex_init(&h->mutex, NULL);
  pthread_cond_init(&h->cond, NULL);
  int err = -pthread_create(&h->thread, NULL, home_main, h);
  if (err == 0) {
    pthread_mutex_lock(&h->mutex);
    while (!h->started)
      pthread_cond_wait(&h->cond, &h->mutex);
    pthread_mutex_unlock(&h->mutex);
    if ((err = h->start_err) != 0)
      pthread_join(h->thread, NULL);
  }
  if (err) {
    pthread_cond_destroy(&h->cond);
    pthread_mutex_destroy(&h->mutex);
    free(h);
    return err;
  }
  *home = h;
  return 0;
}

int sa_home_call(sa_home_t *home, const sa_op_t *op, void *arg, sa_mode_t mode,
                 void **value, sa_future_t *future) {
  if (!home || !op || !op->start || bad_mode(mode, future))
    return SA_EINVAL;
  /* The home thread blocking on its own loop would never be answered. */
  if (runs_sync(&sa_self, mode) && pthread_equal(pthread_self(), home->thread)) {
    if (future)
      future->id = 0;
    return SA_EDEADLK;
  }
  struct home_request req = {home, op, arg};
  return dispatch_record(&home_op, &req, mode, SA_NO_DEADLINE, value, future);
}

int sa_home_stop(sa_home_t *home) {
  if (!home)
    return SA_EINVAL;
  if (pthread_equal(pthread_self(), home->thread))
    return SA_EDEADLK;
  struct sa_ctx *ctx = home->ctx;
  pthread_mutex_lock(&ctx->inbox_mutex);
  home->stopping = true;
  uv_async_send(&ctx->wakeup);
  pthread_mutex_unlock(&ctx->inbox_mutex);
  pthread_join(home->thread, NULL);
  pthread_cond_destroy(&home->cond);
  pthread_mutex_destroy(&home->mutex);
  free(home);
  return 0;
}

/* ---- messages: what the receiving loop's thread does -------------------- */

static void handle_msg(struct sa_thread *t, struct sa_ctx *ctx, struct sa_msg *m) {
  struct sa_future_rec *r;
  switch (m->kind) {
  case MSG_CANCEL:
  case MSG_TIMEOUT:
    if ((r = local_call(t, ctx, m->target)) != NULL) {
      if (m->kind == MSG_CANCEL)
        cancel_here(r);
      else
        time_out(r);
    }
    free(m);
    return;
  case MSG_RESULT: {
    struct home_job *job = (struct home_job *)m;
    remote_done(ctx);
    if ((r = local_call(t, ctx, m->target)) != NULL)
      sa_complete(&r->call, job->status, job->value);
    free(job);
    return;
  }
  case MSG_HOME_CALL:
    home_call_start(t, ctx, (struct home_job *)m);
    return;
  case MSG_HOME_CANCEL:
    home_call_cancel(ctx, m->target);
    free(m);
    return;
  }
}

/* A message whose loop is going away. */
static void drop_msg(struct sa_msg *m) {
  if (m->kind == MSG_HOME_CALL)
    home_reply((struct home_job *)m, SA_ECANCELED, NULL); /* [SA-HOME-4] */
  else
    free(m);
}

/* Descriptions of errno codes, made once: strerror() may share one buffer
 * between threads, and a string returned must stay valid and unchanged. */
#define ERRNO_TEXTS 160 /* Linux codes end below 140 */
static char errno_texts[ERRNO_TEXTS][64];
static pthread_once_t errno_texts_once = PTHREAD_ONCE_INIT;

static void errno_texts_init(void) {
  for (int e = 0; e < ERRNO_TEXTS; e++)
    if (strerror_r(e, errno_texts[e], sizeof errno_texts[e]) != 0)
      snprintf(errno_texts[e], sizeof errno_texts[e], "unknown error %d", e);
}

const char *sa_strerror(int code) {
  switch (code) {
  case 0: return "success";
  case SA_PENDING: return "pending: the result will come through the future";
  case SA_EINVAL: return "invalid argument";
  case SA_ENOMEM: return "out of memory";
  case SA_ESTALE: return "future released or unknown";
  case SA_EALREADY: return "already completed, or continuation already set";
  case SA_EDEADLK: return "waiting would deadlock: nothing can complete the call";
  case SA_ELOOP: return "sync calls nested too deep";
  case SA_EBUSY: return "loop running, or calls pending on it";
  case SA_EPERM: return "not allowed from this thread";
  case SA_ENOTSUP: return "operation cannot be cancelled";
  case SA_ECANCELED: return "cancelled";
  case SA_ETIMEDOUT: return "the deadline passed first";
  default: break;
  }
  if (code > 0)
    return "unknown code";
  if (code > -ERRNO_TEXTS) {
    pthread_once(&errno_texts_once, errno_texts_init);
    return errno_texts[-code];
  }
  /* libuv's own codes (UV_EOF, UV_EAI_*): uv_strerror returns a static
   * string for those it knows, but leaks a fresh one for any other. */
  static const char unknown[] = "Unknown system error";
  char probe[64];
  if (strncmp(uv_strerror_r(code, probe, sizeof probe), unknown, sizeof unknown - 1) == 0)
    return "unknown error code";
  return uv_strerror(code);
}
