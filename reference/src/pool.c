/*
 * pool.c - the record pool: type-stable records for async calls, in chunks
 * that are never freed, addressed by handles that carry a generation, and
 * each thread's cache of them, refilled and spilled in bulk under one lock.
 * The cache's fast operations are in internal.h.
 */
#include "internal.h"

#include <stdlib.h>

pthread_mutex_t sa__pool_mutex = PTHREAD_MUTEX_INITIALIZER;
_Atomic(struct sa_future_rec *) sa__chunks[MAX_CHUNKS];
static unsigned sa_nchunks;                /* under sa__pool_mutex */
static struct sa_future_rec *sa_pool_free; /* under sa__pool_mutex */

/* Under sa__pool_mutex: add a chunk of free records to the pool. */
static int pool_grow(void) {
  if (sa_nchunks == MAX_CHUNKS)
    return SA_ENOMEM;
  struct sa_future_rec *chunk = calloc(CHUNK_SIZE, sizeof *chunk);
  if (!chunk)
    return SA_ENOMEM;
  uint32_t base = sa_nchunks << CHUNK_BITS;
  for (uint32_t i = 0; i < CHUNK_SIZE; i++) {
    struct sa_future_rec *r = &chunk[i];
    r->next = i + 1 < CHUNK_SIZE ? &chunk[i + 1] : sa_pool_free;
    atomic_init(&r->word, W_GEN_ONE | (uint64_t)(base + i + 1) << W_INDEX_SHIFT | W_FREE);
    SA_ATOMIC_VARIABLE(&r->word, sizeof r->word);
    /* Read by other threads through handles that may be stale [sa__request()]. */
    SA_ATOMIC_VARIABLE(&r->call.owner, sizeof r->call.owner);
    SA_ATOMIC_VARIABLE(&r->call.ctx, sizeof r->call.ctx);
    SA_ATOMIC_VARIABLE(&r->ctx_id, sizeof r->ctx_id);
  }
  atomic_store_explicit(&sa__chunks[sa_nchunks], chunk, memory_order_release);
  sa_nchunks++;
  sa_pool_free = chunk;
  return 0;
}

SA_COLD int sa__cache_refill(struct sa_thread *t) {
  int err = 0;
  sa__set_exit_hook(t);
  pthread_mutex_lock(&sa__pool_mutex);
  if (!sa_pool_free)
    err = pool_grow();
  for (unsigned n = 0; n < CACHE_REFILL && sa_pool_free; n++) {
    struct sa_future_rec *r = sa_pool_free;
    sa_pool_free = r->next;
    sa__cache_push(t, r);
  }
  pthread_mutex_unlock(&sa__pool_mutex);
  return t->free_count ? 0 : err;
}

SA_COLD void sa__cache_spill(struct sa_thread *t, unsigned keep) {
  pthread_mutex_lock(&sa__pool_mutex);
  while (t->free_count > keep) {
    struct sa_future_rec *r = t->free_head;
    t->free_head = r->next;
    t->free_count--;
    r->next = sa_pool_free;
    sa_pool_free = r;
  }
  pthread_mutex_unlock(&sa__pool_mutex);
}
