/* cookiefs engine-shim: the C API an engine or a network manager (NM) links
 * to move browsing sessions between engine hosts and to make their cookies
 * durable.
 *
 *   assign     (NM)     storage service: make ENGINE the owner of SESSION; returns
 *                       when the old owner drained and the new owner is ready.
 *   release    (engine) local cookiefs: commit SESSION, stop writing, give it up.
 *   flush      (engine) local cookiefs: return once SESSION is durable in PostgreSQL.
 *   status     (engine) local cookiefs: version, epoch, owner, dirty bytes.
 *   wait_ready (engine) local cookiefs: block until SESSION is held and writable.
 *
 * Thread-safety: a cookiefs_shim handle may be used from one thread at a time;
 * open one handle per thread for concurrency. Every function returns a
 * cookiefs_status; on failure cookiefs_shim_last_error() describes it (the text
 * never contains cookie contents).
 */
#ifndef COOKIEFS_SHIM_H
#define COOKIEFS_SHIM_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cookiefs_status {
  COOKIEFS_OK = 0,
  COOKIEFS_ERR_INVALID = 1,     /* bad argument (session id, engine id, options) */
  COOKIEFS_ERR_UNAVAILABLE = 2, /* storage service or local mount unreachable */
  COOKIEFS_ERR_TIMEOUT = 3,
  COOKIEFS_ERR_NOT_FOUND = 4, /* no such session */
  COOKIEFS_ERR_CONFLICT = 5,  /* another assign of this session is in progress */
  COOKIEFS_ERR_FENCED = 6,    /* this host's epoch is stale: it no longer owns the session */
  COOKIEFS_ERR_DENIED = 7,    /* bad token, wrong namespace, peer not allowed */
  COOKIEFS_ERR_INTERNAL = 8
} cookiefs_status;

typedef struct cookiefs_shim_options {
  const char* storage_endpoints; /* "host:port[,host:port...]"; needed for assign */
  const char* control_socket;    /* local cookiefs control socket; needed for the rest */
  const char* namespace_name;    /* NULL = "default" */
  const char* token;             /* NULL = none */
  uint32_t timeout_ms;           /* 0 = 30000 */
} cookiefs_shim_options;

typedef struct cookiefs_assign_result {
  uint64_t epoch;
  uint64_t version;
  char previous_owner[129];
  int drained; /* previous owner confirmed its drain within the grace period */
  int ready;   /* new owner's mount confirmed it holds the session */
} cookiefs_assign_result;

typedef struct cookiefs_session_status {
  int present;
  int owned;
  int writable;
  int connected;
  uint64_t version;
  uint64_t epoch;
  uint64_t dirty_bytes;
  char owner[129];
} cookiefs_session_status;

typedef struct cookiefs_shim cookiefs_shim;

/* Returns NULL only when out of memory; connection problems surface per call. */
cookiefs_shim* cookiefs_shim_open(const cookiefs_shim_options* options);
void cookiefs_shim_close(cookiefs_shim* shim);

cookiefs_status cookiefs_shim_assign(cookiefs_shim* shim, const char* session_id,
                                     const char* engine_id, uint32_t grace_ms,
                                     cookiefs_assign_result* result);
cookiefs_status cookiefs_shim_release(cookiefs_shim* shim, const char* session_id);
cookiefs_status cookiefs_shim_flush(cookiefs_shim* shim, const char* session_id);
cookiefs_status cookiefs_shim_status(cookiefs_shim* shim, const char* session_id,
                                     cookiefs_session_status* status);
cookiefs_status cookiefs_shim_wait_ready(cookiefs_shim* shim, const char* session_id,
                                         uint32_t timeout_ms);

/* Message of the last failure on this handle ("" after a success). */
const char* cookiefs_shim_last_error(const cookiefs_shim* shim);
/* "ok", "invalid", "unavailable", ... */
const char* cookiefs_status_name(cookiefs_status status);

#ifdef __cplusplus
}
#endif

#endif /* COOKIEFS_SHIM_H */
