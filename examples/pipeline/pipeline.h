/*
 * pipeline.h - the data pipeline's operations, each written once as a
 * dual-mode op: called from plain blocking code they block and return the
 * result; called from a loop callback they return a future.
 *
 *   pipe_fetch_json     HTTP GET over uv_tcp, parsed with http_parser, the
 *                       body decoded with jansson;
 *   pipe_download_file  HTTP GET streamed to disk through uv_fs_write, a
 *                       bounded buffer at a time;
 *   pipe_save_rows      one INSERT of all rows: PostgreSQL through libpq's
 *                       non-blocking API on uv_poll, or SQLite through
 *                       sa_call_blocking.
 *
 * Errors are negative errno codes, as in libuv and smartasync; each op also
 * leaves a sentence about the failure in its argument's `message`.
 */
#ifndef PIPELINE_H
#define PIPELINE_H

#include <smartasync.h>
#include <stdint.h>

/* Errors besides the system's (ECONNREFUSED, ENOENT, ...) and SA_*. */
#define PIPE_EHTTP       (-EREMOTEIO) /* the server answered with a non-2xx status */
#define PIPE_ETRUNCATED  (-EPROTO)    /* the connection ended inside the body */
#define PIPE_EBADMSG     (-EBADMSG)   /* malformed HTTP, or a body that is not the JSON asked for */
#define PIPE_ETOOBIG     (-EFBIG)     /* a JSON body over PIPE_JSON_MAX bytes */
#define PIPE_EDUPLICATE  (-EEXIST)    /* a row's key is in the table already */
#define PIPE_ECONSTRAINT (-EINVAL)    /* a row breaks another constraint of the table */
#define PIPE_EDB         (-EIO)       /* any other database failure */

#define PIPE_JSON_MAX (8u << 20)
#define PIPE_MESSAGE_MAX 256

/* The argument of pipe_fetch_json and pipe_download_file. Owned by the
 * caller, valid until the call has completed. */
typedef struct pipe_http {
  const char *url;  /* in: http://host[:port]/path, host a name or an address */
  const char *path; /* in, download only: the file to write. It appears whole
                       or not at all: the body goes to PATH.part, renamed
                       when complete, removed on failure */
  int http_status;  /* out: the server's status code, 0 if none arrived */
  uint64_t bytes;   /* out: body bytes received */
  char message[PIPE_MESSAGE_MAX]; /* out: what went wrong, "" on success */
  void *running;    /* private to the op */
} pipe_http_t;

/* Value: a json_t * (jansson) the caller owns (json_decref). */
extern const sa_op_t pipe_fetch_json;
/* Value: NULL; the size is in `bytes`. */
extern const sa_op_t pipe_download_file;

/* One row of the `files` table (pipeline.sql). */
typedef struct pipe_row {
  int64_t id;
  const char *name;
  const char *url;
  uint64_t bytes;
} pipe_row_t;

/* The argument of pipe_save_rows. */
typedef struct pipe_db {
  const char *target;     /* in: a libpq connection string or URI
                             ("host=... dbname=...", "postgresql://..."),
                             else the path of an SQLite database file */
  const pipe_row_t *rows; /* in: all are written, or none */
  size_t n_rows;          /* in: 1 to PIPE_ROWS_MAX */
  char message[PIPE_MESSAGE_MAX]; /* out */
  void *running;          /* private */
} pipe_db_t;

#define PIPE_ROWS_MAX 4096

/* Insert db->rows in one statement, in `mode` as for sa_dispatch; the value
 * is NULL. PostgreSQL runs on the caller's loop (sync: the private one);
 * SQLite, whose API blocks, is called directly in sync mode and on the
 * libuv threadpool in async mode. */
int pipe_save_rows(pipe_db_t *db, sa_mode_t mode, void **value, sa_future_t *future);

/* Whether `target` names a PostgreSQL database rather than an SQLite file. */
int pipe_is_postgres(const char *target);

#endif /* PIPELINE_H */
