// Commit scheduling; see commit_queue.hpp.
#include "commit_queue.hpp"

#include <algorithm>

namespace cookiefs::mount {

Clock::time_point commit_due(Clock::time_point first_change, Clock::time_point last_change,
                             std::chrono::milliseconds delay, std::chrono::milliseconds max_lag) {
  return std::min(last_change + delay, first_change + max_lag);
}

std::chrono::milliseconds retry_backoff(int failures) {
  if (failures <= 0) return std::chrono::milliseconds(0);
  const int shift = std::min(failures - 1, 6);
  return std::min(std::chrono::milliseconds(100 << shift), std::chrono::milliseconds(5000));
}

CommitQueue::CommitQueue(std::chrono::milliseconds delay, std::chrono::milliseconds max_lag)
    : delay_(delay), max_lag_(max_lag) {}

CommitQueue::~CommitQueue() {
  stop();
}

void CommitQueue::start(Work work, int threads) {
  {
    std::lock_guard lock(mu_);
    stopping_ = false;  // a stopped queue may be started again
  }
  work_ = std::move(work);
  for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { run(); });
}

void CommitQueue::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (auto& t : threads_) t.join();
  threads_.clear();
}

void CommitQueue::changed(const std::string& id) {
  const auto now = Clock::now();
  bool earlier;
  {
    std::lock_guard lock(mu_);
    auto [it, fresh] = entries_.try_emplace(id);
    Entry& e = it->second;
    earlier = fresh || (!e.in_flight && e.first_change == Clock::time_point{});
    if (earlier) e.first_change = now;
    if (e.in_flight) {
      if (!e.again) e.first_change = now;
      e.again = true;
    }
    e.last_change = now;
  }
  // A change to a session already waiting only moves its due time later (the
  // waiting worker finds that out when it wakes), and one in flight is looked
  // at again when its run ends: only a newly pending session needs a worker
  // now. This runs on every write; a futex wake each time costs the engine
  // a context switch.
  if (earlier) wake_.notify_one();
}

CommitQueue::Entry& CommitQueue::urgent_locked(const std::string& id) {
  const auto now = Clock::now();
  auto [it, fresh] = entries_.try_emplace(id);
  Entry& e = it->second;
  if (fresh) e.first_change = e.last_change = now;
  e.urgent = true;
  e.not_before = now;  // an fsync waiter should not sit out a back-off
  if (e.in_flight) e.again = true;
  return e;
}

void CommitQueue::start_run_locked(Entry& e) {
  e.in_flight = true;
  e.again = false;
  e.urgent = false;
}

void CommitQueue::urgent(const std::string& id) {
  {
    std::lock_guard lock(mu_);
    urgent_locked(id);
  }
  wake_.notify_one();
}

bool CommitQueue::drain(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  for (auto& [id, e] : entries_) {
    e.urgent = true;
    e.not_before = Clock::now();
  }
  wake_.notify_all();
  return idle_.wait_for(lock, timeout, [this] { return entries_.empty(); });
}

std::size_t CommitQueue::pending() const {
  std::lock_guard lock(mu_);
  return entries_.size();
}

Clock::time_point CommitQueue::due(const Entry& e) const {
  const auto when =
      e.urgent ? Clock::time_point{} : commit_due(e.first_change, e.last_change, delay_, max_lag_);
  return std::max(when, e.not_before);
}

void CommitQueue::run() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    auto next = entries_.end();
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      if (it->second.in_flight) continue;
      if (next == entries_.end() || due(it->second) < due(next->second)) next = it;
    }
    if (next == entries_.end()) {
      wake_.wait(lock);
      continue;
    }
    const auto when = due(next->second);
    if (when > Clock::now()) {
      wake_.wait_until(lock, when);
      continue;
    }
    const std::string id = next->first;
    start_run_locked(next->second);
    lock.unlock();
    settle(lock, id, work_guarded(id));
    wake_.notify_one();
  }
}

bool CommitQueue::work_guarded(const std::string& id) {
  try {
    return work_(id);
  } catch (...) {
    return false;  // the work function logs; the queue only retries
  }
}

bool CommitQueue::settle(std::unique_lock<std::mutex>& lock, const std::string& id, bool done,
                         bool urgent) {
  lock.lock();
  auto it = entries_.find(id);  // entries are only erased here, so it is still there
  Entry& after = it->second;
  after.in_flight = false;
  if (!done) {
    ++after.failures;
    after.not_before = Clock::now() + retry_backoff(after.failures);
    after.urgent = after.urgent || after.again || urgent;
  } else if (after.again) {
    after.failures = 0;
  } else {
    entries_.erase(it);
    if (entries_.empty()) idle_.notify_all();
    return false;
  }
  return true;
}

bool CommitQueue::run_here(const std::string& id) {
  std::unique_lock lock(mu_);
  Entry& e = urgent_locked(id);
  if (stopping_ || !work_ || e.in_flight) {
    lock.unlock();
    wake_.notify_one();  // left to the workers (one in flight runs again)
    return false;
  }
  start_run_locked(e);
  lock.unlock();
  // A failure is retried as urgent: an fsync waits for it.
  const bool again = settle(lock, id, work_guarded(id), true);
  lock.unlock();
  if (again) wake_.notify_one();  // to run again or retry; else no wake-up to pay for
  return true;
}

}  // namespace cookiefs::mount
