/* SA-ERR-*: error codes. */
#include "sa_test.h"

#include <criterion/criterion.h>
#include <malloc.h>
#include <string.h>

Test(SA_ERR_1, codes_are_negative_errno_with_descriptions) {
  const struct {
    int code;
    int errno_value;
    const char *name;
  } codes[] = {
      {SA_EINVAL, EINVAL, "SA_EINVAL"},       {SA_ENOMEM, ENOMEM, "SA_ENOMEM"},
      {SA_ESTALE, ESTALE, "SA_ESTALE"},       {SA_EALREADY, EALREADY, "SA_EALREADY"},
      {SA_EDEADLK, EDEADLK, "SA_EDEADLK"},    {SA_ELOOP, ELOOP, "SA_ELOOP"},
      {SA_EBUSY, EBUSY, "SA_EBUSY"},          {SA_EPERM, EPERM, "SA_EPERM"},
      {SA_ENOTSUP, ENOTSUP, "SA_ENOTSUP"},    {SA_ECANCELED, ECANCELED, "SA_ECANCELED"},
  };
  for (size_t i = 0; i < sizeof codes / sizeof *codes; i++) {
    cr_assert_eq(codes[i].code, -codes[i].errno_value, "SA-ERR-1: %s is not -errno",
                 codes[i].name);
    const char *text = sa_strerror(codes[i].code);
    cr_assert(text && *text, "SA-ERR-1: no description for %s", codes[i].name);
    for (size_t j = 0; j < i; j++)
      cr_assert_str_neq(text, sa_strerror(codes[j].code),
                        "SA-ERR-1: %s and %s share a description", codes[i].name,
                        codes[j].name);
  }
  cr_assert_gt(SA_PENDING, 0, "SA-ERR-1: SA_PENDING must be the positive code");
  cr_assert(sa_strerror(SA_PENDING) && *sa_strerror(SA_PENDING));
  cr_assert(sa_strerror(0) && *sa_strerror(0));
  cr_assert(sa_strerror(UV_ECONNREFUSED) && *sa_strerror(UV_ECONNREFUSED),
            "SA-ERR-1: no description for a libuv code");
  cr_assert(sa_strerror(UV_EOF) && *sa_strerror(UV_EOF),
            "SA-ERR-1: no description for libuv's own UV_EOF");
  /* An errno code libuv has no name for: described, and (the valgrind run
   * checks) not by a fresh allocation per call. */
  for (int i = 0; i < 3; i++) {
    const char *text = sa_strerror(-EBADMSG);
    cr_assert(text && *text && !strstr(text, "nknown"),
              "SA-ERR-1: -EBADMSG is described as \"%s\"", text ? text : "(null)");
  }
}

/* SA-ERR-1: descriptions come without allocating, for every code down to
 * libuv's lowest and beyond, those nobody has a name for included: the
 * heap in use does not grow however many are asked for. */
Test(SA_ERR_1, descriptions_do_not_allocate) {
  for (int code = -5000; code <= 1; code++) /* once: what is set up once */
    cr_assert(sa_strerror(code) && *sa_strerror(code), "SA-ERR-1: no description of %d", code);
  size_t before = mallinfo2().uordblks;
  for (int round = 0; round < 3; round++)
    for (int code = -5000; code <= 1; code++)
      sa_strerror(code);
  long grown = (long)(mallinfo2().uordblks - before);
  cr_assert_lt(grown, 4096, "SA-ERR-1: 15,000 descriptions took %ld bytes of heap", grown);
}

/* SA-ERR-2: failure statuses pass through, sync and async, the three ways. */
struct err2 {
  struct value_req req[3];
  struct cont_rec cont[3];
  sa_future_t f[3];
};

static void err2_in_loop(uv_loop_t *loop, void *data) {
  (void)loop;
  struct err2 *s = data;
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(sa_dispatch(&value_op, &s->req[i], SA_MODE_AUTO, NULL, &s->f[i]), SA_PENDING);
    cr_assert_eq(sa_future_then(s->f[i], record_cont, &s->cont[i]), 0);
  }
}

Test(SA_ERR_2, op_failure_reaches_caller_unchanged) {
  const int failures[] = {UV_ECONNREFUSED, UV_ENOENT, -12345, SA_EINVAL, SA_ECANCELED};
  for (size_t k = 0; k < sizeof failures / sizeof *failures; k++) {
    struct err2 s;
    memset(&s, 0, sizeof s);
    for (int i = 0; i < 3; i++) {
      struct value_req req = {.when = sa_test_whens[i], .status = failures[k]};
      int rc = sa_dispatch(&value_op, &req, SA_MODE_SYNC, NULL, NULL);
      cr_assert_eq(rc, failures[k], "SA-ERR-2 (%s, sync): op failed with %d, caller got %d",
                   sa_test_when_name(sa_test_whens[i]), failures[k], rc);
      s.req[i] = (struct value_req){.when = sa_test_whens[i], .status = failures[k]};
    }
    sa_test_in_loop(err2_in_loop, &s);
    for (int i = 0; i < 3; i++) {
      cr_assert_eq(s.cont[i].status, failures[k],
                   "SA-ERR-2 (%s, async): op failed with %d, caller got %d",
                   sa_test_when_name(sa_test_whens[i]), failures[k], s.cont[i].status);
      cr_assert_eq(sa_future_status(s.f[i], NULL), failures[k]);
      cr_assert_eq(sa_future_release(s.f[i]), 0);
    }
  }
}

/* SA-ERR-3: every public function rejects NULL and invalid input. */
/* Notes that it started and completes at once: a dispatcher that wrongly
 * accepts the call returns instead of waiting for a completion. */
static void note_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  (void)loop;
  *(int *)arg = 1;
  sa_complete(call, 0, NULL);
}

/* Tries a positive status, refused, then completes validly. */
struct positive_try {
  int refused_rc, valid_rc;
};

static void complete_positive_then_validly(sa_call_t *call, uv_loop_t *loop, void *arg) {
  struct positive_try *p = arg;
  (void)loop;
  p->refused_rc = sa_complete(call, 1, NULL);
  p->valid_rc = sa_complete(call, -5, p);
}

static int scope_checks_in_loop_rc;

static void leave_wrong_loop(uv_loop_t *loop, void *data) {
  (void)data;
  uv_loop_t other;
  cr_assert_eq(uv_loop_init(&other), 0);
  scope_checks_in_loop_rc = sa_leave(&other);
  cr_assert_eq(sa_current_loop(), loop, "SA-ERR-3: a refused sa_leave left the scope");
  cr_assert_eq(uv_loop_close(&other), 0);
}

Test(SA_ERR_3, invalid_arguments_rejected) {
  int started = 0;
  const sa_op_t no_start = {NULL, NULL};
  const sa_op_t op = {note_start, NULL};
  sa_future_t f;
  void *value;
  cr_assert_eq(sa_dispatch(NULL, NULL, SA_MODE_AUTO, &value, &f), SA_EINVAL,
               "SA-ERR-3: sa_dispatch(NULL op)");
  cr_assert_eq(sa_dispatch(&no_start, NULL, SA_MODE_SYNC, &value, &f), SA_EINVAL,
               "SA-ERR-3: sa_dispatch(op without start)");
  cr_assert_eq(sa_dispatch(&op, &started, SA_MODE_AUTO, &value, NULL), SA_EINVAL,
               "SA-ERR-3: sa_dispatch(auto, NULL future)");
  cr_assert_eq(sa_dispatch(&op, &started, SA_MODE_ASYNC, &value, NULL), SA_EINVAL,
               "SA-ERR-3: sa_dispatch(async, NULL future)");
  cr_assert_eq(started, 0, "SA-ERR-3: a rejected dispatch started the op");

  cr_assert_eq(sa_complete(NULL, 0, NULL), SA_EINVAL, "SA-ERR-3: sa_complete(NULL)");
  /* The refused completion leaves the call pending [SA-OP-2]: the op
   * completes it validly, so that the call ends. */
  const sa_op_t positive_op = {complete_positive_then_validly, NULL};
  struct positive_try positive = {0};
  int rc = sa_dispatch(&positive_op, &positive, SA_MODE_SYNC, &value, NULL);
  cr_assert_eq(positive.refused_rc, SA_EINVAL,
               "SA-ERR-3: sa_complete with a positive status returned %d", positive.refused_rc);
  cr_assert_eq(positive.valid_rc, 0,
               "SA-ERR-3: the valid completion after a refused one returned %d",
               positive.valid_rc);
  cr_assert_eq(rc, -5, "SA-ERR-3: the call returned %d, not its valid completion's -5", rc);
  cr_assert_eq(value, &positive);

  uv_loop_t loop;
  cr_assert_eq(uv_loop_init(&loop), 0);
  cr_assert_eq(sa_run(NULL, UV_RUN_DEFAULT), SA_EINVAL, "SA-ERR-3: sa_run(NULL)");
  cr_assert_eq(sa_run(&loop, (uv_run_mode)77), SA_EINVAL, "SA-ERR-3: sa_run(bad mode)");
  cr_assert_eq(sa_enter(NULL), SA_EINVAL, "SA-ERR-3: sa_enter(NULL)");
  cr_assert_eq(sa_leave(NULL), SA_EINVAL, "SA-ERR-3: sa_leave(NULL)");
  cr_assert_eq(sa_leave(&loop), SA_EINVAL, "SA-ERR-3: sa_leave without a scope");
  cr_assert_eq(sa_loop_close(NULL), SA_EINVAL, "SA-ERR-3: sa_loop_close(NULL)");
  cr_assert_eq(sa_future_then((sa_future_t){1}, NULL, NULL), SA_EINVAL,
               "SA-ERR-3: sa_future_then(NULL callback)");
  cr_assert_null(sa_current_loop());
  cr_assert_eq(uv_loop_close(&loop), 0);
  sa_test_in_loop(leave_wrong_loop, NULL);
  cr_assert_eq(scope_checks_in_loop_rc, SA_EINVAL, "SA-ERR-3: sa_leave(wrong loop)");
}
