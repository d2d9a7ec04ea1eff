/*
 * pool.c - the record pool: type-stable records for async calls, in chunks
 * whose address space is never freed, addressed by handles that carry a
 * generation, and each thread's cache of them, refilled and spilled in bulk
 * under one lock. The cache's fast operations are in internal.h.
 *
 * A chunk whose records are all back in the pool gives its pages back to
 * the system, so that memory taken by a burst of calls returns after it;
 * records are taken from the lowest chunks first, so that high chunks
 * drain. The mapping stays: a stale handle may be looked up at any time,
 * by any thread, and a record must stay readable. What such a reader sees:
 *
 *   - A page given back reads as zeros. A zero word names no record (no
 *     handle is zero below its flags: internal.h), so sa__lookup() misses
 *     it, and so do the re-checks of the word that follow every read of a
 *     record's other fields [future.c: result_of(), still_pending()].
 *   - A reader that had found the record live before its page went reads
 *     zeros from its other fields: no owner, no context. Each place that
 *     follows a context pointer read through a handle that may have gone
 *     stale meanwhile checks it for NULL [future.c, message.c: sa__request()].
 *     One that reads a context of another use of the record follows a
 *     valid pointer (contexts are type-stable) and finds a different id.
 *   - No reader writes to a record unless its word still names the handle
 *     (every write is a compare-exchange against a word that did), so none
 *     writes to a free record, nor to a page given back.
 *   - A revived chunk starts each record's generation at its floor, the
 *     highest its free records had, above every generation handed out for
 *     them: a handle made before does not match again (until the 32-bit
 *     generation wraps, as it can in any record).
 */
#define _DEFAULT_SOURCE /* madvise, MAP_ANONYMOUS */
#include "internal.h"

#include <sys/mman.h>
#include <unistd.h>

pthread_mutex_t sa__pool_mutex = PTHREAD_MUTEX_INITIALIZER;
_Atomic(struct sa_future_rec *) sa__chunks[MAX_CHUNKS];

/* What the pool knows of a chunk (under sa__pool_mutex). */
struct chunk_state {
  struct sa_future_rec *free; /* its records in the pool */
  unsigned nfree;             /* how many: CHUNK_SIZE when all are */
  bool given_back;            /* its pages are the system's: `free` is not kept */
  uint32_t gen_floor;         /* the generation its records start at, revived */
};

/* All under sa__pool_mutex. */
static struct chunk_state sa_chunk_state[MAX_CHUNKS];
static unsigned sa_nchunks;
static unsigned sa_lowest;         /* no chunk below has records in the pool */
static unsigned sa_spare = MAX_CHUNKS; /* a chunk all free but kept, or none */

static size_t chunk_bytes(void) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  return (CHUNK_SIZE * sizeof(struct sa_future_rec) + page - 1) / page * page;
}

static unsigned chunk_of(const struct sa_future_rec *r) {
  return (W_INDEX(atomic_load_explicit(&r->word, memory_order_relaxed)) - 1) >> CHUNK_BITS;
}

/* Make chunk `c`'s records free, at generation `gen`, and all its own. */
static void chunk_fill(unsigned c, uint32_t gen) {
  struct sa_future_rec *chunk = atomic_load_explicit(&sa__chunks[c], memory_order_relaxed);
  uint32_t base = c << CHUNK_BITS;
  for (uint32_t i = 0; i < CHUNK_SIZE; i++) {
    struct sa_future_rec *r = &chunk[i];
    r->next = i + 1 < CHUNK_SIZE ? &chunk[i + 1] : NULL;
    atomic_store_explicit(&r->word,
                          (uint64_t)gen << 32 | (uint64_t)(base + i + 1) << W_INDEX_SHIFT | W_FREE,
                          memory_order_relaxed);
    SA_ATOMIC_VARIABLE(&r->word, sizeof r->word);
    /* Read by other threads through handles that may be stale [sa__request()]. */
    SA_ATOMIC_VARIABLE(&r->call.owner, sizeof r->call.owner);
    SA_ATOMIC_VARIABLE(&r->call.ctx, sizeof r->call.ctx);
    SA_ATOMIC_VARIABLE(&r->ctx_id, sizeof r->ctx_id);
  }
  struct chunk_state *s = &sa_chunk_state[c];
  s->free = chunk;
  s->nfree = CHUNK_SIZE;
  s->given_back = false;
}

/* Add a chunk of free records to the pool, in pages of its own. */
static int pool_grow(void) {
  if (sa_nchunks == MAX_CHUNKS)
    return SA_ENOMEM;
  void *chunk = mmap(NULL, chunk_bytes(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                     -1, 0);
  if (chunk == MAP_FAILED)
    return SA_ENOMEM;
  atomic_store_explicit(&sa__chunks[sa_nchunks], chunk, memory_order_release);
  chunk_fill(sa_nchunks++, 1);
  return 0;
}

/* The lowest chunk with records in the pool, revived if it gave its pages
 * back, or a new one; MAX_CHUNKS if none can be had. */
static unsigned chunk_with_free(void) {
  unsigned c = sa_lowest;
  while (c < sa_nchunks && sa_chunk_state[c].nfree == 0)
    c++;
  sa_lowest = c;
  if (c == sa_nchunks && pool_grow() != 0)
    return MAX_CHUNKS;
  if (sa_chunk_state[c].given_back)
    chunk_fill(c, sa_chunk_state[c].gen_floor);
  if (c == sa_spare)
    sa_spare = MAX_CHUNKS;
  return c;
}

/* Give chunk `c`'s pages back; all its records are in the pool. The
 * system zero-fills them when next touched (Linux), or may keep their
 * contents: to a reader, free records either way. */
static void chunk_give_back(unsigned c) {
  struct sa_future_rec *chunk = atomic_load_explicit(&sa__chunks[c], memory_order_relaxed);
  uint32_t gen_floor = 0;
  for (uint32_t i = 0; i < CHUNK_SIZE; i++) {
    uint32_t gen = (uint32_t)(atomic_load_explicit(&chunk[i].word, memory_order_relaxed) >> 32);
    if (gen > gen_floor)
      gen_floor = gen; /* a free record's generation was never handed out */
  }
  if (madvise(chunk, chunk_bytes(), MADV_DONTNEED) != 0)
    return;
  struct chunk_state *s = &sa_chunk_state[c];
  s->free = NULL;
  s->given_back = true;
  s->gen_floor = gen_floor;
}

/* All of chunk `c`'s records are back. One such chunk is kept, the lowest,
 * so that calls going up and down across a chunk's edge do not give its
 * pages back and take them again each time. */
static void chunk_all_free(unsigned c) {
  if (sa_spare == MAX_CHUNKS) {
    sa_spare = c;
    return;
  }
  chunk_give_back(c > sa_spare ? c : sa_spare);
  if (c < sa_spare)
    sa_spare = c;
}

SA_COLD int sa__cache_refill(struct sa_thread *t) {
  sa__set_exit_hook(t);
  pthread_mutex_lock(&sa__pool_mutex);
  unsigned c;
  while (t->free_count < CACHE_REFILL && (c = chunk_with_free()) != MAX_CHUNKS) {
    struct chunk_state *s = &sa_chunk_state[c];
    while (s->nfree && t->free_count < CACHE_REFILL) {
      struct sa_future_rec *r = s->free;
      s->free = r->next;
      s->nfree--;
      sa__cache_push(t, r);
    }
  }
  pthread_mutex_unlock(&sa__pool_mutex);
  return t->free_count ? 0 : SA_ENOMEM;
}

SA_COLD void sa__cache_spill(struct sa_thread *t, unsigned keep) {
  if (t->free_count <= keep)
    return;
  pthread_mutex_lock(&sa__pool_mutex);
  while (t->free_count > keep) {
    struct sa_future_rec *r = t->free_head;
    t->free_head = r->next;
    t->free_count--;
    unsigned c = chunk_of(r);
    struct chunk_state *s = &sa_chunk_state[c];
    r->next = s->free;
    s->free = r;
    if (c < sa_lowest)
      sa_lowest = c;
    if (++s->nfree == CHUNK_SIZE)
      chunk_all_free(c);
  }
  pthread_mutex_unlock(&sa__pool_mutex);
}
