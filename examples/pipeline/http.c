/*
 * http.c - pipe_fetch_json and pipe_download_file: one HTTP/1.1 GET on a
 * uv_tcp connection, the response parsed by http_parser as it arrives. The
 * two ops differ only in where the body goes: a growing buffer decoded as
 * JSON at the end, or a file written through uv_fs_write with reading
 * paused while a write is in flight, so memory stays at two buffers
 * whatever the size of the body.
 *
 * Life of a request: [open PATH.part] -> resolve -> connect -> write the
 * request -> read and parse -> finish. Any failure, or the cancel hook,
 * records the first error and goes to finish, which closes the socket,
 * waits for the requests in flight, closes the file, renames or removes it,
 * and only then completes the call: once the caller hears of the result,
 * nothing of the request is left running.
 */
#include "pipeline.h"

#include <fcntl.h>
#include <http_parser.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define READ_BUFFER_SIZE (64u << 10)

typedef struct request {
  sa_call_t *call;
  uv_loop_t *loop;
  pipe_http_t *args;
  bool to_file;

  int status;          /* the first error; 0 while all goes well */
  bool response_done;  /* the whole response has been parsed */
  unsigned in_flight;  /* libuv requests whose callbacks are still due */

  char host[256];
  char service[8];     /* the port, as getaddrinfo takes it */
  char *head;          /* the request line and headers */
  uv_getaddrinfo_t resolver;
  bool resolving;
  uv_connect_t connector;
  uv_write_t writer;
  uv_tcp_t tcp;
  bool tcp_open, tcp_closing;

  http_parser parser;
  char read_buffer[READ_BUFFER_SIZE];

  /* to memory */
  char *body;
  size_t body_len, body_cap;

  /* to a file */
  char *part_path;
  uv_fs_t fs;
  uv_file file;
  bool part_exists;
  char pending[READ_BUFFER_SIZE]; /* body bytes of one read, not yet written */
  size_t pending_len;
  uint64_t file_offset;
} request_t;

static void finish(request_t *r);
static void start_reading(request_t *r);

/* Record a failure: the first one is the one reported. */
__attribute__((format(printf, 3, 4))) static void fail(request_t *r, int status,
                                                       const char *fmt, ...) {
  if (r->status != 0)
    return;
  r->status = status;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->args->message, sizeof r->args->message, fmt, ap);
  va_end(ap);
}

/* A libuv call failed with `rc` while `doing` something. (sa_strerror, not
 * uv_strerror: the latter leaks a string for a code it does not know.) */
static void fail_uv(request_t *r, int rc, const char *doing) {
  fail(r, rc, "%s: %s", doing, sa_strerror(rc));
}

/* ---- parsing ---------------------------------------------------------- */

static int on_headers_complete(http_parser *p) {
  request_t *r = p->data;
  r->args->http_status = (int)p->status_code;
  if (p->status_code < 200 || p->status_code > 299) {
    fail(r, PIPE_EHTTP, "HTTP %u %s", p->status_code,
         http_status_str((enum http_status)p->status_code));
    return -1; /* stop parsing: the body is of no use */
  }
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t len) {
  request_t *r = p->data;
  r->args->bytes += len;
  if (r->to_file) {
    /* All body bytes of one read fit: the body is never longer than the
     * bytes it came in. */
    memcpy(r->pending + r->pending_len, at, len);
    r->pending_len += len;
    return 0;
  }
  if (r->body_len + len > PIPE_JSON_MAX) {
    fail(r, PIPE_ETOOBIG, "the JSON body is larger than PIPE_JSON_MAX");
    return -1;
  }
  if (r->body_len + len > r->body_cap) {
    size_t cap = r->body_cap ? r->body_cap : 4096;
    while (cap < r->body_len + len)
      cap *= 2;
    char *grown = realloc(r->body, cap);
    if (!grown) {
      fail(r, SA_ENOMEM, "out of memory for the body");
      return -1;
    }
    r->body = grown;
    r->body_cap = cap;
  }
  memcpy(r->body + r->body_len, at, len);
  r->body_len += len;
  return 0;
}

static int on_message_complete(http_parser *p) {
  request_t *r = p->data;
  r->response_done = true;
  http_parser_pause(p, 1); /* whatever follows is not ours */
  return 0;
}

static const http_parser_settings parser_settings = {
  .on_headers_complete = on_headers_complete,
  .on_body = on_body,
  .on_message_complete = on_message_complete,
};

/* Feed `len` bytes (0: the connection ended) to the parser. */
static void parse(request_t *r, const char *data, size_t len) {
  size_t used = http_parser_execute(&r->parser, &parser_settings, data, len);
  enum http_errno err = HTTP_PARSER_ERRNO(&r->parser);
  if (r->status != 0 || r->response_done)
    return;
  if (err == HPE_INVALID_EOF_STATE || (len == 0 && err == HPE_OK)) {
    fail(r, PIPE_ETRUNCATED, "the connection closed inside the response, after %llu body bytes",
         (unsigned long long)r->args->bytes);
  } else if (err != HPE_OK || used != len) {
    fail(r, PIPE_EBADMSG, "malformed HTTP response: %s", http_errno_description(err));
  }
}

/* ---- the file ----------------------------------------------------------- */

static void on_written(uv_fs_t *req) {
  request_t *r = req->data;
  ssize_t result = req->result;
  uv_fs_req_cleanup(req);
  r->in_flight--;
  if (result < 0) {
    fail_uv(r, (int)result, "writing the file");
  } else {
    r->file_offset += (uint64_t)result;
    r->pending_len -= (size_t)result;
    memmove(r->pending, r->pending + result, r->pending_len);
  }
  if (r->status != 0 || (r->pending_len == 0 && r->response_done))
    finish(r);
  else
    start_reading(r); /* also writes the rest of a short write */
}

/* Write what the last read brought, with reading paused until it is done. */
static void write_pending(request_t *r) {
  uv_buf_t buf = uv_buf_init(r->pending, (unsigned)r->pending_len);
  uv_read_stop((uv_stream_t *)&r->tcp);
  int rc = uv_fs_write(r->loop, &r->fs, r->file, &buf, 1, (int64_t)r->file_offset, on_written);
  if (rc < 0) {
    fail_uv(r, rc, "writing the file");
    finish(r);
    return;
  }
  r->in_flight++;
}

/* ---- the connection ----------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  request_t *r = h->data;
  (void)suggested;
  *buf = uv_buf_init(r->read_buffer, sizeof r->read_buffer);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  request_t *r = s->data;
  if (nread == UV_EOF)
    parse(r, NULL, 0);
  else if (nread < 0)
    fail_uv(r, (int)nread, "reading the response");
  else if (nread > 0)
    parse(r, buf->base, (size_t)nread);
  else
    return; /* EAGAIN */

  if (r->status == 0 && r->pending_len > 0)
    write_pending(r);
  else if (r->status != 0 || r->response_done)
    finish(r);
}

static void start_reading(request_t *r) {
  if (r->pending_len > 0) {
    write_pending(r);
    return;
  }
  int rc = uv_read_start((uv_stream_t *)&r->tcp, on_alloc, on_read);
  if (rc < 0) {
    fail_uv(r, rc, "reading the response");
    finish(r);
  }
}

static void on_request_written(uv_write_t *req, int status) {
  request_t *r = req->data;
  r->in_flight--;
  /* A write we cut short by closing (the whole response came first, or the
   * request failed already) is no failure of its own. */
  if (status < 0 && !r->tcp_closing)
    fail_uv(r, status, "sending the request");
  if (r->status != 0)
    finish(r);
}

static void on_connected(uv_connect_t *req, int status) {
  request_t *r = req->data;
  r->in_flight--;
  if (status < 0)
    fail_uv(r, status, "connecting");
  if (r->status != 0) {
    finish(r);
    return;
  }
  uv_buf_t buf = uv_buf_init(r->head, (unsigned)strlen(r->head));
  int rc = uv_write(&r->writer, (uv_stream_t *)&r->tcp, &buf, 1, on_request_written);
  if (rc < 0) {
    fail_uv(r, rc, "sending the request");
    finish(r);
    return;
  }
  r->in_flight++;
  start_reading(r);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *addresses) {
  request_t *r = req->data;
  r->in_flight--;
  r->resolving = false;
  if (status < 0 && status != UV_EAI_CANCELED)
    fail_uv(r, status, "resolving the host");
  int rc = r->status == 0 ? uv_tcp_init(r->loop, &r->tcp) : 0;
  if (rc < 0)
    fail_uv(r, rc, "socket");
  if (r->status == 0) {
    r->tcp_open = true;
    r->tcp.data = r;
    rc = uv_tcp_connect(&r->connector, &r->tcp, addresses->ai_addr, on_connected);
    if (rc < 0)
      fail_uv(r, rc, "connecting");
    else
      r->in_flight++;
  }
  uv_freeaddrinfo(addresses);
  if (r->status != 0)
    finish(r);
}

static void resolve(request_t *r) {
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
  int rc = uv_getaddrinfo(r->loop, &r->resolver, on_resolved, r->host, r->service, &hints);
  if (rc < 0) {
    fail_uv(r, rc, "resolving the host");
    finish(r);
    return;
  }
  r->resolving = true;
  r->in_flight++;
}

static void on_part_opened(uv_fs_t *req) {
  request_t *r = req->data;
  int result = (int)req->result;
  uv_fs_req_cleanup(req);
  r->in_flight--;
  if (result < 0) {
    fail_uv(r, result, "creating the file");
  } else {
    r->file = result;
    r->part_exists = true;
  }
  if (r->status != 0)
    finish(r);
  else
    resolve(r);
}

/* ---- the end ---------------------------------------------------------- */

static void deliver(request_t *r) {
  void *value = NULL;
  if (r->status == 0 && !r->to_file) {
    json_error_t error;
    value = json_loadb(r->body ? r->body : "", r->body_len, 0, &error);
    if (!value)
      fail(r, PIPE_EBADMSG, "the body is not JSON: %s", error.text);
  }
  sa_call_t *call = r->call;
  int status = r->status;
  r->args->running = NULL;
  free(r->body);
  free(r->part_path);
  free(r->head);
  free(r);
  sa_complete(call, status, value);
}

static void on_file_done(uv_fs_t *req) {
  request_t *r = req->data;
  int result = (int)req->result;
  uv_fs_type type = req->fs_type;
  uv_fs_req_cleanup(req);
  r->in_flight--;
  if (type == UV_FS_CLOSE) {
    r->file = -1;
    if (result < 0)
      fail_uv(r, result, "closing the file");
  } else { /* renamed, or removed */
    r->part_exists = false;
    if (result < 0)
      fail_uv(r, result, "renaming the file");
  }
  finish(r);
}

static void on_tcp_closed(uv_handle_t *h) {
  request_t *r = h->data;
  r->tcp_open = false;
  finish(r);
}

/* Called whenever something ends; moves the request towards its end one
 * step at a time and completes the call at the last. */
static void finish(request_t *r) {
  if (r->status == 0 && !r->response_done)
    return; /* still at work */
  if (r->tcp_open) {
    /* Closing also ends a connect or a write in flight (UV_ECANCELED). */
    if (!r->tcp_closing) {
      r->tcp_closing = true;
      uv_close((uv_handle_t *)&r->tcp, on_tcp_closed);
    }
    return;
  }
  if (r->in_flight > 0)
    return; /* a resolve or a file write: its callback comes back here */
  int rc = 0;
  if (r->file >= 0) {
    rc = uv_fs_close(r->loop, &r->fs, r->file, on_file_done);
  } else if (r->part_exists && r->status == 0) {
    rc = uv_fs_rename(r->loop, &r->fs, r->part_path, r->args->path, on_file_done);
  } else if (r->part_exists) {
    rc = uv_fs_unlink(r->loop, &r->fs, r->part_path, on_file_done);
  } else {
    deliver(r);
    return;
  }
  if (rc < 0) { /* not expected of a valid request; give up the file */
    fail_uv(r, rc, "finishing the file");
    r->file = -1;
    r->part_exists = false;
    finish(r);
    return;
  }
  r->in_flight++;
}

/* ---- the ops ---------------------------------------------------------- */

/* Split args->url into host, port and the request head. */
static int prepare(request_t *r) {
  const char *url = r->args->url;
  struct http_parser_url u;
  http_parser_url_init(&u);
  if (http_parser_parse_url(url, strlen(url), 0, &u) != 0 || !(u.field_set & (1 << UF_HOST)) ||
      !(u.field_set & (1 << UF_SCHEMA)) || u.field_data[UF_SCHEMA].len != 4 ||
      strncmp(url + u.field_data[UF_SCHEMA].off, "http", 4) != 0 ||
      u.field_data[UF_HOST].len >= sizeof r->host)
    return SA_EINVAL;
  memcpy(r->host, url + u.field_data[UF_HOST].off, u.field_data[UF_HOST].len);
  r->host[u.field_data[UF_HOST].len] = '\0';
  snprintf(r->service, sizeof r->service, "%u", (u.field_set & (1 << UF_PORT)) ? u.port : 80u);

  /* Path and query as sent; "/" if the URL has none. */
  const char *target = "/";
  size_t target_len = 1;
  if (u.field_set & (1 << UF_PATH)) {
    target = url + u.field_data[UF_PATH].off;
    target_len = strlen(target);
    if (u.field_set & (1 << UF_FRAGMENT))
      target_len = u.field_data[UF_FRAGMENT].off - 1 - u.field_data[UF_PATH].off;
  }
  /* The Host header is the URL's authority: host (IPv6 in brackets) and port. */
  size_t authority = u.field_data[UF_HOST].off;
  size_t authority_end = authority + u.field_data[UF_HOST].len;
  if (authority > 0 && url[authority - 1] == '[') {
    authority--;
    authority_end++;
  }
  if (u.field_set & (1 << UF_PORT))
    authority_end = (size_t)u.field_data[UF_PORT].off + u.field_data[UF_PORT].len;
  const char *format = "GET %.*s HTTP/1.1\r\nHost: %.*s\r\nUser-Agent: smartasync-pipeline\r\n"
                       "Accept: */*\r\nConnection: close\r\n\r\n";
  int host_len = (int)(authority_end - authority);
  int n = snprintf(NULL, 0, format, (int)target_len, target, host_len, url + authority);
  if (n < 0 || !(r->head = malloc((size_t)n + 1)))
    return SA_ENOMEM;
  snprintf(r->head, (size_t)n + 1, format, (int)target_len, target, host_len, url + authority);
  return 0;
}

static void http_start(sa_call_t *call, uv_loop_t *loop, void *arg, bool to_file) {
  pipe_http_t *args = arg;
  if (!args || !args->url || (to_file && (!args->path || !*args->path))) {
    if (args)
      snprintf(args->message, sizeof args->message, "no URL%s", to_file ? " or no path" : "");
    sa_complete(call, SA_EINVAL, NULL);
    return;
  }
  args->http_status = 0;
  args->bytes = 0;
  args->message[0] = '\0';
  request_t *r = calloc(1, sizeof *r);
  if (!r) {
    sa_complete(call, SA_ENOMEM, NULL);
    return;
  }
  r->call = call;
  r->loop = loop;
  r->args = args;
  r->to_file = to_file;
  r->file = -1;
  r->resolver.data = r->connector.data = r->writer.data = r->fs.data = r;
  http_parser_init(&r->parser, HTTP_RESPONSE);
  r->parser.data = r;
  args->running = r;

  int rc = prepare(r);
  if (rc < 0) {
    if (rc == SA_ENOMEM)
      fail(r, rc, "out of memory");
    else
      fail(r, rc, "not an http:// URL: %s", args->url);
    finish(r);
    return;
  }
  if (!to_file) {
    resolve(r);
    return;
  }
  size_t len = strlen(args->path);
  if (!(r->part_path = malloc(len + sizeof ".part"))) {
    fail(r, SA_ENOMEM, "out of memory");
    finish(r);
    return;
  }
  memcpy(r->part_path, args->path, len);
  memcpy(r->part_path + len, ".part", sizeof ".part");
  rc = uv_fs_open(loop, &r->fs, r->part_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644,
                  on_part_opened);
  if (rc < 0) {
    fail_uv(r, rc, "creating the file");
    finish(r);
    return;
  }
  r->in_flight++;
}

static void fetch_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  http_start(call, loop, arg, false);
}

static void download_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  http_start(call, loop, arg, true);
}

/* Cancel: record SA_ECANCELED and wind down as on any failure. */
static void http_cancel(sa_call_t *call, uv_loop_t *loop, void *arg) {
  pipe_http_t *args = arg;
  request_t *r = args->running;
  (void)call;
  (void)loop;
  if (!r)
    return;
  fail(r, SA_ECANCELED, "stopped by the caller: cancelled, or its deadline passed");
  if (r->resolving)
    uv_cancel((uv_req_t *)&r->resolver); /* one not yet started stops now */
  finish(r);
}

const sa_op_t pipe_fetch_json = {fetch_start, http_cancel};
const sa_op_t pipe_download_file = {download_start, http_cancel};
