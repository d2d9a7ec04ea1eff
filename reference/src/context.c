/*
 * context.c - contexts and scopes: the dispatcher's state for each loop,
 * the registry of application loops, and the public calls that put a
 * thread in async context on a loop or close one. The scope stack itself,
 * read on every call, is in internal.h.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

pthread_mutex_t sa__registry_mutex = PTHREAD_MUTEX_INITIALIZER;
static struct sa_ctx *sa_registry; /* under sa__registry_mutex */
/* Contexts of closed loops, for reuse (under sa__registry_mutex). */
static struct sa_ctx *sa_spare_ctxs;
_Atomic uint64_t sa__next_ctx_id = 1;

uv_loop_t *sa_current_loop(void) {
  const struct sa_thread *t = &sa__self;
  return t->depth ? t->scopes[t->depth - 1]->loop : NULL;
}

/* For memory that will hold contexts: once per allocation. */
void sa__ctx_alloc_init(struct sa_ctx *ctx) {
  pthread_mutex_init(&ctx->inbox_mutex, NULL);
  atomic_init(&ctx->id, 0);
  atomic_init(&ctx->running, 0);
}

void sa__ctx_init(struct sa_ctx *ctx, uv_loop_t *loop) {
  memset(&ctx->loop, 0, sizeof *ctx - offsetof(struct sa_ctx, loop));
  ctx->loop = loop;
  atomic_store(&ctx->running, 0);
  atomic_store(&ctx->id, atomic_fetch_add(&sa__next_ctx_id, 1));
}

/* A context for a new use of the same loop, whose handles it keeps: as
 * new otherwise, with a new id, so that what was made under the old one
 * stays refused [SA-THR-2]. */
void sa__ctx_renew(struct sa_ctx *ctx) {
  memset(&ctx->waiting, 0, sizeof *ctx - offsetof(struct sa_ctx, waiting));
  atomic_store(&ctx->running, 0);
  atomic_store(&ctx->id, atomic_fetch_add(&sa__next_ctx_id, 1));
}

/* Under sa__registry_mutex: the link to `loop`'s context in the registry,
 * pointing to NULL if it has none. */
static struct sa_ctx **registry_link(uv_loop_t *loop) {
  struct sa_ctx **link = &sa_registry;
  while (*link && (*link)->loop != loop)
    link = &(*link)->next_registered;
  return link;
}

/* The context of `loop`: a private loop of this thread, or an application
 * loop from the registry (added if `create`). */
static struct sa_ctx *ctx_of(struct sa_thread *t, uv_loop_t *loop, bool create) {
  for (unsigned k = 0; k < SA_MAX_SYNC_DEPTH; k++)
    if (t->priv[k] && &t->priv[k]->loop == loop)
      return &t->priv[k]->ctx;
  pthread_mutex_lock(&sa__registry_mutex);
  struct sa_ctx *ctx = *registry_link(loop);
  if (!ctx && create) {
    if ((ctx = sa_spare_ctxs) != NULL)
      sa_spare_ctxs = ctx->next_registered;
    else if ((ctx = malloc(sizeof *ctx)) != NULL)
      sa__ctx_alloc_init(ctx);
    else
      goto out;
    sa__ctx_init(ctx, loop);
    ctx->next_registered = sa_registry;
    sa_registry = ctx;
  }
out:
  pthread_mutex_unlock(&sa__registry_mutex);
  return ctx;
}

/* Keep a closed application loop's context for reuse [type-stable]. */
void sa__ctx_to_spares(struct sa_ctx *ctx) {
  pthread_mutex_lock(&sa__registry_mutex);
  ctx->next_registered = sa_spare_ctxs;
  sa_spare_ctxs = ctx;
  pthread_mutex_unlock(&sa__registry_mutex);
}

void sa__ctx_unregister(struct sa_ctx *ctx) {
  pthread_mutex_lock(&sa__registry_mutex);
  struct sa_ctx **link = registry_link(ctx->loop);
  if (*link)
    *link = ctx->next_registered;
  pthread_mutex_unlock(&sa__registry_mutex);
}

/* A loop that uv_loop_close() closed has no backend left [SA-LOOP-3]; one
 * initialised again has a new one. */
static bool loop_closed(const uv_loop_t *loop) { return uv_backend_fd(loop) < 0; }

/* A loop of the parent, in a fork child [SA-THR-3]. */
static bool loop_inherited(const uv_loop_t *loop, const struct sa_ctx *ctx) {
  return sa__loop_abandoned(loop) ||
         (ctx && sa__inherited(atomic_load_explicit(&ctx->id, memory_order_relaxed)));
}

int sa_enter(uv_loop_t *loop) {
  struct sa_thread *t = &sa__self;
  if (!loop || loop_closed(loop))
    return SA_EINVAL;
  if (t->depth >= SA_MAX_SCOPES - 1) /* keep a slot for on_drain */
    return SA_ELOOP;
  if (loop_inherited(loop, NULL))
    return SA_EPERM;
  struct sa_ctx *ctx = ctx_of(t, loop, true);
  if (!ctx)
    return SA_ENOMEM;
  if (loop_inherited(loop, ctx))
    return SA_EPERM;
  if (atomic_load_explicit(&ctx->running, memory_order_relaxed) || sa__in_scope(t, ctx))
    return SA_EBUSY;
  return sa__scope_push(t, ctx);
}

int sa_leave(uv_loop_t *loop) {
  struct sa_thread *t = &sa__self;
  if (!loop || !t->depth || t->scopes[t->depth - 1]->loop != loop)
    return SA_EINVAL;
  sa__scope_pop(t);
  return 0;
}

int sa_run(uv_loop_t *loop, uv_run_mode mode) {
  if (mode != UV_RUN_DEFAULT && mode != UV_RUN_ONCE && mode != UV_RUN_NOWAIT)
    return SA_EINVAL;
  int err = sa_enter(loop);
  if (err)
    return err;
  int r = uv_run(loop, mode);
  sa_leave(loop);
  return r;
}

int sa_loop_close(uv_loop_t *loop) {
  struct sa_thread *t = &sa__self;
  if (!loop || loop_closed(loop))
    return SA_EINVAL;
  for (unsigned k = 0; k < SA_MAX_SYNC_DEPTH; k++)
    if (t->priv[k] && &t->priv[k]->loop == loop)
      return SA_EPERM; /* the dispatcher's own: freed at thread exit */
  pthread_mutex_lock(&sa__registry_mutex);
  struct sa_ctx **link = registry_link(loop);
  struct sa_ctx *ctx = *link;
  int refused = 0;
  if (loop_inherited(loop, ctx))
    refused = SA_EPERM; /* closing it would unregister the parent's fds */
  else if (ctx && (atomic_load_explicit(&ctx->running, memory_order_relaxed) ||
                   ctx->npending || ctx->then_head || ctx->deferred_head))
    refused = SA_EBUSY;
  else if (ctx)
    *link = ctx->next_registered;
  pthread_mutex_unlock(&sa__registry_mutex);
  if (refused)
    return refused;
  if (ctx) {
    sa__ctx_retire(ctx); /* no call is pending: the messages left are moot */
    if (ctx->drain_ready)
      uv_close((uv_handle_t *)&ctx->drain, NULL);
    if (ctx->wakeup_ready)
      uv_close((uv_handle_t *)&ctx->wakeup, NULL);
    if (ctx->drain_ready || ctx->wakeup_ready)
      uv_run(loop, UV_RUN_NOWAIT); /* finishes the closes */
    sa__ctx_to_spares(ctx);
  }
  return uv_loop_close(loop);
}
