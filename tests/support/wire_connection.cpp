// WireConnection; see wire_connection.hpp.
#include "wire_connection.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <stdexcept>
#include <system_error>

namespace cookiefs::test {

WireConnection::WireConnection(std::uint16_t port, const std::string& host) : decoder_(1ull << 31) {
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) throw std::system_error(errno, std::generic_category(), "socket");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  ::inet_pton(AF_INET, host.c_str(), &a.sin_addr);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    const int e = errno;
    ::close(fd_);
    throw std::system_error(e, std::generic_category(), "connect");
  }
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

WireConnection::~WireConnection() {
  if (fd_ >= 0) ::close(fd_);
}

void WireConnection::send_raw(const std::string& bytes) {
  std::size_t off = 0;
  while (off < bytes.size()) {
    const ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw std::system_error(errno, std::generic_category(), "send");
    }
    off += static_cast<std::size_t>(n);
  }
}

std::optional<wire::Envelope> WireConnection::read_envelope(
    std::chrono::steady_clock::time_point deadline) {
  for (;;) {
    if (auto env = decoder_.next()) return env;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    pollfd p{fd_, POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return std::nullopt;
    char buf[65536];
    const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw std::runtime_error("connection closed by the server");
    decoder_.feed(std::string_view(buf, static_cast<std::size_t>(n)));
  }
}

wire::Envelope WireConnection::hello(const std::string& namespace_name,
                                     const std::string& engine_id, const std::string& token) {
  wire::Envelope req;
  auto* h = req.mutable_hello();
  h->set_protocol_version(wire::PROTOCOL_VERSION_CURRENT);
  h->set_namespace_name(namespace_name);
  h->set_engine_id(engine_id);
  h->set_token(token);
  h->set_client_name("cookiefs-test");
  return call(std::move(req));
}

wire::Envelope WireConnection::call(wire::Envelope request, std::chrono::milliseconds timeout) {
  const std::uint64_t id = next_id_++;
  request.set_request_id(id);
  send_raw(encode_frame(request, 1ull << 31));
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto env = read_envelope(deadline);
    if (!env) throw std::runtime_error("no reply within the timeout");
    if (env->has_event()) {
      events_.push_back(env->event());
      continue;
    }
    if (env->request_id() == id) return std::move(*env);
  }
}

std::optional<wire::Event> WireConnection::next_event(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (events_.empty()) {
    auto env = read_envelope(deadline);
    if (!env) return std::nullopt;
    if (env->has_event()) events_.push_back(env->event());
  }
  wire::Event ev = std::move(events_.front());
  events_.pop_front();
  return ev;
}

bool WireConnection::closed_by_peer(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd_, POLLIN, 0};
    const int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    char buf[65536];
    const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) return true;
  }
}

}  // namespace cookiefs::test
