/*
 * sa_stress: thread-race stress scenarios for any implementation of
 * smartasync.h. Each counts every call it starts and every result it
 * receives, and fails on a lost, duplicated or wrong one (the outcome is
 * checked, not only the absence of a crash).
 *
 *   sa_stress SCENARIO [-t THREADS] [-d MILLISECONDS] [-s SEED]
 *
 * Scenarios:
 *   shared   THREADS sync callers and THREADS/2 (at least one) loop threads
 *            share one object; every sync caller must get its result, never
 *            a pending future
 *   mixed    sync, forced-async batches and forced-sync calls mixed on each
 *            thread, with ops that dispatch nested ops
 *   churn    short-lived threads, each making its private loop and dying
 *   futures  futures waited (some with 1 ms deadlines), polled and released
 *            from other threads while their owner completes, cancels and
 *            delivers them
 *   cancel   calls read, cancelled and timed out from other threads (and
 *            given deadlines of 0-2 ms) while their loops complete them
 *   home     sync, async and cancelled calls from every thread on one home,
 *            which is stopped and restarted every 20 ms
 *   fork     fork() while other threads are mid-call; the child must work
 *   bursts   loop threads start bursts of up to thousands of calls, of sizes
 *            that repeat, grow and shrink, while other threads check that
 *            the futures they released stay stale as their memory is
 *            reused, given back and taken again
 *
 * The seed fixes every random choice (way of completing, cancel or not);
 * the interleaving is the scheduler's. Exit 0 when every check holds.
 */
#include <smartasync.h>

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <valgrind/valgrind.h>

static struct {
  int threads;
  int duration_ms;
  unsigned seed;
} opt = {4, 2000, 1};

static atomic_long calls_started, calls_ok, calls_failed;
static double deadline;

/* Count a failure; print the first few (a broken invariant repeats). */
#define FAIL(...)                                                   \
  do {                                                              \
    if (atomic_fetch_add(&calls_failed, 1) < 20) {                  \
      fprintf(stderr, "stress: FAILED: " __VA_ARGS__);              \
      fputc('\n', stderr);                                          \
    }                                                               \
  } while (0)

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static bool time_left(void) { return now_ms() < deadline; }

/* xorshift32: per-thread, seeded from the run's seed and the thread's index. */
static unsigned next_rand(unsigned *state) {
  unsigned x = *state;
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  return *state = x;
}

static unsigned thread_seed(int index) { return opt.seed * 2654435761u + (unsigned)index * 97u + 1; }

/* ---- the op: completes inline, on the next tick or from a timer -------- */

enum way { INLINE, NEXT_TICK, LATER };

/* The caller's record of one call: the op must complete it exactly once
 * with status -(tag % 100) and value tag. */
struct job {
  enum way way;
  long tag;
  atomic_int completions;
  sa_call_t *call;
  uv_timer_t timer; /* NEXT_TICK: 0 ms; LATER: 1 ms */
  bool pending;     /* the timer is running: cancel can stop it */
};

static int job_status(long tag) { return -(int)(tag % 100); }

static void job_closed(uv_handle_t *handle) {
  struct job *job = handle->data;
  atomic_fetch_add(&job->completions, 1);
  sa_complete(job->call, job_status(job->tag), (void *)(intptr_t)job->tag);
}

static void job_fire(uv_timer_t *timer) {
  struct job *job = timer->data;
  job->pending = false;
  uv_close((uv_handle_t *)timer, job_closed);
}

static void job_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  struct job *job = arg;
  job->call = call;
  if (job->way == INLINE) {
    atomic_fetch_add(&job->completions, 1);
    sa_complete(call, job_status(job->tag), (void *)(intptr_t)job->tag);
    return;
  }
  uv_timer_init(loop, &job->timer);
  job->timer.data = job;
  job->pending = true;
  uv_timer_start(&job->timer, job_fire, job->way == LATER ? 1 : 0, 0);
}

static void cancelled_closed(uv_handle_t *handle) {
  struct job *job = handle->data;
  atomic_fetch_add(&job->completions, 1);
  sa_complete(job->call, SA_ECANCELED, NULL);
}

static void job_cancel(sa_call_t *call, uv_loop_t *loop, void *arg) {
  struct job *job = arg;
  (void)call;
  (void)loop;
  if (job->pending) {
    job->pending = false;
    uv_timer_stop(&job->timer);
    uv_close((uv_handle_t *)&job->timer, cancelled_closed);
  }
}

static const sa_op_t job_op = {job_start, job_cancel};

static void job_init(struct job *job, unsigned *rng, long tag) {
  job->way = (enum way)(next_rand(rng) % 3);
  job->tag = tag;
  atomic_init(&job->completions, 0);
}

/* Check a delivered result against the job. */
static void check_result(const struct job *job, int status, void *value, const char *what) {
  if ((status == SA_ECANCELED || status == SA_ETIMEDOUT) && value == NULL)
    return; /* a cancel or a deadline that won the race */
  if (status != job_status(job->tag) || value != (void *)(intptr_t)job->tag)
    FAIL("%s: tag %ld got status %d value %p", what, job->tag, status, value);
}

/* A sync call of a fresh job; returns true if all was right. */
static bool sync_job(unsigned *rng, long tag, sa_mode_t mode) {
  struct job job;
  void *value = NULL;
  sa_future_t f;
  job_init(&job, rng, tag);
  atomic_fetch_add(&calls_started, 1);
  int rc = sa_dispatch(&job_op, &job, mode, &value, &f);
  if (rc == SA_PENDING) {
    FAIL("sync call of tag %ld returned a pending future", tag);
    sa_future_wait(f, NULL); /* keep the job alive until it is done */
    sa_future_release(f);
    return false;
  }
  if (atomic_load(&job.completions) != 1 || rc != job_status(tag) ||
      value != (void *)(intptr_t)tag) {
    FAIL("sync call of tag %ld: status %d value %p, %d completions", tag, rc, value,
         atomic_load(&job.completions));
    return false;
  }
  atomic_fetch_add(&calls_ok, 1);
  return true;
}

/* ---- a loop thread dispatching async batches from timer callbacks ------ */

#define LOOP_BATCH 16

struct loop_worker {
  int index;
  unsigned rng;
  long next_tag;
  uv_timer_t tick;
  struct job jobs[LOOP_BATCH];
  int outstanding;
  bool stopping;
};

static void loop_tick(uv_timer_t *timer);

struct delivered_ctx {
  struct loop_worker *w;
  struct job *job;
};

static void loop_batch_done(sa_future_t f, int status, void *value, void *data) {
  struct delivered_ctx *d = data;
  check_result(d->job, status, value, "async delivery");
  if (atomic_load(&d->job->completions) != 1)
    FAIL("async tag %ld completed %d times", d->job->tag, atomic_load(&d->job->completions));
  atomic_fetch_add(&calls_ok, 1);
  if (f.id != 0) /* a call of sa_dispatch_then has no future */
    sa_future_release(f);
  if (--d->w->outstanding == 0 && !d->w->stopping)
    uv_timer_start(&d->w->tick, loop_tick, 0, 0);
}

static _Thread_local struct delivered_ctx delivered[LOOP_BATCH];

static void loop_tick(uv_timer_t *timer) {
  struct loop_worker *w = timer->data;
  if (!time_left()) {
    w->stopping = true;
    uv_close((uv_handle_t *)timer, NULL);
    return;
  }
  if (sa_current_loop() != timer->loop)
    FAIL("loop thread %d: not in async context inside its loop", w->index);
  w->outstanding = LOOP_BATCH;
  for (int i = 0; i < LOOP_BATCH; i++) {
    sa_future_t f;
    job_init(&w->jobs[i], &w->rng, w->index * 100000000L + w->next_tag++);
    delivered[i] = (struct delivered_ctx){w, &w->jobs[i]};
    atomic_fetch_add(&calls_started, 1);
    /* Every other call takes its continuation with it (sa_dispatch_then). */
    int rc = i % 2 ? sa_dispatch_then(&job_op, &w->jobs[i], SA_MODE_AUTO, NULL, loop_batch_done,
                                      &delivered[i])
                   : sa_dispatch(&job_op, &w->jobs[i], SA_MODE_AUTO, NULL, &f);
    if (rc != SA_PENDING) {
      FAIL("auto call inside a loop returned %d, not pending", rc);
      w->outstanding--;
      continue;
    }
    if (i % 2 == 0)
      sa_future_then(f, loop_batch_done, &delivered[i]);
  }
  if (w->outstanding == 0)
    uv_timer_start(timer, loop_tick, 0, 0);
}

/* Run a fresh application loop whose work is driven by `tick` (data `data`,
 * first due at once, then every `repeat` ms) until it has nothing left;
 * returns sa_loop_close's result. */
static int run_ticking_loop(uv_timer_t *tick, void *data, uv_timer_cb cb, uint64_t repeat) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  uv_timer_init(&loop, tick);
  tick->data = data;
  uv_timer_start(tick, cb, 0, repeat);
  sa_run(&loop, UV_RUN_DEFAULT);
  return sa_loop_close(&loop);
}

static void *loop_thread(void *arg) {
  struct loop_worker *w = arg;
  w->rng = thread_seed(w->index);
  int rc = run_ticking_loop(&w->tick, w, loop_tick, 0);
  if (rc)
    FAIL("sa_loop_close: %s", sa_strerror(rc));
  return NULL;
}

/* ---- scenario: shared --------------------------------------------------- */

/* The seed's shared instance: one object used by every thread. The object
 * guards its own state; the dispatcher must add no race of its own. */
static struct {
  pthread_mutex_t mutex;
  long lookups;
} shared_object = {PTHREAD_MUTEX_INITIALIZER, 0};

static void shared_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  pthread_mutex_lock(&shared_object.mutex);
  shared_object.lookups++;
  pthread_mutex_unlock(&shared_object.mutex);
  job_start(call, loop, arg);
}

static const sa_op_t shared_op = {shared_start, job_cancel};

static void *shared_sync_thread(void *arg) {
  int index = (int)(intptr_t)arg;
  unsigned rng = thread_seed(index);
  long tag = index * 100000000L;
  while (time_left()) {
    struct job job;
    void *value = NULL;
    sa_future_t f;
    job_init(&job, &rng, tag++);
    atomic_fetch_add(&calls_started, 1);
    int rc = sa_dispatch(&shared_op, &job, SA_MODE_AUTO, &value, &f);
    if (rc == SA_PENDING) {
      FAIL("a sync caller got a pending future while other threads run loops");
      sa_future_wait(f, NULL);
      sa_future_release(f);
      continue;
    }
    if (rc != job_status(job.tag) || value != (void *)(intptr_t)job.tag ||
        atomic_load(&job.completions) != 1)
      FAIL("shared sync call: tag %ld got %d %p", job.tag, rc, value);
    else
      atomic_fetch_add(&calls_ok, 1);
  }
  return NULL;
}

static void run_threads(int n, void *(*sync_fn)(void *), int loops) {
  pthread_t *t = calloc((size_t)(n + loops), sizeof *t);
  struct loop_worker *w = calloc((size_t)loops + 1, sizeof *w);
  for (int i = 0; i < n; i++)
    pthread_create(&t[i], NULL, sync_fn, (void *)(intptr_t)i);
  for (int i = 0; i < loops; i++) {
    w[i].index = n + i;
    pthread_create(&t[n + i], NULL, loop_thread, &w[i]);
  }
  for (int i = 0; i < n + loops; i++)
    pthread_join(t[i], NULL);
  free(t);
  free(w);
}

/* Every thread a sync caller, so that even -t 2 has two of them racing on
 * the dispatcher's sync path, plus half as many loop threads. */
static void scenario_shared(void) {
  int loops = opt.threads / 2;
  run_threads(opt.threads, shared_sync_thread, loops > 0 ? loops : 1);
  printf("shared object: %ld lookups\n", shared_object.lookups);
}

/* ---- scenario: mixed ---------------------------------------------------- */

/* An op that dispatches a nested job in auto mode (async on its loop) and
 * completes with the nested result. */
struct nested {
  struct job inner;
  sa_call_t *call;
};

static void nested_done(sa_future_t f, int status, void *value, void *data) {
  struct nested *n = data;
  sa_future_release(f);
  sa_complete(n->call, status, value);
}

static void nested_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  struct nested *n = arg;
  sa_future_t f;
  (void)loop;
  n->call = call;
  int rc = sa_dispatch(&job_op, &n->inner, SA_MODE_AUTO, NULL, &f);
  if (rc != SA_PENDING) {
    FAIL("nested auto call inside an op returned %d", rc);
    sa_complete(call, -1000, NULL);
    return;
  }
  sa_future_then(f, nested_done, n);
}

static const sa_op_t nested_op = {nested_start, NULL};

#define MIXED_BATCH 8

static void *mixed_thread(void *arg) {
  int index = (int)(intptr_t)arg;
  unsigned rng = thread_seed(index);
  long tag = index * 100000000L;
  while (time_left()) {
    switch (next_rand(&rng) % 3) {
    case 0: /* a plain sync call, auto or forced */
      sync_job(&rng, tag++, next_rand(&rng) % 2 ? SA_MODE_AUTO : SA_MODE_SYNC);
      break;
    case 1: { /* an op that dispatches a nested op */
      struct nested n;
      void *value = NULL;
      job_init(&n.inner, &rng, tag++);
      atomic_fetch_add(&calls_started, 1);
      int rc = sa_dispatch(&nested_op, &n, SA_MODE_SYNC, &value, NULL);
      if (rc != job_status(n.inner.tag) || value != (void *)(intptr_t)n.inner.tag)
        FAIL("nested call: tag %ld got %d %p", n.inner.tag, rc, value);
      else
        atomic_fetch_add(&calls_ok, 1);
      break;
    }
    default: { /* a forced-async batch from plain code, then wait for all */
      struct job jobs[MIXED_BATCH];
      sa_future_t f[MIXED_BATCH];
      for (int i = 0; i < MIXED_BATCH; i++) {
        job_init(&jobs[i], &rng, tag++);
        atomic_fetch_add(&calls_started, 1);
        if (sa_dispatch(&job_op, &jobs[i], SA_MODE_ASYNC, NULL, &f[i]) != SA_PENDING)
          FAIL("forced async from plain code did not return a future");
      }
      for (int i = MIXED_BATCH - 1; i >= 0; i--) {
        void *value = NULL;
        int rc = sa_future_wait(f[i], &value);
        check_result(&jobs[i], rc, value, "batch wait");
        if (atomic_load(&jobs[i].completions) != 1)
          FAIL("batch tag %ld completed %d times", jobs[i].tag,
               atomic_load(&jobs[i].completions));
        else
          atomic_fetch_add(&calls_ok, 1);
        sa_future_release(f[i]);
      }
    }
    }
  }
  return NULL;
}

static void scenario_mixed(void) {
  int loops = opt.threads / 2, sync = opt.threads - loops;
  run_threads(sync > 0 ? sync : 1, mixed_thread, loops > 0 ? loops : 1);
}

/* ---- scenario: churn ---------------------------------------------------- */

/* Open loops of this process: each libuv loop owns one epoll instance.
 * (Counting all fds would also count the race detectors' own pipes.) */
static int count_loops(void) {
  DIR *dir = opendir("/proc/self/fd");
  struct dirent *entry;
  int n = 0;
  while (dir && (entry = readdir(dir)) != NULL) {
    char target[64];
    ssize_t len = readlinkat(dirfd(dir), entry->d_name, target, sizeof target - 1);
    if (len > 0) {
      target[len] = '\0';
      n += strcmp(target, "anon_inode:[eventpoll]") == 0;
    }
  }
  if (dir)
    closedir(dir);
  return n;
}

static void *churn_thread(void *arg) {
  int index = (int)(intptr_t)arg;
  unsigned rng = thread_seed(index);
  int calls = 1 + (int)(next_rand(&rng) % 3);
  for (int i = 0; i < calls; i++)
    sync_job(&rng, index * 10L + i, SA_MODE_AUTO);
  return NULL; /* the private loop goes with the thread */
}

static void scenario_churn(void) {
  int loops = count_loops();
  long spawned = 0;
  pthread_t *t = calloc((size_t)opt.threads, sizeof *t);
  while (time_left()) {
    for (int i = 0; i < opt.threads; i++)
      pthread_create(&t[i], NULL, churn_thread, (void *)(intptr_t)(spawned + i));
    for (int i = 0; i < opt.threads; i++)
      pthread_join(t[i], NULL);
    spawned += opt.threads;
  }
  free(t);
  /* A dispatcher may keep the loops of exited threads for later ones, but
   * not one per exited thread [SA-THR-2]: no more than ever ran at once. */
  int left = count_loops() - loops;
  if (left > opt.threads)
    FAIL("%d loops left open by %ld exited threads, %d at a time", left, spawned, opt.threads);
  printf("churn: %ld threads\n", spawned);
}

/* ---- scenario: futures -------------------------------------------------- */

/* Owners run loops and publish futures to a shared board; takers wait on
 * them, poll them or release them at once, from other threads, while the
 * owners complete and sometimes cancel them. */
#define BOARD 64

struct posted {
  sa_future_t future;
  struct job *job;
};

static struct {
  pthread_mutex_t mutex;
  pthread_cond_t changed;
  struct posted slots[BOARD];
  int count;
  int owners_left;
} board = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, {{{0}, NULL}}, 0, 0};

struct owned_job {
  struct job job;
  atomic_int deliveries; /* continuation calls: 1, or 0 if released first */
  struct owned_job *next;
};

struct owner {
  int index;
  unsigned rng;
  long tag;
  uv_timer_t tick;
  struct owned_job *jobs; /* all of them, checked and freed at the end */
};

static void owned_delivered(sa_future_t f, int status, void *value, void *data) {
  struct owned_job *oj = data;
  (void)f; /* the taker releases it */
  check_result(&oj->job, status, value, "owner continuation");
  if (atomic_fetch_add(&oj->deliveries, 1) != 0)
    FAIL("future of tag %ld delivered twice", oj->job.tag);
}

static void owner_tick(uv_timer_t *timer) {
  struct owner *o = timer->data;
  if (!time_left()) {
    uv_close((uv_handle_t *)timer, NULL);
    return;
  }
  pthread_mutex_lock(&board.mutex);
  bool room = board.count < BOARD;
  pthread_mutex_unlock(&board.mutex);
  if (!room)
    return;
  struct owned_job *oj = calloc(1, sizeof *oj);
  sa_future_t f;
  job_init(&oj->job, &o->rng, o->index * 100000000L + o->tag++);
  oj->next = o->jobs;
  o->jobs = oj;
  atomic_fetch_add(&calls_started, 1);
  if (sa_dispatch(&job_op, &oj->job, SA_MODE_AUTO, NULL, &f) != SA_PENDING) {
    FAIL("owner: auto call in a loop did not return a future");
    return;
  }
  sa_future_then(f, owned_delivered, oj);
  if (next_rand(&o->rng) % 4 == 0)
    sa_future_cancel(f); /* races with the completion */
  pthread_mutex_lock(&board.mutex);
  board.slots[board.count++] = (struct posted){f, &oj->job};
  pthread_cond_signal(&board.changed);
  pthread_mutex_unlock(&board.mutex);
}

static void *owner_thread(void *arg) {
  struct owner *o = arg;
  o->rng = thread_seed(o->index);
  /* ends once every job has completed */
  int rc = run_ticking_loop(&o->tick, o, owner_tick, 1);
  if (rc)
    FAIL("owner %d: sa_loop_close: %s", o->index, sa_strerror(rc));
  pthread_mutex_lock(&board.mutex);
  board.owners_left--;
  pthread_cond_broadcast(&board.changed);
  pthread_mutex_unlock(&board.mutex);
  return NULL;
}

/* After every thread has joined: each job completed exactly once. */
static void owner_check(struct owner *o) {
  while (o->jobs) {
    struct owned_job *oj = o->jobs;
    o->jobs = oj->next;
    if (atomic_load(&oj->job.completions) != 1)
      FAIL("tag %ld completed %d times", oj->job.tag, atomic_load(&oj->job.completions));
    if (atomic_load(&oj->deliveries) > 1)
      FAIL("tag %ld delivered %d times", oj->job.tag, atomic_load(&oj->deliveries));
    free(oj);
  }
}

static void *taker_thread(void *arg) {
  unsigned rng = thread_seed((int)(intptr_t)arg);
  for (;;) {
    pthread_mutex_lock(&board.mutex);
    while (board.count == 0 && board.owners_left > 0)
      pthread_cond_wait(&board.changed, &board.mutex);
    if (board.count == 0) {
      pthread_mutex_unlock(&board.mutex);
      return NULL;
    }
    struct posted p = board.slots[--board.count];
    pthread_mutex_unlock(&board.mutex);
    void *value = NULL;
    int rc;
    switch (next_rand(&rng) % 4) {
    case 0: /* wait from another thread while the owner completes it */
      rc = sa_future_wait(p.future, &value);
      check_result(p.job, rc, value, "cross-thread wait");
      break;
    case 3: /* a wait that gives up and times the call out, or not */
      rc = sa_future_wait_until(p.future, sa_deadline_in(1), &value);
      if (rc != SA_ETIMEDOUT)
        check_result(p.job, rc, value, "cross-thread wait_until");
      break;
    case 1: /* poll, then release whatever the state */
      rc = sa_future_status(p.future, &value);
      if (rc != SA_PENDING)
        check_result(p.job, rc, value, "cross-thread status");
      break;
    default: /* release at once: races with the delivery */
      break;
    }
    if ((rc = sa_future_release(p.future)) != 0)
      FAIL("release from a taker: %s", sa_strerror(rc));
    atomic_fetch_add(&calls_ok, 1);
  }
}

/* The split of the futures, cancel and bursts scenarios: half the threads
 * (at least one) own loops, the others (at least one) act on what the
 * owners post. */
static int loop_owners(void) { return opt.threads / 2 > 0 ? opt.threads / 2 : 1; }

/* Run `owner` on each of the loop_owners() elements of `owners` (`size`
 * bytes each, whose first member, an int, is set to its index) and `other`
 * on each remaining thread (given its index); return once all have ended. */
static void run_owners_and_others(void *owners, size_t size, void *(*owner)(void *),
                                  void *(*other)(void *)) {
  int n = loop_owners();
  int others = opt.threads - n > 0 ? opt.threads - n : 1;
  pthread_t *t = calloc((size_t)(n + others), sizeof *t);
  for (int i = 0; i < n; i++) {
    int *index = (int *)((char *)owners + (size_t)i * size);
    *index = i;
    pthread_create(&t[i], NULL, owner, index);
  }
  for (int i = 0; i < others; i++)
    pthread_create(&t[n + i], NULL, other, (void *)(intptr_t)(n + i));
  for (int i = 0; i < n + others; i++)
    pthread_join(t[i], NULL);
  free(t);
}

static void scenario_futures(void) {
  int owners = loop_owners();
  struct owner *o = calloc((size_t)owners, sizeof *o);
  board.owners_left = owners;
  run_owners_and_others(o, sizeof *o, owner_thread, taker_thread);
  for (int i = 0; i < owners; i++)
    owner_check(&o[i]);
  free(o);
}

/* ---- scenario: cancel --------------------------------------------------- */

/* Owners run loops and start calls, some with deadlines of 0-2 ms that race
 * their completion; cancellers on other threads read and cancel those
 * futures by handle (often stale by then) while they complete. Every call
 * must end exactly once: one completion, one delivery. */
#define RING 256

static struct {
  pthread_mutex_t mutex;
  sa_future_t handles[RING];
  unsigned next;
  atomic_int owners_left;
} ring = {PTHREAD_MUTEX_INITIALIZER, {{0}}, 0, 0};

struct raced_job {
  struct job job;
  atomic_int deliveries;
  struct raced_job *next;
};

struct racer {
  int index;
  unsigned rng;
  long tag;
  uv_timer_t tick;
  struct raced_job *jobs;
};

static void raced_delivered(sa_future_t f, int status, void *value, void *data) {
  struct raced_job *rj = data;
  check_result(&rj->job, status, value, "raced delivery");
  if (atomic_fetch_add(&rj->deliveries, 1) != 0)
    FAIL("tag %ld delivered twice", rj->job.tag);
  if (atomic_load(&rj->job.completions) != 1)
    FAIL("tag %ld delivered before its op let go of it", rj->job.tag);
  atomic_fetch_add(&calls_ok, 1);
  sa_future_release(f);
}

static void racer_tick(uv_timer_t *timer) {
  struct racer *o = timer->data;
  if (!time_left()) {
    uv_close((uv_handle_t *)timer, NULL);
    return;
  }
  for (int i = 0; i < 8; i++) {
    struct raced_job *rj = calloc(1, sizeof *rj);
    sa_future_t f;
    job_init(&rj->job, &o->rng, o->index * 100000000L + o->tag++);
    rj->next = o->jobs;
    o->jobs = rj;
    atomic_fetch_add(&calls_started, 1);
    unsigned choice = next_rand(&o->rng) % 4;
    int rc = choice == 0 ? sa_dispatch_until(&job_op, &rj->job, SA_MODE_AUTO,
                                             sa_deadline_in(next_rand(&o->rng) % 3), NULL, &f)
                         : sa_dispatch(&job_op, &rj->job, SA_MODE_AUTO, NULL, &f);
    if (rc != SA_PENDING || sa_future_then(f, raced_delivered, rj) != 0) {
      FAIL("racer: async call failed: %d", rc);
      continue;
    }
    if (choice == 1)
      sa_future_cancel(f); /* on the loop's own thread */
    pthread_mutex_lock(&ring.mutex);
    ring.handles[ring.next++ % RING] = f;
    pthread_mutex_unlock(&ring.mutex);
  }
}

static void *racer_thread(void *arg) {
  struct racer *o = arg;
  o->rng = thread_seed(o->index);
  int rc = run_ticking_loop(&o->tick, o, racer_tick, 1);
  if (rc)
    FAIL("racer %d: sa_loop_close: %s", o->index, sa_strerror(rc));
  atomic_fetch_sub(&ring.owners_left, 1);
  while (o->jobs) {
    struct raced_job *rj = o->jobs;
    o->jobs = rj->next;
    if (atomic_load(&rj->job.completions) != 1 || atomic_load(&rj->deliveries) != 1)
      FAIL("tag %ld: %d completions, %d deliveries", rj->job.tag,
           atomic_load(&rj->job.completions), atomic_load(&rj->deliveries));
    free(rj);
  }
  return NULL;
}

static void *canceller_thread(void *arg) {
  unsigned rng = thread_seed((int)(intptr_t)arg);
  while (atomic_load(&ring.owners_left) > 0) {
    pthread_mutex_lock(&ring.mutex);
    sa_future_t f = ring.handles[next_rand(&rng) % RING];
    pthread_mutex_unlock(&ring.mutex);
    if (f.id == 0)
      continue;
    /* The handle may be stale, its record reused by its owner meanwhile: a
     * result read through it is one call's, status and value alike. Such a
     * read races the reuse by design (a seqlock: read, then check the
     * generation). TSan, seeing atomics, tells that from a bug; helgrind
     * and DRD cannot, and are not given it. */
    int rc;
    if (!RUNNING_ON_VALGRIND) {
      void *value = NULL;
      rc = sa_future_status(f, &value);
      if (rc != SA_PENDING && rc != SA_ESTALE &&
          !((rc == SA_ECANCELED || rc == SA_ETIMEDOUT) && value == NULL) &&
          rc != job_status((long)(intptr_t)value))
        FAIL("foreign status: %d with value %p, another call's", rc, value);
    }
    rc = sa_future_cancel(f);
    if (rc != 0 && rc != SA_ESTALE)
      FAIL("foreign cancel: %s", sa_strerror(rc));
  }
  return NULL;
}

static void scenario_cancel(void) {
  struct racer *o = calloc((size_t)loop_owners(), sizeof *o);
  atomic_store(&ring.owners_left, loop_owners());
  run_owners_and_others(o, sizeof *o, racer_thread, canceller_thread);
  free(o);
}

/* ---- scenario: home ----------------------------------------------------- */

/* One home shared by every thread: sync calls, waited futures and cancelled
 * futures, while thread 0 stops the home and starts a new one every 20 ms.
 * Every call ends once, with its result or SA_ECANCELED, and each result
 * comes from an op that ran on the home thread. */
static struct {
  pthread_rwlock_t lock; /* readers call, the restarter swaps */
  sa_home_t *home;
  long restarts;
} home_state = {PTHREAD_RWLOCK_INITIALIZER, NULL, 0};

static void check_home_call(const struct job *job, int rc, void *value) {
  if (rc == SA_ECANCELED && atomic_load(&job->completions) <= 1)
    return; /* stopped with it, or cancelled */
  if (rc != job_status(job->tag) || value != (void *)(intptr_t)job->tag ||
      atomic_load(&job->completions) != 1)
    FAIL("home call: tag %ld got %d %p, %d completions", job->tag, rc, value,
         atomic_load(&job->completions));
}

static void *home_caller(void *arg) {
  int index = (int)(intptr_t)arg;
  unsigned rng = thread_seed(index);
  long tag = index * 100000000L;
  while (time_left()) {
    struct job job;
    void *value = NULL;
    sa_future_t f;
    job_init(&job, &rng, tag++);
    atomic_fetch_add(&calls_started, 1);
    unsigned how = next_rand(&rng) % 3;
    pthread_rwlock_rdlock(&home_state.lock);
    int rc = sa_home_call(home_state.home, &job_op, &job, how == 0 ? SA_MODE_AUTO : SA_MODE_ASYNC,
                          &value, &f);
    pthread_rwlock_unlock(&home_state.lock); /* a sync call (how 0) is answered by now */
    if (how != 0) {
      if (rc != SA_PENDING) {
        FAIL("forced async home call returned %d", rc);
        continue;
      }
      if (how == 2)
        sa_future_cancel(f); /* races with the op on the home thread */
      rc = sa_future_wait(f, &value);
      sa_future_release(f);
    }
    check_home_call(&job, rc, value);
    atomic_fetch_add(&calls_ok, 1);
  }
  sa_thread_cleanup();
  return NULL;
}

static void *home_restarter(void *arg) {
  (void)arg;
  while (time_left()) {
    struct timespec pause = {0, 20 * 1000 * 1000};
    nanosleep(&pause, NULL);
    pthread_rwlock_wrlock(&home_state.lock);
    int rc = sa_home_stop(home_state.home);
    if (rc == 0)
      rc = sa_home_start(&home_state.home);
    if (rc)
      FAIL("home restart: %s", sa_strerror(rc));
    home_state.restarts++;
    pthread_rwlock_unlock(&home_state.lock);
  }
  return NULL;
}

static void scenario_home(void) {
  if (sa_home_start(&home_state.home) != 0) {
    FAIL("sa_home_start failed");
    return;
  }
  pthread_t *t = calloc((size_t)opt.threads + 1, sizeof *t);
  for (int i = 0; i < opt.threads; i++)
    pthread_create(&t[i], NULL, home_caller, (void *)(intptr_t)i);
  pthread_create(&t[opt.threads], NULL, home_restarter, NULL);
  for (int i = 0; i <= opt.threads; i++)
    pthread_join(t[i], NULL);
  if (sa_home_stop(home_state.home) != 0)
    FAIL("final sa_home_stop failed");
  free(t);
  printf("home: %ld restarts\n", home_state.restarts);
}

/* ---- scenario: fork ----------------------------------------------------- */

static void *busy_sync_thread(void *arg) {
  int index = (int)(intptr_t)arg;
  unsigned rng = thread_seed(index);
  long tag = index * 100000000L;
  while (time_left())
    sync_job(&rng, tag++, SA_MODE_AUTO);
  return NULL;
}

/* In the child: fresh private loops must work, in every way. */
static int child_main(unsigned seed) {
  unsigned rng = seed;
  struct job jobs[4];
  sa_future_t f[4];
  for (int i = 0; i < 6; i++)
    sync_job(&rng, 1000 + i, SA_MODE_AUTO);
  for (int i = 0; i < 4; i++) {
    job_init(&jobs[i], &rng, 2000 + i);
    if (sa_dispatch(&job_op, &jobs[i], SA_MODE_ASYNC, NULL, &f[i]) != SA_PENDING)
      FAIL("child: forced async did not return a future");
  }
  for (int i = 0; i < 4; i++) {
    void *value = NULL;
    int rc = sa_future_wait(f[i], &value);
    check_result(&jobs[i], rc, value, "child batch");
    sa_future_release(f[i]);
  }
  return atomic_load(&calls_failed) ? 1 : 0;
}

static void scenario_fork(void) {
  int busy = opt.threads > 1 ? opt.threads - 1 : 1;
  pthread_t *t = calloc((size_t)busy, sizeof *t);
  unsigned rng = thread_seed(-1);
  long forks = 0;
  for (int i = 0; i < busy; i++)
    pthread_create(&t[i], NULL, busy_sync_thread, (void *)(intptr_t)i);
  while (time_left()) {
    usleep(10000 + next_rand(&rng) % 20000);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0)
      _exit(child_main(next_rand(&rng))); /* _exit: libuv issue 4443 */
    int status;
    if (pid < 0 || waitpid(pid, &status, 0) != pid)
      FAIL("fork failed");
    else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
      FAIL("child %ld ended with status %#x", forks, status);
    forks++;
  }
  for (int i = 0; i < busy; i++)
    pthread_join(t[i], NULL);
  free(t);
  printf("fork: %ld children\n", forks);
}

/* ---- scenario: bursts --------------------------------------------------- */

/* Bursters run loops that start, tick after tick, a burst of calls (a future
 * each, released by its continuation) of a size that repeats the last, is
 * within a thread's cache, or is anything up to BURST_MAX: a dispatcher that
 * keeps memory for bursts that repeat and gives back what bigger ones took
 * does both, on several threads at once. A sample of the released handles
 * goes to a ring, where readers on other threads check that each stays
 * stale [SA-ENTRY-5]: never answers as the new call of its slot. */
#define BURST_MAX 6000
#define BURST_REPEAT 1500
#define STALE_RING 512

static struct {
  pthread_mutex_t mutex;
  sa_future_t released[STALE_RING];
  unsigned next;
  atomic_int bursters_left;
  atomic_long checks;
} stale = {PTHREAD_MUTEX_INITIALIZER, {{0}}, 0, 0, 0};

struct burster;

struct burst_job {
  struct job job;
  struct burster *b;
};

struct burster {
  int index;
  unsigned rng;
  long tag;
  uv_timer_t tick;
  struct burst_job *jobs; /* BURST_MAX */
  int outstanding;
};

static void burst_tick(uv_timer_t *timer);

static void stale_post(sa_future_t f) {
  pthread_mutex_lock(&stale.mutex);
  stale.released[stale.next++ % STALE_RING] = f;
  pthread_mutex_unlock(&stale.mutex);
}

static void burst_delivered(sa_future_t f, int status, void *value, void *data) {
  struct burst_job *bj = data;
  struct burster *b = bj->b;
  check_result(&bj->job, status, value, "burst delivery");
  if (atomic_load(&bj->job.completions) != 1)
    FAIL("burst tag %ld completed %d times", bj->job.tag, atomic_load(&bj->job.completions));
  atomic_fetch_add(&calls_ok, 1);
  int rc = sa_future_release(f);
  if (rc)
    FAIL("burst: release in the continuation: %s", sa_strerror(rc));
  else if (next_rand(&b->rng) % 8 == 0)
    stale_post(f);
  if (--b->outstanding == 0)
    uv_timer_start(&b->tick, burst_tick, 0, 0);
}

static int burst_size(unsigned *rng) {
  switch (next_rand(rng) % 4) {
  case 0: return BURST_REPEAT;
  case 1: return 1 + (int)(next_rand(rng) % 500);
  default: return 1 + (int)(next_rand(rng) % BURST_MAX);
  }
}

static void burst_tick(uv_timer_t *timer) {
  struct burster *b = timer->data;
  if (!time_left()) {
    uv_close((uv_handle_t *)timer, NULL);
    return;
  }
  int n = burst_size(&b->rng);
  b->outstanding = n;
  for (int i = 0; i < n; i++) {
    struct burst_job *bj = &b->jobs[i];
    sa_future_t f;
    job_init(&bj->job, &b->rng, b->index * 100000000L + b->tag++);
    bj->b = b;
    atomic_fetch_add(&calls_started, 1);
    if (sa_dispatch(&job_op, &bj->job, SA_MODE_AUTO, NULL, &f) != SA_PENDING ||
        sa_future_then(f, burst_delivered, bj) != 0) {
      FAIL("burst: an auto call in a loop did not return a future that takes a continuation");
      b->outstanding--;
    }
  }
  if (b->outstanding == 0)
    uv_timer_start(timer, burst_tick, 0, 0);
}

static void *burster_thread(void *arg) {
  struct burster *b = arg;
  b->rng = thread_seed(b->index);
  b->jobs = calloc(BURST_MAX, sizeof *b->jobs);
  int rc = run_ticking_loop(&b->tick, b, burst_tick, 0);
  if (rc)
    FAIL("burster %d: sa_loop_close: %s", b->index, sa_strerror(rc));
  free(b->jobs);
  atomic_fetch_sub(&stale.bursters_left, 1);
  return NULL; /* the thread's exit gives its records back meanwhile */
}

/* A released handle: every function that reads or acts on it answers
 * SA_ESTALE. (Not sa_future_release: on a dispatcher where the handle
 * named a new call, that call would be lost and its burst never end.) */
static void *stale_reader(void *arg) {
  unsigned rng = thread_seed((int)(intptr_t)arg);
  while (atomic_load(&stale.bursters_left) > 0) {
    pthread_mutex_lock(&stale.mutex);
    sa_future_t f = stale.released[next_rand(&rng) % STALE_RING];
    pthread_mutex_unlock(&stale.mutex);
    if (f.id == 0) {
      sched_yield();
      continue;
    }
    void *value = NULL;
    int status = sa_future_status(f, &value), cancel = sa_future_cancel(f);
    if (status != SA_ESTALE || cancel != SA_ESTALE)
      FAIL("a released future answered status %s, cancel %s: as a new call of its slot",
           sa_strerror(status), sa_strerror(cancel));
    atomic_fetch_add(&stale.checks, 1);
  }
  return NULL;
}

static void scenario_bursts(void) {
  struct burster *b = calloc((size_t)loop_owners(), sizeof *b);
  atomic_store(&stale.bursters_left, loop_owners());
  run_owners_and_others(b, sizeof *b, burster_thread, stale_reader);
  printf("bursts: %ld checks of released futures\n", atomic_load(&stale.checks));
  free(b);
}

/* ---- main --------------------------------------------------------------- */

static const struct {
  const char *name;
  void (*run)(void);
} scenarios[] = {{"shared", scenario_shared},
                 {"mixed", scenario_mixed},
                 {"churn", scenario_churn},
                 {"futures", scenario_futures},
                 {"cancel", scenario_cancel},
                 {"home", scenario_home},
                 {"fork", scenario_fork},
                 {"bursts", scenario_bursts}};

static int usage(void) {
  fprintf(stderr, "usage: sa_stress shared|mixed|churn|futures|cancel|home|fork|bursts "
                  "[-t THREADS] [-d MILLISECONDS] [-s SEED]\n");
  return 2;
}

int main(int argc, char **argv) {
  if (argc < 2)
    return usage();
  const char *name = argv[1];
  int c;
  optind = 2;
  while ((c = getopt(argc, argv, "t:d:s:")) != -1) {
    switch (c) {
    case 't': opt.threads = atoi(optarg); break;
    case 'd': opt.duration_ms = atoi(optarg); break;
    case 's': opt.seed = (unsigned)strtoul(optarg, NULL, 10); break;
    default: return usage();
    }
  }
  if (opt.threads < 1 || opt.duration_ms < 0)
    return usage();
  for (size_t i = 0; i < sizeof scenarios / sizeof *scenarios; i++) {
    if (strcmp(name, scenarios[i].name) != 0)
      continue;
    printf("stress %s: %d threads, %d ms, seed %u\n", name, opt.threads, opt.duration_ms,
           opt.seed);
    deadline = now_ms() + opt.duration_ms;
    scenarios[i].run();
    sa_thread_cleanup();
    long started = atomic_load(&calls_started), ok = atomic_load(&calls_ok);
    long failed = atomic_load(&calls_failed);
    if (ok != started && failed == 0) {
      fprintf(stderr, "stress: FAILED: %ld calls started, %ld accounted for\n", started, ok);
      failed = started - ok;
    }
    printf("stress %s: %ld calls, %ld passed, %ld failed\n", name, started, ok, failed);
    return failed ? 1 : 0;
  }
  return usage();
}
