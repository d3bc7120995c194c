// SessionLimits; see session_limits.hpp.
#include "session_limits.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <shared_mutex>

#include "session_cache.hpp"

namespace cookiefs::mount {
namespace {

// The stricter of the mount's limit and the service's (0 = not sent).
std::uint64_t stricter(std::uint64_t own, std::uint64_t service) {
  return service == 0 ? own : std::min(own, service);
}

// Adds `delta` to a usage counter unless it is unknown (-1); throws
// Errno(EDQUOT) when a growth would pass `limit`.
void add_to(std::atomic<std::int64_t>& usage, std::int64_t delta, std::uint64_t limit) {
  std::int64_t now = usage.load();
  do {
    if (now < 0 || delta == 0) return;
    if (delta > 0 && static_cast<std::uint64_t>(now + delta) > limit) throw Errno{EDQUOT};
  } while (!usage.compare_exchange_weak(now, std::max<std::int64_t>(0, now + delta)));
}

void walk(int dir_fd, Usage& u) {
  const int fd = ::openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw Errno{errno};
  DIR* dp = ::fdopendir(fd);
  if (!dp) {
    const int err = errno;
    ::close(fd);
    throw Errno{err};
  }
  struct Closer {
    DIR* dp;
    ~Closer() { ::closedir(dp); }
  } closer{dp};
  while (const dirent* d = ::readdir(dp)) {
    if (std::strcmp(d->d_name, ".") == 0 || std::strcmp(d->d_name, "..") == 0) continue;
    struct stat st;
    if (::fstatat(::dirfd(dp), d->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;  // gone
    if (S_ISDIR(st.st_mode)) {
      ++u.entries;
      const int sub =
          ::openat(::dirfd(dp), d->d_name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (sub < 0) continue;
      try {
        walk(sub, u);
      } catch (...) {
        ::close(sub);
        throw;
      }
      ::close(sub);
    } else if (S_ISREG(st.st_mode) || S_ISLNK(st.st_mode)) {
      // A symlink is committed with its target as content (st_size).
      ++u.entries;
      u.bytes += st.st_size;
    }
  }
}

}  // namespace

Usage usage_of_tree(int dir_fd) {
  Usage u;
  walk(dir_fd, u);
  return u;
}

SessionLimits::SessionLimits(const MountConfig& cfg)
    : own_file_bytes_(cfg.max_file_bytes.bytes),
      own_session_bytes_(cfg.max_session_bytes.bytes),
      own_entries_(static_cast<std::uint64_t>(cfg.max_files_per_session)),
      file_bytes_(own_file_bytes_),
      session_bytes_(own_session_bytes_),
      entries_(own_entries_) {}

void SessionLimits::from_service(const wire::HelloReply& r) {
  const std::uint64_t file = stricter(own_file_bytes_, r.max_file_bytes());
  const std::uint64_t session = stricter(own_session_bytes_, r.max_session_bytes());
  const std::uint64_t entries = stricter(own_entries_, r.max_files_per_session());
  bool changed = file_bytes_.exchange(file) != file;
  changed = session_bytes_.exchange(session) != session || changed;
  changed = entries_.exchange(entries) != entries || changed;
  if (changed) {
    spdlog::info(
        "limits (the stricter of this mount's and the storage service's): {} bytes per file, {} "
        "bytes and {} files per session",
        file, session, entries);
  }
}

void SessionLimits::check_file_size(std::uint64_t size) const {
  if (size > file_bytes_) throw Errno{EFBIG};
}

void SessionLimits::count(Session& s) const {
  if (s.usage_bytes >= 0 && s.usage_entries >= 0) return;
  std::unique_lock tree(s.tree_lock);
  if (s.usage_bytes >= 0 && s.usage_entries >= 0) return;
  const int fd = ::open(s.files().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw Errno{errno};
  Usage u;
  try {
    u = usage_of_tree(fd);
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
  s.usage_bytes = u.bytes;
  s.usage_entries = u.entries;
}

void SessionLimits::add(Session& s, std::int64_t bytes, std::int64_t entries) const {
  add_to(s.usage_entries, entries, entries_);
  try {
    add_to(s.usage_bytes, bytes, session_bytes_);
  } catch (...) {
    add_to(s.usage_entries, -entries, entries_);
    throw;
  }
}

void SessionLimits::undo(Session& s, std::int64_t bytes, std::int64_t entries) const {
  // Shrinking never passes a limit: these cannot throw.
  add_to(s.usage_entries, -entries, UINT64_MAX);
  add_to(s.usage_bytes, -bytes, UINT64_MAX);
}

void SessionLimits::forget_usage(Session& s) {
  s.usage_bytes = -1;
  s.usage_entries = -1;
}

}  // namespace cookiefs::mount
