// The sessions side's core: the cache dir's sessions at start-up, create,
// remove, changes and fsync, storage events, and process() -- the one loop
// that runs each session's steps (session_fetch.cpp, session_commit.cpp,
// session_adopt.cpp, ownership.cpp). See session_cache.hpp and docs/mount.md.
#include "session_cache.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <future>
#include <random>
#include <stdexcept>
#include <thread>
#include <utility>

#include "names.hpp"
#include "session_internal.hpp"

namespace cookiefs::mount {
namespace fs = std::filesystem;

std::string random_hex() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(rng()),
                static_cast<unsigned long long>(rng()));
  return buf;
}

// Writes the entries of `target` (with the contents in `reply`) under `base`,
// skipping those `local` already has as wanted; `give` hands each written
// path to the mount owner. Parents sort before their children.
TouchedPaths write_entries(CacheDisk& disk, const fs::path& base, const wire::FetchReply& reply,
                           const Manifest& target, const Snapshot& local,
                           const std::function<void(const fs::path&)>& give) {
  TouchedPaths touched;
  std::vector<const wire::FileEntry*> files;
  for (const auto& f : reply.files()) {
    if (target.entries.contains(f.path())) files.push_back(&f);
  }
  std::sort(files.begin(), files.end(), [](auto* a, auto* b) { return a->path() < b->path(); });
  for (const auto* f : files) {
    const ManifestEntry& want = target.entries.at(f->path());
    auto have = local.find(f->path());
    if (have != local.end() && have->second.entry == want) continue;
    const fs::path p = base / f->path();
    switch (f->kind()) {
      case wire::DIRECTORY:
        disk.make_dir(p, want.mode, true);
        disk.chmod(p, want.mode);
        break;
      case wire::SYMLINK:
        disk.symlink(f->content(), p);
        break;
      default:
        disk.write_file(p, f->content(), want.mode & kModeBits);
        break;
    }
    give(p);
    touched.push_back(f->path());
  }
  return touched;
}

// The manifest of a fetched version. `contents`: sizes and hashes come from the
// file contents (a full fetch), else from the reply's fields (manifest only).
Manifest manifest_of_reply(const wire::FetchReply& reply, bool contents) {
  Manifest m;
  m.version = reply.info().version();
  m.epoch = reply.info().epoch();
  for (const auto& f : reply.files()) {
    if (!valid_session_path(f.path())) {
      spdlog::warn("ignoring a remote file with an invalid path: {}", path_problem(f.path()));
      continue;
    }
    ManifestEntry e{f.kind(), f.mode() & kModeBits, contents ? f.content().size() : f.size(), {}};
    if (f.kind() == wire::SYMLINK) e.mode = 0777;
    if (f.kind() != wire::DIRECTORY) e.sha256 = contents ? sha256(f.content()) : f.sha256();
    m.entries.emplace(f.path(), e);
  }
  return m;
}

namespace {}  // namespace

SessionCache::SessionCache(const MountConfig& cfg, SessionStore& store, CommitQueue& queue,
                           CacheDisk& disk, const TimeSource& time)
    : cfg_(cfg), store_(store), queue_(queue), disk_(disk), time_(time), root_(cfg.cache_dir) {}

SessionCache::~SessionCache() = default;

void SessionCache::open() {
  disk_.make_dirs(root_ / "sessions");
  disk_.make_dirs(root_ / "quarantine");
  // Canonical, so a session-relative path can be read back from /proc/self/fd.
  root_ = disk_.canonical(root_);
  if (!disk_.lock(root_ / "lock"))
    throw std::runtime_error("cache_dir: in use by another cookiefs");
  for (const auto& name : disk_.list(root_ / "quarantine")) {
    // A quarantine entry a crash interrupted (see quarantine()).
    if (name.starts_with(".incoming-")) disk_.remove_all(root_ / "quarantine" / name);
  }
  for (const auto& name : disk_.list(root_ / "sessions")) {
    if (!valid_id(name)) {
      disk_.remove_all(root_ / "sessions" / name);  // leftovers of an interrupted fetch or delete
      continue;
    }
    try {
      auto s = load(name);
      std::lock_guard lock(mu_);
      sessions_.emplace(name, std::move(s));
    } catch (const std::exception& e) {
      spdlog::error("a cached session cannot be loaded and is skipped: {}", e.what());
    }
  }
  spdlog::info("cache holds {} sessions", sessions_.size());
}

std::shared_ptr<Session> SessionCache::load(const std::string& id) {
  auto s = std::make_shared<Session>(id, root_ / "sessions" / id);
  s->manifest = decode_manifest(disk_.read_file(s->dir / "manifest"));
  load_owner(*s);
  if (disk_.exists(s->dir / kPagesInFlight)) {
    s->torn = true;
    s->pages_in_flight = true;
  }
  // Unknown until the first snapshot: recovery compares the tree to the manifest.
  s->change_gen = 1;
  return s;
}

void SessionCache::recover() {
  std::vector<std::string> ids;
  for (const auto& s : list()) ids.push_back(s->id);
  if (!ids.empty()) store_.subscribe(ids);
  for (const auto& id : ids) queue_.urgent(id);
}

std::shared_ptr<Session> SessionCache::find(const std::string& id) const {
  std::lock_guard lock(mu_);
  auto it = sessions_.find(id);
  return it == sessions_.end() ? nullptr : it->second;
}

std::vector<std::shared_ptr<Session>> SessionCache::list() const {
  std::lock_guard lock(mu_);
  std::vector<std::shared_ptr<Session>> out;
  for (const auto& [id, s] : sessions_) out.push_back(s);
  return out;
}

std::string SessionCache::last_error() const {
  std::lock_guard lock(mu_);
  return last_error_;
}

void SessionCache::set_error(Session& s, const std::string& e) {
  {
    std::lock_guard lock(s.state_mu);
    s.last_error = e;
  }
  std::lock_guard lock(mu_);
  last_error_ = e;
}

std::shared_ptr<Session> SessionCache::create(const std::string& id) {
  if (!store_.connected() && !find(id)) {
    // Offline, a session this host does not hold may exist elsewhere: making
    // it here would fork it (the engine's cookies fenced into quarantine on
    // reconnect, the old jar back). Ask the service, waiting offline_wait.
    try {
      get_or_fetch(id);
      throw Errno{EEXIST};
    } catch (const Errno& e) {
      if (e.code == kUnreachable) {
        note_offline_refusal();
        throw Errno{EAGAIN};
      }
      if (e.code != ENOENT) throw;
    }
  }
  std::shared_ptr<Session> s;
  {
    std::lock_guard lock(mu_);
    if (sessions_.contains(id)) throw Errno{EEXIST};
    const fs::path dir = root_ / "sessions" / id;
    disk_.remove_all(dir);
    s = std::make_shared<Session>(id, dir);
    try {
      disk_.make_dirs(dir / "files");
      write_manifest(*s, s->manifest);
    } catch (const std::system_error& e) {
      disk_.remove_all(dir);
      spdlog::error("creating a session in the cache dir failed: {}", e.code().message());
      throw Errno{e.code().value() == ENOSPC || e.code().value() == EDQUOT ? e.code().value()
                                                                           : EIO};
    }
    sessions_.emplace(id, s);
  }
  store_.subscribe({id});
  ++s->change_gen;
  queue_.changed(id);
  return s;
}

void SessionCache::remove(const std::string& id) {
  auto s = find(id);
  if (!s) throw Errno{ENOENT};
  if (access(*s) == Access::read_only) throw Errno{EROFS};
  std::lock_guard commit_lock(s->commit_mu);
  if (!disk_.is_empty_dir(s->files())) throw Errno{ENOTEMPTY};
  wire::DeleteSession req;
  req.set_session_id(id);
  {
    std::lock_guard lock(s->state_mu);
    req.set_writer_epoch(s->manifest.epoch);
  }
  try {
    store_.delete_session(req);
  } catch (const RequestError& e) {
    if (e.code() != wire::NOT_FOUND) {
      spdlog::warn("deleting a session failed: {}", wire::ErrorCode_Name(e.code()));
      throw Errno{e.code() == wire::STALE_EPOCH || e.code() == wire::NOT_OWNER ? EPERM : EIO};
    }
  }
  store_.unsubscribe({id});
  forget(id, true);
  std::lock_guard lock(s->state_mu);
  s->deleted = true;
  s->committed_cv.notify_all();
}

void SessionCache::note_offline_refusal() {
  // Once per outage (reconnected() re-arms it), without the session id.
  if (!offline_refusal_logged_.exchange(true)) {
    spdlog::warn(
        "the storage service is unreachable: lookups of sessions this host does not hold, and "
        "mkdir of new ones, answer EAGAIN after offline_wait ({} ms) until it is back",
        cfg_.offline_wait.count());
  }
}

void SessionCache::forget(const std::string& id, bool remove_files) {
  std::shared_ptr<Session> s;
  {
    std::lock_guard lock(mu_);
    auto it = sessions_.find(id);
    if (it == sessions_.end()) return;
    s = it->second;
    sessions_.erase(it);
  }
  if (remove_files) {
    const fs::path trash = root_ / "sessions" / (".trash-" + random_hex());
    bool moved = true;
    try {
      disk_.rename(s->dir, trash);
    } catch (const std::system_error&) {
      moved = false;
    }
    disk_.remove_all(moved ? trash : s->dir);
  }
}

void SessionCache::note_write_back(Session& s) {
  if (s.pages_in_flight.exchange(true)) return;
  // Before the bytes land: a crash from here on finds the mark.
  try {
    disk_.make_file(s.dir / kPagesInFlight);
  } catch (const std::system_error& e) {
    if (e.code().value() != EEXIST) {
      s.pages_in_flight = false;
      spdlog::error("cannot mark a session's pages in flight: {}", e.code().message());
      throw Errno{e.code().value() == ENOSPC || e.code().value() == EDQUOT
                      ? e.code().value()
                      : EIO};  // a full cache dir says so
    }
  }
}

void SessionCache::note_change(Session& s) {
  ++s.change_gen;
  queue_.changed(s.id);
}

void SessionCache::sync(Session& s) {
  const std::uint64_t gen = s.change_gen;
  auto settled = [&] { return s.committed_gen >= gen || s.deleted; };
  // Generation 0 is a session as fetched (or loaded) with no change since:
  // nothing of it can have been rejected. Without this, rejected_gen's
  // initial 0 made every fsync of an untouched fetched session fail with EIO
  // -- the first fdatasync of a hot journal that SQLite rolls back after a
  // crash hand-off.
  auto rejected = [&] { return gen > 0 && s.rejected_gen >= gen; };
  {
    std::lock_guard lock(s.state_mu);
    if (settled()) {
      if (rejected()) {
        spdlog::warn("fsync answered EIO: the session's changes were refused and kept aside ({})",
                     s.last_error);
        throw Errno{EIO};
      }
      return;  // nothing new since the last commit
    }
  }
  // On this thread when no run is in flight: the commit starts without
  // waking a worker, and the wait below is then already over.
  queue_.run_here(s.id);
  std::unique_lock lock(s.state_mu);
  const bool done = s.committed_cv.wait_for(lock, cfg_.commit_fsync_timeout, settled);
  if (!done) {
    spdlog::warn("fsync answered EIO: the commit did not finish within commit.fsync_timeout ({})",
                 s.last_error.empty() ? "no error recorded" : s.last_error);
    throw Errno{EIO};
  }
  if (rejected()) {
    spdlog::warn("fsync answered EIO: the session's changes were refused and kept aside ({})",
                 s.last_error);
    throw Errno{EIO};
  }
}

void SessionCache::remote_changed(const std::string& id, std::uint64_t version,
                                  const std::string& writer) {
  auto s = find(id);
  if (!s || writer == cfg_.engine_id) return;
  std::uint64_t seen = s->remote_version;
  while (version > seen && !s->remote_version.compare_exchange_weak(seen, version)) {
  }
  queue_.urgent(id);
}

void SessionCache::remote_deleted(const std::string& id) {
  auto s = find(id);
  if (!s) return;
  s->remote_deleted = true;
  queue_.urgent(id);
}

void SessionCache::reconnected() {
  offline_refusal_logged_ = false;
  for (const auto& s : list()) {
    s->check_remote = true;
    queue_.urgent(s->id);
  }
}

bool SessionCache::process(const std::string& id) {
  // The one place where a step's unexpected failure (a cache-dir write that
  // failed: ENOSPC, EIO) is logged and counted; the queue retries the session.
  try {
    return process_once(id);
  } catch (const std::system_error& e) {
    ++counters.work_failures;
    spdlog::error("session work failed, will retry: {} ({})", e.code().message(),
                  e.code().value() == ENOSPC ? "the cache dir is full" : "cache dir I/O");
  } catch (const std::exception& e) {
    ++counters.work_failures;
    spdlog::error("session work failed, will retry: {}", e.what());
  }
  return false;
}

bool SessionCache::process_once(const std::string& id) {
  std::optional<OwnerNote> note;
  std::optional<DrainNote> drain;
  {
    std::lock_guard lock(mu_);
    if (auto it = owner_notes_.find(id); it != owner_notes_.end()) {
      note = it->second;
      owner_notes_.erase(it);
    }
    if (auto it = drain_notes_.find(id); it != drain_notes_.end()) {
      drain = it->second;
      drain_notes_.erase(it);
    }
  }
  auto s = find(id);
  if (!s) {
    if (!process_unheld(id, note, drain)) return false;
    s = find(id);
    if (!s) return true;
  }
  take_notes(*s, std::move(note), std::move(drain));
  std::lock_guard commit_lock(s->commit_mu);
  if (s->deleted) return true;
  if (s->torn && !revert_torn(*s)) return false;
  if (s->remote_deleted) {
    Snapshot snap;
    {
      std::unique_lock tree(s->tree_lock);
      snap = take_snapshot(*s);
    }
    Manifest m;
    {
      std::lock_guard lock(s->state_mu);
      m = s->manifest;
      s->deleted = true;
      s->committed_cv.notify_all();
    }
    if (!compute_delta(m, snap).empty()) quarantine(id, snap, "deleted remotely");
    forget(id, true);
    if (on_vanished) on_vanished(id);
    return true;
  }
  // A drain commits what is pending under the retiring epoch before anything
  // else can change the tree.
  if (!settle_drain(*s)) return false;
  bool applying, newer;
  {
    std::lock_guard lock(s->state_mu);
    applying = s->manifest.applying;
    newer = s->remote_version > s->manifest.version;
  }
  if (applying || newer || s->check_remote.exchange(false)) {
    if (!adopt(*s, applying ? "resume" : "remote change")) {
      s->check_remote = true;
      return false;
    }
  }
  if (!settle_ready(*s)) return false;
  if (!resend_unsettled(*s)) return false;
  return commit_pending(*s);
}

void SessionCache::give_to_mount_owner(const fs::path& p) const {
  // Remote entries carry no owner: they belong to whom the mount root does,
  // so a non-root engine (mount.root_uid) can keep writing them.
  if (cfg_.root_uid < 0 && cfg_.root_gid < 0) return;
  try {
    disk_.chown(p, cfg_.root_uid, cfg_.root_gid);
  } catch (const std::system_error& e) {
    spdlog::warn("cannot give a fetched file to mount.root_uid/root_gid: {}", e.code().message());
  }
}

void SessionCache::write_manifest(const Session& s, const Manifest& m) {
  disk_.write_durably(s.dir / "manifest", encode_manifest(m));
}

}  // namespace cookiefs::mount
