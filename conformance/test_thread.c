/* SA-THR-1 and SA-THR-2 (SA-THR-3, fork, is the standalone fork_test.c). */
#include "sa_test.h"

#include <criterion/criterion.h>
#include <stdint.h>

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

Test(SA_THR_2, private_loops_freed_at_thread_exit) {
  int before = sa_test_count_fds();
  for (int round = 0; round < 5; round++) {
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, sync_calls_then_exit, NULL), 0);
    pthread_join(t, NULL);
  }
  int after = sa_test_count_fds();
  cr_assert_eq(after, before,
               "SA-THR-2: %d file descriptors left behind by 5 exited threads", after - before);
}

Test(SA_THR_2, private_loops_freed_by_thread_cleanup) {
  int before = sa_test_count_fds();
  struct value_req req = {.when = SA_TEST_LATER};
  cr_assert_eq(sa_dispatch(&value_op, &req, SA_MODE_SYNC, NULL, NULL), 0);
  cr_assert_gt(sa_test_count_fds(), before, "a private loop uses file descriptors");
  cr_assert_eq(sa_thread_cleanup(), 0);
  cr_assert_eq(sa_test_count_fds(), before,
               "SA-THR-2: sa_thread_cleanup left file descriptors open");
  /* The thread still works afterwards, on a fresh loop. */
  cr_assert_eq(sa_dispatch(&value_op, &req, SA_MODE_SYNC, NULL, NULL), 0);
  cr_assert_eq(sa_thread_cleanup(), 0);
}
