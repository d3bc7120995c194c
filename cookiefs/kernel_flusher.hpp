// KernelFlusher: makes the kernel write dirty pages of this mount back to
// the daemon, from a small child process.
//
// Why a process: waiting for a FUSE write-back is an uninterruptible sleep
// that only the daemon's own reply ends. A daemon thread doing that wait
// makes the daemon unkillable: after kill -9 the other threads are gone, the
// waiting one never returns, /dev/fuse is never closed, and the mount (and
// every application on it) hangs. The child holds no descriptor of the
// connection: when the daemon dies the connection is aborted, the child's
// wait ends with an error, and the child dies too (PR_SET_PDEATHSIG).
//
// The child only makes system calls (no allocation), so it may be forked
// while other threads run.
//
// Thread-safety: write_back() and sync_all() may be called from any thread;
// requests are serialised.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace cookiefs::mount {

class KernelFlusher {
 public:
  KernelFlusher() = default;
  ~KernelFlusher();
  KernelFlusher(const KernelFlusher&) = delete;
  KernelFlusher& operator=(const KernelFlusher&) = delete;

  // Forks the child, which works on the mount at `mountpoint`. Throws
  // std::system_error.
  void start(const std::string& mountpoint);

  // Writes back the dirty pages of these FUSE node ids (inodes of this
  // mount) and waits until the daemon has answered every WRITE. Returns
  // false when the child could not do it (gone, or the mount is not there).
  bool write_back(const std::vector<std::uint64_t>& nodes);
  // syncfs of the whole mount (shutdown).
  bool sync_all();

 private:
  bool request(std::uint32_t op, const std::uint64_t* nodes, std::uint32_t count);

  std::mutex mu_;
  int sock_ = -1;
  pid_t child_ = -1;
};

}  // namespace cookiefs::mount
