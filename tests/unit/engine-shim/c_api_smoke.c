/* Compiled as C: proves cookiefs_shim.h is a plain C API and that its error
 * paths behave as documented without any server. Exits 0 when every check
 * holds, else prints the failed check and exits 1. */
#include <stdio.h>
#include <string.h>

#include "cookiefs_shim.h"

static int failures = 0;
#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
      failures++;                                                              \
    }                                                                          \
  } while (0)

int main(int argc, char** argv) {
  const char* socket_path = argc > 1 ? argv[1] : "/nonexistent/cookiefs.sock";
  cookiefs_shim_options opt;
  memset(&opt, 0, sizeof opt);
  opt.control_socket = socket_path;
  opt.timeout_ms = 2000;
  cookiefs_shim* shim = cookiefs_shim_open(&opt);
  CHECK(shim != NULL);

  CHECK(cookiefs_shim_flush(shim, "../etc") == COOKIEFS_ERR_INVALID);
  CHECK(strstr(cookiefs_shim_last_error(shim), "invalid session id") != NULL);
  CHECK(cookiefs_shim_flush(shim, NULL) == COOKIEFS_ERR_INVALID);

  cookiefs_assign_result ar;
  CHECK(cookiefs_shim_assign(shim, "s1", "engine-b", 0, &ar) == COOKIEFS_ERR_INVALID);
  CHECK(strstr(cookiefs_shim_last_error(shim), "no storage endpoints") != NULL);

  if (argc <= 1) {
    CHECK(cookiefs_shim_release(shim, "s1") == COOKIEFS_ERR_UNAVAILABLE);
    CHECK(strstr(cookiefs_shim_last_error(shim), "cannot reach") != NULL);
  } else {
    /* A live control socket (the unit test's in-process server) answers. */
    cookiefs_session_status st;
    memset(&st, 0, sizeof st);
    CHECK(cookiefs_shim_status(shim, "s1", &st) == COOKIEFS_OK);
    CHECK(st.present == 1);
    CHECK(st.version == 7);
    CHECK(strcmp(st.owner, "engine-a") == 0);
    CHECK(cookiefs_shim_flush(shim, "s1") == COOKIEFS_OK);
    CHECK(strcmp(cookiefs_shim_last_error(shim), "") == 0);
    CHECK(cookiefs_shim_release(shim, "missing") == COOKIEFS_ERR_NOT_FOUND);
  }

  CHECK(strcmp(cookiefs_status_name(COOKIEFS_ERR_FENCED), "fenced") == 0);
  cookiefs_shim_close(shim);
  if (failures == 0) printf("c_api_smoke: all checks passed\n");
  return failures == 0 ? 0 : 1;
}
