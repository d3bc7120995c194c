// Sessions on disk and their commits; see session_cache.hpp.
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

namespace cookiefs::mount {
namespace fs = std::filesystem;

namespace {

std::string random_hex() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  char buf[33];
  std::snprintf(buf, sizeof buf, "%016llx%016llx", static_cast<unsigned long long>(rng()),
                static_cast<unsigned long long>(rng()));
  return buf;
}

std::string read_all(int fd) {
  std::string out;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw std::system_error(errno, std::generic_category(), "read");
    if (n == 0) return out;
    out.append(buf, static_cast<std::size_t>(n));
  }
}

void write_all(int fd, const std::string& data) {
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw std::system_error(errno, std::generic_category(), "write");
    done += static_cast<std::size_t>(n);
  }
}

// Owns a file descriptor.
struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

void write_file_atomically(const fs::path& path, const std::string& data) {
  const fs::path tmp = path.string() + ".tmp";
  {
    Fd f(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (f.fd < 0) throw std::system_error(errno, std::generic_category(), "open manifest");
    write_all(f.fd, data);
    if (::fsync(f.fd) != 0) throw std::system_error(errno, std::generic_category(), "fsync");
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    throw std::system_error(errno, std::generic_category(), "rename manifest");
  }
}

std::string read_path(const fs::path& path) {
  Fd f(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (f.fd < 0) throw std::system_error(errno, std::generic_category(), "open");
  return read_all(f.fd);
}

// Writes `content` into an existing or new file without replacing its inode,
// so the kernel's and the inode table's handles on it stay valid.
void write_in_place(const fs::path& path, const std::string& content, std::uint32_t mode) {
  Fd f(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
              mode & kModeBits));
  if (f.fd < 0) throw std::system_error(errno, std::generic_category(), "open");
  write_all(f.fd, content);
  ::fchmod(f.fd, mode & kModeBits);
}

// Writes a file of a fetch's private staging dir (made empty in advance):
// no temporary name, no fsync.
void fill_file(const fs::path& path, const std::string& content) {
  Fd f(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (f.fd < 0) throw std::system_error(errno, std::generic_category(), "open");
  write_all(f.fd, content);
}

// An empty file in a staging dir, renamed over the fetched session's first file.
constexpr const char* kStagingBlank = "blank";

void make_file(const fs::path& path) {
  Fd f(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (f.fd < 0) throw std::system_error(errno, std::generic_category(), "create");
}

void make_dir(const fs::path& path) {
  if (::mkdir(path.c_str(), 0755) != 0) {
    throw std::system_error(errno, std::generic_category(), "mkdir");
  }
}

// A fetch's staging dir until it is renamed into place; removed on failure so
// a failed lookup leaves nothing behind until the next start-up.
struct StagingDir {
  fs::path path;
  bool kept = false;
  explicit StagingDir(fs::path p) : path(std::move(p)) {}
  ~StagingDir() {
    std::error_code ec;
    if (!kept) fs::remove_all(path, ec);
  }
  StagingDir(const StagingDir&) = delete;
  StagingDir& operator=(const StagingDir&) = delete;
};

// Writes the entries of `target` (with the contents in `reply`) under `base`,
// skipping those `local` already has as wanted; `give` hands each written
// path to the mount owner. Parents sort before their children.
TouchedPaths write_entries(const fs::path& base, const wire::FetchReply& reply,
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
        if (::mkdir(p.c_str(), want.mode) != 0 && errno != EEXIST) {
          throw std::system_error(errno, std::generic_category(), "mkdir");
        }
        ::chmod(p.c_str(), want.mode);
        break;
      case wire::SYMLINK: {
        std::error_code ec;
        fs::remove(p, ec);
        fs::create_symlink(f->content(), p);
        break;
      }
      default:
        write_in_place(p, f->content(), want.mode);
        break;
    }
    give(p);
    touched.push_back(f->path());
  }
  return touched;
}

bool transient(wire::ErrorCode c) {
  return c == wire::UNAVAILABLE || c == wire::SHUTTING_DOWN || c == wire::INTERNAL ||
         c == wire::ERROR_UNSPECIFIED || c == wire::UNAUTHENTICATED;
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

}  // namespace

SessionCache::SessionCache(const MountConfig& cfg, StorageClient& client, CommitQueue& queue)
    : cfg_(cfg), client_(client), queue_(queue), root_(cfg.cache_dir) {}

SessionCache::~SessionCache() {
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

void SessionCache::open() {
  fs::create_directories(root_ / "sessions");
  fs::create_directories(root_ / "quarantine");
  // Canonical, so a session-relative path can be read back from /proc/self/fd.
  root_ = fs::canonical(root_);
  lock_fd_ = ::open((root_ / "lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock_fd_ < 0) throw std::system_error(errno, std::generic_category(), "cache_dir lock");
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    throw std::runtime_error("cache_dir: in use by another cookiefs");
  }
  for (const auto& d : fs::directory_iterator(root_ / "sessions")) {
    const std::string name = d.path().filename().string();
    if (!valid_id(name)) {
      fs::remove_all(d.path());  // leftovers of an interrupted fetch or delete
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

namespace {
// The mark of a tree that may be torn (Session::pages_in_flight).
constexpr const char* kPagesInFlight = "pages-in-flight";
}  // namespace

std::shared_ptr<Session> SessionCache::load(const std::string& id) {
  auto s = std::make_shared<Session>(id, root_ / "sessions" / id);
  s->manifest = decode_manifest(read_path(s->dir / "manifest"));
  load_owner(*s);
  if (fs::exists(s->dir / kPagesInFlight)) {
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
  if (!ids.empty()) client_.subscribe(ids);
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

// Every inode a fetch writes, made while its request is in flight.
void SessionCache::prepare_staging(const Session& staging) const {
  make_dir(staging.dir);
  make_dir(staging.files());
  give_to_mount_owner(staging.files());
  make_file(staging.dir / "manifest");
  make_file(staging.dir / kStagingBlank);
  // save_owner() writes owner.tmp, then renames it: it now only truncates it.
  make_file(staging.dir / "owner.tmp");
}

std::shared_ptr<Session> SessionCache::get_or_fetch(const std::string& id) {
  if (auto s = find(id)) {
    // A tree a crash may have torn is not served before its revert (which
    // the queue may be doing already): an application reading it first
    // would see files that the revert then replaces or removes.
    if (s->torn && !settle_torn(*s)) throw Errno{EIO};
    return s;
  }
  // Subscribed before the fetch: a commit landing between the fetch's answer
  // and the session's insertion below would otherwise never be announced, and
  // this mount would serve the older version until the next reconnect.
  client_.subscribe({id});
  const auto unsubscribe_unless_held = [&] {
    std::lock_guard lock(mu_);
    if (!sessions_.contains(id)) client_.unsubscribe({id});
  };
  wire::Envelope env;
  env.mutable_fetch()->set_session_id(id);
  // Offline, a lookup must not hang for the client's whole retry deadline:
  // wait only as long as a (re)connect normally takes.
  const auto timeout = client_.connected() ? std::chrono::milliseconds(0) : kOfflineFetchTimeout;
  // Pipelined: the request is on its way before the staging dir is made, as
  // creating an inode costs a few hundred microseconds on the cache's ext4.
  // Written beside the cache under a name that is not a valid id, then renamed
  // into place: a crash never leaves a half-fetched session that looks dirty.
  // Nothing is fsync'ed: PostgreSQL has the data, a process crash loses no
  // page-cache write, and a leftover staging dir is removed at start-up.
  auto answered = std::make_shared<std::promise<StorageClient::Result>>();
  auto answer = answered->get_future();
  client_.call(
      std::move(env), [answered](StorageClient::Result r) { answered->set_value(std::move(r)); },
      timeout);
  fs::path spare;
  {
    std::lock_guard lock(mu_);
    spare = std::exchange(spare_staging_, fs::path());
  }
  StagingDir tmp(spare.empty() ? root_ / "sessions" / (".fetch-" + random_hex()) : spare);
  Session staging(id, tmp.path);
  std::string unprepared;
  try {
    if (spare.empty()) prepare_staging(staging);
  } catch (const std::exception& e) {
    unprepared = e.what();
  }
  StorageClient::Result result = answer.get();
  if (result.has_error || !result.reply.has_fetch_reply()) {
    // Unused: kept for the next fetch, so looking up ids that do not exist
    // (each mkdir of a new session does) costs no inode.
    if (unprepared.empty()) {
      std::lock_guard lock(mu_);
      if (spare_staging_.empty()) {
        spare_staging_ = tmp.path;
        tmp.kept = true;
      }
    }
  }
  if (result.has_error) {
    unsubscribe_unless_held();
    if (result.error.code() == wire::NOT_FOUND) throw Errno{ENOENT};
    if (transient(result.error.code())) throw Errno{kUnreachable};
    spdlog::warn("fetching a session failed: {}", wire::ErrorCode_Name(result.error.code()));
    throw Errno{EIO};
  }
  if (!result.reply.has_fetch_reply()) {
    unsubscribe_unless_held();
    throw Errno{EIO};
  }
  const wire::FetchReply& reply = result.reply.fetch_reply();
  try {
    if (!unprepared.empty()) throw std::runtime_error(unprepared);
    staging.manifest = manifest_of_reply(reply, true);
    // The first top-level regular file takes the blank prepared for it.
    const auto first = std::find_if(
        staging.manifest.entries.begin(), staging.manifest.entries.end(), [](const auto& e) {
          return e.second.kind == wire::REGULAR && e.first.find('/') == std::string::npos;
        });
    const fs::path blank = staging.dir / kStagingBlank;
    if (first == staging.manifest.entries.end()) {
      ::unlink(blank.c_str());
    } else if (::rename(blank.c_str(), (staging.files() / first->first).c_str()) != 0) {
      throw std::system_error(errno, std::generic_category(), "rename");
    }
    write_entries(staging.files(), reply, staging.manifest, {},
                  [this](const fs::path& p) { give_to_mount_owner(p); });
    fill_file(staging.dir / "manifest", encode_manifest(staging.manifest));
    staging.owner_known = true;
    staging.owner = reply.info().owner();
    staging.owner_epoch = reply.info().epoch();
    save_owner(staging);
  } catch (const std::exception& e) {
    unsubscribe_unless_held();
    // what() of a filesystem error names paths, which name the session.
    const auto* sys = dynamic_cast<const std::system_error*>(&e);
    spdlog::error("writing a fetched session into the cache failed: {}",
                  sys ? sys->code().message() : std::string("internal error"));
    spdlog::debug("session {}: {}", id, e.what());
    throw Errno{EIO};
  }
  auto s = std::make_shared<Session>(id, root_ / "sessions" / id);
  s->manifest = std::move(staging.manifest);
  s->owner_known = true;
  s->owner = staging.owner;
  s->owner_epoch = staging.owner_epoch;
  std::lock_guard lock(mu_);
  if (auto it = sessions_.find(id); it != sessions_.end()) return it->second;
  fs::rename(tmp.path, s->dir);
  tmp.kept = true;
  sessions_.emplace(id, s);
  // Events that arrived before the emplace found no session and were dropped:
  // ask once whether a newer version landed meanwhile. Not urgent: that window
  // is a fraction of a millisecond, and an urgent check would snapshot the
  // session (exclusive tree lock) while the lookup's caller starts reading it.
  s->check_remote = true;
  queue_.changed(id);
  return s;
}

std::shared_ptr<Session> SessionCache::create(const std::string& id) {
  std::shared_ptr<Session> s;
  {
    std::lock_guard lock(mu_);
    if (sessions_.contains(id)) throw Errno{EEXIST};
    const fs::path dir = root_ / "sessions" / id;
    std::error_code ec;
    fs::remove_all(dir, ec);
    fs::create_directories(dir / "files");
    s = std::make_shared<Session>(id, dir);
    write_manifest(*s, s->manifest);
    sessions_.emplace(id, s);
  }
  client_.subscribe({id});
  ++s->change_gen;
  queue_.changed(id);
  return s;
}

void SessionCache::remove(const std::string& id) {
  auto s = find(id);
  if (!s) throw Errno{ENOENT};
  if (access(*s) == Access::read_only) throw Errno{EROFS};
  std::lock_guard commit_lock(s->commit_mu);
  if (!fs::is_empty(s->files())) throw Errno{ENOTEMPTY};
  wire::DeleteSession req;
  req.set_session_id(id);
  {
    std::lock_guard lock(s->state_mu);
    req.set_writer_epoch(s->manifest.epoch);
  }
  try {
    client_.delete_session(req);
  } catch (const RequestError& e) {
    if (e.code() != wire::NOT_FOUND) {
      spdlog::warn("deleting a session failed: {}", wire::ErrorCode_Name(e.code()));
      throw Errno{e.code() == wire::STALE_EPOCH || e.code() == wire::NOT_OWNER ? EPERM : EIO};
    }
  }
  client_.unsubscribe({id});
  forget(id, true);
  std::lock_guard lock(s->state_mu);
  s->deleted = true;
  s->committed_cv.notify_all();
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
    std::error_code ec;
    fs::rename(s->dir, trash, ec);
    fs::remove_all(ec ? s->dir : trash, ec);
  }
}

void SessionCache::note_write_back(Session& s) {
  if (s.pages_in_flight.exchange(true)) return;
  // Before the bytes land: a crash from here on finds the mark.
  const int fd =
      ::open((s.dir / kPagesInFlight).c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    const int err = errno;
    s.pages_in_flight = false;
    spdlog::error("cannot mark a session's pages in flight: {}", std::strerror(err));
    throw Errno{err == ENOSPC || err == EDQUOT ? err : EIO};  // a full cache dir says so
  }
  ::close(fd);
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
  for (const auto& s : list()) {
    s->check_remote = true;
    queue_.urgent(s->id);
  }
}

bool SessionCache::process(const std::string& id) {
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
  return commit(*s);
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
    const auto reply = client_.commit(req);
    std::lock_guard lock(s.state_mu);
    Manifest m = s.manifest;
    for (const auto& f : req.changed()) {
      m.entries[f.path()] = {f.kind(), f.mode(), f.size(), f.sha256()};
    }
    for (const auto& p : req.deleted()) m.entries.erase(p);
    m.version = reply.version();
    m.epoch = reply.epoch();
    write_manifest(s, m);
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
      std::this_thread::sleep_for(std::chrono::microseconds(100 * attempt));
      continue;
    }
    gen = s.change_gen;
    snap = take_snapshot(s);
    // At rest: the tree is one instant of the application's view again.
    if (before_snapshot && s.pages_in_flight) {
      ::unlink((s.dir / kPagesInFlight).c_str());
      s.pages_in_flight = false;
    }
    return true;
  }
  return false;
}

bool SessionCache::settle_torn(Session& s) {
  std::lock_guard commit_lock(s.commit_mu);
  return !s.torn || revert_torn(s);
}

bool SessionCache::revert_torn(Session& s) {
  Snapshot local;
  {
    std::unique_lock tree(s.tree_lock);
    local = take_snapshot(s);
  }
  std::uint64_t version;
  {
    std::lock_guard lock(s.state_mu);
    version = s.manifest.version;
  }
  wire::FetchReply reply;
  if (version > 0) {
    wire::FetchSession req;
    req.set_session_id(s.id);
    try {
      reply = client_.fetch(req);
    } catch (const RequestError& e) {
      if (e.code() != wire::NOT_FOUND) return false;
      s.remote_deleted = true;  // handled by the next run
      version = 0;
    }
  }
  quarantine(s.id, local,
             "the mount stopped while the kernel was writing pages back (writeback cache): the "
             "uncommitted local tree may be torn; reverted to the committed version");
  TouchedPaths touched;
  {
    std::unique_lock tree(s.tree_lock);
    if (version > 0) {
      note_owner(s, reply.info().owner(), reply.info().epoch());
      touched = apply(s, reply, take_snapshot(s));
    } else {
      std::error_code ec;
      for (const auto& e : fs::directory_iterator(s.files(), ec)) fs::remove_all(e.path(), ec);
    }
    ::unlink((s.dir / kPagesInFlight).c_str());
    s.pages_in_flight = false;
    s.torn = false;
    std::lock_guard lock(s.state_mu);
    s.committed_gen = std::max(s.committed_gen, s.change_gen.load());
    s.dirty_bytes = 0;
    s.committed_cv.notify_all();
  }
  spdlog::warn(
      "a session's uncommitted changes were reverted after an unexpected stop (kept in "
      "quarantine)");
  if (on_adopted && !touched.empty()) on_adopted(s, touched);
  return true;
}

bool SessionCache::commit(Session& s) {
  {
    // Another engine owns it and nothing changed here: nothing the kernel
    // still holds could be committed (write-backs are refused), so a session
    // only read here (a cold read, a subscriber's copy) skips the forced
    // write-backs of snapshot_at_rest. Not for sessions owned by this engine:
    // a commit that landed before a crash is found by committing.
    std::lock_guard lock(s.state_mu);
    const bool others = s.owner_known && !s.owner.empty() && s.owner != cfg_.engine_id;
    if (others && !writable_locked(s) && s.committed_gen >= s.change_gen) return true;
  }
  Snapshot snap;
  std::uint64_t gen;
  if (!snapshot_at_rest(s, snap, gen)) {
    spdlog::debug("session {} kept changing while its dirty pages were written back", s.id);
    return false;  // retried by the queue
  }
  Manifest base;
  bool local_create, may_write;
  {
    std::lock_guard lock(s.state_mu);
    if (s.committed_gen >= gen) return true;
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
    return true;
  }
  wire::CommitSession req;
  req.set_session_id(s.id);
  req.set_writer_epoch(base.epoch);
  req.set_base_version(base.version);
  req.set_create(base.version == 0);
  req.set_idempotency_key(cfg_.engine_id + "/" + s.id + "/" + random_hex());
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
  const auto started = Clock::now();
  try {
    const auto reply = client_.commit(req);
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
    if (on_commit) on_commit("ok", std::chrono::duration<double>(Clock::now() - started).count());
    spdlog::debug(
        "session {} committed version {} ({} changed, {} deleted, {} ms)", s.id, reply.version(),
        delta.changed.size(), delta.deleted.size(),
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started).count());
    return true;
  } catch (const RequestError& e) {
    if (e.code() == wire::VERSION_CONFLICT || e.code() == wire::STALE_EPOCH) {
      wire::SessionInfo current;
      current.set_version(e.error().current_version());
      current.set_epoch(e.error().current_epoch());
      current.set_owner(e.error().current_owner());
      bool ours;
      {
        std::lock_guard lock(s.state_mu);
        ours = own_landed(s, current);
      }
      if (ours) {
        bool retry = false;
        // Bounded: after a rebase the manifest is at the remote version, so a
        // second rejection is a real conflict (only we commit at our epoch).
        if (rebase(s, nullptr, retry)) return commit(s);
        if (retry) {
          set_error(s, "fetch failed before a rebase");
          return false;
        }
      }
    }
    const std::string code = wire::ErrorCode_Name(e.code());
    const bool fenced = e.code() == wire::STALE_EPOCH || e.code() == wire::NOT_OWNER;
    if (on_commit) {
      on_commit(transient(e.code()) ? "failed"
                : fenced            ? "fenced"
                                    : "rejected",
                std::chrono::duration<double>(Clock::now() - started).count());
    }
    if (transient(e.code())) {
      ++counters.commits_failed;
      set_error(s, "commit failed: " + code);
      spdlog::warn("commit failed, will retry: {}", code);
      return false;
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
      return false;  // the next run quarantines and drops the session
    }
    if (e.code() == wire::VERSION_CONFLICT || e.code() == wire::STALE_EPOCH ||
        e.code() == wire::NOT_OWNER || e.code() == wire::ALREADY_EXISTS) {
      {
        std::lock_guard lock(s.state_mu);
        s.rejected_gen = gen;
      }
      return adopt(s, "commit rejected: " + code, true);
    }
    // TOO_LARGE, BAD_REQUEST: the snapshot cannot ever land; keep it aside and
    // keep the local tree, so the next change retries.
    quarantine(s.id, snap, "commit rejected: " + code);
    std::lock_guard lock(s.state_mu);
    s.rejected_gen = gen;
    s.committed_gen = std::max(s.committed_gen, gen);
    s.committed_cv.notify_all();
    return true;
  }
}

bool SessionCache::adopt(Session& s, const std::string& reason, bool force) {
  wire::FetchSession req;
  req.set_session_id(s.id);
  {
    std::lock_guard lock(s.state_mu);
    if (!force && !s.manifest.applying) req.set_if_newer_than(s.manifest.version);
  }
  wire::FetchReply reply;
  try {
    reply = client_.fetch(req);
  } catch (const RequestError& e) {
    if (e.code() == wire::NOT_FOUND) {
      bool never_committed;
      {
        std::lock_guard lock(s.state_mu);
        never_committed = s.manifest.version == 0 && !s.manifest.applying;
      }
      // Created here (maybe offline) and not committed yet: the commit
      // creates it. Anything else that is gone was deleted remotely.
      if (never_committed) return true;
      s.remote_deleted = true;
      return false;
    }
    set_error(s, "fetch failed: " + wire::ErrorCode_Name(e.code()));
    return false;
  }
  note_owner(s, reply.info().owner(), reply.info().epoch());
  if (reply.not_modified()) return true;
  TouchedPaths touched;
  {
    std::unique_lock tree(s.tree_lock);
    const std::uint64_t gen = s.change_gen;
    Snapshot local = take_snapshot(s);
    bool dirty;
    {
      std::lock_guard lock(s.state_mu);
      dirty = !s.manifest.applying && !compute_delta(s.manifest, local).empty();
    }
    if (dirty) {
      // Our own landed commits are no conflict: commit() sends the rest.
      bool retry = false;
      if (rebase(s, &reply, retry)) return true;
      quarantine(s.id, local, reason);
    }
    touched = apply(s, reply, local);
    std::lock_guard lock(s.state_mu);
    if (dirty) s.rejected_gen = std::max(s.rejected_gen, gen);
    s.committed_gen = std::max(s.committed_gen, gen);
    s.dirty_bytes = 0;
    s.committed_cv.notify_all();
  }
  ++counters.adopted;
  spdlog::debug("session {} adopted remote version {}", s.id, reply.info().version());
  if (on_adopted) on_adopted(s, touched);
  return true;
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
      fetched = client_.fetch(req);
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
    write_manifest(s, m);
    s.manifest = std::move(m);
  }
  note_owner(s, reply->info().owner(), reply->info().epoch());
  spdlog::info(
      "a commit of this mount landed before it was recorded locally (crash); committing the "
      "local tree on top of version {}",
      reply->info().version());
  return true;
}

Snapshot SessionCache::take_snapshot(Session& s) {
  Snapshot snap;
  const fs::path base = s.files();
  for (auto it = fs::recursive_directory_iterator(base); it != fs::recursive_directory_iterator();
       ++it) {
    const fs::path& p = it->path();
    struct stat st;
    if (::lstat(p.c_str(), &st) != 0) continue;
    SnapshotFile f;
    f.mtime_ns = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    f.entry.mode = st.st_mode & kModeBits;
    if (S_ISDIR(st.st_mode)) {
      f.entry.kind = wire::DIRECTORY;
    } else if (S_ISLNK(st.st_mode)) {
      f.entry.kind = wire::SYMLINK;
      f.content = fs::read_symlink(p).string();
      f.entry.mode = 0777;
    } else if (S_ISREG(st.st_mode)) {
      f.entry.kind = wire::REGULAR;
      f.content = read_path(p);
    } else {
      continue;
    }
    f.entry.size = f.content.size();
    if (f.entry.kind != wire::DIRECTORY) f.entry.sha256 = sha256(f.content);
    // Lexical: p comes from iterating base (fs::relative would resolve both
    // paths, a stat and a readlink per component, on every snapshot).
    snap.emplace(p.lexically_relative(base).generic_string(), std::move(f));
  }
  return snap;
}

TouchedPaths SessionCache::apply(Session& s, const wire::FetchReply& reply, const Snapshot& local) {
  Manifest target = manifest_of_reply(reply, true);
  target.applying = true;
  write_manifest(s, target);
  TouchedPaths touched;
  const fs::path base = s.files();
  // Children sort after their parents, so reverse order removes them first.
  for (auto it = local.rbegin(); it != local.rend(); ++it) {
    auto t = target.entries.find(it->first);
    if (t == target.entries.end() || t->second.kind != it->second.entry.kind) {
      std::error_code ec;
      fs::remove_all(base / it->first, ec);
      touched.push_back(it->first);
    }
  }
  const TouchedPaths written = write_entries(base, reply, target, local,
                                             [this](const fs::path& p) { give_to_mount_owner(p); });
  touched.insert(touched.end(), written.begin(), written.end());
  target.applying = false;
  write_manifest(s, target);
  {
    std::lock_guard lock(s.state_mu);
    s.manifest = target;
  }
  return touched;
}

void SessionCache::quarantine(const std::string& id, const Snapshot& snap,
                              const std::string& reason) {
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
  const fs::path dir = root_ / "quarantine" / (id + "." + std::to_string(ms) + "." + random_hex());
  try {
    fs::create_directories(dir / "files");
    for (const auto& [path, f] : snap) {
      const fs::path p = dir / "files" / path;
      if (f.entry.kind == wire::DIRECTORY) {
        fs::create_directories(p);
      } else if (f.entry.kind == wire::SYMLINK) {
        fs::create_directories(p.parent_path());
        fs::create_symlink(f.content, p);
      } else {
        fs::create_directories(p.parent_path());
        write_in_place(p, f.content, f.entry.mode);
      }
    }
    write_file_atomically(dir / "reason", reason + "\n");
    ++counters.quarantined;
    spdlog::warn("kept a session snapshot in quarantine ({})", reason);
    spdlog::debug("quarantined session {} in {}", id, dir.string());
  } catch (const std::exception& e) {
    spdlog::error("quarantine failed: {}", e.what());
  }
}

void SessionCache::give_to_mount_owner(const fs::path& p) const {
  // Remote entries carry no owner: they belong to whom the mount root does,
  // so a non-root engine (mount.root_uid) can keep writing them.
  if (cfg_.root_uid < 0 && cfg_.root_gid < 0) return;
  if (::lchown(p.c_str(), static_cast<uid_t>(cfg_.root_uid), static_cast<gid_t>(cfg_.root_gid)) !=
      0) {
    spdlog::warn("cannot give a fetched file to mount.root_uid/root_gid: {}", std::strerror(errno));
  }
}

void SessionCache::write_manifest(const Session& s, const Manifest& m) {
  write_file_atomically(s.dir / "manifest", encode_manifest(m));
}

}  // namespace cookiefs::mount
