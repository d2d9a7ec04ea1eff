/*
 * pool.c - the record pool: type-stable records for async calls, in chunks
 * whose address space is never freed, addressed by handles that carry a
 * generation, and each thread's cache of them, refilled and spilled in bulk
 * under one lock. The cache's fast operations are in internal.h.
 *
 * Memory taken by a burst of calls goes back to the system after it:
 *
 *   - A chunk's records are set up as they are first taken, in address
 *     order, so that a chunk touches only the pages its calls need.
 *   - Records are taken from the lowest chunks first, so that high chunks
 *     drain, and a chunk whose records are all back gives its pages back
 *     (madvise).
 *   - Records left in a thread's cache would keep their chunks' pages: when
 *     a burst that spilled the cache is over (the loop it delivered on has
 *     no call pending), the cache trades its records for a few of the
 *     lowest [sa__cache_burst_over()].
 *   - But a burst that repeats the one before it (it took no more than
 *     twice as many records from the pool) gives nothing back: its pages
 *     are the next one's, which would fault them in again.
 *
 * The mapping stays: a stale handle may be looked up at any time, by any
 * thread, and a record must stay readable. What such a reader sees:
 *
 *   - A page given back, or never touched, reads as zeros. A zero word
 *     names no record (no handle is zero below its flags: internal.h), so
 *     sa__lookup() misses it, and so do the re-checks of the word that
 *     follow every read of a record's other fields [future.c: result_of(),
 *     still_pending()].
 *   - A reader that had found the record live before its page went reads
 *     zeros from its other fields: no owner, no context. Each place that
 *     follows a context pointer read through a handle that may have gone
 *     stale meanwhile checks it for NULL [future.c, message.c: sa__request()].
 *     One that reads a context of another use of the record follows a
 *     valid pointer (contexts are type-stable) and finds a different id.
 *   - No reader writes to a record unless its word still names the handle
 *     (every write is a compare-exchange against a word that did), so none
 *     writes to a free record, nor to a page given back.
 *   - A chunk that gave its pages back sets its records up again at its
 *     floor, the highest generation its records had, above every generation
 *     handed out for them: a handle made before does not match again (until
 *     the 32-bit generation wraps, as it can in any record).
 */
#define _DEFAULT_SOURCE /* madvise, MAP_ANONYMOUS */
#include "internal.h"

#include <sys/mman.h>
#include <unistd.h>

pthread_mutex_t sa__pool_mutex = PTHREAD_MUTEX_INITIALIZER;
_Atomic(struct sa_future_rec *) sa__chunks[MAX_CHUNKS];

/* What the pool knows of a chunk (under sa__pool_mutex). Its records from
 * `fresh` on were not taken since its pages were mapped or given back: they
 * are set up when taken, and their pages (but the one a record set up
 * before straddles) were not touched. */
struct chunk_state {
  struct sa_future_rec *free; /* records back in the pool, below `fresh` */
  unsigned nfree;             /* records in the pool: on `free`, and from `fresh` on */
  unsigned fresh;
  uint32_t gen;               /* the generation fresh records start at */
};

/* All under sa__pool_mutex. */
static struct chunk_state sa_chunk_state[MAX_CHUNKS];
static unsigned sa_nchunks;
static unsigned sa_lowest; /* no chunk below has records in the pool */

static size_t chunk_bytes(void) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  return (CHUNK_SIZE * sizeof(struct sa_future_rec) + page - 1) / page * page;
}

static struct sa_future_rec *chunk_records(unsigned c) {
  return atomic_load_explicit(&sa__chunks[c], memory_order_relaxed);
}

static unsigned chunk_of(const struct sa_future_rec *r) {
  return (W_INDEX(atomic_load_explicit(&r->word, memory_order_relaxed)) - 1) >> CHUNK_BITS;
}

/* Add a chunk to the pool, in pages of its own, none touched. */
static int pool_grow(void) {
  if (sa_nchunks == MAX_CHUNKS)
    return SA_ENOMEM;
  void *chunk = mmap(NULL, chunk_bytes(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                     -1, 0);
  if (chunk == MAP_FAILED)
    return SA_ENOMEM;
  /* Chunks go back a chunk at a time: huge pages would keep them whole
   * where the system makes them by default. */
  (void)madvise(chunk, chunk_bytes(), MADV_NOHUGEPAGE);
  atomic_store_explicit(&sa__chunks[sa_nchunks], chunk, memory_order_release);
  sa_chunk_state[sa_nchunks++] = (struct chunk_state){NULL, CHUNK_SIZE, 0, 1};
  return 0;
}

/* The lowest chunk with records in the pool, or a new one; MAX_CHUNKS if
 * none can be had. */
static unsigned chunk_with_free(void) {
  unsigned c = sa_lowest;
  while (c < sa_nchunks && sa_chunk_state[c].nfree == 0)
    c++;
  sa_lowest = c;
  if (c == sa_nchunks && pool_grow() != 0)
    return MAX_CHUNKS;
  return c;
}

/* A free record of chunk `c`, which has one: one given back, else the next
 * fresh one, set up. */
static struct sa_future_rec *chunk_take(unsigned c) {
  struct chunk_state *s = &sa_chunk_state[c];
  struct sa_future_rec *r = s->free;
  s->nfree--;
  if (r) {
    s->free = r->next;
    return r;
  }
  r = &chunk_records(c)[s->fresh];
  uint64_t index = (c << CHUNK_BITS) + s->fresh++;
  /* Read by other threads through handles that may be stale [sa__request()],
   * the word from now on. */
  SA_ATOMIC_VARIABLE(&r->word, sizeof r->word);
  SA_ATOMIC_VARIABLE(&r->call.owner, sizeof r->call.owner);
  SA_ATOMIC_VARIABLE(&r->call.ctx, sizeof r->call.ctx);
  SA_ATOMIC_VARIABLE(&r->ctx_id, sizeof r->ctx_id);
  atomic_store_explicit(&r->word, (uint64_t)s->gen << 32 | (index + 1) << W_INDEX_SHIFT | W_FREE,
                        memory_order_relaxed);
  return r;
}

/* Give back the pages of chunk `c`, all of whose records are in the pool.
 * The system zero-fills them when next touched (Linux), or may keep their
 * contents: to a reader, free records either way. */
static void chunk_give_back(unsigned c) {
  struct sa_future_rec *chunk = chunk_records(c);
  struct chunk_state *s = &sa_chunk_state[c];
  uint32_t gen = s->gen;
  for (unsigned i = 0; i < s->fresh; i++) {
    uint32_t g = (uint32_t)(atomic_load_explicit(&chunk[i].word, memory_order_relaxed) >> 32);
    if (g > gen)
      gen = g; /* a free record's generation was never handed out */
  }
  if (madvise(chunk, chunk_bytes(), MADV_DONTNEED) != 0)
    return;
  *s = (struct chunk_state){NULL, CHUNK_SIZE, 0, gen};
}

/* Fill t's cache up to `want` records, from the lowest chunks. */
static void cache_fill(struct sa_thread *t, unsigned want) {
  unsigned c;
  while (t->free_count < want && (c = chunk_with_free()) != MAX_CHUNKS)
    while (sa_chunk_state[c].nfree && t->free_count < want)
      sa__cache_push(t, chunk_take(c));
}

/* Return the most recent records of t's cache to the pool, all but
 * `keep`. A chunk that has all its records back gives its pages back, if
 * `give_back`; else it stays as it is, for the next burst. */
static void cache_return(struct sa_thread *t, unsigned keep, bool give_back) {
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
    if (++s->nfree == CHUNK_SIZE && give_back)
      chunk_give_back(c);
  }
}

/* Whether t's burst so far took more than twice what the one before took
 * from the pool: one that does not repeats it, and keeps the pages it used
 * for the next rather than give them back and fault them in again. */
static bool burst_outgrew_last(const struct sa_thread *t) {
  return t->burst_refills / 2 > t->last_refills;
}

SA_COLD int sa__cache_refill(struct sa_thread *t) {
  sa__set_exit_hook(t);
  pthread_mutex_lock(&sa__pool_mutex);
  cache_fill(t, CACHE_REFILL);
  pthread_mutex_unlock(&sa__pool_mutex);
  t->burst_refills += t->free_count;
  return t->free_count ? 0 : SA_ENOMEM;
}

SA_COLD void sa__cache_spill(struct sa_thread *t, unsigned keep) {
  if (t->free_count <= keep)
    return;
  pthread_mutex_lock(&sa__pool_mutex);
  cache_return(t, keep, keep == 0 || burst_outgrew_last(t));
  pthread_mutex_unlock(&sa__pool_mutex);
  t->cache_spilled = true;
}

/* All of t's records go back, and every chunk whose records are all back
 * gives its pages back (those kept by bursts that repeated too); a few
 * records are taken again from the lowest chunks, set up afresh if need be:
 * those pages stay, few and low, until the next burst. */
static void cache_tidy(struct sa_thread *t) {
  unsigned keep = t->free_count < CACHE_REFILL ? t->free_count : CACHE_REFILL;
  pthread_mutex_lock(&sa__pool_mutex);
  cache_return(t, 0, false);
  for (unsigned c = 0; c < sa_nchunks; c++)
    if (sa_chunk_state[c].nfree == CHUNK_SIZE && sa_chunk_state[c].fresh)
      chunk_give_back(c);
  cache_fill(t, keep);
  pthread_mutex_unlock(&sa__pool_mutex);
}

/* A burst of calls that spilled t's cache is over. The records it leaves in
 * the cache would keep their chunks' pages: the cache is tidied, unless the
 * burst repeated the one before. */
SA_COLD void sa__cache_burst_over(struct sa_thread *t) {
  if (burst_outgrew_last(t))
    cache_tidy(t);
  t->last_refills = t->burst_refills;
  t->burst_refills = 0;
  t->cache_spilled = false;
}
