/*
 * home.c - home loops [SA-HOME-*]: a loop on a thread of its own, started
 * and stopped by the library, that runs calls from any thread one at a
 * time. A caller's side is an async call on the caller's loop; the call and
 * its result travel between the two loops as messages (message.c).
 */
#include "internal.h"

#include <stdlib.h>

/* A caller's call on a home loop. The caller's side is an async call of
 * home_op (a record on the caller's loop); its start function posts this
 * job to the home loop, which runs the real op there as an async call of
 * its own and posts the result back. Ownership follows the message: the
 * home loop until it replies, then the caller's loop, which frees it. */
struct home_job {
  struct sa_msg msg; /* the call, then its result; target: the caller's call */
  const sa_op_t *op;
  void *arg;
  struct sa_ctx *home_ctx; /* fixed at creation: read by the caller's cancel hook */
  uint64_t home_ctx_id;
  struct sa_ctx *reply_ctx;
  uint64_t reply_ctx_id;
  int status; /* the result */
  void *value;
  sa_future_t inner; /* the call on the home loop, while in flight */
  struct home_job *prev, *next; /* in flight on the home loop */
};

struct sa_home {
  pthread_t thread;
  uv_loop_t loop;
  struct sa_ctx *ctx; /* set before sa_home_start returns */
  uint64_t ctx_id;
  bool stopping; /* under ctx->inbox_mutex */
  struct home_job *inflight;
  /* start-up hand-shake */
  pthread_mutex_t mutex;
  pthread_cond_t cond;
  bool started;
  int start_err;
};

/* Results of home-loop calls are awaited on `ctx`: keep its loop alive. */
static void remote_add(struct sa_ctx *ctx) {
  if (ctx->remote++ == 0)
    uv_ref((uv_handle_t *)&ctx->wakeup);
}

static void remote_done(struct sa_ctx *ctx) {
  if (--ctx->remote == 0)
    uv_unref((uv_handle_t *)&ctx->wakeup);
}

bool sa__home_stopping(struct sa_ctx *ctx) {
  pthread_mutex_lock(&ctx->inbox_mutex);
  bool stopping = ctx->home->stopping;
  pthread_mutex_unlock(&ctx->inbox_mutex);
  return stopping;
}

/* A message on the caller's loop: a home-loop call's result for the
 * caller's `target`. */
static void handle_result(struct sa_thread *t, struct sa_ctx *ctx, struct sa_msg *m) {
  struct home_job *job = (struct home_job *)m;
  struct sa_future_rec *r;
  remote_done(ctx);
  if ((r = sa__local_call(t, ctx, m->target)) != NULL)
    sa_complete(&r->call, job->status, job->value);
  free(job);
}

/* On the home thread: send the result back. The job is the caller's now. */
static void home_reply(struct home_job *job, int status, void *value) {
  job->status = status;
  job->value = value;
  job->msg.handle = handle_result;
  job->msg.drop = sa__msg_free;
  if (sa__post(job->reply_ctx, job->reply_ctx_id, &job->msg) != 0)
    free(job); /* the caller's loop is gone, and its call with it */
}

static void home_unlink(struct sa_home *h, struct home_job *job) {
  if (job->prev)
    job->prev->next = job->next;
  else
    h->inflight = job->next;
  if (job->next)
    job->next->prev = job->prev;
}

static void home_call_done(sa_future_t inner, int status, void *value, void *data) {
  struct home_job *job = data;
  home_unlink(job->home_ctx->home, job);
  sa_future_release(inner);
  home_reply(job, status, value);
}

/* On the home thread, in async context on the home loop. */
static void home_call_start(struct sa_thread *t, struct sa_ctx *ctx, struct home_job *job) {
  struct sa_home *h = ctx->home;
  int rc = sa__run_async(t, ctx, job->op, job->arg, &job->inner);
  if (rc == SA_PENDING && (rc = sa_future_then(job->inner, home_call_done, job)) != 0)
    sa_future_release(job->inner);
  if (rc != 0) {
    home_reply(job, rc, NULL);
    return;
  }
  job->prev = NULL;
  job->next = h->inflight;
  if (h->inflight)
    h->inflight->prev = job;
  h->inflight = job;
}

static void home_call_cancel(struct sa_ctx *ctx, sa_future_t caller) {
  for (struct home_job *job = ctx->home->inflight; job; job = job->next) {
    if (job->msg.target.id == caller.id) {
      sa_future_cancel(job->inner);
      return;
    }
  }
}

/* A message on the home loop: run a call for the caller's `target`. */
static void handle_home_call(struct sa_thread *t, struct sa_ctx *ctx, struct sa_msg *m) {
  home_call_start(t, ctx, (struct home_job *)m);
}

/* A call queued on a home loop that is going away [SA-HOME-4]. */
static void drop_home_call(struct sa_msg *m) {
  home_reply((struct home_job *)m, SA_ECANCELED, NULL);
}

/* A message on the home loop: cancel the home-loop side of the caller's
 * `target`. */
static void handle_home_cancel(struct sa_thread *t, struct sa_ctx *ctx, struct sa_msg *m) {
  (void)t;
  home_call_cancel(ctx, m->target);
  free(m);
}

/* sa_home_stop was called: home_main winds the loop down. */
void sa__home_begin_stop(struct sa_ctx *ctx) { uv_stop(ctx->loop); }

/* The caller's side: post the job, or settle at once if the home is gone. */
struct home_request {
  struct sa_home *home;
  const sa_op_t *op;
  void *arg;
};

static void home_op_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  const struct home_request *req = arg;
  struct sa_future_rec *r = (struct sa_future_rec *)call;
  struct sa_ctx *ctx = sa__call_ctx(call);
  (void)loop;
  struct home_job *job = malloc(sizeof *job);
  if (!job) {
    sa_complete(call, SA_ENOMEM, NULL);
    return;
  }
  job->msg.handle = handle_home_call;
  job->msg.drop = drop_home_call;
  job->msg.target = sa__handle_of(atomic_load_explicit(&r->word, memory_order_relaxed));
  job->op = req->op;
  job->arg = req->arg;
  job->home_ctx = req->home->ctx;
  job->home_ctx_id = req->home->ctx_id;
  job->reply_ctx = ctx;
  job->reply_ctx_id = atomic_load_explicit(&r->ctx_id, memory_order_relaxed);
  call->arg = job; /* what the cancel hook gets */
  if (sa__post(job->home_ctx, job->home_ctx_id, &job->msg) != 0) {
    free(job);
    sa_complete(call, SA_ECANCELED, NULL); /* stopped [SA-HOME-4] */
    return;
  }
  remote_add(ctx);
}

/* Only while the caller's call is pending, so the job is alive; it reads
 * only fields fixed before the job was posted. */
static void home_op_cancel(sa_call_t *call, uv_loop_t *loop, void *arg) {
  const struct home_job *job = arg;
  (void)call;
  (void)loop;
  sa__post_request(job->home_ctx, job->home_ctx_id, handle_home_cancel, job->msg.target);
}

static const sa_op_t home_op = {home_op_start, home_op_cancel};

static void home_started(struct sa_home *h, int err) {
  pthread_mutex_lock(&h->mutex);
  h->started = true;
  h->start_err = err;
  pthread_cond_signal(&h->cond);
  pthread_mutex_unlock(&h->mutex);
}

static void *home_main(void *arg) {
  struct sa_home *h = arg;
  struct sa_thread *t = &sa__self;
  int err = uv_loop_init(&h->loop);
  if (err) {
    home_started(h, err);
    return NULL;
  }
  if ((err = sa_enter(&h->loop)) == 0) {
    struct sa_ctx *ctx = sa__top_ctx(t);
    if ((err = sa__wakeup_init(ctx)) == 0) {
      ctx->home = h;
      uv_ref((uv_handle_t *)&ctx->wakeup); /* the loop runs until stopped */
      h->ctx = ctx;
      h->ctx_id = atomic_load(&ctx->id);
    }
  }
  home_started(h, err);
  if (err) {
    if (t->depth)
      sa_leave(&h->loop);
    sa_loop_close(&h->loop);
    return NULL;
  }
  while (!sa__home_stopping(h->ctx)) /* an op may have stopped the loop */
    uv_run(&h->loop, UV_RUN_DEFAULT);
  sa_leave(&h->loop);
  /* Stopping [SA-HOME-4]: calls in flight are cancelled and waited for, or
   * answered SA_ECANCELED if their op has no hook, each through its
   * continuation (home_call_done); calls that arrive meanwhile, or are still
   * queued, get SA_ECANCELED. */
  sa__wind_down(h->ctx);
  sa__ctx_unregister(h->ctx);
  sa__ctx_to_spares(h->ctx);
  sa_thread_cleanup();
  return NULL;
}

int sa_home_start(sa_home_t **home) {
  if (!home)
    return SA_EINVAL;
  *home = NULL;
  struct sa_home *h = calloc(1, sizeof *h);
  if (!h)
    return SA_ENOMEM;
  pthread_mutex_init(&h->mutex, NULL);
  pthread_cond_init(&h->cond, NULL);
  int err = -pthread_create(&h->thread, NULL, home_main, h);
  if (err == 0) {
    pthread_mutex_lock(&h->mutex);
    while (!h->started)
      pthread_cond_wait(&h->cond, &h->mutex);
    pthread_mutex_unlock(&h->mutex);
    if ((err = h->start_err) != 0)
      pthread_join(h->thread, NULL);
  }
  if (err) {
    pthread_cond_destroy(&h->cond);
    pthread_mutex_destroy(&h->mutex);
    free(h);
    return err;
  }
  *home = h;
  return 0;
}

int sa_home_call(sa_home_t *home, const sa_op_t *op, void *arg, sa_mode_t mode,
                 void **value, sa_future_t *future) {
  if (!home || !op || !op->start || sa__bad_mode(mode, future))
    return SA_EINVAL;
  if (sa__inherited(home->ctx_id))
    return SA_EPERM; /* no home thread in a fork child [SA-THR-3] */
  /* The home thread blocking on its own loop would never be answered. */
  if (sa__runs_sync(&sa__self, mode) && pthread_equal(pthread_self(), home->thread)) {
    if (future)
      future->id = 0;
    return SA_EDEADLK;
  }
  struct home_request req = {home, op, arg};
  return sa__dispatch_record(&home_op, &req, mode, SA_NO_DEADLINE, value, future);
}

int sa_home_stop(sa_home_t *home) {
  if (!home)
    return SA_EINVAL;
  if (sa__inherited(home->ctx_id))
    return SA_EPERM; /* no home thread in a fork child [SA-THR-3] */
  if (pthread_equal(pthread_self(), home->thread))
    return SA_EDEADLK;
  struct sa_ctx *ctx = home->ctx;
  pthread_mutex_lock(&ctx->inbox_mutex);
  home->stopping = true;
  uv_async_send(&ctx->wakeup);
  pthread_mutex_unlock(&ctx->inbox_mutex);
  pthread_join(home->thread, NULL);
  pthread_cond_destroy(&home->cond);
  pthread_mutex_destroy(&home->mutex);
  free(home);
  return 0;
}
