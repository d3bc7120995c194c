// The write-back child; see kernel_flusher.hpp.
#include "kernel_flusher.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>

namespace cookiefs::mount {
namespace {

enum : std::uint32_t { kWriteBack = 1, kSyncAll = 2 };

// One request: op, count, then `count` node ids. SOCK_SEQPACKET keeps it one
// message.
constexpr std::uint32_t kMaxNodes = 4096;
struct Request {
  std::uint32_t op;
  std::uint32_t count;
  std::uint64_t nodes[kMaxNodes];
};

constexpr int kChildSocket = 3;

// The kernel's handle of a FUSE inode: node id (high, low word) and
// generation (always 0 here), type FILEID_INO64_GEN.
bool write_back_node(int root, std::uint64_t node) {
  struct {
    file_handle h;
    std::uint32_t raw[3];
  } handle{};
  handle.h.handle_bytes = sizeof handle.raw;
  handle.h.handle_type = 0x81;
  handle.raw[0] = static_cast<std::uint32_t>(node >> 32);
  handle.raw[1] = static_cast<std::uint32_t>(node);
  const int fd = ::open_by_handle_at(root, &handle.h, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  // Not in the kernel's inode cache (then nothing of it is dirty), a symlink
  // or gone: nothing to write back. EPERM: no CAP_DAC_READ_SEARCH.
  if (fd < 0) return errno != EPERM && errno != ENOSYS;
  const bool ok = ::sync_file_range(fd, 0, 0,
                                    SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                        SYNC_FILE_RANGE_WAIT_AFTER) == 0 ||
                  errno == ESPIPE;
  ::close(fd);
  return ok;
}

[[noreturn]] void child_main(const char* mountpoint) {
  static Request req;
  // Opening the root costs an OPENDIR and a RELEASEDIR: it stays open while
  // requests keep coming (commits of a busy session come every few ms) and
  // is closed after kIdleMs without one, so an idle mount is not kept busy
  // for umount.
  constexpr int kIdleMs = 200;
  int root = -1;
  for (;;) {
    if (root >= 0) {
      pollfd p{kChildSocket, POLLIN, 0};
      if (::poll(&p, 1, kIdleMs) == 0) {
        ::close(root);
        root = -1;
        continue;
      }
    }
    const ssize_t n = ::recv(kChildSocket, &req, sizeof req, 0);
    if (n <= 0) ::_exit(0);  // the daemon is gone
    bool ok = true;
    if (root < 0) root = ::open(mountpoint, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root < 0) {
      ok = false;
    } else if (req.op == kSyncAll) {
      ok = ::syncfs(root) == 0;
      ::close(root);  // the stop: the mount must not stay busy
      root = -1;
    } else {
      const std::uint32_t count = std::min(req.count, kMaxNodes);
      for (std::uint32_t i = 0; i < count; ++i) ok = write_back_node(root, req.nodes[i]) && ok;
    }
    const char answer = ok ? 1 : 0;
    if (::send(kChildSocket, &answer, 1, MSG_NOSIGNAL) != 1) ::_exit(0);
  }
}

}  // namespace

KernelFlusher::~KernelFlusher() {
  if (sock_ >= 0) ::close(sock_);  // the child reads EOF and exits
  if (child_ > 0) ::waitpid(child_, nullptr, 0);
}

void KernelFlusher::start(const std::string& mountpoint) {
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
    throw std::system_error(errno, std::generic_category(), "socketpair");
  }
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int err = errno;
    ::close(pair[0]);
    ::close(pair[1]);
    throw std::system_error(err, std::generic_category(), "fork");
  }
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() == 1) ::_exit(0);  // the daemon died before prctl
    // Only the request socket: above all not /dev/fuse, whose last close is
    // what frees a wait on a dead daemon.
    ::dup2(pair[1], kChildSocket);
    ::close_range(kChildSocket + 1, ~0U, 0);
    for (int fd = 0; fd < kChildSocket; ++fd) {
      const int null = ::open("/dev/null", O_RDWR);
      if (null >= 0 && null != fd) {
        ::dup2(null, fd);
        ::close(null);
      }
    }
    child_main(mountpoint.c_str());
  }
  ::close(pair[1]);
  sock_ = pair[0];
  child_ = pid;
}

bool KernelFlusher::request(std::uint32_t op, const std::uint64_t* nodes, std::uint32_t count) {
  static_assert(sizeof(Request) <= 64 * 1024);
  std::lock_guard lock(mu_);
  if (sock_ < 0) return false;
  std::vector<std::uint64_t> msg(2 + count);
  const std::uint32_t head[2] = {op, count};
  std::memcpy(msg.data(), head, sizeof head);
  std::copy(nodes, nodes + count, msg.begin() + 1);
  const std::size_t bytes = sizeof head + count * sizeof(std::uint64_t);
  if (::send(sock_, msg.data(), bytes, MSG_NOSIGNAL) != static_cast<ssize_t>(bytes)) return false;
  char answer = 0;
  return ::recv(sock_, &answer, 1, 0) == 1 && answer == 1;
}

bool KernelFlusher::write_back(const std::vector<std::uint64_t>& nodes) {
  bool ok = true;
  for (std::size_t i = 0; i < nodes.size(); i += kMaxNodes) {
    const auto count =
        static_cast<std::uint32_t>(std::min<std::size_t>(kMaxNodes, nodes.size() - i));
    ok = request(kWriteBack, nodes.data() + i, count) && ok;
  }
  return ok;
}

bool KernelFlusher::sync_all() {
  return request(kSyncAll, nullptr, 0);
}

}  // namespace cookiefs::mount
