// Authorization: the one place that says who may do what. A pure function of
// the caller (its role and the engine id it proved at hello), the operation
// and, where the rule depends on it, the session's current owner and epoch.
// The connection asks before it touches the database (role rules); PgStore
// asks again with the locked row (owner and epoch rules), so a check and the
// write it guards see the same state.
//
// Namespaces are not an input: a connection's namespace is fixed at hello by
// its principal, and every statement is scoped by it (see Scope).
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "cookiefs.pb.h"

namespace cookiefs::storage {

enum class Role {
  engine,     // a mount: commits under its own engine ids
  manager,    // the network manager: assign, release
  operator_,  // cookiefsctl: list, fetch, import, delete, restore
  // auth.mode none, a connection without an engine id: manager and operator
  // at once (the behaviour from before principals existed).
  unrestricted,
};

const char* role_name(Role r);

enum class Operation {
  fetch,
  commit,
  list,
  subscribe,
  assign,
  release,
  delete_session,
  drain_done,
  session_ready,
};

const char* operation_name(Operation op);

struct Caller {
  Role role = Role::engine;
  std::string_view engine_id;  // proved at hello; empty for manager/operator
};

// The session's row, as locked by the statement the check guards.
struct SessionState {
  std::string_view owner;  // empty when unowned
  std::uint64_t epoch = 0;
};

struct Decision {
  wire::ErrorCode code = wire::ERROR_UNSPECIFIED;  // ERROR_UNSPECIFIED: allowed
  std::string reason;                              // for the error message; no secrets
  bool allowed() const { return code == wire::ERROR_UNSPECIFIED; }
};

// Role rules, before any database access.
Decision authorize(const Caller& caller, Operation op);

// Role rules and then the owner/epoch rules against the session's state.
// request_epoch is the epoch the request names (writer_epoch of a delete,
// epoch of a release, DrainDone or SessionReady; unused for commits, whose
// epoch check is the commit's own).
Decision authorize(const Caller& caller, Operation op, const SessionState& session,
                   std::uint64_t request_epoch);

// An assign of a session to engine `to_engine`. A manager may move any
// session; an engine may only claim one for itself (auto affinity: the first
// writer of an unowned session takes it), never create one that way.
Decision authorize_assign(const Caller& caller, std::string_view to_engine, bool create);
// The same, and then against the session's state: an engine claims only an
// unowned session.
Decision authorize_assign(const Caller& caller, std::string_view to_engine, bool create,
                          const SessionState& session);

}  // namespace cookiefs::storage
