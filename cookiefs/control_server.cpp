// ControlServer implementation; see control_server.hpp.
#include "control_server.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <spdlog/spdlog.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <system_error>

#include "frame.hpp"

namespace cookiefs {
namespace {

constexpr std::uint64_t kMaxControlFrame = 1 << 20;

wire::Envelope error_reply(wire::ErrorCode code, const std::string& msg) {
  wire::Envelope env;
  env.mutable_error()->set_code(code);
  env.mutable_error()->set_message(msg);
  return env;
}

bool write_all(int fd, const std::string& data) {
  std::size_t off = 0;
  while (off < data.size()) {
    const ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    off += static_cast<std::size_t>(n);
  }
  return true;
}

}  // namespace

ControlServer::ControlServer(std::string path, unsigned mode, ControlHandlers handlers)
    : path_(std::move(path)), mode_(mode), handlers_(std::move(handlers)) {}

ControlServer::~ControlServer() {
  stop();
}

void ControlServer::start() {
  sockaddr_un addr{};
  if (path_.size() >= sizeof(addr.sun_path)) {
    throw std::system_error(ENAMETOOLONG, std::generic_category(),
                            "control socket path too long: " + path_);
  }
  listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) throw std::system_error(errno, std::generic_category(), "socket");
  ::unlink(path_.c_str());  // a stale socket from a crashed instance
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path_.c_str(), path_.size() + 1);
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0) {
    const int err = errno;
    ::close(listen_fd_);
    listen_fd_ = -1;
    throw std::system_error(err, std::generic_category(), "bind control socket " + path_);
  }
  // Nobody can connect before listen(), so tightening the mode here is race-free.
  if (::chmod(path_.c_str(), mode_) < 0 || ::listen(listen_fd_, 16) < 0) {
    const int err = errno;
    ::close(listen_fd_);
    listen_fd_ = -1;
    throw std::system_error(err, std::generic_category(), "listen on control socket " + path_);
  }
  acceptor_ = std::thread([this] { accept_loop(); });
}

void ControlServer::stop() {
  if (stopping_.exchange(true)) return;
  if (listen_fd_ >= 0) ::shutdown(listen_fd_, SHUT_RDWR);
  if (acceptor_.joinable()) acceptor_.join();
  if (listen_fd_ >= 0) {
    ::close(listen_fd_);
    ::unlink(path_.c_str());
    listen_fd_ = -1;
  }
  std::list<std::pair<int, std::thread>> conns;
  {
    std::lock_guard lk(mu_);
    for (auto& c : conns_) ::shutdown(c.first, SHUT_RDWR);
    conns.swap(conns_);
  }
  for (auto& c : conns) c.second.join();
}

bool ControlServer::peer_allowed(int fd) const {
  ucred cred{};
  socklen_t len = sizeof(cred);
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) return false;
  if (cred.uid == 0 || cred.uid == ::geteuid()) return true;
  return std::find(allowed_uids_.begin(), allowed_uids_.end(), cred.uid) != allowed_uids_.end();
}

void ControlServer::accept_loop() {
  while (!stopping_) {
    pollfd p{listen_fd_, POLLIN, 0};
    const int r = ::poll(&p, 1, 500);
    if (r <= 0 || stopping_) continue;
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    if (!peer_allowed(fd)) {
      spdlog::warn("control socket: refused a peer whose uid is not allowed");
      write_all(fd, encode_frame(error_reply(wire::UNAUTHENTICATED, "peer uid not allowed")));
      ::close(fd);
      continue;
    }
    std::lock_guard lk(mu_);
    // Reap finished connection threads so the list stays short.
    for (auto it = conns_.begin(); it != conns_.end();) {
      if (it->first < 0) {
        it->second.join();
        it = conns_.erase(it);
      } else {
        ++it;
      }
    }
    conns_.emplace_back(fd, std::thread());
    auto& slot = conns_.back();
    slot.second = std::thread([this, fd, &slot] {
      serve(fd);
      std::lock_guard lk2(mu_);
      ::close(fd);
      slot.first = -1;
    });
  }
}

void ControlServer::serve(int fd) {
  FrameDecoder decoder(kMaxControlFrame);
  char buf[8192];
  while (!stopping_) {
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    try {
      decoder.feed(std::string_view(buf, static_cast<std::size_t>(n)));
      while (auto req = decoder.next()) {
        wire::Envelope reply;
        try {
          switch (req->body_case()) {
            case wire::Envelope::kFlush:
              reply = handlers_.flush(req->flush());
              break;
            case wire::Envelope::kRelease:
              reply = handlers_.release(req->release());
              break;
            case wire::Envelope::kStatusRequest:
              reply = handlers_.status(req->status_request());
              break;
            case wire::Envelope::kWaitReady:
              reply = handlers_.wait_ready(req->wait_ready());
              break;
            default:
              reply = error_reply(wire::BAD_REQUEST, "not a control request");
          }
        } catch (const std::exception& e) {
          reply = error_reply(wire::INTERNAL, e.what());
        }
        reply.set_request_id(req->request_id());
        if (!write_all(fd, encode_frame(reply))) return;
      }
    } catch (const FrameError& e) {
      spdlog::warn("control socket: closing connection: {}", e.what());
      return;
    }
  }
}

}  // namespace cookiefs
