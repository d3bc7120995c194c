// Handoff: the waiting half of the assign hand-shake. An assign registers what
// it expects (the old owner's DrainDone for epoch E, the new owner's
// SessionReady for epoch E+1) BEFORE it triggers it, then waits with a
// deadline. DrainDone/SessionReady may arrive at any replica; they travel as
// ChangeNotices through PostgreSQL and reach signal() on every replica.
//
// Thread-safety: expect()/signal() from any thread; wait() from a coroutine on
// the executor given to expect(). One internal mutex.
#pragma once

#include <asio/any_io_executor.hpp>
#include <asio/awaitable.hpp>
#include <asio/steady_timer.hpp>

#include <atomic>
#include <chrono>
#include <list>
#include <memory>
#include <mutex>
#include <string>

#include "change_notice.hpp"

namespace cookiefs::storage {

class Handoff {
 public:
  class Expectation {
   public:
    Expectation(asio::any_io_executor ex, ChangeNotice::Kind kind, std::string ns,
                std::string session, std::uint64_t epoch)
        : timer(std::move(ex)),
          kind(kind),
          ns(std::move(ns)),
          session(std::move(session)),
          epoch(epoch) {}
    asio::steady_timer timer;
    const ChangeNotice::Kind kind;
    const std::string ns;
    const std::string session;
    // 0 = any epoch: an assign must register for the DrainDone before it
    // knows the epoch being retired, and narrows it once it does.
    std::atomic<std::uint64_t> epoch;
    std::atomic<bool> fired{false};
  };
  using Ticket = std::shared_ptr<Expectation>;

  // kind: drained or ready. Keep the ticket alive until wait() returns.
  Ticket expect(asio::any_io_executor ex, ChangeNotice::Kind kind, const std::string& ns,
                const std::string& session, std::uint64_t epoch);
  // True when the notice came within `within`; forgets the ticket either way.
  asio::awaitable<bool> wait(Ticket ticket, std::chrono::milliseconds within);
  void forget(const Ticket& ticket);

  // Returns how many waiters it woke.
  std::size_t signal(const ChangeNotice& notice);

 private:
  std::mutex mu_;
  std::list<std::weak_ptr<Expectation>> waiting_;  // few at a time: a list is enough
};

}  // namespace cookiefs::storage
