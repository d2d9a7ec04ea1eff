/* SA-THR-3: fork. A standalone program, not a Criterion test: forking inside
 * a Criterion test can hang its runner. Prints TAP lines named like the
 * Criterion tests (SA_THR_3::...) and exits non-zero on any failure.
 *
 * The parent makes its private loop, leaves a handle on it, and forks. The
 * child must get a fresh loop (without the parent's handle) that works for
 * timers, fs and the threadpool. Then the parent's loop must still work,
 * including a threadpool call, whose wake-up goes through the loop's epoll
 * set, which the child shares: a child that closed the inherited loop would
 * have unregistered it, and the parent would hang (the alarm catches it). */
#include <smartasync.h>

#include <stdbool.h>
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

int main(void) {
  void *parent_loop = NULL;
  uv_timer_t timer;
  struct work w = {0};
  alarm(30); /* a hang is a failure, not a stuck CI */
  printf("TAP version 13\n");
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
  printf("1..%d\n", test_no);
  sa_thread_cleanup();
  return failures ? 1 : 0;
}
