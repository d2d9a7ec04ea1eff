/* Included by fixture.c: mutants of a header under the root are found too. */
#include <stdbool.h>

static inline bool is_zero(int n) {
  return n == 0;
}
