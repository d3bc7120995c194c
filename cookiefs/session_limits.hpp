// SessionLimits: what a session's tree may hold so that every commit of it is
// one the storage service accepts, checked at the syscall that would break
// it (EFBIG, EDQUOT) rather than found out at commit time, when the whole
// session would be refused again and again.
//
// The limits are the stricter of the mount's own (limits.* keys) and those
// the service sent in its last HelloReply (0 there = not sent). Usage is
// counted as the service counts a commit: bytes = sizes of regular files (a
// sparse file at its size, not its blocks) and of symlink targets; entries =
// files, directories and symlinks below the session root.
//
// Usage lives in Session's limit-bookkeeping block and is kept by the FUSE
// handlers. Unknown usage (a session loaded, fetched or adopted since) is
// counted from the tree by count(), under the session's tree_lock held
// exclusive, so no mutation runs beside the walk.
//
// Thread-safety: every method may be called from any thread. from_service()
// runs on the storage client's I/O thread (it only stores atomics). count()
// takes Session::tree_lock exclusive and must be called with no session lock
// held; the other usage methods expect it held shared (a Mutation).
#pragma once

#include <atomic>
#include <cstdint>

#include "cookiefs.pb.h"
#include "mount_config.hpp"

namespace cookiefs::mount {

struct Session;

struct Usage {
  std::int64_t bytes = 0;
  std::int64_t entries = 0;
};

// Bytes and entries of the tree below the directory `dir_fd` (not closed).
// Throws Errno when it cannot be read.
Usage usage_of_tree(int dir_fd);

class SessionLimits {
 public:
  explicit SessionLimits(const MountConfig& cfg);

  // The service's limits, from a HelloReply (each reconnect may bring others).
  void from_service(const wire::HelloReply& reply);

  std::uint64_t max_file_bytes() const { return file_bytes_; }
  std::uint64_t max_session_bytes() const { return session_bytes_; }
  std::uint64_t max_entries() const { return entries_; }

  // Throws Errno(EFBIG) when a file may not reach `size` bytes.
  void check_file_size(std::uint64_t size) const;

  // Counts `s`'s usage from its tree when it is unknown (no lock held).
  void count(Session& s) const;
  // The tree grows by `bytes` and `entries` (either may be negative): throws
  // Errno(EDQUOT), recording nothing, when a growing one would pass its
  // limit. Call it before the syscall and undo() it when the syscall fails.
  void add(Session& s, std::int64_t bytes, std::int64_t entries = 0) const;
  // Takes back an add() (or records a shrink); never throws.
  void undo(Session& s, std::int64_t bytes, std::int64_t entries = 0) const;
  // The tree changed behind the handlers' back (remote adoption): count anew.
  static void forget_usage(Session& s);

 private:
  const std::uint64_t own_file_bytes_, own_session_bytes_, own_entries_;
  std::atomic<std::uint64_t> file_bytes_, session_bytes_, entries_;
};

}  // namespace cookiefs::mount
