/* Compiled as C against libcookiefs_shim: drives a real hand-off between two
 * real mounts through the C API only.
 *
 *   shim_handoff check   STORAGE CONTROL_A CONTROL_B MOUNT_A MOUNT_B SESSION ENGINE_A ENGINE_B
 *   shim_handoff latency STORAGE CONTROL_A CONTROL_B MOUNT_A MOUNT_B SESSION ENGINE_A ENGINE_B
 *                        N BYTES
 *
 * check: assign to A, write + flush on A, status, assign to B (drained and
 * ready), A is read-only (EROFS), wait_ready/status on B, release rules.
 * latency: N hand-offs A<->B of a BYTES-sized jar rewritten (and flushed) by
 * the owner before each; prints p50/p99/max of assign -> ready in ms.
 * Exit 0 when every check holds, 1 otherwise. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cookiefs_shim.h"

static int failures = 0;
#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
      failures++;                                                              \
    }                                                                          \
  } while (0)
#define CHECK_OK(shim, call)                                              \
  do {                                                                    \
    cookiefs_status st_ = (call);                                         \
    if (st_ != COOKIEFS_OK) {                                             \
      fprintf(stderr, "%s:%d: %s -> %s: %s\n", __FILE__, __LINE__, #call, \
              cookiefs_status_name(st_), cookiefs_shim_last_error(shim)); \
      failures++;                                                         \
    }                                                                     \
  } while (0)

static cookiefs_shim* open_shim(const char* storage, const char* control) {
  cookiefs_shim_options opt;
  memset(&opt, 0, sizeof opt);
  opt.storage_endpoints = storage;
  opt.control_socket = control;
  opt.timeout_ms = 30000;
  return cookiefs_shim_open(&opt);
}

/* Writes `len` bytes of `fill` to path; returns 0 or errno. */
static int write_jar(const char* path, char fill, size_t len) {
  int fd = open(path, O_WRONLY | O_CREAT, 0600);
  if (fd < 0) return errno;
  char* buf = malloc(len);
  memset(buf, fill, len);
  ssize_t n = pwrite(fd, buf, len, 0);
  int err = n == (ssize_t)len ? 0 : errno ? errno : EIO;
  free(buf);
  close(fd);
  return err;
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_double(const void* a, const void* b) {
  double x = *(const double*)a, y = *(const double*)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char** argv) {
  if (argc < 10) {
    fprintf(stderr,
            "usage: %s check|latency STORAGE CONTROL_A CONTROL_B MOUNT_A MOUNT_B "
            "SESSION ENGINE_A ENGINE_B [N BYTES]\n",
            argv[0]);
    return 2;
  }
  const char *mode = argv[1], *storage = argv[2], *ctl_a = argv[3], *ctl_b = argv[4];
  const char *mount_a = argv[5], *mount_b = argv[6], *session = argv[7], *eng_a = argv[8],
             *eng_b = argv[9];
  char jar_a[4096], jar_b[4096];
  snprintf(jar_a, sizeof jar_a, "%s/%s/cookies.txt", mount_a, session);
  snprintf(jar_b, sizeof jar_b, "%s/%s/cookies.txt", mount_b, session);
  cookiefs_shim* nm = open_shim(storage, NULL);
  cookiefs_shim* a = open_shim(NULL, ctl_a);
  cookiefs_shim* b = open_shim(NULL, ctl_b);
  cookiefs_assign_result ar;
  cookiefs_session_status st;

  CHECK_OK(nm, cookiefs_shim_assign(nm, session, eng_a, 3000, &ar));
  CHECK(ar.ready == 1);
  CHECK_OK(a, cookiefs_shim_wait_ready(a, session, 20000));

  if (strcmp(mode, "latency") == 0 && argc >= 12) {
    int n = atoi(argv[10]);
    size_t bytes = (size_t)atol(argv[11]);
    double* took = calloc((size_t)n, sizeof(double));
    int not_ready = 0;
    for (int i = 0; i < n; i++) {
      int to_b = i % 2 == 0;
      cookiefs_shim* owner = to_b ? a : b;
      /* The owner rewrites the whole jar and makes it durable (not timed). */
      CHECK(write_jar(to_b ? jar_a : jar_b, (char)('a' + i % 26), bytes) == 0);
      CHECK_OK(owner, cookiefs_shim_flush(owner, session));
      double t0 = now_ms();
      cookiefs_status s = cookiefs_shim_assign(nm, session, to_b ? eng_b : eng_a, 3000, &ar);
      took[i] = now_ms() - t0;
      if (s != COOKIEFS_OK) {
        fprintf(stderr, "assign %d: %s: %s\n", i, cookiefs_status_name(s),
                cookiefs_shim_last_error(nm));
        failures++;
        break;
      }
      if (!ar.ready) not_ready++;
    }
    qsort(took, (size_t)n, sizeof(double), cmp_double);
    printf("hand-offs=%d jar_bytes=%zu p50_ms=%.2f p99_ms=%.2f max_ms=%.2f not_ready=%d\n", n,
           bytes, took[n / 2], took[(n * 99) / 100], took[n - 1], not_ready);
    free(took);
    CHECK(not_ready == 0);
  } else {
    CHECK(write_jar(jar_a, 'x', 4096) == 0);
    CHECK_OK(a, cookiefs_shim_flush(a, session));
    memset(&st, 0, sizeof st);
    CHECK_OK(a, cookiefs_shim_status(a, session, &st));
    CHECK(st.present && st.owned && st.writable);
    CHECK(st.version >= 1);
    CHECK(st.dirty_bytes == 0);
    CHECK(strcmp(st.owner, eng_a) == 0);
    uint64_t version = st.version, epoch = st.epoch;

    CHECK_OK(nm, cookiefs_shim_assign(nm, session, eng_b, 3000, &ar));
    CHECK(ar.drained == 1);
    CHECK(ar.ready == 1);
    CHECK(ar.epoch == epoch + 1);
    CHECK(strcmp(ar.previous_owner, eng_a) == 0);
    CHECK(ar.version == version);

    CHECK(write_jar(jar_a, 'y', 4096) == EROFS);
    memset(&st, 0, sizeof st);
    CHECK_OK(a, cookiefs_shim_status(a, session, &st));
    CHECK(st.present && !st.owned && !st.writable);
    CHECK(cookiefs_shim_release(a, session) == COOKIEFS_ERR_FENCED);

    CHECK_OK(b, cookiefs_shim_wait_ready(b, session, 20000));
    memset(&st, 0, sizeof st);
    CHECK_OK(b, cookiefs_shim_status(b, session, &st));
    CHECK(st.present && st.owned && st.writable);
    CHECK(st.version == version);
    CHECK(st.epoch == epoch + 1);
    CHECK_OK(b, cookiefs_shim_flush(b, session));
    CHECK_OK(b, cookiefs_shim_release(b, session));
    memset(&st, 0, sizeof st);
    CHECK_OK(b, cookiefs_shim_status(b, session, &st));
    CHECK(!st.owned);
    CHECK(strcmp(st.owner, "") == 0);
    CHECK(cookiefs_shim_flush(b, "no-such-session") == COOKIEFS_ERR_NOT_FOUND);
  }
  cookiefs_shim_close(nm);
  cookiefs_shim_close(a);
  cookiefs_shim_close(b);
  if (failures == 0) printf("shim_handoff %s: all checks passed\n", mode);
  return failures == 0 ? 0 : 1;
}
