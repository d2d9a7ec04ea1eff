/* SA-OP-4: the seed scenario. A "data pipeline" object with three dual-mode
 * methods, each written once on libuv: a timer-backed fetch, a file write
 * through uv_fs_* on a real temp file, and a threadpool job. Called from
 * plain blocking code and from inside a loop callback, it must give the
 * same results. */
#include "sa_test.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct pipeline {
  char path[64];
  char record[128];
  intptr_t written;
  uint32_t checksum;
  int status; /* first failure, or 0 */
};

/* fetch: a record, ready after a few milliseconds. */
struct fetch {
  uv_timer_t timer;
  sa_call_t *call;
  struct pipeline *p;
};

static void free_handle(uv_handle_t *handle) { free(handle->data); }

static void fetch_ready(uv_timer_t *timer) {
  struct fetch *f = timer->data;
  snprintf(f->p->record, sizeof f->p->record, "{\"id\":%d,\"items\":[1,2,3]}\n", 42);
  sa_complete(f->call, 0, f->p->record);
  uv_close((uv_handle_t *)timer, free_handle);
}

static void fetch_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  struct fetch *f = malloc(sizeof *f);
  if (!f) {
    sa_complete(call, SA_ENOMEM, NULL);
    return;
  }
  f->call = call;
  f->p = arg;
  uv_timer_init(loop, &f->timer);
  f->timer.data = f;
  uv_timer_start(&f->timer, fetch_ready, 3, 0);
}

/* save: open, write and close a file through libuv's fs requests. */
struct save {
  uv_fs_t req;
  uv_buf_t buf;
  uv_file fd;
  intptr_t written;
  int status;
  sa_call_t *call;
};

static void save_closed(uv_fs_t *req) {
  struct save *s = req->data;
  uv_fs_req_cleanup(req);
  sa_complete(s->call, s->status, (void *)s->written);
  free(s);
}

static void save_written(uv_fs_t *req) {
  struct save *s = req->data;
  if (req->result < 0)
    s->status = (int)req->result;
  else
    s->written = req->result;
  uv_fs_req_cleanup(req);
  uv_fs_close(req->loop, req, s->fd, save_closed);
}

static void save_opened(uv_fs_t *req) {
  struct save *s = req->data;
  int result = (int)req->result;
  uv_fs_req_cleanup(req);
  if (result < 0) {
    sa_complete(s->call, result, NULL);
    free(s);
    return;
  }
  s->fd = result;
  uv_fs_write(req->loop, req, s->fd, &s->buf, 1, 0, save_written);
}

static void save_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  struct pipeline *p = arg;
  struct save *s = calloc(1, sizeof *s);
  if (!s) {
    sa_complete(call, SA_ENOMEM, NULL);
    return;
  }
  s->call = call;
  s->req.data = s;
  s->buf = uv_buf_init(p->record, (unsigned)strlen(p->record));
  int rc = uv_fs_open(loop, &s->req, p->path, O_CREAT | O_WRONLY | O_TRUNC, 0600, save_opened);
  if (rc < 0) {
    sa_complete(call, rc, NULL);
    free(s);
  }
}

/* digest: a checksum computed on the threadpool. */
struct digest {
  uv_work_t work;
  const char *data;
  uint32_t sum;
  sa_call_t *call;
  struct pipeline *p;
};

static void digest_work(uv_work_t *work) {
  struct digest *d = work->data;
  uint32_t h = 2166136261u; /* FNV-1a */
  for (const char *c = d->data; *c; c++)
    h = (h ^ (unsigned char)*c) * 16777619u;
  d->sum = h;
}

static void digest_done(uv_work_t *work, int status) {
  struct digest *d = work->data;
  d->p->checksum = d->sum;
  sa_complete(d->call, status, &d->p->checksum);
  free(d);
}

static void digest_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  struct digest *d = malloc(sizeof *d);
  if (!d) {
    sa_complete(call, SA_ENOMEM, NULL);
    return;
  }
  d->call = call;
  d->p = arg;
  d->data = d->p->record;
  d->work.data = d;
  int rc = uv_queue_work(loop, &d->work, digest_work, digest_done);
  if (rc < 0) {
    sa_complete(call, rc, NULL);
    free(d);
  }
}

static const sa_op_t fetch_op = {fetch_start, NULL};
static const sa_op_t save_op = {save_start, NULL};
static const sa_op_t digest_op = {digest_start, NULL};

/* Plain blocking code: three calls in a row. */
static void pipeline_blocking(struct pipeline *p) {
  void *value;
  sa_future_t none;
  if ((p->status = sa_dispatch(&fetch_op, p, SA_MODE_AUTO, &value, &none)) < 0)
    return;
  if ((p->status = sa_dispatch(&save_op, p, SA_MODE_AUTO, &value, &none)) < 0)
    return;
  p->written = (intptr_t)value;
  p->status = sa_dispatch(&digest_op, p, SA_MODE_AUTO, &value, &none);
}

/* Async code: the same three calls chained by continuations. */
static void after_digest(sa_future_t f, int status, void *value, void *data) {
  struct pipeline *p = data;
  (void)value;
  p->status = status;
  sa_future_release(f);
}

static void after_save(sa_future_t f, int status, void *value, void *data) {
  struct pipeline *p = data;
  sa_future_t next;
  sa_future_release(f);
  if ((p->status = status) < 0)
    return;
  p->written = (intptr_t)value;
  cr_assert_eq(sa_dispatch(&digest_op, p, SA_MODE_AUTO, NULL, &next), SA_PENDING);
  sa_future_then(next, after_digest, p);
}

static void after_fetch(sa_future_t f, int status, void *value, void *data) {
  struct pipeline *p = data;
  sa_future_t next;
  (void)value;
  sa_future_release(f);
  if ((p->status = status) < 0)
    return;
  cr_assert_eq(sa_dispatch(&save_op, p, SA_MODE_AUTO, NULL, &next), SA_PENDING);
  sa_future_then(next, after_save, p);
}

static void pipeline_in_loop(uv_loop_t *loop, void *data) {
  (void)loop;
  sa_future_t f;
  cr_assert_eq(sa_dispatch(&fetch_op, data, SA_MODE_AUTO, NULL, &f), SA_PENDING);
  sa_future_then(f, after_fetch, data);
}

static void temp_path(struct pipeline *p) {
  snprintf(p->path, sizeof p->path, "/tmp/sa-pipeline-XXXXXX");
  int fd = mkstemp(p->path);
  cr_assert_geq(fd, 0);
  close(fd);
}

static void file_content(const char *path, char *buf, size_t size) {
  FILE *f = fopen(path, "rb");
  cr_assert_not_null(f);
  size_t n = fread(buf, 1, size - 1, f);
  buf[n] = '\0';
  fclose(f);
}

Test(SA_OP_4, pipeline_same_results_from_both_worlds) {
  struct pipeline sync_p = {0}, async_p = {0};
  char sync_file[128], async_file[128];
  temp_path(&sync_p);
  temp_path(&async_p);
  pipeline_blocking(&sync_p);
  sa_test_in_loop(pipeline_in_loop, &async_p);
  cr_assert_eq(sync_p.status, 0, "SA-OP-4: blocking pipeline failed: %s",
               sa_strerror(sync_p.status));
  cr_assert_eq(async_p.status, 0, "SA-OP-4: async pipeline failed: %s",
               sa_strerror(async_p.status));
  file_content(sync_p.path, sync_file, sizeof sync_file);
  file_content(async_p.path, async_file, sizeof async_file);
  cr_assert_str_eq(sync_file, sync_p.record, "SA-OP-4: blocking pipeline wrote the wrong bytes");
  cr_assert_str_eq(sync_file, async_file, "SA-OP-4: the two worlds wrote different files");
  cr_assert_eq(sync_p.written, (intptr_t)strlen(sync_p.record));
  cr_assert_eq(sync_p.written, async_p.written, "SA-OP-4: byte counts differ");
  cr_assert_neq(sync_p.checksum, 0);
  cr_assert_eq(sync_p.checksum, async_p.checksum, "SA-OP-4: checksums differ");
  unlink(sync_p.path);
  unlink(async_p.path);
}

Test(SA_OP_4, pipeline_failure_same_in_both_worlds) {
  struct pipeline sync_p = {.path = "/nonexistent-dir/out"}, async_p = sync_p;
  pipeline_blocking(&sync_p);
  sa_test_in_loop(pipeline_in_loop, &async_p);
  cr_assert_eq(sync_p.status, UV_ENOENT, "SA-OP-4: blocking pipeline: %s",
               sa_strerror(sync_p.status));
  cr_assert_eq(async_p.status, UV_ENOENT, "SA-OP-4: async pipeline: %s",
               sa_strerror(async_p.status));
}
