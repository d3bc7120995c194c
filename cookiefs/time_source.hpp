// TimeSource: the clocks the sessions side reads (retirement deadlines after
// a drain or release, commit durations, quarantine timestamps), as an
// interface, so unit tests can move time by hand. SystemTime is the real one.
//
// Waits on condition variables (fsync waiting for its commit) keep using the
// real clock: a test makes them end by the outcome, never by time.
//
// Thread-safety: implementations are safe to call from any thread.
#pragma once

#include <chrono>

namespace cookiefs::mount {

class TimeSource {
 public:
  virtual ~TimeSource() = default;
  virtual std::chrono::steady_clock::time_point now() const = 0;
  virtual std::chrono::system_clock::time_point wall() const = 0;
  // Pauses the caller (a snapshot retried while the session keeps changing).
  virtual void sleep_for(std::chrono::microseconds d) const = 0;
};

class SystemTime final : public TimeSource {
 public:
  std::chrono::steady_clock::time_point now() const override;
  std::chrono::system_clock::time_point wall() const override;
  void sleep_for(std::chrono::microseconds d) const override;
};

}  // namespace cookiefs::mount
