// The C API of include/cookiefs_shim.h on top of StorageClient (assign) and
// ControlClient (release, flush, status, wait_ready). Exceptions never cross
// the C boundary: each entry point converts them into a cookiefs_status and
// the handle's last error.
#include "cookiefs_shim.h"

#include <cstring>
#include <memory>
#include <new>
#include <string>

#include "control_client.hpp"
#include "names.hpp"
#include "storage_client.hpp"

struct cookiefs_shim {
  std::string endpoints;
  std::string control_socket;
  std::string namespace_name = "default";
  std::string token;
  std::chrono::milliseconds timeout{30000};
  std::unique_ptr<cookiefs::StorageClient> storage;
  std::unique_ptr<cookiefs::ControlClient> control;
  std::string last_error;
};

namespace {

using cookiefs::wire::ErrorCode;

cookiefs_status fail(cookiefs_shim* shim, cookiefs_status st, std::string msg) {
  shim->last_error = std::move(msg);
  return st;
}

cookiefs_status from_wire(ErrorCode code) {
  switch (code) {
    case cookiefs::wire::BAD_REQUEST:
      return COOKIEFS_ERR_INVALID;
    case cookiefs::wire::UNAUTHENTICATED:
    case cookiefs::wire::PERMISSION_DENIED:
      return COOKIEFS_ERR_DENIED;
    case cookiefs::wire::NOT_FOUND:
      return COOKIEFS_ERR_NOT_FOUND;
    case cookiefs::wire::STALE_EPOCH:
    case cookiefs::wire::NOT_OWNER:
      return COOKIEFS_ERR_FENCED;
    case cookiefs::wire::ASSIGN_CONFLICT:
    case cookiefs::wire::VERSION_CONFLICT:
      return COOKIEFS_ERR_CONFLICT;
    case cookiefs::wire::UNAVAILABLE:
    case cookiefs::wire::SHUTTING_DOWN:
      return COOKIEFS_ERR_UNAVAILABLE;
    default:
      return COOKIEFS_ERR_INTERNAL;
  }
}

void copy_id(char (&dst)[129], const std::string& src) {
  const std::size_t n = std::min(src.size(), sizeof(dst) - 1);
  std::memcpy(dst, src.data(), n);
  dst[n] = '\0';
}

cookiefs_status check_session(cookiefs_shim* shim, const char* session_id) {
  if (!shim) return COOKIEFS_ERR_INVALID;
  shim->last_error.clear();
  if (!session_id || !cookiefs::valid_id(session_id)) {
    return fail(shim, COOKIEFS_ERR_INVALID,
                "invalid session id (expected [A-Za-z0-9._-]{1,128}, no leading '.')");
  }
  return COOKIEFS_OK;
}

// Runs one control-socket request; maps errors. On success *reply holds the body.
cookiefs_status control_call(cookiefs_shim* shim, cookiefs::wire::Envelope req,
                             std::chrono::milliseconds timeout, cookiefs::wire::Envelope* reply) {
  if (shim->control_socket.empty()) {
    return fail(shim, COOKIEFS_ERR_INVALID, "no control socket configured (--control PATH)");
  }
  try {
    if (!shim->control)
      shim->control = std::make_unique<cookiefs::ControlClient>(shim->control_socket);
    *reply = shim->control->call(std::move(req), timeout);
  } catch (const std::exception& e) {
    shim->control.reset();
    const bool timed_out = std::strstr(e.what(), "timed out") != nullptr;
    return fail(shim, timed_out ? COOKIEFS_ERR_TIMEOUT : COOKIEFS_ERR_UNAVAILABLE, e.what());
  }
  if (reply->has_error()) {
    return fail(shim, from_wire(reply->error().code()), reply->error().message());
  }
  return COOKIEFS_OK;
}

}  // namespace

extern "C" {

cookiefs_shim* cookiefs_shim_open(const cookiefs_shim_options* options) {
  auto* shim = new (std::nothrow) cookiefs_shim();
  if (!shim) return nullptr;
  if (options) {
    if (options->storage_endpoints) shim->endpoints = options->storage_endpoints;
    if (options->control_socket) shim->control_socket = options->control_socket;
    if (options->namespace_name && *options->namespace_name)
      shim->namespace_name = options->namespace_name;
    if (options->token) shim->token = options->token;
    if (options->timeout_ms) shim->timeout = std::chrono::milliseconds(options->timeout_ms);
  }
  return shim;
}

void cookiefs_shim_close(cookiefs_shim* shim) {
  if (!shim) return;
  if (shim->storage) shim->storage->stop();
  delete shim;
}

cookiefs_status cookiefs_shim_assign(cookiefs_shim* shim, const char* session_id,
                                     const char* engine_id, uint32_t grace_ms,
                                     cookiefs_assign_result* result) {
  if (auto st = check_session(shim, session_id); st != COOKIEFS_OK) return st;
  if (!engine_id || !cookiefs::valid_id(engine_id)) {
    return fail(shim, COOKIEFS_ERR_INVALID, "invalid engine id (expected [A-Za-z0-9._-]{1,128})");
  }
  if (shim->endpoints.empty()) {
    return fail(shim, COOKIEFS_ERR_INVALID,
                "no storage endpoints configured (--storage HOST:PORT)");
  }
  try {
    if (!shim->storage) {
      cookiefs::ClientOptions opt;
      std::string eps = shim->endpoints;
      std::size_t start = 0;
      while (start <= eps.size()) {
        std::size_t end = eps.find(',', start);
        if (end == std::string::npos) end = eps.size();
        if (end > start) opt.endpoints.push_back(eps.substr(start, end - start));
        start = end + 1;
      }
      for (const auto& ep : opt.endpoints) cookiefs::parse_endpoint(ep);  // validate early
      opt.namespace_name = shim->namespace_name;
      opt.token = shim->token;
      opt.client_name = "cookiefs-shim";
      opt.request_timeout = shim->timeout;
      shim->storage = std::make_unique<cookiefs::StorageClient>(std::move(opt));
      shim->storage->start();
    }
    cookiefs::wire::Assign req;
    req.set_session_id(session_id);
    req.set_engine_id(engine_id);
    req.set_grace_ms(grace_ms);
    req.set_create(true);
    const auto reply = shim->storage->assign(req, shim->timeout);
    if (result) {
      result->epoch = reply.epoch();
      result->version = reply.version();
      copy_id(result->previous_owner, reply.previous_owner());
      result->drained = reply.drained() ? 1 : 0;
      result->ready = reply.ready() ? 1 : 0;
    }
    return COOKIEFS_OK;
  } catch (const cookiefs::RequestError& e) {
    return fail(shim, from_wire(e.code()), e.what());
  } catch (const std::invalid_argument& e) {
    return fail(shim, COOKIEFS_ERR_INVALID, e.what());
  } catch (const std::exception& e) {
    return fail(shim, COOKIEFS_ERR_INTERNAL, e.what());
  }
}

cookiefs_status cookiefs_shim_release(cookiefs_shim* shim, const char* session_id) {
  if (auto st = check_session(shim, session_id); st != COOKIEFS_OK) return st;
  cookiefs::wire::Envelope req, reply;
  req.mutable_release()->set_session_id(session_id);
  return control_call(shim, std::move(req), shim->timeout, &reply);
}

cookiefs_status cookiefs_shim_flush(cookiefs_shim* shim, const char* session_id) {
  if (auto st = check_session(shim, session_id); st != COOKIEFS_OK) return st;
  cookiefs::wire::Envelope req, reply;
  req.mutable_flush()->set_session_id(session_id);
  req.mutable_flush()->set_timeout_ms(static_cast<uint32_t>(shim->timeout.count()));
  return control_call(shim, std::move(req), shim->timeout + std::chrono::seconds(1), &reply);
}

cookiefs_status cookiefs_shim_status(cookiefs_shim* shim, const char* session_id,
                                     cookiefs_session_status* status) {
  if (auto st = check_session(shim, session_id); st != COOKIEFS_OK) return st;
  cookiefs::wire::Envelope req, reply;
  req.mutable_status_request()->set_session_id(session_id);
  const auto st = control_call(shim, std::move(req), shim->timeout, &reply);
  if (st != COOKIEFS_OK) return st;
  if (!reply.has_session_status()) return fail(shim, COOKIEFS_ERR_INTERNAL, "unexpected reply");
  if (status) {
    const auto& s = reply.session_status();
    status->present = s.present();
    status->owned = s.owned();
    status->writable = s.writable();
    status->connected = s.connected();
    status->version = s.version();
    status->epoch = s.epoch();
    status->dirty_bytes = s.dirty_bytes();
    copy_id(status->owner, s.owner());
  }
  return COOKIEFS_OK;
}

cookiefs_status cookiefs_shim_wait_ready(cookiefs_shim* shim, const char* session_id,
                                         uint32_t timeout_ms) {
  if (auto st = check_session(shim, session_id); st != COOKIEFS_OK) return st;
  const auto timeout = timeout_ms ? std::chrono::milliseconds(timeout_ms) : shim->timeout;
  cookiefs::wire::Envelope req, reply;
  req.mutable_wait_ready()->set_session_id(session_id);
  req.mutable_wait_ready()->set_timeout_ms(static_cast<uint32_t>(timeout.count()));
  return control_call(shim, std::move(req), timeout + std::chrono::seconds(1), &reply);
}

const char* cookiefs_shim_last_error(const cookiefs_shim* shim) {
  return shim ? shim->last_error.c_str() : "no shim handle";
}

const char* cookiefs_status_name(cookiefs_status status) {
  switch (status) {
    case COOKIEFS_OK:
      return "ok";
    case COOKIEFS_ERR_INVALID:
      return "invalid";
    case COOKIEFS_ERR_UNAVAILABLE:
      return "unavailable";
    case COOKIEFS_ERR_TIMEOUT:
      return "timeout";
    case COOKIEFS_ERR_NOT_FOUND:
      return "not-found";
    case COOKIEFS_ERR_CONFLICT:
      return "conflict";
    case COOKIEFS_ERR_FENCED:
      return "fenced";
    case COOKIEFS_ERR_DENIED:
      return "denied";
    case COOKIEFS_ERR_INTERNAL:
      return "internal";
  }
  return "unknown";
}

}  // extern "C"
