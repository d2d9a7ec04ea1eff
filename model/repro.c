/*
 * The reproduction: a program printed as one C file that builds against
 * smartasync.h alone. It carries a small op helper (the same op as ops.c:
 * three timings, a cancel hook, handles kept open) and a turn helper that
 * runs the actions one at a time in the program's order. Each action's
 * return code is checked against the set the model allowed in the failing
 * run; the deliveries due at each thread's exit, at each loop's close and
 * at the end are checked as the model checks them.
 */
#include "model.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int out_fd;

static void put(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void put(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vdprintf(out_fd, fmt, ap);
  va_end(ap);
}

static const char *const helper =
    "#define _GNU_SOURCE\n"
    "/* Not every program uses each helper. */\n"
    "#pragma GCC diagnostic ignored \"-Wunused-function\"\n"
    "#pragma GCC diagnostic ignored \"-Wunused-variable\"\n"
    "#pragma GCC diagnostic ignored \"-Wunused-const-variable\"\n"
    "#include <smartasync.h>\n"
    "#include <pthread.h>\n"
    "#include <stdatomic.h>\n"
    "#include <stdint.h>\n"
    "#include <stdio.h>\n"
    "#include <stdlib.h>\n"
    "#include <sys/wait.h>\n"
    "#include <unistd.h>\n"
    "\n"
    "static atomic_int failures;\n"
    "\n"
    "static void check(int action, int rc, int n, const int *allowed) {\n"
    "  for (int i = 0; i < n; i++)\n"
    "    if (rc == allowed[i])\n"
    "      return;\n"
    "  fprintf(stderr, \"action %d: returned %d (%s)\\n\", action, rc, sa_strerror(rc));\n"
    "  failures++;\n"
    "}\n"
    "#define CHECK(action, rc, ...) \\\n"
    "  check(action, rc, sizeof((int[]){__VA_ARGS__}) / sizeof(int), (int[]){__VA_ARGS__})\n"
    "#define EXPECT(action, cond) \\\n"
    "  do { \\\n"
    "    if (!(cond)) { \\\n"
    "      fprintf(stderr, \"action %d: not %s\\n\", action, #cond); \\\n"
    "      failures++; \\\n"
    "    } \\\n"
    "  } while (0)\n"
    "\n"
    "/* The op: completes inline (when 0), on the next loop iteration (1) or\n"
    " * after ms milliseconds (2) with its status and itself as the value; its\n"
    " * cancel hook stops it with SA_ECANCELED. keep 1 leaves a timer open on\n"
    " * its loop across calls, keep 2 closes it; busy works 2 ms in start. */\n"
    "struct op {\n"
    "  int when, ms, status, keep, actor, idle_loop, busy;\n"
    "  void (*fork_child)(void);\n"
    "  sa_call_t *call;\n"
    "  union { uv_handle_t h; uv_idle_t idle; uv_timer_t timer; } u;\n"
    "  int running, starts, hooks, done;\n"
    "};\n"
    "\n"
    "static void keep(struct op *o, uv_loop_t *loop);\n"
    "static void fork_child(void (*child)(void));\n"
    "\n"
    "static void op_complete(struct op *o, int status) {\n"
    "  o->done = 1;\n"
    "  CHECK(-1, sa_complete(o->call, status, o), 0);\n"
    "}\n"
    "\n"
    "static void op_finish(struct op *o, int status) {\n"
    "  o->running = 0;\n"
    "  uv_close(&o->u.h, NULL);\n"
    "  op_complete(o, status);\n"
    "}\n"
    "\n"
    "static void op_idle(uv_idle_t *h) {\n"
    "  struct op *o = h->data;\n"
    "  uv_idle_stop(h);\n"
    "  op_finish(o, o->status);\n"
    "}\n"
    "\n"
    "static void op_timer(uv_timer_t *h) {\n"
    "  struct op *o = h->data;\n"
    "  op_finish(o, o->status);\n"
    "}\n"
    "\n"
    "static void op_start(sa_call_t *call, uv_loop_t *loop, void *arg) {\n"
    "  struct op *o = arg;\n"
    "  o->call = call;\n"
    "  o->starts++;\n"
    "  EXPECT(-1, sa_current_loop() == loop); /* SA-SYNC-5 */\n"
    "  if (o->idle_loop) /* SA-OP-5: a loop not running has a current time */\n"
    "    EXPECT(-1, uv_now(loop) + 2 >= uv_hrtime() / 1000000);\n"
    "  if (o->busy) /* work in start: calls queue behind it */\n"
    "    usleep(2000);\n"
    "  if (o->keep)\n"
    "    keep(o, loop);\n"
    "  if (o->fork_child)\n"
    "    fork_child(o->fork_child);\n"
    "  if (o->when == 0) {\n"
    "    op_complete(o, o->status);\n"
    "    return;\n"
    "  }\n"
    "  o->u.h.data = o;\n"
    "  o->running = 1;\n"
    "  if (o->when == 1) {\n"
    "    uv_idle_init(loop, &o->u.idle);\n"
    "    uv_idle_start(&o->u.idle, op_idle);\n"
    "  } else {\n"
    "    uv_timer_init(loop, &o->u.timer);\n"
    "    uv_timer_start(&o->u.timer, op_timer, o->ms, 0);\n"
    "  }\n"
    "}\n"
    "\n"
    "static void op_cancel(sa_call_t *call, uv_loop_t *loop, void *arg) {\n"
    "  struct op *o = arg;\n"
    "  (void)call, (void)loop;\n"
    "  o->hooks++;\n"
    "  if (!o->running)\n"
    "    return;\n"
    "  if (o->when == 1)\n"
    "    uv_idle_stop(&o->u.idle);\n"
    "  else\n"
    "    uv_timer_stop(&o->u.timer);\n"
    "  op_finish(o, SA_ECANCELED);\n"
    "}\n"
    "\n"
    "static const sa_op_t hooked = {op_start, op_cancel}, unhooked = {op_start, NULL};\n"
    "\n"
    "/* Handles kept open across calls, per actor; a slot is reused once its\n"
    " * close callback has run. */\n"
    "static struct { uv_loop_t *loop; uv_timer_t timer; int open, closing; } kept[4][4];\n"
    "\n"
    "static void kept_fired(uv_timer_t *t) { (void)t; }\n"
    "static void kept_closed(uv_handle_t *h) { *(int *)h->data = 0; }\n"
    "\n"
    "static void kept_close_one(int actor, int k) {\n"
    "  kept[actor][k].open = 0;\n"
    "  kept[actor][k].closing = 1;\n"
    "  kept[actor][k].timer.data = &kept[actor][k].closing;\n"
    "  uv_close((uv_handle_t *)&kept[actor][k].timer, kept_closed);\n"
    "}\n"
    "\n"
    "static void keep(struct op *o, uv_loop_t *loop) {\n"
    "  for (int k = 0; k < 4; k++) {\n"
    "    if (kept[o->actor][k].open && kept[o->actor][k].loop == loop) {\n"
    "      if (o->keep == 2)\n"
    "        kept_close_one(o->actor, k);\n"
    "      return;\n"
    "    }\n"
    "  }\n"
    "  for (int k = 0; o->keep == 1 && k < 4; k++) {\n"
    "    if (!kept[o->actor][k].open && !kept[o->actor][k].closing) {\n"
    "      kept[o->actor][k].loop = loop;\n"
    "      kept[o->actor][k].open = 1;\n"
    "      uv_timer_init(loop, &kept[o->actor][k].timer);\n"
    "      uv_timer_start(&kept[o->actor][k].timer, kept_fired, 3600000, 3600000);\n"
    "      return;\n"
    "    }\n"
    "  }\n"
    "}\n"
    "\n"
    "static void kept_close(int actor, uv_loop_t *loop) {\n"
    "  for (int k = 0; k < 4; k++)\n"
    "    if (kept[actor][k].open && kept[actor][k].loop == loop)\n"
    "      kept_close_one(actor, k);\n"
    "}\n"
    "\n"
    "static void kept_forget(int actor, uv_loop_t *except) { /* private loops gone */\n"
    "  for (int k = 0; k < 4; k++)\n"
    "    if (kept[actor][k].loop != except)\n"
    "      kept[actor][k].open = kept[actor][k].closing = 0;\n"
    "}\n"
    "\n"
    "/* A blocking function: sleeps ms, returns status with itself as the value. */\n"
    "static int blocking(void *arg, void **value) {\n"
    "  struct op *o = arg;\n"
    "  if (o->ms)\n"
    "    usleep((useconds_t)o->ms * 1000);\n"
    "  *value = o;\n"
    "  o->done = 1;\n"
    "  return o->status;\n"
    "}\n"
    "\n"
    "/* The futures, and what their continuations saw, by slot. */\n"
    "static sa_future_t f[NSLOTS];\n"
    "static atomic_int delivered[NSLOTS], then_ok[NSLOTS], released[NSLOTS];\n"
    "static struct op follow[NSLOTS];\n"
    "\n"
    "static void cont(sa_future_t fut, int status, void *value, void *data) {\n"
    "  (void)fut, (void)status, (void)value;\n"
    "  delivered[(intptr_t)data]++;\n"
    "}\n"
    "\n"
    "static void cont_ignore(sa_future_t fut, int status, void *value, void *data) {\n"
    "  (void)fut, (void)status, (void)value, (void)data;\n"
    "}\n"
    "\n"
    "static void cont_release(sa_future_t fut, int status, void *value, void *data) {\n"
    "  cont(fut, status, value, data);\n"
    "  released[(intptr_t)data] |= sa_future_release(fut) == 0;\n"
    "}\n"
    "\n"
    "/* A call made from the continuation, on the same loop. */\n"
    "static void cont_follow(sa_future_t fut, int status, void *value, void *data) {\n"
    "  struct op *o = &follow[(intptr_t)data];\n"
    "  cont(fut, status, value, data);\n"
    "  *o = (struct op){.when = 1};\n"
    "  sa_dispatch_then(&hooked, o, SA_MODE_AUTO, NULL, cont_ignore, NULL);\n"
    "}\n"
    "\n"
    "/* The turn: the actions run one at a time, in the program's order. A loop\n"
    " * actor's steps run in a callback of its loop, woken when the turn moves. */\n"
    "static pthread_mutex_t turn_mu = PTHREAD_MUTEX_INITIALIZER;\n"
    "static pthread_cond_t turn_cv = PTHREAD_COND_INITIALIZER;\n"
    "static int turn;\n"
    "static uv_async_t *wakers[4]; /* the loop actors' turn handles, while open */\n"
    "\n"
    "static void await_turn(int action) {\n"
    "  pthread_mutex_lock(&turn_mu);\n"
    "  while (turn != action)\n"
    "    pthread_cond_wait(&turn_cv, &turn_mu);\n"
    "  pthread_mutex_unlock(&turn_mu);\n"
    "}\n"
    "\n"
    "static int is_turn(int action) {\n"
    "  pthread_mutex_lock(&turn_mu);\n"
    "  int mine = turn == action;\n"
    "  pthread_mutex_unlock(&turn_mu);\n"
    "  return mine;\n"
    "}\n"
    "\n"
    "static void pass_turn(int next) {\n"
    "  pthread_mutex_lock(&turn_mu);\n"
    "  turn = next;\n"
    "  pthread_cond_broadcast(&turn_cv);\n"
    "  for (int a = 0; a < 4; a++)\n"
    "    if (wakers[a])\n"
    "      uv_async_send(wakers[a]);\n"
    "  pthread_mutex_unlock(&turn_mu);\n"
    "}\n"
    "\n"
    "static void set_waker(int actor, uv_async_t *wake) {\n"
    "  pthread_mutex_lock(&turn_mu);\n"
    "  wakers[actor] = wake;\n"
    "  pthread_mutex_unlock(&turn_mu);\n"
    "}\n"
    "\n"
    "/* A loop actor's session: its steps run when its turn handle is woken. */\n"
    "static void session(int actor, uv_loop_t *loop, int how, uv_async_t *wake,\n"
    "                    uv_async_cb steps, int *ending) {\n"
    "  int rc;\n"
    "  uv_loop_init(loop);\n"
    "  *ending = 0;\n"
    "  uv_async_init(loop, wake, steps);\n"
    "  set_waker(actor, wake);\n"
    "  uv_async_send(wake);\n"
    "  if (how == 1) /* uv_run inside sa_enter/sa_leave */\n"
    "    CHECK(-1, sa_enter(loop), 0);\n"
    "  do /* how 0: sa_run; how 2: uv_run, each step inside sa_enter/sa_leave */\n"
    "    rc = how == 0 ? sa_run(loop, UV_RUN_DEFAULT) : uv_run(loop, UV_RUN_DEFAULT);\n"
    "  while (rc > 0 || !*ending);\n"
    "  if (how == 1)\n"
    "    CHECK(-1, sa_leave(loop), 0);\n"
    "}\n"
    "\n"
    "/* In a step: the session ends; the loop drains. */\n"
    "static void session_end(int actor, uv_async_t *wake, int *ending) {\n"
    "  set_waker(actor, NULL);\n"
    "  *ending = 1;\n"
    "  uv_close((uv_handle_t *)wake, NULL);\n"
    "  kept_close(actor, wake->loop);\n"
    "}\n"
    "\n"
    "static int close_loop(uv_loop_t *loop) {\n"
    "  int rc;\n"
    "  for (int tries = 0; (rc = sa_loop_close(loop)) == SA_EBUSY && tries < 2000; tries++) {\n"
    "    sa_run(loop, UV_RUN_NOWAIT);\n"
    "    usleep(1000);\n"
    "  }\n"
    "  return rc;\n"
    "}\n"
    "\n"
    "static pid_t children[32];\n"
    "static int nchildren;\n"
    "\n"
    "/* A fork: the child runs `child`, which ends with _exit. */\n"
    "static void fork_child(void (*child)(void)) {\n"
    "  fflush(NULL);\n"
    "  pid_t pid = fork();\n"
    "  if (pid == 0) {\n"
    "    alarm(5);\n"
    "    child();\n"
    "  }\n"
    "  EXPECT(-1, pid > 0);\n"
    "  children[nchildren++] = pid;\n"
    "}\n"
    "\n"
    "static uv_loop_t loops[4][2]; /* each loop actor's, one per session in turn */\n"
    "static sa_home_t *home[3];\n";

/* ---- what the program does, as C ------------------------------------------- */

static int next_main(const struct program *p, int i) {
  for (i++; i < p->nactions && p->acts[i].actor == ACTOR_CHILD; i++)
    ;
  return i;
}

static bool is_loop_actor(const struct program *p, int actor) {
  return actor >= 0 && p->actor_kind[actor] != ACTOR_PLAIN;
}

static bool forks(const struct action *a) {
  return a->kind == ACT_FORK || (a->kind <= ACT_DISPATCH_UNTIL && a->op[0].fork);
}

/* The actor a child action of action i belongs to: the forking one. */
static int acting(const struct program *p, int i) {
  while (p->acts[i].actor == ACTOR_CHILD)
    i--;
  return p->acts[i].actor;
}

static const char *code_name(int code) {
  switch (code) {
  case 0: return "0";
  case SA_PENDING: return "SA_PENDING";
  case SA_EINVAL: return "SA_EINVAL";
  case SA_ESTALE: return "SA_ESTALE";
  case SA_EALREADY: return "SA_EALREADY";
  case SA_EDEADLK: return "SA_EDEADLK";
  case SA_ELOOP: return "SA_ELOOP";
  case SA_EBUSY: return "SA_EBUSY";
  case SA_EPERM: return "SA_EPERM";
  case SA_ENOTSUP: return "SA_ENOTSUP";
  case SA_ECANCELED: return "SA_ECANCELED";
  case SA_ETIMEDOUT: return "SA_ETIMEDOUT";
  }
  return NULL; /* an op's own status: printed as a number */
}

/* CHECK the return code against what the model allowed, if it got there. */
static void check_rc(const struct verdict *v, int i, const char *ind) {
  const struct outcome *o = v ? &v->outcome[i] : NULL;
  if (!o || !o->ran || o->nallowed == 0) {
    put("%s(void)rc; /* not reached in the failing run */\n", ind);
    return;
  }
  put("%sCHECK(%d, rc", ind, i);
  for (int k = 0; k < o->nallowed; k++) {
    const char *name = code_name(o->allowed[k]);
    if (name)
      put(", %s", name);
    else
      put(", %d", o->allowed[k]);
  }
  put(");\n");
}

/* The model's own condition for a failure seen at action i, if it has one. */
static void print_expect(const struct verdict *v, int i, const char *ind) {
  if (v && v->action == i && v->expect[0])
    put("%sEXPECT(%d, %s); /* %s */\n", ind, i, v->expect, v->check);
}

static const char *op_table(const struct op_spec *op) {
  return op->hook ? "&hooked" : "&unhooked";
}

/* Whether action i's op starts on a loop that is not running (SA-OP-5). */
static bool idle_loop_call(const struct program *p, int i) {
  const struct action *a = &p->acts[i];
  if (a->kind == ACT_HOME_CALL || a->kind == ACT_CALL_BLOCKING)
    return false;
  return !is_loop_actor(p, a->actor) || a->mode == SA_MODE_SYNC;
}

static void print_op_init(const struct program *p, int i, int item) {
  const struct action *a = &p->acts[i];
  const struct op_spec *op = &a->op[item];
  put("{.when = %d", op->when);
  if (op->when == WHEN_LATER)
    put(", .ms = %d", op->ms);
  int status = spec_status(op, a->slot, item);
  if (status)
    put(", .status = %d", status);
  if (op->keep)
    put(", .keep = %d", op->keep);
  if (op->busy)
    put(", .busy = 1");
  put(", .actor = %d", acting(p, i));
  if (idle_loop_call(p, i))
    put(", .idle_loop = 1");
  if (item == 0 && forks(a))
    put(", .fork_child = child_%d", i);
  put("}");
}

/* The ops (and batch items) of every call, at file scope: they outlive
 * the steps that start them. */
static void print_ops(const struct program *p) {
  for (int i = 0; i < p->nactions; i++) {
    const struct action *a = &p->acts[i];
    if (a->kind > ACT_HOME_CALL)
      continue;
    if (a->kind == ACT_CALL_BLOCKING) {
      put("static struct op op_%d = {.ms = %d, .status = %d};\n", i, a->ms,
          blocking_spec_status(&a->op[0]));
    } else if (a->kind == ACT_BATCH && a->n == 0) {
      put("static struct op op_%d[1];\nstatic sa_batch_item_t items_%d[1];\n", i, i);
    } else if (a->kind == ACT_BATCH) {
      put("static struct op op_%d[%d] = {", i, a->n);
      for (int k = 0; k < a->n; k++) {
        put(k ? ", " : "");
        print_op_init(p, i, k);
      }
      put("};\nstatic sa_batch_item_t items_%d[%d] = {", i, a->n);
      for (int k = 0; k < a->n; k++)
        put("%s{.op = %s, .arg = &op_%d[%d]}", k ? ", " : "", op_table(&a->op[k]), i, k);
      put("};\n");
    } else {
      put("static struct op op_%d = ", i);
      print_op_init(p, i, 0);
      put(";\n");
    }
  }
}

static const char *cont_name(int cont) {
  return cont == CONT_RELEASE ? "cont_release" : cont == CONT_FOLLOW ? "cont_follow" : "cont";
}

static bool has_future(int kind) { return kind <= ACT_HOME_CALL && kind != ACT_DISPATCH_THEN; }

static void print_call(const struct program *p, const struct verdict *v, int i, const char *ind) {
  const struct action *a = &p->acts[i];
  const char *mode = mode_name(a->mode);
  const char *op = op_table(&a->op[0]);
  int s = a->slot;
  switch (a->kind) {
  case ACT_DISPATCH:
    put("%src = sa_dispatch(%s, &op_%d, %s, &v, &f[%d]);\n", ind, op, i, mode, s);
    break;
  case ACT_DISPATCH_THEN:
    put("%src = sa_dispatch_then(%s, &op_%d, %s, &v, %s, (void *)%d);\n", ind, op, i, mode,
        cont_name(a->cont), s);
    break;
  case ACT_DISPATCH_UNTIL:
    put("%src = sa_dispatch_until(%s, &op_%d, %s, sa_deadline_in(%d), &v, &f[%d]);\n", ind, op,
        i, mode, a->ms, s);
    break;
  case ACT_CALL_BLOCKING:
    put("%src = sa_call_blocking(blocking, &op_%d, %s, &v, &f[%d]);\n", ind, i, mode, s);
    break;
  case ACT_BATCH:
    put("%src = sa_batch(items_%d, %d, %s, %s, &v, &f[%d]);\n", ind, i, a->n,
        a->loop == SA_BATCH_ALL ? "SA_BATCH_ALL" : "SA_BATCH_FIRST", mode, s);
    break;
  default:
    put("%src = sa_home_call(home[%d], %s, &op_%d, %s, &v, &f[%d]);\n", ind, a->home, op, i,
        mode, s);
    break;
  }
  check_rc(v, i, ind);
  const struct outcome *o = v ? &v->outcome[i] : NULL;
  if (has_future(a->kind) && o && o->ran && o->nallowed == 1 && o->allowed[0] == SA_PENDING)
    put("%sCHECK(%d, sa_future_status(f[%d], NULL), SA_PENDING); /* SA-ENTRY-2 */\n", ind, i, s);
}

static void print_future_action(const struct program *p, const struct verdict *v, int i,
                                const char *ind) {
  const struct action *a = &p->acts[i];
  int s = a->slot;
  switch (a->kind) {
  case ACT_STATUS:
    put("%src = sa_future_status(f[%d], &v);\n", ind, s);
    break;
  case ACT_THEN:
    put("%src = sa_future_then(f[%d], %s, (void *)%d);\n%sthen_ok[%d] |= rc == 0;\n", ind, s,
        cont_name(a->cont), s, ind, s);
    break;
  case ACT_WAIT:
    put("%src = sa_future_wait(f[%d], &v);\n", ind, s);
    break;
  case ACT_WAIT_UNTIL:
    put("%src = sa_future_wait_until(f[%d], sa_deadline_in(%d), &v);\n", ind, s, a->ms);
    break;
  case ACT_RELEASE:
    put("%src = sa_future_release(f[%d]);\n%sreleased[%d] |= rc == 0;\n", ind, s, ind, s);
    break;
  default:
    put("%src = sa_future_cancel(f[%d]);\n", ind, s);
    break;
  }
  check_rc(v, i, ind);
}

static void print_loop_action(const struct program *p, const struct verdict *v, int i,
                              const char *ind) {
  const struct action *a = &p->acts[i];
  char loop[32];
  snprintf(loop, sizeof loop, "&loops[%d][%d]", a->other, a->loop);
  if (a->probe == PROBE_CLOSE)
    put("%src = sa_loop_close(%s);\n", ind, loop);
  else if (a->probe == PROBE_RUN)
    put("%src = sa_run(%s, UV_RUN_NOWAIT);\n", ind, loop);
  else
    put("%sif ((rc = sa_enter(%s)) == 0)\n%s  sa_leave(%s);\n", ind, loop, ind, loop);
  check_rc(v, i, ind);
}

/* Action i, by actor `actor`; in_step: from a loop actor's step. */
static void print_action(const struct program *p, const struct verdict *v, int i,
                         const char *ind, bool in_step) {
  const struct action *a = &p->acts[i];
  int actor = acting(p, i);
  put("%s/* action %d: %s */\n", ind, i, act_name((enum act)a->kind));
  if (a->kind <= ACT_HOME_CALL) {
    print_call(p, v, i, ind);
  } else if (a->kind <= ACT_CANCEL) {
    print_future_action(p, v, i, ind);
  } else if (a->kind == ACT_HOME_START) {
    put("%src = sa_home_start(&home[%d]);\n", ind, a->home);
    check_rc(v, i, ind);
  } else if (a->kind == ACT_HOME_STOP) {
    put("%src = sa_home_stop(home[%d]);\n", ind, a->home);
    check_rc(v, i, ind);
  } else if (a->kind == ACT_LOOP) {
    print_loop_action(p, v, i, ind);
  } else if (a->kind == ACT_CLEANUP) {
    put("%src = sa_thread_cleanup();\n", ind);
    check_rc(v, i, ind);
    put("%sif (rc == 0)\n%s  kept_forget(%d, %s);\n", ind, ind, actor, in_step ? "loop" : "NULL");
  } else if (a->kind == ACT_FORK) {
    put("%sfork_child(child_%d);\n", ind, i);
  }
  print_expect(v, i, ind);
}

/* ---- what must be delivered when a loop goes away ------------------------------ */

/* The calls of actor `actor` made in actions [from, to) whose results are
 * due: each async call is delivered, to its continuation and its future,
 * and each op with a hook has completed (SA-THR-2, SA-LOOP-2). */
static void print_due(const struct program *p, int actor, int from, int to, int at,
                      const char *ind) {
  for (int i = from; i < to; i++) {
    const struct action *a = &p->acts[i];
    if (a->actor != actor || a->kind > ACT_HOME_CALL || !gen_call_async(p, i))
      continue;
    int s = a->slot;
    if (a->kind == ACT_DISPATCH_THEN)
      put("%sEXPECT(%d, delivered[%d] == 1);\n", ind, at, s);
    else
      put("%sEXPECT(%d, released[%d] || sa_future_status(f[%d], NULL) != SA_PENDING);\n"
          "%sEXPECT(%d, !then_ok[%d] || released[%d] || delivered[%d] == 1);\n",
          ind, at, s, s, ind, at, s, s, s);
    int items = a->kind == ACT_BATCH ? a->n : a->kind == ACT_CALL_BLOCKING ? 0 : 1;
    for (int k = 0; k < items && a->kind != ACT_HOME_CALL; k++) {
      char op[32];
      snprintf(op, sizeof op, a->kind == ACT_BATCH ? "op_%d[%d]" : "op_%d", i, k);
      if (a->op[k].hook)
        put("%sEXPECT(%d, !%s.starts || %s.done);\n", ind, at, op, op);
    }
  }
}

/* ---- actors -------------------------------------------------------------- */

static void print_plain_actor(const struct program *p, const struct verdict *v, int actor) {
  put("\n/* actor %d: plain code */\nstatic void *actor_%d(void *arg) {\n"
      "  int rc;\n  void *v = NULL;\n  (void)arg, (void)rc, (void)v;\n", actor, actor);
  int since = 0; /* the calls a cleanup is due for */
  for (int i = 0; i < p->nactions; i++) {
    const struct action *a = &p->acts[i];
    if (a->actor != actor)
      continue;
    put("  await_turn(%d);\n", i);
    if (a->kind == ACT_EXIT) {
      put("  return NULL; /* action %d: thread exit */\n}\n", i);
      return;
    }
    bool detached = a->flags & F_DETACHED;
    if (detached)
      put("  pass_turn(%d); /* the wait is detached: the next action runs meanwhile */\n",
          next_main(p, i));
    print_action(p, v, i, "  ", false);
    if (a->kind == ACT_CLEANUP) {
      print_due(p, actor, since, i, i, "  ");
      since = i;
    }
    if (!detached)
      put("  pass_turn(%d);\n", next_main(p, i));
  }
  put("  return NULL;\n}\n");
}

static void print_steps(const struct program *p, const struct verdict *v, int actor) {
  bool scoped = p->actor_kind[actor] == ACTOR_SCOPED;
  put("\n/* actor %d: its steps, in callbacks of its loop */\n"
      "static uv_async_t wake_%d;\nstatic int ending_%d;\n\n"
      "static void steps_%d(uv_async_t *wake) {\n  uv_loop_t *loop = wake->loop;\n"
      "  int rc;\n  void *v = NULL;\n  (void)loop, (void)rc, (void)v;\n",
      actor, actor, actor, actor);
  for (int i = 0; i < p->nactions; i++) {
    const struct action *a = &p->acts[i];
    if (a->actor != actor)
      continue;
    put("  if (is_turn(%d)) {\n", i);
    if (a->kind == ACT_SESSION || a->kind == ACT_EXIT) {
      put("    /* action %d: %s: the loop drains, then closes */\n"
          "    session_end(%d, wake, &ending_%d);\n    return;\n  }\n",
          i, act_name((enum act)a->kind), actor, actor);
      continue;
    }
    if (scoped)
      put("    CHECK(-1, sa_enter(loop), 0);\n");
    print_action(p, v, i, "    ", true);
    if (scoped)
      put("    CHECK(-1, sa_leave(loop), 0);\n");
    put("    pass_turn(%d);\n  }\n", next_main(p, i));
  }
  put("}\n");
}

static void print_loop_actor(const struct program *p, const struct verdict *v, int actor) {
  static const char *const how_name[] = {"", "sa_run", "uv_run inside sa_enter/sa_leave",
                                         "uv_run, each step inside sa_enter/sa_leave"};
  int kind = p->actor_kind[actor];
  print_steps(p, v, actor);
  put("\n/* actor %d: a loop run with %s */\nstatic void *actor_%d(void *arg) {\n"
      "  int rc;\n  (void)arg;\n",
      actor, how_name[kind], actor);
  int x = 0, first = -1;
  for (int i = 0; i < p->nactions; i++) {
    const struct action *a = &p->acts[i];
    if (a->actor != actor)
      continue;
    if (first < 0) {
      first = i;
      put("  await_turn(%d);\n  session(%d, &loops[%d][%d], %d, &wake_%d, steps_%d, &ending_%d);\n",
          i, actor, actor, x, kind - ACTOR_RUN, actor, actor, actor);
    }
    if (a->kind != ACT_SESSION && a->kind != ACT_EXIT)
      continue;
    put("  rc = close_loop(&loops[%d][%d]);\n  CHECK(%d, rc, 0);\n", actor, x, i);
    print_due(p, actor, first, i, i, "  ");
    print_expect(v, i, "  ");
    if (a->kind == ACT_EXIT) {
      put("  return NULL; /* action %d: thread exit */\n}\n", i);
      return;
    }
    put("  pass_turn(%d);\n", next_main(p, i));
    x ^= 1;
    first = -1;
  }
  put("  return NULL;\n}\n");
}

static void print_children(const struct program *p, const struct verdict *v) {
  for (int i = 0; i < p->nactions; i++) {
    if (!forks(&p->acts[i]) || p->acts[i].actor == ACTOR_CHILD)
      continue;
    put("\n/* the child of the fork at action %d: one thread, sync context (SA-THR-3) */\n"
        "static void child_%d(void) {\n  int rc;\n  void *v = NULL;\n  (void)rc, (void)v;\n"
        "  EXPECT(%d, sa_current_loop() == NULL);\n",
        i, i, i);
    for (int j = i + 1; j < p->nactions && p->acts[j].actor == ACTOR_CHILD; j++)
      print_action(p, v, j, "  ", false);
    put("  _exit(failures != 0);\n}\n");
  }
}

/* The homes still running at the end: the harness stops them. */
static void live_homes(const struct program *p, bool live[MAX_HOMES]) {
  memset(live, 0, MAX_HOMES * sizeof *live);
  for (int i = 0; i < p->nactions; i++) {
    const struct action *a = &p->acts[i];
    if (a->actor != ACTOR_CHILD && a->home >= 0 && a->home < MAX_HOMES &&
        (a->kind == ACT_HOME_START || a->kind == ACT_HOME_STOP))
      live[a->home] = a->kind == ACT_HOME_START;
  }
}

static bool acts(const struct program *p, int actor) {
  for (int i = 0; i < p->nactions; i++)
    if (p->acts[i].actor == actor)
      return true;
  return false;
}

static void print_main(const struct program *p, const struct verdict *v) {
  put("\nint main(void) {\n  pthread_t t[%d];\n  alarm(60);\n", MAX_ACTORS);
  for (int a = 0; a < p->nactors; a++)
    if (acts(p, a))
      put("  pthread_create(&t[%d], NULL, actor_%d, NULL);\n", a, a);
  for (int i = 0; i < p->nactions; i++) {
    const struct action *a = &p->acts[i];
    if (a->kind != ACT_EXIT)
      continue;
    put("  await_turn(%d); /* actor %d exits */\n  pthread_join(t[%d], NULL);\n", i, a->actor,
        a->actor);
    if (!is_loop_actor(p, a->actor)) {
      int since = 0;
      for (int j = 0; j < i; j++)
        if (p->acts[j].actor == a->actor && p->acts[j].kind == ACT_CLEANUP)
          since = j;
      print_due(p, a->actor, since, i, i, "  ");
      print_expect(v, i, "  ");
    }
    put("  pass_turn(%d);\n", next_main(p, i));
  }
  bool live[MAX_HOMES];
  live_homes(p, live);
  for (int h = 0; h < MAX_HOMES; h++)
    if (live[h])
      put("  CHECK(-1, sa_home_stop(home[%d]), 0);\n", h);
  put("  for (int k = 0; k < nchildren; k++) {\n    int status = 0;\n"
      "    waitpid(children[k], &status, 0);\n"
      "    EXPECT(-1, WIFEXITED(status) && WEXITSTATUS(status) == 0);\n  }\n");
  print_expect(v, -1, "  ");
  put("  for (int s = 0; s < NSLOTS; s++) /* every future still held has its result */\n"
      "    if (f[s].id && !released[s])\n"
      "      EXPECT(-1, sa_future_status(f[s], NULL) != SA_PENDING && sa_future_release(f[s]) == 0);\n");
  put("  CHECK(-1, sa_thread_cleanup(), 0);\n"
      "  fprintf(stderr, \"%%s\\n\", failures ? \"FAILED\" : \"passed\");\n"
      "  return failures != 0;\n}\n");
}

void repro_print(const struct program *p, const struct verdict *v, int fd) {
  static const char *const kinds[] = {"plain code", "a loop run with sa_run",
                                      "a loop run with uv_run inside sa_enter/sa_leave",
                                      "a loop run with uv_run, steps inside sa_enter/sa_leave"};
  out_fd = fd;
  put("/*\n * smartasync model, seed %llu: %d actors, %d actions.\n",
      (unsigned long long)p->seed, p->nactors, p->nactions);
  if (v && atomic_load(&v->failed) != V_PASS)
    put(" * FAILED %s at action %d:\n *   %s\n", v->check, v->action, v->detail);
  for (int a = 0; a < p->nactors; a++)
    if (acts(p, a))
      put(" * actor %d: %s\n", a, kinds[p->actor_kind[a]]);
  put(" *\n * Build: cc -std=gnu11 repro.c $(pkg-config --cflags --libs smartasync) -lpthread\n"
      " * The actions run one at a time in the program's order; each CHECK asserts\n"
      " * what the model allowed in the failing run. The loops run by themselves\n"
      " * between actions, as the scheduler lets them: rerun it if it passes.\n */\n");
  put("#define NSLOTS %d\n%s\n", p->nslots ? p->nslots : 1, helper);
  for (int i = 0; i < p->nactions; i++)
    if (forks(&p->acts[i]) && p->acts[i].actor != ACTOR_CHILD)
      put("static void child_%d(void);\n", i);
  print_ops(p);
  print_children(p, v);
  for (int a = 0; a < p->nactors; a++) {
    if (!acts(p, a))
      continue;
    if (is_loop_actor(p, a))
      print_loop_actor(p, v, a);
    else
      print_plain_actor(p, v, a);
  }
  print_main(p, v);
}
