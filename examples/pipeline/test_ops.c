/*
 * test_ops - the pipeline's ops on their own, against the test's HTTP
 * server: bad input gets a clear code and starts nothing, and a download
 * stopped at any point (deadline, cancelled as the loser of a batch) leaves
 * neither the file nor its .part behind.
 *
 *   test_ops BASE_URL DIR    (BASE_URL serves /files/hello.txt and /files/big.bin)
 *
 * Prints one line per check; exit status 1 if any failed.
 */
#include "pipeline.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int failures;

static void check(bool ok, const char *what, int status) {
  printf("  %s  %s (status: %s)\n", ok ? "ok  " : "FAIL", what, sa_strerror(status));
  failures += !ok;
}

static bool exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

static long long size_of(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (long long)st.st_size : -1;
}

static void bad_input(const char *base, const char *dir) {
  char url[512], path[512];
  sa_future_t unused;
  int rc = sa_dispatch(&pipe_fetch_json, NULL, SA_MODE_SYNC, NULL, &unused);
  check(rc == SA_EINVAL, "fetch_json without an argument: SA_EINVAL", rc);

  pipe_http_t ftp = {.url = "ftp://127.0.0.1/files/hello.txt"};
  rc = sa_dispatch(&pipe_fetch_json, &ftp, SA_MODE_SYNC, NULL, &unused);
  check(rc == SA_EINVAL && *ftp.message, "fetch_json of an ftp:// URL: SA_EINVAL with a message", rc);

  pipe_http_t no_path = {.url = base};
  rc = sa_dispatch(&pipe_download_file, &no_path, SA_MODE_SYNC, NULL, &unused);
  check(rc == SA_EINVAL, "download_file without a path: SA_EINVAL", rc);

  snprintf(url, sizeof url, "%s/files/hello.txt", base);
  snprintf(path, sizeof path, "%s/no-such-dir/hello.txt", dir);
  pipe_http_t missing_dir = {.url = url, .path = path};
  rc = sa_dispatch(&pipe_download_file, &missing_dir, SA_MODE_SYNC, NULL, &unused);
  check(rc == -ENOENT && !exists(path), "download_file into a missing directory: -ENOENT", rc);

  rc = pipe_save_rows(NULL, SA_MODE_SYNC, NULL, &unused);
  check(rc == SA_EINVAL, "save_rows without an argument: SA_EINVAL", rc);
  pipe_row_t row = {.id = 1, .name = "a", .url = "b"};
  pipe_db_t none = {.target = "unused.sqlite", .rows = &row, .n_rows = 0};
  rc = pipe_save_rows(&none, SA_MODE_SYNC, NULL, &unused);
  check(rc == SA_EINVAL, "save_rows of no rows: SA_EINVAL", rc);
  pipe_db_t nameless_row = {.target = "host=/nonexistent", .rows = &(pipe_row_t){.id = 1},
                            .n_rows = 1};
  rc = pipe_save_rows(&nameless_row, SA_MODE_SYNC, NULL, &unused);
  check(rc == SA_EINVAL, "save_rows of a row without a name: SA_EINVAL", rc);
}

/* Downloads of 32 MiB given less and less time: each either completes, or
 * times out and leaves nothing; the deadlines land in every phase. */
static void deadlines(const char *base, const char *dir, long long full_size) {
  static const unsigned ms[] = {0, 1, 2, 5, 10, 20, 40, 80, 160};
  char url[512], path[512], part[520], what[128];
  snprintf(url, sizeof url, "%s/files/big.bin", base);
  snprintf(path, sizeof path, "%s/deadline.bin", dir);
  snprintf(part, sizeof part, "%s.part", path);
  for (size_t i = 0; i < sizeof ms / sizeof *ms; i++) {
    for (int async = 0; async < 2; async++) {
      remove(path);
      pipe_http_t d = {.url = url, .path = path};
      sa_future_t f;
      int rc = sa_dispatch_until(&pipe_download_file, &d, async ? SA_MODE_ASYNC : SA_MODE_SYNC,
                                 sa_deadline_in(ms[i]), NULL, &f);
      if (rc == SA_PENDING) {
        rc = sa_future_wait(f, NULL);
        sa_future_release(f);
      }
      bool whole = rc == 0 && size_of(path) == full_size && !exists(part);
      bool nothing = rc == SA_ETIMEDOUT && !exists(path) && !exists(part);
      snprintf(what, sizeof what, "%s download with %u ms: whole, or timed out leaving nothing",
               async ? "async" : "sync", ms[i]);
      check(whole || nothing, what, rc);
    }
  }
  remove(path);
}

/* The first of two downloads to finish wins; the other is cancelled and
 * leaves nothing. */
static void first_of_two(const char *base, const char *dir) {
  char small_url[512], big_url[512], small[512], big[512], big_part[520];
  snprintf(small_url, sizeof small_url, "%s/files/hello.txt", base);
  snprintf(big_url, sizeof big_url, "%s/files/big.bin", base);
  snprintf(small, sizeof small, "%s/first-small.txt", dir);
  snprintf(big, sizeof big, "%s/first-big.bin", dir);
  snprintf(big_part, sizeof big_part, "%s.part", big);
  pipe_http_t d[2] = {{.url = small_url, .path = small}, {.url = big_url, .path = big}};
  sa_batch_item_t items[2] = {{.op = &pipe_download_file, .arg = &d[0]},
                              {.op = &pipe_download_file, .arg = &d[1]}};
  sa_future_t unused;
  void *winner = NULL;
  int rc = sa_batch(items, 2, SA_BATCH_FIRST, SA_MODE_SYNC, &winner, &unused);
  check(rc == 0 && winner == &items[0] && exists(small), "batch FIRST: the small file wins", rc);
  check(items[1].status == SA_ECANCELED && !exists(big) && !exists(big_part),
        "batch FIRST: the big download is cancelled and leaves nothing", items[1].status);
  remove(small);
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: test_ops BASE_URL DIR\n");
    return 2;
  }
  const char *base = argv[1], *dir = argv[2];
  char big[512];
  snprintf(big, sizeof big, "%s/big.bin", dir);

  /* The reference copy of big.bin, fetched whole first. */
  char url[512];
  snprintf(url, sizeof url, "%s/files/big.bin", base);
  pipe_http_t whole = {.url = url, .path = big};
  sa_future_t unused;
  int rc = sa_dispatch(&pipe_download_file, &whole, SA_MODE_SYNC, NULL, &unused);
  check(rc == 0 && size_of(big) > 0, "download of big.bin", rc);
  if (rc != 0)
    return 1;

  bad_input(base, dir);
  deadlines(base, dir, size_of(big));
  first_of_two(base, dir);
  remove(big);
  sa_thread_cleanup();
  return failures ? 1 : 0;
}
