/*
 * The model checker: random API programs, replayable from a seed, run
 * against any implementation of smartasync.h, each outcome checked against
 * the set SPEC.md allows.
 *
 *   gen.c     the generator: a program from a seed, and the rules that keep
 *             a program free of waits only the harness could cause
 *   model.c   the model: what each call, future action and delivery may
 *             give, recorded per call, and the checks at exit and at the end
 *   ops.c     the op, the blocking function and the continuations the
 *             programs use; they record what the implementation did to them
 *   actors.c  the threads that run a program, in the program's order
 *   repro.c   the program printed as C, and its shrinking
 *   main.c    the driver: seeds, rounds, one process per program
 */
#ifndef SA_MODEL_H
#define SA_MODEL_H

#include <smartasync.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define MAX_ACTORS 4
#define MAX_ACTIONS 96
#define MAX_SLOTS 64
#define MAX_HOMES 2
#define CHILD_HOME MAX_HOMES /* the one home a fork child starts itself */
#define MAX_ITEMS 4
#define MAX_CALLS 192 /* call records: the program's slots and follow-up calls */
#define MAX_ALLOWED 8
#define MODE_BAD 7 /* an invalid sa_mode_t */

/* ---- programs ------------------------------------------------------------ */

enum actor_kind {
  ACTOR_PLAIN,  /* plain code: sync context */
  ACTOR_RUN,    /* steps in callbacks of its loop, run with sa_run */
  ACTOR_ENTER,  /* the same loop run with uv_run inside sa_enter/sa_leave */
  ACTOR_SCOPED, /* uv_run with no scope; each step inside sa_enter/sa_leave */
};

enum when { WHEN_INLINE, WHEN_NEXT_TICK, WHEN_LATER };

/* One op call as the generator chose it. */
struct op_spec {
  uint8_t when;
  uint8_t ms;  /* WHEN_LATER: the timer */
  bool hook;   /* the op has a cancel hook */
  bool fail;   /* completes with an error status */
  uint8_t keep; /* 1: keeps a handle open on its loop across calls; 2: closes it */
  bool fork;   /* forks inside its start function; the child runs on */
  bool busy;   /* works 2 ms inside its start function: calls queue behind it */
};

enum act {
  /* entry points: each makes the call of slot `slot` */
  ACT_DISPATCH,
  ACT_DISPATCH_THEN,
  ACT_DISPATCH_UNTIL,
  ACT_CALL_BLOCKING,
  ACT_BATCH,
  ACT_HOME_CALL,
  /* future functions on the future of slot `slot` */
  ACT_STATUS,
  ACT_THEN,
  ACT_WAIT,
  ACT_WAIT_UNTIL,
  ACT_RELEASE,
  ACT_CANCEL,
  /* homes, loops, threads, processes */
  ACT_HOME_START,
  ACT_HOME_STOP,
  ACT_LOOP,    /* sa_loop_close, sa_run or sa_enter on a loop (`loop`, `probe`) */
  ACT_SESSION, /* a loop actor ends its loop's session: drain, sa_loop_close */
  ACT_CLEANUP, /* sa_thread_cleanup */
  ACT_FORK,    /* fork; the child runs the ACTOR_CHILD actions that follow */
  ACT_EXIT,    /* the actor's thread ends (its last action) */
  ACT_COUNT
};

#define ACTOR_CHILD (-1) /* an action of the fork child that precedes it */

/* Action flags. */
#define F_DETACHED 1u /* a wait that lets the next action start meanwhile */
#define F_CLOSE_KEPT 2u /* ACT_EXIT: close the handles kept open first */

/* What a continuation does besides recording the delivery. */
enum cont { CONT_RECORD, CONT_RELEASE, CONT_FOLLOW };

/* ACT_LOOP targets and probes. */
enum loop_target { LOOP_OWN, LOOP_OLD, LOOP_OTHER };
enum loop_probe { PROBE_CLOSE, PROBE_RUN, PROBE_ENTER };

struct action {
  uint8_t kind;  /* enum act */
  int8_t actor;  /* index, or ACTOR_CHILD */
  uint8_t mode;  /* sa_mode_t, or MODE_BAD */
  uint8_t flags;
  int8_t slot;   /* the call's slot, or the future's */
  int8_t home;   /* ACT_HOME_*: the home slot */
  uint8_t loop;  /* ACT_LOOP: enum loop_target; ACT_BATCH: sa_batch_kind_t */
  uint8_t probe; /* ACT_LOOP: enum loop_probe; LOOP_OTHER: that actor in `other` */
  int8_t other;
  uint8_t cont;  /* enum cont, for the continuation this action gives */
  uint8_t n;     /* ACT_BATCH: items */
  uint16_t ms;   /* deadline of ACT_DISPATCH_UNTIL and ACT_WAIT_UNTIL; the
                    blocking function's sleep */
  struct op_spec op[MAX_ITEMS];
};

struct program {
  uint64_t seed;
  int nactors;
  uint8_t actor_kind[MAX_ACTORS];
  int nactions;
  int nslots;
  struct action acts[MAX_ACTIONS];
};

/* What the generator may use. */
struct gen_options {
  int max_actors; /* 1..MAX_ACTORS */
  bool fork;      /* fork actions (not under ThreadSanitizer) */
};

void gen_program(struct program *p, uint64_t seed, const struct gen_options *opt);
/* Whether every action's preconditions hold (a shrunk program must keep them). */
bool gen_valid(const struct program *p);
/* Whether action i's call is expected to be async: a future comes back. */
bool gen_call_async(const struct program *p, int i);
const char *act_name(enum act kind);
const char *mode_name(int mode);

/* ---- verdicts ------------------------------------------------------------ */

/* Shared with the driver and with fork children (MAP_SHARED): the first
 * failure of a run, and what each action returned and was allowed. */
struct outcome {
  bool ran;
  int rc;
  int nallowed;
  int allowed[MAX_ALLOWED];
};

enum verdict_kind { V_PASS, V_FAILED, V_HANG };

struct verdict {
  atomic_int failed;  /* enum verdict_kind of the first failure */
  atomic_int failures;
  int action;         /* where it was seen, -1 at the end */
  char check[64];     /* the failure's identity: requirement and what */
  char detail[512];
  char expect[160];   /* a C condition the reproduction asserts, if not an rc */
  struct outcome outcome[MAX_ACTIONS];
  /* a fork child's own verdict */
  atomic_int child_done;
};

/* ---- what the implementation did: records --------------------------------- */

typedef uint64_t tick_t; /* the model's clock: one global, totally ordered count */

struct call_rec;

/* One op call, as the op saw it. */
struct op_rec {
  struct op_spec spec;
  struct call_rec *call;
  int item;       /* batch item, else 0 */
  sa_call_t *sa_call;
  uv_loop_t *loop;
  union {
    uv_handle_t handle;
    uv_idle_t idle;
    uv_timer_t timer;
  } u;
  bool handle_open;           /* the op's handle is started: the hook can stop it */
  atomic_bool handle_used, handle_closed;
  atomic_int starts, hooks;
  uint64_t start_ns;          /* uv_hrtime() when it started */
  /* The completion, published by done_tick (0 until then). */
  int done_status;
  void *done_value;
  bool done_in_start;
  bool done_by_hook;
  uint64_t done_ns;
  atomic_uint_least64_t done_tick;
};

/* A blocking function's call, as the function saw it. */
struct blocking_rec {
  struct call_rec *call;
  unsigned ms;
  int status;         /* what it returns (positive: SA_EINVAL expected) */
  atomic_int runs;
  atomic_int run_actor;
  atomic_uint_least64_t returned_tick;
};

/* Everything the model knows about one call. */
struct call_rec {
  int index;
  int slot;        /* the program's slot, -1 for a follow-up call */
  int action;      /* the action that made it, -1 for a follow-up */
  int owner;       /* the calling actor */
  int kind;        /* enum act of the entry point */
  int mode;
  bool in_child;   /* made in a fork child */
  bool sync_expected; /* SPEC says the entry point blocks */
  bool sync_from_sync; /* ...and it was made from sync context (SA-SYNC-3) */
  _Atomic bool async; /* the entry point returned SA_PENDING (read by all actors) */
  bool app_loop;   /* on an actor's application loop (else a private loop) */
  int session;     /* app_loop: the owner's session it was made in */
  long slice;      /* app_loop: the loop iteration it was made in */
  long then_slice; /* ...and the one its continuation was attached in */
  uv_loop_t *loop; /* the loop of the async context it was made in, if known */
  int home;        /* ACT_HOME_CALL: the home slot, else -1 */
  int home_gen;    /* ...and that home's start */
  sa_future_t f;
  uint64_t deadline;
  uint64_t made_ms; /* uv_hrtime() in ms when the entry point was called */
  int nops;
  struct op_rec op[MAX_ITEMS];
  struct blocking_rec blk;
  sa_batch_item_t items[MAX_ITEMS];
  int batch_kind;
  int cont;        /* enum cont of its continuation */
  /* Events, on the model's clock. */
  atomic_bool in_entry;         /* the entry point has not returned */
  tick_t made_begin;
  tick_t released_begin, released_end; /* the release that returned 0 */
  atomic_int releases;          /* releases that returned 0 */
  atomic_int releasing;         /* releases in progress */
  bool stale_seen;              /* an action said SA_ESTALE while a release was in flight */
  bool then_attached;           /* sa_future_then returned 0 (or the entry took one) */
  atomic_int conts;
  /* The delivered result, once something showed it. */
  bool res_known;
  int res_status;
  void *res_value;
  tick_t res_by;                /* delivered no later than this */
  /* Why the dispatcher itself may end the call. */
  tick_t cancel_from;           /* a cancel began on it */
  tick_t timeout_from;          /* a wait_until began on it */
  tick_t teardown_from;         /* its owner's private loops began to go away */
  tick_t stop_from;             /* its home began to stop */
  bool loop_closed;             /* its loop was closed (sa_loop_close) */
  bool owner_gone;              /* its private loop went away (exit, cleanup) */
};

/* ---- the run: shared by the executor, the model and the ops ---------------- */

struct home_rt {
  sa_home_t *home;
  int generation;     /* starts so far: calls name the home they were made on */
  bool live;          /* started and not stopped */
  bool inherited;     /* started before the fork (in a fork child) */
  atomic_uintptr_t thread; /* pthread_t of the thread that ran its first op */
  atomic_uintptr_t loop;
};

struct kept {
  uv_loop_t *loop;
  uv_timer_t timer;
  bool open;
  bool closing;   /* closed by the harness, its close callback not run yet */
  bool inherited; /* a fork child's copy of its parent's: never touched */
};

#define MAX_KEPT 4

struct actor_rt {
  int index;
  enum actor_kind kind;
  pthread_t thread;
  bool started, exit_requested;
  /* loop actors: sessions alternate between two loops */
  uv_loop_t loops[2];
  bool loop_closed[2];
  int cur;
  bool in_session, session_ending;
  uv_async_t turn;    /* wakes the loop when its turn comes */
  bool turn_live;     /* under run.mu */
  int session_action; /* the ACT_SESSION or ACT_EXIT ending it */
  struct kept kept[MAX_KEPT];
  int sync_kept;      /* the kept handle on the loop of its sync calls, or -1 */
  int session;        /* sessions begun so far */
  long slice;         /* turns taken on its loop: one per loop iteration */
  long order_slice;   /* SA-ASYNC-6: the slice of the inline completions */
  tick_t order_made;  /* delivered last, and when the latest of them was made */
  atomic_int running_action; /* -1 between actions: for the watchdog */
};

struct run {
  const struct program *prog;
  struct verdict *verdict;
  bool quiet;         /* print nothing (shrinking) */
  bool in_child;      /* a fork child: one thread, no lock */
  int child_of;       /* the fork action the child came from */
  pthread_mutex_t mu; /* the turn, and the model's records */
  pthread_cond_t cv;
  int next;           /* the action whose turn it is */
  atomic_uint_least64_t clock;
  atomic_long progress;
  struct actor_rt actors[MAX_ACTORS];
  struct home_rt homes[MAX_HOMES + 1];
  int ncalls;
  struct call_rec *calls[MAX_CALLS];
  struct call_rec *slots[MAX_SLOTS];
  pid_t children[MAX_ACTIONS];
  int nchildren;
  long timeout_ms;    /* the watchdog's limit without progress */
  bool repro_on_hang; /* the watchdog prints the program (no driver is left to) */
};

extern struct run run;
/* The actor running on this thread, plus one (0: not an actor thread). */
extern _Thread_local int t_actor;
/* This thread's private loops are going away (its exit, sa_thread_cleanup). */
extern _Thread_local bool t_teardown;
/* The call whose entry point or sa_future_then this thread is inside. */
extern _Thread_local struct call_rec *t_inside;
/* The loop a forced sync call of a step blocks: none of its callbacks may
 * run meanwhile (SA-MODE-2). */
extern _Thread_local uv_loop_t *t_blocked_loop;

tick_t tick(void);
uint64_t now_ms(void);

/* ---- model.c --------------------------------------------------------------- */

/* The outcome of one API call the executor made. */
struct obs {
  int action;
  int actor;       /* -1: the harness's own thread */
  tick_t begin, end;
  uint64_t end_ns;
  int rc;
  void *value;
  int probe;       /* async entry points: sa_future_status right after */
};

/* What SPEC says an entry point does, as the executor judged the context. */
enum expect {
  EXPECT_SYNC,     /* blocks and returns the result */
  EXPECT_ASYNC,    /* returns SA_PENDING */
  EXPECT_INVALID,  /* an invalid mode: SA_EINVAL, nothing started */
  EXPECT_TEARDOWN, /* from a continuation on a loop going away: SA_ECANCELED */
  EXPECT_EPERM,    /* on a home inherited from the fork's parent */
};

void model_lock(void);
void model_unlock(void);
struct call_rec *model_new_call(int action, int slot, int owner, int kind, int mode);
/* The entry point returned. `sync_expected`: SPEC says it blocks. */
void model_entry_returned(struct call_rec *c, const struct obs *o, enum expect e,
                          sa_future_t f);
/* Before and after a future function: the first records why the
 * implementation may end the call (a cancel, a wait with a deadline), and
 * must come before the call, as the loop's thread may act at once. */
void model_future_begin(enum act kind, struct call_rec *c, tick_t begin);
void model_future_action(enum act kind, struct call_rec *c, const struct obs *o,
                         uint64_t deadline);
void model_delivery(struct call_rec *c, sa_future_t f, int status, void *value);
void model_op_started(struct op_rec *op);
void model_op_hooked(struct op_rec *op);
void model_op_completed(struct op_rec *op, int rc);
/* Whether loop is one of the actors' application loops. */
bool is_app_loop(const uv_loop_t *loop);
void model_teardown_began(int actor);
void model_teardown_done(int actor, int action);
void model_home_stop_began(int home, int generation);
void model_home_stopped(int home, int generation, int action);
void model_session_closed(int actor, uv_loop_t *loop, int action);
void model_simple(const struct obs *o, const int *allowed, int n, const char *check);
void model_final(void);

void fail(int action, const char *check, const char *expect, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void note_outcome(int action, int rc, const int *allowed, int n);

/* ---- ops.c --------------------------------------------------------------- */

extern const sa_op_t op_hooked, op_unhooked;
const sa_op_t *op_of(const struct op_spec *spec);
int blocking_fn(void *arg, void **value);
void on_delivery(sa_future_t f, int status, void *value, void *data);
void kept_close_all(struct actor_rt *a, uv_loop_t *loop);
void kept_forget_private(struct actor_rt *a);
int op_status(const struct op_rec *op);
int spec_status(const struct op_spec *spec, int slot, int item);
int blocking_spec_status(const struct op_spec *spec);
/* A fork inside an op: the child's side, which never returns. */
void fork_child_run(int fork_action) __attribute__((noreturn));
pid_t fork_now(int action);

/* ---- actors.c ------------------------------------------------------------ */

/* Run the program in this process; writes the verdict. Returns the exit
 * status for the driver: 0 pass, 1 failed, 2 hang. */
int run_program(const struct program *p, struct verdict *v, bool quiet, long timeout_ms,
                bool repro_on_hang);

/* ---- repro.c ------------------------------------------------------------- */

/* The program as a C file a user can build against smartasync.h alone,
 * asserting what the model allowed in the run `v` recorded (if any). */
void repro_print(const struct program *p, const struct verdict *v, int fd);

#endif
