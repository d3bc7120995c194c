// Commit scheduling: coalescing delay, maximum lag, back-off, one run in
// flight per session, urgent runs and drain.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <thread>

#include "commit_queue.hpp"

using namespace cookiefs::mount;
using namespace std::chrono_literals;

TEST_CASE("due time: delay after the last change, capped by max lag after the first") {
  const Clock::time_point t0{};
  CHECK(commit_due(t0, t0, 15ms, 1000ms) == t0 + 15ms);
  // A stream of changes keeps pushing the commit out...
  CHECK(commit_due(t0, t0 + 500ms, 15ms, 1000ms) == t0 + 515ms);
  // ...but never past the maximum lag.
  CHECK(commit_due(t0, t0 + 995ms, 15ms, 1000ms) == t0 + 1000ms);
  CHECK(commit_due(t0, t0 + 5000ms, 15ms, 1000ms) == t0 + 1000ms);
}

TEST_CASE("retry back-off doubles and is capped") {
  CHECK(retry_backoff(0) == 0ms);
  CHECK(retry_backoff(1) == 100ms);
  CHECK(retry_backoff(2) == 200ms);
  CHECK(retry_backoff(4) == 800ms);
  CHECK(retry_backoff(30) == 5000ms);
}

namespace {

// Polls with a generous deadline instead of sleeping a fixed time.
template <class F>
bool eventually(F f, std::chrono::seconds limit = 20s) {
  const auto end = Clock::now() + limit;
  while (Clock::now() < end) {
    if (f()) return true;
    std::this_thread::sleep_for(2ms);
  }
  return f();
}

}  // namespace

TEST_CASE("a burst of changes to one session becomes one run") {
  CommitQueue q(200ms, 10s);
  std::atomic<int> runs{0};
  q.start([&](const std::string&) { return ++runs, true; }, 2);
  for (int i = 0; i < 20; ++i) q.changed("s");
  CHECK(eventually([&] { return q.pending() == 0; }));
  CHECK(runs == 1);
  q.stop();
}

TEST_CASE("runs of one session never overlap, and a change during a run schedules another") {
  CommitQueue q(1ms, 10ms);
  std::atomic<int> in_flight{0}, overlap{0}, runs{0};
  q.start(
      [&](const std::string&) {
        if (++in_flight > 1) ++overlap;
        std::this_thread::sleep_for(5ms);
        --in_flight;
        ++runs;
        return true;
      },
      4);
  for (int i = 0; i < 50; ++i) {
    q.changed("s");
    std::this_thread::sleep_for(1ms);
  }
  CHECK(eventually([&] { return q.pending() == 0; }));
  CHECK(overlap == 0);
  CHECK(runs >= 2);
  q.stop();
}

TEST_CASE("a failing run is retried until it succeeds") {
  CommitQueue q(0ms, 0ms);
  std::atomic<int> runs{0};
  q.start([&](const std::string&) { return ++runs >= 3; }, 1);
  q.urgent("s");
  CHECK(eventually([&] { return q.pending() == 0; }));
  CHECK(runs == 3);
  q.stop();
}

TEST_CASE("urgent skips the coalescing delay; drain empties the queue") {
  CommitQueue q(1h, 1h);
  std::mutex mu;
  std::set<std::string> seen;
  q.start(
      [&](const std::string& id) {
        std::lock_guard lock(mu);
        seen.insert(id);
        return true;
      },
      2);
  q.changed("later");
  q.urgent("now");
  CHECK(eventually([&] {
    std::lock_guard lock(mu);
    return seen.contains("now");
  }));
  {
    std::lock_guard lock(mu);
    CHECK_FALSE(seen.contains("later"));
  }
  CHECK(q.drain(20s));
  std::lock_guard lock(mu);
  CHECK(seen.contains("later"));
  q.stop();
}

TEST_CASE("run_here runs on the caller's thread, and leaves a session in flight to the workers") {
  CommitQueue q(1h, 1h);
  std::mutex mu;
  std::set<std::thread::id> threads;
  std::atomic<bool> hold{false};
  std::atomic<int> runs{0};
  q.start(
      [&](const std::string&) {
        {
          std::lock_guard lock(mu);
          threads.insert(std::this_thread::get_id());
        }
        ++runs;
        while (hold) std::this_thread::sleep_for(1ms);
        return true;
      },
      2);
  // Idle session: it runs here, at once, and nothing is left queued.
  q.changed("s");
  CHECK(q.run_here("s"));
  CHECK(runs == 1);
  CHECK(q.pending() == 0);
  {
    std::lock_guard lock(mu);
    CHECK(threads.size() == 1);
    CHECK(threads.contains(std::this_thread::get_id()));
  }
  // In flight on a worker: not run twice at once; it runs again after.
  hold = true;
  q.urgent("s");
  CHECK(eventually([&] { return runs == 2; }));
  CHECK_FALSE(q.run_here("s"));
  hold = false;
  CHECK(eventually([&] { return runs == 3 && q.pending() == 0; }));
  q.stop();
}

TEST_CASE("a failed run_here is retried by the workers") {
  CommitQueue q(1h, 1h);
  std::atomic<int> runs{0};
  q.start([&](const std::string&) { return ++runs >= 2; }, 1);
  CHECK(q.run_here("s"));
  CHECK(runs == 1);
  CHECK(eventually([&] { return runs == 2 && q.pending() == 0; }));
  q.stop();
}
