/*
 * once_check.c - the pthread_once model's own check: threads read a table
 * that pthread_once initialised, as an implementation of the header may do
 * with its globals. Correct code: helgrind and DRD must report nothing when
 * once_model.so is preloaded. Exits 0.
 */
#include <pthread.h>
#include <stdio.h>

#define THREADS 4

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int table[16];

static void fill(void) {
  for (int i = 0; i < 16; i++)
    table[i] = i * i;
}

static void *reader(void *arg) {
  int *sum = arg;
  pthread_once(&once, fill);
  for (int i = 0; i < 16; i++)
    *sum += table[i];
  return NULL;
}

int main(void) {
  pthread_t threads[THREADS];
  int sums[THREADS] = {0};
  for (int i = 0; i < THREADS; i++)
    pthread_create(&threads[i], NULL, reader, &sums[i]);
  for (int i = 0; i < THREADS; i++)
    pthread_join(threads[i], NULL);
  for (int i = 0; i < THREADS; i++)
    if (sums[i] != 1240) {
      printf("once_check: thread %d read %d\n", i, sums[i]);
      return 1;
    }
  return 0;
}
