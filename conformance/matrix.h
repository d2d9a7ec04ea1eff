/*
 * The conformance matrix: the rules SPEC.md sets for every entry point
 * (SA-ENTRY-*) and for the loop time an op starts with (SA-OP-5), checked
 * for each entry point in each context and mode, the three ways an op
 * completes, each way of taking the result, success and failure. A suite
 * that checks each rule through one or two paths misses the dispatchers
 * that break it in the others.
 *
 * One cell is one call: its coordinates, what its caller saw, and the
 * result as its way took it. matrix.c runs cells; test_matrix.c decides
 * which cells each requirement needs and what each must show.
 *
 * An entry point is one row of MX_ENTRY_ROWS and one adapter (matrix.c):
 * the matrix makes every test of it from those.
 */
#ifndef SA_MATRIX_H
#define SA_MATRIX_H

#include "sa_test.h"

#include <stddef.h>
#include <stdint.h>

/* The entry points: the adapter mx_NAME, whether the call gives a future
 * (SA-ENTRY-5 applies), whether its op runs on the caller's own loops
 * (SA-OP-5 applies: a private loop, for a sync call or an async call from
 * plain code). */
#define MX_ENTRY_ROWS(ROW)                 \
  ROW(sa_dispatch, 1, 1)                   \
  ROW(sa_dispatch_then, 0, 1)              \
  ROW(sa_dispatch_until_far, 1, 1)         \
  ROW(sa_dispatch_until_no_deadline, 1, 1) \
  ROW(sa_call_blocking, 1, 0)              \
  ROW(sa_batch_all, 1, 1)                  \
  ROW(sa_batch_first, 1, 1)                \
  ROW(sa_home_call, 1, 0)

/* What one op (or blocking function) does and what happened to it. The
 * counters are atomic: home ops and blocking functions run on other
 * threads, and the harness waits for them. */
struct mx_work {
  sa_test_when when;
  unsigned delay_ms; /* SA_TEST_LATER: its timer (a blocking function sleeps) */
  int status;
  void *value;
  /* observed */
  atomic_int starts, completions, hooks;
  pthread_t start_thread;
  uv_loop_t *start_loop; /* a blocking function: sa_current_loop() */
  uint64_t done_ns;      /* uv_hrtime() when it completed */
  void *pending;         /* its handle while it runs */
};

/* What a continuation got: the first call's result, and how many calls. */
struct mx_cont {
  int calls;
  int status;
  void *value;
};

/* One call of an entry point. */
struct mx_call {
  struct mx_work work;  /* the op under test: the call's result is its */
  struct mx_work aside; /* a batch's other item */
  sa_batch_item_t items[2];
  struct mx_cont cont;
  int then_rc; /* sa_future_then, where the way attaches the continuation */
  sa_future_t future;
};

/* Where an entry point runs its op. */
enum mx_site {
  MX_ON_CALLER, /* the calling thread: a private loop, or its context's loop */
  MX_ON_HOME,   /* the home's thread */
  MX_ON_POOL    /* a blocking function: called directly (sync), on the threadpool (async) */
};

struct mx_entry {
  const char *name;
  /* Make the call in `mode`, as an application does. */
  int (*call)(struct mx_call *call, sa_mode_t mode, void **value, sa_future_t *future);
  /* The value the call must give, its status being its work's. */
  void *(*value)(const struct mx_call *call);
  /* Batches: whether the items hold their results [SA-BAT-1, SA-BAT-3]. */
  bool (*items_ok)(const struct mx_call *call, char *why, size_t size);
  enum mx_site site;
  bool has_future; /* false: the continuation comes with the call */
};

#define MX_DECLARE_ENTRY(name, has_future, on_callers_loops) \
  extern const struct mx_entry mx_##name;
MX_ENTRY_ROWS(MX_DECLARE_ENTRY)

/* Where the call is made, and in which mode. */
enum mx_place {
  MX_PLAIN, /* plain code: sync context */
  MX_RUN,   /* a callback of a loop run with sa_run */
  MX_SCOPE  /* a callback of the application's uv_run inside sa_enter/sa_leave */
};

struct mx_context {
  const char *name;
  enum mx_place place;
  sa_mode_t mode;
  bool sync; /* the call is sync: forced, or auto in plain code */
};

#define MX_CONTEXTS 7
extern const struct mx_context mx_contexts[MX_CONTEXTS];

/* How the caller takes the result, or uses the future. */
enum mx_way {
  MX_RETURNED,        /* a sync call's return */
  MX_GIVEN,           /* the continuation given with the call (sa_dispatch_then) */
  MX_THEN_BEFORE,     /* sa_future_then right after the call, before delivery */
  MX_THEN_AFTER,      /* sa_future_then once sa_future_status shows the result */
  MX_THEN_AFTER_WAIT, /* sa_future_then once sa_future_wait returned */
  MX_WAIT,            /* sa_future_wait */
  MX_WAIT_UNTIL,      /* sa_future_wait_until, its deadline far away */
  MX_STATUS,          /* sa_future_status, polled */
  MX_STALE_PENDING,   /* released while pending, then every future function */
  MX_STALE_DELIVERED, /* released after delivery, a new call made, then every future function */
  MX_WAYS
};

const char *mx_way_name(enum mx_way way);
bool mx_way_fits(const struct mx_entry *entry, const struct mx_context *context,
                 enum mx_way way);
bool mx_way_continues(enum mx_way way); /* the result comes to a continuation */

bool mx_when_fits(const struct mx_entry *entry, sa_test_when when);
const char *mx_when_name(const struct mx_entry *entry, sa_test_when when);

/* The future functions, tried in this order on a released handle. */
enum mx_future_fn { MX_FN_STATUS, MX_FN_THEN, MX_FN_CANCEL, MX_FN_RELEASE, MX_FN_WAIT_UNTIL,
                    MX_FN_WAIT, MX_FUTURE_FNS };
extern const char *const mx_future_fn_names[MX_FUTURE_FNS];
/* In stale_rc: not tried, as the wait_until before it waited (so would it). */
#define MX_NOT_TRIED 0x7fff

/* How long a cell waits for a result before it gives up. */
#define MX_PATIENCE_MS 2000

struct mx_cell {
  /* coordinates */
  const struct mx_entry *entry;
  const struct mx_context *context;
  sa_test_when when;
  enum mx_way way;
  int status;
  unsigned delay_ms; /* SA_TEST_LATER, if not the default */
  unsigned idle_ms;  /* SA-OP-5: the call's loop sits idle this long before it */
  char name[200];
  /* the call and what its caller saw */
  struct mx_call call;
  pthread_t caller;
  uv_loop_t *app_loop; /* the context's loop, NULL in plain code */
  uint64_t called_ns;
  int rc;
  void *value_at_return;
  int starts_at_return, completions_at_return, calls_at_return, status_at_return;
  /* the result, where the way took it from the future */
  bool taken;
  int taken_status;
  void *taken_value;
  /* once the loop has run on */
  int final_status;
  void *final_value;
  int final_calls;
  int close_rc;
  /* MX_STALE_*: the release, the functions on the stale handle, a new call */
  int release_rc;
  int stale_rc[MX_FUTURE_FNS];
  struct mx_cont stray; /* a continuation a stale handle must refuse */
  struct mx_call fresh;
  struct mx_call warm; /* SA-OP-5: the call that ran the loop before it sat idle */
  /* the context's loop and the cell's handles on it */
  uv_loop_t loop;
  uv_timer_t kick, poll;
  uint64_t give_up_ns;
  bool stopped;
};

/* Run the cell's call and take its result; name it. */
void mx_run_cell(struct mx_cell *cell);
/* After a test's cells: stop the home, let the thread's loop finish. */
void mx_finish(void);

pthread_t mx_home_thread(void);
void *mx_expected_value(const struct mx_cell *cell);

/* Writes why a check failed, and returns false. */
bool mx_why(char *why, size_t size, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

#endif
