// SubscriberHub: who gets which event.
#include <doctest/doctest.h>

#include "subscriber_hub.hpp"

using namespace cookiefs;
using namespace cookiefs::storage;

namespace {

struct RecordingSink : EventSink {
  std::vector<wire::Event> events;
  void push_event(const wire::Event& e) override { events.push_back(e); }
};

ChangeNotice notice(ChangeNotice::Kind kind, const std::string& ns, const std::string& session,
                    const std::string& engine = "w") {
  return ChangeNotice{kind, ns, session, 3, 2, engine, 100};
}

}  // namespace

TEST_CASE("events reach the subscribers of their session in their namespace") {
  SubscriberHub hub;
  auto one = std::make_shared<RecordingSink>();
  auto all = std::make_shared<RecordingSink>();
  auto other_ns = std::make_shared<RecordingSink>();
  auto id_one = hub.attach(one, "t1", "e1");
  auto id_all = hub.attach(all, "t1", "e2");
  auto id_other = hub.attach(other_ns, "t2", "e3");
  wire::Subscribe s;
  s.add_session_ids("s1");
  hub.subscribe(id_one, s);
  wire::Subscribe everything;
  everything.set_all_sessions(true);
  hub.subscribe(id_all, everything);
  hub.subscribe(id_other, everything);

  CHECK(hub.deliver(notice(ChangeNotice::Kind::changed, "t1", "s1")) == 2);
  CHECK(hub.deliver(notice(ChangeNotice::Kind::changed, "t1", "s2")) == 1);
  CHECK(hub.deliver(notice(ChangeNotice::Kind::deleted, "t1", "s1")) == 2);
  REQUIRE(one->events.size() == 2);
  CHECK(one->events[0].changed().session_id() == "s1");
  CHECK(one->events[0].changed().version() == 3);
  CHECK(one->events[1].has_deleted());
  CHECK(all->events.size() == 3);
  CHECK(other_ns->events.empty());

  wire::Subscribe off;
  off.add_session_ids("s1");
  off.set_unsubscribe(true);
  hub.subscribe(id_one, off);
  CHECK(hub.deliver(notice(ChangeNotice::Kind::changed, "t1", "s1")) == 1);
  hub.detach(id_all);
  CHECK(hub.deliver(notice(ChangeNotice::Kind::changed, "t1", "s1")) == 0);
}

TEST_CASE("drain requests go to the owner's connections, owner changes to the new owner") {
  SubscriberHub hub;
  auto owner = std::make_shared<RecordingSink>();
  auto next = std::make_shared<RecordingSink>();
  hub.attach(owner, "t", "engine-a");
  hub.attach(next, "t", "engine-b");
  CHECK(hub.deliver(notice(ChangeNotice::Kind::drain, "t", "s", "engine-a")) == 1);
  REQUIRE(owner->events.size() == 1);
  CHECK(owner->events[0].drain().epoch() == 2);
  CHECK(owner->events[0].drain().deadline_ms() == 100);
  CHECK(hub.deliver(notice(ChangeNotice::Kind::owner, "t", "s", "engine-b")) == 1);
  REQUIRE(next->events.size() == 1);
  CHECK(next->events[0].owner_changed().owner() == "engine-b");
  // Hand-shake notices are not events.
  CHECK(hub.deliver(notice(ChangeNotice::Kind::drained, "t", "s", "engine-a")) == 0);
  CHECK(hub.deliver(notice(ChangeNotice::Kind::ready, "t", "s", "engine-b")) == 0);
}

TEST_CASE("a sink that is gone is skipped") {
  SubscriberHub hub;
  auto sink = std::make_shared<RecordingSink>();
  auto id = hub.attach(sink, "t", "");
  wire::Subscribe everything;
  everything.set_all_sessions(true);
  hub.subscribe(id, everything);
  sink.reset();
  CHECK(hub.deliver(notice(ChangeNotice::Kind::changed, "t", "s")) == 0);
}
