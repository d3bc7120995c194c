// Handoff: waiters wake on the matching notice only, or time out.
#include <doctest/doctest.h>

#include <asio/co_spawn.hpp>
#include <asio/io_context.hpp>

#include "handoff.hpp"

using namespace cookiefs::storage;

namespace {

bool run_wait(Handoff& h, Handoff::Ticket t, std::chrono::milliseconds within,
              asio::io_context& io) {
  bool result = false;
  asio::co_spawn(
      io, [&]() -> asio::awaitable<void> { result = co_await h.wait(t, within); },
      [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
      });
  io.run();
  io.restart();
  return result;
}

ChangeNotice ready(const std::string& session, std::uint64_t epoch) {
  return ChangeNotice{ChangeNotice::Kind::ready, "ns", session, 1, epoch, "e", 0};
}

}  // namespace

TEST_CASE("a waiter wakes on its notice, already delivered or not") {
  asio::io_context io;
  Handoff h;
  auto t = h.expect(io.get_executor(), ChangeNotice::Kind::ready, "ns", "s", 5);
  CHECK(h.signal(ready("s", 4)) == 0);  // other epoch
  CHECK(h.signal(ready("x", 5)) == 0);  // other session
  CHECK(h.signal(ready("s", 5)) == 1);
  // Signalled before the wait started: returns at once, long timeout unused.
  CHECK(run_wait(h, t, std::chrono::hours(1), io));
  CHECK(h.signal(ready("s", 5)) == 0);  // forgotten after the wait
}

TEST_CASE("a waiter times out without its notice; epoch 0 matches any") {
  asio::io_context io;
  Handoff h;
  auto t = h.expect(io.get_executor(), ChangeNotice::Kind::ready, "ns", "s", 5);
  CHECK_FALSE(run_wait(h, t, std::chrono::milliseconds(1), io));
  auto any = h.expect(io.get_executor(), ChangeNotice::Kind::ready, "ns", "s", 0);
  CHECK(h.signal(ready("s", 9)) == 1);
  CHECK(run_wait(h, any, std::chrono::hours(1), io));
}
