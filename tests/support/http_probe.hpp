// http_get: a blocking HTTP/1.1 GET against 127.0.0.1 for tests of the
// /metrics, /healthz and /readyz endpoints (one request per connection, read
// to EOF). Thread-safe: no shared state.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace cookiefs::test {

struct HttpReply {
  int status = 0;
  std::string body;
};

// nullopt when nothing answers (refused, reset, closed without a reply, or
// no reply within timeout).
std::optional<HttpReply> http_get(std::uint16_t port, const std::string& path,
                                  std::chrono::milliseconds timeout = std::chrono::seconds(10));

// Polls http_get until the status is `status`; returns the last reply.
std::optional<HttpReply> wait_for_status(std::uint16_t port, const std::string& path, int status,
                                         std::chrono::milliseconds timeout);

}  // namespace cookiefs::test
