// Filesystem: what every FUSE handler shares (config, inode table, session
// cache, metrics), the single boundary where errors become -errno replies,
// and the per-session mutation guard that makes snapshots consistent.
//
// Handler rules: each handler runs its body through serve(); the body either
// ends in exactly one fuse_reply_* or throws Errno (or another exception,
// answered EIO and logged) before replying.
//
// Thread-safety: handlers run concurrently on libfuse's worker threads; the
// shared members are themselves thread-safe.
#pragma once

#include <dirent.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <utility>
#include <vector>

#include "inode_table.hpp"
#include "kernel_flusher.hpp"
#include "metrics.hpp"
#include "mount_config.hpp"
#include "session_cache.hpp"
#include "session_limits.hpp"
#include "spare_files.hpp"

namespace cookiefs::mount {

class StatusFiles;

// One open directory: a real one read from its cache dir, or a listing
// computed at opendir for the virtual root and .cookiefs.
struct DirHandle {
  ~DirHandle() {
    if (dp) ::closedir(dp);
  }
  DIR* dp = nullptr;
  off_t offset = 0;
  std::vector<std::pair<std::string, mode_t>> names;
};

// The open directory handles. Owned here rather than by the kernel's
// RELEASEDIR alone: a stop cuts the connection with releases still queued
// (the write-back helper's last close of the mount root), and those handles
// are freed with the filesystem.
class DirHandles {
 public:
  void keep(std::unique_ptr<DirHandle> h) {
    std::lock_guard lock(mu_);
    DirHandle* key = h.get();
    open_.emplace(key, std::move(h));
  }
  void drop(DirHandle* h) {
    std::unique_ptr<DirHandle> dead;  // closed after the lock is dropped
    std::lock_guard lock(mu_);
    if (auto it = open_.find(h); it != open_.end()) {
      dead = std::move(it->second);
      open_.erase(it);
    }
  }

 private:
  std::mutex mu_;
  std::map<DirHandle*, std::unique_ptr<DirHandle>> open_;
};

struct Filesystem {
  Filesystem(const MountConfig& c, SessionCache& s, StorageClient& cl, Metrics* m);
  const MountConfig& cfg;
  InodeTable inodes;
  SessionCache& sessions;
  StorageClient& client;
  Metrics* metrics;  // may be null (tests)
  fuse_session* se = nullptr;
  DirHandles dirs;
  SpareFiles spares;  // opened by main (the daemon); without, plain unlink/create
  // What a session may hold (the stricter of ours and the service's).
  SessionLimits limits;
  // The daemon's own umask, read at construction. New entries get the mode
  // the kernel sent (the caller's umask already applied), not this on top.
  const mode_t daemon_umask;
  // fuse.writeback_cache: the kernel caches writes and attributes, there are
  // no per-open handles (open and flush answer ENOSYS once), and a snapshot
  // first forces the session's dirty pages back (flush_kernel_pages).
  const bool writeback;
  // While the FUSE loop runs (flush_kernel_pages would wait forever after).
  std::atomic<bool> serving{false};
  // WRITE requests served so far (the stop waits until they settle).
  std::atomic<std::uint64_t> writes_served{0};

  // Makes the kernel write back every dirty page of `s`'s files and waits
  // for it (KernelFlusher: open_by_handle_at + sync_file_range through the
  // mount in a child process, so no request but the WRITEs themselves).
  // Call with no session lock held: the WRITEs are served by the workers.
  // Returns false when that could not be done.
  bool flush_kernel_pages(Session& s);
  KernelFlusher* flusher = nullptr;  // set before the loop runs (writeback)

  // Runs `work` on a thread of its own (replies that wait for a commit).
  void background(std::function<void()> work);
  // Waits until every background() job has ended (shutdown).
  void wait_background();

 private:
  std::mutex background_mu_;
  std::condition_variable background_cv_;
  int background_jobs_ = 0;
};

inline Filesystem& fs_of(fuse_req_t req) {
  return *static_cast<Filesystem*>(fuse_req_userdata(req));
}

// The errno for a failure other than Errno (the single place that decides):
// a full cache dir (ENOSPC, EDQUOT from a std::system_error, which
// std::filesystem throws) is said as such; anything else is logged and EIO.
int unexpected_errno(Op op, const std::exception& e);

template <class Body>
void serve(fuse_req_t req, Op op, Body&& body) {
  Filesystem& fs = fs_of(req);  // req is gone once replied
  const auto start = std::chrono::steady_clock::now();
  if (fs.metrics) fs.metrics->arrived(op);
  int err = 0;
  try {
    body();
  } catch (const Errno& e) {
    err = e.code;
  } catch (const std::exception& e) {
    err = unexpected_errno(op, e);
  }
  if (err) fuse_reply_err(req, err);
  if (fs.metrics) fs.metrics->answered(op, std::chrono::steady_clock::now() - start, err);
}

// Throws Errno(errno) when rc < 0.
inline int check(int rc) {
  if (rc < 0) throw Errno{errno};
  return rc;
}

// Held by a request that changes a session's tree: shared session lock for
// its syscalls, then (only if done() was called) a change noted for commit.
class Mutation {
 public:
  // Throws Errno(EROFS) when this mount may not write the session (not its
  // owner, or drained for a hand-off). The claim of an unowned session
  // (affinity: auto) happens before the lock: it waits for the service.
  // Counts the session's usage first when unknown (SessionLimits::count).
  Mutation(Filesystem& fs, Session& s) : fs_(fs), s_(s), lock_(s.tree_lock, std::defer_lock) {
    fs.sessions.ensure_writable(s);
    fs.limits.count(s);
    lock_.lock();
    // A drain may have retired the session between the check and the lock.
    if (fs.sessions.access(s) != Access::writable) throw Errno{EROFS};
  }
  ~Mutation() = default;
  Mutation(const Mutation&) = delete;
  Mutation& operator=(const Mutation&) = delete;
  // Counts the change at once, still under the shared lock and before the
  // handler replies: an fsync the application sends right after this
  // request returns must wait for a snapshot that includes it (a journal
  // truncate noted only after the reply was acknowledged by an fsync that
  // did not cover it, and the committed db rolled back).
  void done() {
    if (!done_) fs_.sessions.note_change(s_);
    done_ = true;
  }

 private:
  Filesystem& fs_;
  Session& s_;
  std::shared_lock<std::shared_mutex> lock_;
  bool done_ = false;
};

// fsync/fsyncdir: replies once PostgreSQL has every change of `i`'s session
// made so far (at once outside sessions). With the writeback cache the wait
// runs on a background thread: the commit first forces dirty pages back,
// and those WRITEs need the workers this request would otherwise hold.
void reply_when_synced(fuse_req_t req, Op op, Inode& i);

// Writeback cache: times at the one-second granularity the kernel keeps
// (op_init sets time_gran). A time with nanoseconds never equals the kernel's
// truncated clock, so each write would dirty the inode and cost a SETATTR.
void kernel_times(const Filesystem& fs, struct stat& st);

// Attributes of any inode. Throws Errno.
struct stat stat_of(Filesystem& fs, Inode& i);
// Replies with the entry of a real inode just opened as `fd` (O_PATH).
// `io`, when given, is a read-write descriptor of the same file for Inode::io
// (taken over).
void reply_real_entry(fuse_req_t req, Filesystem& fs, int fd, NodeKind kind,
                      std::shared_ptr<Session> session, int depth, int io = -1);
void reply_virtual_entry(fuse_req_t req, Filesystem& fs, Inode& i);
void reply_negative(fuse_req_t req, Filesystem& fs);
// A missing session id at the root (cache.negative_session_timeout).
void reply_negative_session(fuse_req_t req, Filesystem& fs);

// A real inode whose tree may be changed (not the root, not .cookiefs).
Inode& writable_dir(Filesystem& fs, fuse_ino_t parent);
// How far a moved directory's subtree reaches below it: the longest
// "/child/..." suffix in bytes and the most components (0, 0 for a file).
struct SubtreeExtent {
  std::size_t length = 0;
  int depth = 0;
};
SubtreeExtent subtree_extent(int dirfd, const char* name);

// Session-relative path of a real inode ("" for a session root), read back
// from its O_PATH descriptor so it follows renames. nullopt for virtual
// inodes and for inodes whose backing file is gone.
std::optional<std::string> relative_path(const Inode& i);

// Checks a new name under `parent`: length of the name and of the whole
// session-relative path (names.hpp limits), reserved names, depth. `below`
// is the extent of a directory moved there (rename).
void check_new_name(Filesystem& fs, const Inode& parent, const char* name,
                    SubtreeExtent below = {});

// A new entry just created as asked with `mode` (the kernel applied the
// caller's umask): puts back the bits the daemon's own umask took. `fd` is
// the new file's descriptor, or -1 to change `name` under `dirfd`.
void restore_mode(const Filesystem& fs, int fd, int dirfd, const char* name, mode_t mode);

// A new entry `name` under `dirfd` ("" with dirfd itself) becomes the
// requesting user's, as on any filesystem (the daemon may run as root).
void give_to_caller(fuse_req_t req, int dirfd, const char* name);

void add_entry_ops(fuse_lowlevel_ops& ops);
void add_file_ops(fuse_lowlevel_ops& ops);
void add_dir_ops(fuse_lowlevel_ops& ops);
void add_xattr_ops(fuse_lowlevel_ops& ops);

}  // namespace cookiefs::mount
