#include "sa_test.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int value_op_completions;
atomic_int value_op_handles;
const sa_test_when sa_test_whens[3] = {SA_TEST_INLINE, SA_TEST_NEXT_TICK,
                                       SA_TEST_LATER};

const char *sa_test_when_name(sa_test_when when) {
  switch (when) {
  case SA_TEST_INLINE: return "inline";
  case SA_TEST_NEXT_TICK: return "next-tick";
  case SA_TEST_LATER: return "later";
  }
  return "?";
}

/* One pending value_op call: its handle and what to complete. */
struct value_call {
  union {
    uv_handle_t handle;
    uv_idle_t idle;
    uv_timer_t timer;
  } h;
  sa_call_t *call;
  struct value_req *req;
};

static void free_value_call(uv_handle_t *handle) {
  free(handle->data);
  atomic_fetch_sub(&value_op_handles, 1);
}

static void finish(sa_call_t *call, struct value_req *req, int status,
                   void *value) {
  req->loop_at_complete = sa_current_loop();
  req->complete_thread = pthread_self();
  req->completions++;
  value_op_completions++;
  req->complete_rc = sa_complete(call, status, value);
  if (req->complete_twice)
    req->second_complete_rc = sa_complete(call, 0, NULL);
}

static void finish_pending(struct value_call *vc, int status, void *value) {
  struct value_req *req = vc->req;
  uv_close(&vc->h.handle, free_value_call);
  req->pending = NULL;
  finish(vc->call, req, status, value);
}

static void on_idle(uv_idle_t *idle) {
  struct value_call *vc = idle->data;
  uv_idle_stop(idle);
  finish_pending(vc, vc->req->status, vc->req->value);
}

static void on_timer(uv_timer_t *timer) {
  struct value_call *vc = timer->data;
  finish_pending(vc, vc->req->status, vc->req->value);
}

static void value_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  struct value_req *req = arg;
  req->starts++;
  req->start_loop = loop;
  req->loop_at_start = sa_current_loop();
  req->start_thread = pthread_self();
  if (req->when == SA_TEST_INLINE) {
    finish(call, req, req->status, req->value);
    return;
  }
  struct value_call *vc = calloc(1, sizeof *vc);
  cr_assert_not_null(vc);
  atomic_fetch_add(&value_op_handles, 1);
  vc->call = call;
  vc->req = req;
  vc->h.handle.data = vc;
  req->pending = vc;
  if (req->when == SA_TEST_NEXT_TICK) {
    cr_assert_eq(uv_idle_init(loop, &vc->h.idle), 0);
    cr_assert_eq(uv_idle_start(&vc->h.idle, on_idle), 0);
  } else {
    cr_assert_eq(uv_timer_init(loop, &vc->h.timer), 0);
    cr_assert_eq(uv_timer_start(&vc->h.timer, on_timer,
                                req->delay_ms ? req->delay_ms : 2, 0), 0);
  }
}

static void value_cancel(sa_call_t *call, uv_loop_t *loop, void *arg) {
  struct value_req *req = arg;
  (void)call;
  (void)loop;
  req->cancels++;
  if (req->pending)
    finish_pending(req->pending, SA_ECANCELED, NULL);
}

const sa_op_t value_op = {value_start, value_cancel};
const sa_op_t value_op_no_cancel = {value_start, NULL};

void record_cont(sa_future_t future, int status, void *value, void *data) {
  struct cont_rec *rec = data;
  rec->calls++;
  rec->status = status;
  rec->value = value;
  rec->thread = pthread_self();
  rec->loop = sa_current_loop();
  if (rec->release)
    cr_assert_eq(sa_future_release(future), 0);
}

struct in_loop {
  sa_test_in_loop_fn fn;
  void *data;
  uv_timer_t timer;
};

static void in_loop_cb(uv_timer_t *timer) {
  struct in_loop *il = timer->data;
  uv_close((uv_handle_t *)timer, NULL);
  il->fn(timer->loop, il->data);
}

void sa_test_in_loop(sa_test_in_loop_fn fn, void *data) {
  uv_loop_t loop;
  struct in_loop il = {.fn = fn, .data = data};
  cr_assert_eq(uv_loop_init(&loop), 0);
  cr_assert_eq(uv_timer_init(&loop, &il.timer), 0);
  il.timer.data = &il;
  cr_assert_eq(uv_timer_start(&il.timer, in_loop_cb, 0, 0), 0);
  cr_assert_geq(sa_run(&loop, UV_RUN_DEFAULT), 0);
  int rc = sa_loop_close(&loop);
  cr_assert_eq(rc, 0, "sa_loop_close: %s", sa_strerror(rc));
}

long sa_test_status_kib(const char *field) {
  FILE *f = fopen("/proc/self/status", "r");
  cr_assert_not_null(f);
  char line[256];
  size_t len = strlen(field);
  long kib = -1;
  while (kib < 0 && fgets(line, sizeof line, f))
    if (strncmp(line, field, len) != 0 || line[len] != ':' ||
        sscanf(line + len + 1, "%ld kB", &kib) != 1)
      kib = -1;
  fclose(f);
  cr_assert_geq(kib, 0, "no %s in /proc/self/status", field);
  return kib;
}

int sa_test_count_fds(void) {
  /* libuv opens a process-wide signal pipe with the first loop: open it now
   * so that it is in every count. */
  static bool libuv_warm;
  if (!libuv_warm) {
    uv_loop_t loop;
    cr_assert_eq(uv_loop_init(&loop), 0);
    cr_assert_eq(uv_loop_close(&loop), 0);
    libuv_warm = true;
  }
  DIR *dir = opendir("/proc/self/fd");
  cr_assert_not_null(dir);
  int n = 0;
  while (readdir(dir))
    n++;
  closedir(dir);
  return n;
}

/* ---- the hard limit of every test ---------------------------------------- */

/* Criterion 2.4.1's --timeout does not kill a hung test: one hang would block
 * the whole run with no report. So each test process (Criterion runs every
 * test in a process of its own, started as "boxfort-worker") has a watchdog
 * thread that aborts it past SA_TEST_TIMEOUT seconds (30 by default; run.sh
 * raises it under valgrind): the runner reports the test by name, as
 * crashed, and goes on with the others. */
static void *watchdog(void *arg) {
  struct timespec left = {(time_t)(intptr_t)arg, 0};
  while (clock_nanosleep(CLOCK_MONOTONIC, 0, &left, &left) != 0)
    ;
  fprintf(stderr, "watchdog: test still running after %ld s, its limit: aborted\n",
          (long)(intptr_t)arg);
  abort();
}

__attribute__((constructor)) static void watchdog_arm(int argc, char **argv) {
  if (argc < 1 || strcmp(argv[0], "boxfort-worker") != 0)
    return; /* the runner: its workers are watched */
  const char *text = getenv("SA_TEST_TIMEOUT");
  long limit = text ? strtol(text, NULL, 10) : 0;
  sigset_t all, old;
  pthread_t thread;
  sigfillset(&all); /* signals are the test's, not the watchdog's */
  pthread_sigmask(SIG_SETMASK, &all, &old);
  if (pthread_create(&thread, NULL, watchdog, (void *)(intptr_t)(limit > 0 ? limit : 30)) != 0) {
    fprintf(stderr, "watchdog: cannot start: no test runs without its limit\n");
    abort();
  }
  pthread_detach(thread);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
}
