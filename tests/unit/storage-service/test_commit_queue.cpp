// CommitQueue (group commit's batching, without a database): lane starts,
// batch bounds, lock order; and the commit_lanes default.
#include <doctest/doctest.h>

#include <string>
#include <utility>

#include "commit_queue.hpp"
#include "service_config.hpp"

using namespace cookiefs::storage;

namespace {

struct Item {
  std::string ns, session;
  int seq;
};

auto key(const Item& i) {
  return std::pair(i.ns, i.session);
}

}  // namespace

TEST_CASE("a commit on an idle queue starts a lane at once; up to `lanes` run") {
  CommitQueue<Item> q(2, 8);
  CHECK(q.push({"ns", "a", 1}));        // idle: start a lane now, no waiting
  CHECK(q.push({"ns", "b", 2}));        // second lane
  CHECK_FALSE(q.push({"ns", "c", 3}));  // both busy: waits for a running lane
  CHECK(q.running() == 2);
  CHECK(q.queued() == 3);
}

TEST_CASE("a lane takes at most max_batch, oldest first, and stops when drained") {
  CommitQueue<Item> q(1, 3);
  CHECK(q.push({"ns", "e", 1}));
  for (int i = 2; i <= 5; ++i) CHECK_FALSE(q.push({"ns", "s" + std::to_string(i), i}));
  auto batch = q.take(key);
  REQUIRE(batch.size() == 3);
  // The three oldest (1, 2, 3), whatever their lock order.
  int seq_sum = 0;
  for (const auto& i : batch) seq_sum += i.seq;
  CHECK(seq_sum == 1 + 2 + 3);
  CHECK(q.queued() == 2);
  CHECK(q.take(key).size() == 2);
  CHECK(q.running() == 1);
  CHECK(q.take(key).empty());  // drained: the lane stops
  CHECK(q.running() == 0);
  CHECK(q.push({"ns", "x", 9}));  // the next commit starts a lane again
}

TEST_CASE("a batch is in lock order; commits of one session keep their arrival order") {
  CommitQueue<Item> q(1, 16);
  q.push({"ns2", "a", 1});
  q.push({"ns1", "b", 2});
  q.push({"ns1", "a", 3});
  q.push({"ns1", "b", 4});
  q.push({"ns1", "a", 5});
  auto batch = q.take(key);
  REQUIRE(batch.size() == 5);
  CHECK(batch[0].seq == 3);
  CHECK(batch[1].seq == 5);
  CHECK(batch[2].seq == 2);
  CHECK(batch[3].seq == 4);
  CHECK(batch[4].seq == 1);
}

TEST_CASE("commit lanes default to half the pool, at least one, never more than the pool") {
  ServiceConfig c;
  c.pool_size = 8;
  CHECK(commit_lanes(c) == 4);
  c.pool_size = 1;
  CHECK(commit_lanes(c) == 1);
  c.pool_size = 4;
  c.commit_lanes = 3;
  CHECK(commit_lanes(c) == 3);
  c.commit_lanes = 9;
  CHECK(commit_lanes(c) == 4);
}
