/*
 * The smallest program outside this project's tree that uses the installed
 * library: one op, called from plain code and from a loop callback.
 * Exits 0 only if both calls give the op's result.
 */
#include <smartasync.h>
#include <stdio.h>
#include <string.h>

static void on_tick(uv_timer_t *timer) {
  sa_complete(timer->data, 0, "ticked");
  uv_close((uv_handle_t *)timer, NULL);
}

static uv_timer_t timer; /* one call at a time in this program */

static void tick_start(sa_call_t *call, uv_loop_t *loop, void *arg) {
  (void)arg;
  uv_timer_init(loop, &timer);
  timer.data = call;
  uv_timer_start(&timer, on_tick, 1, 0);
}

static const sa_op_t tick = {tick_start, NULL};

static int async_status = SA_PENDING;
static const char *async_value;

static void on_result(sa_future_t f, int status, void *value, void *data) {
  (void)data;
  async_status = status;
  async_value = value;
  sa_future_release(f);
}

static void from_callback(uv_idle_t *idle) {
  sa_future_t f;
  if (sa_dispatch(&tick, NULL, SA_MODE_AUTO, NULL, &f) == SA_PENDING)
    sa_future_then(f, on_result, NULL);
  uv_close((uv_handle_t *)idle, NULL);
}

int main(void) {
  void *value = NULL;
  sa_future_t unused; /* AUTO asks for one: the context might be async */
  int status = sa_dispatch(&tick, NULL, SA_MODE_AUTO, &value, &unused);
  printf("sync:  %s %s\n", sa_strerror(status), value ? (char *)value : "-");

  uv_loop_t loop;
  uv_idle_t idle;
  uv_loop_init(&loop);
  uv_idle_init(&loop, &idle);
  uv_idle_start(&idle, from_callback);
  sa_run(&loop, UV_RUN_DEFAULT);
  sa_loop_close(&loop);
  printf("async: %s %s\n", sa_strerror(async_status), async_value ? async_value : "-");

  sa_thread_cleanup();
  return status == 0 && value && strcmp(value, "ticked") == 0 && async_status == 0 &&
                 async_value && strcmp(async_value, "ticked") == 0
             ? 0
             : 1;
}
