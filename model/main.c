/*
 * sa_model: random API programs checked against the model of SPEC.md.
 *
 *   sa_model [--seed N] [--rounds N] [--duration SECONDS] [--threads N]
 *            [--no-fork] [--inline] [--timeout SECONDS] [--no-shrink]
 *            [--keep-going] [--print] [--verbose]
 *
 * --seed       the first program's seed (default 1); program k has seed N+k
 * --rounds     programs to run (default 100 unless --duration is given)
 * --duration   run programs until this many seconds have passed
 * --threads    at most this many actors (threads) per program (1-4, default 4)
 * --no-fork    no fork actions (ThreadSanitizer cannot fork a threaded process)
 * --inline     run programs in this process, not one child process each
 *              (under valgrind: its leak check is the process's); no shrinking
 * --timeout    a program making no progress this long is a hang (default 10)
 * --no-shrink  print a failing program whole
 * --shrink-seconds  time allowed for shrinking a failure (default 30)
 * --keep-going after a failure, go on with the next seed
 * --print      print the programs as C reproductions instead of running them
 * --stats      at the end, the return codes each kind of action gave
 * --verbose    a line per program
 *
 * A failure prints the seed, what broke, and the program as a C file that
 * builds against smartasync.h alone (shrunk: actions dropped while it still
 * fails the same way). Exit status: 0 when every program passed.
 */
#include "model.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static struct {
  uint64_t seed;
  long rounds;
  double duration;
  struct gen_options gen;
  bool inline_run;
  long timeout_ms;
  bool shrink;
  double shrink_seconds;
  bool keep_going;
  bool print;
  bool stats;
  bool verbose;
} opt = {1, 0, 0, {MAX_ACTORS, true}, false, 10000, true, 30, false, false, false, false};

static struct verdict *verdict; /* MAP_SHARED: written by the program's processes */

static double seconds(void) { return (double)uv_hrtime() / 1e9; }
static double started; /* when the run began */

static void usage(void) {
  fprintf(stderr, "usage: sa_model [--seed N] [--rounds N] [--duration SECONDS] [--threads N]\n"
                  "                [--no-fork] [--inline] [--timeout SECONDS] [--no-shrink]\n"
                  "                [--shrink-seconds S] [--keep-going] [--print] [--stats]\n"
                  "                [--verbose]\n");
  exit(2);
}

static void parse(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    bool takes = true;
    if (!strcmp(a, "--seed") && v)
      opt.seed = strtoull(v, NULL, 10);
    else if (!strcmp(a, "--rounds") && v)
      opt.rounds = atol(v);
    else if (!strcmp(a, "--duration") && v)
      opt.duration = atof(v);
    else if (!strcmp(a, "--threads") && v)
      opt.gen.max_actors = atoi(v);
    else if (!strcmp(a, "--timeout") && v)
      opt.timeout_ms = (long)(atof(v) * 1000);
    else if (!strcmp(a, "--shrink-seconds") && v)
      opt.shrink_seconds = atof(v);
    else {
      takes = false;
      if (!strcmp(a, "--no-fork"))
        opt.gen.fork = false;
      else if (!strcmp(a, "--inline"))
        opt.inline_run = true;
      else if (!strcmp(a, "--no-shrink"))
        opt.shrink = false;
      else if (!strcmp(a, "--keep-going"))
        opt.keep_going = true;
      else if (!strcmp(a, "--print"))
        opt.print = true;
      else if (!strcmp(a, "--stats"))
        opt.stats = true;
      else if (!strcmp(a, "--verbose"))
        opt.verbose = true;
      else
        usage();
    }
    i += takes;
  }
  if (opt.gen.max_actors < 1 || opt.gen.max_actors > MAX_ACTORS || opt.timeout_ms <= 0)
    usage();
  if (!opt.rounds && !opt.duration)
    opt.rounds = 100;
}

/* The program's process ended with `status`; a verdict that does not match
 * it (a crash, a sanitizer's exit) is a failure of its own. */
static void judge_exit(int status) {
  int expected = atomic_load(&verdict->failed);
  const char *why = NULL;
  char buf[96];
  if (WIFSIGNALED(status)) {
    snprintf(buf, sizeof buf, "the program's process was killed by signal %d (%s)",
             WTERMSIG(status), strsignal(WTERMSIG(status)));
    why = buf;
  } else if (WEXITSTATUS(status) != (expected == V_PASS ? 0 : expected == V_HANG ? 2 : 1)) {
    snprintf(buf, sizeof buf, "the program's process exited with status %d (a sanitizer?)",
             WEXITSTATUS(status));
    why = buf;
  }
  int pass = V_PASS;
  if (why && atomic_compare_exchange_strong(&verdict->failed, &pass, V_FAILED)) {
    verdict->action = -1;
    snprintf(verdict->check, sizeof verdict->check, "crash");
    snprintf(verdict->detail, sizeof verdict->detail, "%s", why);
  }
}

/* Run one program in a process of its own, at most a few watchdog periods. */
static int run_isolated(const struct program *p, bool quiet) {
  memset(verdict, 0, sizeof *verdict);
  if (opt.inline_run)
    return run_program(p, verdict, quiet, opt.timeout_ms, true);
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) {
    perror("sa_model: fork");
    exit(2);
  }
  if (pid == 0)
    _exit(run_program(p, verdict, quiet, opt.timeout_ms, false));
  double limit = seconds() + 3.0 * (double)opt.timeout_ms / 1000 + 5;
  int status = 0;
  for (;;) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid)
      break;
    if (r < 0 && errno != EINTR)
      break;
    if (seconds() > limit) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      int pass = V_PASS;
      if (atomic_compare_exchange_strong(&verdict->failed, &pass, V_HANG)) {
        verdict->action = -1;
        snprintf(verdict->check, sizeof verdict->check, "hang");
        snprintf(verdict->detail, sizeof verdict->detail, "killed after %.0f s",
                 3.0 * (double)opt.timeout_ms / 1000 + 5);
      }
      return atomic_load(&verdict->failed);
    }
    usleep(2000);
  }
  judge_exit(status);
  return atomic_load(&verdict->failed);
}

/* ---- shrinking ------------------------------------------------------------ */

static bool uses_slot(const struct action *a, int slot) {
  return a->kind >= ACT_STATUS && a->kind <= ACT_CANCEL && a->slot == slot;
}

/* p without action i and what depends on it: a fork's child actions, a
 * call's later uses of its slot. */
static void without_action(const struct program *p, int i, struct program *out) {
  const struct action *a = &p->acts[i];
  bool forks = a->kind == ACT_FORK || (a->kind <= ACT_DISPATCH_UNTIL && a->op[0].fork);
  bool call = a->kind <= ACT_HOME_CALL;
  int block_end = i + 1;
  while (forks && block_end < p->nactions && p->acts[block_end].actor == ACTOR_CHILD)
    block_end++;
  *out = *p;
  out->nactions = 0;
  for (int j = 0; j < p->nactions; j++) {
    const struct action *b = &p->acts[j];
    bool drop = (j >= i && j < block_end) || (call && j > i && uses_slot(b, a->slot));
    if (!drop)
      out->acts[out->nactions++] = *b;
  }
}

static void without_actor(const struct program *p, int actor, struct program *out) {
  *out = *p;
  out->nactions = 0;
  bool in_block = false; /* the child actions of a dropped fork */
  for (int j = 0; j < p->nactions; j++) {
    const struct action *b = &p->acts[j];
    if (b->actor != ACTOR_CHILD)
      in_block = b->actor == actor;
    if (!in_block)
      out->acts[out->nactions++] = *b;
  }
}

/* Whether p still fails with `check` (timing decides some: up to 3 tries). */
static bool still_fails(const struct program *p, const char *check) {
  if (!gen_valid(p))
    return false;
  for (int t = 0; t < 3; t++)
    if (run_isolated(p, true) != V_PASS && !strcmp(verdict->check, check))
      return true;
  return false;
}

static void shrink(struct program *p, const char *check) {
  double end = seconds() + opt.shrink_seconds;
  struct program cand;
  bool progress = true;
  while (progress && seconds() < end) {
    progress = false;
    for (int a = 0; a < p->nactors && seconds() < end; a++) {
      without_actor(p, a, &cand);
      if (cand.nactions < p->nactions && still_fails(&cand, check)) {
        *p = cand;
        progress = true;
      }
    }
    for (int i = p->nactions - 1; i >= 0 && seconds() < end; i--) {
      if (i >= p->nactions || p->acts[i].kind == ACT_EXIT)
        continue;
      without_action(p, i, &cand);
      if (still_fails(&cand, check)) {
        *p = cand;
        progress = true;
      }
    }
  }
}

/* ---- what the runs exercised ---------------------------------------------------- */

#define CODES 16 /* distinct return codes counted per kind of action */

struct code_counts {
  int n;
  int code[CODES];
  long count[CODES];
};

static struct code_counts stats[ACT_COUNT];

static void count_outcomes(const struct program *p) {
  for (int i = 0; i < p->nactions; i++) {
    const struct outcome *o = &verdict->outcome[i];
    if (!o->ran)
      continue;
    struct code_counts *s = &stats[p->acts[i].kind];
    int k = 0;
    while (k < s->n && s->code[k] != o->rc)
      k++;
    if (k == s->n && s->n < CODES)
      s->code[s->n++] = o->rc;
    if (k < s->n)
      s->count[k]++;
  }
}

static void print_stats(void) {
  printf("model: return codes by action (count):\n");
  for (int kind = 0; kind < ACT_COUNT; kind++) {
    if (!stats[kind].n)
      continue;
    printf("  %-22s", act_name((enum act)kind));
    for (int k = 0; k < stats[kind].n; k++)
      printf(" %s %ld", sa_strerror(stats[kind].code[k]), stats[kind].count[k]);
    printf("\n");
  }
}

/* ---- the runs -------------------------------------------------------------- */

/* The checks failed so far: each is shrunk and printed once. */
static char reported[64][sizeof verdict->check];
static int nreported;

static bool seen_before(const char *check) {
  for (int i = 0; i < nreported; i++)
    if (!strcmp(reported[i], check))
      return true;
  if (nreported < 64)
    snprintf(reported[nreported++], sizeof reported[0], "%s", check);
  return false;
}

static void report(struct program *p) {
  char check[sizeof verdict->check];
  snprintf(check, sizeof check, "%s", verdict->check);
  printf("model: seed %llu FAILED: %s: %s (action %d, at %.1f s)\n",
         (unsigned long long)p->seed, check, verdict->detail, verdict->action,
         seconds() - started);
  if (seen_before(check)) {
    printf("model: seed %llu: the same check failed before: reproduction above\n",
           (unsigned long long)p->seed);
    return;
  }
  int before = p->nactions;
  if (opt.shrink && !opt.inline_run) {
    shrink(p, check);
    /* The reproduction asserts what the model allowed in a failing run. */
    for (int t = 0; t < 5; t++)
      if (run_isolated(p, true) != V_PASS && !strcmp(verdict->check, check))
        break;
    printf("model: seed %llu: shrunk from %d to %d actions\n", (unsigned long long)p->seed,
           before, p->nactions);
  }
  fflush(stdout);
  repro_print(p, verdict, STDOUT_FILENO);
}

int main(int argc, char **argv) {
  parse(argc, argv);
  setvbuf(stdout, NULL, _IOLBF, 0);
  verdict = mmap(NULL, sizeof *verdict, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (verdict == MAP_FAILED) {
    perror("sa_model: mmap");
    return 2;
  }
  static struct program p;
  started = seconds();
  long runs = 0, failed = 0;
  for (uint64_t seed = opt.seed;; seed++) {
    if (opt.rounds && runs >= opt.rounds)
      break;
    if (opt.duration && seconds() - started >= opt.duration)
      break;
    gen_program(&p, seed, &opt.gen);
    runs++;
    if (opt.print) {
      repro_print(&p, NULL, STDOUT_FILENO);
      continue;
    }
    int v = run_isolated(&p, false);
    if (opt.stats)
      count_outcomes(&p);
    if (opt.verbose)
      printf("model: seed %llu: %d actors, %d actions: %s (at %.1f s)\n",
             (unsigned long long)seed, p.nactors, p.nactions,
             v == V_PASS ? "pass" : verdict->check, seconds() - started);
    if (v != V_PASS) {
      failed++;
      report(&p);
      if (!opt.keep_going)
        break;
    }
  }
  if (opt.stats)
    print_stats();
  if (!opt.print)
    printf("model: %ld programs, %ld failed (%.1f s)\n", runs, failed, seconds() - started);
  return failed ? 1 : 0;
}
