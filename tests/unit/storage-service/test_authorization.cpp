// Authorization: the whole table of role x operation, and the owner/epoch
// rules that need the session's row.
#include <doctest/doctest.h>

#include "authorization.hpp"

using namespace cookiefs;
using namespace cookiefs::storage;

namespace {

const Caller kEngineA{Role::engine, "host-a"};
const Caller kEngineB{Role::engine, "host-b"};
const Caller kManager{Role::manager, ""};
const Caller kOperator{Role::operator_, ""};
const Caller kUnrestricted{Role::unrestricted, ""};

bool allowed(const Caller& c, Operation op) {
  return authorize(c, op).allowed();
}

wire::ErrorCode code(const Caller& c, Operation op, SessionState s, std::uint64_t epoch) {
  return authorize(c, op, s, epoch).code;
}

}  // namespace

TEST_CASE("role rules") {
  using O = Operation;
  struct Row {
    Operation op;
    bool engine, manager, operator_, unrestricted;
  };
  const Row table[] = {
      {O::fetch, true, false, true, true},
      {O::commit, true, false, true, true},
      {O::list, true, true, true, true},
      {O::subscribe, true, true, true, true},
      {O::assign, false, true, false, true},
      {O::release, true, true, false, true},
      {O::delete_session, true, false, true, true},
      {O::drain_done, true, false, false, true},
      {O::session_ready, true, false, false, true},
  };
  for (const auto& r : table) {
    CAPTURE(operation_name(r.op));
    CHECK(allowed(kEngineA, r.op) == r.engine);
    CHECK(allowed(kManager, r.op) == r.manager);
    CHECK(allowed(kOperator, r.op) == r.operator_);
    CHECK(allowed(kUnrestricted, r.op) == r.unrestricted);
  }
  const Decision d = authorize(kEngineA, O::assign);
  CHECK(d.code == wire::PERMISSION_DENIED);
  CHECK(d.reason == "a principal of role engine may not assign");
  // An engine connection always has its engine id (hello sees to it).
  CHECK(authorize({Role::engine, ""}, O::fetch).code == wire::PERMISSION_DENIED);
}

TEST_CASE("commit: only the owner writes an owned session; anyone with the epoch an unowned one") {
  CHECK(code(kEngineA, Operation::commit, {"host-a", 3}, 3) == wire::ERROR_UNSPECIFIED);
  CHECK(code(kEngineB, Operation::commit, {"host-a", 3}, 3) == wire::NOT_OWNER);
  CHECK(code(kEngineB, Operation::commit, {"", 3}, 3) == wire::ERROR_UNSPECIFIED);
  CHECK(code(kOperator, Operation::commit, {"host-a", 3}, 3) == wire::NOT_OWNER);
  CHECK(code(kOperator, Operation::commit, {"", 3}, 3) == wire::ERROR_UNSPECIFIED);
  CHECK(code(kUnrestricted, Operation::commit, {"host-a", 3}, 3) == wire::NOT_OWNER);
  CHECK(code(kManager, Operation::commit, {"", 3}, 3) == wire::PERMISSION_DENIED);
}

TEST_CASE("delete: the owner at its current epoch, or an operator") {
  CHECK(code(kEngineA, Operation::delete_session, {"host-a", 3}, 3) == wire::ERROR_UNSPECIFIED);
  // Epoch 0 is no way around the fence any more.
  CHECK(code(kEngineA, Operation::delete_session, {"host-a", 3}, 0) == wire::STALE_EPOCH);
  CHECK(code(kEngineA, Operation::delete_session, {"host-a", 3}, 2) == wire::STALE_EPOCH);
  CHECK(code(kEngineB, Operation::delete_session, {"host-a", 3}, 3) == wire::NOT_OWNER);
  CHECK(code(kEngineB, Operation::delete_session, {"", 3}, 3) == wire::ERROR_UNSPECIFIED);
  CHECK(code(kOperator, Operation::delete_session, {"host-a", 3}, 0) == wire::ERROR_UNSPECIFIED);
  CHECK(code(kManager, Operation::delete_session, {"host-a", 3}, 3) == wire::PERMISSION_DENIED);
}

TEST_CASE("release: the owner or a manager") {
  CHECK(code(kEngineA, Operation::release, {"host-a", 3}, 3) == wire::ERROR_UNSPECIFIED);
  CHECK(code(kEngineB, Operation::release, {"host-a", 3}, 3) == wire::NOT_OWNER);
  CHECK(code(kEngineB, Operation::release, {"", 3}, 3) == wire::ERROR_UNSPECIFIED);  // no-op
  CHECK(code(kManager, Operation::release, {"host-a", 3}, 3) == wire::ERROR_UNSPECIFIED);
  CHECK(code(kOperator, Operation::release, {"host-a", 3}, 3) == wire::PERMISSION_DENIED);
}

TEST_CASE("DrainDone and SessionReady: only from the engine the hand-off waits on") {
  for (const auto op : {Operation::drain_done, Operation::session_ready}) {
    CAPTURE(operation_name(op));
    CHECK(code(kEngineA, op, {"host-a", 4}, 4) == wire::ERROR_UNSPECIFIED);
    CHECK(code(kEngineB, op, {"host-a", 4}, 4) == wire::NOT_OWNER);
    CHECK(code(kEngineB, op, {"", 4}, 4) == wire::NOT_OWNER);
    CHECK(code(kEngineA, op, {"host-a", 4}, 3) == wire::STALE_EPOCH);
    CHECK(code(kManager, op, {"host-a", 4}, 4) == wire::PERMISSION_DENIED);
    CHECK(code(kOperator, op, {"host-a", 4}, 4) == wire::PERMISSION_DENIED);
  }
}

TEST_CASE("assign: a manager moves any session; an engine only claims an unowned one for itself") {
  CHECK(authorize_assign(kManager, "host-b", false).allowed());
  CHECK(authorize_assign(kManager, "host-b", true).allowed());
  CHECK(authorize_assign(kUnrestricted, "host-b", true).allowed());
  CHECK(authorize_assign(kOperator, "host-b", false).code == wire::PERMISSION_DENIED);
  // An engine: for another engine, or creating, never.
  CHECK(authorize_assign(kEngineA, "host-b", false).code == wire::PERMISSION_DENIED);
  CHECK(authorize_assign(kEngineA, "host-a", true).code == wire::PERMISSION_DENIED);
  CHECK(authorize_assign(kEngineA, "host-a", false).allowed());
  // ...and for itself only what nobody (or itself) owns.
  CHECK(authorize_assign(kEngineA, "host-a", false, {"", 2}).allowed());
  CHECK(authorize_assign(kEngineA, "host-a", false, {"host-a", 2}).allowed());
  CHECK(authorize_assign(kEngineA, "host-a", false, {"host-b", 2}).code == wire::PERMISSION_DENIED);
  CHECK(authorize_assign(kManager, "host-a", false, {"host-b", 2}).allowed());
}
