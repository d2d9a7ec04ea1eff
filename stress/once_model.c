/*
 * once_model.c - teaches helgrind and DRD what pthread_once guarantees.
 *
 * Neither tool models glibc's pthread_once: data an initialiser writes and
 * threads read after their pthread_once returns is reported as a race, so a
 * correct implementation that initialises its globals the standard way fails
 * a race hunt. No suppression can express it: the report's innermost frame
 * is the reader's own code. This object, preloaded into the program under
 * the tool (LD_PRELOAD), wraps pthread_once through valgrind's function
 * wrapping and states the happens-before edge POSIX promises: the
 * initialiser's end comes before every return of pthread_once on the same
 * control. Outside valgrind the wrapper is never called.
 */
#include <pthread.h>
#include <valgrind/drd.h>
#include <valgrind/helgrind.h>
#include <valgrind/valgrind.h>

/* The initialiser runs on the calling thread, inside the real pthread_once:
 * the wrapper passes its own, which calls the caller's and then signals. */
static __thread pthread_once_t *once_control;
static __thread void (*once_routine)(void);

static void signal_after(pthread_once_t *control) {
  VALGRIND_DO_CLIENT_REQUEST_STMT(_VG_USERREQ__HG_USERSO_SEND_PRE, control, 0, 0, 0, 0);
  VALGRIND_DO_CLIENT_REQUEST_STMT(VG_USERREQ__DRD_ANNOTATE_HAPPENS_BEFORE, control, 0, 0, 0,
                                  0);
}

static void wait_after(pthread_once_t *control) {
  VALGRIND_DO_CLIENT_REQUEST_STMT(_VG_USERREQ__HG_USERSO_RECV_POST, control, 0, 0, 0, 0);
  VALGRIND_DO_CLIENT_REQUEST_STMT(VG_USERREQ__DRD_ANNOTATE_HAPPENS_AFTER, control, 0, 0, 0,
                                  0);
}

static void routine_then_signal(void) {
  pthread_once_t *control = once_control;
  once_routine();
  signal_after(control);
}

/* pthread_once in libc.so.*, under any symbol version. */
int I_WRAP_SONAME_FNNAME_ZZ(libcZdsoZa, pthreadZuonceZa)(pthread_once_t *control,
                                                          void (*routine)(void)) {
  OrigFn real;
  int rc;
  VALGRIND_GET_ORIG_FN(real);
  pthread_once_t *outer_control = once_control; /* initialisers may nest */
  void (*outer_routine)(void) = once_routine;
  once_control = control;
  once_routine = routine;
  CALL_FN_W_WW(rc, real, control, routine_then_signal);
  once_control = outer_control;
  once_routine = outer_routine;
  wait_after(control);
  return rc;
}
