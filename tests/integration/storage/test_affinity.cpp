// Ownership: epochs fence stale writers, concurrent assigns conflict, and the
// drain / ready hand-shake between the old and new owner.
#include <doctest/doctest.h>

#include <future>
#include <thread>

#include "storage_fixture.hpp"

using namespace cookiefs;
using namespace cookiefs::test;

TEST_CASE("a commit with a stale epoch is fenced off") {
  StorageServiceProcess svc(shared_cluster().url());
  const auto ns = fresh_namespace();
  auto a = connect(svc.port(), ns, "engine-a");
  auto nm = connect(svc.port(), ns);
  REQUIRE(a->call(commit_request("s", 0, 0, true, {file("a", "1")})).has_commit_reply());

  auto r = nm->call(assign_request("s", "engine-b", 200));
  REQUIRE_MESSAGE(r.has_assign_reply(), r.DebugString());
  CHECK(r.assign_reply().epoch() == 2);
  CHECK(r.assign_reply().previous_owner() == "engine-a");
  CHECK_FALSE(r.assign_reply().drained());  // engine-a never answered

  auto stale = a->call(commit_request("s", 1, 1, false, {file("a", "late")}));
  REQUIRE(error_of(stale) == wire::STALE_EPOCH);
  CHECK(stale.error().current_epoch() == 2);
  CHECK(stale.error().current_owner() == "engine-b");
  CHECK_FALSE(stale.error().retryable());

  auto b = connect(svc.port(), ns, "engine-b");
  auto ok = b->call(commit_request("s", 2, 1, false, {file("a", "b's")}));
  REQUIRE_MESSAGE(ok.has_commit_reply(), ok.DebugString());
  CHECK(ok.commit_reply().epoch() == 2);
  CHECK(a->call(fetch_request("s")).fetch_reply().files(0).content() == "b's");

  // Assign of a missing session: NOT_FOUND, unless asked to create it.
  CHECK(error_of(nm->call(assign_request("fresh", "engine-a", 100))) == wire::NOT_FOUND);
  r = nm->call(assign_request("fresh", "engine-a", 100, true));
  REQUIRE(r.has_assign_reply());
  CHECK(r.assign_reply().epoch() == 1);
  CHECK(r.assign_reply().version() == 0);
  CHECK(a->call(commit_request("fresh", 1, 0, false, {file("x", "y")})).has_commit_reply());
}

TEST_CASE("concurrent assigns of one session: one wins, the others conflict") {
  StorageServiceProcess svc(shared_cluster().url());
  const auto ns = fresh_namespace();
  auto nm = connect(svc.port(), ns);
  REQUIRE(nm->call(assign_request("s", "engine-a", 100, true)).has_assign_reply());

  // Nobody answers SessionReady, so each assign holds the session for its
  // whole grace period: the others arrive while it does.
  std::vector<std::future<wire::Envelope>> results;
  for (int i = 0; i < 4; ++i) {
    results.push_back(std::async(std::launch::async, [&, i] {
      auto c = connect(svc.port(), ns);
      return c->call(assign_request("s", "engine-" + std::to_string(i), 3000));
    }));
  }
  int won = 0, conflicts = 0;
  for (auto& f : results) {
    auto r = f.get();
    if (r.has_assign_reply()) {
      ++won;
      CHECK(r.assign_reply().epoch() == 2);
    } else if (error_of(r) == wire::ASSIGN_CONFLICT) {
      ++conflicts;
    } else {
      FAIL("unexpected reply: " << r.DebugString());
    }
  }
  CHECK(won == 1);
  CHECK(conflicts == 3);
  // Once it finished, the next assign goes through.
  auto r = nm->call(assign_request("s", "engine-z", 100));
  REQUIRE_MESSAGE(r.has_assign_reply(), r.DebugString());
  CHECK(r.assign_reply().epoch() == 3);
}

TEST_CASE("assign asks the owner to drain and waits for the new owner") {
  StorageServiceProcess svc(shared_cluster().url());
  const auto ns = fresh_namespace();
  auto a = connect(svc.port(), ns, "engine-a");
  auto b = connect(svc.port(), ns, "engine-b");
  REQUIRE(a->call(commit_request("s", 0, 0, true, {file("a", "1")})).has_commit_reply());

  auto assigned = std::async(std::launch::async, [&] {
    auto nm = connect(svc.port(), ns);
    return nm->call(assign_request("s", "engine-b", 20000), std::chrono::seconds(60));
  });

  auto drain = a->next_event(std::chrono::seconds(20));
  REQUIRE(drain.has_value());
  REQUIRE(drain->has_drain());
  CHECK(drain->drain().session_id() == "s");
  CHECK(drain->drain().epoch() == 1);
  // The old owner flushes under its epoch, then confirms.
  auto last = a->call(commit_request("s", 1, 1, false, {file("a", "flushed")}));
  REQUIRE(last.has_commit_reply());
  wire::Envelope done;
  done.mutable_drain_done()->set_session_id("s");
  done.mutable_drain_done()->set_epoch(1);
  done.mutable_drain_done()->set_version(last.commit_reply().version());
  CHECK(a->call(done).has_ack());

  // The new owner is told (it is the owner, subscribed or not) and says ready.
  std::optional<wire::Event> owner;
  for (int i = 0; i < 5 && !(owner && owner->has_owner_changed()); ++i) {
    owner = b->next_event(std::chrono::seconds(20));
  }
  REQUIRE(owner.has_value());
  REQUIRE(owner->has_owner_changed());
  CHECK(owner->owner_changed().owner() == "engine-b");
  CHECK(owner->owner_changed().epoch() == 2);
  wire::Envelope ready;
  ready.mutable_session_ready()->set_session_id("s");
  ready.mutable_session_ready()->set_epoch(2);
  ready.mutable_session_ready()->set_version(2);
  CHECK(b->call(ready).has_ack());

  REQUIRE(assigned.wait_for(std::chrono::seconds(30)) == std::future_status::ready);
  auto r = assigned.get();
  REQUIRE_MESSAGE(r.has_assign_reply(), r.DebugString());
  CHECK(r.assign_reply().drained());
  CHECK(r.assign_reply().ready());
  CHECK(r.assign_reply().epoch() == 2);
  CHECK(r.assign_reply().version() == 2);
}

TEST_CASE("the service itself refuses writes from a non-owner at the current epoch") {
  StorageServiceProcess svc(shared_cluster().url());
  const auto ns = fresh_namespace();
  auto a = connect(svc.port(), ns, "engine-a");
  auto b = connect(svc.port(), ns, "engine-b");
  auto nm = connect(svc.port(), ns);
  // A create makes the creating engine the owner, at epoch 1.
  auto created = a->call(commit_request("s", 0, 0, true, {file("a", "1")}));
  REQUIRE_MESSAGE(created.has_commit_reply(), created.DebugString());
  CHECK(created.commit_reply().epoch() == 1);
  CHECK(a->call(fetch_request("s")).fetch_reply().info().owner() == "engine-a");

  // engine-b knows the epoch (it fetched) but skipped its own ownership check.
  auto r = b->call(commit_request("s", 1, 1, false, {file("a", "b wrote")}));
  REQUIRE(error_of(r) == wire::NOT_OWNER);
  CHECK(r.error().current_owner() == "engine-a");
  CHECK(r.error().current_epoch() == 1);
  CHECK(r.error().current_version() == 1);
  CHECK_FALSE(r.error().retryable());
  // So did an operator connection.
  CHECK(error_of(nm->call(commit_request("s", 1, 1, false, {file("a", "nm wrote")}))) ==
        wire::NOT_OWNER);
  // A create of an existing session is no way around it.
  CHECK(error_of(b->call(commit_request("s", 1, 1, true, {file("a", "b again")}))) ==
        wire::NOT_OWNER);
  // Nothing landed; the owner keeps writing.
  CHECK(a->call(fetch_request("s")).fetch_reply().files(0).content() == "1");
  REQUIRE(a->call(commit_request("s", 1, 1, false, {file("a", "2")})).has_commit_reply());

  // A stale epoch still says STALE_EPOCH (the more useful answer to a former owner).
  CHECK(error_of(b->call(commit_request("s", 7, 2, false, {file("a", "x")}))) == wire::STALE_EPOCH);

  // Delete at the current epoch: refused for a non-owner engine...
  wire::Envelope d;
  d.mutable_delete_session()->set_session_id("s");
  d.mutable_delete_session()->set_writer_epoch(1);
  auto del = b->call(d);
  REQUIRE(error_of(del) == wire::NOT_OWNER);
  CHECK(del.error().current_owner() == "engine-a");
  CHECK(a->call(fetch_request("s")).has_fetch_reply());

  // ...after a hand-off, the new owner may write and the old one may not.
  auto moved = nm->call(assign_request("s", "engine-b", 100));
  REQUIRE_MESSAGE(moved.has_assign_reply(), moved.DebugString());
  REQUIRE(moved.assign_reply().epoch() == 2);
  CHECK(error_of(a->call(commit_request("s", 2, 2, false, {file("a", "a late")}))) ==
        wire::NOT_OWNER);
  REQUIRE(b->call(commit_request("s", 2, 2, false, {file("a", "b owns")})).has_commit_reply());

  // A released session has no owner: any engine at its epoch may write.
  wire::Envelope rel;
  rel.mutable_release()->set_session_id("s");
  rel.mutable_release()->set_epoch(2);
  REQUIRE(b->call(rel).has_ack());
  CHECK(a->call(commit_request("s", 2, 3, false, {file("a", "unowned")})).has_commit_reply());

  // An operator connection (no engine id) may delete an owned session.
  REQUIRE(nm->call(assign_request("s", "engine-a", 100)).has_assign_reply());
  d.mutable_delete_session()->set_writer_epoch(3);
  CHECK(error_of(b->call(d)) == wire::NOT_OWNER);
  auto op_del = nm->call(d);
  CHECK_MESSAGE(op_del.has_ack(), op_del.DebugString());
  CHECK(error_of(a->call(fetch_request("s"))) == wire::NOT_FOUND);
}
