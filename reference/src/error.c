/*
 * error.c - sa_strerror: what each error code means.
 */
#include "smartasync.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

/* Descriptions of errno codes, made once: strerror() may share one buffer
 * between threads, and a string returned must stay valid and unchanged. */
#define ERRNO_TEXTS 160 /* Linux codes end below 140 */
static char errno_texts[ERRNO_TEXTS][64];
static pthread_once_t errno_texts_once = PTHREAD_ONCE_INIT;

static void errno_texts_init(void) {
  for (int e = 0; e < ERRNO_TEXTS; e++)
    if (strerror_r(e, errno_texts[e], sizeof errno_texts[e]) != 0)
      snprintf(errno_texts[e], sizeof errno_texts[e], "unknown error %d", e);
}

const char *sa_strerror(int code) {
  switch (code) {
  case 0: return "success";
  case SA_PENDING: return "pending: the result will come through the future";
  case SA_EINVAL: return "invalid argument";
  case SA_ENOMEM: return "out of memory";
  case SA_ESTALE: return "future released or unknown";
  case SA_EALREADY: return "already completed, or continuation already set";
  case SA_EDEADLK: return "waiting would deadlock: nothing can complete the call";
  case SA_ELOOP: return "sync calls nested too deep";
  case SA_EBUSY: return "loop running, or calls pending on it";
  case SA_EPERM: return "not allowed from this thread";
  case SA_ENOTSUP: return "operation cannot be cancelled";
  case SA_ECANCELED: return "cancelled";
  case SA_ETIMEDOUT: return "the deadline passed first";
  default: break;
  }
  if (code > 0)
    return "unknown code";
  if (code > -ERRNO_TEXTS) {
    pthread_once(&errno_texts_once, errno_texts_init);
    return errno_texts[-code];
  }
  /* libuv's own codes (UV_EOF, UV_EAI_*): uv_strerror returns a static
   * string for those it knows, but leaks a fresh one for any other. */
  static const char unknown[] = "Unknown system error";
  char probe[64];
  if (strncmp(uv_strerror_r(code, probe, sizeof probe), unknown, sizeof unknown - 1) == 0)
    return "unknown error code";
  return uv_strerror(code);
}
