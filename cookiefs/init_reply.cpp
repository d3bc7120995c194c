// See init_reply.hpp.
#include "init_reply.hpp"

#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace cookiefs {
namespace {

constexpr std::uint32_t kOpInit = 26;
// fuse_in_header: len u32, opcode u32, unique u64, ...; fuse_out_header:
// len u32, error i32, unique u64. fuse_init_in / fuse_init_out: major u32,
// minor u32, max_readahead u32, flags u32.
constexpr std::size_t kInHeader = 40, kOutHeader = 16, kInitFlags = 12;

std::atomic<std::uint64_t> init_unique{0};
std::atomic<std::uint32_t> offered_flags{0};

template <class T>
T load(const void* base, std::size_t off) {
  T v;
  std::memcpy(&v, static_cast<const char*>(base) + off, sizeof v);
  return v;
}

ssize_t read_hook(int fd, void* buf, size_t len, void*) {
  const ssize_t n = ::read(fd, buf, len);
  if (n >= static_cast<ssize_t>(kInHeader + kInitFlags + 4) &&
      load<std::uint32_t>(buf, 4) == kOpInit) {
    offered_flags = load<std::uint32_t>(buf, kInHeader + kInitFlags);
    init_unique = load<std::uint64_t>(buf, 8);
  }
  return n;
}

ssize_t writev_hook(int fd, iovec* iov, int count, void*) {
  const std::uint64_t init = init_unique.load();
  if (init == 0 || count != 2 || iov[0].iov_len < kOutHeader || iov[1].iov_len < kInitFlags + 4 ||
      load<std::uint64_t>(iov[0].iov_base, 8) != init) {
    return ::writev(fd, iov, count);
  }
  init_unique = 0;
  std::vector<char> arg(static_cast<char*>(iov[1].iov_base),
                        static_cast<char*>(iov[1].iov_base) + iov[1].iov_len);
  const std::uint32_t flags =
      patch_init_flags(load<std::uint32_t>(arg.data(), kInitFlags), offered_flags);
  std::memcpy(arg.data() + kInitFlags, &flags, sizeof flags);
  iovec out[2] = {iov[0], {arg.data(), arg.size()}};
  return ::writev(fd, out, 2);
}

}  // namespace

std::uint32_t patch_init_flags(std::uint32_t reply_flags, std::uint32_t offered) {
  return reply_flags | (offered & kInitHandleKillpriv);
}

void install_init_reply_patch(fuse_session* se) {
  fuse_custom_io io{};
  io.read = &read_hook;
  io.writev = &writev_hook;
  if (const int rc = fuse_session_custom_io(se, &io, fuse_session_fd(se)); rc != 0) {
    throw std::runtime_error(std::string("libfuse refused custom I/O: ") + std::strerror(-rc));
  }
}

}  // namespace cookiefs
