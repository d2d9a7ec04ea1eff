/*
 * Two benchmark cases measured interleaved, A B B A A B ..., so that what
 * the machine does meanwhile (other builds, frequency changes) falls on
 * both alike: the ratio within a pair holds from run to run where the
 * medians of separate runs do not. Prints one line per pair, the two costs
 * in ns per call, tab-separated; bench/gate.py and bench/growth.py read
 * them.
 *
 *   bench_paired [--samples N] [--sample-us US] [--threads T] CASE_A CASE_B
 *
 * Each case runs on threads of its own (T each), set up once: the cases
 * keep their state per thread, so two cases cannot share one. A sample
 * times k runs of a case on each of its T threads, started together;
 * its cost is their mean time per call. k is found in the warm-up: the
 * smallest power of two for which a sample lasts US microseconds.
 */
#include "cases.h"

#include <pthread.h>
#include <semaphore.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_THREADS 64
#define MAX_SAMPLES 10000
#define MAX_SAMPLE_US 10000000

struct side;

struct worker {
  struct side *side;
  pthread_t thread;
  double ns;   /* the time of its last sample */
  long failed; /* failed calls so far */
};

struct side {
  const struct bench_case *c;
  int nthreads;
  long runs;                /* per thread in the next sample; 0: stop */
  sem_t go, done;           /* one post per thread: to start, when finished */
  pthread_barrier_t start;  /* the threads of a sample start together */
  struct worker workers[MAX_THREADS];
};

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void wait_sem(sem_t *sem) {
  while (sem_wait(sem) != 0)
    ; /* EINTR */
}

static void *worker_main(void *arg) {
  struct worker *w = arg;
  struct side *s = w->side;
  s->c->setup();
  sem_post(&s->done);
  for (;;) {
    wait_sem(&s->go);
    long runs = s->runs;
    if (runs == 0)
      break;
    pthread_barrier_wait(&s->start);
    double t0 = now_ns();
    for (long i = 0; i < runs; i++)
      w->failed += s->c->run();
    w->ns = now_ns() - t0;
    sem_post(&s->done);
  }
  s->c->teardown();
  sem_post(&s->done);
  return NULL;
}

static bool side_start(struct side *s, const struct bench_case *c, int nthreads) {
  s->c = c;
  s->nthreads = nthreads;
  if (sem_init(&s->go, 0, 0) || sem_init(&s->done, 0, 0) ||
      pthread_barrier_init(&s->start, NULL, (unsigned)nthreads))
    return false;
  for (int i = 0; i < nthreads; i++) {
    s->workers[i] = (struct worker){.side = s};
    if (pthread_create(&s->workers[i].thread, NULL, worker_main, &s->workers[i]))
      return false;
  }
  for (int i = 0; i < nthreads; i++)
    wait_sem(&s->done); /* set up */
  return true;
}

/* Tells every thread of the side to run `runs` times (0: to stop), and
 * waits until all have. */
static void side_order(struct side *s, long runs) {
  s->runs = runs;
  for (int i = 0; i < s->nthreads; i++)
    sem_post(&s->go);
  for (int i = 0; i < s->nthreads; i++)
    wait_sem(&s->done);
}

/* One sample: ns per call, the mean over the side's threads. */
static double side_sample(struct side *s) {
  side_order(s, s->runs);
  double ns = 0;
  for (int i = 0; i < s->nthreads; i++)
    ns += s->workers[i].ns;
  return ns / s->nthreads / ((double)s->runs * s->c->batch);
}

/* Warm-up: the runs per sample that make a sample last `sample_ns`. */
static void side_calibrate(struct side *s, double sample_ns) {
  s->runs = 1;
  while (side_sample(s) * (double)s->runs * s->c->batch < sample_ns && s->runs < (1L << 30))
    s->runs *= 2;
}

/* Stops the side's threads; returns their failed calls. */
static long side_stop(struct side *s) {
  long failed = 0;
  side_order(s, 0);
  for (int i = 0; i < s->nthreads; i++) {
    pthread_join(s->workers[i].thread, NULL);
    failed += s->workers[i].failed;
  }
  pthread_barrier_destroy(&s->start);
  sem_destroy(&s->go);
  sem_destroy(&s->done);
  return failed;
}

static int usage(void) {
  fprintf(stderr, "usage: bench_paired [--samples N] [--sample-us US] [--threads T] "
                  "CASE_A CASE_B\n");
  return 2;
}

struct option {
  const char *name;
  long min, max;
  long *value;
};

/* Sets the option called `name` to `text`; false if none is, or if the
 * value is not a number in its range. */
static bool set_option(const struct option *options, size_t n, const char *name,
                       const char *text) {
  for (size_t k = 0; k < n; k++) {
    if (strcmp(name, options[k].name) != 0)
      continue;
    char *end;
    long v = strtol(text, &end, 10);
    if (*text == '\0' || *end != '\0' || v < options[k].min || v > options[k].max)
      return false;
    *options[k].value = v;
    return true;
  }
  return false;
}

static const struct bench_case *find_case(const char *name, long threads) {
  const struct bench_case *c = bench_find(name);
  if (!c)
    fprintf(stderr, "bench_paired: no case %s\n", name);
  else if (threads > 1 && !c->threads_ok)
    fprintf(stderr, "bench_paired: %s runs on one thread only\n", name);
  else
    return c;
  return NULL;
}

int main(int argc, char **argv) {
  long samples = 31, sample_us = 2000, threads = 1;
  const struct option options[] = {
      {"--samples", 1, MAX_SAMPLES, &samples},
      {"--sample-us", 0, MAX_SAMPLE_US, &sample_us},
      {"--threads", 1, MAX_THREADS, &threads},
  };
  int i = 1;
  for (; i + 1 < argc && strncmp(argv[i], "--", 2) == 0; i += 2)
    if (!set_option(options, sizeof options / sizeof *options, argv[i], argv[i + 1]))
      return usage();
  if (argc - i != 2)
    return usage();
  const struct bench_case *a = find_case(argv[i], threads);
  const struct bench_case *b = find_case(argv[i + 1], threads);
  if (!a || !b)
    return 2;

  static struct side sa, sb;
  if (!side_start(&sa, a, (int)threads) || !side_start(&sb, b, (int)threads)) {
    fprintf(stderr, "bench_paired: cannot start the threads\n");
    return 1;
  }
  side_calibrate(&sa, sample_us * 1e3);
  side_calibrate(&sb, sample_us * 1e3);
  for (long k = 0; k < samples; k++) {
    /* A B, then B A: neither case always runs first. */
    double ns_a, ns_b;
    if (k % 2 == 0) {
      ns_a = side_sample(&sa);
      ns_b = side_sample(&sb);
    } else {
      ns_b = side_sample(&sb);
      ns_a = side_sample(&sa);
    }
    printf("%.4f\t%.4f\n", ns_a, ns_b);
  }
  long failed_a = side_stop(&sa), failed_b = side_stop(&sb);
  if (failed_a || failed_b) {
    fprintf(stderr, "bench_paired: failed calls: %s %ld, %s %ld\n", a->name, failed_a,
            b->name, failed_b);
    return 1;
  }
  return 0;
}
