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
 *   call record lives on the caller's stack. The wait is
 *   `while (!done) uv_run(UV_RUN_DEFAULT)` with the completion calling
 *   uv_stop(): UV_RUN_ONCE can hang in libuv 1.44.2 when a timer completes
 *   the call while another handle is alive.
 *
 * - Async calls get a record from a pool of type-stable records (never
 *   freed while the process lives) addressed by handles carrying a
 *   generation, so a released future is detected, not dereferenced
 *   [SA-FUT-6]. A completion made inside the op's start function is queued
 *   on the loop's context and delivered by an idle handle once the call has
 *   returned [SA-ASYNC-3]; a later completion is delivered at once.
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
#include <stdlib.h>
#include <string.h>

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
#define NO_INDEX UINT32_MAX
#define CACHE_REFILL 256u /* records a thread takes from the pool at once */
#define CACHE_HIGH 4096u  /* a thread's cache spills half above this */

/* Flags in the low bits of a record's word; the generation is the high half. */
#define W_DONE 1u     /* result delivered: visible to the future's holder */
#define W_RELEASED 2u /* the holder gave the future back */
#define W_QUEUED 4u   /* a late continuation is queued on the loop */
#define W_FREE 8u     /* in the pool: no handle refers to it */
#define W_GEN(w) ((uint32_t)((w) >> 32))
#define W_NEXT_GEN_FREE(w) ((((uint64_t)W_GEN(w) + 1) << 32) | W_FREE)

struct sa_thread;
struct sa_future_rec;

/* The dispatcher's state for one loop. Touched only by the thread running
 * the loop, except `running` and `id`, which other threads may read.
 * Type-stable: kept for reuse, never freed, so a future that outlived its
 * loop can still check `id` safely. */
struct sa_ctx {
  uv_loop_t *loop;
  _Atomic uint64_t id;   /* unique per use; 0 once the loop is gone */
  atomic_uint running;   /* scopes on it, on whichever thread runs it */
  unsigned waiting;      /* future waits driving it: deliveries stop it */
  bool drain_ready;      /* `drain` initialised */
  bool drain_started;    /* `drain` active: the deferred queue is not empty */
  uv_idle_t drain;       /* delivers the deferred queue */
  struct sa_future_rec *deferred_head, *deferred_tail;
  struct sa_future_rec *pending; /* undelivered async calls */
  unsigned npending;
  struct sa_ctx *next_registered; /* application loops only */
};

/* Call flags. */
#define CALL_ASYNC 1u     /* a pool record behind a future */
#define CALL_NOTIFY 2u    /* completing must act: stop the sync wait, or deliver.
                             Clear while op->start runs: the dispatcher looks
                             when it returns. */
#define CALL_COMPLETED 4u /* sa_complete was called */

/* A sync call sets only owner, loop and flags (it lives on the caller's
 * stack for one call); an async call sets everything. */
struct sa_call {
  struct sa_thread *owner;
  uv_loop_t *loop;
  unsigned flags;
  int status;
  void *value;
  struct sa_ctx *ctx;
  const sa_op_t *op;
  void *arg;
};

struct sa_future_rec {
  struct sa_call call;
  uint64_t ctx_id; /* call.ctx->id when dispatched */
  _Atomic uint64_t word; /* generation << 32 | W_* flags */
  uint32_t index;
  uint32_t next_free;
  sa_continuation_cb cont;
  void *cont_data;
  struct sa_future_rec *next_deferred;
  struct sa_future_rec *prev_pending, *next_pending;
  atomic_int sleepers; /* threads blocked in sa_future_wait */
  pthread_mutex_t mutex;
  pthread_cond_t cond;
};

/* A private loop: the loop and its context in one allocation. */
struct sa_private {
  struct sa_ctx ctx;
  uv_loop_t loop;
  struct sa_private *next_spare; /* in sa_spare_privates or sa_abandoned */
};

struct sa_thread {
  unsigned depth;
  struct sa_ctx *scopes[SA_MAX_SCOPES];
  struct sa_private *priv[SA_MAX_SYNC_DEPTH];
  uint32_t free_head; /* this thread's cache of pool records */
  unsigned free_count;
  bool exit_hook_set;
};

/* initial-exec: a TLS read costs a few instructions even in a shared
 * library (the general-dynamic model calls __tls_get_addr). */
static _Thread_local struct sa_thread sa_self SA_TLS_MODEL = {
    .free_head = NO_INDEX};

static pthread_once_t sa_once = PTHREAD_ONCE_INIT;
static pthread_key_t sa_exit_key;
static pthread_mutex_t sa_pool_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t sa_registry_mutex = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(struct sa_future_rec *) sa_chunks[MAX_CHUNKS];
static unsigned sa_nchunks;             /* under sa_pool_mutex */
static uint32_t sa_pool_free = NO_INDEX; /* under sa_pool_mutex */
static struct sa_ctx *sa_registry;      /* under sa_registry_mutex */
/* Contexts of closed loops, for reuse (under sa_registry_mutex). */
static struct sa_ctx *sa_spare_ctxs;
static struct sa_private *sa_spare_privates;
static _Atomic uint64_t sa_next_ctx_id = 1;
/* Private loops inherited by a fork child: never touched, kept reachable. */
static struct sa_private *sa_abandoned;

static void thread_exit(void *arg);

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

static inline struct sa_future_rec *rec_at(uint32_t index) {
  struct sa_future_rec *chunk =
      atomic_load_explicit(&sa_chunks[index >> CHUNK_BITS], memory_order_acquire);
  return &chunk[index & (CHUNK_SIZE - 1)];
}

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
    r->next_free = i + 1 < CHUNK_SIZE ? base + i + 1 : sa_pool_free;
    atomic_init(&r->word, ((uint64_t)1 << 32) | W_FREE);
    SA_ATOMIC_VARIABLE(&r->word, sizeof r->word);
    SA_ATOMIC_VARIABLE(&r->sleepers, sizeof r->sleepers);
    pthread_mutex_init(&r->mutex, NULL);
    pthread_cond_init(&r->cond, NULL);
  }
  atomic_store_explicit(&sa_chunks[sa_nchunks], chunk, memory_order_release);
  sa_nchunks++;
  sa_pool_free = base;
  return 0;
}

SA_COLD static int cache_refill(struct sa_thread *t) {
  int err = 0;
  set_exit_hook(t);
  pthread_mutex_lock(&sa_pool_mutex);
  if (sa_pool_free == NO_INDEX)
    err = pool_grow();
  for (unsigned n = 0; n < CACHE_REFILL && sa_pool_free != NO_INDEX; n++) {
    struct sa_future_rec *r = rec_at(sa_pool_free);
    sa_pool_free = r->next_free;
    r->next_free = t->free_head;
    t->free_head = r->index;
    t->free_count++;
  }
  pthread_mutex_unlock(&sa_pool_mutex);
  return t->free_count ? 0 : err;
}

SA_COLD static void cache_spill(struct sa_thread *t, unsigned keep) {
  pthread_mutex_lock(&sa_pool_mutex);
  while (t->free_count > keep) {
    struct sa_future_rec *r = rec_at(t->free_head);
    t->free_head = r->next_free;
    t->free_count--;
    r->next_free = sa_pool_free;
    sa_pool_free = r->index;
  }
  pthread_mutex_unlock(&sa_pool_mutex);
}

static inline struct sa_future_rec *rec_alloc(struct sa_thread *t) {
  if (SA_UNLIKELY(t->free_count == 0) && cache_refill(t) != 0)
    return NULL;
  struct sa_future_rec *r = rec_at(t->free_head);
  t->free_head = r->next_free;
  t->free_count--;
  /* Nobody else can see the record yet: a relaxed store suffices. */
  uint64_t w = atomic_load_explicit(&r->word, memory_order_relaxed);
  atomic_store_explicit(&r->word, w & ~(uint64_t)W_FREE, memory_order_relaxed);
  return r;
}

/* Return a record whose word already says W_FREE to this thread's cache. */
static inline void rec_recycle(struct sa_future_rec *r) {
  struct sa_thread *t = &sa_self;
  set_exit_hook(t);
  r->next_free = t->free_head;
  t->free_head = r->index;
  if (++t->free_count > CACHE_HIGH)
    cache_spill(t, CACHE_HIGH / 2);
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

/* Mark the result delivered. Returns the word before, whose W_RELEASED says
 * whether the holder already let go (the record is then freed, unless
 * `keep_released` asks the caller to free it later). */
static inline uint64_t mark_done(struct sa_future_rec *r, bool keep_released) {
  uint64_t w = atomic_load_explicit(&r->word, memory_order_relaxed), next;
  SA_HAPPENS_BEFORE(&r->word);
  do {
    next = (w & W_RELEASED) && !keep_released ? W_NEXT_GEN_FREE(w) : w | W_DONE;
  } while (!atomic_compare_exchange_weak_explicit(
      &r->word, &w, next, memory_order_acq_rel, memory_order_relaxed));
  SA_HAPPENS_AFTER(&r->word);
  wake_sleepers(r);
  return w;
}

static void deliver(struct sa_future_rec *r) {
  struct sa_ctx *ctx = r->call.ctx;
  pending_unlink(ctx, r);
  /* Read everything before the record can change hands. */
  sa_continuation_cb cb = r->cont;
  void *data = r->cont_data;
  int status = r->call.status;
  void *value = r->call.value;
  uint64_t w = mark_done(r, false);
  if (ctx->waiting)
    uv_stop(ctx->loop); /* a future wait drives this loop: let it look */
  if (w & W_RELEASED) {
    rec_recycle(r);
    return;
  }
  if (cb)
    cb(handle_of(r, w), status, value, data);
}

/* Take a late continuation off the queue. Returns true if the holder
 * still has the future; false if it was released meanwhile (freed now). */
static bool unqueue_late(struct sa_future_rec *r, uint64_t *word) {
  uint64_t w = atomic_load_explicit(&r->word, memory_order_relaxed), next;
  SA_HAPPENS_BEFORE(&r->word);
  do {
    next = (w & W_RELEASED) ? W_NEXT_GEN_FREE(w) : w & ~(uint64_t)W_QUEUED;
  } while (!atomic_compare_exchange_weak_explicit(
      &r->word, &w, next, memory_order_acq_rel, memory_order_relaxed));
  SA_HAPPENS_AFTER(&r->word);
  *word = w;
  if (w & W_RELEASED) {
    rec_recycle(r);
    return false;
  }
  return true;
}

/* A continuation attached after delivery: run it unless released since. */
static void run_late_continuation(struct sa_future_rec *r) {
  uint64_t w;
  if (unqueue_late(r, &w))
    r->cont(handle_of(r, w), r->call.status, r->call.value, r->cont_data);
}

static void on_drain(uv_idle_t *idle) {
  struct sa_ctx *ctx = idle->data;
  struct sa_thread *t = &sa_self;
  struct sa_future_rec *r = ctx->deferred_head;
  ctx->deferred_head = ctx->deferred_tail = NULL;
  ctx->drain_started = false;
  uv_idle_stop(idle);
  /* Continuations are async context on this loop, also when the
   * application runs it without a scope around uv_run. */
  bool pushed = top_ctx(t) != ctx && scope_push(t, ctx) == 0;
  while (r) {
    struct sa_future_rec *next = r->next_deferred;
    if (atomic_load_explicit(&r->word, memory_order_relaxed) & W_DONE)
      run_late_continuation(r);
    else
      deliver(r);
    r = next;
  }
  if (pushed)
    scope_pop(t);
}

SA_COLD static int drain_start(struct sa_ctx *ctx) {
  int err = 0;
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

/* Queue `r` for delivery from the loop, after the current call returns. */
static inline int defer(struct sa_ctx *ctx, struct sa_future_rec *r) {
  if (SA_UNLIKELY(!ctx->drain_started)) {
    int err = drain_start(ctx);
    if (err)
      return err;
  }
  r->next_deferred = NULL;
  if (ctx->deferred_tail)
    ctx->deferred_tail->next_deferred = r;
  else
    ctx->deferred_head = r;
  ctx->deferred_tail = r;
  return 0;
}

/* ---- loops and contexts ------------------------------------------------ */

static void ctx_init(struct sa_ctx *ctx, uv_loop_t *loop) {
  memset(ctx, 0, sizeof *ctx);
  ctx->loop = loop;
  atomic_init(&ctx->running, 0);
  atomic_init(&ctx->id, atomic_fetch_add(&sa_next_ctx_id, 1));
}

/* Retire a context: futures that outlive it see the id change. */
static void ctx_retire(struct sa_ctx *ctx) { atomic_store(&ctx->id, 0); }

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

/* Settle every undelivered call on `ctx` with SA_ECANCELED, close every
 * handle of its loop and close the loop. Continuations are not called: the
 * loop they would run on is going away. */
static void private_destroy(struct sa_private *p) {
  struct sa_ctx *ctx = &p->ctx;
  struct sa_future_rec *released = NULL;
  struct sa_future_rec *q = ctx->deferred_head;
  ctx->deferred_head = ctx->deferred_tail = NULL;
  while (q) {
    struct sa_future_rec *r = q;
    uint64_t w;
    q = r->next_deferred;
    if (atomic_load_explicit(&r->word, memory_order_relaxed) & W_DONE)
      unqueue_late(r, &w); /* late continuation dropped with its loop */
  }
  while (ctx->pending) {
    struct sa_future_rec *r = ctx->pending;
    pending_unlink(ctx, r);
    if (!(r->call.flags & CALL_COMPLETED)) {
      r->call.flags |= CALL_COMPLETED;
      r->call.status = SA_ECANCELED;
      r->call.value = NULL;
    }
    /* Ops may still call sa_complete on it while the loop drains: keep a
     * released record out of the pool until then. */
    if (mark_done(r, true) & W_RELEASED) {
      r->next_deferred = released;
      released = r;
    }
  }
  uv_walk(&p->loop, close_any, NULL);
  while (uv_loop_close(&p->loop) == UV_EBUSY)
    uv_run(&p->loop, UV_RUN_DEFAULT);
  while (released) {
    struct sa_future_rec *r = released;
    released = r->next_deferred;
    SA_HAPPENS_AFTER(&r->word); /* a releasing thread let go of it */
    atomic_store(&r->word, W_NEXT_GEN_FREE(atomic_load(&r->word)));
    rec_recycle(r);
  }
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
      if (!p && !(p = malloc(sizeof *p)))
        return SA_ENOMEM;
      ctx_init(&p->ctx, &p->loop);
      int err = uv_loop_init(&p->loop);
      if (err) {
        private_to_spares(p);
        return err;
      }
      t->priv[k] = p;
    }
    if (atomic_load_explicit(&p->ctx.running, memory_order_relaxed) == 0) {
      *out = p;
      return 0;
    }
  }
  return SA_ELOOP;
}

/* The context of `loop`: a private loop of this thread, or an application
 * loop from the registry (added if `create`). */
static struct sa_ctx *ctx_of(struct sa_thread *t, uv_loop_t *loop, bool create) {
  for (unsigned k = 0; k < SA_MAX_SYNC_DEPTH; k++)
    if (t->priv[k] && &t->priv[k]->loop == loop)
      return &t->priv[k]->ctx;
  pthread_mutex_lock(&sa_registry_mutex);
  struct sa_ctx *ctx = sa_registry;
  while (ctx && ctx->loop != loop)
    ctx = ctx->next_registered;
  if (!ctx && create) {
    if ((ctx = sa_spare_ctxs) != NULL)
      sa_spare_ctxs = ctx->next_registered;
    else if ((ctx = malloc(sizeof *ctx)) == NULL)
      goto out;
    ctx_init(ctx, loop);
    ctx->next_registered = sa_registry;
    sa_registry = ctx;
  }
out:
  pthread_mutex_unlock(&sa_registry_mutex);
  return ctx;
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
  if (atomic_load_explicit(&ctx->running, memory_order_relaxed))
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
  struct sa_ctx **link = &sa_registry;
  while (*link && (*link)->loop != loop)
    link = &(*link)->next_registered;
  struct sa_ctx *ctx = *link;
  if (ctx) {
    if (atomic_load_explicit(&ctx->running, memory_order_relaxed) ||
        ctx->npending || ctx->deferred_head) {
      pthread_mutex_unlock(&sa_registry_mutex);
      return SA_EBUSY;
    }
    *link = ctx->next_registered;
  }
  pthread_mutex_unlock(&sa_registry_mutex);
  if (ctx) {
    if (ctx->drain_ready) {
      uv_close((uv_handle_t *)&ctx->drain, NULL);
      uv_run(loop, UV_RUN_NOWAIT); /* finishes the close */
    }
    ctx_retire(ctx);
    pthread_mutex_lock(&sa_registry_mutex);
    ctx->next_registered = sa_spare_ctxs;
    sa_spare_ctxs = ctx;
    pthread_mutex_unlock(&sa_registry_mutex);
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
      call->status = SA_EDEADLK;
      call->value = NULL;
    }
  }
}

/* Run `op` to completion on private loop `p`. */
static inline int run_sync(struct sa_thread *t, struct sa_private *p, const sa_op_t *op,
                           void *arg, void **value) {
  struct sa_call call;
  call.owner = t;
  call.loop = &p->loop;
  call.flags = 0;
  if (SA_UNLIKELY(scope_push(t, &p->ctx) != 0))
    return SA_ELOOP;
  op->start(&call, &p->loop, arg);
  if (!(call.flags & CALL_COMPLETED))
    sync_wait(p, &call);
  scope_pop(t);
  if (value)
    *value = call.value;
  return call.status;
}

/* A sync call needing another private loop than the first: nested in a
 * running loop, or the thread's first call. */
SA_COLD static int run_sync_slow(struct sa_thread *t, const sa_op_t *op, void *arg,
                                 void **value) {
  struct sa_private *p;
  int err = pick_private(t, &p);
  return err ? err : run_sync(t, p, op, arg, value);
}

static int run_async(struct sa_thread *t, struct sa_ctx *ctx, const sa_op_t *op,
                     void *arg, sa_future_t *future) {
  struct sa_future_rec *r = rec_alloc(t);
  if (SA_UNLIKELY(!r))
    return SA_ENOMEM;
  r->call.owner = t;
  r->call.loop = ctx->loop;
  r->call.flags = CALL_ASYNC;
  r->call.ctx = ctx;
  r->call.op = op;
  r->call.arg = arg;
  r->ctx_id = atomic_load_explicit(&ctx->id, memory_order_relaxed);
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

/* Async forced in sync context: start on private loop 0, in async context
 * on it; waiting on the future drives it [SA-MODE-4]. */
SA_COLD static int run_async_from_sync(struct sa_thread *t, const sa_op_t *op, void *arg,
                                       sa_future_t *future) {
  struct sa_private *p;
  int err = pick_private(t, &p);
  if (err)
    return err;
  scope_push(t, &p->ctx); /* cannot fail: no scope is open */
  err = run_async(t, &p->ctx, op, arg, future);
  scope_pop(t);
  return err;
}

/* Whether a call in `mode` runs synchronously: forced, or auto in sync
 * context [SA-DET-1, SA-MODE-1]. */
static inline bool runs_sync(const struct sa_thread *t, sa_mode_t mode) {
  return mode == SA_MODE_SYNC || (mode == SA_MODE_AUTO && t->depth == 0);
}

int sa_dispatch(const sa_op_t *op, void *arg, sa_mode_t mode, void **value,
                sa_future_t *future) {
  struct sa_thread *t = &sa_self;
  if (SA_UNLIKELY(!op || !op->start || (unsigned)mode > SA_MODE_ASYNC ||
                  (!future && mode != SA_MODE_SYNC)))
    return SA_EINVAL;
  if (future)
    future->id = 0;
  /* A blocking call from plain code. With no scope open, no private loop
   * of this thread is running: only their own thread runs them. */
  struct sa_private *p = t->priv[0];
  if (SA_LIKELY(t->depth == 0 && p && mode != SA_MODE_ASYNC))
    return run_sync(t, p, op, arg, value);
  if (runs_sync(t, mode))
    return run_sync_slow(t, op, arg, value);
  if (value)
    *value = NULL;
  if (t->depth)
    return run_async(t, top_ctx(t), op, arg, future);
  return run_async_from_sync(t, op, arg, future);
}

/* A completion after op->start returned: wake the sync wait, or deliver.
 * Not inlined, so that sa_complete's inline path needs no stack frame. */
SA_NOINLINE static void notify(struct sa_thread *t, sa_call_t *call) {
  if (!(call->flags & CALL_ASYNC)) {
    uv_stop(call->loop); /* the sync wait checks at once */
    return;
  }
  struct sa_future_rec *r = (struct sa_future_rec *)call;
  if (top_ctx(t) == call->ctx || defer(call->ctx, r) != 0)
    deliver(r);
}

int sa_complete(sa_call_t *call, int status, void *value) {
  if (SA_UNLIKELY(!call || status > 0))
    return SA_EINVAL;
  struct sa_thread *t = &sa_self;
  unsigned flags = call->flags;
  if (SA_UNLIKELY(call->owner != t))
    return SA_EPERM;
  if (SA_UNLIKELY(flags & CALL_COMPLETED))
    return SA_EALREADY;
  call->flags = flags | CALL_COMPLETED;
  call->status = status;
  call->value = value;
  if (SA_LIKELY(!(flags & CALL_NOTIFY)))
    return 0; /* inside op->start: the dispatcher looks when it returns */
  notify(t, call);
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
  if (!fn || (unsigned)mode > SA_MODE_ASYNC || (!future && mode != SA_MODE_SYNC))
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
  int status = r->call.status;
  void *v = r->call.value;
  uint64_t w = atomic_load_explicit(&r->word, memory_order_acquire);
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
  if (r->call.owner != &sa_self)
    return SA_EPERM;
  if (r->cont)
    return SA_EALREADY;
  if (atomic_load_explicit(&r->call.ctx->id, memory_order_relaxed) != r->ctx_id)
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
  int err = defer(r->call.ctx, r);
  if (err) {
    r->cont = NULL;
    atomic_fetch_and(&r->word, ~(uint64_t)W_QUEUED);
  }
  return err;
}

/* Sleep until another thread delivers `r` (or it is released under us). */
static void sleep_until_done(struct sa_future_rec *r, uint32_t gen) {
  uint64_t w;
  atomic_fetch_add(&r->sleepers, 1);
  pthread_mutex_lock(&r->mutex);
  while (!((w = atomic_load(&r->word)) & W_DONE) && W_GEN(w) == gen)
    pthread_cond_wait(&r->cond, &r->mutex);
  pthread_mutex_unlock(&r->mutex);
  atomic_fetch_sub(&r->sleepers, 1);
}

int sa_future_wait(sa_future_t future, void **value) {
  struct sa_thread *t = &sa_self;
  uint64_t w;
  if (future.id == 0)
    return SA_EINVAL;
  struct sa_future_rec *r = lookup(future, &w);
  if (!r)
    return SA_ESTALE;
  if (w & W_DONE)
    return result_of(r, future, value);
  struct sa_ctx *ctx = r->call.ctx;
  if (r->call.owner != t ||
      atomic_load_explicit(&ctx->running, memory_order_relaxed)) {
    if (r->call.owner == t && in_scope(t, ctx))
      return SA_EDEADLK; /* only this thread could deliver it */
    sleep_until_done(r, (uint32_t)(future.id >> 32));
    return result_of(r, future, value);
  }
  int err = scope_push(t, ctx);
  if (err)
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

int sa_future_cancel(sa_future_t future) {
  uint64_t w;
  if (future.id == 0)
    return SA_EINVAL;
  struct sa_future_rec *r = lookup(future, &w);
  if (!r)
    return SA_ESTALE;
  if (r->call.owner != &sa_self)
    return SA_EPERM;
  if (r->call.flags & CALL_COMPLETED)
    return 0;
  if (!r->call.op->cancel)
    return SA_ENOTSUP;
  r->call.op->cancel(&r->call, r->call.loop, r->call.arg);
  return 0;
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
    /* Delivered and no continuation queued: free now. Otherwise the loop
     * frees it when it gets there. */
    next = (w & W_DONE) && !(w & W_QUEUED) ? W_NEXT_GEN_FREE(w) : w | W_RELEASED;
  } while (!atomic_compare_exchange_weak(&r->word, &w, next));
  SA_HAPPENS_AFTER(&r->word);
  if (next & W_FREE)
    rec_recycle(r);
  return 0;
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
  default: return code < 0 ? uv_strerror(code) : "unknown code";
  }
}
