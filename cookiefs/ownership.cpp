// Session affinity of the mount (the SessionCache members declared under
// "ownership.cpp" and the control-socket answers): who owns each session,
// whether this mount may write it, claiming an unowned session under
// `affinity: auto`, answering drain requests (commit everything under the
// retiring epoch, stop writing, DrainDone), taking a session over after an
// assign (prefetch, then SessionReady), and flush/release/status/wait_ready
// for the engine-shim.
//
// Fencing is the storage service's: every commit carries the manifest's epoch
// and a stale one is rejected (commit() then quarantines the local snapshot).
// This file only keeps the mount from writing what would be rejected anyway.
//
// Thread-safety: as session_cache.hpp. Event entry points (owner_changed,
// drain_requested) run on the storage client's I/O thread and only note and
// queue; everything that talks to the storage service runs on commit-queue,
// FUSE or control-socket threads.
#include <spdlog/spdlog.h>

#include <sstream>

#include "session_cache.hpp"

namespace cookiefs::mount {
namespace fs = std::filesystem;

namespace {

wire::Envelope error_reply(wire::ErrorCode code, const std::string& why) {
  wire::Envelope env;
  env.mutable_error()->set_code(code);
  env.mutable_error()->set_message(why);
  return env;
}

wire::Envelope ack() {
  wire::Envelope env;
  env.mutable_ack();
  return env;
}

std::chrono::milliseconds timeout_or(std::uint32_t ms, std::chrono::milliseconds fallback) {
  return ms ? std::chrono::milliseconds(ms) : fallback;
}

}  // namespace

// ---- owner record ---------------------------------------------------------

void SessionCache::load_owner(Session& s) {
  std::string text;
  try {
    text = disk_.read_file(s.dir / "owner");
  } catch (const std::system_error&) {
    return;  // never recorded: learned from the service
  }
  std::istringstream in(text);
  std::uint64_t epoch = 0;
  std::string owner;
  if (in >> epoch >> owner) {
    s.owner_known = true;
    s.owner_epoch = epoch;
    s.owner = owner == "-" ? "" : owner;
  }
}

void SessionCache::save_owner(const Session& s) {
  write_owner_record(
      s, std::to_string(s.owner_epoch) + ' ' + (s.owner.empty() ? "-" : s.owner) + '\n');
}

void SessionCache::write_owner_record(const Session& s, const std::string& record) {
  // Not fsync'ed: after a crash the owner is learned again from the service,
  // and the epoch in the manifest still fences every commit.
  const fs::path tmp = s.dir / "owner.tmp";
  try {
    disk_.write_file(tmp, record, 0600);
    disk_.rename(tmp, s.dir / "owner");
  } catch (const std::system_error& e) {
    spdlog::warn("cannot record a session's owner in the cache dir: {}", e.code().message());
  }
}

void SessionCache::set_owner(Session& s, const std::string& owner, std::uint64_t epoch,
                             bool older_too) {
  std::string record;
  std::uint64_t seq;
  {
    std::lock_guard lock(s.state_mu);
    if (!older_too && s.owner_known && epoch < s.owner_epoch) return;  // an older report
    if (s.owner_known && owner == s.owner && epoch == s.owner_epoch) return;
    s.owner_known = true;
    s.owner = owner;
    s.owner_epoch = epoch;
    record = std::to_string(epoch) + ' ' + (owner.empty() ? "-" : owner) + '\n';
    seq = ++s.owner_seq;
  }
  // Written with no state lock held (no file I/O under state_mu); the newest
  // record wins when two threads race here.
  std::lock_guard file_lock(s.owner_file_mu);
  if (seq <= s.owner_written_seq) return;
  s.owner_written_seq = seq;
  write_owner_record(s, record);
  spdlog::debug("session {} is owned by '{}' at epoch {}", s.id, owner, epoch);
}

void SessionCache::note_owner(Session& s, const std::string& owner, std::uint64_t epoch) {
  set_owner(s, owner, epoch, false);
}

void SessionCache::raise_manifest_epoch(Session& s, std::uint64_t epoch) {
  Manifest m;
  {
    std::lock_guard lock(s.state_mu);
    if (s.manifest.epoch >= epoch) return;
    m = s.manifest;
  }
  m.epoch = epoch;
  // No file I/O under state_mu: commit_mu (held) keeps other manifest writers out.
  write_manifest(s, m);
  std::lock_guard lock(s.state_mu);
  s.manifest = std::move(m);
}

// ---- may this mount write? ------------------------------------------------

bool SessionCache::owned_locked(const Session& s) const {
  return s.owner_known ? s.owner == cfg_.engine_id : s.manifest.version == 0;
}

bool SessionCache::writable_locked(const Session& s) const {
  if (s.deleted) return false;
  if (s.retired_epoch != 0 && s.retired_epoch >= s.owner_epoch && time_.now() < s.retired_until) {
    return false;
  }
  // Never heard of an owner: created here and not committed yet, or a cache
  // from before affinity existed. The epoch still fences its commits.
  if (!s.owner_known) return true;
  if (s.owner != cfg_.engine_id) return false;
  // Our own create is in flight: the service made us the owner (its event
  // may come before the commit's reply), and the manifest learns the epoch
  // only when the reply is recorded. Refusing writes meanwhile made a write
  // right after the first commit of a new session fail with EROFS.
  if (s.manifest.version == 0 && s.unsettled && s.unsettled->create()) return true;
  // Owner, and the takeover (prefetch at the new epoch) is complete.
  return s.manifest.epoch >= s.owner_epoch;
}

Access SessionCache::access(Session& s) {
  std::lock_guard lock(s.state_mu);
  if (writable_locked(s)) return Access::writable;
  const bool retired =
      s.retired_epoch != 0 && s.retired_epoch >= s.owner_epoch && time_.now() < s.retired_until;
  if (cfg_.affinity == "auto" && s.owner_known && s.owner.empty() && !retired && !s.deleted) {
    return Access::claimable;
  }
  return Access::read_only;
}

void SessionCache::ensure_writable(Session& s) {
  Access a = access(s);
  if (a == Access::writable) return;
  if (a == Access::read_only) throw Errno{EROFS};
  std::lock_guard claim(s.claim_mu);
  a = access(s);
  if (a == Access::writable) return;
  if (a == Access::read_only) throw Errno{EROFS};
  wire::Assign req;
  req.set_session_id(s.id);
  req.set_engine_id(cfg_.engine_id);
  req.set_grace_ms(static_cast<std::uint32_t>(cfg_.claim_timeout.count()));
  wire::AssignReply reply;
  try {
    reply = store_.assign(req, 3 * cfg_.claim_timeout);
  } catch (const RequestError& e) {
    spdlog::info("claiming an unowned session failed ({}); it stays read-only here",
                 wire::ErrorCode_Name(e.code()));
    throw Errno{EROFS};
  }
  note_owner(s, cfg_.engine_id, reply.epoch());
  {
    std::lock_guard commit_lock(s.commit_mu);
    // The previous owner may have committed after our last adoption.
    adopt(s, "claim");
    raise_manifest_epoch(s, reply.epoch());
  }
  spdlog::info("claimed an unowned session (epoch {})", reply.epoch());
  if (access(s) != Access::writable) throw Errno{EROFS};
}

void SessionCache::retire(Session& s, std::uint64_t epoch,
                          std::chrono::steady_clock::time_point until) {
  // What the kernel still holds of the application's writes belongs to the
  // retiring epoch: write it back first (later write-backs are refused).
  if (before_snapshot) before_snapshot(s);
  // Exclusive: every mutation in flight has finished (and counted its change)
  // and every later one sees the flag.
  std::unique_lock tree(s.tree_lock);
  std::lock_guard lock(s.state_mu);
  s.retired_epoch = epoch;
  s.retired_until = until;
}

// ---- storage events (I/O thread) ------------------------------------------

void SessionCache::owner_changed(const std::string& id, const std::string& owner,
                                 std::uint64_t epoch) {
  {
    std::lock_guard lock(mu_);
    if (!sessions_.contains(id) && owner != cfg_.engine_id) return;
    auto& note = owner_notes_[id];
    if (epoch >= note.epoch) note = OwnerNote{owner, epoch};
  }
  queue_.urgent(id);
}

void SessionCache::drain_requested(const std::string& id, std::uint64_t epoch,
                                   std::uint32_t deadline_ms) {
  {
    std::lock_guard lock(mu_);
    auto& note = drain_notes_[id];
    if (epoch >= note.epoch) note = DrainNote{epoch, deadline_ms};
  }
  queue_.urgent(id);
}

// ---- settling in process() (commit-queue threads) --------------------------

bool SessionCache::process_unheld(const std::string& id, std::optional<OwnerNote>& note,
                                  std::optional<DrainNote>& drain) {
  if (drain) {
    // Nothing of it here, so nothing to commit: confirm at once.
    wire::DrainDone done;
    done.set_session_id(id);
    done.set_epoch(drain->epoch);
    try {
      store_.drain_done(done);
    } catch (const RequestError& e) {
      if (transient(e.code())) {
        std::lock_guard lock(mu_);
        drain_notes_.try_emplace(id, *drain);
        return false;
      }
    }
    drain.reset();
  }
  if (note && note->owner == cfg_.engine_id) {
    try {
      get_or_fetch(id);  // the takeover's prefetch
    } catch (const Errno& e) {
      if (e.code == ENOENT) return true;
      std::lock_guard lock(mu_);
      owner_notes_.try_emplace(id, *note);
      return false;
    }
  }
  return true;
}

void SessionCache::take_notes(Session& s, std::optional<OwnerNote> note,
                              std::optional<DrainNote> drain) {
  if (note) {
    note_owner(s, note->owner, note->epoch);
    std::lock_guard lock(s.state_mu);
    if (note->owner == cfg_.engine_id && note->epoch == s.owner_epoch) s.ready_epoch = note->epoch;
  }
  if (drain) {
    std::lock_guard lock(s.state_mu);
    if (drain->epoch >= s.drain_epoch) {
      s.drain_epoch = drain->epoch;
      s.drain_deadline_ms = drain->deadline_ms;
    }
  }
}

bool SessionCache::settle_drain(Session& s) {
  std::uint64_t epoch;
  std::uint32_t deadline_ms;
  bool current;
  {
    std::lock_guard lock(s.state_mu);
    epoch = s.drain_epoch;
    deadline_ms = s.drain_deadline_ms;
    current = !s.owner_known || epoch >= s.owner_epoch;
  }
  if (epoch == 0) return true;
  if (current) {
    // Until the owner change arrives, and at most until the assign must have
    // ended either way (it holds its mark for 2 × grace + 10 s).
    retire(s, epoch,
           time_.now() + 2 * std::chrono::milliseconds(deadline_ms) + std::chrono::seconds(10));
    if (!resend_unsettled(s) || !commit_pending(s)) return false;
  }
  wire::DrainDone done;
  done.set_session_id(s.id);
  done.set_epoch(epoch);
  {
    std::lock_guard lock(s.state_mu);
    done.set_version(s.manifest.version);
  }
  try {
    store_.drain_done(done);
  } catch (const RequestError& e) {
    if (transient(e.code())) return false;
    spdlog::warn("drain confirmation refused: {}", wire::ErrorCode_Name(e.code()));
  }
  {
    std::lock_guard lock(s.state_mu);
    if (s.drain_epoch == epoch) s.drain_epoch = 0;
  }
  spdlog::info("drained a session for a hand-off (epoch {}, committed version {})", epoch,
               done.version());
  return true;
}

bool SessionCache::settle_ready(Session& s) {
  std::uint64_t epoch;
  {
    std::lock_guard lock(s.state_mu);
    epoch = s.ready_epoch;
    if (epoch == 0) return true;
    if (s.owner != cfg_.engine_id || s.owner_epoch != epoch) {
      s.ready_epoch = 0;  // superseded by a later owner change
      return true;
    }
  }
  if (!adopt(s, "owner change")) return false;
  wire::SessionReady ready;
  ready.set_session_id(s.id);
  ready.set_epoch(epoch);
  raise_manifest_epoch(s, epoch);
  {
    std::lock_guard lock(s.state_mu);
    ready.set_version(s.manifest.version);
  }
  try {
    store_.session_ready(ready);
  } catch (const RequestError& e) {
    if (transient(e.code())) return false;
    spdlog::warn("ready confirmation refused: {}", wire::ErrorCode_Name(e.code()));
  }
  {
    std::lock_guard lock(s.state_mu);
    if (s.ready_epoch == epoch) s.ready_epoch = 0;
  }
  spdlog::info("took a session over (epoch {}, version {})", epoch, ready.version());
  return true;
}

// ---- control socket (control-server threads) -------------------------------

bool SessionCache::wait_committed(Session& s, std::chrono::milliseconds timeout,
                                  wire::ErrorCode& code, std::string& why) {
  const std::uint64_t gen = s.change_gen;
  queue_.urgent(s.id);
  std::unique_lock lock(s.state_mu);
  const bool done =
      s.committed_cv.wait_for(lock, timeout, [&] { return s.committed_gen >= gen || s.deleted; });
  if (!done) {
    code = wire::UNAVAILABLE;
    why = std::string("timed out waiting for the commit (storage service ") +
          (store_.connected() ? "connected" : "unreachable") + ")";
    return false;
  }
  if (gen > 0 && s.rejected_gen >= gen) {
    code = wire::STALE_EPOCH;
    why = "changes were rejected and kept in quarantine (" + s.last_error + ")";
    return false;
  }
  return true;
}

wire::Envelope SessionCache::control_flush(const wire::Flush& req) {
  const auto timeout = timeout_or(req.timeout_ms(), std::chrono::seconds(30));
  std::vector<std::shared_ptr<Session>> targets;
  if (req.session_id().empty()) {
    targets = list();
  } else if (auto s = find(req.session_id())) {
    targets.push_back(s);
  } else {
    return error_reply(wire::NOT_FOUND, "this mount does not hold the session");
  }
  for (const auto& s : targets) {
    wire::ErrorCode code;
    std::string why;
    if (!wait_committed(*s, timeout, code, why)) return error_reply(code, why);
  }
  return ack();
}

wire::Envelope SessionCache::control_release(const wire::Release& req) {
  auto s = find(req.session_id());
  if (!s) return error_reply(wire::NOT_FOUND, "this mount does not hold the session");
  std::lock_guard claim(s->claim_mu);
  {
    std::lock_guard lock(s->state_mu);
    if (s->owner_known && s->owner != cfg_.engine_id) {
      return error_reply(wire::NOT_OWNER, "this host does not own the session");
    }
  }
  retire(*s, ~std::uint64_t{0}, std::chrono::steady_clock::time_point::max());
  const auto unretire = [&] {
    std::lock_guard lock(s->state_mu);
    s->retired_epoch = 0;
  };
  wire::ErrorCode code;
  std::string why;
  if (!wait_committed(*s, timeout_or(0, std::chrono::seconds(30)), code, why)) {
    unretire();
    return error_reply(code, why);
  }
  wire::Release rel;
  rel.set_session_id(s->id);
  {
    std::lock_guard lock(s->state_mu);
    rel.set_epoch(s->manifest.epoch);
  }
  try {
    store_.release(rel);
  } catch (const RequestError& e) {
    unretire();
    return error_reply(e.code(), std::string("release failed: ") + e.what());
  }
  note_owner(*s, "", rel.epoch());
  unretire();
  spdlog::info("released a session (epoch {})", rel.epoch());
  return ack();
}

wire::Envelope SessionCache::control_status(const wire::StatusRequest& req) {
  wire::Envelope env;
  auto* st = env.mutable_session_status();
  st->set_session_id(req.session_id());
  st->set_connected(store_.connected());
  auto s = find(req.session_id());
  if (!s) return env;
  const Access a = access(*s);
  std::lock_guard lock(s->state_mu);
  st->set_present(true);
  st->set_owned(owned_locked(*s));
  st->set_writable(a != Access::read_only);
  st->set_version(s->manifest.version);
  st->set_epoch(std::max(s->manifest.epoch, s->owner_epoch));
  st->set_owner(s->owner_known ? s->owner : (s->manifest.version == 0 ? cfg_.engine_id : ""));
  st->set_dirty_bytes(s->dirty_bytes);
  st->set_last_error(s->last_error);
  return env;
}

wire::Envelope SessionCache::control_wait_ready(const wire::WaitReady& req) {
  const auto deadline = time_.now() + timeout_or(req.timeout_ms(), std::chrono::seconds(30));
  for (;;) {
    auto s = find(req.session_id());
    if (!s) {
      try {
        s = get_or_fetch(req.session_id());
      } catch (const Errno&) {
        // Not there yet (an assign may still create it).
      }
    }
    if (s && access(*s) != Access::read_only) {
      std::lock_guard lock(s->state_mu);
      if (s->ready_epoch == 0 && s->drain_epoch == 0) return ack();
    }
    if (time_.now() >= deadline) {
      return error_reply(wire::UNAVAILABLE,
                         "timed out waiting for the session to be held and writable here");
    }
    time_.sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace cookiefs::mount
