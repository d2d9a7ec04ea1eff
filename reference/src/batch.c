/*
 * batch.c - batches [SA-BAT-*]: an op that starts its items through the
 * public API and waits for them.
 */
#include "internal.h"

#include <stdlib.h>

/* A batch is itself an op: its start function starts every item as an async
 * call on the loop it runs on, so in sync mode the items overlap on the
 * private loop that the sync call drives. */
struct batch_slot {
  struct batch *batch;
  sa_future_t future; /* null once the item's result is in, or dropped */
};

struct batch {
  sa_call_t *call;
  sa_batch_item_t *items;
  size_t n;
  size_t left; /* items still running */
  sa_batch_kind_t kind;
  sa_batch_item_t *decider; /* the batch's value */
  unsigned busy;            /* inside a loop over the slots, which frees it */
  bool finished;
  struct batch_slot slots[];
};

struct batch_request {
  sa_batch_item_t *items;
  size_t n;
  sa_batch_kind_t kind;
};

static void batch_finish(struct batch *b, int status) {
  b->finished = true;
  sa_complete(b->call, status, b->decider);
  if (!b->busy)
    free(b);
}

/* Item `i` has its result. */
static void batch_settle(struct batch *b, size_t i, int status, void *value) {
  sa_batch_item_t *item = &b->items[i];
  item->status = status;
  item->value = value;
  if (b->kind == SA_BATCH_ALL) {
    if (status < 0 && (!b->decider || item < b->decider))
      b->decider = item; /* the first error in the items' order */
    if (--b->left == 0)
      batch_finish(b, b->decider ? b->decider->status : 0);
    return;
  }
  if (b->decider) { /* a loser has stopped: its result is dropped */
    item->status = SA_ECANCELED;
    item->value = NULL;
    if (--b->left == 0)
      batch_finish(b, b->decider->status);
    return;
  }
  /* The first to finish wins. The others are asked to stop, and the batch
   * completes once they have, so that none of them outlives the answer; one
   * that cannot be stopped (no cancel hook) is let go at once. */
  b->decider = item;
  b->left--;
  b->busy++;
  for (size_t j = 0; j < b->n; j++) {
    sa_future_t f = b->slots[j].future;
    if (f.id == 0)
      continue;
    b->items[j].status = SA_ECANCELED;
    if (sa_future_cancel(f) == SA_ENOTSUP && b->slots[j].future.id == f.id) {
      b->slots[j].future.id = 0;
      sa_future_release(f);
      b->left--;
    }
  }
  b->busy--;
  if (b->left == 0 && !b->finished)
    batch_finish(b, status);
  else if (b->finished && !b->busy)
    free(b);
}

static void batch_continuation(sa_future_t future, int status, void *value, void *data) {
  struct batch_slot *slot = data;
  if (slot->future.id != future.id)
    return; /* a loser delivering while the winner cancels it */
  slot->future.id = 0;
  sa_future_release(future);
  batch_settle(slot->batch, (size_t)(slot - slot->batch->slots), status, value);
}

static void batch_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  const struct batch_request *req = arg;
  (void)loop;
  if (req->n == 0) {
    sa_complete(call, 0, NULL);
    return;
  }
  struct batch *b = malloc(sizeof *b + req->n * sizeof b->slots[0]);
  if (!b) {
    sa_complete(call, SA_ENOMEM, NULL);
    return;
  }
  *b = (struct batch){.call = call, .items = req->items, .n = req->n, .left = req->n,
                      .kind = req->kind};
  call->arg = b; /* what the cancel hook gets */
  for (size_t i = 0; i < req->n; i++) {
    b->slots[i] = (struct batch_slot){b, SA_FUTURE_NULL};
    req->items[i].status = SA_PENDING;
    req->items[i].value = NULL;
  }
  /* Start them all. No continuation runs before this function returns
   * [SA-ASYNC-3], so `b` stays whole meanwhile. */
  for (size_t i = 0; i < req->n; i++) {
    sa_batch_item_t *item = &req->items[i];
    sa_future_t *f = &b->slots[i].future;
    int rc = sa_dispatch(item->op, item->arg, SA_MODE_ASYNC, NULL, f);
    if (rc == SA_PENDING && (rc = sa_future_then(*f, batch_continuation, &b->slots[i])) != 0)
      sa_future_release(*f);
    if (rc != 0) {
      f->id = 0;
      item->status = rc;
    }
  }
  /* An item that could not start has finished, with its error. */
  b->busy++;
  for (size_t i = 0; i < req->n && !b->finished; i++)
    if (b->slots[i].future.id == 0 && req->items[i].status != SA_PENDING)
      batch_settle(b, i, req->items[i].status, NULL);
  if (--b->busy == 0 && b->finished)
    free(b);
}

static void batch_cancel(sa_call_t *call, uv_loop_t *loop, void *arg) {
  struct batch *b = arg;
  (void)call;
  (void)loop;
  b->busy++;
  for (size_t i = 0; i < b->n && !b->finished; i++)
    if (b->slots[i].future.id != 0)
      sa_future_cancel(b->slots[i].future);
  if (--b->busy == 0 && b->finished)
    free(b);
}

static const sa_op_t batch_op = {batch_start, batch_cancel};

int sa_batch(sa_batch_item_t *items, size_t n, sa_batch_kind_t kind, sa_mode_t mode,
             void **value, sa_future_t *future) {
  if ((!items && n) || (kind != SA_BATCH_ALL && kind != SA_BATCH_FIRST) ||
      (kind == SA_BATCH_FIRST && n == 0) || n > SIZE_MAX / 2 / sizeof(struct batch_slot))
    return SA_EINVAL;
  for (size_t i = 0; i < n; i++)
    if (!items[i].op || !items[i].op->start)
      return SA_EINVAL;
  struct batch_request req = {items, n, kind};
  return sa_dispatch(&batch_op, &req, mode, value, future);
}
