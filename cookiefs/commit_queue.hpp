// CommitQueue: decides when each session's work (commit of local changes,
// adoption of a remote version) runs, and runs it on a few worker threads.
//
// Scheduling: a change makes its session due `delay` after the LAST change
// (so the journal create/write/unlink of one SQLite transaction coalesce into
// one commit), but never later than `max_lag` after the FIRST uncommitted
// change. urgent() (fsync, remote events) makes it due now. At most one run
// per session is in flight; a change during a run schedules another run. A
// run that reports failure is retried with capped exponential back-off.
//
// Thread-safety: all public methods may be called from any thread (FUSE
// workers, the storage client's I/O thread). The work function runs on the
// queue's own threads without the queue's lock held.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace cookiefs::mount {

using Clock = std::chrono::steady_clock;

// When a session with these change times is due (pure; unit-tested).
Clock::time_point commit_due(Clock::time_point first_change, Clock::time_point last_change,
                             std::chrono::milliseconds delay, std::chrono::milliseconds max_lag);

// Back-off after `failures` consecutive failed runs (1 → 100 ms, doubling, ≤ 5 s).
std::chrono::milliseconds retry_backoff(int failures);

class CommitQueue {
 public:
  // Returns true when the session needs no retry.
  using Work = std::function<bool(const std::string& session_id)>;

  CommitQueue(std::chrono::milliseconds delay, std::chrono::milliseconds max_lag);
  ~CommitQueue();  // stop()s
  CommitQueue(const CommitQueue&) = delete;
  CommitQueue& operator=(const CommitQueue&) = delete;

  void start(Work work, int threads);
  void stop();

  void changed(const std::string& session_id);
  void urgent(const std::string& session_id);
  // Runs the session's work now on the calling thread (an fsync: no hand-off
  // to a worker and back), unless a run is in flight or the queue stops;
  // then it is urgent() instead and false is returned. A failed run is
  // retried by the workers like any other.
  bool run_here(const std::string& session_id);

  // Makes every queued session due now and waits until the queue is empty or
  // the deadline passes (shutdown). Returns true when empty.
  bool drain(std::chrono::milliseconds timeout);

  std::size_t pending() const;

 private:
  struct Entry {
    Clock::time_point first_change;
    Clock::time_point last_change;
    Clock::time_point not_before;  // retry back-off
    bool urgent = false;
    bool in_flight = false;
    bool again = false;  // changed while in flight
    int failures = 0;
  };
  Clock::time_point due(const Entry& e) const;
  void run();
  // With mu_ held: marks the session urgent (see urgent()).
  Entry& urgent_locked(const std::string& id);
  // With mu_ held: the session's run begins.
  static void start_run_locked(Entry& e);
  bool work_guarded(const std::string& id);
  // After a run: takes `lock` (released) and records the outcome (a failed
  // `urgent` run is retried as urgent, after the back-off). True when the
  // session is still queued (changed meanwhile, or to retry).
  bool settle(std::unique_lock<std::mutex>& lock, const std::string& id, bool done,
              bool urgent = false);

  const std::chrono::milliseconds delay_;
  const std::chrono::milliseconds max_lag_;
  Work work_;
  mutable std::mutex mu_;
  std::condition_variable wake_;
  std::condition_variable idle_;
  std::map<std::string, Entry> entries_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace cookiefs::mount
