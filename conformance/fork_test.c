/* SA-THR-3: fork. A standalone program, not a Criterion test: forking inside
 * a Criterion test can hang its runner. Prints TAP lines named like the
 * Criterion tests (SA_THR_3::...) and exits non-zero on any failure.
 *
 * The parent makes its private loop, leaves a handle on it, and forks. The
 * child must get a fresh loop (without the parent's handle) that works for
 * timers, fs and the threadpool. Then the parent's loop must still work,
 * including a threadpool call, whose wake-up goes through the loop's epoll
 * set, which the child shares: a child that closed the inherited loop would
 * have unregistered it, and the parent would hang (the alarm catches it).
 *
 * Then what the child inherits besides its private loops, each in a fork of
 * its own: futures (a pending call whose op polls a pipe, its cancel hook
 * stopping the poll; a delivered one), a home, an application loop, and a
 * fork made inside an op and inside a loop callback. The child must answer
 * every inherited thing with an error code and never touch it: a cancel that
 * stopped the inherited poll would unregister the parent's fd from the epoll
 * set both share, and the parent's call would never complete. */
#include <smartasync.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static uv_timer_t kept_timer;
static int failures, test_no;

static void tap(bool ok, const char *name, const char *detail) {
  printf("%sok %d - SA_THR_3::%s%s%s\n", ok ? "" : "not ", ++test_no, name,
         detail ? " # " : "", detail ? detail : "");
  fflush(stdout);
  failures += !ok;
}

static void keep_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  (void)arg;
  uv_timer_init(loop, &kept_timer);
  uv_unref((uv_handle_t *)&kept_timer);
  sa_complete(call, 0, loop);
}

static void find_kept(uv_handle_t *handle, void *found) {
  if (handle == (uv_handle_t *)&kept_timer)
    *(bool *)found = true;
}

static void probe_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  bool found = false;
  (void)arg;
  uv_walk(loop, find_kept, &found);
  sa_complete(call, found ? -1 : 0, loop); /* -1: the parent's handle is here */
}

static void timer_done(uv_timer_t *timer) {
  sa_complete(timer->data, 0, NULL);
  uv_close((uv_handle_t *)timer, NULL);
}

static void timer_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  uv_timer_t *timer = arg;
  uv_timer_init(loop, timer);
  timer->data = call;
  uv_timer_start(timer, timer_done, 2, 0);
}

struct work {
  uv_work_t req;
  sa_call_t *call;
  int result;
};

static void work_run(uv_work_t *req) { ((struct work *)req->data)->result = 42; }

static void work_done(uv_work_t *req, int status) {
  struct work *w = req->data;
  sa_complete(w->call, status ? status : (w->result == 42 ? 0 : -1), NULL);
}

static void work_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  struct work *w = arg;
  w->call = call;
  w->req.data = w;
  int rc = uv_queue_work(loop, &w->req, work_run, work_done);
  if (rc)
    sa_complete(call, rc, NULL);
}

/* An op that completes when its pipe is readable; its hook stops the poll. */
struct pipe_poll {
  uv_poll_t poll;
  sa_call_t *call;
  int cancels;
};

static void poll_closed(uv_handle_t *handle) { (void)handle; }

static void poll_finish(struct pipe_poll *pp, int status) {
  sa_complete(pp->call, status, pp);
  uv_close((uv_handle_t *)&pp->poll, poll_closed);
}

static void poll_readable(uv_poll_t *poll, int status, int events) {
  (void)events;
  poll_finish(poll->data, status);
}

/* arg: the pipe_poll, its poll.data holding the fd to watch. */
static void poll_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  struct pipe_poll *pp = arg;
  int fd = (int)(intptr_t)pp->poll.data;
  pp->call = call;
  if (uv_poll_init(loop, &pp->poll, fd) != 0) {
    sa_complete(call, SA_EINVAL, NULL);
    return;
  }
  pp->poll.data = pp;
  uv_poll_start(&pp->poll, UV_READABLE, poll_readable);
}

static void poll_cancel(sa_call_t *call, uv_loop_t *loop, void *arg) {
  struct pipe_poll *pp = arg;
  (void)call;
  (void)loop;
  pp->cancels++;
  uv_poll_stop(&pp->poll);
  poll_finish(pp, SA_ECANCELED);
}

/* Completes on the next loop iteration. */
static void tick_done(uv_idle_t *idle) {
  sa_complete(idle->data, 0, NULL);
  uv_close((uv_handle_t *)idle, NULL);
}

static void tick_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  uv_idle_t *idle = arg;
  uv_idle_init(loop, idle);
  idle->data = call;
  uv_idle_start(idle, tick_done);
}

static void value_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  (void)loop;
  sa_complete(call, -7, arg);
}

static const sa_op_t poll_op = {poll_start, poll_cancel};
static const sa_op_t tick_op = {tick_start, NULL};
static const sa_op_t value_op = {value_start, NULL};
static const sa_op_t keep_op = {keep_start, NULL};
static const sa_op_t probe_op = {probe_start, NULL};
static const sa_op_t timer_op = {timer_start, NULL};
static const sa_op_t work_op = {work_start, NULL};

static int sync_call(const sa_op_t *op, void *arg, void **value) {
  return sa_dispatch(op, arg, SA_MODE_SYNC, value, NULL);
}

/* Runs in the child; returns a bit set of failed checks. */
static int child_checks(void) {
  int failed = 0;
  void *loop = NULL;
  uv_timer_t timer;
  struct work w = {0};
  if (sync_call(&probe_op, NULL, &loop) != 0)
    failed |= 1; /* the parent's handle is on the child's loop */
  if (loop == NULL || sa_current_loop() != NULL)
    failed |= 2;
  if (sync_call(&timer_op, &timer, NULL) != 0)
    failed |= 4;
  if (sync_call(&work_op, &w, NULL) != 0 || w.result != 42)
    failed |= 8;
  return failed;
}

/* Forks; the child runs `checks` and exits with its failed-check bits. The
 * parent reports each bit as a TAP line (names[i] for bit 1 << i). */
static void in_child(int (*checks)(void *), void *arg, const char *const *names, int n) {
  fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) {
    printf("Bail out! fork failed\n");
    exit(1);
  }
  if (pid == 0) {
    alarm(10); /* a hang in the child is a failure, reported as a signal */
    _exit(checks(arg));
  }
  int status = 0;
  waitpid(pid, &status, 0);
  int bits = WIFEXITED(status) ? WEXITSTATUS(status) : 255;
  for (int i = 0; i < n; i++)
    tap(!(bits & (1 << i)), names[i], WIFSIGNALED(status) ? "child killed by a signal" : NULL);
}

/* Futures: every future function answers SA_ESTALE, none acts. */
struct inherited_futures {
  sa_future_t pending, delivered;
  struct pipe_poll *pp;
};

static void never_called(sa_future_t f, int status, void *value, void *data) {
  (void)f, (void)status, (void)value, (void)data;
  abort();
}

static int future_checks(void *arg) {
  struct inherited_futures *inh = arg;
  int failed = 0;
  sa_future_t both[2] = {inh->pending, inh->delivered};
  for (int i = 0; i < 2; i++) {
    sa_future_t f = both[i];
    void *value = NULL;
    if (sa_future_status(f, &value) != SA_ESTALE)
      failed |= 1;
    if (sa_future_cancel(f) != SA_ESTALE)
      failed |= 2;
    if (sa_future_then(f, never_called, NULL) != SA_ESTALE)
      failed |= 4;
    if (sa_future_wait(f, &value) != SA_ESTALE)
      failed |= 8;
    if (sa_future_wait_until(f, sa_deadline_in(50), &value) != SA_ESTALE)
      failed |= 8;
    if (sa_future_release(f) != SA_ESTALE)
      failed |= 16;
  }
  if (inh->pp->cancels != 0)
    failed |= 2; /* the op's hook ran on the abandoned loop */
  /* The child's own calls still work. */
  void *value = NULL;
  if (sync_call(&value_op, &failed, &value) != -7 || value != &failed)
    failed |= 32;
  return failed;
}

static void check_inherited_futures(void) {
  static const char *const names[] = {
      "child_status_of_inherited_future_is_estale",
      "child_cancel_of_inherited_future_is_estale_and_runs_no_hook",
      "child_then_on_inherited_future_is_estale",
      "child_wait_on_inherited_future_is_estale",
      "child_release_of_inherited_future_is_estale",
      "child_calls_work_beside_inherited_futures"};
  int fds[2];
  struct pipe_poll pp = {0};
  uv_idle_t idle;
  struct inherited_futures inh = {.pp = &pp};
  sa_future_t tick;
  if (pipe(fds) != 0 ||
      sa_dispatch(&value_op, NULL, SA_MODE_ASYNC, NULL, &inh.delivered) != SA_PENDING ||
      sa_future_wait(inh.delivered, NULL) != -7) {
    printf("Bail out! set-up of the inherited futures failed\n");
    exit(1);
  }
  /* The poll starts on the private loop, which then runs a tick: libuv adds
   * the fd to the epoll set on the loop's next iteration, before the fork. */
  pp.poll.data = (void *)(intptr_t)fds[0];
  if (sa_dispatch(&poll_op, &pp, SA_MODE_ASYNC, NULL, &inh.pending) != SA_PENDING ||
      sa_dispatch(&tick_op, &idle, SA_MODE_ASYNC, NULL, &tick) != SA_PENDING ||
      sa_future_wait(tick, NULL) != 0 || sa_future_release(tick) != 0) {
    printf("Bail out! poll call failed\n");
    exit(1);
  }
  in_child(future_checks, &inh, names, 6);
  /* The parent's poll still fires: its registration is intact. A bounded
   * wait: a child that unregistered the fd makes this time out. */
  void *value = NULL;
  int rc = write(fds[1], "x", 1) == 1
               ? sa_future_wait_until(inh.pending, sa_deadline_in(2000), &value)
               : -1;
  tap(rc == 0 && value == &pp && pp.cancels == 0, "parent_pending_call_completes_after_child",
      NULL);
  sa_future_release(inh.pending);
  sa_future_release(inh.delivered);
  close(fds[0]);
  close(fds[1]);
}

/* A home of the parent: no thread of it exists in the child. */
static int home_checks(void *arg) {
  sa_home_t *home = arg;
  int failed = 0;
  void *value = NULL;
  sa_future_t f;
  if (sa_home_call(home, &value_op, NULL, SA_MODE_SYNC, &value, NULL) != SA_EPERM)
    failed |= 1;
  if (sa_home_call(home, &value_op, NULL, SA_MODE_AUTO, &value, &f) != SA_EPERM)
    failed |= 1;
  if (sa_home_call(home, &value_op, NULL, SA_MODE_ASYNC, &value, &f) != SA_EPERM)
    failed |= 1;
  if (sa_home_stop(home) != SA_EPERM)
    failed |= 2;
  return failed;
}

static void check_inherited_home(void) {
  static const char *const names[] = {"child_call_on_inherited_home_is_eperm",
                                      "child_stop_of_inherited_home_is_eperm"};
  sa_home_t *home = NULL;
  void *value = NULL;
  if (sa_home_start(&home) != 0 ||
      sa_home_call(home, &value_op, &value, SA_MODE_SYNC, &value, NULL) != -7) {
    printf("Bail out! home set-up failed\n");
    exit(1);
  }
  in_child(home_checks, home, names, 2);
  int rc = sa_home_call(home, &value_op, &home, SA_MODE_SYNC, &value, NULL);
  tap(rc == -7 && value == &home, "parent_home_works_after_child", NULL);
  tap(sa_home_stop(home) == 0, "parent_home_stops_after_child", NULL);
}

/* A fork inside an op, or inside a callback of an application loop: the
 * child is in sync context, and the inherited loop is the parent's. */
struct fork_site {
  uv_loop_t *inherited; /* an application loop the child must refuse, or NULL */
  const char *const *names;
};

static int context_checks(void *arg) {
  uv_loop_t *inherited = ((struct fork_site *)arg)->inherited;
  int failed = 0;
  void *value = NULL;
  sa_future_t f = {42};
  if (sa_current_loop() != NULL)
    failed |= 1;
  if (sa_dispatch(&value_op, &failed, SA_MODE_AUTO, &value, &f) != -7 || value != &failed ||
      f.id != 0)
    failed |= 2;
  if (inherited && (sa_run(inherited, UV_RUN_NOWAIT) != SA_EPERM ||
                    sa_enter(inherited) != SA_EPERM || sa_loop_close(inherited) != SA_EPERM))
    failed |= 4;
  return failed;
}

static void fork_in_op_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  struct fork_site *site = arg;
  in_child(context_checks, site, site->names, site->inherited ? 3 : 2);
  sa_complete(call, 0, loop);
}

static const sa_op_t fork_in_op = {fork_in_op_start, NULL};

static void fork_in_callback(uv_timer_t *timer) {
  static const char *const names[] = {"child_forked_in_a_loop_callback_is_in_sync_context",
                                      "child_forked_in_a_loop_callback_runs_auto_calls_sync",
                                      "child_refuses_inherited_application_loop"};
  struct fork_site site = {timer->loop, names};
  sa_future_t f;
  int rc = sa_dispatch(&fork_in_op, &site, SA_MODE_AUTO, NULL, &f);
  tap(rc == SA_PENDING && sa_future_release(f) == 0, "parent_call_in_loop_callback_works", NULL);
  uv_close((uv_handle_t *)timer, NULL);
}

static void check_fork_inside_callbacks(void) {
  static const char *const names[] = {"child_forked_in_a_sync_op_is_in_sync_context",
                                      "child_forked_in_a_sync_op_runs_auto_calls_sync"};
  struct fork_site site = {NULL, names};
  tap(sync_call(&fork_in_op, &site, NULL) == 0, "parent_sync_call_forking_in_its_op_works",
      NULL);
  uv_loop_t loop;
  uv_timer_t timer;
  uv_loop_init(&loop);
  uv_timer_init(&loop, &timer);
  uv_timer_start(&timer, fork_in_callback, 0, 0);
  tap(sa_run(&loop, UV_RUN_DEFAULT) == 0 && sa_loop_close(&loop) == 0,
      "parent_application_loop_closes_after_child", NULL);
}

/* The very first thing the process does with the dispatcher: run a loop
 * with sa_run and fork in its callback, before any call. The child must be
 * in sync context already: whatever handles the fork cannot wait for a
 * first call to be set up. */
static void fork_in_first_callback(uv_timer_t *timer) {
  static const char *const names[] = {"child_forked_before_any_call_is_in_sync_context",
                                      "child_forked_before_any_call_runs_auto_calls_sync",
                                      "child_forked_before_any_call_refuses_the_loop"};
  struct fork_site site = {timer->loop, names};
  in_child(context_checks, &site, names, 3);
  uv_close((uv_handle_t *)timer, NULL);
}

static void check_fork_before_any_call(void) {
  uv_loop_t loop;
  uv_timer_t timer;
  uv_loop_init(&loop);
  uv_timer_init(&loop, &timer);
  uv_timer_start(&timer, fork_in_first_callback, 0, 0);
  tap(sa_run(&loop, UV_RUN_DEFAULT) == 0 && sa_loop_close(&loop) == 0,
      "parent_first_loop_closes_after_child", NULL);
}

int main(void) {
  void *parent_loop = NULL;
  uv_timer_t timer;
  struct work w = {0};
  alarm(40); /* a hang is a failure, not a stuck CI */
  printf("TAP version 13\n");
  check_fork_before_any_call();
  if (sync_call(&keep_op, NULL, &parent_loop) != 0 || sync_call(&work_op, &w, NULL) != 0) {
    printf("Bail out! the parent's set-up failed\n");
    return 1;
  }
  fflush(stdout);
  pid_t pid = fork();
  if (pid < 0) {
    printf("Bail out! fork failed\n");
    return 1;
  }
  if (pid == 0) {
    alarm(20);
    _exit(child_checks()); /* _exit: see libuv issue 4443 */
  }
  int status = 0;
  waitpid(pid, &status, 0);
  int bits = WIFEXITED(status) ? WEXITSTATUS(status) : 255;
  tap(WIFEXITED(status), "child_exits_cleanly",
      WIFSIGNALED(status) ? "child killed by a signal" : NULL);
  tap(!(bits & 1), "child_gets_fresh_private_loop", NULL);
  tap(!(bits & 2), "child_starts_in_sync_context", NULL);
  tap(!(bits & 4), "child_timer_call_works", NULL);
  tap(!(bits & 8), "child_threadpool_call_works", NULL);

  void *loop_after = NULL;
  int rc = sync_call(&probe_op, NULL, &loop_after);
  tap(rc == -1 && loop_after == parent_loop, "parent_keeps_its_loop_and_handles", NULL);
  tap(sync_call(&timer_op, &timer, NULL) == 0, "parent_timer_call_works", NULL);
  w.result = 0;
  tap(sync_call(&work_op, &w, NULL) == 0 && w.result == 42, "parent_threadpool_call_works",
      NULL);
  check_inherited_futures();
  check_inherited_home();
  check_fork_inside_callbacks();
  printf("1..%d\n", test_no);
  sa_thread_cleanup();
  return failures ? 1 : 0;
}
