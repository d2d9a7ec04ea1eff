/*
 * smartasync.h - dual-mode dispatch of asynchronous libuv operations.
 *
 * An operation (sa_op_t) is written once, in continuation style on libuv.
 * sa_dispatch() calls it from either world:
 *
 *   sync context   (the thread is not inside a loop run through this API):
 *                  the call runs the op to completion on the thread's private,
 *                  persistent loop and returns the op's status and value;
 *   async context  (the thread is inside a callback of a loop run through
 *                  sa_run() or an sa_enter()/sa_leave() scope): the call
 *                  starts the op on that loop and returns SA_PENDING with a
 *                  future, completed on that loop after the call returned.
 *
 * The context is detected per thread; an explicit mode always overrides it.
 * SPEC.md is the contract: each requirement is cited as [SA-XXX-N] below.
 *
 * Error codes are negative errno values, as in libuv.
 */
#ifndef SMARTASYNC_H
#define SMARTASYNC_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Return codes [SA-ERR-1]. SA_PENDING is the only positive one. */
#define SA_PENDING    1            /* async: the result will come through the future */
#define SA_EINVAL     (-EINVAL)    /* NULL or invalid argument */
#define SA_ENOMEM     (-ENOMEM)    /* out of memory */
#define SA_ESTALE     (-ESTALE)    /* the future was released, or never existed */
#define SA_EALREADY   (-EALREADY)  /* call completed twice, continuation set twice */
#define SA_EDEADLK    (-EDEADLK)   /* waiting would block the loop that must deliver */
#define SA_ELOOP      (-ELOOP)     /* nested sync calls deeper than SA_MAX_SYNC_DEPTH */
#define SA_EBUSY      (-EBUSY)     /* loop already running on this thread, or has pending calls */
#define SA_EPERM      (-EPERM)     /* not allowed from this thread */
#define SA_ENOTSUP    (-ENOTSUP)   /* the op has no cancel hook */
#define SA_ECANCELED  (-ECANCELED) /* the call was cancelled or its loop went away */
#define SA_ETIMEDOUT  (-ETIMEDOUT) /* the deadline passed before the call completed */

/* Forced-sync calls may nest this deep on one thread [SA-MODE-3]. */
#define SA_MAX_SYNC_DEPTH 4

typedef enum {
  SA_MODE_AUTO = 0, /* detect the context [SA-DET-1, SA-DET-2] */
  SA_MODE_SYNC,     /* block until done, whatever the context [SA-MODE-1] */
  SA_MODE_ASYNC     /* return a future, whatever the context [SA-MODE-4] */
} sa_mode_t;

/* One call of an op in flight, as the op sees it. Valid from start until
 * the op completes it with sa_complete(). */
typedef struct sa_call sa_call_t;

/* The caller's handle on an async call: a value, copied freely. A handle
 * outlives its future; using it after sa_future_release() is detected. */
typedef struct sa_future {
  uint64_t id; /* 0 is the null future */
} sa_future_t;

#define SA_FUTURE_NULL ((sa_future_t){0})

typedef struct sa_op {
  /* Start the work on `loop` for `arg`; complete it exactly once with
   * sa_complete(), inside start or later from a callback of `loop`. */
  void (*start)(sa_call_t *call, uv_loop_t *loop, void *arg);
  /* Optional: ask the work to stop early. It should then complete the call,
   * typically with SA_ECANCELED. NULL if the op cannot be cancelled. */
  void (*cancel)(sa_call_t *call, uv_loop_t *loop, void *arg);
} sa_op_t;

/* Called on the future's loop thread when the result is delivered. */
typedef void (*sa_continuation_cb)(sa_future_t future, int status,
                                   void *value, void *data);

/* ---- dispatch ---------------------------------------------------------- */

/* Call `op` with `arg` in `mode`.
 * Sync:  returns the op's status (0 or negative) and stores its value in
 *        *value (if value is not NULL); *future, if given, is set to null.
 * Async: returns SA_PENDING, stores the future in *future, which is
 *        required for SA_MODE_AUTO and SA_MODE_ASYNC, and sets *value (if
 *        value is not NULL) to NULL [SA-ENTRY-3].
 * Dispatcher errors (SA_EINVAL, SA_ENOMEM, SA_ELOOP) mean the op did not start. */
int sa_dispatch(const sa_op_t *op, void *arg, sa_mode_t mode,
                void **value, sa_future_t *future);

/* sa_dispatch for async code that wants the result in a callback: the
 * continuation is given with the call, so there is no future to attach or
 * release. The cheapest async call.
 * Sync:  as sa_dispatch: returns the op's status, stores its value in
 *        *value (if value is not NULL); `cb` is not called.
 * Async: returns SA_PENDING; cb(SA_FUTURE_NULL, status, value, data) is
 *        called exactly once, on the loop's thread, after this call has
 *        returned [SA-ASYNC-5]. No handle names the call: it cannot be
 *        cancelled or waited for. If its thread exits first, cb is called
 *        then, on that thread, with SA_ECANCELED unless the op had
 *        completed [SA-THR-2].
 * Errors as for sa_dispatch; a NULL cb is SA_EINVAL. */
int sa_dispatch_then(const sa_op_t *op, void *arg, sa_mode_t mode, void **value,
                     sa_continuation_cb cb, void *data);

/* Complete `call` with `status` (0 or negative) and `value`. Must be called
 * on the thread running the call's loop. Returns 0, SA_EALREADY if the call
 * was already completed, SA_EPERM from the wrong thread, or SA_EINVAL (a
 * NULL call, or a positive status: the call stays pending) [SA-OP-2]. */
int sa_complete(sa_call_t *call, int status, void *value);

/* ---- context ----------------------------------------------------------- */

/* The loop the calling thread is in async context on, or NULL in sync
 * context [SA-DET-1]. A thread-local read: nanoseconds. */
uv_loop_t *sa_current_loop(void);

/* uv_run() with the calling thread in async context on `loop` [SA-DET-2].
 * Returns uv_run's result, or SA_EBUSY if the loop is already running on
 * this thread [SA-LOOP-1]. */
int sa_run(uv_loop_t *loop, uv_run_mode mode);

/* Scope for loops the application runs itself: between sa_enter(loop) and
 * sa_leave(loop) the thread is in async context on `loop` [SA-DET-3].
 * Bracket the uv_run() call, or the body of a callback. Scopes nest;
 * sa_leave must name the innermost scope's loop (else SA_EINVAL). */
int sa_enter(uv_loop_t *loop);
int sa_leave(uv_loop_t *loop);

/* Release what the dispatcher keeps on an application loop, then
 * uv_loop_close() it. SA_EBUSY while calls on it are pending or it is
 * running [SA-LOOP-2]. Use it instead of uv_loop_close() for any loop the
 * dispatcher has run. A closed loop is refused by sa_run, sa_enter and
 * sa_loop_close with SA_EINVAL until uv_loop_init makes it new
 * [SA-LOOP-3]. */
int sa_loop_close(uv_loop_t *loop);

/* Let go of the calling thread's private loops now rather than at thread
 * exit (for the main thread, whose thread-exit hooks do not run at exit()):
 * a few stay open, cleared, for later threads, the others are closed.
 * Pending calls on them get their op's cancel hook and are waited for (ops
 * without a hook are not); every call not yet delivered is then delivered,
 * with SA_ECANCELED unless its op completed, to its continuation and future
 * [SA-THR-2]. Must be called in sync context (else SA_EBUSY). */
int sa_thread_cleanup(void);

/* ---- futures [SA-FUT-*] ------------------------------------------------ */

/* SA_PENDING until the result is delivered, then the op's status; the value
 * goes to *value (if not NULL). Any thread. */
int sa_future_status(sa_future_t future, void **value);

/* Call `cb` once when the result is delivered: on the loop thread, never
 * inside this call, also when the result is already there. Only from the
 * future's own thread (SA_EPERM); a second continuation is SA_EALREADY. */
int sa_future_then(sa_future_t future, sa_continuation_cb cb, void *data);

/* Block until the result is delivered; returns the op's status.
 * On the future's own thread it drives the future's loop, or returns
 * SA_EDEADLK if that loop is running on this thread. From another thread it
 * sleeps until the owner thread delivers. */
int sa_future_wait(sa_future_t future, void **value);

/* Ask a pending call to stop, through its op's cancel hook, which runs on
 * the call's loop thread: at once from that thread, else when that loop
 * next runs [SA-CAN-*]. The result (SA_ECANCELED, or the real one if it won
 * the race) is delivered exactly once. Returns 0, also if done already;
 * SA_ENOTSUP if the op has no hook (known on the loop's thread only). */
int sa_future_cancel(sa_future_t future);

/* Give the future back. A pending call runs on, its result is dropped and
 * its continuation is not called. Any thread. From then on every use of the
 * handle, the second release included, is SA_ESTALE, and a wait in progress
 * on it returns [SA-FUT-6]. */
int sa_future_release(sa_future_t future);

/* ---- deadlines [SA-DL-*] ----------------------------------------------- */

/* A deadline is an absolute time on uv_hrtime()'s clock (nanoseconds,
 * CLOCK_MONOTONIC). SA_NO_DEADLINE never passes. */
#define SA_NO_DEADLINE UINT64_MAX

/* The deadline `timeout_ms` milliseconds from now. */
uint64_t sa_deadline_in(uint64_t timeout_ms);

/* sa_dispatch with a deadline on the call. If the op has not completed when
 * the deadline passes, the call's result is SA_ETIMEDOUT (returned in sync
 * mode, delivered through the future in async mode). An op with a cancel
 * hook is asked to stop, and the result is given once it has completed: when
 * the caller hears of the time-out, the op is done with `arg`. An op without
 * a hook cannot be stopped: the result is given at the deadline, the op runs
 * on (its `arg` must stay valid until it completes) and its completion is
 * dropped. */
int sa_dispatch_until(const sa_op_t *op, void *arg, sa_mode_t mode, uint64_t deadline,
                      void **value, sa_future_t *future);

/* sa_future_wait that gives up at `deadline`: the call then times out as if
 * it had that deadline, unless it completed first. From a thread other than
 * the call's, the wait returns SA_ETIMEDOUT at the deadline and the call
 * times out when its loop next runs. */
int sa_future_wait_until(sa_future_t future, uint64_t deadline, void **value);

/* ---- batches [SA-BAT-*] ------------------------------------------------ */

typedef struct sa_batch_item {
  const sa_op_t *op; /* in */
  void *arg;         /* in */
  int status;        /* out: the call's status; SA_ECANCELED for the losers
                        of SA_BATCH_FIRST */
  void *value;       /* out */
} sa_batch_item_t;

typedef enum {
  SA_BATCH_ALL = 0, /* wait for all; the status is the first error, in the
                       items' order, or 0 */
  SA_BATCH_FIRST    /* wait for the first to finish, cancel the others and
                       drop their results; the status is the winner's */
} sa_batch_kind_t;

/* Start the n calls at once on one loop and wait as `kind` says, in `mode`:
 * sync blocks (the calls overlap on the private loop), async returns a
 * future. The value is the item that decided: the first failing one (ALL;
 * NULL if none failed) or the winner (FIRST). `items` must stay valid until
 * the batch completes. Cancelling the batch cancels its pending calls. */
int sa_batch(sa_batch_item_t *items, size_t n, sa_batch_kind_t kind, sa_mode_t mode,
             void **value, sa_future_t *future);

/* ---- home loops [SA-HOME-*] -------------------------------------------- */

/* An object's home: a loop run by its own thread, started and stopped by
 * the library. Calls made on it from any thread run on that loop: sync
 * callers block, async callers get a future delivered on their own loop.
 * State that only the home loop's ops touch needs no lock. */
typedef struct sa_home sa_home_t;

/* Start a home thread and its loop; *home is ready for calls on return. */
int sa_home_start(sa_home_t **home);

/* Run `op` with `arg` on the home loop, in `mode` as for sa_dispatch.
 * A forced sync call from the home thread itself is SA_EDEADLK. */
int sa_home_call(sa_home_t *home, const sa_op_t *op, void *arg, sa_mode_t mode,
                 void **value, sa_future_t *future);

/* Stop the home: calls in flight get their op's cancel hook and are waited
 * for (ops without a hook are not), then every call not finished gets
 * SA_ECANCELED; none is lost or answered twice; the thread and the loop are
 * freed. Calls that arrive meanwhile get SA_ECANCELED. Not from the home
 * thread (SA_EDEADLK); `home` is invalid on return, and no call may be made
 * with it after. */
int sa_home_stop(sa_home_t *home);

/* ---- blocking functions [SA-BLK-*] ------------------------------------- */

/* An ordinary blocking function: returns 0 or a negative error code, and
 * may store a result in *value (NULL before the call). */
typedef int (*sa_blocking_fn)(void *arg, void **value);

/* Call `fn(arg, value)` in `mode`, without ever stalling a loop.
 * Sync:  fn is called directly on this thread (no loop, no thread hop) and
 *        its status returned; a forced SA_MODE_SYNC in async context blocks
 *        the running loop, as asked.
 * Async: fn runs on the libuv threadpool; returns SA_PENDING and a future,
 *        delivered on the loop's thread like any async call. Cancelling the
 *        future stops fn only if it has not started yet (SA_ECANCELED).
 * Arguments and errors as for sa_dispatch; a positive return from fn is
 * reported as SA_EINVAL. */
int sa_call_blocking(sa_blocking_fn fn, void *arg, sa_mode_t mode,
                     void **value, sa_future_t *future);

/* A short description of any SA_* code (and of other negative errno codes). */
const char *sa_strerror(int code);

#ifdef __cplusplus
}
#endif
#endif /* SMARTASYNC_H */
