// ControlServer: the mount's local control socket, through which the
// engine-shim (`cookiefs-shim release|flush|status`) talks to this cookiefs.
//
// A Unix stream socket created with mode 0600 (configurable); every peer's
// uid is checked with SO_PEERCRED against the allowed uids (root and the
// daemon's own uid by default). Frames and messages are the storage protocol's
// (common/frame.hpp, Flush / Release / StatusRequest / WaitReady requests).
//
// Threads: one accept thread plus one thread per connection; handlers run on
// the connection's thread and may block (a flush waits for PostgreSQL), so
// they must be thread-safe. stop() closes the socket and joins all threads.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <functional>
#include <list>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cookiefs.pb.h"

namespace cookiefs {

struct ControlHandlers {
  // Each returns the reply body to send: Ack, SessionStatus or Error.
  std::function<wire::Envelope(const wire::Flush&)> flush;
  std::function<wire::Envelope(const wire::Release&)> release;
  std::function<wire::Envelope(const wire::StatusRequest&)> status;
  std::function<wire::Envelope(const wire::WaitReady&)> wait_ready;
};

class ControlServer {
 public:
  ControlServer(std::string path, unsigned mode, ControlHandlers handlers);
  ~ControlServer();
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

  // Binds and listens; throws std::system_error with a clear message.
  void start();
  void stop();

  // Extra uids allowed besides root and the daemon's own uid.
  void allow_uid(uid_t uid) { allowed_uids_.push_back(uid); }

 private:
  void accept_loop();
  void serve(int fd);
  bool peer_allowed(int fd) const;

  std::string path_;
  unsigned mode_;
  ControlHandlers handlers_;
  std::vector<uid_t> allowed_uids_;
  int listen_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;
  std::mutex mu_;  // guards conns_
  std::list<std::pair<int, std::thread>> conns_;
};

}  // namespace cookiefs
