// Several replicas on one database: changes committed through one reach the
// subscribers of another through LISTEN/NOTIFY.
#include <doctest/doctest.h>

#include "storage_fixture.hpp"

using namespace cookiefs;
using namespace cookiefs::test;

TEST_CASE("a commit through one replica is pushed to a subscriber of another") {
  StorageServiceProcess one(shared_cluster().url());
  StorageServiceProcess two(shared_cluster().url());
  const auto ns = fresh_namespace();
  auto writer = connect(one.port(), ns, "engine-a");
  auto watcher = connect(two.port(), ns, "engine-b");
  auto all = connect(two.port(), ns, "engine-c");
  auto elsewhere = connect(two.port(), fresh_namespace(), "engine-d");

  wire::Envelope sub;
  sub.mutable_subscribe()->add_session_ids("s");
  REQUIRE(watcher->call(sub).has_ack());
  wire::Envelope sub_all;
  sub_all.mutable_subscribe()->set_all_sessions(true);
  REQUIRE(all->call(sub_all).has_ack());
  REQUIRE(elsewhere->call(sub_all).has_ack());

  REQUIRE(writer->call(commit_request("s", 0, 0, true, {file("a", "1")})).has_commit_reply());
  REQUIRE(writer->call(commit_request("other", 0, 0, true, {file("a", "1")})).has_commit_reply());

  auto ev = watcher->next_event(std::chrono::seconds(20));
  REQUIRE(ev.has_value());
  REQUIRE(ev->has_changed());
  CHECK(ev->changed().session_id() == "s");
  CHECK(ev->changed().version() == 1);
  CHECK(ev->changed().epoch() == 1);
  CHECK(ev->changed().writer() == "engine-a");

  std::set<std::string> seen;
  for (int i = 0; i < 2; ++i) {
    auto e = all->next_event(std::chrono::seconds(20));
    REQUIRE(e.has_value());
    seen.insert(e->changed().session_id());
  }
  CHECK(seen == std::set<std::string>{"s", "other"});
  // Not subscribed to "other"; other namespaces see nothing.
  CHECK_FALSE(watcher->next_event(std::chrono::milliseconds(500)).has_value());
  CHECK_FALSE(elsewhere->next_event(std::chrono::milliseconds(200)).has_value());

  // Deletes travel too (an engine deletes at the session's epoch).
  wire::Envelope d;
  d.mutable_delete_session()->set_session_id("s");
  d.mutable_delete_session()->set_writer_epoch(1);
  REQUIRE(writer->call(d).has_ack());
  ev = watcher->next_event(std::chrono::seconds(20));
  REQUIRE(ev.has_value());
  CHECK(ev->has_deleted());
}
