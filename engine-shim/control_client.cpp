// ControlClient implementation; see control_client.hpp.
#include "control_client.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "frame.hpp"

namespace cookiefs {

ControlClient::~ControlClient() {
  if (fd_ >= 0) ::close(fd_);
}

void ControlClient::connect() {
  sockaddr_un addr{};
  if (path_.size() >= sizeof(addr.sun_path))
    throw std::runtime_error("control socket path too long");
  fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0) {
    const int err = errno;
    ::close(fd_);
    fd_ = -1;
    throw std::runtime_error("cannot reach cookiefs control socket " + path_ + ": " +
                             std::strerror(err));
  }
}

wire::Envelope ControlClient::call(wire::Envelope request, std::chrono::milliseconds timeout) {
  if (fd_ < 0) connect();
  const std::uint64_t id = next_id_++;
  request.set_request_id(id);
  const std::string frame = encode_frame(request);
  std::size_t off = 0;
  while (off < frame.size()) {
    const ssize_t n = ::send(fd_, frame.data() + off, frame.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw std::runtime_error("control socket closed while sending");
    off += static_cast<std::size_t>(n);
  }
  FrameDecoder decoder(1 << 20);
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  char buf[8192];
  for (;;) {
    if (auto env = decoder.next()) {
      if (env->request_id() == id || env->has_error()) return *env;
      continue;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) throw std::runtime_error("timed out waiting for cookiefs");
    pollfd p{fd_, POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) continue;
    const ssize_t n = ::recv(fd_, buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw std::runtime_error("cookiefs closed the control connection");
    decoder.feed(std::string_view(buf, static_cast<std::size_t>(n)));
  }
}

}  // namespace cookiefs
