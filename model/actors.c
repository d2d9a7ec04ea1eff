/*
 * The actors: the threads that run a program, one action at a time in the
 * program's order (the turn). A plain actor acts from plain code; a loop
 * actor acts from callbacks of its own loop (woken by a uv_async_t when its
 * turn comes), run with sa_run, with uv_run inside sa_enter/sa_leave, or
 * with a plain uv_run and each step inside sa_enter/sa_leave. Between
 * actions the loops run by themselves: their deliveries race the other
 * actors' actions, as in real programs. A detached wait hands the turn on
 * before it blocks, so that other actors act on the future meanwhile.
 *
 * The main thread joins each actor at its exit action (the exit is over
 * when the thread is gone), stops the homes left running, collects the
 * fork children, and asks the model for its final checks. A watchdog
 * thread reports a run that stops making progress.
 */
#include "model.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

struct run run;
_Thread_local int t_actor;
_Thread_local bool t_teardown;
_Thread_local struct call_rec *t_inside;
_Thread_local uv_loop_t *t_blocked_loop;

static atomic_bool watchdog_stop;

/* ---- the turn -------------------------------------------------------------- */

/* The first action after i that the parent runs (fork children's are not). */
static int next_main(int i) {
  const struct program *p = run.prog;
  for (i++; i < p->nactions && p->acts[i].actor == ACTOR_CHILD; i++)
    ;
  return i;
}

/* Under run.mu: action i is done; wake whoever acts next. */
static void advance_locked(int i) {
  const struct program *p = run.prog;
  run.next = next_main(i);
  if (run.next < p->nactions) {
    struct actor_rt *a = &run.actors[p->acts[run.next].actor];
    if (a->turn_live)
      uv_async_send(&a->turn);
  }
  pthread_cond_broadcast(&run.cv);
}

static void turn_pass(int i) {
  pthread_mutex_lock(&run.mu);
  advance_locked(i);
  pthread_mutex_unlock(&run.mu);
  tick();
}

/* Wait for the turn of actor a's next action; -1 if it has none. */
static int turn_wait(const struct actor_rt *a) {
  const struct program *p = run.prog;
  pthread_mutex_lock(&run.mu);
  while (run.next < p->nactions && p->acts[run.next].actor != a->index)
    pthread_cond_wait(&run.cv, &run.mu);
  int i = run.next < p->nactions ? run.next : -1;
  pthread_mutex_unlock(&run.mu);
  return i;
}

static bool my_turn(const struct actor_rt *a, int *i) {
  const struct program *p = run.prog;
  pthread_mutex_lock(&run.mu);
  *i = run.next;
  bool mine = *i < p->nactions && p->acts[*i].actor == a->index;
  pthread_mutex_unlock(&run.mu);
  return mine;
}

/* ---- one action ---------------------------------------------------------- */

static void obs_begin(struct obs *o, int action, int actor) {
  *o = (struct obs){.action = action, .actor = actor};
  o->begin = tick();
}

static void obs_end(struct obs *o, int rc) {
  o->end = tick();
  o->end_ns = uv_hrtime();
  o->rc = rc;
}

static void expect_one(struct obs *o, int code, const char *check) {
  model_simple(o, &code, 1, check);
}

static enum expect call_expectation(const struct action *ac, bool in_step) {
  if (ac->mode == MODE_BAD)
    return EXPECT_INVALID;
  if (ac->kind == ACT_HOME_CALL && run.in_child && run.homes[ac->home].inherited)
    return EXPECT_EPERM;
  bool sync = ac->mode == SA_MODE_SYNC || (ac->mode == SA_MODE_AUTO && !in_step);
  return sync ? EXPECT_SYNC : EXPECT_ASYNC;
}

/* The call record of action i, filled from the action. */
static struct call_rec *call_prepare(struct actor_rt *a, const struct action *ac, int i,
                                     bool in_step, enum expect e) {
  struct call_rec *c = model_new_call(i, ac->slot, a->index, ac->kind, ac->mode);
  if (!c)
    return NULL;
  c->nops = ac->kind == ACT_BATCH ? ac->n : ac->kind == ACT_CALL_BLOCKING ? 0 : 1;
  for (int k = 0; k < c->nops; k++) {
    c->op[k].spec = ac->op[k];
    c->items[k] = (sa_batch_item_t){.op = op_of(&ac->op[k]), .arg = &c->op[k]};
  }
  c->batch_kind = ac->loop;
  c->blk.ms = ac->ms;
  c->blk.status = blocking_spec_status(&ac->op[0]);
  c->cont = ac->cont;
  c->then_attached = ac->kind == ACT_DISPATCH_THEN; /* its continuation came with it */
  c->sync_expected = e == EXPECT_SYNC;
  c->sync_from_sync = c->sync_expected && !in_step;
  c->app_loop = in_step && e == EXPECT_ASYNC; /* its future's loop is the actor's */
  c->loop = c->app_loop ? &a->loops[a->cur] : NULL;
  c->session = a->session;
  c->slice = c->then_slice = a->slice;
  if (ac->kind == ACT_HOME_CALL) {
    c->home = ac->home;
    c->home_gen = run.homes[ac->home].generation;
  }
  return c;
}

static int call_entry(struct call_rec *c, const struct action *ac, void **value,
                      sa_future_t *f) {
  const sa_op_t *op = op_of(&ac->op[0]);
  switch (ac->kind) {
  case ACT_DISPATCH:
    return sa_dispatch(op, &c->op[0], ac->mode, value, f);
  case ACT_DISPATCH_THEN:
    return sa_dispatch_then(op, &c->op[0], ac->mode, value, on_delivery, c);
  case ACT_DISPATCH_UNTIL:
    return sa_dispatch_until(op, &c->op[0], ac->mode, c->deadline, value, f);
  case ACT_CALL_BLOCKING:
    return sa_call_blocking(blocking_fn, &c->blk, ac->mode, value, f);
  case ACT_BATCH:
    return sa_batch(c->items, (size_t)c->nops, ac->loop, ac->mode, value, f);
  default:
    return sa_home_call(run.homes[ac->home].home, op, &c->op[0], ac->mode, value, f);
  }
}

static void do_call(struct actor_rt *a, int i, bool in_step) {
  const struct action *ac = &run.prog->acts[i];
  enum expect e = call_expectation(ac, in_step);
  struct call_rec *c = call_prepare(a, ac, i, in_step, e);
  if (!c)
    return;
  sa_future_t f = SA_FUTURE_NULL;
  void *value = &value; /* SA-ENTRY-3: NULL after SA_PENDING */
  struct obs o;
  uv_loop_t *blocked = t_blocked_loop;
  if (in_step && e == EXPECT_SYNC)
    t_blocked_loop = &a->loops[a->cur]; /* a forced sync call blocks the step's loop */
  if (ac->kind == ACT_DISPATCH_UNTIL)
    c->deadline = sa_deadline_in(ac->ms);
  c->made_ms = now_ms();
  obs_begin(&o, i, a->index);
  atomic_store(&c->in_entry, true);
  t_inside = c;
  int rc = call_entry(c, ac, &value, &f);
  t_inside = NULL;
  atomic_store(&c->in_entry, false);
  t_blocked_loop = blocked;
  obs_end(&o, rc);
  o.value = value;
  o.probe = rc == SA_PENDING && f.id ? sa_future_status(f, NULL) : SA_PENDING;
  model_entry_returned(c, &o, e, f);
}

static void do_future(struct actor_rt *a, int i) {
  const struct action *ac = &run.prog->acts[i];
  struct call_rec *c = run.slots[ac->slot];
  sa_future_t f = c ? c->f : SA_FUTURE_NULL;
  uint64_t deadline = ac->kind == ACT_WAIT_UNTIL ? sa_deadline_in(ac->ms) : SA_NO_DEADLINE;
  void *value = NULL;
  struct obs o;
  if (ac->kind == ACT_THEN && c && c->owner == a->index && !c->then_attached)
    c->cont = ac->cont; /* what the continuation does, if this one is taken */
  obs_begin(&o, i, a->index);
  model_future_begin(ac->kind, c, o.begin);
  if (ac->flags & F_DETACHED)
    turn_pass(i);
  int rc = 0;
  switch (ac->kind) {
  case ACT_STATUS:
    rc = sa_future_status(f, &value);
    break;
  case ACT_THEN:
    t_inside = c;
    rc = sa_future_then(f, on_delivery, c);
    t_inside = NULL;
    break;
  case ACT_WAIT:
    rc = sa_future_wait(f, &value);
    break;
  case ACT_WAIT_UNTIL:
    rc = sa_future_wait_until(f, deadline, &value);
    break;
  case ACT_RELEASE:
    rc = sa_future_release(f);
    break;
  default:
    rc = sa_future_cancel(f);
    break;
  }
  obs_end(&o, rc);
  o.value = value;
  model_future_action(ac->kind, c, &o, deadline);
}

static void do_home(struct actor_rt *a, int i) {
  const struct action *ac = &run.prog->acts[i];
  struct home_rt *h = &run.homes[ac->home];
  struct obs o;
  if (ac->kind == ACT_HOME_START) {
    h->generation++;
    atomic_store(&h->thread, 0);
    atomic_store(&h->loop, 0);
    obs_begin(&o, i, a->index);
    obs_end(&o, sa_home_start(&h->home));
    expect_one(&o, 0, "SA-HOME-1 sa_home_start");
    h->live = o.rc == 0;
    return;
  }
  if (run.in_child && h->inherited) {
    obs_begin(&o, i, a->index);
    obs_end(&o, sa_home_stop(h->home));
    expect_one(&o, SA_EPERM, "SA-THR-3 a home inherited by a fork child");
    return;
  }
  model_home_stop_began(ac->home, h->generation);
  obs_begin(&o, i, a->index);
  obs_end(&o, sa_home_stop(h->home));
  expect_one(&o, 0, "SA-HOME-4 sa_home_stop");
  h->live = false;
  model_home_stopped(ac->home, h->generation, i);
}

static void do_loop(struct actor_rt *a, int i) {
  const struct action *ac = &run.prog->acts[i];
  struct actor_rt *target = &run.actors[ac->other];
  uv_loop_t *loop = &target->loops[ac->loop];
  struct obs o;
  int allowed[2], n = 0;
  const char *check;
  if (run.in_child) {
    allowed[n++] = SA_EPERM;
    if (target->loop_closed[ac->loop])
      allowed[n++] = SA_EINVAL; /* closed before the fork: SA-LOOP-3 as well */
    check = "SA-THR-3 a loop the fork's parent ran";
  } else if (target == a && ac->loop == a->cur) {
    allowed[n++] = SA_EBUSY;
    check = "SA-LOOP-1 a loop running on this thread";
  } else {
    allowed[n++] = SA_EINVAL;
    check = "SA-LOOP-3 a closed loop";
  }
  obs_begin(&o, i, a->index);
  int rc;
  switch (ac->probe) {
  case PROBE_CLOSE:
    rc = sa_loop_close(loop);
    break;
  case PROBE_RUN:
    rc = sa_run(loop, UV_RUN_NOWAIT);
    break;
  default:
    if ((rc = sa_enter(loop)) == 0)
      sa_leave(loop);
    break;
  }
  obs_end(&o, rc);
  model_simple(&o, allowed, n, check);
}

static void do_cleanup(struct actor_rt *a, int i, bool in_step) {
  struct obs o;
  if (in_step) { /* SA-THR-2: refused in async context, nothing changed */
    obs_begin(&o, i, a->index);
    obs_end(&o, sa_thread_cleanup());
    expect_one(&o, SA_EBUSY, "SA-THR-2 sa_thread_cleanup in async context");
    return;
  }
  model_teardown_began(a->index);
  t_teardown = true;
  obs_begin(&o, i, a->index);
  obs_end(&o, sa_thread_cleanup());
  t_teardown = false;
  expect_one(&o, 0,
             run.in_child ? "SA-THR-3 the fork child is in sync context"
                          : "SA-THR-2 sa_thread_cleanup");
  kept_forget_private(a);
  model_teardown_done(a->index, i);
}

static void do_fork(struct actor_rt *a, int i) {
  struct obs o;
  obs_begin(&o, i, a->index);
  pid_t pid = fork_now(i);
  obs_end(&o, pid < 0 ? -errno : 0);
  expect_one(&o, 0, "fork");
}

static void run_step(struct actor_rt *a, int i, bool in_step) {
  const struct action *ac = &run.prog->acts[i];
  uv_loop_t *loop = &a->loops[a->cur];
  bool scoped = in_step && a->kind == ACTOR_SCOPED;
  atomic_store(&a->running_action, i);
  if (scoped && sa_enter(loop) != 0)
    fail(i, "SA-DET-3 sa_enter", NULL, "sa_enter on the loop the step runs on failed");
  if (ac->kind <= ACT_HOME_CALL)
    do_call(a, i, in_step);
  else if (ac->kind <= ACT_CANCEL)
    do_future(a, i);
  else if (ac->kind <= ACT_HOME_STOP)
    do_home(a, i);
  else if (ac->kind == ACT_LOOP)
    do_loop(a, i);
  else if (ac->kind == ACT_CLEANUP)
    do_cleanup(a, i, in_step);
  else if (ac->kind == ACT_FORK)
    do_fork(a, i);
  if (scoped && sa_leave(loop) != 0)
    fail(i, "SA-DET-3 sa_leave", NULL, "sa_leave on the loop the step runs on failed");
  atomic_store(&a->running_action, -1);
}

/* ---- fork children ---------------------------------------------------------- */

/* SIGALRM in a fork child: async-signal-safe stores and write(2) only. */
static void child_hang(int sig) {
  static const char msg[] = "model: a fork child hung (SA-THR-3: it must not hang on "
                            "what it inherited)\n";
  static const char check[] = "SA-THR-3 a fork child does not hang";
  static const char detail[] = "the fork child made no progress";
  struct verdict *v = run.verdict;
  int pass = V_PASS;
  (void)sig;
  if (atomic_compare_exchange_strong(&v->failed, &pass, V_HANG)) {
    v->action = run.child_of;
    memcpy(v->check, check, sizeof check);
    memcpy(v->detail, detail, sizeof detail);
  }
  if (!run.quiet && write(STDERR_FILENO, msg, sizeof msg - 1) < 0)
    _exit(3);
  _exit(2);
}

/* In the child of a fork made by action i: run the child's actions on
 * this thread alone, then leave with _exit (libuv issue 4443) and its
 * verdict. The parent reads the verdict page rather than the status: under
 * valgrind a child's status is memcheck's. */
void fork_child_run(int action) {
  int actor = t_actor - 1;
  int failures_before = atomic_load(&run.verdict->failures);
  run.in_child = true;
  run.child_of = action;
  t_inside = NULL;
  t_blocked_loop = NULL;
  t_teardown = false;
  signal(SIGALRM, child_hang);
  alarm((unsigned)(run.timeout_ms / 2000 + 1)); /* before the parent's watchdog fires */
  for (int h = 0; h < MAX_HOMES; h++)
    run.homes[h].inherited = run.homes[h].live;
  run.homes[CHILD_HOME] = (struct home_rt){0};
  for (int a = 0; a < MAX_ACTORS; a++)
    for (int k = 0; k < MAX_KEPT; k++)
      run.actors[a].kept[k].inherited = run.actors[a].kept[k].open;
  struct actor_rt *a = &run.actors[actor];
  a->sync_kept = -1;
  if (sa_current_loop() != NULL)
    fail(action, "SA-THR-3 the fork child is in sync context", NULL,
         "sa_current_loop() is %p in the fork child", (void *)sa_current_loop());
  const struct program *p = run.prog;
  for (int j = action + 1; j < p->nactions && p->acts[j].actor == ACTOR_CHILD; j++)
    run_step(a, j, false);
  atomic_fetch_add(&run.verdict->child_done, 1);
  _exit(atomic_load(&run.verdict->failures) > failures_before);
}

pid_t fork_now(int action) {
  pid_t pid = fork();
  if (pid == 0)
    fork_child_run(action);
  if (pid > 0) {
    model_lock();
    run.children[run.nchildren++] = pid;
    model_unlock();
  }
  return pid;
}

static void reap_children(void) {
  for (int k = 0; k < run.nchildren; k++) {
    int status = 0;
    while (waitpid(run.children[k], &status, 0) < 0 && errno == EINTR)
      ;
    if (WIFSIGNALED(status))
      fail(-1, "SA-THR-3 a fork child ends cleanly", NULL, "a fork child was killed by signal %d",
           WTERMSIG(status));
  }
  if (atomic_load(&run.verdict->child_done) < run.nchildren &&
      atomic_load(&run.verdict->failed) == V_PASS)
    fail(-1, "SA-THR-3 a fork child ends cleanly", NULL,
         "%d of %d fork children did not finish their actions",
         run.nchildren - atomic_load(&run.verdict->child_done), run.nchildren);
}

/* ---- plain actors ----------------------------------------------------------- */

/* The actor's thread ends: its private loops go away after this returns. */
static void exit_now(struct actor_rt *a) {
  model_teardown_began(a->index);
  t_teardown = true;
  pthread_mutex_lock(&run.mu);
  a->exit_requested = true;
  pthread_cond_broadcast(&run.cv);
  pthread_mutex_unlock(&run.mu);
}

static void *plain_main(void *arg) {
  struct actor_rt *a = arg;
  t_actor = a->index + 1;
  int i;
  while ((i = turn_wait(a)) >= 0) {
    const struct action *ac = &run.prog->acts[i];
    if (ac->kind == ACT_EXIT) {
      exit_now(a);
      return NULL;
    }
    run_step(a, i, false);
    if (!(ac->flags & F_DETACHED))
      turn_pass(i);
  }
  return NULL;
}

/* ---- loop actors ------------------------------------------------------------ */

static void session_end_begin(struct actor_rt *a, int i) {
  a->session_ending = true;
  a->session_action = i;
  pthread_mutex_lock(&run.mu);
  a->turn_live = false;
  pthread_mutex_unlock(&run.mu);
  uv_close((uv_handle_t *)&a->turn, NULL);
  kept_close_all(a, &a->loops[a->cur]);
}

/* The steps run in one turn run in one loop iteration (an async handle's
 * callback runs once per iteration): a slice. */
static void on_turn(uv_async_t *handle) {
  struct actor_rt *a = handle->data;
  int i;
  a->slice++;
  while (!a->session_ending && my_turn(a, &i)) {
    const struct action *ac = &run.prog->acts[i];
    if (ac->kind == ACT_SESSION || ac->kind == ACT_EXIT) {
      session_end_begin(a, i);
      return;
    }
    run_step(a, i, true);
    if (!(ac->flags & F_DETACHED))
      turn_pass(i);
  }
}

/* Run the loop until the session ends and nothing is left on it. The
 * dispatcher may stop the loop early (uv_stop): run it again. */
static void session_loop(struct actor_rt *a, uv_loop_t *loop) {
  int rc;
  do {
    rc = a->kind == ACTOR_RUN ? sa_run(loop, UV_RUN_DEFAULT) : uv_run(loop, UV_RUN_DEFAULT);
    if (rc < 0) {
      fail(a->session_action, "SA-DET-2 sa_run", NULL, "sa_run returned %d (%s)", rc,
           sa_strerror(rc));
      return;
    }
  } while (!(a->session_ending && rc == 0));
}

static void session_run(struct actor_rt *a) {
  uv_loop_t *loop = &a->loops[a->cur];
  if (uv_loop_init(loop) != 0 || uv_async_init(loop, &a->turn, on_turn) != 0)
    abort(); /* the harness itself: no fds or memory left */
  a->loop_closed[a->cur] = false;
  a->session++;
  a->session_ending = false;
  a->in_session = true;
  a->turn.data = a;
  pthread_mutex_lock(&run.mu);
  a->turn_live = true;
  pthread_mutex_unlock(&run.mu);
  uv_async_send(&a->turn); /* it is this actor's turn */
  if (a->kind == ACTOR_ENTER && sa_enter(loop) != 0)
    fail(-1, "SA-DET-3 sa_enter", NULL, "sa_enter on a loop actor's loop failed");
  session_loop(a, loop);
  if (a->kind == ACTOR_ENTER && sa_leave(loop) != 0)
    fail(-1, "SA-DET-3 sa_leave", NULL, "sa_leave on a loop actor's loop failed");
  a->in_session = false;
}

/* The session's loop has drained: close it. A dispatcher that did not
 * keep the loop alive for a call in flight (a home's result on its way)
 * says SA_EBUSY: run the loop a while longer rather than fail. */
static void session_close(struct actor_rt *a, int i) {
  uv_loop_t *loop = &a->loops[a->cur];
  struct obs o;
  obs_begin(&o, i, a->index);
  int rc;
  for (int tries = 0; (rc = sa_loop_close(loop)) == SA_EBUSY && tries < 2000; tries++) {
    sa_run(loop, UV_RUN_NOWAIT);
    usleep(1000);
  }
  obs_end(&o, rc);
  expect_one(&o, 0, "SA-LOOP-2 sa_loop_close once no call is pending");
  if (rc == 0) {
    a->loop_closed[a->cur] = true;
    model_session_closed(a->index, loop, i);
  }
  a->cur ^= 1;
}

static void *loop_main(void *arg) {
  struct actor_rt *a = arg;
  t_actor = a->index + 1;
  while (turn_wait(a) >= 0) {
    session_run(a);
    int end = a->session_action;
    session_close(a, end);
    if (run.prog->acts[end].kind == ACT_EXIT) {
      exit_now(a);
      return NULL;
    }
    turn_pass(end);
  }
  return NULL;
}

/* ---- the main thread ---------------------------------------------------------- */

/* Join each actor at its exit action, in the program's order. */
static void join_exits(void) {
  const struct program *p = run.prog;
  pthread_mutex_lock(&run.mu);
  while (run.next < p->nactions) {
    int i = run.next;
    struct actor_rt *a = &run.actors[p->acts[i].actor];
    if (p->acts[i].kind != ACT_EXIT || !a->exit_requested) {
      pthread_cond_wait(&run.cv, &run.mu);
      continue;
    }
    pthread_mutex_unlock(&run.mu);
    pthread_join(a->thread, NULL);
    tick();
    model_teardown_done(a->index, i);
    int ok = 0;
    note_outcome(i, 0, &ok, 1);
    pthread_mutex_lock(&run.mu);
    advance_locked(i);
  }
  pthread_mutex_unlock(&run.mu);
}

/* A thread that exits with a call pending on its private loop, whose op's
 * cancel hook stops it: for exit_probes(). */
#define EXIT_PROBES 8

static void probe_fire(uv_timer_t *timer) {
  sa_complete(timer->data, 0, NULL);
  uv_close((uv_handle_t *)timer, NULL);
}

static void probe_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  uv_timer_t *timer = arg;
  uv_timer_init(loop, timer);
  timer->data = call;
  uv_timer_start(timer, probe_fire, 60000, 0);
}

static void probe_cancel(sa_call_t *call, uv_loop_t *loop, void *arg) {
  (void)loop;
  uv_timer_stop(arg);
  probe_fire(arg);
  (void)call;
}

static const sa_op_t probe_op = {probe_start, probe_cancel};

static void *exit_probe(void *arg) {
  sa_future_t f;
  if (sa_dispatch(&probe_op, arg, SA_MODE_ASYNC, NULL, &f) == SA_PENDING)
    sa_future_release(f);
  return NULL;
}

/* `n` threads, one after another, each exiting with a call pending. */
static void exit_probes(int n) {
  for (int i = 0; i < n; i++) {
    uv_timer_t timer;
    pthread_t t;
    if (pthread_create(&t, NULL, exit_probe, &timer) == 0)
      pthread_join(t, NULL);
  }
}

static int count_fds(void) {
  DIR *dir = opendir("/proc/self/fd");
  int n = 0;
  if (!dir)
    return -1;
  while (readdir(dir))
    n++;
  closedir(dir);
  return n;
}

static void report_hang(void) {
  const struct program *p = run.prog;
  char busy[256] = "";
  size_t used = 0;
  for (int a = 0; a < p->nactors && used < sizeof busy; a++) {
    int i = atomic_load(&run.actors[a].running_action);
    if (i >= 0)
      used += (size_t)snprintf(busy + used, sizeof busy - used, " actor %d in action %d (%s);",
                               a, i, act_name((enum act)p->acts[i].kind));
  }
  struct verdict *v = run.verdict;
  int pass = V_PASS;
  pthread_mutex_lock(&run.mu); /* no action holds it across a call */
  int next = run.next;
  pthread_mutex_unlock(&run.mu);
  char detail[sizeof v->detail];
  snprintf(detail, sizeof detail, "no progress for %ld ms; the turn of action %d;%s",
           run.timeout_ms, next, busy);
  if (atomic_compare_exchange_strong(&v->failed, &pass, V_HANG)) {
    v->action = next < p->nactions ? next : -1;
    snprintf(v->check, sizeof v->check, "hang");
    snprintf(v->detail, sizeof v->detail, "%s", detail);
  }
  if (!run.quiet)
    fprintf(stderr, "model: seed %llu: HANG: %s\n", (unsigned long long)p->seed, detail);
}

static void *watchdog(void *arg) {
  (void)arg;
  long last = -1;
  uint64_t since = now_ms();
  while (!atomic_load(&watchdog_stop)) {
    usleep(20000);
    long progress = atomic_load(&run.progress);
    if (progress != last) {
      last = progress;
      since = now_ms();
    } else if ((long)(now_ms() - since) > run.timeout_ms) {
      report_hang();
      if (!run.quiet && run.repro_on_hang)
        repro_print(run.prog, run.verdict, STDOUT_FILENO);
      _exit(2);
    }
  }
  return NULL;
}

static void run_init(const struct program *p, struct verdict *v, bool quiet, long timeout_ms) {
  memset(&run, 0, sizeof run);
  pthread_mutex_init(&run.mu, NULL);
  pthread_cond_init(&run.cv, NULL);
  run.prog = p;
  run.verdict = v;
  run.quiet = quiet;
  run.timeout_ms = timeout_ms;
  run.next = next_main(-1);
  for (int a = 0; a < MAX_ACTORS; a++) {
    run.actors[a].index = a;
    run.actors[a].kind = (enum actor_kind)p->actor_kind[a];
    run.actors[a].sync_kept = -1;
    atomic_init(&run.actors[a].running_action, -1);
  }
}

static bool has_actions(const struct program *p, int actor) {
  for (int i = 0; i < p->nactions; i++)
    if (p->acts[i].actor == actor)
      return true;
  return false;
}

static void stop_homes(void) {
  for (int h = 0; h < MAX_HOMES; h++) {
    if (!run.homes[h].live)
      continue;
    struct obs o;
    model_home_stop_began(h, run.homes[h].generation);
    obs_begin(&o, -1, -1);
    obs_end(&o, sa_home_stop(run.homes[h].home));
    expect_one(&o, 0, "SA-HOME-4 sa_home_stop");
    run.homes[h].live = false;
    model_home_stopped(h, run.homes[h].generation, -1);
  }
}

int run_program(const struct program *p, struct verdict *v, bool quiet, long timeout_ms,
                bool repro_on_hang) {
  run_init(p, v, quiet, timeout_ms);
  run.repro_on_hang = repro_on_hang;
  uv_loop_t warm; /* libuv's process-wide fds exist before the count */
  if (uv_loop_init(&warm) == 0)
    uv_loop_close(&warm);
  int fds = count_fds();
  pthread_t dog;
  atomic_store(&watchdog_stop, false);
  pthread_create(&dog, NULL, watchdog, NULL);
  for (int a = 0; a < p->nactors; a++) {
    struct actor_rt *actor = &run.actors[a];
    actor->started = has_actions(p, a);
    if (actor->started)
      pthread_create(&actor->thread, NULL, actor->kind == ACTOR_PLAIN ? plain_main : loop_main,
                     actor);
  }
  join_exits();
  stop_homes();
  reap_children();
  model_final();
  struct obs o;
  obs_begin(&o, -1, -1);
  obs_end(&o, sa_thread_cleanup());
  expect_one(&o, 0, "SA-THR-2 sa_thread_cleanup");
  /* SA-THR-2: what the dispatcher holds for exited threads must not grow
   * with their number; it may keep some loops for later threads, so the
   * program may end above where it began, but more threads leaving calls
   * pending behind them must not add to it. */
  exit_probes(EXIT_PROBES); /* the loops a dispatcher keeps are kept by now */
  int left = count_fds();
  exit_probes(EXIT_PROBES);
  int probed = count_fds();
  if (probed > left)
    fail(-1, "SA-THR-2 no file descriptors left behind", NULL,
         "%d file descriptors open before %d more threads exited with calls pending, %d after "
         "(%d before the program)",
         left, EXIT_PROBES, probed, fds);
  atomic_store(&watchdog_stop, true);
  pthread_join(dog, NULL);
  for (int i = 0; i < run.ncalls; i++)
    free(run.calls[i]);
  pthread_cond_destroy(&run.cv);
  pthread_mutex_destroy(&run.mu);
  int failed = atomic_load(&v->failed);
  return failed == V_PASS ? 0 : failed == V_HANG ? 2 : 1;
}
