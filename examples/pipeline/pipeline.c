/*
 * pipeline - fetch a JSON listing of files from a REST API, download the
 * files (all at once, as a batch) and record them in a database:
 *
 *   pipeline --api URL --out DIR --db TARGET [--mode sync|async] [--timeout-ms N]
 *
 * The listing is {"files": [{"id": 1, "name": "a.txt", "path": "/files/a.txt"}, ...]},
 * each path relative to the API's server. TARGET is a PostgreSQL connection
 * string, or an SQLite file (created if need be). --timeout-ms gives the
 * listing's fetch a deadline: the request is cancelled when it passes.
 *
 * The three steps are the same code in both modes; only the driver differs.
 * --mode sync (the default) runs them from plain blocking main(), one call
 * after the other. --mode async runs them inside a loop callback, each
 * step started by the previous one's continuation. Each step is an
 * ordinary call with SA_MODE_AUTO: the context picks the world.
 *
 * Exit status 0 on success; 1 with one line on stderr naming the step, the
 * error code and what went wrong; 2 for bad usage.
 */
#include "pipeline.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum step { FETCH, DOWNLOAD, SAVE, DONE };
static const char *const step_names[] = {"fetch_json", "download_file", "save_rows"};

typedef struct run {
  const char *api_url;
  uint64_t api_timeout_ms; /* 0: none */
  const char *out_dir;
  enum step step;
  int status;
  const char *failed_at; /* what the failing step was working on */
  const char *message;

  pipe_http_t listing_request;
  json_t *listing;
  size_t n;
  pipe_http_t *downloads;   /* one per file */
  sa_batch_item_t *batch;   /* one per file */
  pipe_row_t *rows;         /* one per file */
  pipe_db_t db;
} run_t;

/* ---- the steps: start one, then take its result ------------------------ */

/* "http://host:port" of the API's URL, for the listing's paths. */
static int server_prefix_len(const char *url) {
  const char *host = strstr(url, "://");
  if (!host)
    return -1;
  const char *slash = strchr(host + 3, '/');
  return slash ? (int)(slash - url) : (int)strlen(url);
}

/* A file name from the listing: no directories, nothing hidden. */
static bool plain_name(const char *name) {
  return name[0] != '\0' && name[0] != '.' && !strchr(name, '/');
}

/* Turn the listing into download requests and rows. */
static int plan(run_t *run) {
  json_t *files = json_object_get(run->listing, "files");
  int prefix = server_prefix_len(run->api_url);
  run->n = json_array_size(files);
  if (!json_is_array(files) || run->n == 0 || run->n > PIPE_ROWS_MAX || prefix < 0) {
    run->message = "the listing has no \"files\" array, or too many files";
    return PIPE_EBADMSG;
  }
  run->downloads = calloc(run->n, sizeof *run->downloads);
  run->batch = calloc(run->n, sizeof *run->batch);
  run->rows = calloc(run->n, sizeof *run->rows);
  if (!run->downloads || !run->batch || !run->rows)
    return SA_ENOMEM;
  for (size_t i = 0; i < run->n; i++) {
    json_t *file = json_array_get(files, i);
    json_t *id = json_object_get(file, "id");
    const char *name = json_string_value(json_object_get(file, "name"));
    const char *path = json_string_value(json_object_get(file, "path"));
    if (!json_is_integer(id) || !name || !path || path[0] != '/' || !plain_name(name)) {
      run->message = "a file entry lacks an integer id, a plain name or a /path";
      return PIPE_EBADMSG;
    }
    pipe_http_t *d = &run->downloads[i];
    char *url = malloc((size_t)prefix + strlen(path) + 1);
    char *file_path = malloc(strlen(run->out_dir) + 1 + strlen(name) + 1);
    if (!url || !file_path) {
      free(url);
      free(file_path);
      return SA_ENOMEM;
    }
    sprintf(url, "%.*s%s", prefix, run->api_url, path);
    sprintf(file_path, "%s/%s", run->out_dir, name);
    d->url = url;
    d->path = file_path;
    run->batch[i] = (sa_batch_item_t){.op = &pipe_download_file, .arg = d};
    run->rows[i] = (pipe_row_t){.id = json_integer_value(id), .name = name, .url = url};
  }
  return 0;
}

/* Start the current step with SA_MODE_AUTO: in sync context it blocks and
 * returns the result, in async context it returns SA_PENDING and a future. */
static int step_start(run_t *run, void **value, sa_future_t *future) {
  switch (run->step) {
  case FETCH:
    run->listing_request.url = run->api_url;
    return sa_dispatch_until(&pipe_fetch_json, &run->listing_request, SA_MODE_AUTO,
                             run->api_timeout_ms ? sa_deadline_in(run->api_timeout_ms)
                                                 : SA_NO_DEADLINE,
                             value, future);
  case DOWNLOAD:
    return sa_batch(run->batch, run->n, SA_BATCH_ALL, SA_MODE_AUTO, value, future);
  case SAVE:
    run->db.rows = run->rows;
    run->db.n_rows = run->n;
    return pipe_save_rows(&run->db, SA_MODE_AUTO, value, future);
  default:
    return SA_EINVAL;
  }
}

/* Take the current step's result and move on; returns its status. */
static int step_done(run_t *run, int status, void *value) {
  switch (run->step) {
  case FETCH:
    run->failed_at = run->api_url;
    run->message = run->listing_request.message;
    if (status == 0) {
      run->listing = value;
      status = plan(run);
    }
    if (status == 0)
      printf("fetched the listing: %zu files\n", run->n);
    break;
  case DOWNLOAD:
    if (status < 0 && value) { /* the first download that failed */
      const pipe_http_t *d = ((sa_batch_item_t *)value)->arg;
      run->failed_at = d->url;
      run->message = d->message;
    }
    for (size_t i = 0; i < run->n; i++) {
      run->rows[i].bytes = run->downloads[i].bytes;
      if (run->batch[i].status == 0)
        printf("downloaded %s: %llu bytes\n", run->rows[i].name,
               (unsigned long long)run->downloads[i].bytes);
    }
    break;
  case SAVE:
    run->failed_at = run->db.target;
    run->message = run->db.message;
    if (status == 0)
      printf("saved %zu rows\n", run->n);
    break;
  default:
    break;
  }
  run->status = status;
  if (status == 0)
    run->step++;
  return status;
}

/* ---- the two drivers -------------------------------------------------- */

/* Plain blocking code: one call after the other. */
static void run_sync(run_t *run) {
  while (run->step != DONE) {
    void *value = NULL;
    sa_future_t unused; /* SA_MODE_AUTO asks for one; in sync context it stays null */
    int status = step_start(run, &value, &unused);
    if (step_done(run, status, value) < 0)
      return;
  }
}

/* Inside the loop: each continuation starts the next step. */
static void next_step(run_t *run);

static void on_step_result(sa_future_t future, int status, void *value, void *data) {
  run_t *run = data;
  sa_future_release(future);
  if (step_done(run, status, value) == 0 && run->step != DONE)
    next_step(run);
}

static void next_step(run_t *run) {
  sa_future_t future;
  int status = step_start(run, NULL, &future);
  if (status == SA_PENDING)
    status = sa_future_then(future, on_step_result, run);
  if (status < 0) /* the dispatcher refused: the step never started */
    step_done(run, status, NULL);
}

static void begin_async(uv_idle_t *idle) {
  uv_close((uv_handle_t *)idle, NULL);
  next_step(idle->data);
}

static int run_async(run_t *run) {
  uv_loop_t loop;
  uv_idle_t idle;
  int rc = uv_loop_init(&loop);
  if (rc < 0)
    return rc;
  uv_idle_init(&loop, &idle);
  idle.data = run;
  uv_idle_start(&idle, begin_async);
  rc = sa_run(&loop, UV_RUN_DEFAULT);
  int closed = sa_loop_close(&loop);
  return rc < 0 ? rc : closed;
}

/* ---- main ------------------------------------------------------------- */

static void run_free(run_t *run) {
  for (size_t i = 0; run->downloads && i < run->n; i++) {
    free((char *)run->downloads[i].url);
    free((char *)run->downloads[i].path);
  }
  free(run->downloads);
  free(run->batch);
  free(run->rows);
  json_decref(run->listing);
}

static int usage(void) {
  fprintf(stderr, "usage: pipeline --api URL --out DIR --db TARGET [--mode sync|async]"
                  " [--timeout-ms N]\n");
  return 2;
}

int main(int argc, char **argv) {
  run_t run = {0};
  const char *mode = "sync";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "--api") == 0)
      run.api_url = argv[i + 1];
    else if (strcmp(argv[i], "--out") == 0)
      run.out_dir = argv[i + 1];
    else if (strcmp(argv[i], "--db") == 0)
      run.db.target = argv[i + 1];
    else if (strcmp(argv[i], "--mode") == 0)
      mode = argv[i + 1];
    else if (strcmp(argv[i], "--timeout-ms") == 0)
      run.api_timeout_ms = strtoull(argv[i + 1], NULL, 10);
    else
      return usage();
  }
  if (argc % 2 == 0 || !run.api_url || !run.out_dir || !run.db.target ||
      (strcmp(mode, "sync") != 0 && strcmp(mode, "async") != 0))
    return usage();

  printf("pipeline (%s): %s -> %s -> %s\n", mode, run.api_url, run.out_dir, run.db.target);
  if (strcmp(mode, "sync") == 0) {
    run_sync(&run);
  } else {
    int rc = run_async(&run);
    if (rc < 0 && run.status == 0)
      run.status = rc;
  }
  if (run.status == 0 && run.step != DONE)
    run.status = SA_ECANCELED; /* the loop ended before the pipeline did */

  int status = run.status;
  fflush(stdout); /* the progress lines first */
  if (status < 0)
    fprintf(stderr, "pipeline: %s %s: %s (%s)\n",
            run.step < DONE ? step_names[run.step] : "run", run.failed_at ? run.failed_at : "",
            sa_strerror(status), run.message && *run.message ? run.message : "no detail");
  run_free(&run);
  sa_thread_cleanup();
  return status == 0 ? 0 : 1;
}
