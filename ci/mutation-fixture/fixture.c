/* The mutator's test input (ci/mutation-test.py): every operator at least
 * once; the expected mutants are in expected.txt. */
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#include "fixture.h"

#define SA_EINVAL (-22)
#define LIMIT 8
#define TWICE(x) ((x) + (x))

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_int hits;
static int total;

int clamp(int n) {
  if (n > LIMIT)
    return LIMIT;
  return n < 0 ? 0 : TWICE(n);
}

void count(int n) {
  pthread_mutex_lock(&lock);
  total += n;
  pthread_mutex_unlock(&lock);
  atomic_fetch_add_explicit(&hits, 1, memory_order_release);
}

bool busy(void) {
  return atomic_load(&hits) != 0 && !is_zero(total);
}

unsigned mask(unsigned a, unsigned b) {
  unsigned x = (a & b) << 1;
  bool odd = false;
  while (x > 2)
    x--;
  for (unsigned i = 0; i < a; i++)
    x ^= 0x10u;
  do
    odd = !odd;
  while (--b);
  return odd ? x : 0;
}

ptrdiff_t distance(const char *p, const char *q) {
  return q - p;
}
