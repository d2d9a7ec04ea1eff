/*
 * deadline.c - deadlines [SA-DL-*]: a timer on the call's loop that times
 * the call out, sa_dispatch_until, and the time-out that a wait from
 * another thread asks of the call's loop when it gives up [SA-DL-3].
 */
#include "internal.h"

#include <stdlib.h>

/* A call's deadline: a timer on the call's loop, freed when closed. */
struct sa_deadline {
  uv_timer_t timer; /* first: the close callback frees the struct */
  struct sa_future_rec *rec;
  uint64_t at; /* uv_hrtime() */
};

static void free_handle(uv_handle_t *handle) { free(handle); }

void sa__deadline_disarm(struct sa_future_rec *r) {
  struct sa_deadline *d = r->deadline;
  r->deadline = NULL;
  uv_close((uv_handle_t *)&d->timer, free_handle);
}

/* Time the call out: its result is SA_ETIMEDOUT. An op with a cancel hook
 * is asked to stop, and the result is delivered when it has completed, so
 * that nothing of the op's outlives the answer. An op without one cannot
 * be stopped: the answer goes out now and the op keeps its call until it
 * completes it; that completion is dropped [SA-DL-2]. */
static void time_out(struct sa_future_rec *r) {
  if (r->call.flags & (CALL_COMPLETED | CALL_TIMED_OUT))
    return;
  if (r->deadline)
    sa__deadline_disarm(r);
  r->call.flags |= CALL_TIMED_OUT;
  sa__call_settle(&r->call, SA_ETIMEDOUT, NULL);
  if (r->call.op->cancel) {
    r->call.op->cancel(&r->call, sa__call_ctx(&r->call)->loop, r->call.arg);
    return;
  }
  r->call.flags |= CALL_HELD;
  sa__deliver_held(r);
}

static int deadline_start(struct sa_deadline *d);

static void on_deadline(uv_timer_t *timer) {
  struct sa_deadline *d = (struct sa_deadline *)timer;
  if (uv_hrtime() < d->at) { /* loop time is coarse: never expire early */
    if (deadline_start(d) == 0)
      return;
  }
  struct sa_future_rec *r = d->rec;
  struct sa_ctx *ctx = sa__call_ctx(&r->call);
  struct sa_thread *t = &sa__self;
  bool pushed = sa__scope_for_callbacks(t, ctx);
  time_out(r);
  if (pushed)
    sa__scope_pop(t);
}

static int deadline_start(struct sa_deadline *d) {
  uint64_t now = uv_hrtime();
  /* Whole milliseconds, rounded up, plus one for the loop's coarse clock. */
  uint64_t ms = d->at > now ? (d->at - now + 999999) / 1000000 + 1 : 0;
  uv_update_time(d->timer.loop);
  return uv_timer_start(&d->timer, on_deadline, ms, 0);
}

/* Give pending record `r` a deadline (an earlier one stands). On its loop's
 * thread. */
int sa__deadline_arm(struct sa_future_rec *r, uint64_t at) {
  struct sa_deadline *d = r->deadline;
  if (d && d->at <= at)
    return 0;
  if (!d) {
    if (!(d = malloc(sizeof *d)))
      return SA_ENOMEM;
    int err = uv_timer_init(sa__call_ctx(&r->call)->loop, &d->timer);
    if (err) {
      free(d);
      return err;
    }
    d->rec = r;
    r->deadline = d;
  }
  d->at = at;
  return deadline_start(d);
}

/* sa__run_async with a deadline (not SA_NO_DEADLINE). */
int sa__run_async_until(struct sa_thread *t, struct sa_ctx *ctx, const sa_op_t *op, void *arg,
                        uint64_t deadline, sa_future_t *future) {
  /* Allocated first: past op->start, nothing may fail. */
  struct sa_deadline *d = malloc(sizeof *d);
  if (!d)
    return SA_ENOMEM;
  uv_timer_init(ctx->loop, &d->timer); /* cannot fail */
  int rc = sa__run_async(t, ctx, op, arg, future);
  uint64_t w;
  struct sa_future_rec *r = rc == SA_PENDING ? sa__lookup(*future, &w) : NULL;
  if (r && !(r->call.flags & CALL_COMPLETED)) {
    d->rec = r;
    d->at = deadline;
    r->deadline = d;
    deadline_start(d);
  } else {
    uv_close((uv_handle_t *)&d->timer, free_handle);
  }
  return rc;
}

uint64_t sa_deadline_in(uint64_t timeout_ms) {
  uint64_t now = uv_hrtime();
  if (timeout_ms >= (SA_NO_DEADLINE - now) / 1000000)
    return SA_NO_DEADLINE;
  return now + timeout_ms * 1000000;
}

int sa_dispatch_until(const sa_op_t *op, void *arg, sa_mode_t mode, uint64_t deadline,
                      void **value, sa_future_t *future) {
  if (deadline == SA_NO_DEADLINE)
    return sa_dispatch(op, arg, mode, value, future);
  if (!op || !op->start || sa__bad_mode(mode, future))
    return SA_EINVAL;
  return sa__dispatch_record(op, arg, mode, deadline, value, future);
}

/* A message: time out the call `target` [SA-DL-3]. */
static void handle_time_out(struct sa_thread *t, struct sa_ctx *ctx, struct sa_msg *m) {
  struct sa_future_rec *r = sa__local_call(t, ctx, m->target);
  if (r)
    time_out(r);
  free(m);
}

/* A wait from a thread that does not run `r`'s loop gave up: the loop's
 * thread times the call out. */
int sa__request_time_out(struct sa_future_rec *r, sa_future_t future) {
  return sa__request(r, future, handle_time_out);
}
