/*
 * blocking.c - blocking functions [SA-BLK-*]: called in place from plain
 * code, run on the libuv threadpool from a loop callback, as an op of
 * their own.
 */
#include "internal.h"

#include <stdlib.h>

/* An async blocking call: the work request and fn's result, freed when the
 * work is done (or by sa_call_blocking if it was never queued). */
struct blocking_job {
  uv_work_t work;
  sa_call_t *call;
  sa_blocking_fn fn;
  void *arg;
  int status;
  void *value;
  bool queued;
};

static int blocking_status(int status) { return status > 0 ? SA_EINVAL : status; }

static void blocking_run(uv_work_t *work) { /* on a threadpool thread */
  struct blocking_job *job = work->data;
  job->value = NULL;
  job->status = blocking_status(job->fn(job->arg, &job->value));
}

static void blocking_done(uv_work_t *work, int status) { /* on the loop thread */
  struct blocking_job *job = work->data;
  sa_call_t *call = job->call;
  bool cancelled = status == UV_ECANCELED;
  int result = cancelled ? SA_ECANCELED : job->status;
  void *value = cancelled ? NULL : job->value;
  free(job);
  sa_complete(call, result, value);
}

static void blocking_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  struct blocking_job *job = arg;
  job->call = call;
  job->work.data = job;
  int err = uv_queue_work(loop, &job->work, blocking_run, blocking_done);
  job->queued = err == 0;
  if (err)
    sa_complete(call, err, NULL);
}

/* Only reached while the call is pending, so the job is alive. */
static void blocking_cancel(sa_call_t *call, uv_loop_t *loop, void *arg) {
  struct blocking_job *job = arg;
  (void)call;
  (void)loop;
  uv_cancel((uv_req_t *)&job->work); /* fails harmlessly once fn started */
}

static const sa_op_t blocking_op = {blocking_start, blocking_cancel};

int sa_call_blocking(sa_blocking_fn fn, void *arg, sa_mode_t mode, void **value,
                     sa_future_t *future) {
  if (!fn || sa__bad_mode(mode, future))
    return SA_EINVAL;
  if (future)
    future->id = 0;
  if (sa__runs_sync(&sa__self, mode)) {
    void *v = NULL;
    int status = blocking_status(fn(arg, &v));
    if (value)
      *value = v;
    return status;
  }
  struct blocking_job *job = malloc(sizeof *job);
  if (!job)
    return SA_ENOMEM;
  job->fn = fn;
  job->arg = arg;
  job->queued = false;
  int rc = sa_dispatch(&blocking_op, job, mode, value, future);
  /* The work cannot finish before this thread returns to its loop. */
  if (!job->queued)
    free(job); /* never started, or failed to queue: nothing refers to it */
  return rc;
}
