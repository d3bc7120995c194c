// PgStore: every SQL statement of the storage-service. Each function runs one
// short transaction on the connection it is given and either completes or
// changes nothing. Domain failures are StoreError (NOT_FOUND, STALE_EPOCH,
// VERSION_CONFLICT, ...); database failures are pqxx exceptions, mapped to
// UNAVAILABLE/INTERNAL by PgPool. Notifications for other replicas are sent
// with pg_notify inside the same transaction, so they fire only on commit.
//
// Thread-safety: stateless; a connection must be used by one thread at a time
// (PgPool guarantees that). prepare_statements() must run once per connection.
#pragma once

#include <chrono>
#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include "authorization.hpp"
#include "change_notice.hpp"
#include "commit_plan.hpp"
#include "cookiefs.pb.h"

namespace pqxx {
class connection_base;
class transaction_base;
}  // namespace pqxx

namespace cookiefs::storage {

// Who is asking: everything is scoped by the connection's namespace, and
// checked against its role (authorization.hpp) where the session's owner or
// epoch matters.
struct Scope {
  std::string namespace_name;
  std::string engine_id;  // empty for the shim / NM / operators
  Role role = Role::unrestricted;

  Caller caller() const { return {role, engine_id}; }
};

void prepare_statements(pqxx::connection_base& conn);

wire::CommitReply commit(pqxx::connection_base& conn, const Scope& scope,
                         const wire::CommitSession& req, const Limits& limits);

// One commit inside a transaction the caller owns (group commit runs several
// in one). check_commit_request() must have passed. A StoreError thrown here
// means nothing was written, except a session created by req.create(): the
// caller wraps creating commits in a savepoint. Locks the session's row.
wire::CommitReply commit_in(pqxx::transaction_base& t, const Scope& scope,
                            const wire::CommitSession& req, const Limits& limits);

// Group commit: several commits (check_commit_request() passed, sorted by
// (namespace, session), stable) in the caller's transaction, each with its
// own checks and result: a commit that fails gets `error` (a StoreError) and
// wrote nothing. The batch's locks take one round trip (and one more reads
// the files of sessions without a stored manifest); each commit then writes
// in one (plus one per extra new file); a rejected commit's idempotency key
// is looked up (replay_of). Database errors throw and
// leave the transaction unusable.
struct BatchCommit {
  const Scope* scope;
  const wire::CommitSession* req;
  const Limits* limits;
  std::exception_ptr error;
  wire::CommitReply reply;
};
void commit_batch(pqxx::transaction_base& t, std::vector<BatchCommit>& batch);

wire::FetchReply fetch(pqxx::connection_base& conn, const Scope& scope,
                       const wire::FetchSession& req, std::int64_t history_versions);

wire::ListReply list(pqxx::connection_base& conn, const Scope& scope,
                     const wire::ListSessions& req);

void delete_session(pqxx::connection_base& conn, const Scope& scope,
                    const wire::DeleteSession& req);

// First step of an assign: marks the session as being assigned (until `hold`
// from now) so concurrent assigns get ASSIGN_CONFLICT, creates it if asked,
// and asks the current owner (if another engine) to drain.
struct AssignStart {
  std::string previous_owner;
  std::uint64_t epoch = 0;
  std::uint64_t version = 0;
  bool drain_requested = false;
};
AssignStart begin_assign(pqxx::connection_base& conn, const Scope& scope, const wire::Assign& req,
                         const std::string& assign_id, std::chrono::milliseconds hold,
                         std::uint32_t drain_deadline_ms);

// Moves ownership to req.engine_id with epoch+1 (unless it already owns it).
wire::AssignReply finish_assign(pqxx::connection_base& conn, const Scope& scope,
                                const wire::Assign& req, const std::string& assign_id);

// Clears the assign mark (best effort; it also expires by itself).
void end_assign(pqxx::connection_base& conn, const Scope& scope, const std::string& session_id,
                const std::string& assign_id);

// The owner gives the session up: owner cleared when the epoch matches.
void release(pqxx::connection_base& conn, const Scope& scope, const wire::Release& req);

// Sends a notice to every replica (DrainDone / SessionReady hand-shake),
// once authorize() let the caller send it: only the engine a hand-off waits
// on (the session's owner at that epoch) may. Throws StoreError otherwise.
void announce(pqxx::connection_base& conn, const Scope& scope, const ChangeNotice& notice);

}  // namespace cookiefs::storage
