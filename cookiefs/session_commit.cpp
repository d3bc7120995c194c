// Snapshots and commits of a session: a snapshot at rest, the delta against
// the manifest, the commit and what its outcome means (landed, retry, our own
// landed commit to rebase on, fenced or refused: quarantine and adopt), and
// the re-send of a commit whose reply was lost. Part of SessionCache; see
// session_cache.hpp.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "names.hpp"
#include "session_cache.hpp"
#include "session_internal.hpp"

namespace cookiefs::mount {
namespace fs = std::filesystem;

bool SessionCache::snapshot_at_rest(Session& s, Snapshot& snap, std::uint64_t& gen) {
  // The kernel's dirty pages reach the cache files late and in any order, so
  // the files are one instant of the application's view only when none is
  // left: force them back, note the change count, force again, and take the
  // snapshot if nothing changed meanwhile (nothing was dirty after the first
  // pass, so the files hold what the application saw then). A first pass
  // that changed nothing already found every file clean: the second would
  // only repeat it (an fsync has written its file back before it asks for
  // the snapshot, so that is the common case). A session that keeps
  // changing is tried again; the application's next pause lets it pass.
  constexpr int kAttempts = 50;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    std::uint64_t quiet = 0;
    if (before_snapshot) {
      const std::uint64_t before = s.change_gen;
      before_snapshot(s);
      quiet = s.change_gen;
      if (quiet != before) before_snapshot(s);
    }
    std::unique_lock tree(s.tree_lock);
    if (before_snapshot && s.change_gen != quiet) {
      tree.unlock();
      time_.sleep_for(std::chrono::microseconds(100 * attempt));
      continue;
    }
    gen = s.change_gen;
    snap = take_snapshot(s);
    // At rest: the tree is one instant of the application's view again.
    if (before_snapshot && s.pages_in_flight) {
      disk_.unlink(s.dir / kPagesInFlight);
      s.pages_in_flight = false;
    }
    return true;
  }
  return false;
}

Snapshot SessionCache::take_snapshot(Session& s) {
  Snapshot snap;
  for (auto& e : disk_.read_tree(s.files())) {
    SnapshotFile f;
    f.mtime_ns = e.mtime_ns;
    f.entry.kind = e.kind;
    f.entry.mode = e.kind == wire::SYMLINK ? 0777 : (e.mode & kModeBits);
    f.content = std::move(e.content);
    f.entry.size = f.content.size();
    if (f.entry.kind != wire::DIRECTORY) f.entry.sha256 = sha256(f.content);
    snap.emplace(std::move(e.path), std::move(f));
  }
  return snap;
}

bool SessionCache::commit_pending(Session& s) {
  // Steps return what comes next; only this loop chains them. Bounded: after
  // one rebase the manifest is at the remote version, so a second conflict
  // is a real one (only this engine commits at its epoch).
  bool may_rebase = true;
  for (;;) {
    std::string reason;
    switch (commit(s, may_rebase, reason)) {
      case Outcome::committed:
        return true;
      case Outcome::retry:
      case Outcome::gone:
        return false;
      case Outcome::adopt:
        return adopt(s, reason, true);
      case Outcome::rebase: {
        may_rebase = false;
        bool retry = false;
        if (!rebase(s, nullptr, retry) && retry) {
          set_error(s, "fetch failed before a rebase");
          return false;
        }
        break;  // commit again: on top of our landed commit, or meet the conflict as one
      }
    }
  }
}

Outcome SessionCache::commit(Session& s, bool may_rebase, std::string& reason) {
  {
    // Another engine owns it and nothing changed here: nothing the kernel
    // still holds could be committed (write-backs are refused), so a session
    // only read here (a cold read, a subscriber's copy) skips the forced
    // write-backs of snapshot_at_rest. Not for sessions owned by this engine:
    // a commit that landed before a crash is found by committing.
    std::lock_guard lock(s.state_mu);
    const bool others = s.owner_known && !s.owner.empty() && s.owner != cfg_.engine_id;
    if (others && !writable_locked(s) && s.committed_gen >= s.change_gen) return Outcome::committed;
  }
  Snapshot snap;
  std::uint64_t gen;
  if (!snapshot_at_rest(s, snap, gen)) {
    spdlog::debug("session {} kept changing while its dirty pages were written back", s.id);
    return Outcome::retry;
  }
  Manifest base;
  bool local_create, may_write;
  {
    std::lock_guard lock(s.state_mu);
    if (s.committed_gen >= gen) return Outcome::committed;
    base = s.manifest;
    local_create = base.version == 0 && !s.owner_known;
    may_write = writable_locked(s);
  }
  std::int64_t total = 0;
  for (const auto& [p, f] : snap) total += static_cast<std::int64_t>(f.entry.size);
  s.bytes = total;
  const Delta delta = compute_delta(base, snap);
  // An empty session another engine owns (assigned, nothing written yet) is
  // not ours to create.
  if (delta.empty() && (base.version > 0 || !may_write)) {
    std::lock_guard lock(s.state_mu);
    s.committed_gen = std::max(s.committed_gen, gen);
    s.dirty_bytes = 0;
    s.committed_cv.notify_all();
    return Outcome::committed;
  }
  wire::CommitSession req;
  req.set_session_id(s.id);
  req.set_writer_epoch(base.epoch);
  req.set_base_version(base.version);
  req.set_create(base.version == 0);
  // 128 random bits: unique without naming the engine or the session, whose
  // ids (up to 128 bytes each) made the key exceed the service's 128-byte
  // bound, and every commit of such a session was refused as BAD_REQUEST.
  req.set_idempotency_key(random_hex());
  std::uint64_t dirty = 0;
  for (const auto& p : delta.changed) {
    const SnapshotFile& f = snap.at(p);
    auto* e = req.add_changed();
    e->set_path(p);
    e->set_kind(f.entry.kind);
    e->set_mode(f.entry.mode);
    e->set_size(f.entry.size);
    e->set_mtime_ns(f.mtime_ns);
    e->set_sha256(f.entry.sha256);
    e->set_content(f.content);
    dirty += f.entry.size;
  }
  for (const auto& p : delta.deleted) req.add_deleted(p);
  s.dirty_bytes = dirty;
  {
    std::lock_guard lock(s.state_mu);
    s.unsettled = req;
    s.unsettled_gen = gen;
  }
  const auto started = time_.now();
  try {
    const auto reply = store_.commit(req);
    Manifest m = manifest_of(snap, reply.version(), reply.epoch());
    {
      std::lock_guard lock(s.state_mu);
      s.manifest = m;
      s.unsettled.reset();
      s.committed_gen = std::max(s.committed_gen, gen);
      if (s.change_gen == gen) s.dirty_bytes = 0;
      s.last_error.clear();
      s.committed_cv.notify_all();
    }
    // Recorded after the waiters (an fsync) are released: the commit is in
    // PostgreSQL already, and a stop before this line leaves the state a
    // crash after the service's commit and before its reply leaves (the
    // manifest one version behind; the next run finds its own commit landed
    // and adopts it). Still under commit_mu, so manifests are written in
    // order. Saves an fsync and a rename (~0.3 ms) on every fsync's path.
    write_manifest(s, m);
    // A create makes this engine the owner (the service records the
    // committer). Recorded after the manifest: a stop between the two leaves
    // the owner unknown (writable, learned again from the service), not an
    // owner at an epoch the manifest lacks — that reads as a takeover still
    // under way, read-only until the recovery adopted the landed commit, and
    // the first write after a restart failed with EROFS (the crash test,
    // once in a few thousand trials).
    if (local_create) note_owner(s, cfg_.engine_id, reply.epoch());
    ++counters.commits_ok;
    if (on_commit) on_commit("ok", std::chrono::duration<double>(time_.now() - started).count());
    spdlog::debug(
        "session {} committed version {} ({} changed, {} deleted, {} ms)", s.id, reply.version(),
        delta.changed.size(), delta.deleted.size(),
        std::chrono::duration_cast<std::chrono::milliseconds>(time_.now() - started).count());
    return Outcome::committed;
  } catch (const RequestError& e) {
    if (may_rebase && (e.code() == wire::VERSION_CONFLICT || e.code() == wire::STALE_EPOCH)) {
      wire::SessionInfo current;
      current.set_version(e.error().current_version());
      current.set_epoch(e.error().current_epoch());
      current.set_owner(e.error().current_owner());
      bool ours;
      {
        std::lock_guard lock(s.state_mu);
        ours = own_landed(s, current);
      }
      if (ours) return Outcome::rebase;
    }
    const std::string code = wire::ErrorCode_Name(e.code());
    const bool fenced = e.code() == wire::STALE_EPOCH || e.code() == wire::NOT_OWNER;
    if (on_commit) {
      on_commit(transient(e.code()) ? "failed"
                : fenced            ? "fenced"
                                    : "rejected",
                std::chrono::duration<double>(time_.now() - started).count());
    }
    if (transient(e.code())) {
      ++counters.commits_failed;
      set_error(s, "commit failed: " + code);
      spdlog::warn("commit failed, will retry: {}", code);
      return Outcome::retry;
    }
    {
      std::lock_guard lock(s.state_mu);
      s.unsettled.reset();
    }
    ++counters.commits_rejected;
    set_error(s, "commit rejected: " + code);
    if (fenced) {
      ++counters.fenced;
      spdlog::warn(
          "commit fenced off ({}): this host wrote under epoch {} but the session is at epoch {} "
          "(owner {}); the local snapshot is kept in quarantine",
          code, base.epoch, e.error().current_epoch(),
          e.error().current_owner().empty() ? "-" : e.error().current_owner());
    } else {
      spdlog::warn("commit rejected ({}); the local snapshot is kept in quarantine", code);
    }
    if (e.code() == wire::NOT_FOUND) {
      s.remote_deleted = true;
      return Outcome::gone;  // the next run quarantines and drops the session
    }
    if (e.code() == wire::VERSION_CONFLICT || e.code() == wire::STALE_EPOCH ||
        e.code() == wire::NOT_OWNER || e.code() == wire::ALREADY_EXISTS) {
      {
        std::lock_guard lock(s.state_mu);
        s.rejected_gen = gen;
      }
      reason = "commit rejected: " + code;
      return Outcome::adopt;
    }
    // TOO_LARGE, BAD_REQUEST: the snapshot cannot ever land; keep it aside and
    // keep the local tree, so the next change retries.
    quarantine(s.id, snap, "commit rejected: " + code);
    std::lock_guard lock(s.state_mu);
    s.rejected_gen = gen;
    s.committed_gen = std::max(s.committed_gen, gen);
    s.committed_cv.notify_all();
    return Outcome::committed;
  }
}

bool SessionCache::resend_unsettled(Session& s) {
  wire::CommitSession req;
  std::uint64_t gen;
  {
    std::lock_guard lock(s.state_mu);
    if (!s.unsettled) return true;
    req = *s.unsettled;
    gen = s.unsettled_gen;
  }
  try {
    const auto reply = store_.commit(req);
    Manifest m;
    {
      std::lock_guard lock(s.state_mu);
      m = s.manifest;
    }
    for (const auto& f : req.changed()) {
      m.entries[f.path()] = {f.kind(), f.mode(), f.size(), f.sha256()};
    }
    for (const auto& p : req.deleted()) m.entries.erase(p);
    m.version = reply.version();
    m.epoch = reply.epoch();
    // No file I/O under state_mu: commit_mu (held) keeps other manifest writers out.
    write_manifest(s, m);
    std::lock_guard lock(s.state_mu);
    s.manifest = std::move(m);
    s.unsettled.reset();
    s.committed_gen = std::max(s.committed_gen, gen);
    s.committed_cv.notify_all();
    return true;
  } catch (const RequestError& e) {
    if (transient(e.code())) return false;
    std::lock_guard lock(s.state_mu);
    s.unsettled.reset();  // commit() below meets the same rejection and handles it
    return true;
  }
}

bool SessionCache::own_landed(const Session& s, const wire::SessionInfo& remote) const {
  const Manifest& m = s.manifest;
  if (m.applying || remote.owner() != cfg_.engine_id || remote.version() <= m.version) {
    return false;
  }
  // Fencing admits no other writer at an epoch this engine owns. A session
  // never committed here (epoch 0) was created by its first committer at
  // epoch 1, and the owner then is that committer: us.
  return m.version == 0 && m.epoch == 0 ? remote.epoch() == 1 : remote.epoch() == m.epoch;
}

bool SessionCache::rebase(Session& s, const wire::FetchReply* reply, bool& retry) {
  retry = false;
  wire::FetchReply fetched;
  const bool contents = reply != nullptr;
  if (!reply) {
    wire::FetchSession req;
    req.set_session_id(s.id);
    req.set_manifest_only(true);
    try {
      fetched = store_.fetch(req);
    } catch (const RequestError& e) {
      retry = transient(e.code());
      return false;
    }
    reply = &fetched;
  }
  Manifest m = manifest_of_reply(*reply, contents);
  {
    std::lock_guard lock(s.state_mu);
    if (!own_landed(s, reply->info())) return false;
  }
  // No file I/O under state_mu: commit_mu (held) keeps other manifest writers out.
  write_manifest(s, m);
  {
    std::lock_guard lock(s.state_mu);
    s.manifest = std::move(m);
  }
  note_owner(s, reply->info().owner(), reply->info().epoch());
  spdlog::info(
      "a commit of this mount landed before it was recorded locally (crash); committing the "
      "local tree on top of version {}",
      reply->info().version());
  return true;
}

}  // namespace cookiefs::mount
