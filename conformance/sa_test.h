/*
 * Helpers shared by the conformance tests. They use only the public header,
 * so the suite runs against any implementation of it.
 */
#ifndef SA_TEST_H
#define SA_TEST_H

#include <smartasync.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

/* The three ways an op can complete: bugs hide in one of them. */
typedef enum {
  SA_TEST_INLINE,    /* inside its start function */
  SA_TEST_NEXT_TICK, /* on the next loop iteration (an idle handle) */
  SA_TEST_LATER      /* later, from a timer */
} sa_test_when;

extern const sa_test_when sa_test_whens[3]; /* all three, in that order */
const char *sa_test_when_name(sa_test_when when);

/* Argument of value_op: what to complete with, and what was observed. */
struct value_req {
  sa_test_when when;
  unsigned delay_ms;   /* SA_TEST_LATER: timer delay (default 2) */
  int status;
  void *value;
  bool complete_twice; /* complete a second time right after the first */
  /* observed */
  int starts;
  int completions;
  uv_loop_t *start_loop;       /* the loop start received */
  uv_loop_t *loop_at_start;    /* sa_current_loop() inside start */
  uv_loop_t *loop_at_complete; /* sa_current_loop() when completing */
  pthread_t start_thread;
  pthread_t complete_thread;
  int complete_rc;
  int second_complete_rc;
  int cancels;
  void *pending; /* internal: the call in flight, for the cancel hook */
};

/* Completes with req->status and req->value, as req->when says.
 * Its cancel hook completes a pending call with SA_ECANCELED. */
extern const sa_op_t value_op;
/* The same op without a cancel hook. */
extern const sa_op_t value_op_no_cancel;

/* Number of value_op completions in this process. */
extern int value_op_completions;

/* value_op's handles not yet closed: each is freed by its close callback,
 * so a dispatcher that closes them without running it leaves them here. */
extern atomic_int value_op_handles;

/* Run fn(loop, data) from a timer callback of a fresh loop run with
 * sa_run(UV_RUN_DEFAULT), run the loop until it has nothing left, and close
 * it with sa_loop_close (asserted to succeed). */
typedef void (*sa_test_in_loop_fn)(uv_loop_t *loop, void *data);
void sa_test_in_loop(sa_test_in_loop_fn fn, void *data);

/* A continuation that records what it got. */
struct cont_rec {
  int calls;
  int status;
  void *value;
  pthread_t thread;
  uv_loop_t *loop; /* sa_current_loop() inside the continuation */
  bool release;    /* release the future from inside the continuation */
};
void record_cont(sa_future_t future, int status, void *value, void *data);

/* Open file descriptors of this process, libuv's process-wide ones included. */
int sa_test_count_fds(void);

/* A field of /proc/self/status given in kB ("VmData", "VmSize"). */
long sa_test_status_kib(const char *field);

#endif
