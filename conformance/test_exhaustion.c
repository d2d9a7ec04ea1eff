/* SA-ERR-4: a call for which the dispatcher cannot get memory or a file
 * descriptor ends with an error code, like any result, and the thread's
 * calls work again once the resource is back. Each test runs in a process
 * of its own (Criterion forks), so the limits it sets go with it. */
#include "sa_test.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <unistd.h>
#include <valgrind/valgrind.h>

/* ---- memory --------------------------------------------------------------- */

/* More items than the address space left to the process can hold the
 * dispatcher's bookkeeping for, at a few bytes an item; the items array
 * itself is taken before the limit is set. */
#define ITEMS (4u << 20)
#define ROOM (16u << 20) /* address space left once the limit is set */

static struct rlimit limit_address_space(void) {
  struct rlimit old;
  cr_assert_eq(getrlimit(RLIMIT_AS, &old), 0);
  struct rlimit tight = {(rlim_t)sa_test_status_kib("VmSize") * 1024 + ROOM, old.rlim_max};
  cr_assert_eq(setrlimit(RLIMIT_AS, &tight), 0);
  return old;
}

static sa_batch_item_t *many_items(struct value_req *req) {
  sa_batch_item_t *items = calloc(ITEMS, sizeof *items);
  cr_assert_not_null(items);
  for (size_t i = 0; i < ITEMS; i++)
    items[i] = (sa_batch_item_t){.op = &value_op, .arg = req};
  return items;
}

/* The batch ran (an implementation that needs no memory per item may run
 * it) or failed with SA_ENOMEM; in either case it answered. */
static void check_batch_answer(int status, const char *how) {
  cr_assert(status == 0 || status == SA_ENOMEM,
            "SA-ERR-4: a batch of %u items with %u MiB of address space left, %s, gave %d: "
            "neither its result nor SA_ENOMEM",
            ITEMS, ROOM >> 20, how, status);
}

static void check_calls_work_again(void) {
  struct value_req req = {.when = SA_TEST_NEXT_TICK, .status = -9};
  cr_assert_eq(sa_dispatch(&value_op, &req, SA_MODE_SYNC, NULL, NULL), -9,
               "SA-ERR-4: a call after the memory came back did not work");
  sa_batch_item_t items[2] = {{.op = &value_op, .arg = &req}, {.op = &value_op, .arg = &req}};
  cr_assert_eq(sa_batch(items, 2, SA_BATCH_ALL, SA_MODE_SYNC, NULL, NULL), -9,
               "SA-ERR-4: a batch after the memory came back did not work");
}

Test(SA_ERR_4, sync_batch_without_memory) {
  struct value_req req = {.when = SA_TEST_INLINE};
  sa_batch_item_t *items = many_items(&req);
  cr_assert_eq(sa_dispatch(&value_op, &req, SA_MODE_SYNC, NULL, NULL), 0); /* warm */
  struct rlimit old = limit_address_space();
  int status = sa_batch(items, ITEMS, SA_BATCH_ALL, SA_MODE_SYNC, NULL, NULL);
  cr_assert_eq(setrlimit(RLIMIT_AS, &old), 0);
  check_batch_answer(status, "sync");
  free(items);
  check_calls_work_again();
}

Test(SA_ERR_4, async_batch_without_memory) {
  struct value_req req = {.when = SA_TEST_INLINE};
  sa_batch_item_t *items = many_items(&req);
  cr_assert_eq(sa_dispatch(&value_op, &req, SA_MODE_SYNC, NULL, NULL), 0); /* warm */
  sa_future_t f;
  struct rlimit old = limit_address_space();
  int rc = sa_batch(items, ITEMS, SA_BATCH_ALL, SA_MODE_ASYNC, NULL, &f);
  int status = rc == SA_PENDING ? sa_future_wait(f, NULL) : rc;
  cr_assert_eq(setrlimit(RLIMIT_AS, &old), 0);
  check_batch_answer(status, "forced async from plain code, then waited for");
  if (rc == SA_PENDING)
    cr_assert_eq(sa_future_release(f), 0);
  free(items);
  check_calls_work_again();
}

/* ---- file descriptors ----------------------------------------------------- */

#define FD_ROOM 64 /* the limit is set this far above the lowest free fd */
#define FD_MAX (FD_ROOM + 1024)

/* Descriptors taken so that no more can be opened, and the limit before. */
struct fd_hold {
  struct rlimit old;
  int fds[FD_MAX];
  int n;
};

/* Take every descriptor the process may open. Returns what went wrong, or
 * NULL: no assertion, as it also runs off the test's thread. */
static const char *exhaust_descriptors(struct fd_hold *hold) {
  int lowest = dup(0);
  if (lowest < 0 || getrlimit(RLIMIT_NOFILE, &hold->old) != 0)
    return "dup or getrlimit";
  close(lowest);
  struct rlimit tight = {(rlim_t)lowest + FD_ROOM, hold->old.rlim_max};
  if (setrlimit(RLIMIT_NOFILE, &tight) != 0)
    return "setrlimit";
  hold->n = 0;
  while (hold->n < FD_MAX && (hold->fds[hold->n] = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0)
    hold->n++;
  return hold->n == FD_MAX || errno != EMFILE ? "descriptors did not run out" : NULL;
}

static void restore_descriptors(struct fd_hold *hold) {
  while (hold->n > 0)
    close(hold->fds[--hold->n]);
  setrlimit(RLIMIT_NOFILE, &hold->old);
}

struct fd_probe {
  const char *setup_failed; /* what went wrong before the calls, if anything */
  int first;                /* the first call's status, with no descriptor left */
  void *first_value;
  int second; /* a call's once they are back */
  void *second_value;
};

static int marker;

/* A new thread's first call, when it may need a loop of its own. It runs
 * no assertion: the test's own thread checks what it saw. */
static void *first_call_without_descriptors(void *arg) {
  struct fd_probe *probe = arg;
  static struct fd_hold hold;
  probe->setup_failed = exhaust_descriptors(&hold);
  struct value_req req = {.when = SA_TEST_NEXT_TICK, .value = &marker};
  probe->first = sa_dispatch(&value_op, &req, SA_MODE_SYNC, &probe->first_value, NULL);
  restore_descriptors(&hold);
  probe->second = sa_dispatch(&value_op, &req, SA_MODE_SYNC, &probe->second_value, NULL);
  return NULL;
}

Test(SA_ERR_4, first_call_of_a_thread_without_descriptors) {
  struct fd_probe probe = {0};
  pthread_t thread;
  cr_assert_eq(pthread_create(&thread, NULL, first_call_without_descriptors, &probe), 0);
  cr_assert_eq(pthread_join(thread, NULL), 0);
  cr_assert_null(probe.setup_failed, "test set-up: %s", probe.setup_failed);
  /* Its result, if the dispatcher needed no descriptor; else an error. */
  cr_assert((probe.first == 0 && probe.first_value == &marker) || probe.first < 0,
            "SA-ERR-4: a thread's first sync call with no file descriptor left gave %d",
            probe.first);
  cr_assert(probe.second == 0 && probe.second_value == &marker,
            "SA-ERR-4: the thread's call once descriptors were back gave %d (the first: %d)",
            probe.second, probe.first);
}

/* A home needs a loop: started with no descriptor left, it fails with an
 * error, again and again, and leaves nothing behind (its thread joined,
 * its memory freed); once descriptors are back, homes start. */
#define HOME_TRIES 100
#define HOME_HEAP_LIMIT 4096    /* bytes: far below one home a try */
#define HOME_VM_LIMIT_KIB 65536 /* far below a thread's stack a try */

Test(SA_ERR_4, home_start_without_descriptors) {
  sa_home_t *home = NULL;
  cr_assert_eq(sa_home_start(&home), 0); /* warm: what a first home sets up */
  cr_assert_eq(sa_home_stop(home), 0);
  static struct fd_hold hold;
  size_t heap_before = mallinfo2().uordblks;
  long vm_before = sa_test_status_kib("VmSize");
  const char *setup_failed = exhaust_descriptors(&hold);
  int started = 0, last = 0;
  for (int i = 0; i < HOME_TRIES && !setup_failed; i++) {
    home = NULL;
    if ((last = sa_home_start(&home)) == 0) {
      started++;
      sa_home_stop(home);
    }
  }
  restore_descriptors(&hold);
  cr_assert_null(setup_failed, "test set-up: %s", setup_failed);
  long heap_grown = (long)(mallinfo2().uordblks - heap_before);
  long vm_grown = sa_test_status_kib("VmSize") - vm_before;
  cr_assert(last < 0 || started == HOME_TRIES,
            "SA-ERR-4: sa_home_start with no descriptor left gave %d", last);
  cr_assert_lt(heap_grown, HOME_HEAP_LIMIT,
               "SA-ERR-4: %d home starts with no descriptor left left %ld bytes behind",
               HOME_TRIES, heap_grown);
  if (!RUNNING_ON_VALGRIND) /* valgrind's own memory is counted there */
    cr_assert_lt(vm_grown, HOME_VM_LIMIT_KIB,
                 "SA-ERR-4: %d home starts with no descriptor left grew the address space by "
                 "%ld KiB (threads not joined?)",
                 HOME_TRIES, vm_grown);
  cr_assert_eq(sa_home_start(&home), 0, "SA-ERR-4: no home starts once descriptors are back");
  struct value_req req = {.when = SA_TEST_NEXT_TICK, .value = &marker};
  void *value = NULL;
  cr_assert_eq(sa_home_call(home, &value_op, &req, SA_MODE_SYNC, &value, NULL), 0);
  cr_assert_eq(value, &marker);
  cr_assert_eq(sa_home_stop(home), 0);
}
