// WireConnection: a deliberately simple, blocking client of the storage
// protocol for tests — one TCP connection, no retries, no reconnect — so a
// test sees exactly what the server answers (including retryable errors the
// real StorageClient would hide) and can send raw garbage. Events that arrive
// while waiting for a reply are queued for next_event(). Not thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <string>

#include "cookiefs.pb.h"
#include "frame.hpp"

namespace cookiefs::test {

class WireConnection {
 public:
  explicit WireConnection(std::uint16_t port, const std::string& host = "127.0.0.1");
  ~WireConnection();
  WireConnection(const WireConnection&) = delete;
  WireConnection& operator=(const WireConnection&) = delete;

  // Sends Hello and returns the reply envelope (hello_reply or error).
  wire::Envelope hello(const std::string& namespace_name = "default",
                       const std::string& engine_id = "", const std::string& token = "");

  // Sends request (assigning a request id) and waits for its reply.
  // Throws std::runtime_error on timeout or when the connection closes.
  wire::Envelope call(wire::Envelope request,
                      std::chrono::milliseconds timeout = std::chrono::seconds(30));

  std::optional<wire::Event> next_event(std::chrono::milliseconds timeout);

  void send_raw(const std::string& bytes);  // throws when the peer closed
  // True when the server closes the connection within timeout.
  bool closed_by_peer(std::chrono::milliseconds timeout);

 private:
  // Reads one envelope; nullopt on timeout; throws when closed.
  std::optional<wire::Envelope> read_envelope(std::chrono::steady_clock::time_point deadline);

  int fd_ = -1;
  std::uint64_t next_id_ = 1;
  FrameDecoder decoder_;
  std::deque<wire::Event> events_;
};

}  // namespace cookiefs::test
