// CommitQueue: the database-free half of group commit. Commits wait here
// (from any connection) until a commit lane takes them as one batch: at most
// max_batch, oldest first, then put in lock order — by (namespace, session),
// stable, so two commits of one session keep their arrival order and two
// batches running at once always lock their sessions' rows in the same order
// (no deadlock between lanes).
//
// It also decides when a lane starts: a commit arriving while fewer than
// `lanes` lanes run starts one at once (no artificial delay on an idle
// service); otherwise it waits for a running lane, which takes whatever
// queued up while its previous transaction ran.
//
// Thread-safety: none; the owner (CommitBatcher) holds a mutex around every
// call.
#pragma once

#include <algorithm>
#include <cstddef>
#include <deque>
#include <string>
#include <vector>

namespace cookiefs::storage {

template <typename Item>
class CommitQueue {
 public:
  // key(item) returns something ordered: (namespace, session id).
  CommitQueue(std::size_t lanes, std::size_t max_batch)
      : lanes_(std::max<std::size_t>(1, lanes)), max_batch_(std::max<std::size_t>(1, max_batch)) {}

  // Queues item; true when the caller must start a lane for it.
  bool push(Item item) {
    items_.push_back(std::move(item));
    if (running_ >= lanes_) return false;
    ++running_;
    return true;
  }

  // Called by a running lane: the next batch in lock order. Empty means the
  // queue is drained and the lane has stopped (it must not call again).
  template <typename Key>
  std::vector<Item> take(Key key) {
    std::vector<Item> batch;
    const std::size_t n = std::min(items_.size(), max_batch_);
    batch.reserve(n);
    for (std::size_t i = 0; i < n; ++i) {
      batch.push_back(std::move(items_.front()));
      items_.pop_front();
    }
    if (batch.empty()) {
      --running_;
      return batch;
    }
    std::stable_sort(batch.begin(), batch.end(),
                     [&](const Item& a, const Item& b) { return key(a) < key(b); });
    return batch;
  }

  std::size_t queued() const { return items_.size(); }
  std::size_t running() const { return running_; }

 private:
  std::size_t lanes_;
  std::size_t max_batch_;
  std::size_t running_ = 0;
  std::deque<Item> items_;
};

}  // namespace cookiefs::storage
