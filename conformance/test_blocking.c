/* SA-BLK-*: an ordinary blocking function called from both worlds. */
#include "sa_test.h"

#include <criterion/criterion.h>
#include <semaphore.h>
#include <stdlib.h>
#include <time.h>

/* A blocking function's instructions and what it saw. The dispatcher's
 * delivery orders its writes before the caller reads them. */
struct blk {
  int status;
  void *value;
  sem_t *wait_for; /* if set, block until posted (2 s at most) */
  /* observed */
  int calls;
  bool got_post;
  pthread_t thread;
  uv_loop_t *loop; /* sa_current_loop() inside the function */
};

static int blocking_fn(void *arg, void **value) {
  struct blk *b = arg;
  b->calls++;
  b->thread = pthread_self();
  b->loop = sa_current_loop();
  if (b->wait_for) {
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 2; /* bounded: a broken implementation fails, never hangs */
    b->got_post = sem_timedwait(b->wait_for, &deadline) == 0;
  }
  *value = b->value;
  return b->status;
}

static int marker;

Test(SA_BLK_1, sync_context_calls_the_function_directly) {
  for (int status = 0; status >= -5; status -= 5) {
    struct blk b = {.status = status, .value = &marker};
    void *value = NULL;
    sa_future_t f = {42};
    int rc = sa_call_blocking(blocking_fn, &b, SA_MODE_AUTO, &value, &f);
    cr_assert_eq(rc, status, "SA-BLK-1: status %d returned as %d", status, rc);
    cr_assert_eq(b.calls, 1, "SA-BLK-1: function called %d times", b.calls);
    cr_assert(pthread_equal(b.thread, pthread_self()),
              "SA-BLK-1: function ran on another thread");
    cr_assert_null(b.loop, "SA-BLK-1: a loop was run around the function");
    cr_assert_eq(value, &marker, "SA-BLK-1: value lost");
    cr_assert_eq(f.id, 0, "SA-BLK-1: a sync call must set the future to null");
  }
}

/* SA-BLK-2: from a loop callback. The function blocks until a timer on the
 * loop posts a semaphore, which can only happen if the loop keeps running. */
struct blk_async {
  struct blk b;
  sem_t sem;
  uv_timer_t timer;
  uv_loop_t *loop;
  pthread_t loop_thread;
  int rc;
  int delivered_before_return;
  struct cont_rec cont;
};

static void post_cb(uv_timer_t *timer) {
  struct blk_async *s = timer->data;
  sem_post(&s->sem);
  uv_close((uv_handle_t *)timer, NULL);
}

static void blk_async_in_loop(uv_loop_t *loop, void *data) {
  struct blk_async *s = data;
  s->loop = loop;
  s->loop_thread = pthread_self();
  uv_timer_init(loop, &s->timer);
  s->timer.data = s;
  uv_timer_start(&s->timer, post_cb, 5, 0);
  sa_future_t f;
  s->rc = sa_call_blocking(blocking_fn, &s->b, SA_MODE_AUTO, NULL, &f);
  s->delivered_before_return = s->cont.calls;
  if (s->rc == SA_PENDING) {
    s->cont.release = true;
    cr_assert_eq(sa_future_then(f, record_cont, &s->cont), 0);
  } else {
    sem_post(&s->sem); /* let the timer find the semaphore consistent */
  }
}

Test(SA_BLK_2, async_context_runs_the_function_off_the_loop) {
  struct blk_async s = {.b = {.status = -9, .value = &marker}};
  sem_init(&s.sem, 0, 0);
  s.b.wait_for = &s.sem;
  sa_test_in_loop(blk_async_in_loop, &s);
  sem_destroy(&s.sem);
  cr_assert_eq(s.rc, SA_PENDING,
               "SA-BLK-2: in async context the call returned %d, not a future", s.rc);
  cr_assert_eq(s.b.calls, 1, "SA-BLK-2: function called %d times", s.b.calls);
  cr_assert(!pthread_equal(s.b.thread, s.loop_thread),
            "SA-BLK-2: the function ran on the loop's thread");
  cr_assert(s.b.got_post, "SA-BLK-2: the loop stalled while the function blocked");
  cr_assert_eq(s.delivered_before_return, 0, "SA-BLK-2: delivered before the call returned");
  cr_assert_eq(s.cont.calls, 1, "SA-BLK-2: %d deliveries", s.cont.calls);
  cr_assert_eq(s.cont.status, -9, "SA-BLK-2: status delivered as %d", s.cont.status);
  cr_assert_eq(s.cont.value, &marker, "SA-BLK-2: value lost");
  cr_assert(pthread_equal(s.cont.thread, s.loop_thread),
            "SA-BLK-2: delivered off the loop's thread");
  cr_assert_eq(s.cont.loop, s.loop, "SA-BLK-2: delivered outside async context on the loop");
}

Test(SA_BLK_3, forced_async_from_sync_context_returns_a_future) {
  struct blk b = {.status = -3, .value = &marker};
  sa_future_t f;
  int rc = sa_call_blocking(blocking_fn, &b, SA_MODE_ASYNC, NULL, &f);
  cr_assert_eq(rc, SA_PENDING, "SA-BLK-3: SA_MODE_ASYNC from sync context returned %d", rc);
  void *value = NULL;
  rc = sa_future_wait(f, &value);
  cr_assert_eq(rc, -3, "SA-BLK-3: waited status %d", rc);
  cr_assert_eq(value, &marker, "SA-BLK-3: value lost");
  cr_assert_eq(b.calls, 1);
  cr_assert(!pthread_equal(b.thread, pthread_self()),
            "SA-BLK-3: SA_MODE_ASYNC ran the function on the caller's thread");
  cr_assert_eq(sa_future_release(f), 0);
}

struct blk_forced_sync {
  struct blk b;
  uv_loop_t *loop;
  pthread_t loop_thread;
  int rc;
  void *value;
};

static void blk_forced_sync_in_loop(uv_loop_t *loop, void *data) {
  struct blk_forced_sync *s = data;
  s->loop = loop;
  s->loop_thread = pthread_self();
  sa_future_t f; /* given so that an implementation going async fails cleanly */
  s->rc = sa_call_blocking(blocking_fn, &s->b, SA_MODE_SYNC, &s->value, &f);
  if (s->rc == SA_PENDING)
    sa_future_release(f);
}

Test(SA_BLK_3, forced_sync_in_async_context_calls_directly) {
  struct blk_forced_sync s = {.b = {.status = -4, .value = &marker}};
  sa_test_in_loop(blk_forced_sync_in_loop, &s);
  cr_assert_eq(s.rc, -4, "SA-BLK-3: SA_MODE_SYNC in a loop callback returned %d", s.rc);
  cr_assert_eq(s.value, &marker, "SA-BLK-3: value lost");
  cr_assert_eq(s.b.calls, 1);
  cr_assert(pthread_equal(s.b.thread, s.loop_thread),
            "SA-BLK-3: SA_MODE_SYNC did not call the function on the loop's thread");
  cr_assert_eq(s.b.loop, s.loop, "SA-BLK-3: the function did not run in the loop's context");
}

Test(SA_BLK_4, invalid_arguments_are_rejected_without_calling) {
  struct blk b = {0};
  sa_future_t f;
  void *value;
  cr_assert_eq(sa_call_blocking(NULL, &b, SA_MODE_AUTO, &value, &f), SA_EINVAL,
               "SA-BLK-4: a null function was accepted");
  cr_assert_eq(sa_call_blocking(blocking_fn, &b, (sa_mode_t)7, &value, &f), SA_EINVAL,
               "SA-BLK-4: an invalid mode was accepted");
  cr_assert_eq(sa_call_blocking(blocking_fn, &b, SA_MODE_AUTO, &value, NULL), SA_EINVAL,
               "SA-BLK-4: SA_MODE_AUTO without a future was accepted");
  cr_assert_eq(sa_call_blocking(blocking_fn, &b, SA_MODE_ASYNC, &value, NULL), SA_EINVAL,
               "SA-BLK-4: SA_MODE_ASYNC without a future was accepted");
  cr_assert_eq(b.calls, 0, "SA-BLK-4: the function was called on invalid input");
}

Test(SA_BLK_4, positive_return_is_reported_as_einval) {
  struct blk b = {.status = 3};
  cr_assert_eq(sa_call_blocking(blocking_fn, &b, SA_MODE_SYNC, NULL, NULL), SA_EINVAL,
               "SA-BLK-4 (sync): a positive return passed through");
  sa_future_t f;
  cr_assert_eq(sa_call_blocking(blocking_fn, &b, SA_MODE_ASYNC, NULL, &f), SA_PENDING);
  cr_assert_eq(sa_future_wait(f, NULL), SA_EINVAL,
               "SA-BLK-4 (async): a positive return passed through");
  cr_assert_eq(sa_future_release(f), 0);
}

/* SA-BLK-4, cancel: four blockers hold every thread of a four-thread pool,
 * so the fifth call is still queued when it is cancelled. */
#define POOL_THREADS 4

struct blk_cancel {
  struct blk blockers[POOL_THREADS];
  struct blk target;
  sem_t sem;
  int rc;
  int cancel_rc;
  struct cont_rec cont;
};

static void blk_cancel_in_loop(uv_loop_t *loop, void *data) {
  struct blk_cancel *s = data;
  (void)loop;
  sa_future_t f;
  for (int i = 0; i < POOL_THREADS; i++) {
    s->blockers[i].wait_for = &s->sem;
    cr_assert_eq(sa_call_blocking(blocking_fn, &s->blockers[i], SA_MODE_AUTO, NULL, &f),
                 SA_PENDING);
    sa_future_release(f); /* the call runs on; its result is dropped */
  }
  s->rc = sa_call_blocking(blocking_fn, &s->target, SA_MODE_AUTO, NULL, &f);
  if (s->rc == SA_PENDING) {
    s->cancel_rc = sa_future_cancel(f);
    s->cont.release = true;
    cr_assert_eq(sa_future_then(f, record_cont, &s->cont), 0);
  }
  for (int i = 0; i < POOL_THREADS; i++)
    sem_post(&s->sem);
}

Test(SA_BLK_4, cancel_before_start_keeps_the_function_from_running) {
  setenv("UV_THREADPOOL_SIZE", "4", 1); /* read at the pool's first use */
  struct blk_cancel s = {.target = {.status = 0, .value = &marker}};
  sem_init(&s.sem, 0, 0);
  sa_test_in_loop(blk_cancel_in_loop, &s);
  sem_destroy(&s.sem);
  cr_assert_eq(s.rc, SA_PENDING, "SA-BLK-4: the call returned %d, not a future", s.rc);
  cr_assert_eq(s.cancel_rc, 0, "SA-BLK-4: sa_future_cancel returned %d", s.cancel_rc);
  cr_assert_eq(s.cont.calls, 1, "SA-BLK-4: %d deliveries", s.cont.calls);
  cr_assert_eq(s.cont.status, SA_ECANCELED, "SA-BLK-4: a cancelled call delivered %d",
               s.cont.status);
  cr_assert_eq(s.target.calls, 0, "SA-BLK-4: a cancelled function ran");
}
