// PgStore: all SQL of the storage-service; see pg_store.hpp.
#include "pg_store.hpp"

#include <pqxx/pqxx>

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <string_view>
#include <utility>
#include <vector>

#include "names.hpp"
#include "pg_statements.hpp"
#include "store_error.hpp"

namespace cookiefs::storage {
namespace {

using i64 = std::int64_t;

// A PostgreSQL text[] literal: every element quoted, so any path is safe.
std::string text_array(const std::vector<std::string>& items) {
  std::string out = "{";
  for (const auto& item : items) {
    if (out.size() > 1) out += ',';
    out += '"';
    for (char ch : item) {
      if (ch == '"' || ch == '\\') out += '\\';
      out += ch;
    }
    out += '"';
  }
  out += '}';
  return out;
}

std::string bool_array(const std::vector<bool>& items) {
  std::string out = "{";
  for (const bool item : items) {
    if (out.size() > 1) out += ',';
    out += item ? 't' : 'f';
  }
  out += '}';
  return out;
}

std::string int_array(const std::vector<i64>& items) {
  std::string out = "{";
  for (const auto item : items) {
    if (out.size() > 1) out += ',';
    out += std::to_string(item);
  }
  out += '}';
  return out;
}

void notify(pqxx::transaction_base& t, const ChangeNotice& n) {
  t.exec_prepared("notify", kNotifyChannel, encode_notice(n));
}

void require_id(const std::string& id, const char* what) {
  if (!valid_id(id)) throw StoreError(wire::BAD_REQUEST, std::string("invalid ") + what);
}

[[noreturn]] void not_found() {
  throw StoreError(wire::NOT_FOUND, "no such session");
}

[[noreturn]] void stale_epoch(std::uint64_t writer, const std::string& owner, std::uint64_t epoch,
                              std::uint64_t version) {
  wire::Error e;
  e.set_code(wire::STALE_EPOCH);
  e.set_message("writer epoch " + std::to_string(writer) + " is not the session's epoch " +
                std::to_string(epoch));
  e.set_current_epoch(epoch);
  e.set_current_owner(owner);
  e.set_current_version(version);
  throw StoreError(std::move(e));
}

// Turns a refusal of authorize() into the error a client acts on, with the
// session's current state (an engine that lost the session learns who has it).
void enforce(const Decision& d, const std::string& owner, std::uint64_t epoch,
             std::uint64_t version) {
  if (d.allowed()) return;
  wire::Error e;
  e.set_code(d.code);
  e.set_message(d.reason);
  if (d.code == wire::NOT_OWNER || d.code == wire::STALE_EPOCH) {
    e.set_current_epoch(epoch);
    e.set_current_owner(owner);
    e.set_current_version(version);
  }
  throw StoreError(std::move(e));
}

// Strict affinity on the server: a writer that skipped (or lost a race in) its
// own ownership check must not commit at the current epoch in another
// engine's name (the rule itself is in authorization.cpp).
void require_owner(const Scope& s, const std::string& owner, std::uint64_t epoch,
                   std::uint64_t version) {
  enforce(authorize(s.caller(), Operation::commit, {owner, epoch}, epoch), owner, epoch, version);
}

void fill_info(const pqxx::row& r, wire::SessionInfo& info) {
  info.set_session_id(r[0].as<std::string>());
  info.set_owner(r[1].as<std::string>());
  info.set_epoch(r[2].as<i64>());
  info.set_version(r[3].as<i64>());
  info.set_total_bytes(r[4].as<i64>());
  info.set_file_count(r[5].as<std::uint32_t>());
  info.set_created_unix_ms(r[6].as<i64>());
  info.set_updated_unix_ms(r[7].as<i64>());
}

struct Locked {
  std::string owner;
  std::uint64_t epoch = 0;
  std::uint64_t version = 0;
  std::optional<Manifest> manifest;  // when the stored one is of this version
  // The commit's idempotency key is stored: the reply to its retry.
  std::optional<wire::CommitReply> replay;
};

// Columns from `at`: owner, epoch, version, manifest_version = version,
// manifest; with `keyed`, then the version and epoch of the commit that
// stored the idempotency key (NULL when none did).
Locked locked_from(const pqxx::row& r, int at, bool keyed = false) {
  Locked l{r[at].as<std::string>(), r[at + 1].as<std::uint64_t>(), r[at + 2].as<std::uint64_t>(),
           std::nullopt, std::nullopt};
  if (!r[at + 3].is_null() && r[at + 3].as<bool>() && !r[at + 4].is_null()) {
    l.manifest = decode_manifest(pqxx::binarystring(r[at + 4]).str());
  }
  if (keyed && !r[at + 5].is_null()) {
    l.replay.emplace();
    l.replay->set_version(r[at + 5].as<i64>());
    l.replay->set_epoch(r[at + 6].as<i64>());
    l.replay->set_replayed(true);
  }
  return l;
}

std::optional<Locked> lock_session(pqxx::transaction_base& t, const Scope& s,
                                   const std::string& id) {
  auto r = t.exec_prepared("session_lock", s.namespace_name, id);
  if (r.empty()) return std::nullopt;
  return locked_from(r[0], 0);
}

}  // namespace

void prepare_statements(pqxx::connection_base& conn) {
  // Every statement here is keyed by (namespace, session): a generic plan is
  // as good as a custom one, and re-planning the commit statements for each
  // execution (the default's choice for them) cost a third of PostgreSQL's
  // CPU per commit.
  conn.set_variable("plan_cache_mode", "force_generic_plan");
  // And every one of them is a look-up by key, best done with an index and
  // nested loops. Before the first ANALYZE of a new database the generic
  // plans of the batch statements chose sequential scans and hash joins,
  // which got slower with every session added until autovacuum came by.
  conn.set_variable("enable_seqscan", "off");
  conn.set_variable("enable_hashjoin", "off");
  conn.set_variable("enable_mergejoin", "off");
  prepare_pg_statements(conn);
}

namespace {

// The writes of a group-commit batch's commits, gathered for batch_write.
struct BatchWrites {
  // One per commit.
  std::vector<std::string> ns, id, key, notice;
  std::vector<i64> version, total_bytes, file_count, prune_to, epoch;
  std::vector<bool> prune_keys;
  std::vector<i64> manifest_offset, manifest_size;  // the new manifest, in blob
  // One per closed path.
  std::vector<std::string> close_ns, close_id, close_path;
  std::vector<i64> close_version, close_from;
  // One per new file; its content and then its sha256 sit in blob at offset
  // (1-based, as SQL's substring counts).
  std::vector<std::string> file_ns, file_id, file_path;
  std::vector<i64> file_version, file_kind, file_mode, file_mtime, file_size, file_offset;
  std::string blob;
};

// Past this much content a batch's writes go out before the next commit's
// (a bytea parameter stays far below PostgreSQL's 1 GiB).
constexpr std::size_t kBatchWriteBytes = 32u << 20;

void flush_writes(pqxx::transaction_base& t, BatchWrites& w) {
  if (w.ns.empty()) return;
  t.exec_prepared("batch_write", text_array(w.ns), text_array(w.id), int_array(w.version),
                  int_array(w.total_bytes), int_array(w.file_count), int_array(w.prune_to),
                  text_array(w.key), int_array(w.epoch), text_array(w.close_ns),
                  text_array(w.close_id), text_array(w.close_path), int_array(w.close_version),
                  text_array(w.file_ns), text_array(w.file_id), text_array(w.file_path),
                  int_array(w.file_version), int_array(w.file_kind), int_array(w.file_mode),
                  int_array(w.file_mtime), int_array(w.file_size), int_array(w.file_offset),
                  pqxx::binarystring(w.blob), kNotifyChannel, text_array(w.notice),
                  bool_array(w.prune_keys), int_array(w.manifest_offset),
                  int_array(w.manifest_size), int_array(w.close_from));
  w = BatchWrites{};
}

// Old versions go every few commits, several at a time: the scan of the
// session's rows that finds them is paid once for all. Up to kPruneEvery - 1
// versions beyond history.versions may stay; fetch never serves them (it
// checks the kept range). Keys are kept at least 128 versions, so pruning
// them every 32nd version keeps the same guarantee for a fraction of the
// reads.
constexpr i64 kPruneEvery = 4;
constexpr i64 kKeyPruneEvery = 32;

// Rows closed at or before this version go (0: none this time). Keeps
// versions next-N+1 .. next reconstructable: a row closed at or before
// next-N+1 is visible in none of them.
i64 prune_horizon(i64 next, const Limits& limits) {
  if (limits.history_versions > 1 && next % kPruneEvery != 0) return 0;
  return next - limits.history_versions + 1;
}

std::string changed_notice(const Scope& s, const std::string& id, i64 version,
                           std::uint64_t epoch) {
  return encode_notice({.kind = ChangeNotice::Kind::changed,
                        .namespace_name = s.namespace_name,
                        .session_id = id,
                        .version = static_cast<std::uint64_t>(version),
                        .epoch = epoch,
                        .engine = s.engine_id});
}

void gather_writes(BatchWrites& w, const Scope& s, const wire::CommitSession& req,
                   const Limits& limits, const Locked& cur, const Manifest& manifest,
                   const CommitPlan& plan, i64 next) {
  const std::string& ns = s.namespace_name;
  const std::string& id = req.session_id();
  w.ns.push_back(ns);
  w.id.push_back(id);
  w.key.push_back(req.idempotency_key());
  w.notice.push_back(changed_notice(s, id, next, cur.epoch));
  w.version.push_back(next);
  w.total_bytes.push_back(static_cast<i64>(plan.total_bytes));
  w.file_count.push_back(static_cast<i64>(plan.file_count));
  w.prune_to.push_back(prune_horizon(next, limits));
  w.epoch.push_back(static_cast<i64>(cur.epoch));
  w.prune_keys.push_back(next % kKeyPruneEvery == 0);
  for (const auto& path : plan.close_paths) {
    w.close_ns.push_back(ns);
    w.close_id.push_back(id);
    w.close_path.push_back(path);
    w.close_version.push_back(next);
    w.close_from.push_back(manifest.from.at(path));
  }
  const std::string encoded = encode_manifest(manifest_after(manifest, plan, next));
  w.manifest_offset.push_back(static_cast<i64>(w.blob.size()) + 1);
  w.manifest_size.push_back(static_cast<i64>(encoded.size()));
  w.blob += encoded;
  for (const auto& f : plan.inserts) {
    const auto& e = *f.entry;
    w.file_ns.push_back(ns);
    w.file_id.push_back(id);
    w.file_path.push_back(e.path());
    w.file_version.push_back(next);
    w.file_kind.push_back(static_cast<i64>(e.kind()));
    w.file_mode.push_back(static_cast<i64>(e.mode() & 07777));
    w.file_mtime.push_back(e.mtime_ns());
    w.file_size.push_back(static_cast<i64>(e.content().size()));
    w.file_offset.push_back(static_cast<i64>(w.blob.size()) + 1);
    w.blob += e.content();
    w.blob += f.sha256;
  }
}

// The checks and writes of a commit whose session row is locked, with its
// current manifest read after the lock. With `gather`, the writes are added
// to it (for flush_writes) instead of sent.
wire::CommitReply commit_locked(pqxx::transaction_base& t, const Scope& s,
                                const wire::CommitSession& req, const Limits& limits,
                                const Locked& locked, bool created, const Manifest& manifest,
                                BatchWrites* gather = nullptr) {
  const std::string& ns = s.namespace_name;
  const std::string& id = req.session_id();
  const Locked* cur = &locked;  // the checks read like the rest of the file
  // A writer creating a session does not know its epoch yet: 0 means "new".
  const bool epoch_ok = req.writer_epoch() == cur->epoch || (created && req.writer_epoch() == 0);
  if (!epoch_ok) stale_epoch(req.writer_epoch(), cur->owner, cur->epoch, cur->version);
  require_owner(s, cur->owner, cur->epoch, cur->version);
  if (req.base_version() != cur->version) {
    wire::Error e;
    e.set_code(wire::VERSION_CONFLICT);
    e.set_message("base version " + std::to_string(req.base_version()) +
                  " is not the session's version " + std::to_string(cur->version));
    e.set_current_version(cur->version);
    e.set_current_epoch(cur->epoch);
    e.set_current_owner(cur->owner);
    throw StoreError(std::move(e));
  }

  const CommitPlan plan = plan_commit(req, manifest.sizes, limits);

  // Every check passed: from here on only writes. All but the last new file
  // are separate inserts; the rest of the commit is one statement.
  const i64 next = static_cast<i64>(cur->version) + 1;
  if (gather) {
    gather_writes(*gather, s, req, limits, *cur, manifest, plan, next);
    wire::CommitReply reply;
    reply.set_version(next);
    reply.set_epoch(cur->epoch);
    return reply;
  }
  for (std::size_t i = 0; i + 1 < plan.inserts.size(); ++i) {
    const auto& e = *plan.inserts[i].entry;
    t.exec_prepared("file_insert", ns, id, e.path(), next, static_cast<int>(e.kind()),
                    static_cast<int>(e.mode() & 07777), e.mtime_ns(),
                    static_cast<i64>(e.content().size()), pqxx::binarystring(e.content()),
                    pqxx::binarystring(plan.inserts[i].sha256));
  }
  const std::string notice = changed_notice(s, id, next, cur->epoch);
  const std::string after = encode_manifest(manifest_after(manifest, plan, next));
  const i64 prune_to = prune_horizon(next, limits);
  const std::string closes = text_array(plan.close_paths);
  const i64 size_total = static_cast<i64>(plan.total_bytes);
  const i64 count = static_cast<i64>(plan.file_count);
  const i64 epoch = static_cast<i64>(cur->epoch);
  const std::string& key = req.idempotency_key();
  if (plan.inserts.empty()) {
    t.exec_prepared("commit_write_none", ns, id, next, closes, size_total, count, prune_to, key,
                    epoch, kNotifyChannel, notice, pqxx::binarystring(after));
  } else {
    const auto& last = plan.inserts.back();
    const auto& e = *last.entry;
    t.exec_prepared("commit_write", ns, id, next, closes, size_total, count, prune_to, key, epoch,
                    kNotifyChannel, notice, pqxx::binarystring(after), e.path(),
                    static_cast<int>(e.kind()), static_cast<int>(e.mode() & 07777), e.mtime_ns(),
                    static_cast<i64>(e.content().size()), pqxx::binarystring(e.content()),
                    pqxx::binarystring(last.sha256));
  }

  wire::CommitReply reply;
  reply.set_version(next);
  reply.set_epoch(cur->epoch);
  return reply;
}

}  // namespace

wire::CommitReply commit(pqxx::connection_base& conn, const Scope& s,
                         const wire::CommitSession& req, const Limits& limits) {
  check_commit_request(req, limits);
  pqxx::work t(conn);
  auto reply = commit_in(t, s, req, limits);
  t.commit();
  return reply;
}

// The reply to a retry of a commit that landed (its idempotency key is
// stored), or nothing. The lock statement reads the key already (a key stored
// before it began); this is asked only after a check rejected the commit, for
// a key stored while we waited for the lock: that commit moved the session
// past the retry's base, so the retry always fails a check. Runs after the
// lock, in a new statement (a new snapshot under READ COMMITTED), which sees
// every commit that finished before we got the lock.
std::optional<wire::CommitReply> replay_of(pqxx::transaction_base& t, const std::string& ns,
                                           const wire::CommitSession& req) {
  if (req.idempotency_key().empty()) return std::nullopt;
  auto k = t.exec_prepared("key_lookup", ns, req.session_id(), req.idempotency_key());
  if (k.empty()) return std::nullopt;
  wire::CommitReply reply;
  reply.set_version(k[0][0].as<i64>());
  reply.set_epoch(k[0][1].as<i64>());
  reply.set_replayed(true);
  return reply;
}

wire::CommitReply commit_in(pqxx::transaction_base& t, const Scope& s,
                            const wire::CommitSession& req, const Limits& limits) {
  const std::string& ns = s.namespace_name;
  const std::string& id = req.session_id();

  // The only write before the checks below; a caller batching commits runs a
  // creating commit inside a savepoint so a rejected one leaves no session.
  bool created = false;
  if (req.create()) {
    created = !t.exec_prepared("session_create", ns, id, s.engine_id, i64{1}).empty();
  }
  // The lock also reads the key, in the statement's snapshot (taken before
  // waiting for the lock). A retry whose first attempt finished while we
  // waited is not seen there, but that attempt moved the session past the
  // retry's base: a check rejects it and replay_of asks again, in a new
  // snapshot. One round trip fewer than a separate key look-up.
  auto r = t.exec_prepared("session_lock_key", ns, id, req.idempotency_key());
  if (r.empty()) not_found();
  const Locked locked = locked_from(r[0], 0, true);
  const Locked* cur = &locked;
  if (cur->replay) return *cur->replay;  // nothing was written
  Manifest read;
  if (!cur->manifest) {
    // Not stored for this version (a session from before migration 4, or
    // written by an older release): read from its files.
    for (const auto& row : t.exec_prepared("manifest", ns, id)) {
      read.add(row[0].as<std::string>(), row[1].as<std::uint64_t>(), row[2].as<i64>());
    }
  }
  try {
    return commit_locked(t, s, req, limits, *cur, created, cur->manifest ? *cur->manifest : read);
  } catch (const StoreError&) {
    // Rejected by a check (they all come before the first write). A retry of
    // a commit that landed is rejected too (the session moved past its
    // base): answer it as replayed, writing nothing.
    if (auto r = replay_of(t, ns, req)) return *r;
    throw;
  }
}

void commit_batch(pqxx::transaction_base& t, std::vector<BatchCommit>& batch) {
  using SessionKey = std::pair<std::string, std::string>;
  // A batch of one (an idle service) is cheaper with the plain statements.
  const bool alone = batch.size() == 1;
  // Only a session's first commit in the batch uses what is read up front;
  // later ones (and sessions to create) read their own, seeing this batch's
  // writes.
  std::set<SessionKey> seen;
  std::vector<bool> first(batch.size());
  std::vector<std::string> nss, ids, keys;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    const auto& c = batch[i];
    first[i] = !alone && seen.emplace(c.scope->namespace_name, c.req->session_id()).second;
    if (!first[i]) continue;
    nss.push_back(c.scope->namespace_name);
    ids.push_back(c.req->session_id());
    keys.push_back(c.req->idempotency_key());
  }
  // One statement locks every session of the batch, in (namespace, session)
  // order like every batch, and returns their stored manifests and whether
  // each commit's key is stored (see commit_in); one more reads the files of
  // sessions without a manifest of their current version.
  std::map<SessionKey, Locked> locked;
  BatchWrites writes;
  if (!nss.empty()) {
    std::vector<std::string> read_nss, read_ids;
    for (const auto& row :
         t.exec_prepared("batch_lock", text_array(nss), text_array(ids), text_array(keys))) {
      auto it = locked
                    .emplace(SessionKey{row[0].as<std::string>(), row[1].as<std::string>()},
                             locked_from(row, 2, true))
                    .first;
      if (!it->second.manifest) {
        it->second.manifest.emplace();  // filled below
        read_nss.push_back(it->first.first);
        read_ids.push_back(it->first.second);
      }
    }
    if (!read_nss.empty()) {
      for (const auto& row :
           t.exec_prepared("batch_manifests", text_array(read_nss), text_array(read_ids))) {
        locked[{row[0].as<std::string>(), row[1].as<std::string>()}].manifest->add(
            row[2].as<std::string>(), row[3].as<std::uint64_t>(), row[4].as<i64>());
      }
    }
  }

  for (std::size_t i = 0; i < batch.size(); ++i) {
    auto& c = batch[i];
    const SessionKey key{c.scope->namespace_name, c.req->session_id()};
    const auto cur = locked.find(key);
    // Savepoints by hand: libpqxx 6.4's subtransaction issues its SAVEPOINT
    // lazily and skips it for exec_prepared (its rollback then undoes
    // nothing). Not released after success: a later ROLLBACK TO finds the
    // newest of that name, and RELEASE would be a round trip.
    const bool savepoint = c.req->create() && (!first[i] || cur == locked.end());
    try {
      if (!first[i] || cur == locked.end()) {
        // It reads the session itself, so it must see the gathered writes;
        // and they must come before the savepoint a rejection rolls back to.
        flush_writes(t, writes);
        if (savepoint) t.exec("SAVEPOINT create_commit");
        c.reply = commit_in(t, *c.scope, *c.req, *c.limits);
        continue;
      }
      if (cur->second.replay) {
        c.reply = *cur->second.replay;  // see commit_in
        continue;
      }
      try {
        c.reply = commit_locked(t, *c.scope, *c.req, *c.limits, cur->second, false,
                                *cur->second.manifest, &writes);
      } catch (const StoreError&) {
        auto r = replay_of(t, key.first, *c.req);  // see replay_of: only after a rejection
        if (!r) throw;
        c.reply = *r;
      }
    } catch (const StoreError&) {
      c.error = std::current_exception();  // it wrote nothing; the others go on
      if (savepoint) t.exec("ROLLBACK TO SAVEPOINT create_commit");
    }
    if (writes.blob.size() >= kBatchWriteBytes) flush_writes(t, writes);
  }
  flush_writes(t, writes);
}

wire::FetchReply fetch(pqxx::connection_base& conn, const Scope& s, const wire::FetchSession& req,
                       std::int64_t history_versions) {
  require_id(req.session_id(), "session id");
  pqxx::nontransaction t(conn);
  const auto rows =
      req.at_version() == 0
          ? t.exec_prepared("fetch_current", s.namespace_name, req.session_id(),
                            static_cast<i64>(req.if_newer_than()), !req.manifest_only())
          : t.exec_prepared("fetch_at", s.namespace_name, req.session_id(),
                            static_cast<i64>(req.at_version()), !req.manifest_only(),
                            history_versions);
  if (rows.empty()) not_found();
  wire::FetchReply reply;
  fill_info(rows[0], *reply.mutable_info());
  const std::uint64_t current = reply.info().version();
  if (req.at_version() == 0 && req.if_newer_than() > 0 && current <= req.if_newer_than()) {
    reply.set_not_modified(true);
    return reply;
  }
  const bool past = req.at_version() != 0 && req.at_version() != current;
  if (past) {
    const std::uint64_t oldest = current >= static_cast<std::uint64_t>(history_versions)
                                     ? current - static_cast<std::uint64_t>(history_versions) + 1
                                     : 1;
    if (req.at_version() > current || req.at_version() < oldest) {
      throw StoreError(wire::NOT_FOUND, "version " + std::to_string(req.at_version()) +
                                            " is not kept (kept: " + std::to_string(oldest) + ".." +
                                            std::to_string(current) + ")");
    }
  }
  constexpr int kFile = 8;  // first file column, after the session's
  std::uint64_t total = 0;
  for (const auto& row : rows) {
    if (row[kFile].is_null()) continue;  // a session without files
    auto* f = reply.add_files();
    f->set_path(row[kFile].as<std::string>());
    f->set_kind(static_cast<wire::FileKind>(row[kFile + 1].as<int>()));
    f->set_mode(row[kFile + 2].as<std::uint32_t>());
    f->set_mtime_ns(row[kFile + 3].as<i64>());
    f->set_size(row[kFile + 4].as<std::uint64_t>());
    f->set_sha256(pqxx::binarystring(row[kFile + 5]).str());
    if (!req.manifest_only()) f->set_content(pqxx::binarystring(row[kFile + 6]).str());
    total += f->size();
  }
  if (past) {
    reply.mutable_info()->set_version(req.at_version());
    reply.mutable_info()->set_total_bytes(total);
    reply.mutable_info()->set_file_count(static_cast<std::uint32_t>(reply.files_size()));
  }
  return reply;
}

wire::ListReply list(pqxx::connection_base& conn, const Scope& s, const wire::ListSessions& req) {
  constexpr std::uint32_t kDefaultLimit = 100, kMaxLimit = 1000;
  if (!req.owner().empty()) require_id(req.owner(), "owner");
  const std::uint32_t limit = req.limit() == 0 ? kDefaultLimit : std::min(req.limit(), kMaxLimit);
  pqxx::read_transaction t(conn);
  // One row more than asked tells whether another page follows.
  const i64 fetch_n = static_cast<i64>(limit) + 1;
  pqxx::result r =
      req.owner().empty()
          ? t.exec_prepared("list_all", s.namespace_name, req.after(), fetch_n)
          : t.exec_prepared("list_owner", s.namespace_name, req.after(), fetch_n, req.owner());
  wire::ListReply reply;
  for (std::size_t i = 0; i < r.size() && i < limit; ++i) fill_info(r[i], *reply.add_sessions());
  if (r.size() > limit) reply.set_next_after(reply.sessions(limit - 1).session_id());
  return reply;
}

void delete_session(pqxx::connection_base& conn, const Scope& s, const wire::DeleteSession& req) {
  require_id(req.session_id(), "session id");
  const std::string& ns = s.namespace_name;
  pqxx::work t(conn);
  const auto cur = lock_session(t, s, req.session_id());
  if (!cur) not_found();
  if (req.writer_epoch() != 0 && req.writer_epoch() != cur->epoch) {
    stale_epoch(req.writer_epoch(), cur->owner, cur->epoch, cur->version);
  }
  // An engine deletes only what it owns, at its current epoch (writer_epoch 0
  // is no way around that); operators delete any session of the namespace.
  enforce(authorize(s.caller(), Operation::delete_session, {cur->owner, cur->epoch},
                    req.writer_epoch()),
          cur->owner, cur->epoch, cur->version);
  t.exec_prepared("files_delete", ns, req.session_id());
  t.exec_prepared("keys_delete", ns, req.session_id());
  t.exec_prepared("session_delete", ns, req.session_id());
  notify(t, {.kind = ChangeNotice::Kind::deleted,
             .namespace_name = ns,
             .session_id = req.session_id(),
             .version = cur->version,
             .epoch = cur->epoch,
             .engine = s.engine_id});
  t.commit();
}

AssignStart begin_assign(pqxx::connection_base& conn, const Scope& s, const wire::Assign& req,
                         const std::string& assign_id, std::chrono::milliseconds hold,
                         std::uint32_t drain_deadline_ms) {
  require_id(req.session_id(), "session id");
  require_id(req.engine_id(), "engine id");
  const std::string& ns = s.namespace_name;
  pqxx::work t(conn);
  // Epoch 0 and no owner: finish_assign makes it epoch 1, as a commit-create would.
  if (req.create()) t.exec_prepared("session_create", ns, req.session_id(), "", i64{0});
  auto r = t.exec_prepared("assign_mark", ns, req.session_id(), assign_id,
                           static_cast<i64>(hold.count()));
  if (r.empty()) {
    if (!lock_session(t, s, req.session_id())) not_found();
    throw StoreError(wire::ASSIGN_CONFLICT, "another assign of this session is in progress");
  }
  AssignStart start{r[0][0].as<std::string>(), r[0][1].as<std::uint64_t>(),
                    r[0][2].as<std::uint64_t>(), false};
  // An engine's claim: only of an unowned session (the mark rolls back).
  enforce(authorize_assign(s.caller(), req.engine_id(), req.create(),
                           {start.previous_owner, start.epoch}),
          start.previous_owner, start.epoch, start.version);
  if (!start.previous_owner.empty() && start.previous_owner != req.engine_id()) {
    start.drain_requested = true;
    notify(t, {.kind = ChangeNotice::Kind::drain,
               .namespace_name = ns,
               .session_id = req.session_id(),
               .version = start.version,
               .epoch = start.epoch,
               .engine = start.previous_owner,
               .deadline_ms = drain_deadline_ms});
  }
  t.commit();
  return start;
}

wire::AssignReply finish_assign(pqxx::connection_base& conn, const Scope& s,
                                const wire::Assign& req, const std::string& assign_id) {
  const std::string& ns = s.namespace_name;
  pqxx::work t(conn);
  auto r = t.exec_prepared("assign_lock", ns, req.session_id(), assign_id);
  if (r.empty()) {
    // Our mark expired and another assign (or a delete) took over.
    throw StoreError(wire::ASSIGN_CONFLICT, "the assign was overtaken by another");
  }
  wire::AssignReply reply;
  reply.set_previous_owner(r[0][0].as<std::string>());
  reply.set_epoch(r[0][1].as<i64>());
  reply.set_version(r[0][2].as<i64>());
  if (reply.previous_owner() == req.engine_id() && reply.epoch() > 0) {
    t.commit();
    return reply;  // already the owner: the epoch stays
  }
  auto u = t.exec_prepared("assign_owner", ns, req.session_id(), req.engine_id());
  reply.set_epoch(u[0][0].as<i64>());
  reply.set_version(u[0][1].as<i64>());
  notify(t, {.kind = ChangeNotice::Kind::owner,
             .namespace_name = ns,
             .session_id = req.session_id(),
             .version = reply.version(),
             .epoch = reply.epoch(),
             .engine = req.engine_id()});
  t.commit();
  return reply;
}

void end_assign(pqxx::connection_base& conn, const Scope& s, const std::string& session_id,
                const std::string& assign_id) {
  pqxx::work t(conn);
  t.exec_prepared("assign_end", s.namespace_name, session_id, assign_id);
  t.commit();
}

void release(pqxx::connection_base& conn, const Scope& s, const wire::Release& req) {
  require_id(req.session_id(), "session id");
  pqxx::work t(conn);
  const auto cur = lock_session(t, s, req.session_id());
  if (!cur) not_found();
  if (req.epoch() != cur->epoch) stale_epoch(req.epoch(), cur->owner, cur->epoch, cur->version);
  enforce(authorize(s.caller(), Operation::release, {cur->owner, cur->epoch}, req.epoch()),
          cur->owner, cur->epoch, cur->version);
  if (cur->owner.empty()) return;
  t.exec_prepared("release_owner", s.namespace_name, req.session_id());
  notify(t, {.kind = ChangeNotice::Kind::owner,
             .namespace_name = s.namespace_name,
             .session_id = req.session_id(),
             .version = cur->version,
             .epoch = cur->epoch,
             .engine = ""});
  t.commit();
}

void announce(pqxx::connection_base& conn, const Scope& s, const ChangeNotice& notice) {
  require_id(notice.session_id, "session id");
  const Operation op =
      notice.kind == ChangeNotice::Kind::drained ? Operation::drain_done : Operation::session_ready;
  // Two statements, no transaction: the row may change right after the
  // check either way, and a waiter matches the notice's epoch itself.
  pqxx::nontransaction t(conn);
  auto r = t.exec_prepared("session_owner", s.namespace_name, notice.session_id);
  if (r.empty()) not_found();
  const auto owner = r[0][0].as<std::string>();
  const auto epoch = r[0][1].as<std::uint64_t>();
  enforce(authorize(s.caller(), op, {owner, epoch}, notice.epoch), owner, epoch, 0);
  notify(t, notice);
}

}  // namespace cookiefs::storage
