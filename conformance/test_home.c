/* SA-HOME-*: objects bound to a home loop on its own thread. */
#include "sa_test.h"

#include <criterion/criterion.h>
#include <malloc.h>
#include <sched.h>
#include <semaphore.h>
#include <stdlib.h>
#include <time.h>

static int marker;

static sa_home_t *start_home(void) {
  sa_home_t *home = NULL;
  int rc = sa_home_start(&home);
  cr_assert_eq(rc, 0, "sa_home_start: %s", sa_strerror(rc));
  cr_assert_not_null(home);
  return home;
}

/* SA-HOME-1: the op runs on the home thread, whoever calls. */
Test(SA_HOME_1, sync_call_runs_on_the_home_thread) {
  sa_home_t *home = start_home();
  for (int i = 0; i < 3; i++) {
    struct value_req req = {.when = sa_test_whens[i], .status = -8, .value = &marker};
    void *value = NULL;
    sa_future_t f = {42};
    int rc = sa_home_call(home, &value_op, &req, SA_MODE_AUTO, &value, &f);
    const char *w = sa_test_when_name(sa_test_whens[i]);
    cr_assert_eq(rc, -8, "SA-HOME-1 (%s): status %d", w, rc);
    cr_assert_eq(value, &marker, "SA-HOME-1 (%s): value lost", w);
    cr_assert_eq(f.id, 0, "SA-HOME-1: a sync call must set the future to null");
    cr_assert_eq(req.starts, 1, "SA-HOME-1 (%s): started %d times", w, req.starts);
    cr_assert(!pthread_equal(req.start_thread, pthread_self()),
              "SA-HOME-1 (%s): the op ran on the caller's thread", w);
    cr_assert(pthread_equal(req.complete_thread, req.start_thread),
              "SA-HOME-1 (%s): the op completed off its home thread", w);
    cr_assert_not_null(req.loop_at_start, "SA-HOME-1: the op is not in async context at home");
  }
  cr_assert_eq(sa_home_stop(home), 0);
}

struct async_home {
  sa_home_t *home;
  struct value_req req;
  sa_mode_t mode;
  int rc;
  int delivered_before_return;
  struct cont_rec cont;
  uv_loop_t *loop;
  pthread_t loop_thread;
};

static void home_call_in_loop(uv_loop_t *loop, void *data) {
  struct async_home *a = data;
  sa_future_t f;
  a->loop = loop;
  a->loop_thread = pthread_self();
  a->rc = sa_home_call(a->home, &value_op, &a->req, a->mode, NULL, &f);
  a->delivered_before_return = a->cont.calls;
  if (a->rc == SA_PENDING) {
    a->cont.release = true;
    cr_assert_eq(sa_future_then(f, record_cont, &a->cont), 0);
  }
}

Test(SA_HOME_1, async_call_is_delivered_on_the_callers_loop) {
  sa_home_t *home = start_home();
  for (int i = 0; i < 3; i++) {
    struct async_home a = {.home = home, .mode = SA_MODE_AUTO,
                           .req = {.when = sa_test_whens[i], .status = -2, .value = &marker}};
    sa_test_in_loop(home_call_in_loop, &a);
    const char *w = sa_test_when_name(sa_test_whens[i]);
    cr_assert_eq(a.rc, SA_PENDING, "SA-HOME-1 (%s): async call returned %d", w, a.rc);
    cr_assert_eq(a.delivered_before_return, 0, "SA-HOME-1: delivered inside the call");
    cr_assert(!pthread_equal(a.req.start_thread, a.loop_thread),
              "SA-HOME-1 (%s): the op ran on the caller's loop thread", w);
    cr_assert_eq(a.cont.calls, 1, "SA-HOME-1 (%s): %d deliveries", w, a.cont.calls);
    cr_assert_eq(a.cont.status, -2, "SA-HOME-1 (%s): delivered %d", w, a.cont.status);
    cr_assert_eq(a.cont.value, &marker, "SA-HOME-1: value lost");
    cr_assert(pthread_equal(a.cont.thread, a.loop_thread),
              "SA-HOME-1 (%s): delivered off the caller's loop thread", w);
    cr_assert_eq(a.cont.loop, a.loop, "SA-HOME-1: delivered outside async context");
  }
  cr_assert_eq(sa_home_stop(home), 0);
}

/* SA-HOME-2: modes are honoured; the home thread cannot block on itself. */
Test(SA_HOME_2, forced_modes_are_honoured) {
  sa_home_t *home = start_home();
  struct value_req req = {.when = SA_TEST_LATER, .status = -4};
  sa_future_t f;
  cr_assert_eq(sa_home_call(home, &value_op, &req, SA_MODE_ASYNC, NULL, &f), SA_PENDING,
               "SA-HOME-2: SA_MODE_ASYNC from sync context must give a future");
  cr_assert_eq(sa_future_wait(f, NULL), -4, "SA-HOME-2: waited result wrong");
  cr_assert_eq(sa_future_release(f), 0);

  struct async_home a = {.home = home, .mode = SA_MODE_SYNC,
                         .req = {.when = SA_TEST_LATER, .status = -6}};
  sa_test_in_loop(home_call_in_loop, &a);
  cr_assert_eq(a.rc, -6, "SA-HOME-2: SA_MODE_SYNC in async context returned %d", a.rc);
  cr_assert_eq(a.cont.calls, 0);
  cr_assert_eq(sa_home_stop(home), 0);
}

struct self_call {
  sa_home_t *home;
  int sync_rc, stop_rc;
};

static void self_call_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  struct self_call *s = arg;
  struct value_req req = {.when = SA_TEST_INLINE};
  (void)loop;
  s->sync_rc = sa_home_call(s->home, &value_op, &req, SA_MODE_SYNC, NULL, NULL);
  s->stop_rc = sa_home_stop(s->home);
  sa_complete(call, 0, NULL);
}

static const sa_op_t self_call_op = {self_call_start, NULL};

Test(SA_HOME_2, home_thread_cannot_block_on_itself) {
  sa_home_t *home = start_home();
  struct self_call s = {.home = home};
  cr_assert_eq(sa_home_call(home, &self_call_op, &s, SA_MODE_SYNC, NULL, NULL), 0);
  cr_assert_eq(s.sync_rc, SA_EDEADLK, "SA-HOME-2: a sync call from the home thread to itself "
                                      "returned %d, not SA_EDEADLK", s.sync_rc);
  cr_assert_eq(s.stop_rc, SA_EDEADLK, "SA-HOME-2: stop from the home thread returned %d",
               s.stop_rc);
  struct value_req req = {.when = SA_TEST_INLINE};
  sa_future_t f;
  cr_assert_eq(sa_home_call(NULL, &value_op, &req, SA_MODE_SYNC, NULL, NULL), SA_EINVAL);
  cr_assert_eq(sa_home_call(home, NULL, &req, SA_MODE_SYNC, NULL, NULL), SA_EINVAL);
  cr_assert_eq(sa_home_call(home, &value_op, &req, (sa_mode_t)5, NULL, &f), SA_EINVAL);
  cr_assert_eq(sa_home_call(home, &value_op, &req, SA_MODE_ASYNC, NULL, NULL), SA_EINVAL);
  cr_assert_eq(req.starts, 0, "SA-HOME-2: the op started despite bad arguments");
  cr_assert_eq(sa_home_start(NULL), SA_EINVAL);
  cr_assert_eq(sa_home_stop(NULL), SA_EINVAL);
  cr_assert_eq(sa_home_stop(home), 0);
}

/* SA-HOME-3: calls from many threads are serialised on the home thread, so
 * state only the home's ops touch needs no lock. */
struct counter {
  long value; /* no lock: only the home thread touches it */
  pthread_t home_thread;
  bool off_home; /* an op ran off the home thread */
};

static void count_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  struct counter *c = arg;
  (void)loop;
  if (!pthread_equal(pthread_self(), c->home_thread))
    c->off_home = true;
  long v = c->value;
  c->value = v + 1;
  sa_complete(call, 0, (void *)(intptr_t)(v + 1));
}

static const sa_op_t count_op = {count_start, NULL};

#define CALLERS 4
#define CALLS 200

struct caller {
  sa_home_t *home;
  struct counter *counter;
  int bad;
  bool async; /* from a loop, as futures */
  int delivered;
};

static void counted(sa_future_t f, int status, void *value, void *data) {
  struct caller *c = data;
  if (status != 0 || !value)
    c->bad++;
  c->delivered++;
  sa_future_release(f);
}

static void async_calls_in_loop(uv_loop_t *loop, void *data) {
  struct caller *c = data;
  (void)loop;
  for (int i = 0; i < CALLS; i++) {
    sa_future_t f;
    if (sa_home_call(c->home, &count_op, c->counter, SA_MODE_AUTO, NULL, &f) != SA_PENDING ||
        sa_future_then(f, counted, c) != 0)
      c->bad++;
  }
}

static void *caller_main(void *arg) {
  struct caller *c = arg;
  if (c->async) {
    sa_test_in_loop(async_calls_in_loop, c);
  } else {
    for (int i = 0; i < CALLS; i++) {
      void *value = NULL;
      sa_future_t f;
      if (sa_home_call(c->home, &count_op, c->counter, SA_MODE_AUTO, &value, &f) != 0 ||
          !value)
        c->bad++;
      c->delivered++;
    }
  }
  sa_thread_cleanup();
  return NULL;
}

static void *record_thread(void *arg) {
  *(pthread_t *)arg = pthread_self();
  return NULL;
}

static void home_thread_of(sa_home_t *home, pthread_t *out);

Test(SA_HOME_3, calls_from_many_threads_are_serialised_on_the_home) {
  sa_home_t *home = start_home();
  struct counter counter = {0};
  home_thread_of(home, &counter.home_thread);
  struct caller callers[CALLERS];
  pthread_t threads[CALLERS];
  for (int i = 0; i < CALLERS; i++) {
    callers[i] = (struct caller){.home = home, .counter = &counter, .async = i % 2 == 1};
    cr_assert_eq(pthread_create(&threads[i], NULL, caller_main, &callers[i]), 0);
  }
  for (int i = 0; i < CALLERS; i++) {
    pthread_join(threads[i], NULL);
    cr_assert_eq(callers[i].bad, 0, "SA-HOME-3: caller %d got %d wrong results", i,
                 callers[i].bad);
    cr_assert_eq(callers[i].delivered, CALLS, "SA-HOME-3: caller %d got %d of %d results", i,
                 callers[i].delivered, CALLS);
  }
  cr_assert_eq(sa_home_stop(home), 0);
  cr_assert(!counter.off_home, "SA-HOME-3: an op ran off the home thread");
  cr_assert_eq(counter.value, CALLERS * CALLS, "SA-HOME-3: %ld increments of %d survived",
               counter.value, CALLERS * CALLS);
}

/* The home thread's id, found by running an op there. */
struct thread_probe {
  pthread_t thread;
};

static void thread_probe_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  (void)loop;
  record_thread(&((struct thread_probe *)arg)->thread);
  sa_complete(call, 0, NULL);
}

static const sa_op_t thread_probe_op = {thread_probe_start, NULL};

static void home_thread_of(sa_home_t *home, pthread_t *out) {
  struct thread_probe p;
  cr_assert_eq(sa_home_call(home, &thread_probe_op, &p, SA_MODE_SYNC, NULL, NULL), 0);
  *out = p.thread;
}

/* SA-HOME-3: calls may be in flight on the home together, interleaved (one
 * at a time is not demanded), but no two callbacks of its ops ever run at
 * once. Each op runs from its start to its timer's close callback, 1 ms
 * later; each callback notes whether it ran alone on the home thread. */
#define LONE_CALLERS 4
#define LONE_CALLS 25

struct lone_home {
  sa_home_t *home;
  pthread_t thread;
  atomic_int inside;  /* callbacks of the home's ops running now */
  atomic_int crowded; /* callbacks that found another one running */
  atomic_int astray;  /* callbacks off the home thread */
};

struct lone_call {
  struct lone_home *home;
  uv_timer_t timer;
  sa_call_t *call;
  int answers;
  bool wrong; /* answered with another status or value */
};

static void enter_callback(struct lone_home *h) {
  if (atomic_fetch_add(&h->inside, 1) != 0)
    atomic_fetch_add(&h->crowded, 1);
  if (!pthread_equal(pthread_self(), h->thread))
    atomic_fetch_add(&h->astray, 1);
  sched_yield(); /* a wider window for another thread's callback */
}

static void leave_callback(struct lone_home *h) { atomic_fetch_sub(&h->inside, 1); }

static void lone_closed(uv_handle_t *handle) {
  struct lone_call *c = handle->data;
  enter_callback(c->home);
  leave_callback(c->home);
  sa_complete(c->call, 0, c);
}

static void lone_fire(uv_timer_t *timer) {
  struct lone_call *c = timer->data;
  enter_callback(c->home);
  uv_close((uv_handle_t *)timer, lone_closed);
  leave_callback(c->home);
}

static void lone_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  struct lone_call *c = arg;
  enter_callback(c->home);
  c->call = call;
  cr_assert_eq(uv_timer_init(loop, &c->timer), 0);
  c->timer.data = c;
  cr_assert_eq(uv_timer_start(&c->timer, lone_fire, 1, 0), 0);
  leave_callback(c->home);
}

static const sa_op_t lone_op = {lone_start, NULL};

struct lone_caller {
  struct lone_call calls[LONE_CALLS];
  bool async; /* from a loop, all in flight at once; else one sync call after another */
  int refused;
};

static void lone_answer(struct lone_call *c, int status, void *value) {
  c->answers++;
  c->wrong |= status != 0 || value != c;
}

static void lone_answered(sa_future_t f, int status, void *value, void *data) {
  lone_answer(data, status, value);
  sa_future_release(f);
}

static void lone_calls_in_loop(uv_loop_t *loop, void *data) {
  struct lone_caller *c = data;
  (void)loop;
  for (int i = 0; i < LONE_CALLS; i++) {
    sa_future_t f;
    if (sa_home_call(c->calls[i].home->home, &lone_op, &c->calls[i], SA_MODE_AUTO, NULL, &f) !=
            SA_PENDING ||
        sa_future_then(f, lone_answered, &c->calls[i]) != 0)
      c->refused++;
  }
}

static void *lone_caller_main(void *arg) {
  struct lone_caller *c = arg;
  if (c->async) {
    sa_test_in_loop(lone_calls_in_loop, c);
  } else {
    for (int i = 0; i < LONE_CALLS; i++) {
      void *value = NULL;
      int rc = sa_home_call(c->calls[i].home->home, &lone_op, &c->calls[i], SA_MODE_SYNC, &value,
                            NULL);
      lone_answer(&c->calls[i], rc, value);
    }
  }
  sa_thread_cleanup();
  return NULL;
}

Test(SA_HOME_3, calls_may_interleave_but_callbacks_never_overlap, .timeout = 20) {
  static struct lone_caller callers[LONE_CALLERS];
  struct lone_home home = {.home = start_home()};
  pthread_t threads[LONE_CALLERS];
  home_thread_of(home.home, &home.thread);
  for (int i = 0; i < LONE_CALLERS; i++) {
    callers[i].async = i % 2 == 1;
    for (int k = 0; k < LONE_CALLS; k++)
      callers[i].calls[k].home = &home;
    cr_assert_eq(pthread_create(&threads[i], NULL, lone_caller_main, &callers[i]), 0);
  }
  for (int i = 0; i < LONE_CALLERS; i++)
    pthread_join(threads[i], NULL);
  cr_assert_eq(sa_home_stop(home.home), 0);
  for (int i = 0; i < LONE_CALLERS; i++) {
    cr_assert_eq(callers[i].refused, 0, "SA-HOME-3: caller %d: %d calls refused", i,
                 callers[i].refused);
    for (int k = 0; k < LONE_CALLS; k++) {
      const struct lone_call *c = &callers[i].calls[k];
      cr_assert_eq(c->answers, 1, "SA-HOME-3: caller %d, call %d: answered %d times", i, k,
                   c->answers);
      cr_assert(!c->wrong, "SA-HOME-3: caller %d, call %d: another call's answer", i, k);
    }
  }
  cr_assert_eq(atomic_load(&home.astray), 0, "SA-HOME-3: %d callbacks ran off the home thread",
               atomic_load(&home.astray));
  cr_assert_eq(atomic_load(&home.crowded), 0,
               "SA-HOME-3: %d callbacks of the home's ops ran while another one was running",
               atomic_load(&home.crowded));
}

/* SA-HOME-4: stop answers every call, queued or in flight, exactly once;
 * it waits for the calls in flight whose op has a cancel hook, and for no
 * other. */

/* A call without a cancel hook that completes when its timer fires, after
 * a minute unless told otherwise: stopping the home does not wait for it.
 * Its timer lives in the test's memory, which the loop's teardown may close
 * without calling back. */
struct parked {
  unsigned ms;
  uv_timer_t timer;
  sa_call_t *call;
  sem_t *started; /* posted once it runs, if set */
  int completions;
};

static void parked_fire(uv_timer_t *timer) {
  struct parked *p = timer->data;
  p->completions++;
  sa_complete(p->call, 0, p);
}

static void parked_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  struct parked *p = arg;
  p->call = call;
  cr_assert_eq(uv_timer_init(loop, &p->timer), 0);
  p->timer.data = p;
  cr_assert_eq(uv_timer_start(&p->timer, parked_fire, p->ms ? p->ms : 60000, 0), 0);
  if (p->started)
    sem_post(p->started);
}

static const sa_op_t parked_op = {parked_start, NULL};

/* A call that would take a minute, with a cancel hook that stops it: at
 * once, completing it with SA_ECANCELED, or `stop_ms` after, completing it
 * with a result of its own, which then stands (SA-THR-2). */
#define WOUND_DOWN (-77)

struct stoppable {
  unsigned stop_ms;
  uv_timer_t timer;
  sa_call_t *call;
  sem_t started;
  int status; /* what it completes with */
  int hooks, completions;
};

static void stoppable_done(uv_timer_t *timer) {
  struct stoppable *s = timer->data;
  uv_close((uv_handle_t *)timer, NULL);
  s->completions++;
  sa_complete(s->call, s->status, s);
}

static void stoppable_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  struct stoppable *s = arg;
  s->call = call;
  cr_assert_eq(uv_timer_init(loop, &s->timer), 0);
  s->timer.data = s;
  cr_assert_eq(uv_timer_start(&s->timer, stoppable_done, 60000, 0), 0);
  sem_post(&s->started);
}

static void stoppable_cancel(sa_call_t *call, uv_loop_t *loop, void *arg) {
  struct stoppable *s = arg;
  (void)call;
  (void)loop;
  s->hooks++;
  if (!s->stop_ms) {
    s->status = SA_ECANCELED;
    stoppable_done(&s->timer);
    return;
  }
  s->status = WOUND_DOWN;
  cr_assert_eq(uv_timer_start(&s->timer, stoppable_done, s->stop_ms, 0), 0);
}

static const sa_op_t stoppable_op = {stoppable_start, stoppable_cancel};

struct busy {
  sem_t started;
};

/* Keeps the home thread busy for 50 ms, so that calls queue up behind it. */
static void busy_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  struct busy *b = arg;
  (void)loop;
  sem_post(&b->started);
  struct timespec pause = {0, 50 * 1000 * 1000};
  nanosleep(&pause, NULL);
  sa_complete(call, 0, b);
}

static const sa_op_t busy_op = {busy_start, NULL};

#define QUEUED 5

struct stop_case {
  sa_home_t *home;
  struct stoppable in_flight; /* its cancel hook completes it at once */
  struct parked parked;       /* has no hook */
  sem_t parked_started;
  struct busy busy;
  struct parked queued[QUEUED];
  struct cont_rec in_flight_cont, parked_cont, busy_cont, queued_cont[QUEUED];
  int stop_rc;
  int parked_completions; /* when stop returned */
};

static void call_home(sa_home_t *home, const sa_op_t *op, void *arg, struct cont_rec *cont) {
  sa_future_t f;
  cr_assert_eq(sa_home_call(home, op, arg, SA_MODE_AUTO, NULL, &f), SA_PENDING);
  cont->release = true;
  cr_assert_eq(sa_future_then(f, record_cont, cont), 0);
}

static void stop_in_loop(uv_loop_t *loop, void *data) {
  struct stop_case *s = data;
  (void)loop;
  call_home(s->home, &stoppable_op, &s->in_flight, &s->in_flight_cont);
  call_home(s->home, &parked_op, &s->parked, &s->parked_cont);
  sem_wait(&s->in_flight.started); /* both running, in whatever order the home took them */
  sem_wait(&s->parked_started);
  call_home(s->home, &busy_op, &s->busy, &s->busy_cont);
  sem_wait(&s->busy.started); /* the home thread is busy: what follows queues */
  for (int i = 0; i < QUEUED; i++)
    call_home(s->home, &parked_op, &s->queued[i], &s->queued_cont[i]);
  s->stop_rc = sa_home_stop(s->home);
  s->parked_completions = s->parked.completions; /* the home's thread is gone */
}

Test(SA_HOME_4, stop_answers_queued_and_running_calls_once, .timeout = 10) {
  int fds = sa_test_count_fds();
  struct stop_case s = {.home = start_home(), .parked = {.ms = 2000}};
  s.parked.started = &s.parked_started;
  sem_init(&s.in_flight.started, 0, 0);
  sem_init(&s.parked_started, 0, 0);
  sem_init(&s.busy.started, 0, 0);
  sa_test_in_loop(stop_in_loop, &s);
  sem_destroy(&s.in_flight.started);
  sem_destroy(&s.parked_started);
  sem_destroy(&s.busy.started);
  cr_assert_eq(s.stop_rc, 0, "SA-HOME-4: stop returned %d", s.stop_rc);
  cr_assert_eq(s.in_flight_cont.calls, 1, "SA-HOME-4: running call answered %d times",
               s.in_flight_cont.calls);
  cr_assert_eq(s.in_flight_cont.status, SA_ECANCELED, "SA-HOME-4: running call got %d",
               s.in_flight_cont.status);
  cr_assert_eq(s.in_flight.hooks, 1, "SA-HOME-4: its cancel hook ran %d times",
               s.in_flight.hooks);
  cr_assert_eq(s.parked_completions, 0,
               "SA-HOME-4: stop waited for a running call whose op has no cancel hook");
  cr_assert_eq(s.parked_cont.calls, 1, "SA-HOME-4: hook-less call answered %d times",
               s.parked_cont.calls);
  cr_assert_eq(s.parked_cont.status, SA_ECANCELED, "SA-HOME-4: hook-less call got %d",
               s.parked_cont.status);
  cr_assert_eq(s.busy_cont.calls, 1, "SA-HOME-4: finished call answered %d times",
               s.busy_cont.calls);
  cr_assert_eq(s.busy_cont.status, 0, "SA-HOME-4: a call that finished got %d, not its result",
               s.busy_cont.status);
  for (int i = 0; i < QUEUED; i++) {
    cr_assert_eq(s.queued_cont[i].calls, 1, "SA-HOME-4: queued call %d answered %d times", i,
                 s.queued_cont[i].calls);
    cr_assert_eq(s.queued_cont[i].status, SA_ECANCELED, "SA-HOME-4: queued call %d got %d", i,
                 s.queued_cont[i].status);
  }
  cr_assert_eq(sa_test_count_fds(), fds, "SA-HOME-4: the home's loop was not freed");
}

/* A running call whose hook takes its time is waited for, and the result
 * its op completes with stands; a hook-less one beside it is not waited for. */
struct wind_case {
  sa_home_t *home;
  struct stoppable winding;
  struct parked parked;
  sem_t parked_started;
  struct cont_rec winding_cont, parked_cont;
  int stop_rc;
  int winding_completions, parked_completions; /* when stop returned */
};

static void wind_in_loop(uv_loop_t *loop, void *data) {
  struct wind_case *s = data;
  (void)loop;
  call_home(s->home, &stoppable_op, &s->winding, &s->winding_cont);
  call_home(s->home, &parked_op, &s->parked, &s->parked_cont);
  sem_wait(&s->winding.started); /* both running, none queued */
  sem_wait(&s->parked_started);
  s->stop_rc = sa_home_stop(s->home);
  /* The home's thread is gone: what its ops wrote is ours to read. */
  s->winding_completions = s->winding.completions;
  s->parked_completions = s->parked.completions;
}

Test(SA_HOME_4, stop_waits_for_running_calls_with_a_hook_only, .timeout = 10) {
  struct wind_case s = {.home = start_home(), .winding = {.stop_ms = 20},
                        .parked = {.ms = 2000}};
  s.parked.started = &s.parked_started;
  sem_init(&s.winding.started, 0, 0);
  sem_init(&s.parked_started, 0, 0);
  sa_test_in_loop(wind_in_loop, &s);
  sem_destroy(&s.winding.started);
  sem_destroy(&s.parked_started);
  cr_assert_eq(s.stop_rc, 0, "SA-HOME-4: stop returned %d", s.stop_rc);
  cr_assert_eq(s.winding.hooks, 1, "SA-HOME-4: the running call's cancel hook ran %d times",
               s.winding.hooks);
  cr_assert_eq(s.winding_completions, 1,
               "SA-HOME-4: stop returned before the running call with a cancel hook completed");
  cr_assert_eq(s.winding_cont.calls, 1, "SA-HOME-4: the running call was answered %d times",
               s.winding_cont.calls);
  cr_assert_eq(s.winding_cont.status, WOUND_DOWN,
               "SA-HOME-4: the running call got %d, not the result its op completed with",
               s.winding_cont.status);
  cr_assert_eq(s.parked_completions, 0,
               "SA-HOME-4: stop waited for a running call whose op has no cancel hook");
  cr_assert_eq(s.parked_cont.calls, 1, "SA-HOME-4: hook-less call answered %d times",
               s.parked_cont.calls);
  cr_assert_eq(s.parked_cont.status, SA_ECANCELED, "SA-HOME-4: hook-less call got %d",
               s.parked_cont.status);
}

/* A sync caller blocked in a call when the home stops gets SA_ECANCELED. */
struct parked_caller {
  sa_home_t *home;
  struct parked parked;
  int rc;
};

static void *parked_main(void *arg) {
  struct parked_caller *p = arg;
  sa_future_t f;
  p->rc = sa_home_call(p->home, &parked_op, &p->parked, SA_MODE_AUTO, NULL, &f);
  sa_thread_cleanup();
  return NULL;
}

Test(SA_HOME_4, stop_releases_a_blocked_sync_caller, .timeout = 10) {
  sem_t started;
  sem_init(&started, 0, 0);
  struct parked_caller p = {.home = start_home(), .parked = {.started = &started}};
  pthread_t thread;
  cr_assert_eq(pthread_create(&thread, NULL, parked_main, &p), 0);
  sem_wait(&started);
  cr_assert_eq(sa_home_stop(p.home), 0);
  pthread_join(thread, NULL);
  sem_destroy(&started);
  cr_assert_eq(p.rc, SA_ECANCELED, "SA-HOME-4: the blocked caller got %d", p.rc);
}

/* SA-HOME-5: cancelling a home call reaches the op on its home thread. */
static void cancel_home_call_in_loop(uv_loop_t *loop, void *data) {
  struct async_home *a = data;
  sa_future_t f;
  a->loop = loop;
  a->loop_thread = pthread_self();
  a->rc = sa_home_call(a->home, &value_op, &a->req, SA_MODE_AUTO, NULL, &f);
  cr_assert_eq(a->rc, SA_PENDING);
  a->cont.release = true;
  cr_assert_eq(sa_future_then(f, record_cont, &a->cont), 0);
  cr_assert_eq(sa_future_cancel(f), 0, "SA-HOME-5: cancel refused");
}

Test(SA_HOME_5, cancel_in_async_context_runs_the_hook_at_home) {
  struct async_home a = {.home = start_home(),
                         .req = {.when = SA_TEST_LATER, .delay_ms = 60000}};
  sa_test_in_loop(cancel_home_call_in_loop, &a);
  cr_assert_eq(a.cont.calls, 1, "SA-HOME-5: %d deliveries", a.cont.calls);
  cr_assert_eq(a.cont.status, SA_ECANCELED, "SA-HOME-5: delivered %d", a.cont.status);
  cr_assert_eq(a.req.cancels, 1, "SA-HOME-5: cancel hook ran %d times", a.req.cancels);
  cr_assert(pthread_equal(a.req.complete_thread, a.req.start_thread) &&
                !pthread_equal(a.req.start_thread, a.loop_thread),
            "SA-HOME-5: the hook did not run on the home thread");
  cr_assert_eq(sa_home_stop(a.home), 0);
}

struct foreign_cancel {
  sa_future_t f;
  int rc;
};

static void *cancel_main(void *arg) {
  struct foreign_cancel *c = arg;
  c->rc = sa_future_cancel(c->f);
  return NULL;
}

Test(SA_HOME_5, cancel_from_another_thread_in_sync_context) {
  sa_home_t *home = start_home();
  struct value_req req = {.when = SA_TEST_LATER, .delay_ms = 60000};
  struct foreign_cancel c = {0};
  cr_assert_eq(sa_home_call(home, &value_op, &req, SA_MODE_ASYNC, NULL, &c.f), SA_PENDING);
  pthread_t thread;
  cr_assert_eq(pthread_create(&thread, NULL, cancel_main, &c), 0);
  int rc = sa_future_wait(c.f, NULL);
  pthread_join(thread, NULL);
  cr_assert_eq(c.rc, 0, "SA-HOME-5: cancel from another thread returned %d", c.rc);
  cr_assert_eq(rc, SA_ECANCELED, "SA-HOME-5: the wait returned %d", rc);
  cr_assert_eq(req.cancels, 1, "SA-HOME-5: cancel hook ran %d times", req.cancels);
  cr_assert_eq(sa_future_release(c.f), 0);
  cr_assert_eq(sa_home_stop(home), 0);
}

/* SA-HOME-4: stop frees the home's thread and loop: what a home costs does
 * not stay behind it. Forty homes started, called and stopped one after the
 * other leave the heap and the file descriptors as they were (after a few
 * to warm up caches an implementation may keep). */
static void home_cycle(void) {
  sa_home_t *home = start_home();
  struct value_req req = {.when = SA_TEST_LATER, .status = -2};
  cr_assert_eq(sa_home_call(home, &value_op, &req, SA_MODE_SYNC, NULL, NULL), -2);
  cr_assert_eq(sa_home_stop(home), 0);
}

Test(SA_HOME_4, stopped_homes_leave_nothing_behind, .timeout = 30) {
  for (int i = 0; i < 4; i++)
    home_cycle();
  int fds = sa_test_count_fds();
  size_t heap = mallinfo2().uordblks;
  for (int i = 0; i < 40; i++)
    home_cycle();
  size_t grown = mallinfo2().uordblks - heap;
  cr_assert_eq(sa_test_count_fds(), fds, "SA-HOME-4: 40 stopped homes left file descriptors");
  cr_assert_lt((long)grown, 4096, "SA-HOME-4: 40 stopped homes left %zu bytes of heap behind",
               grown);
}

/* SA-HOME-4: a call made while the home stops is answered too. The home's
 * running call has a cancel hook that holds the stop until the test lets
 * it go; meanwhile the test calls the home. That call is refused at once
 * with an error, or answered once the stop is done: SA_ECANCELED, or its
 * result if the home ran it first; never left pending. */
struct held_stop {
  sem_t started, hook_entered, let_go;
  sa_call_t *call;
  sa_home_t *home;
  int stop_rc;
};

static void held_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  (void)loop;
  struct held_stop *h = arg;
  h->call = call;
  sem_post(&h->started);
}

static void held_cancel(sa_call_t *call, uv_loop_t *loop, void *arg) {
  (void)loop;
  struct held_stop *h = arg;
  sem_post(&h->hook_entered);
  sem_wait(&h->let_go);
  sa_complete(call, SA_ECANCELED, NULL);
}

static const sa_op_t held_op = {held_start, held_cancel};

static void *stop_home(void *arg) {
  struct held_stop *h = arg;
  h->stop_rc = sa_home_stop(h->home);
  return NULL;
}

static void sem_wait_or_fail(sem_t *sem, const char *what) {
  struct timespec at;
  clock_gettime(CLOCK_REALTIME, &at);
  at.tv_sec += 10;
  cr_assert_eq(sem_timedwait(sem, &at), 0, "SA-HOME-4: %s", what);
}

Test(SA_HOME_4, call_made_while_the_home_stops_is_answered) {
  static struct held_stop h;
  sem_init(&h.started, 0, 0);
  sem_init(&h.hook_entered, 0, 0);
  sem_init(&h.let_go, 0, 0);
  h.home = start_home();
  sa_future_t running, late;
  cr_assert_eq(sa_home_call(h.home, &held_op, &h, SA_MODE_ASYNC, NULL, &running), SA_PENDING);
  sem_wait_or_fail(&h.started, "the running call never started");
  pthread_t stopper;
  cr_assert_eq(pthread_create(&stopper, NULL, stop_home, &h), 0);
  sem_wait_or_fail(&h.hook_entered, "the stop never ran the running call's cancel hook");

  struct value_req req = {.when = SA_TEST_INLINE, .value = &marker};
  int rc = sa_home_call(h.home, &value_op, &req, SA_MODE_ASYNC, NULL, &late);
  sem_post(&h.let_go);
  cr_assert_eq(pthread_join(stopper, NULL), 0);
  cr_assert_eq(h.stop_rc, 0);
  cr_assert_eq(sa_future_wait(running, NULL), SA_ECANCELED);
  cr_assert_eq(sa_future_release(running), 0);
  cr_assert(rc == SA_PENDING || rc < 0, "SA-HOME-4: a call during the stop returned %d", rc);
  if (rc == SA_PENDING) {
    void *value = NULL;
    int status = sa_future_wait_until(late, sa_deadline_in(5000), &value);
    cr_assert(status == SA_ECANCELED || (status == 0 && value == &marker),
              "SA-HOME-4: a call made while the home stopped got %d (%s), not an answer",
              status, sa_strerror(status));
    cr_assert_eq(sa_future_release(late), 0);
  }
}
