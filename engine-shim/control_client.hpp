// ControlClient: blocking client of a local cookiefs control socket (see
// cookiefs/control_server.hpp). One request at a time; not thread-safe.
#pragma once

#include <chrono>
#include <string>

#include "cookiefs.pb.h"

namespace cookiefs {

class ControlClient {
 public:
  explicit ControlClient(std::string path) : path_(std::move(path)) {}
  ~ControlClient();
  ControlClient(const ControlClient&) = delete;
  ControlClient& operator=(const ControlClient&) = delete;

  // Sends one request and waits for its reply (Ack, SessionStatus or Error).
  // Throws std::runtime_error when the socket is unreachable or times out.
  wire::Envelope call(wire::Envelope request, std::chrono::milliseconds timeout);

 private:
  void connect();

  std::string path_;
  int fd_ = -1;
  std::uint64_t next_id_ = 1;
};

}  // namespace cookiefs
