/* SA-THR-1 and SA-THR-2 (SA-THR-3, fork, is the standalone fork_test.c). */
#include "sa_test.h"

#include <criterion/criterion.h>
#include <semaphore.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>
#include <valgrind/valgrind.h>

#define THREADS 8
#define CALLS 60

struct worker {
  int id;
  int wrong;
  int done;
};

struct worker_in_loop {
  struct worker *w;
  sa_future_t f[CALLS];
  struct value_req req[CALLS];
};

static void worker_async(uv_loop_t *loop, void *data) {
  (void)loop;
  struct worker_in_loop *s = data;
  for (int k = 0; k < CALLS; k++) {
    s->req[k] = (struct value_req){.when = (sa_test_when)(k % 3), .status = -(k % 5),
                                   .value = (void *)(intptr_t)(s->w->id * 1000 + k)};
    cr_assert_eq(sa_dispatch(&value_op, &s->req[k], SA_MODE_AUTO, NULL, &s->f[k]), SA_PENDING);
  }
}

static void *worker_main(void *arg) {
  struct worker *w = arg;
  /* Sync, in all three ways, from plain code... */
  for (int k = 0; k < CALLS; k++) {
    void *expect = (void *)(intptr_t)(w->id * 1000 + k), *value = NULL;
    struct value_req req = {.when = (sa_test_when)(k % 3), .status = -(k % 5), .value = expect};
    int rc = sa_dispatch(&value_op, &req, k % 2 ? SA_MODE_SYNC : SA_MODE_AUTO, &value,
                         &(sa_future_t){0});
    if (rc != -(k % 5) || value != expect)
      w->wrong++;
    w->done++;
  }
  /* ...then async, from this thread's own loop. */
  static _Thread_local struct worker_in_loop s;
  s.w = w;
  sa_test_in_loop(worker_async, &s);
  for (int k = 0; k < CALLS; k++) {
    void *value = NULL;
    if (sa_future_status(s.f[k], &value) != -(k % 5) ||
        value != (void *)(intptr_t)(w->id * 1000 + k))
      w->wrong++;
    sa_future_release(s.f[k]);
    w->done++;
  }
  return NULL;
}

Test(SA_THR_1, concurrent_dispatch_from_many_threads) {
  pthread_t t[THREADS];
  struct worker w[THREADS];
  for (int i = 0; i < THREADS; i++) {
    w[i] = (struct worker){.id = i + 1};
    cr_assert_eq(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
  }
  for (int i = 0; i < THREADS; i++) {
    pthread_join(t[i], NULL);
    cr_assert_eq(w[i].done, 2 * CALLS, "SA-THR-1: thread %d finished %d of %d calls", i,
                 w[i].done, 2 * CALLS);
    cr_assert_eq(w[i].wrong, 0, "SA-THR-1: thread %d got %d wrong results", i, w[i].wrong);
  }
}

static void *sync_calls_then_exit(void *arg) {
  (void)arg;
  for (int i = 0; i < 3; i++) {
    struct value_req req = {.when = sa_test_whens[i]};
    cr_assert_eq(sa_dispatch(&value_op, &req, SA_MODE_SYNC, NULL, NULL), 0);
  }
  struct value_req nested = {.when = SA_TEST_LATER};
  sa_future_t f;
  cr_assert_eq(sa_dispatch(&value_op, &nested, SA_MODE_ASYNC, NULL, &f), SA_PENDING);
  cr_assert_eq(sa_future_wait(f, NULL), 0);
  cr_assert_eq(sa_future_release(f), 0);
  return NULL;
}

static void churn(int threads) {
  for (int round = 0; round < threads; round++) {
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, sync_calls_then_exit, NULL), 0);
    pthread_join(t, NULL);
  }
}

/* What the dispatcher holds for exited threads must not grow with their
 * number (it may keep some loops for later threads). */
Test(SA_THR_2, exited_threads_leave_nothing_growing) {
  churn(4);
  int fds = sa_test_count_fds();
  churn(24);
  int after = sa_test_count_fds();
  cr_assert_eq(after, fds, "SA-THR-2: 24 more exited threads left %d more file descriptors",
               after - fds);
}

Test(SA_THR_2, thread_cleanup_leaves_nothing_growing) {
  struct value_req req = {.when = SA_TEST_LATER};
  cr_assert_eq(sa_dispatch(&value_op, &req, SA_MODE_SYNC, NULL, NULL), 0);
  cr_assert_eq(sa_thread_cleanup(), 0);
  int fds = sa_test_count_fds();
  for (int i = 0; i < 8; i++) {
    cr_assert_eq(sa_dispatch(&value_op, &req, SA_MODE_SYNC, NULL, NULL), 0,
                 "SA-THR-2: the thread does not work after sa_thread_cleanup");
    cr_assert_eq(sa_thread_cleanup(), 0);
  }
  cr_assert_eq(sa_test_count_fds(), fds, "SA-THR-2: each sa_thread_cleanup left more open");
}

/* Calls pending when their thread goes away (thread exit, or
 * sa_thread_cleanup), one of each kind. An op with a cancel hook is
 * cancelled and waited for, so its close callback frees its handle; one
 * without a hook is not waited for; a call completed but not yet delivered
 * keeps its result; a blocking function already running is waited for. Each
 * is delivered exactly once, to its continuation and its future. */
#define PARKED_MS 60000

struct held_timer { /* a hook-less op's handle, in the test's own memory */
  uv_timer_t timer;
  sa_call_t *call;
  int starts;
};

static void held_timer_fired(uv_timer_t *timer) {
  struct held_timer *h = timer->data;
  sa_complete(h->call, 0, NULL);
  uv_close((uv_handle_t *)timer, NULL);
}

static void held_timer_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  struct held_timer *h = arg;
  h->starts++;
  h->call = call;
  uv_timer_init(loop, &h->timer);
  h->timer.data = h;
  uv_timer_start(&h->timer, held_timer_fired, PARKED_MS, 0);
}

static const sa_op_t held_timer_op = {held_timer_start, NULL};

struct slow_fn {
  sem_t started;
  atomic_int returned;
};

static int slow_blocking(void *arg, void **value) {
  struct slow_fn *s = arg;
  sem_post(&s->started);
  usleep(100 * 1000);
  atomic_store(&s->returned, 1);
  *value = s;
  return -9;
}

struct leaving {
  struct value_req hooked, then_hooked, done_inline;
  struct held_timer hookless;
  struct slow_fn slow;
  sa_future_t f_hooked, f_hookless, f_inline, f_blocking;
  struct cont_rec c_hooked, c_then, c_hookless, c_inline, c_blocking;
  pthread_t thread;
  bool by_cleanup;
  int cleanup_rc;
};

static void start_leaving_calls(struct leaving *l) {
  l->thread = pthread_self();
  l->hooked = (struct value_req){.when = SA_TEST_LATER, .delay_ms = PARKED_MS, .status = -1};
  l->then_hooked = l->hooked;
  l->done_inline = (struct value_req){.when = SA_TEST_INLINE, .status = -4, .value = l};
  cr_assert_eq(sa_dispatch(&value_op, &l->hooked, SA_MODE_ASYNC, NULL, &l->f_hooked), SA_PENDING);
  cr_assert_eq(sa_future_then(l->f_hooked, record_cont, &l->c_hooked), 0);
  cr_assert_eq(sa_dispatch_then(&value_op, &l->then_hooked, SA_MODE_ASYNC, NULL, record_cont,
                                &l->c_then),
               SA_PENDING);
  cr_assert_eq(sa_dispatch(&held_timer_op, &l->hookless, SA_MODE_ASYNC, NULL, &l->f_hookless),
               SA_PENDING);
  cr_assert_eq(sa_future_then(l->f_hookless, record_cont, &l->c_hookless), 0);
  cr_assert_eq(sa_dispatch(&value_op, &l->done_inline, SA_MODE_ASYNC, NULL, &l->f_inline),
               SA_PENDING);
  cr_assert_eq(sa_future_then(l->f_inline, record_cont, &l->c_inline), 0);
  cr_assert_eq(sem_init(&l->slow.started, 0, 0), 0);
  cr_assert_eq(sa_call_blocking(slow_blocking, &l->slow, SA_MODE_ASYNC, NULL, &l->f_blocking),
               SA_PENDING);
  cr_assert_eq(sa_future_then(l->f_blocking, record_cont, &l->c_blocking), 0);
  sem_wait(&l->slow.started); /* running: past the point a cancel could stop it */
}

static void *leave_with_calls_pending(void *arg) {
  struct leaving *l = arg;
  start_leaving_calls(l);
  if (l->by_cleanup)
    l->cleanup_rc = sa_thread_cleanup();
  return NULL;
}

static void check_delivered_once(const char *how, const char *call, struct leaving *l,
                                 struct cont_rec *c, sa_future_t f, int status) {
  cr_assert_eq(c->calls, 1, "SA-THR-2 (%s): %s delivered %d times", how, call, c->calls);
  cr_assert_eq(c->status, status, "SA-THR-2 (%s): %s delivered %d, not %d", how, call, c->status,
               status);
  cr_assert(pthread_equal(c->thread, l->thread),
            "SA-THR-2 (%s): %s delivered on another thread", how, call);
  cr_assert_not_null(c->loop, "SA-THR-2 (%s): %s delivered out of async context", how, call);
  if (f.id) {
    cr_assert_eq(sa_future_status(f, NULL), status,
                 "SA-THR-2 (%s): the future of %s does not keep its result", how, call);
    cr_assert_eq(sa_future_release(f), 0);
  }
}

static void check_left_cleanly(const char *how, struct leaving *l, int handles_before,
                               double seconds) {
  check_delivered_once(how, "a cancellable pending call", l, &l->c_hooked, l->f_hooked,
                       SA_ECANCELED);
  cr_assert_eq(l->hooked.cancels, 1, "SA-THR-2 (%s): its cancel hook ran %d times", how,
               l->hooked.cancels);
  check_delivered_once(how, "a cancellable sa_dispatch_then call", l, &l->c_then,
                       SA_FUTURE_NULL, SA_ECANCELED);
  cr_assert_eq(l->then_hooked.cancels, 1, "SA-THR-2 (%s): its cancel hook ran %d times", how,
               l->then_hooked.cancels);
  check_delivered_once(how, "a hook-less pending call", l, &l->c_hookless, l->f_hookless,
                       SA_ECANCELED);
  check_delivered_once(how, "a call completed but not delivered", l, &l->c_inline, l->f_inline,
                       -4);
  cr_assert_eq(l->c_inline.value, l, "SA-THR-2 (%s): its value was lost", how);
  check_delivered_once(how, "a running blocking function", l, &l->c_blocking, l->f_blocking, -9);
  cr_assert(atomic_load(&l->slow.returned),
            "SA-THR-2 (%s): the thread went on before its blocking function returned", how);
  cr_assert_eq(atomic_load(&value_op_handles), handles_before,
               "SA-THR-2 (%s): %d handles of cancellable ops closed without their callbacks",
               how, atomic_load(&value_op_handles) - handles_before);
  cr_assert_lt(seconds, PARKED_MS / 1000.0 / 4,
               "SA-THR-2 (%s): %.1f s: the hook-less op was waited for", how, seconds);
  sem_destroy(&l->slow.started);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

Test(SA_THR_2, thread_exit_cancels_waits_and_delivers_pending_calls, .timeout = 20) {
  static struct leaving l;
  int handles = atomic_load(&value_op_handles);
  double start = now_s();
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, leave_with_calls_pending, &l), 0);
  pthread_join(t, NULL);
  check_left_cleanly("thread exit", &l, handles, now_s() - start);
}

Test(SA_THR_2, thread_cleanup_cancels_waits_and_delivers_pending_calls, .timeout = 20) {
  static struct leaving l = {.by_cleanup = true};
  int handles = atomic_load(&value_op_handles);
  double start = now_s();
  leave_with_calls_pending(&l);
  cr_assert_eq(l.cleanup_rc, 0);
  check_left_cleanly("sa_thread_cleanup", &l, handles, now_s() - start);
  /* The thread works on afterwards, on a fresh loop. */
  struct value_req req = {.when = SA_TEST_LATER, .status = -2};
  cr_assert_eq(sa_dispatch(&value_op, &req, SA_MODE_AUTO, NULL, &(sa_future_t){0}), -2);
  cr_assert_eq(sa_thread_cleanup(), 0);
}

/* A continuation run while its loop goes away may start calls: not on that
 * loop, which is going (SA_ECANCELED, the op not started). */
struct late_dispatch {
  struct value_req parked, late, late_then;
  struct cont_rec ignored;
  int rc, then_rc, calls;
};

static void dispatch_from_continuation(sa_future_t f, int status, void *value, void *data) {
  struct late_dispatch *d = data;
  sa_future_t g;
  (void)f, (void)status, (void)value;
  d->calls++;
  d->late = (struct value_req){.when = SA_TEST_INLINE};
  d->late_then = d->late;
  d->rc = sa_dispatch(&value_op, &d->late, SA_MODE_AUTO, NULL, &g);
  d->then_rc = sa_dispatch_then(&value_op, &d->late_then, SA_MODE_AUTO, NULL, record_cont,
                                &d->ignored);
}

static void *leave_with_a_dispatching_continuation(void *arg) {
  struct late_dispatch *d = arg;
  d->parked = (struct value_req){.when = SA_TEST_LATER, .delay_ms = PARKED_MS};
  cr_assert_eq(sa_dispatch_then(&value_op, &d->parked, SA_MODE_ASYNC, NULL,
                                dispatch_from_continuation, d),
               SA_PENDING);
  return NULL;
}

Test(SA_THR_2, calls_on_a_loop_going_away_are_refused, .timeout = 20) {
  static struct late_dispatch d;
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, leave_with_a_dispatching_continuation, &d), 0);
  pthread_join(t, NULL);
  cr_assert_eq(d.calls, 1, "SA-THR-2: the pending call was delivered %d times", d.calls);
  cr_assert_eq(d.rc, SA_ECANCELED, "SA-THR-2: sa_dispatch on a loop going away returned %d",
               d.rc);
  cr_assert_eq(d.late.starts, 0, "SA-THR-2: its op was started");
  cr_assert_eq(d.then_rc, SA_ECANCELED,
               "SA-THR-2: sa_dispatch_then on a loop going away returned %d", d.then_rc);
  cr_assert_eq(d.late_then.starts, 0, "SA-THR-2: its op was started");
  cr_assert_eq(d.ignored.calls, 0);
}

/* After sa_thread_cleanup, futures of the loops that went keep their
 * results, and a continuation has nowhere to run; in async context the
 * cleanup is refused and changes nothing. */
static void cleanup_in_loop(uv_loop_t *loop, void *data) {
  (void)loop;
  *(int *)data = sa_thread_cleanup();
}

Test(SA_THR_2, futures_after_cleanup_and_cleanup_in_async_context) {
  struct value_req req = {.when = SA_TEST_INLINE, .status = -6, .value = &req};
  sa_future_t f;
  void *value = NULL;
  cr_assert_eq(sa_dispatch(&value_op, &req, SA_MODE_ASYNC, NULL, &f), SA_PENDING);
  cr_assert_eq(sa_future_wait(f, NULL), -6);
  cr_assert_eq(sa_thread_cleanup(), 0);
  cr_assert_eq(sa_future_status(f, &value), -6, "SA-THR-2: the future lost its result");
  cr_assert_eq(value, &req);
  struct cont_rec cont = {0};
  cr_assert_eq(sa_future_then(f, record_cont, &cont), SA_ECANCELED,
               "SA-THR-2: a continuation on a future of a loop gone was not refused");
  cr_assert_eq(sa_future_release(f), 0);
  cr_assert_eq(cont.calls, 0);

  struct value_req parked = {.when = SA_TEST_LATER, .delay_ms = 20, .status = -2};
  cr_assert_eq(sa_dispatch(&value_op, &parked, SA_MODE_ASYNC, NULL, &f), SA_PENDING);
  int rc = 1;
  sa_test_in_loop(cleanup_in_loop, &rc);
  cr_assert_eq(rc, SA_EBUSY, "SA-THR-2: sa_thread_cleanup in async context returned %d", rc);
  cr_assert_eq(sa_future_wait(f, NULL), -2, "SA-THR-2: a refused cleanup disturbed a call");
  cr_assert_eq(parked.cancels, 0);
  cr_assert_eq(sa_future_release(f), 0);
  cr_assert_eq(sa_thread_cleanup(), 0);
}

/* SA-THR-2: a thread exits while calls of it are pending (through a future
 * and through sa_dispatch_then), their op's hook finishing a little later, and another op keeps an active repeating timer
 * on the thread's private loop: the wind-down waits for the hooked calls,
 * not for the timer, which never ends, and the thread goes. */
#define LATE_HOOK_MS 5

struct late_hook {
  uv_timer_t timer;
  sa_call_t *call;
};

static uv_timer_t forever;

static void tick_on(uv_timer_t *timer) { (void)timer; }

static void keep_ticking_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  (void)arg;
  uv_timer_init(loop, &forever);
  uv_timer_start(&forever, tick_on, 1, 1);
  sa_complete(call, 0, NULL);
}

static const sa_op_t keep_ticking_op = {keep_ticking_start, NULL};

static void late_hook_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  struct late_hook *h = arg;
  h->call = call;
  uv_timer_init(loop, &h->timer);
}

static void late_hook_fire(uv_timer_t *timer) {
  struct late_hook *h = (struct late_hook *)timer;
  sa_complete(h->call, SA_ECANCELED, NULL);
  uv_close((uv_handle_t *)timer, NULL);
}

static void late_hook_cancel(sa_call_t *call, uv_loop_t *loop, void *arg) {
  (void)call;
  (void)loop;
  struct late_hook *h = arg;
  uv_timer_start(&h->timer, late_hook_fire, LATE_HOOK_MS, 0);
}

static const sa_op_t late_hook_op = {late_hook_start, late_hook_cancel};

struct ticking_exit {
  struct late_hook hook, then_hook;
  struct cont_rec cont, then_cont;
  sa_future_t f;
};

static void *exit_while_ticking(void *arg) {
  struct ticking_exit *x = arg;
  cr_assert_eq(sa_dispatch(&keep_ticking_op, NULL, SA_MODE_SYNC, NULL, NULL), 0);
  cr_assert_eq(sa_dispatch(&late_hook_op, &x->hook, SA_MODE_ASYNC, NULL, &x->f), SA_PENDING);
  cr_assert_eq(sa_future_then(x->f, record_cont, &x->cont), 0);
  cr_assert_eq(sa_dispatch_then(&late_hook_op, &x->then_hook, SA_MODE_ASYNC, NULL, record_cont,
                                &x->then_cont),
               SA_PENDING);
  return NULL;
}

Test(SA_THR_2, exit_waits_for_hooks_not_for_handles_kept_active) {
  static struct ticking_exit x;
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, exit_while_ticking, &x), 0);
  struct timespec limit;
  clock_gettime(CLOCK_REALTIME, &limit);
  limit.tv_sec += 10;
  cr_assert_eq(pthread_timedjoin_np(t, NULL, &limit), 0,
               "SA-THR-2: a thread whose private loop keeps an active timer never finished "
               "exiting");
  cr_assert_eq(x.cont.calls, 1, "SA-THR-2: the pending call was delivered %d times",
               x.cont.calls);
  cr_assert_eq(x.cont.status, SA_ECANCELED);
  cr_assert_eq(x.then_cont.calls, 1,
               "SA-THR-2: the pending sa_dispatch_then call was delivered %d times",
               x.then_cont.calls);
  cr_assert_eq(x.then_cont.status, SA_ECANCELED);
  cr_assert_eq(sa_future_release(x.f), 0);
}

/* SA-THR-2: a thread exits while ops without a cancel hook still run for
 * calls that timed out: the results they gave (SA_ETIMEDOUT) stand, and
 * nothing of the calls stays behind the thread, however many there were.
 * Thousands of them, so that records taken in blocks of a thousand show. */
#define HELD_AT_EXIT 2500
#define HELD_ROUNDS 3

/* An op that never completes and holds nothing: only the exit ends it. */
static void never_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  (void)call, (void)loop, (void)arg;
}

static const sa_op_t never_op = {never_start, NULL};

struct held_exit {
  sa_future_t kept; /* one future kept past the exit: its result stands */
  int wrong;
};

static void *exit_with_timed_out_calls(void *arg) {
  struct held_exit *h = arg;
  h->wrong = 0;
  for (int i = 0; i < HELD_AT_EXIT; i++) {
    sa_future_t f;
    if (sa_dispatch_until(&never_op, NULL, SA_MODE_ASYNC, 0, NULL, &f) != SA_PENDING ||
        sa_future_wait(f, NULL) != SA_ETIMEDOUT)
      h->wrong++;
    if (i == 0)
      h->kept = f;
    else if (sa_future_release(f) != 0)
      h->wrong++;
  }
  return NULL;
}

static void held_exit_round(struct held_exit *h) {
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, exit_with_timed_out_calls, h), 0);
  cr_assert_eq(pthread_join(t, NULL), 0);
  cr_assert_eq(h->wrong, 0, "SA-DL-2: %d calls did not time out as they should", h->wrong);
  cr_assert_eq(sa_future_status(h->kept, NULL), SA_ETIMEDOUT,
               "SA-THR-2: a timed-out call's result changed when its thread exited");
  cr_assert_eq(sa_future_release(h->kept), 0);
}

Test(SA_THR_2, exit_with_timed_out_calls_running_leaves_nothing_behind, .timeout = 60) {
  static struct held_exit h;
  held_exit_round(&h); /* warm */
  long data_before = sa_test_status_kib("VmData");
  for (int i = 0; i < HELD_ROUNDS; i++)
    held_exit_round(&h);
  long grown = sa_test_status_kib("VmData") - data_before;
  if (!RUNNING_ON_VALGRIND) /* valgrind's own memory is counted there */
    cr_assert_lt(grown, 192,
                 "SA-THR-2: %d threads that exited with %d timed-out calls running each grew "
                 "the data segment by %ld KiB",
                 HELD_ROUNDS, HELD_AT_EXIT, grown);
}
