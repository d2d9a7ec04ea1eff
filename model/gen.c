/*
 * The generator: a random program from a seed.
 *
 * A program is a list of actions in one global order; each names the actor
 * (thread) that performs it, and the run performs them in that order. The
 * generator keeps an abstract state of what the program has made (slots,
 * homes, loop sessions, exited actors) and picks only actions whose
 * preconditions hold there. The preconditions are what keeps a program
 * free of hangs that the harness, not the implementation, would cause: a
 * wait with no deadline is only made on a future whose loop runs by itself
 * (a loop actor's loop), or on one whose owner has gone (delivered then),
 * or by its own thread, which drives its private loop. gen_valid() replays
 * the same rules, so a shrunk program keeps them.
 */
#include "model.h"

#include <string.h>

struct gslot {
  bool made;
  int action;    /* the call that made it */
  bool async;    /* a future is expected */
  bool in_child; /* made in the fork child */
  int owner;
  int epoch;     /* the owner's teardowns when it was made */
};

struct gstate {
  const struct program *p;
  struct {
    bool exited;
    bool in_session;  /* loop actors: a session is running */
    int cur;          /* loop actors: the loop the next session uses */
    bool ran[2], closed[2];
    int teardowns;    /* sa_thread_cleanup calls and the exit */
  } actor[MAX_ACTORS];
  struct gslot slot[MAX_SLOTS];
  bool home_live[MAX_HOMES + 1];
  bool home_at_fork[MAX_HOMES];
  bool ran_at_fork[MAX_ACTORS][2];
  /* inside a fork child's actions */
  bool in_child;
  int child_actor;
};

static bool is_loop_actor(const struct gstate *s, int a) {
  return s->p->actor_kind[a] != ACTOR_PLAIN;
}

static bool is_call(int kind) { return kind <= ACT_HOME_CALL; }
static bool is_future_action(int kind) { return kind >= ACT_STATUS && kind <= ACT_CANCEL; }

/* Whether action a, performed in context `in_step` (a loop actor's step,
 * async context) gives a future. */
static bool call_async(const struct action *a, bool in_step) {
  if (a->mode == MODE_BAD)
    return false;
  return a->mode == SA_MODE_ASYNC || (a->mode == SA_MODE_AUTO && in_step);
}

static bool op_forks(const struct action *a) {
  return is_call(a->kind) && a->kind != ACT_BATCH && a->op[0].fork;
}

/* Whether the future of slot `sl` is delivered without anyone waiting for
 * it: its loop runs by itself, or its owner's loops went away since. */
static bool delivers_alone(const struct gstate *s, const struct gslot *sl) {
  if (!sl->made || !sl->async)
    return true; /* the null future: SA_EINVAL at once */
  return is_loop_actor(s, sl->owner) || s->actor[sl->owner].teardowns > sl->epoch;
}

/* Whether a home call or stop may name home h: a live home, or in a fork
 * child one inherited from the parent (refused with SA_EPERM). */
static bool home_usable(const struct gstate *s, int h, bool child) {
  if (h < 0 || h > MAX_HOMES)
    return false;
  if (h == CHILD_HOME)
    return child && s->home_live[h];
  return child ? s->home_at_fork[h] : s->home_live[h];
}

static bool call_allowed(const struct gstate *s, const struct action *a, bool child) {
  if (a->slot < 0 || a->slot >= MAX_SLOTS || s->slot[a->slot].made)
    return false;
  if (a->kind == ACT_BATCH && (a->n > MAX_ITEMS || (a->loop == SA_BATCH_FIRST && a->n == 0)))
    return false;
  if (a->kind == ACT_HOME_CALL && (a->op[0].keep || !home_usable(s, a->home, child)))
    return false; /* a kept handle would be touched from the home thread */
  return !(op_forks(a) && child);
}

static bool future_action_allowed(const struct gstate *s, const struct action *a, int who,
                                  bool child) {
  if (a->slot < 0 || a->slot >= MAX_SLOTS)
    return false;
  const struct gslot *sl = &s->slot[a->slot];
  if (a->flags & F_DETACHED) {
    bool own_wait = sl->made && sl->owner == who &&
                    (a->kind == ACT_WAIT || a->kind == ACT_WAIT_UNTIL);
    if (child || is_loop_actor(s, who) || !own_wait)
      return false;
  }
  /* Only its owner could deliver it: the wait would be the harness's hang. */
  return !(a->kind == ACT_WAIT && !child && sl->owner != who && !delivers_alone(s, sl));
}

static bool loop_action_allowed(const struct gstate *s, const struct action *a, int who,
                                bool child) {
  if (a->other < 0 || a->other >= s->p->nactors || a->loop > 1 ||
      !is_loop_actor(s, a->other) || a->probe > PROBE_ENTER)
    return false;
  if (child)
    return s->ran_at_fork[a->other][a->loop];
  if (a->other == who && a->loop == s->actor[who].cur) /* running, from a step: SA_EBUSY */
    return a->probe != PROBE_CLOSE;
  return s->actor[a->other].closed[a->loop];
}

/* The rules for action i in state s; false if it may not be performed. */
static bool allowed(const struct gstate *s, int i) {
  const struct action *a = &s->p->acts[i];
  bool child = a->actor == ACTOR_CHILD;
  if (child && !s->in_child)
    return false; /* a child's action follows a fork */
  int who = child ? s->child_actor : a->actor;
  if (who < 0 || who >= s->p->nactors || s->actor[who].exited)
    return false;
  if (is_call(a->kind))
    return call_allowed(s, a, child);
  if (is_future_action(a->kind))
    return future_action_allowed(s, a, who, child);
  switch (a->kind) {
  case ACT_HOME_START:
    if (a->home < 0 || a->home > MAX_HOMES || s->home_live[a->home])
      return false;
    return child == (a->home == CHILD_HOME);
  case ACT_HOME_STOP:
    return home_usable(s, a->home, child);
  case ACT_LOOP:
    return loop_action_allowed(s, a, who, child);
  case ACT_SESSION:
    return !child && is_loop_actor(s, who);
  case ACT_CLEANUP:
    return true;
  case ACT_FORK:
  case ACT_EXIT:
    return !child;
  }
  return false;
}

/* A loop actor's action runs in a session: the first one after a
 * session's end starts the next. */
static void session_begin(struct gstate *s, int who) {
  if (!is_loop_actor(s, who) || s->actor[who].in_session)
    return;
  int cur = s->actor[who].cur;
  s->actor[who].in_session = true;
  s->actor[who].ran[cur] = true;
  s->actor[who].closed[cur] = false;
}

static void session_end(struct gstate *s, int who) {
  int cur = s->actor[who].cur;
  s->actor[who].in_session = false;
  s->actor[who].closed[cur] = true;
  s->actor[who].cur = cur ^ 1;
}

static void enter_child(struct gstate *s, int who) {
  s->in_child = true;
  s->child_actor = who;
  for (int h = 0; h < MAX_HOMES; h++)
    s->home_at_fork[h] = s->home_live[h];
  for (int a = 0; a < s->p->nactors; a++)
    for (int x = 0; x < 2; x++)
      s->ran_at_fork[a][x] = s->actor[a].ran[x];
  s->home_live[CHILD_HOME] = false;
}

/* Apply action i (allowed) to s. */
static void apply(struct gstate *s, int i) {
  const struct action *a = &s->p->acts[i];
  bool child = a->actor == ACTOR_CHILD;
  if (!child && s->in_child) { /* the child's actions ended: back in the parent */
    s->in_child = false;
    for (int sl = 0; sl < MAX_SLOTS; sl++)
      if (s->slot[sl].in_child)
        s->slot[sl] = (struct gslot){0};
  }
  int who = child ? s->child_actor : a->actor;
  if (!child && a->kind != ACT_EXIT)
    session_begin(s, who);
  bool in_step = !child && is_loop_actor(s, who);
  if (is_call(a->kind)) {
    s->slot[a->slot] = (struct gslot){.made = true, .action = i, .async = call_async(a, in_step),
                                      .in_child = child, .owner = who,
                                      .epoch = s->actor[who].teardowns};
    if (op_forks(a))
      enter_child(s, who);
    return;
  }
  switch (a->kind) {
  case ACT_HOME_START:
    s->home_live[a->home] = true;
    break;
  case ACT_HOME_STOP:
    if (!child || a->home == CHILD_HOME)
      s->home_live[a->home] = false;
    break;
  case ACT_SESSION:
    session_end(s, who);
    break;
  case ACT_CLEANUP:
    if (!in_step && !child) /* a child's own loops are not its parent's */
      s->actor[who].teardowns++;
    break;
  case ACT_FORK:
    enter_child(s, who);
    break;
  case ACT_EXIT:
    if (s->actor[who].in_session)
      session_end(s, who);
    s->actor[who].exited = true;
    s->actor[who].teardowns++;
    break;
  }
}

bool gen_valid(const struct program *p) {
  struct gstate s = {.p = p};
  bool exited_seen[MAX_ACTORS] = {false};
  if (p->nactors < 1 || p->nactors > MAX_ACTORS || p->nactions > MAX_ACTIONS)
    return false;
  for (int i = 0; i < p->nactions; i++) {
    if (!allowed(&s, i))
      return false;
    bool forks = p->acts[i].kind == ACT_FORK || op_forks(&p->acts[i]);
    if (forks && (i + 1 == p->nactions || p->acts[i + 1].actor != ACTOR_CHILD))
      return false; /* a fork with no child block */
    if (p->acts[i].kind == ACT_EXIT)
      exited_seen[p->acts[i].actor] = true;
    apply(&s, i);
  }
  /* Every actor that acts ends with its exit. */
  for (int i = 0; i < p->nactions; i++)
    if (p->acts[i].actor >= 0 && !exited_seen[p->acts[i].actor])
      return false;
  return true;
}

bool gen_call_async(const struct program *p, int i) {
  const struct action *a = &p->acts[i];
  return call_async(a, a->actor != ACTOR_CHILD && p->actor_kind[a->actor] != ACTOR_PLAIN);
}

/* ---- random choices ---------------------------------------------------- */

struct gen {
  struct program *p;
  struct gstate s;
  uint64_t rng;
  const struct gen_options *opt;
  int budget;    /* main-program actions still to generate */
  int last_slot; /* the slot most recently made or used */
};

static uint64_t next_rand(struct gen *g) { /* splitmix64 */
  uint64_t z = (g->rng += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

static unsigned below(struct gen *g, unsigned n) { return (unsigned)(next_rand(g) % n); }
static bool chance(struct gen *g, unsigned percent) { return below(g, 100) < percent; }

/* An index into `weights` (n of them), drawn by weight. */
static int pick(struct gen *g, const unsigned *weights, int n) {
  unsigned total = 0;
  for (int i = 0; i < n; i++)
    total += weights[i];
  unsigned r = below(g, total ? total : 1);
  for (int i = 0; i < n; i++) {
    if (r < weights[i])
      return i;
    r -= weights[i];
  }
  return 0;
}

static struct op_spec random_op(struct gen *g) {
  static const unsigned when_w[] = {30, 30, 40};
  struct op_spec op = {.when = (uint8_t)pick(g, when_w, 3), .ms = (uint8_t)(1 + below(g, 12)),
                       .hook = chance(g, 70), .fail = chance(g, 30), .busy = chance(g, 8)};
  if (chance(g, 10))
    op.keep = chance(g, 70) ? 1 : 2; /* keep a handle open, or close it */
  return op;
}

static int random_mode(struct gen *g) {
  static const unsigned w[] = {35, 20, 43, 2}; /* auto, sync, async, invalid */
  int m = pick(g, w, 4);
  return m == 3 ? MODE_BAD : m;
}

/* Append action a if its rules hold; returns whether it was kept. */
static bool emit(struct gen *g, struct action a) {
  struct program *p = g->p;
  bool forks = a.kind == ACT_FORK || op_forks(&a);
  if (p->nactions + (forks ? 2 : 1) > MAX_ACTIONS)
    return false;
  p->acts[p->nactions] = a;
  if (!allowed(&g->s, p->nactions))
    return false;
  apply(&g->s, p->nactions);
  p->nactions++;
  if (a.actor != ACTOR_CHILD)
    g->budget--;
  return true;
}

static int new_slot(struct gen *g) {
  return g->p->nslots < MAX_SLOTS ? g->p->nslots++ : -1;
}

static bool holds_future(const struct gen *g, int slot) {
  const struct gslot *sl = &g->s.slot[slot];
  return sl->made && sl->async && g->p->acts[sl->action].kind != ACT_DISPATCH_THEN;
}

/* A slot to act on: mostly the last one, else mostly one holding a future
 * (the null future gets SA_EINVAL at once), else any made so far. */
static int some_slot(struct gen *g) {
  int n = g->p->nslots;
  if (n == 0)
    return -1;
  if (g->last_slot >= 0 && chance(g, 55))
    return g->last_slot;
  int any = (int)below(g, (unsigned)n);
  if (chance(g, 15))
    return any;
  for (int k = 0; k < n; k++)
    if (holds_future(g, (any + k) % n))
      return (any + k) % n;
  return any;
}

static void gen_child_block(struct gen *g, int who);

static bool gen_call(struct gen *g, int who, bool child) {
  static const unsigned kind_w[] = {30, 15, 15, 10, 12, 18};
  struct action a = {.kind = (uint8_t)pick(g, kind_w, 6), .actor = child ? ACTOR_CHILD : (int8_t)who,
                     .mode = (uint8_t)random_mode(g), .home = -1, .cont = CONT_RECORD};
  a.slot = (int8_t)new_slot(g);
  if (a.slot < 0)
    return false;
  a.op[0] = random_op(g);
  switch (a.kind) {
  case ACT_DISPATCH_THEN:
    a.cont = chance(g, 40) ? CONT_FOLLOW : CONT_RECORD;
    break;
  case ACT_DISPATCH_UNTIL:
    a.ms = (uint16_t)below(g, 15);
    break;
  case ACT_CALL_BLOCKING:
    a.ms = (uint16_t)below(g, 4);
    break;
  case ACT_BATCH:
    a.loop = chance(g, 50) ? SA_BATCH_ALL : SA_BATCH_FIRST;
    a.n = (uint8_t)(below(g, MAX_ITEMS + 1));
    if (a.loop == SA_BATCH_FIRST && a.n == 0)
      a.n = 1;
    for (int k = 0; k < a.n; k++)
      a.op[k] = random_op(g);
    break;
  case ACT_HOME_CALL: {
    int live[MAX_HOMES + 1], n = 0;
    for (int h = 0; h <= MAX_HOMES; h++)
      if (g->s.home_live[h] || (child && h < MAX_HOMES && g->s.home_at_fork[h]))
        live[n++] = h;
    if (n == 0) {
      g->p->nslots--;
      return false;
    }
    a.home = (int8_t)live[below(g, (unsigned)n)];
    a.op[0].keep = 0;
    break;
  }
  }
  a.op[0].fork = g->opt->fork && !child && a.kind <= ACT_DISPATCH_UNTIL && chance(g, 4);
  if (!emit(g, a)) {
    g->p->nslots--;
    return false;
  }
  g->last_slot = a.slot;
  if (a.op[0].fork)
    gen_child_block(g, who);
  return true;
}

static bool gen_future_action(struct gen *g, int who, bool child) {
  static const unsigned kind_w[] = {20, 18, 12, 15, 20, 15};
  int slot = some_slot(g);
  if (slot < 0)
    return false;
  struct action a = {.kind = (uint8_t)(ACT_STATUS + pick(g, kind_w, 6)),
                     .actor = child ? ACTOR_CHILD : (int8_t)who, .slot = (int8_t)slot,
                     .home = -1};
  const struct gslot *sl = &g->s.slot[slot];
  if (a.kind == ACT_THEN) {
    static const unsigned cont_w[] = {50, 25, 25};
    a.cont = (uint8_t)pick(g, cont_w, 3);
  }
  if (a.kind == ACT_WAIT && !child && sl->owner != who && !delivers_alone(&g->s, sl))
    a.kind = ACT_WAIT_UNTIL;
  if (a.kind == ACT_WAIT_UNTIL)
    a.ms = (uint16_t)below(g, 25);
  bool own_plain = !child && sl->made && sl->owner == who && !is_loop_actor(&g->s, who);
  if ((a.kind == ACT_WAIT || a.kind == ACT_WAIT_UNTIL) && own_plain && chance(g, 50))
    a.flags |= F_DETACHED;
  if (!emit(g, a))
    return false;
  g->last_slot = slot;
  return true;
}

/* What a fork child does: act on what it inherited, then on fresh calls,
 * and clean up. */
static void gen_child_block(struct gen *g, int who) {
  int n = 2 + (int)below(g, 6);
  for (int k = 0; k < n && g->p->nactions < MAX_ACTIONS - 2; k++) {
    unsigned r = below(g, 100);
    if (r < 40) {
      gen_future_action(g, who, true);
    } else if (r < 55) {
      int h = (int)below(g, MAX_HOMES + 1);
      struct action a = {.actor = ACTOR_CHILD, .home = (int8_t)h, .slot = -1};
      a.kind = h == CHILD_HOME && !g->s.home_live[h] ? ACT_HOME_START
               : chance(g, 75)                      ? ACT_HOME_CALL
                                                    : ACT_HOME_STOP;
      if (a.kind == ACT_HOME_CALL) {
        a.slot = (int8_t)new_slot(g);
        a.mode = (uint8_t)below(g, 3);
        a.op[0] = random_op(g);
        a.op[0].keep = 0;
        if (a.slot < 0 || !emit(g, a)) {
          if (a.slot >= 0)
            g->p->nslots--;
        } else {
          g->last_slot = a.slot;
        }
      } else {
        emit(g, a);
      }
    } else if (r < 65) {
      struct action a = {.kind = ACT_LOOP, .actor = ACTOR_CHILD, .slot = -1, .home = -1,
                         .other = (int8_t)below(g, (unsigned)g->p->nactors),
                         .loop = (uint8_t)below(g, 2), .probe = (uint8_t)below(g, 3)};
      emit(g, a);
    } else {
      gen_call(g, who, true);
    }
  }
  emit(g, (struct action){.kind = ACT_CLEANUP, .actor = ACTOR_CHILD, .slot = -1, .home = -1});
}

static void gen_other(struct gen *g, int who) {
  struct action a = {.actor = (int8_t)who, .slot = -1, .home = -1};
  unsigned r = below(g, 100);
  if (r < 30) {
    int h = (int)below(g, MAX_HOMES);
    a.home = (int8_t)h;
    a.kind = g->s.home_live[h] ? ACT_HOME_STOP : ACT_HOME_START;
  } else if (r < 45) {
    a.kind = ACT_CLEANUP;
  } else if (r < 60) {
    a.kind = ACT_LOOP;
    a.other = (int8_t)below(g, (unsigned)g->p->nactors);
    a.loop = (uint8_t)below(g, 2);
    a.probe = (uint8_t)below(g, 3);
    if (a.other == who && a.loop == g->s.actor[who].cur && a.probe == PROBE_CLOSE)
      a.probe = chance(g, 50) ? PROBE_RUN : PROBE_ENTER; /* not a running loop's close */
  } else if (r < 80) {
    a.kind = ACT_SESSION;
  } else {
    a.kind = ACT_FORK;
    if (g->opt->fork && emit(g, a))
      gen_child_block(g, who);
    return;
  }
  emit(g, a);
}

void gen_program(struct program *p, uint64_t seed, const struct gen_options *opt) {
  struct gen g = {.p = p, .rng = seed * 0x2545f4914f6cdd1du + 1, .opt = opt, .last_slot = -1};
  memset(p, 0, sizeof *p);
  p->seed = seed;
  int max = opt->max_actors < 1 ? 1 : opt->max_actors > MAX_ACTORS ? MAX_ACTORS : opt->max_actors;
  p->nactors = 1 + (int)below(&g, (unsigned)max);
  for (int a = 0; a < p->nactors; a++)
    p->actor_kind[a] = chance(&g, 50) ? ACTOR_PLAIN : (uint8_t)(ACTOR_RUN + below(&g, 3));
  g.s.p = p;
  g.budget = 6 + (int)below(&g, 30);
  int homes = (int)below(&g, 3);
  for (int h = 0; h < homes && h < MAX_HOMES; h++)
    emit(&g, (struct action){.kind = ACT_HOME_START, .actor = (int8_t)below(&g, (unsigned)p->nactors),
                             .slot = -1, .home = (int8_t)h});
  int tries = 0;
  while (g.budget > 0 && p->nactions < MAX_ACTIONS - 8 - p->nactors && tries++ < 400) {
    int who = (int)below(&g, (unsigned)p->nactors);
    unsigned r = below(&g, 100);
    if (r < 50)
      gen_call(&g, who, false);
    else if (r < 88)
      gen_future_action(&g, who, false);
    else
      gen_other(&g, who);
  }
  /* Every actor ends, in a random order, with whatever is still in flight. */
  int order[MAX_ACTORS];
  for (int a = 0; a < p->nactors; a++)
    order[a] = a;
  for (int a = p->nactors - 1; a > 0; a--) {
    int b = (int)below(&g, (unsigned)a + 1), t = order[a];
    order[a] = order[b];
    order[b] = t;
  }
  for (int k = 0; k < p->nactors; k++) {
    int who = order[k];
    /* Others act on what the ones gone left behind. */
    for (int extra = (int)below(&g, 3); extra > 0 && k > 0; extra--)
      gen_future_action(&g, order[p->nactors - 1], false);
    emit(&g, (struct action){.kind = ACT_EXIT, .actor = (int8_t)who, .slot = -1, .home = -1});
  }
}

const char *act_name(enum act kind) {
  static const char *const names[ACT_COUNT] = {
      "sa_dispatch", "sa_dispatch_then", "sa_dispatch_until", "sa_call_blocking",
      "sa_batch", "sa_home_call", "sa_future_status", "sa_future_then", "sa_future_wait",
      "sa_future_wait_until", "sa_future_release", "sa_future_cancel", "sa_home_start",
      "sa_home_stop", "loop", "session end", "sa_thread_cleanup", "fork", "thread exit"};
  return kind < ACT_COUNT ? names[kind] : "?";
}

const char *mode_name(int mode) {
  switch (mode) {
  case SA_MODE_AUTO: return "SA_MODE_AUTO";
  case SA_MODE_SYNC: return "SA_MODE_SYNC";
  case SA_MODE_ASYNC: return "SA_MODE_ASYNC";
  }
  return "(sa_mode_t)7";
}
