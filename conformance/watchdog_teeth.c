/* The watchdog's own check (check-watchdog-teeth.sh): one test that hangs,
 * as a broken implementation can make any test hang, and one beside it. */
#include "sa_test.h"

#include <criterion/criterion.h>
#include <unistd.h>

Test(SA_TEETH_1, hangs_forever) {
  for (;;)
    pause();
}

Test(SA_TEETH_1, finishes) { cr_assert_null(sa_current_loop()); }
