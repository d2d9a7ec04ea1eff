/*
 * internal.h - what the files of the reference dispatcher share: its
 * structures, the small functions of its hot paths (static inline, so that
 * each hot path stays within one file), and the functions each file gives
 * the others. README.md in this directory says how it works and which file
 * does what.
 *
 * A name with the sa__ prefix is shared between files, and hidden: a
 * program linked with the library sees the public API of smartasync.h
 * alone. A name without it is its file's own.
 */
#ifndef SA_INTERNAL_H
#define SA_INTERNAL_H

#include "smartasync.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define SA_TLS_MODEL __attribute__((tls_model("initial-exec")))
#define SA_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define SA_LIKELY(x) __builtin_expect(!!(x), 1)
#define SA_COLD __attribute__((noinline, cold))
#else
#define SA_TLS_MODEL
#define SA_UNLIKELY(x) (x)
#define SA_LIKELY(x) (x)
#define SA_COLD
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
#define CACHE_HIGH 1024u  /* a thread's cache spills half above this */

/* A record's word: generation << 32 | (index + 1) << 8 | W_* flags. A
 * handle is the word with its flags cleared: the record's index, which
 * never changes, and the generation it had when the future was made, which
 * each return to the pool advances. No handle is zero, nor matches a zero
 * word: the index is stored plus one. */
#define W_DONE 1u     /* result delivered: visible to the future's holder */
#define W_RELEASED 2u /* the holder gave the future back */
#define W_QUEUED 4u   /* a late continuation is queued on the loop */
#define W_FREE 8u     /* in the pool: no handle refers to it */
#define W_HELD 16u    /* timed out: the result is out, but the op still holds
                         the call until it completes it */
#define W_SLEPT 32u   /* a thread may sleep on it [future.c: the parking lot] */
#define W_FLAGS 0xffu
#define W_INDEX_SHIFT 8
#define W_GEN_ONE ((uint64_t)1 << 32)
#define W_HANDLE(w) ((w) & ~(uint64_t)W_FLAGS)
#define W_INDEX(w) ((uint32_t)(w) >> W_INDEX_SHIFT) /* the index plus one */
#define W_NEXT_GEN_FREE(w) ((W_HANDLE(w) + W_GEN_ONE) | W_FREE)
_Static_assert((uint64_t)MAX_CHUNKS * CHUNK_SIZE < (1u << (32 - W_INDEX_SHIFT)),
               "a record's index plus one fits between the flags and the generation");

struct sa_thread;
struct sa_future_rec;
struct sa_msg;
struct sa_home;
struct sa_deadline;

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
#define CALL_WINDING 64u  /* its loop is going away and waits for it to
                             complete: counted in ctx->winding */

/* A sync call's record is its private loop's (owner and ctx set once,
 * flags per call); a call of sa_dispatch_then sets owner, flags and ctx;
 * an async call with a future sets everything. The call's loop is its
 * context's. */
/* `owner`, `ctx`, `status` and `value` are atomic (relaxed: plain moves)
 * because other threads read them through future handles that may have
 * gone stale, the record reused meanwhile [future.c: result_of()]. */
struct sa_call {
  _Atomic(struct sa_thread *) owner;
  unsigned flags;
  _Atomic int status;
  _Atomic(void *) value;
  _Atomic(struct sa_ctx *) ctx;
  const sa_op_t *op;
  void *arg;
};

/* 112 bytes: what the dispatcher keeps per pending call. A thread waiting
 * for another thread's call sleeps in the parking lot [future.c], not on
 * the record. */
struct sa_future_rec {
  struct sa_call call;
  _Atomic uint64_t word; /* generation, index and W_* flags */
  _Atomic uint64_t ctx_id; /* call.ctx->id when dispatched */
  /* In one list at a time: the pool, a cache, a queue of the drain, or
   * the wind-down's held records. */
  struct sa_future_rec *next;
  sa_continuation_cb cont;
  void *cont_data;
  struct sa_future_rec *prev_pending, *next_pending;
  struct sa_deadline *deadline; /* armed deadline timer, else NULL */
};
/* A batch item adds its 16-byte slot [batch.c]: 128 bytes in all. */
_Static_assert(sizeof(struct sa_future_rec) <= 112, "the memory a pending call costs");

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
   * sa__in_scope(), and its sync calls skip the count. */
  atomic_uint running;
  uv_loop_t *loop;
  /* The dispatcher's own handles on the loop, kept with it when a private
   * loop passes to another thread [private.c]. */
  bool drain_ready;      /* `drain` initialised */
  uv_idle_t drain;       /* delivers the queues: the then-queue first */
  /* Messages from other threads, woken by `wakeup` (unreferenced unless
   * results of home-loop calls are awaited: `remote` counts them). */
  bool wakeup_ready;
  uv_async_t wakeup;
  /* From here on, one use's: cleared for each [sa__ctx_renew()]. */
  unsigned waiting;      /* future waits driving it: deliveries stop it */
  bool closing;          /* going away, or abandoned in a fork child: calls on
                            it are refused */
  unsigned winding;      /* calls its wind-down waits for [private.c] */
  bool drain_started;    /* `drain` active: a queue below is not empty */
  /* Completed calls of sa_dispatch_then, linked through `next` so that,
   * delivered, they join the cache in one splice. Everything on it was
   * queued before everything on the deferred queue: then_tail is NULL
   * while that queue is not empty, and later then-calls queue there. */
  struct sa_future_rec *then_head, *then_tail;
  struct sa_future_rec *deferred_head, *deferred_tail; /* the rest */
  struct sa_future_rec *pending; /* undelivered async calls */
  unsigned npending;
  struct sa_future_rec wind_cursor; /* the wind-down's place in `pending` */
  struct sa_msg *inbox_head, *inbox_tail;
  unsigned remote;
  struct sa_home *home; /* the home object this loop serves, if any */
  struct sa_ctx *next_registered; /* application loops only */
};

/* A private loop: the loop and its context in one allocation. It runs one
 * sync call at a time (it is never re-entered), whose record is `call`:
 * its owner and ctx are set once, when the thread takes the loop. */
struct sa_private {
  struct sa_call call; /* first: the hot path passes p as &p->call */
  struct sa_ctx ctx;
  uv_loop_t loop;
  struct sa_private *next_spare; /* in a list of private.c: spare, warm, abandoned */
  uint64_t fresh_until; /* sa__ticks() until which the loop's time is current */
  /* The running sync call's place for its value, kept here rather than in
   * a register across the op (callgrind: 3 instructions a call less). */
  void **value_out;
};

struct sa_thread {
  unsigned depth;
  struct sa_ctx *scopes[SA_MAX_SCOPES];
  struct sa_private *priv[SA_MAX_SYNC_DEPTH];
  struct sa_future_rec *free_head; /* this thread's cache of pool records */
  unsigned free_count;
  /* Bursts of calls, as the cache sees them [pool.c: sa__cache_burst_over()]. */
  bool cache_spilled;     /* the cache spilled in this burst */
  unsigned burst_refills; /* records taken from the pool in this burst */
  unsigned last_refills;  /* and in the burst before */
  bool exit_hook_set;
};

/* Other threads never touch a loop: they queue a message on its context and
 * wake it through its one uv_async_t, and the loop's thread acts as the
 * message says. Each kind of message carries its own handling, so the
 * layers that send messages (cross-thread cancels, time-outs of waits, home
 * loops) keep what they mean to themselves. */
typedef void sa_msg_fn(struct sa_thread *t, struct sa_ctx *ctx, struct sa_msg *m);

struct sa_msg {
  struct sa_msg *next;
  sa_msg_fn *handle;              /* on the loop's thread: act, and free `m` */
  void (*drop)(struct sa_msg *m); /* the loop is going away: answer, or free */
  sa_future_t target;             /* the call it is about */
};

static inline struct sa_thread *sa__call_owner(const struct sa_call *call) {
  return atomic_load_explicit(&call->owner, memory_order_relaxed);
}

static inline struct sa_ctx *sa__call_ctx(const struct sa_call *call) {
  return atomic_load_explicit(&call->ctx, memory_order_relaxed);
}

static inline int sa__call_status(const struct sa_call *call) {
  return atomic_load_explicit(&call->status, memory_order_relaxed);
}

static inline void *sa__call_value(const struct sa_call *call) {
  return atomic_load_explicit(&call->value, memory_order_relaxed);
}

/* Store the call's result. The fence pairs with result_of()'s (future.c): a
 * reader of a stale handle that sees this result also sees the record's new
 * generation, and answers SA_ESTALE (on x86, both fences are free). */
static inline void sa__call_settle(struct sa_call *call, int status, void *value) {
  atomic_thread_fence(memory_order_release);
  atomic_store_explicit(&call->status, status, memory_order_relaxed);
  atomic_store_explicit(&call->value, value, memory_order_relaxed);
}

/* Everything declared from here on is the library's own: hidden. */
#pragma GCC visibility push(hidden)

/* This thread's state. initial-exec: a TLS read costs a few instructions
 * even in a shared library (the general-dynamic model calls
 * __tls_get_addr). */
extern _Thread_local struct sa_thread sa__self SA_TLS_MODEL;

extern pthread_mutex_t sa__pool_mutex;     /* pool.c: the pool of records */
extern pthread_mutex_t sa__registry_mutex; /* context.c: registry and spares */
extern _Atomic uint64_t sa__next_ctx_id;   /* context.c: ids of contexts, from 1 */
/* pool.c: the records, in chunks whose addresses stay valid [type-stable]. */
extern _Atomic(struct sa_future_rec *) sa__chunks[MAX_CHUNKS];
/* process.c: in a fork child, the first context id issued in this process;
 * 0 in a process that never forked [sa__inherited()]. */
extern uint64_t sa__own_ctx_ids_from;

/* ---- the core: what each file gives the others -------------------------- */

/* process.c */
SA_COLD void sa__set_exit_hook_slow(struct sa_thread *t);

/* pool.c */
SA_COLD int sa__cache_refill(struct sa_thread *t);
SA_COLD void sa__cache_spill(struct sa_thread *t, unsigned keep);
SA_COLD void sa__cache_burst_over(struct sa_thread *t);

/* context.c */
void sa__ctx_alloc_init(struct sa_ctx *ctx);
void sa__ctx_init(struct sa_ctx *ctx, uv_loop_t *loop);
void sa__ctx_renew(struct sa_ctx *ctx);
void sa__ctx_to_spares(struct sa_ctx *ctx);
void sa__ctx_unregister(struct sa_ctx *ctx);

/* private.c */
void sa__privates_abandon(struct sa_thread *t);
bool sa__loop_abandoned(const uv_loop_t *loop);
int sa__enter_private(struct sa_thread *t, struct sa_private **out);
void sa__private_time_refresh(struct sa_private *p);
void sa__wind_down(struct sa_ctx *ctx);
void sa__wind_completed(sa_call_t *call);
void sa__thread_exit(void *arg);

/* delivery.c */
uint64_t sa__let_go(struct sa_future_rec *r, uint64_t bits);
void sa__deliver(struct sa_future_rec *r);
void sa__deliver_held(struct sa_future_rec *r);
void sa__drain_now(struct sa_ctx *ctx);
SA_COLD int sa__defer_first(struct sa_ctx *ctx, struct sa_future_rec *r);
SA_COLD int sa__defer_then_first(struct sa_ctx *ctx, struct sa_future_rec *r);

/* dispatch.c */
int sa__run_async(struct sa_thread *t, struct sa_ctx *ctx, const sa_op_t *op, void *arg,
                  sa_future_t *future);
int sa__dispatch_record(const sa_op_t *op, void *arg, sa_mode_t mode, uint64_t deadline,
                        void **value, sa_future_t *future);

/* future.c */
SA_COLD void sa__unpark(uint64_t word);
int sa__cancel_here(struct sa_future_rec *r);
int sa__wait_for(struct sa_thread *t, sa_future_t future, uint64_t deadline, void **value);

/* ---- the layers on the core --------------------------------------------- */

/* deadline.c [SA-DL-*] */
int sa__run_async_until(struct sa_thread *t, struct sa_ctx *ctx, const sa_op_t *op, void *arg,
                        uint64_t deadline, sa_future_t *future);
int sa__deadline_arm(struct sa_future_rec *r, uint64_t at);
void sa__deadline_disarm(struct sa_future_rec *r);
int sa__request_time_out(struct sa_future_rec *r, sa_future_t future);

/* message.c: messages between threads */
int sa__post(struct sa_ctx *ctx, uint64_t id, struct sa_msg *m);
void sa__wake_loop(struct sa_ctx *ctx, uint64_t id);
int sa__post_request(struct sa_ctx *ctx, uint64_t id, sa_msg_fn *handle, sa_future_t target);
int sa__request(struct sa_future_rec *r, sa_future_t future, sa_msg_fn *handle);
int sa__request_cancel(struct sa_future_rec *r, sa_future_t future);
void sa__msg_free(struct sa_msg *m);
struct sa_future_rec *sa__local_call(struct sa_thread *t, struct sa_ctx *ctx, sa_future_t f);
SA_COLD int sa__wakeup_init(struct sa_ctx *ctx);
void sa__ctx_retire(struct sa_ctx *ctx);

/* home.c [SA-HOME-*] */
bool sa__home_stopping(struct sa_ctx *ctx);
void sa__home_begin_stop(struct sa_ctx *ctx);

#pragma GCC visibility pop

/* ---- the hot paths' small functions ------------------------------------- */

static inline sa_future_t sa__handle_of(uint64_t word) {
  return (sa_future_t){W_HANDLE(word)};
}

/* The live record a handle names, or NULL; *word gets its word. */
static inline struct sa_future_rec *sa__lookup(sa_future_t f, uint64_t *word) {
  uint32_t index = W_INDEX(f.id) - 1;
  if ((index >> CHUNK_BITS) >= MAX_CHUNKS) /* also a null handle: no index */
    return NULL;
  struct sa_future_rec *chunk =
      atomic_load_explicit(&sa__chunks[index >> CHUNK_BITS], memory_order_acquire);
  if (!chunk)
    return NULL;
  struct sa_future_rec *r = &chunk[index & (CHUNK_SIZE - 1)];
  uint64_t w = atomic_load_explicit(&r->word, memory_order_acquire);
  if (W_HANDLE(w) != f.id || (w & W_FREE))
    return NULL;
  *word = w;
  return r;
}

/* Whether a context id belongs to the parent of this fork child: then so
 * do its loop, its futures and its home [SA-THR-3]. */
static inline bool sa__inherited(uint64_t ctx_id) { return ctx_id < sa__own_ctx_ids_from; }

/* The record a caller's handle names, if the caller may still use it: not
 * released (also while its call runs on) [SA-FUT-6], and not the parent's,
 * in a fork child [SA-THR-3]. */
static inline struct sa_future_rec *sa__lookup_live(sa_future_t f, uint64_t *word) {
  struct sa_future_rec *r = sa__lookup(f, word);
  if (r && ((*word & W_RELEASED) ||
            sa__inherited(atomic_load_explicit(&r->ctx_id, memory_order_relaxed))))
    return NULL;
  return r;
}

/* Put `r` in t's cache; sa__cache_trim() keeps the cache bounded. */
static inline void sa__cache_push(struct sa_thread *t, struct sa_future_rec *r) {
  r->next = t->free_head;
  t->free_head = r;
  t->free_count++;
}

/* A record from this thread's cache; its word still says W_FREE. Readers
 * of stale handles may have read its last result [future.c]: helgrind
 * and DRD, which see no atomics, are told that the reuse comes after those
 * reads. One that races the reuse itself they still report. */
static inline struct sa_future_rec *sa__rec_take(struct sa_thread *t) {
  if (SA_UNLIKELY(t->free_count == 0) && sa__cache_refill(t) != 0)
    return NULL;
  struct sa_future_rec *r = t->free_head;
  t->free_head = r->next;
  t->free_count--;
  SA_HAPPENS_AFTER(&r->word);
  return r;
}

/* A record for a future: handles may name it from now on. */
static inline struct sa_future_rec *sa__rec_alloc(struct sa_thread *t) {
  struct sa_future_rec *r = sa__rec_take(t);
  if (SA_UNLIKELY(!r))
    return NULL;
  /* Nobody else can see the record yet: a relaxed store suffices. */
  uint64_t w = atomic_load_explicit(&r->word, memory_order_relaxed);
  atomic_store_explicit(&r->word, w & ~(uint64_t)W_FREE, memory_order_relaxed);
  return r;
}

static inline void sa__cache_trim(struct sa_thread *t) {
  if (SA_UNLIKELY(t->free_count > CACHE_HIGH))
    sa__cache_spill(t, CACHE_HIGH / 2);
}

/* After a delivery on ctx, by t in a scope on it: a burst of calls that
 * spilled t's cache is over once no call is pending there. */
static inline void sa__cache_settle(struct sa_thread *t, const struct sa_ctx *ctx) {
  if (SA_UNLIKELY(t->cache_spilled) && ctx->npending == 0)
    sa__cache_burst_over(t);
}

static inline void sa__cache_put(struct sa_thread *t, struct sa_future_rec *r) {
  sa__cache_push(t, r);
  sa__cache_trim(t);
}

/* Ask for sa__thread_exit() to run when this thread ends. */
static inline void sa__set_exit_hook(struct sa_thread *t) {
  if (SA_UNLIKELY(!t->exit_hook_set))
    sa__set_exit_hook_slow(t);
}

/* Return a record whose word already says W_FREE to this thread's cache,
 * which the thread-exit hook gives back to the pool. */
static inline void sa__rec_recycle(struct sa_future_rec *r) {
  struct sa_thread *t = &sa__self;
  sa__set_exit_hook(t);
  sa__cache_put(t, r);
}

static inline void sa__ctx_running_add(struct sa_ctx *ctx, int delta) {
  /* Only the thread running the loop writes: no read-modify-write needed. */
  unsigned n = atomic_load_explicit(&ctx->running, memory_order_relaxed);
  atomic_store_explicit(&ctx->running, n + (unsigned)delta, memory_order_relaxed);
}

static inline int sa__scope_push(struct sa_thread *t, struct sa_ctx *ctx) {
  if (SA_UNLIKELY(t->depth == SA_MAX_SCOPES))
    return SA_ELOOP;
  t->scopes[t->depth++] = ctx;
  sa__ctx_running_add(ctx, 1);
  return 0;
}

/* Pop the innermost scope. A fork child has none left of those its frames
 * pushed before the fork [process.c]: their pops find nothing. */
static inline void sa__scope_pop(struct sa_thread *t) {
  if (SA_LIKELY(t->depth))
    sa__ctx_running_add(t->scopes[--t->depth], -1);
}

static inline struct sa_ctx *sa__top_ctx(const struct sa_thread *t) {
  return t->depth ? t->scopes[t->depth - 1] : NULL;
}

static inline bool sa__in_scope(const struct sa_thread *t, const struct sa_ctx *ctx) {
  for (unsigned i = 0; i < t->depth; i++)
    if (t->scopes[i] == ctx)
      return true;
  return false;
}

static inline void sa__pending_link(struct sa_ctx *ctx, struct sa_future_rec *r) {
  r->prev_pending = NULL;
  r->next_pending = ctx->pending;
  if (ctx->pending)
    ctx->pending->prev_pending = r;
  ctx->pending = r;
  ctx->npending++;
}

static inline void sa__pending_unlink(struct sa_ctx *ctx, struct sa_future_rec *r) {
  if (r->prev_pending)
    r->prev_pending->next_pending = r->next_pending;
  else
    ctx->pending = r->next_pending;
  if (r->next_pending)
    r->next_pending->prev_pending = r->prev_pending;
  ctx->npending--;
}

/* Wake the threads sleeping on a record whose word was `w` before the
 * change they wait for [future.c: the parking lot]. */
static inline void sa__wake_sleepers(uint64_t w) {
  if (SA_UNLIKELY(w & W_SLEPT))
    sa__unpark(w);
}

/* Mark the result delivered, adding `set` (W_DONE, and W_HELD while the op
 * still holds the call). Returns the word before, whose W_RELEASED says
 * whether the holder already let go (the record is then freed, unless
 * `keep_released` asks the caller to see to it). */
static inline uint64_t sa__mark_done(struct sa_future_rec *r, uint64_t set, bool keep_released) {
  uint64_t w = atomic_load_explicit(&r->word, memory_order_relaxed), next;
  SA_HAPPENS_BEFORE(&r->word);
  do {
    next = (w & W_RELEASED) && !keep_released ? W_NEXT_GEN_FREE(w) : w | set;
  } while (!atomic_compare_exchange_weak_explicit(
      &r->word, &w, next, memory_order_acq_rel, memory_order_relaxed));
  SA_HAPPENS_AFTER(&r->word);
  sa__wake_sleepers(w);
  return w;
}

/* Take a completed call of sa_dispatch_then off the pending list, if it
 * completed after op->start returned: one completed inside never was on it.
 * Before it is queued for the drain, so that the drain need not look. */
static inline void sa__then_unpend(struct sa_future_rec *r) {
  if (r->call.flags & CALL_NOTIFY) {
    sa__pending_unlink(sa__call_ctx(&r->call), r);
    r->call.flags &= ~CALL_NOTIFY;
  }
}

/* Run callbacks for `ctx` in async context on it, also when the application
 * runs the loop without a scope around uv_run. Returns whether it pushed. */
static inline bool sa__scope_for_callbacks(struct sa_thread *t, struct sa_ctx *ctx) {
  return sa__top_ctx(t) != ctx && sa__scope_push(t, ctx) == 0;
}

/* End the then-queue: what is queued next goes on the deferred queue. */
static inline void sa__then_close(struct sa_ctx *ctx) {
  if (ctx->then_tail) {
    ctx->then_tail->next = NULL;
    ctx->then_tail = NULL;
  }
}

/* Queue `r` for delivery from the loop, after the current call returns.
 * A queue that is not empty has its drain started. */
static inline int sa__defer(struct sa_ctx *ctx, struct sa_future_rec *r) {
  r->next = NULL;
  if (SA_UNLIKELY(!ctx->deferred_tail))
    return sa__defer_first(ctx, r);
  ctx->deferred_tail->next = r;
  ctx->deferred_tail = r;
  return 0;
}

/* sa__defer() for a completed call of sa_dispatch_then. The then-queue ends
 * where then_tail points: its last link is set when it closes. */
static inline int sa__defer_then(struct sa_ctx *ctx, struct sa_future_rec *r) {
  struct sa_future_rec *tail = ctx->then_tail;
  if (SA_UNLIKELY(!tail))
    return sa__defer_then_first(ctx, r);
  tail->next = r;
  ctx->then_tail = r;
  return 0;
}

/* A private loop is not running when a call starts on it: its cached time
 * is that of its last run, which may be long past. Ops start with it current
 * [SA-OP-5], as they would at the start of a loop iteration. Reading libuv's
 * clock costs ~55 instructions; on x86 the time-stamp counter (one
 * instruction) tells whether a refresh is due: one is good for 2^20 counter
 * ticks, at most ~1 ms on any x86 whose counter runs at a constant 1 GHz or
 * more (all of the last fifteen years). A counter that differs between CPUs
 * can make a refresh late by the difference only. Elsewhere, every call
 * refreshes. */
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define SA_FRESH_TICKS ((uint64_t)1 << 20)
static inline uint64_t sa__ticks(void) { return __builtin_ia32_rdtsc(); }
#else
#define SA_FRESH_TICKS 0
static inline uint64_t sa__ticks(void) { return 0; }
#endif

static inline bool sa__private_time_stale(const struct sa_private *p) {
  return sa__ticks() >= p->fresh_until;
}

/* The loop's time was read now: good until SA_FRESH_TICKS from now. */
static inline void sa__private_time_read(struct sa_private *p) {
  p->fresh_until = sa__ticks() + SA_FRESH_TICKS;
}

/* What every dispatching call checks [SA-ERR-3]: a known mode, and a place
 * for the future wherever the call may be async. */
static inline bool sa__bad_mode(sa_mode_t mode, const sa_future_t *future) {
  return (unsigned)mode > SA_MODE_ASYNC || (!future && mode != SA_MODE_SYNC);
}

/* Whether a call in `mode` runs synchronously: forced, or auto in sync
 * context [SA-DET-1, SA-MODE-1]. */
static inline bool sa__runs_sync(const struct sa_thread *t, sa_mode_t mode) {
  return mode == SA_MODE_SYNC || (mode == SA_MODE_AUTO && t->depth == 0);
}

#endif /* SA_INTERNAL_H */
