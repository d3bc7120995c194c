// TCP port helpers for tests. Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>

namespace cookiefs::test {

// A port that was free a moment ago on 127.0.0.1 (bind to 0, read, close).
std::uint16_t free_tcp_port();

// Polls until something accepts connections on 127.0.0.1:port.
bool wait_for_port(std::uint16_t port, std::chrono::milliseconds timeout);

}  // namespace cookiefs::test
