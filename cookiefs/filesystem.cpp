// Shared pieces of the FUSE handlers; see filesystem.hpp.
#include "filesystem.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/limits.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <system_error>
#include <thread>

#include "names.hpp"

#include "status_files.hpp"

namespace cookiefs::mount {

namespace {

// The process umask without changing it (umask() can only be read by
// setting it, which would race with other threads' creations).
mode_t process_umask() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.starts_with("Umask:"))
      return static_cast<mode_t>(std::stoul(line.substr(6), nullptr, 8));
  }
  return 022;
}

}  // namespace

Filesystem::Filesystem(const MountConfig& c, SessionCache& s, StorageClient& cl, Metrics* m)
    : cfg(c),
      inodes(StatusFiles::names()),
      sessions(s),
      client(cl),
      metrics(m),
      limits(c),
      daemon_umask(process_umask()),
      writeback(c.writeback_cache) {}

bool Filesystem::flush_kernel_pages(Session& s) {
  if (!writeback || !se || !serving) return true;
  if (!flusher) return false;
  // Directories have no pages, and opening one costs an OPENDIR.
  const auto ids = inodes.of_session(&s, true);
  return flusher->write_back(std::vector<std::uint64_t>(ids.begin(), ids.end()));
}

void Filesystem::background(std::function<void()> work) {
  {
    std::lock_guard lock(background_mu_);
    ++background_jobs_;
  }
  std::thread([this, work = std::move(work)] {
    work();
    std::lock_guard lock(background_mu_);
    if (--background_jobs_ == 0) background_cv_.notify_all();
  }).detach();
}

void Filesystem::wait_background() {
  std::unique_lock lock(background_mu_);
  background_cv_.wait(lock, [&] { return background_jobs_ == 0; });
}

void reply_when_synced(fuse_req_t req, Op op, Inode& i) {
  Filesystem& fs = fs_of(req);
  if (!i.session) return void(fuse_reply_err(req, 0));
  auto reply = [req, op, &fs, session = i.session] {
    int err = 0;
    try {
      fs.sessions.sync(*session);
    } catch (const Errno& e) {
      err = e.code;
    } catch (const std::exception& e) {
      err = unexpected_errno(op, e);
    }
    fuse_reply_err(req, err);
  };
  if (fs.writeback) return fs.background(std::move(reply));
  reply();
}

int unexpected_errno(Op op, const std::exception& e) {
  if (const auto* sys = dynamic_cast<const std::system_error*>(&e)) {
    const std::error_condition c = sys->code().default_error_condition();
    if (c.category() == std::generic_category() && (c.value() == ENOSPC || c.value() == EDQUOT)) {
      spdlog::debug("{}: the cache dir is full: {}", op_name(op), e.what());
      return c.value();
    }
  }
  spdlog::error("{}: unexpected failure answered EIO: {}", op_name(op), e.what());
  return EIO;
}

void kernel_times(const Filesystem& fs, struct stat& st) {
  if (!fs.writeback) return;
  st.st_atim.tv_nsec = st.st_mtim.tv_nsec = st.st_ctim.tv_nsec = 0;
}

struct stat stat_of(Filesystem& fs, Inode& i) {
  struct stat st {};
  if (i.is_real()) {
    check(::fstatat(i.fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW));
    kernel_times(fs, st);
    // Unlinked but kept as a spare: linked only in the spare dir.
    if (i.unlinked) st.st_nlink = 0;
    return st;
  }
  st.st_ino = i.ino | (1ull << 62);  // clear of backing inode numbers
  st.st_uid = ::getuid();
  st.st_gid = ::getgid();
  if (i.kind == NodeKind::status_file) {
    st.st_mode = S_IFREG | 0444;
    st.st_nlink = 1;
    // Write-through: generated on open and served direct_io; writeback:
    // rendered at lookup into a transient inode.
    st.st_size = static_cast<off_t>(i.status_text.size());
  } else if (i.kind == NodeKind::root) {
    if (fs.cfg.root_uid >= 0) st.st_uid = static_cast<uid_t>(fs.cfg.root_uid);
    if (fs.cfg.root_gid >= 0) st.st_gid = static_cast<gid_t>(fs.cfg.root_gid);
    st.st_mode = S_IFDIR | mode_bits("mount.root_mode", fs.cfg.root_mode);
    st.st_nlink = 2;
  } else {
    st.st_mode = S_IFDIR | 0555;
    st.st_nlink = 2;
  }
  return st;
}

static double seconds(std::chrono::milliseconds ms) {
  return ms.count() / 1000.0;
}

void reply_real_entry(fuse_req_t req, Filesystem& fs, int fd, NodeKind kind,
                      std::shared_ptr<Session> session, int depth, int io) {
  struct stat st;
  if (::fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) {
    const int err = errno;
    ::close(fd);
    if (io >= 0) ::close(io);
    throw Errno{err};
  }
  Inode& i = fs.inodes.remember(fd, st, kind, std::move(session), depth);
  fuse_entry_param e{};
  e.ino = InodeTable::node_id(i);
  kernel_times(fs, st);
  e.attr = st;
  e.attr_timeout = seconds(fs.cfg.attr_timeout);
  e.entry_timeout = seconds(fs.cfg.entry_timeout);
  if (io >= 0) {
    int none = -1;  // before the reply: a FORGET may follow it at once
    if (!i.io_fd.compare_exchange_strong(none, io)) ::close(io);
  }
  if (fuse_reply_entry(req, &e) == -ENOENT) {
    fs.inodes.forget(e.ino, 1);  // interrupted: the kernel never saw the lookup
  }
}

void reply_virtual_entry(fuse_req_t req, Filesystem& fs, Inode& i) {
  fuse_entry_param e{};
  e.ino = fs.inodes.id_of(i);
  e.attr = stat_of(fs, i);
  if (!i.transient) {  // a transient status inode is looked up anew each time
    e.attr_timeout = seconds(fs.cfg.attr_timeout);
    e.entry_timeout = seconds(fs.cfg.entry_timeout);
  }
  if (fuse_reply_entry(req, &e) == -ENOENT && i.transient) fs.inodes.forget(e.ino, 1);
}

void reply_negative(fuse_req_t req, Filesystem& fs) {
  fuse_entry_param e{};
  e.ino = 0;  // cached by the kernel as "does not exist" for entry_timeout
  e.entry_timeout = seconds(fs.cfg.negative_timeout);
  fuse_reply_entry(req, &e);
}

void reply_negative_session(fuse_req_t req, Filesystem& fs) {
  fuse_entry_param e{};
  e.ino = 0;
  e.entry_timeout = seconds(fs.cfg.negative_session_timeout);
  fuse_reply_entry(req, &e);
}

Inode& writable_dir(Filesystem& fs, fuse_ino_t parent) {
  Inode& p = fs.inodes.get(parent);
  if (p.kind == NodeKind::root) throw Errno{EPERM};  // the root holds sessions only
  if (!p.is_real()) throw Errno{EACCES};             // .cookiefs is read-only
  return p;
}

std::optional<std::string> relative_path(const Inode& i) {
  if (!i.is_real() || !i.session) return std::nullopt;
  char buf[PATH_MAX + 1];
  const ssize_t n = ::readlink(i.proc_path().c_str(), buf, sizeof buf - 1);
  if (n < 0) return std::nullopt;
  const std::string real(buf, static_cast<std::size_t>(n));
  // The session's dir is canonical (SessionCache::open), like the kernel's answer.
  const std::string base = i.session->files().string();
  if (real == base) return std::string();
  if (real.size() <= base.size() + 1 || real.compare(0, base.size(), base) != 0 ||
      real[base.size()] != '/') {
    return std::nullopt;  // unlinked (" (deleted)") or not below the session
  }
  return real.substr(base.size() + 1);
}

SubtreeExtent subtree_extent(int dirfd, const char* name) {
  SubtreeExtent out;
  const int fd = ::openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return out;  // not a directory (or gone: renameat2 reports that)
  DIR* dp = ::fdopendir(fd);
  if (!dp) {
    ::close(fd);
    return out;
  }
  while (const struct dirent* d = ::readdir(dp)) {
    if (std::strcmp(d->d_name, ".") == 0 || std::strcmp(d->d_name, "..") == 0) continue;
    SubtreeExtent child;
    if (d->d_type == DT_DIR || d->d_type == DT_UNKNOWN)
      child = subtree_extent(::dirfd(dp), d->d_name);
    out.length = std::max(out.length, 1 + std::strlen(d->d_name) + child.length);
    out.depth = std::max(out.depth, 1 + child.depth);
  }
  ::closedir(dp);
  return out;
}

void restore_mode(const Filesystem& fs, int fd, int dirfd, const char* name, mode_t mode) {
  mode &= kModeBits;
  // Nothing taken (SQLite's 0644 under 022): no syscall.
  if ((mode & fs.daemon_umask) == 0) return;
  check(fd >= 0 ? ::fchmod(fd, mode) : ::fchmodat(dirfd, name, mode, 0));
}

void give_to_caller(fuse_req_t req, int dirfd, const char* name) {
  // Only root creates files for others; otherwise they are the caller's anyway.
  if (::geteuid() != 0) return;
  const fuse_ctx* ctx = fuse_req_ctx(req);
  if (ctx->uid == 0 && ctx->gid == 0) return;
  check(::fchownat(dirfd, name, ctx->uid, ctx->gid, AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH));
}

void check_new_name(Filesystem& fs, const Inode& parent, const char* name, SubtreeExtent below) {
  const std::size_t n = std::strlen(name);
  if (n > kMaxNameLength) throw Errno{ENAMETOOLONG};
  if (n == 0 || std::strcmp(name, ".") == 0 || std::strcmp(name, "..") == 0) throw Errno{EINVAL};
  int depth = parent.depth;
  std::size_t length = n;
  if (const auto rel = relative_path(parent)) {
    // Inode::depth was right when looked up; a rename of an ancestor since
    // then moved it, the path is what counts (and what a commit must carry).
    depth = rel->empty() ? 0 : 1 + static_cast<int>(std::count(rel->begin(), rel->end(), '/'));
    if (!rel->empty()) length += rel->size() + 1;
  }
  if (depth + 1 + below.depth > fs.cfg.max_depth) throw Errno{ENAMETOOLONG};
  if (length + below.length > kMaxPathLength) throw Errno{ENAMETOOLONG};
}

}  // namespace cookiefs::mount
