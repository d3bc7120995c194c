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
constexpr std::uint32_t kInitExt = 1u << 30;  // FUSE_INIT_EXT: flags2 is valid
// fuse_in_header: len u32, opcode u32, unique u64, ...; fuse_out_header:
// len u32, error i32, unique u64. fuse_init_in / fuse_init_out: major u32,
// minor u32, max_readahead u32, flags u32; fuse_init_in then flags2 u32.
constexpr std::size_t kInHeader = 40, kOutHeader = 16, kInitFlags = 12, kInitInFlags2 = 16;

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
  if (n > 0) {
    if (const auto init = init_request(buf, static_cast<std::size_t>(n))) {
      offered_flags = init->flags;
      init_unique = init->unique;
    }
  }
  return n;
}

ssize_t writev_hook(int fd, iovec* iov, int count, void*) {
  const std::uint64_t init = init_unique.load();
  if (init == 0 || count != 2 || iov[0].iov_len < kOutHeader ||
      load<std::uint64_t>(iov[0].iov_base, 8) != init) {
    return ::writev(fd, iov, count);
  }
  init_unique = 0;
  std::vector<char> arg = init_reply_arg(iov[1], offered_flags);
  if (arg.empty()) return ::writev(fd, iov, count);
  iovec out[2] = {iov[0], {arg.data(), arg.size()}};
  return ::writev(fd, out, 2);
}

}  // namespace

std::uint32_t patch_init_flags(std::uint32_t reply_flags, std::uint32_t offered) {
  return reply_flags | (offered & kInitHandleKillpriv);
}

std::optional<InitRequest> init_request(const void* buf, std::size_t n) {
  if (n < kInHeader + kInitFlags + 4 || load<std::uint32_t>(buf, 4) != kOpInit) {
    return std::nullopt;
  }
  InitRequest r;
  r.unique = load<std::uint64_t>(buf, 8);
  r.flags = load<std::uint32_t>(buf, kInHeader + kInitFlags);
  if ((r.flags & kInitExt) && n >= kInHeader + kInitInFlags2 + 4) {
    r.flags2 = load<std::uint32_t>(buf, kInHeader + kInitInFlags2);
  }
  return r;
}

std::vector<char> init_reply_arg(const iovec& arg, std::uint32_t offered) {
  if (arg.iov_len < kInitFlags + 4) return {};
  std::vector<char> out(static_cast<char*>(arg.iov_base),
                        static_cast<char*>(arg.iov_base) + arg.iov_len);
  const std::uint32_t flags =
      patch_init_flags(load<std::uint32_t>(out.data(), kInitFlags), offered);
  std::memcpy(out.data() + kInitFlags, &flags, sizeof flags);
  return out;
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
