/*
 * db.c - pipe_save_rows: all rows in one INSERT, so that they are written
 * together or not at all.
 *
 * PostgreSQL: libpq's non-blocking API (PQconnectStart/PQconnectPoll,
 * PQsendQueryParams, PQconsumeInput) with its socket watched by a uv_poll
 * handle on the caller's loop - the C counterpart of asyncpg.
 * SQLite: its API blocks, so it is "a blocking function in both worlds":
 * sa_call_blocking calls it directly from sync code and on the threadpool
 * from async code.
 */
#include "pipeline.h"

#include <inttypes.h>
#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define COLUMNS 4
#define INSERT_HEAD "INSERT INTO files (id, name, url, bytes) VALUES "

int pipe_is_postgres(const char *target) {
  return strncmp(target, "postgresql://", 13) == 0 || strncmp(target, "postgres://", 11) == 0 ||
         strchr(target, '=') != NULL;
}

/* One line: libpq's messages span lines ("ERROR: ...\nDETAIL: ..."). */
static void set_message(pipe_db_t *db, const char *prefix, const char *detail) {
  snprintf(db->message, sizeof db->message, "%s%s", prefix, detail ? detail : "");
  char *out = db->message;
  bool space = false;
  for (const char *in = db->message; *in; in++) {
    bool blank = *in == ' ' || *in == '\n' || *in == '\t';
    if (!blank && space && out > db->message)
      *out++ = ' ';
    if (!blank)
      *out++ = *in;
    space = blank;
  }
  *out = '\0';
}

/* The error code of a failed statement, by its SQLSTATE. */
static int status_of_sqlstate(const char *sqlstate) {
  if (!sqlstate)
    return PIPE_EDB;
  if (strcmp(sqlstate, "23505") == 0)
    return PIPE_EDUPLICATE;
  if (strncmp(sqlstate, "23", 2) == 0)
    return PIPE_ECONSTRAINT;
  return PIPE_EDB;
}

/* ---- PostgreSQL ------------------------------------------------------- */

typedef struct pg_save {
  sa_call_t *call;
  uv_loop_t *loop;
  pipe_db_t *db;
  PGconn *conn;
  uv_poll_t *poll;  /* on the connection's socket */
  bool connected;   /* past PQconnectPoll, the statement is sent */
  bool flushing;    /* the statement is not all sent yet */
  int status;
  char *sql;
  char **values;    /* COLUMNS text parameters per row */
  char *numbers;    /* the storage of the numeric parameters */
} pg_save_t;

static void pg_step(pg_save_t *s, int events);

/* Record a failure: the first one is the one reported. */
static void pg_fail(pg_save_t *s, int status, const char *prefix, const char *detail) {
  if (s->status != 0)
    return;
  s->status = status;
  set_message(s->db, prefix, detail);
}

static void on_pg_poll(uv_poll_t *poll, int status, int events) {
  pg_save_t *s = poll->data;
  if (status < 0) {
    pg_fail(s, PIPE_EDB, "polling the database socket: ", sa_strerror(status));
    events = 0;
  }
  pg_step(s, events);
}

static void free_handle(uv_handle_t *h) {
  free(h);
}

static void pg_free(pg_save_t *s) {
  free(s->sql);
  free(s->values);
  free(s->numbers);
  free(s);
}

static void on_pg_closed(uv_handle_t *h) {
  pg_save_t *s = h->data;
  sa_call_t *call = s->call;
  int status = s->status;
  free(h);
  pg_free(s);
  sa_complete(call, status, NULL);
}

/* End the call: stop watching the socket before libpq closes it, and
 * complete once the handle is closed. */
static void pg_finish(pg_save_t *s) {
  s->db->running = NULL;
  if (s->poll)
    uv_close((uv_handle_t *)s->poll, on_pg_closed);
  PQfinish(s->conn);
  s->conn = NULL;
  if (s->poll)
    return;
  sa_call_t *call = s->call;
  int status = s->status;
  pg_free(s);
  sa_complete(call, status, NULL);
}

/* Stop watching the socket. While connecting this comes before each
 * PQconnectPoll, which may close the socket and open another (trying the
 * next address): a socket must never be closed while it is watched. */
static void pg_unwatch(pg_save_t *s) {
  uv_close((uv_handle_t *)s->poll, free_handle);
  s->poll = NULL;
}

/* Watch the connection's socket for `events`. */
static int pg_watch(pg_save_t *s, int events) {
  int fd = PQsocket(s->conn);
  if (fd < 0)
    return UV_EBADF;
  if (!s->poll) {
    uv_poll_t *poll = malloc(sizeof *poll);
    if (!poll)
      return UV_ENOMEM;
    int rc = uv_poll_init_socket(s->loop, poll, fd);
    if (rc < 0) {
      free(poll);
      return rc;
    }
    poll->data = s;
    s->poll = poll;
  }
  return uv_poll_start(s->poll, events, on_pg_poll);
}

/* Read what the server sent; true once the statement's results are all in. */
static bool pg_collect(pg_save_t *s) {
  if (!PQconsumeInput(s->conn)) {
    pg_fail(s, PIPE_EDB, "", PQerrorMessage(s->conn));
    return true;
  }
  while (!PQisBusy(s->conn)) {
    PGresult *res = PQgetResult(s->conn);
    if (!res)
      return true;
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
      pg_fail(s, status_of_sqlstate(PQresultErrorField(res, PG_DIAG_SQLSTATE)), "",
              PQresultErrorMessage(res));
    PQclear(res);
  }
  return false;
}

static int pg_send(pg_save_t *s) {
  PQsetnonblocking(s->conn, 1);
  if (!PQsendQueryParams(s->conn, s->sql, (int)(s->db->n_rows * COLUMNS), NULL,
                         (const char *const *)s->values, NULL, NULL, 0)) {
    pg_fail(s, PIPE_EDB, "", PQerrorMessage(s->conn));
    return -1;
  }
  s->connected = true;
  s->flushing = true;
  return 0;
}

/* One step of the conversation, driven by the socket's readiness. */
static void pg_step(pg_save_t *s, int events) {
  int want = 0;
  if (s->status == 0 && !s->connected) {
    if (s->poll)
      pg_unwatch(s);
    switch (PQconnectPoll(s->conn)) {
    case PGRES_POLLING_READING: want = UV_READABLE; break;
    case PGRES_POLLING_WRITING: want = UV_WRITABLE; break;
    case PGRES_POLLING_OK:
      if (pg_send(s) == 0)
        events = UV_WRITABLE;
      break;
    default:
      pg_fail(s, -ECONNREFUSED, "", PQerrorMessage(s->conn));
    }
  }
  if (s->status == 0 && s->connected) {
    if (s->flushing && (events & UV_WRITABLE)) {
      int rc = PQflush(s->conn);
      if (rc < 0)
        pg_fail(s, PIPE_EDB, "", PQerrorMessage(s->conn));
      s->flushing = rc == 1;
    }
    if (s->status == 0 && (events & UV_READABLE) && pg_collect(s)) {
      pg_finish(s);
      return;
    }
    want = UV_READABLE | (s->flushing ? UV_WRITABLE : 0);
  }
  if (s->status == 0) {
    int rc = pg_watch(s, want);
    if (rc < 0)
      pg_fail(s, PIPE_EDB, "watching the database socket: ", sa_strerror(rc));
  }
  if (s->status != 0)
    pg_finish(s);
}

/* The statement and its text parameters: ($1, $2, $3, $4), ($5, ...). */
static int pg_prepare(pg_save_t *s) {
  const pipe_db_t *db = s->db;
  size_t n = db->n_rows;
  s->sql = malloc(sizeof INSERT_HEAD + n * 40);
  s->values = malloc(n * COLUMNS * sizeof *s->values);
  s->numbers = malloc(n * 2 * 24);
  if (!s->sql || !s->values || !s->numbers)
    return SA_ENOMEM;
  char *out = s->sql + sprintf(s->sql, "%s", INSERT_HEAD);
  for (size_t i = 0; i < n; i++) {
    const pipe_row_t *row = &db->rows[i];
    if (!row->name || !row->url)
      return SA_EINVAL;
    size_t p = i * COLUMNS;
    out += sprintf(out, "%s($%zu, $%zu, $%zu, $%zu)", i ? ", " : "", p + 1, p + 2, p + 3, p + 4);
    char *id = s->numbers + i * 48, *bytes = id + 24;
    snprintf(id, 24, "%" PRId64, row->id);
    snprintf(bytes, 24, "%" PRIu64, row->bytes);
    s->values[p] = id;
    s->values[p + 1] = (char *)row->name;
    s->values[p + 2] = (char *)row->url;
    s->values[p + 3] = bytes;
  }
  return 0;
}

static void pg_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  pipe_db_t *db = arg;
  pg_save_t *s = calloc(1, sizeof *s);
  if (!s) {
    sa_complete(call, SA_ENOMEM, NULL);
    return;
  }
  s->call = call;
  s->loop = loop;
  s->db = db;
  db->running = s;
  int rc = pg_prepare(s);
  if (rc < 0) {
    pg_fail(s, rc, "", rc == SA_EINVAL ? "a row has no name or no url" : "out of memory");
    pg_finish(s);
    return;
  }
  s->conn = PQconnectStart(db->target);
  if (!s->conn || PQstatus(s->conn) == CONNECTION_BAD) {
    pg_fail(s, s->conn ? -ECONNREFUSED : SA_ENOMEM, "",
            s->conn ? PQerrorMessage(s->conn) : "out of memory");
    pg_finish(s);
    return;
  }
  /* libpq's protocol: poll for writing first, then as PQconnectPoll says. */
  rc = pg_watch(s, UV_WRITABLE);
  if (rc < 0) {
    pg_fail(s, PIPE_EDB, "watching the database socket: ", sa_strerror(rc));
    pg_finish(s);
  }
}

/* Cancel: drop the connection. The server then rolls the statement back,
 * unless it had committed it already, in which case all rows are in. */
static void pg_cancel(sa_call_t *call, uv_loop_t *loop, void *arg) {
  pipe_db_t *db = arg;
  pg_save_t *s = db->running;
  (void)call;
  (void)loop;
  if (!s)
    return;
  pg_fail(s, SA_ECANCELED, "", "stopped by the caller: cancelled, or its deadline passed");
  pg_finish(s);
}

static const sa_op_t save_rows_pg = {pg_start, pg_cancel};

/* ---- SQLite ----------------------------------------------------------- */

static int sqlite_status(sqlite3 *sql, pipe_db_t *db) {
  int code = sqlite3_extended_errcode(sql);
  set_message(db, "", sqlite3_errmsg(sql));
  if (code == SQLITE_CONSTRAINT_PRIMARYKEY || code == SQLITE_CONSTRAINT_UNIQUE)
    return PIPE_EDUPLICATE;
  if ((code & 0xff) == SQLITE_CONSTRAINT)
    return PIPE_ECONSTRAINT;
  if ((code & 0xff) == SQLITE_CANTOPEN)
    return -ENOENT;
  return PIPE_EDB;
}

/* The blocking function: one transaction of prepared inserts. */
static int save_rows_sqlite(void *arg, void **value) {
  pipe_db_t *db = arg;
  sqlite3 *sql = NULL;
  sqlite3_stmt *insert = NULL;
  (void)value;
  int status = 0;
  if (sqlite3_open_v2(db->target, &sql, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
          SQLITE_OK ||
      sqlite3_busy_timeout(sql, 5000) != SQLITE_OK ||
      sqlite3_exec(sql,
                   "CREATE TABLE IF NOT EXISTS files (id INTEGER PRIMARY KEY,"
                   " name TEXT NOT NULL UNIQUE, url TEXT NOT NULL,"
                   " bytes INTEGER NOT NULL CHECK (bytes >= 0));"
                   "BEGIN IMMEDIATE",
                   NULL, NULL, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(sql, INSERT_HEAD "(?, ?, ?, ?)", -1, &insert, NULL) != SQLITE_OK) {
    status = sql ? sqlite_status(sql, db) : SA_ENOMEM;
    goto out;
  }
  for (size_t i = 0; i < db->n_rows && status == 0; i++) {
    const pipe_row_t *row = &db->rows[i];
    if (!row->name || !row->url) {
      set_message(db, "", "a row has no name or no url");
      status = SA_EINVAL;
      break;
    }
    sqlite3_bind_int64(insert, 1, row->id);
    sqlite3_bind_text(insert, 2, row->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(insert, 3, row->url, -1, SQLITE_STATIC);
    sqlite3_bind_int64(insert, 4, (sqlite3_int64)row->bytes);
    if (sqlite3_step(insert) != SQLITE_DONE)
      status = sqlite_status(sql, db);
    sqlite3_reset(insert);
  }
  if (sqlite3_exec(sql, status == 0 ? "COMMIT" : "ROLLBACK", NULL, NULL, NULL) != SQLITE_OK &&
      status == 0)
    status = sqlite_status(sql, db);
out:
  sqlite3_finalize(insert);
  sqlite3_close(sql);
  return status;
}

/* ---- both ------------------------------------------------------------- */

int pipe_save_rows(pipe_db_t *db, sa_mode_t mode, void **value, sa_future_t *future) {
  if (!db || !db->target || !db->rows || db->n_rows == 0 || db->n_rows > PIPE_ROWS_MAX)
    return SA_EINVAL;
  db->message[0] = '\0';
  if (pipe_is_postgres(db->target))
    return sa_dispatch(&save_rows_pg, db, mode, value, future);
  return sa_call_blocking(save_rows_sqlite, db, mode, value, future);
}
