// The rules of who may do what; see authorization.hpp.
#include "authorization.hpp"

namespace cookiefs::storage {
namespace {

Decision allow() {
  return {};
}

Decision deny(wire::ErrorCode code, std::string reason) {
  return {code, std::move(reason)};
}

Decision role_denied(const Caller& c, Operation op) {
  return deny(wire::PERMISSION_DENIED, std::string("a principal of role ") + role_name(c.role) +
                                           " may not " + operation_name(op));
}

bool is_owner(const Caller& c, const SessionState& s) {
  return !s.owner.empty() && !c.engine_id.empty() && s.owner == c.engine_id;
}

}  // namespace

const char* role_name(Role r) {
  switch (r) {
    case Role::engine:
      return "engine";
    case Role::manager:
      return "manager";
    case Role::operator_:
      return "operator";
    case Role::unrestricted:
      return "unrestricted";
  }
  return "?";
}

const char* operation_name(Operation op) {
  switch (op) {
    case Operation::fetch:
      return "fetch";
    case Operation::commit:
      return "commit";
    case Operation::list:
      return "list";
    case Operation::subscribe:
      return "subscribe";
    case Operation::assign:
      return "assign";
    case Operation::release:
      return "release";
    case Operation::delete_session:
      return "delete";
    case Operation::drain_done:
      return "send DrainDone";
    case Operation::session_ready:
      return "send SessionReady";
  }
  return "?";
}

Decision authorize(const Caller& c, Operation op) {
  const bool engine = c.role == Role::engine;
  const bool manager = c.role == Role::manager || c.role == Role::unrestricted;
  const bool op_role = c.role == Role::operator_ || c.role == Role::unrestricted;
  bool ok = false;
  switch (op) {
    case Operation::list:
    case Operation::subscribe:
      ok = true;  // within the namespace, which the connection cannot leave
      break;
    case Operation::fetch:
    case Operation::commit:
    case Operation::delete_session:
      ok = engine || op_role;
      break;
    case Operation::assign:
      ok = manager;
      break;
    case Operation::release:
      ok = engine || manager;
      break;
    case Operation::drain_done:
    case Operation::session_ready:
      ok = engine || c.role == Role::unrestricted;
      break;
  }
  if (!ok) return role_denied(c, op);
  if (engine && c.engine_id.empty()) {
    // hello does not let this happen; say so rather than act as nobody.
    return deny(wire::PERMISSION_DENIED, "an engine connection without an engine id");
  }
  return allow();
}

Decision authorize(const Caller& c, Operation op, const SessionState& s,
                   std::uint64_t request_epoch) {
  if (Decision d = authorize(c, op); !d.allowed()) return d;
  const bool engine = c.role == Role::engine;
  switch (op) {
    case Operation::commit:
      // Strict affinity: nobody writes an owned session in its owner's stead.
      // An unowned session (released, or auto affinity) takes any writer that
      // holds its epoch.
      if (s.owner.empty() || is_owner(c, s)) return allow();
      return deny(wire::NOT_OWNER, c.engine_id.empty()
                                       ? "an operator connection may not write an owned session"
                                       : "this engine does not own the session");
    case Operation::delete_session:
      if (!engine) return allow();  // operators delete any session of the namespace
      if (request_epoch != s.epoch) {
        return deny(wire::STALE_EPOCH, "an engine deletes only at the session's current epoch");
      }
      if (s.owner.empty() || is_owner(c, s)) return allow();
      return deny(wire::NOT_OWNER, "this engine does not own the session");
    case Operation::release:
      if (!engine || s.owner.empty() || is_owner(c, s)) return allow();
      return deny(wire::NOT_OWNER, "only the owner or a manager may release a session");
    case Operation::drain_done:
    case Operation::session_ready:
      if (!engine) return allow();
      // A drain is asked of the current owner at the epoch being retired; a
      // ready is awaited from the new owner at its new epoch. Both are the
      // row's owner and epoch while the hand-off waits.
      if (!is_owner(c, s)) {
        return deny(wire::NOT_OWNER, "no hand-off waits on this engine for the session");
      }
      if (request_epoch != s.epoch) {
        return deny(wire::STALE_EPOCH, "no hand-off waits on this epoch of the session");
      }
      return allow();
    case Operation::fetch:
    case Operation::list:
    case Operation::subscribe:
    case Operation::assign:
      return allow();
  }
  return allow();
}

Decision authorize_assign(const Caller& c, std::string_view to_engine, bool create) {
  if (c.role != Role::engine) return authorize(c, Operation::assign);
  if (c.engine_id.empty() || to_engine != c.engine_id || create) {
    return deny(wire::PERMISSION_DENIED,
                "an engine may not assign; it may only claim an unowned session for itself");
  }
  return allow();
}

Decision authorize_assign(const Caller& c, std::string_view to_engine, bool create,
                          const SessionState& s) {
  if (Decision d = authorize_assign(c, to_engine, create); !d.allowed()) return d;
  if (c.role == Role::engine && !s.owner.empty() && !is_owner(c, s)) {
    return deny(wire::PERMISSION_DENIED,
                "an engine may not take a session another engine owns; only a manager moves it");
  }
  return allow();
}

}  // namespace cookiefs::storage
