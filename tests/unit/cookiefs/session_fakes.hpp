// Fakes for the SessionCache's three seams, for fault-injection unit tests:
//
// - FakeStore: an in-memory storage service with the real one's commit rules
//   (epoch fencing, owner, base version, idempotency keys) and faults: the
//   next calls fail with a code, a commit lands but its reply is lost (a
//   reconnect in the middle of a commit), the service is unreachable.
// - FaultyDisk: the real PosixDisk on a temp dir that can fail every write
//   with an errno (ENOSPC, EIO) and can "crash": what was written without a
//   sync since the last crash point is lost (files go back to their synced
//   content, new ones vanish).
// - ManualTime: a clock that only moves when the test says so.
//
// Thread-safety: FakeStore and FaultyDisk take a lock per call (the commit
// queue may call them from the test thread or a fetch callback).
#pragma once

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "cache_disk.hpp"
#include "session_store.hpp"
#include "time_source.hpp"

namespace cookiefs::mount::test {

inline RequestError error(wire::ErrorCode code, const std::string& why = "injected") {
  wire::Error e;
  e.set_code(code);
  e.set_message(why);
  return RequestError(std::move(e));
}

struct FakeSession {
  std::uint64_t version = 0;
  std::uint64_t epoch = 0;
  std::string owner;
  std::map<std::string, wire::FileEntry> files;
  std::map<std::string, wire::CommitReply> keys;  // idempotency key → reply
};

class FakeStore final : public SessionStore {
 public:
  std::string engine_id = "engine-a";  // who this connection speaks for

  // ---- faults
  bool reachable = true;                   // false: every call throws UNAVAILABLE
  std::vector<wire::ErrorCode> fail_next;  // the next calls (any kind) fail with these
  bool lose_next_commit_reply = false;     // the next commit lands, its reply is lost

  // ---- observations
  int commits = 0;  // requests that reached the commit rules
  int fetches = 0;
  std::vector<std::uint64_t> drains_done;   // epochs confirmed
  std::vector<std::uint64_t> ready_epochs;  // SessionReady epochs

  std::map<std::string, FakeSession> sessions;

  // As the NM's assign does after the grace: owner and epoch move on.
  void move_owner(const std::string& id, const std::string& owner) {
    std::lock_guard lock(mu_);
    auto& s = sessions[id];
    s.owner = owner;
    ++s.epoch;
  }
  // The database restored from an older backup: forget the newest versions.
  void restore_backup(const std::string& id, const FakeSession& older) {
    std::lock_guard lock(mu_);
    sessions[id] = older;
  }
  std::optional<std::string> content(const std::string& id, const std::string& path) {
    std::lock_guard lock(mu_);
    auto it = sessions.find(id);
    if (it == sessions.end()) return std::nullopt;
    auto f = it->second.files.find(path);
    if (f == it->second.files.end()) return std::nullopt;
    return f->second.content();
  }

  bool connected() const override { return reachable; }

  wire::FetchReply fetch(const wire::FetchSession& req) override {
    std::lock_guard lock(mu_);
    fault();
    ++fetches;
    auto it = sessions.find(req.session_id());
    if (it == sessions.end() || it->second.version == 0) throw error(wire::NOT_FOUND);
    const FakeSession& s = it->second;
    wire::FetchReply r;
    info(req.session_id(), s, *r.mutable_info());
    if (req.if_newer_than() > 0 && s.version <= req.if_newer_than()) {
      r.set_not_modified(true);
      return r;
    }
    for (const auto& [path, f] : s.files) {
      auto* e = r.add_files();
      *e = f;
      if (req.manifest_only()) e->clear_content();
    }
    return r;
  }

  void fetch_async(const wire::FetchSession& req, FetchCallback cb,
                   std::chrono::milliseconds) override {
    StorageClient::Result result;
    try {
      *result.reply.mutable_fetch_reply() = fetch(req);
    } catch (const RequestError& e) {
      result.has_error = true;
      result.error = e.error();
    }
    cb(std::move(result));
  }

  wire::CommitReply commit(const wire::CommitSession& req) override {
    std::lock_guard lock(mu_);
    fault();
    ++commits;
    if (req.idempotency_key().size() > 128) throw error(wire::BAD_REQUEST, "key too long");
    auto& s = sessions[req.session_id()];
    if (auto k = s.keys.find(req.idempotency_key()); k != s.keys.end()) return k->second;
    const bool created = s.version == 0;
    if (created && !req.create()) throw error(wire::NOT_FOUND);
    if (created && s.epoch == 0) s.epoch = 1;
    const bool epoch_ok = req.writer_epoch() == s.epoch || (created && req.writer_epoch() == 0);
    if (!epoch_ok) throw conflict(wire::STALE_EPOCH, s);
    if (!s.owner.empty() && s.owner != engine_id) throw conflict(wire::NOT_OWNER, s);
    if (req.base_version() != s.version) throw conflict(wire::VERSION_CONFLICT, s);
    for (const auto& p : req.deleted()) s.files.erase(p);
    for (const auto& f : req.changed()) s.files[f.path()] = f;
    if (created) s.owner = engine_id;
    ++s.version;
    wire::CommitReply reply;
    reply.set_version(s.version);
    reply.set_epoch(s.epoch);
    s.keys[req.idempotency_key()] = reply;
    if (lose_next_commit_reply) {
      lose_next_commit_reply = false;
      throw error(wire::UNAVAILABLE, "connection lost before the reply");
    }
    return reply;
  }

  wire::AssignReply assign(const wire::Assign& req, std::chrono::milliseconds) override {
    std::lock_guard lock(mu_);
    fault();
    auto& s = sessions[req.session_id()];
    s.owner = req.engine_id();
    ++s.epoch;
    wire::AssignReply r;
    r.set_epoch(s.epoch);
    r.set_version(s.version);
    return r;
  }
  void delete_session(const wire::DeleteSession& req) override {
    std::lock_guard lock(mu_);
    fault();
    if (!sessions.erase(req.session_id())) throw error(wire::NOT_FOUND);
  }
  void release(const wire::Release& req) override {
    std::lock_guard lock(mu_);
    fault();
    sessions[req.session_id()].owner.clear();
  }
  void drain_done(const wire::DrainDone& req) override {
    std::lock_guard lock(mu_);
    fault();
    drains_done.push_back(req.epoch());
  }
  void session_ready(const wire::SessionReady& req) override {
    std::lock_guard lock(mu_);
    fault();
    ready_epochs.push_back(req.epoch());
  }
  void subscribe(const std::vector<std::string>&) override {}
  void unsubscribe(const std::vector<std::string>&) override {}

 private:
  void fault() {
    if (!reachable) throw error(wire::UNAVAILABLE, "unreachable");
    if (!fail_next.empty()) {
      const auto code = fail_next.front();
      fail_next.erase(fail_next.begin());
      throw error(code);
    }
  }
  static void info(const std::string& id, const FakeSession& s, wire::SessionInfo& i) {
    i.set_session_id(id);
    i.set_version(s.version);
    i.set_epoch(s.epoch);
    i.set_owner(s.owner);
  }
  static RequestError conflict(wire::ErrorCode code, const FakeSession& s) {
    wire::Error e;
    e.set_code(code);
    e.set_message("injected conflict");
    e.set_current_version(s.version);
    e.set_current_epoch(s.epoch);
    e.set_current_owner(s.owner);
    return RequestError(std::move(e));
  }
  std::mutex mu_;
};

class FaultyDisk final : public PosixDisk {
 public:
  // Every write-like call fails with this errno while set (0: none).
  std::atomic<int> fail_writes{0};
  // Only write_durably (manifests, quarantine reasons) fails while set.
  std::atomic<int> fail_durable_writes{0};

  // The host loses power: every file written without a sync since the last
  // crash() goes back to what it held then (or vanishes if it was new).
  void crash() {
    std::lock_guard lock(mu_);
    for (const auto& [p, before] : unsynced_) {
      if (before) {
        PosixDisk::write_file(p, *before, 0600);
      } else {
        PosixDisk::unlink(p);
      }
    }
    unsynced_.clear();
  }

  void make_dir(const path& p, std::uint32_t mode, bool exist_ok) override {
    check();
    PosixDisk::make_dir(p, mode, exist_ok);
  }
  void make_dirs(const path& p) override {
    check();
    PosixDisk::make_dirs(p);
  }
  void make_file(const path& p) override {
    check();
    note(p);
    PosixDisk::make_file(p);
  }
  void write_file(const path& p, const std::string& content, std::uint32_t mode) override {
    check();
    note(p);
    PosixDisk::write_file(p, content, mode);
  }
  void write_durably(const path& p, const std::string& content) override {
    check();
    if (const int e = fail_durable_writes.load()) {
      throw std::system_error(e, std::generic_category(), "injected");
    }
    PosixDisk::write_durably(p, content);
    std::lock_guard lock(mu_);
    unsynced_.erase(p);
  }
  void symlink(const std::string& target, const path& p) override {
    check();
    PosixDisk::symlink(target, p);
  }

 private:
  void check() {
    if (const int e = fail_writes.load()) {
      throw std::system_error(e, std::generic_category(), "injected");
    }
  }
  void note(const path& p) {
    std::lock_guard lock(mu_);
    if (unsynced_.contains(p)) return;
    std::optional<std::string> before;
    try {
      if (exists(p)) before = read_file(p);
    } catch (const std::system_error&) {
    }
    unsynced_.emplace(p, std::move(before));
  }
  std::mutex mu_;
  std::map<path, std::optional<std::string>> unsynced_;
};

class ManualTime final : public TimeSource {
 public:
  std::chrono::steady_clock::time_point now() const override { return now_; }
  std::chrono::system_clock::time_point wall() const override {
    return std::chrono::system_clock::time_point{} +
           std::chrono::duration_cast<std::chrono::system_clock::duration>(now_.time_since_epoch());
  }
  void sleep_for(std::chrono::microseconds d) const override { now_ += d; }
  void advance(std::chrono::milliseconds d) { now_ += d; }

 private:
  mutable std::chrono::steady_clock::time_point now_{std::chrono::hours(1000)};
};

}  // namespace cookiefs::mount::test
