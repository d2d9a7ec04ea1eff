/*
 * process.c - process-wide set-up, once, and fork: the key whose destructor
 * lets go of a thread's private loops, and the fork handlers that keep a
 * child off its parent's loops.
 */
#include "internal.h"

#include <stdlib.h>

_Thread_local struct sa_thread sa__self SA_TLS_MODEL;

static pthread_once_t sa_once = PTHREAD_ONCE_INIT;
static pthread_key_t sa_exit_key;
/* Written only by the forking thread, alone in the child, before any other
 * thread exists there. */
uint64_t sa__own_ctx_ids_from;

static void atfork_prepare(void) {
  pthread_mutex_lock(&sa__registry_mutex);
  pthread_mutex_lock(&sa__pool_mutex);
}

/* In the parent, and in the child, where the forking thread still owns
 * the locks taken in atfork_prepare. */
static void atfork_release(void) {
  pthread_mutex_unlock(&sa__pool_mutex);
  pthread_mutex_unlock(&sa__registry_mutex);
}

/* In the child, every loop the dispatcher knows shares its epoll and eventfd
 * file descriptions with the parent: closing or stopping one of their
 * handles would unregister the parent's fds. Everything inherited is left
 * untouched and refused from now on [SA-THR-3]: the private loops are
 * abandoned (private.c), the forking thread's scopes dropped (it is in sync
 * context, even inside a callback of an inherited loop), and contexts,
 * futures and homes of the parent are known by their ids. */
static void atfork_child(void) {
  atfork_release();
  struct sa_thread *t = &sa__self;
  sa__own_ctx_ids_from = atomic_load(&sa__next_ctx_id);
  t->depth = 0;
  sa__privates_abandon(t);
}

static void init_once(void) {
  if (pthread_key_create(&sa_exit_key, sa__thread_exit) != 0)
    abort(); /* only at start-up, with no keys left: nothing can work */
  pthread_atfork(atfork_prepare, atfork_release, atfork_child);
  SA_HAPPENS_BEFORE(&sa_once); /* glibc's pthread_once uses bare atomics */
}

/* The fork handlers must be in place before any fork that could inherit
 * something of the dispatcher's (a loop run with sa_run is enough): set up
 * when the library is loaded, not on first use. */
__attribute__((constructor)) static void process_load(void) { pthread_once(&sa_once, init_once); }

/* sa__set_exit_hook(), the first time on a thread. */
void sa__set_exit_hook_slow(struct sa_thread *t) {
  pthread_once(&sa_once, init_once);
  SA_HAPPENS_AFTER(&sa_once);
  pthread_setspecific(sa_exit_key, t);
  t->exit_hook_set = true;
}
