// The real client library (common/storage_client) against real replicas:
// round trip, events across replicas, and fail-over when a replica stops.
#include <doctest/doctest.h>

#include <atomic>
#include <mutex>
#include <thread>

#include "storage_client.hpp"
#include "storage_fixture.hpp"

using namespace cookiefs;
using namespace cookiefs::test;

namespace {

template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds within = std::chrono::seconds(30)) {
  const auto deadline = std::chrono::steady_clock::now() + within;
  while (std::chrono::steady_clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pred();
}

}  // namespace

TEST_CASE("StorageClient: commits, events across replicas, fail-over") {
  StorageServiceProcess one(shared_cluster().url());
  StorageServiceProcess two(shared_cluster().url());
  const auto ns = fresh_namespace();

  ClientOptions writer_opts;
  writer_opts.endpoints = {one.endpoint(), two.endpoint()};
  writer_opts.namespace_name = ns;
  writer_opts.engine_id = "engine-a";
  writer_opts.request_timeout = std::chrono::seconds(30);
  StorageClient writer(writer_opts);
  writer.start();

  ClientOptions watcher_opts = writer_opts;
  watcher_opts.endpoints = {two.endpoint()};
  watcher_opts.engine_id = "engine-w";
  StorageClient watcher(watcher_opts);
  std::mutex mu;
  std::vector<wire::SessionChanged> changes;
  watcher.on_event([&](const wire::Event& e) {
    if (!e.has_changed()) return;
    std::lock_guard lock(mu);
    changes.push_back(e.changed());
  });
  watcher.start();
  watcher.subscribe({"s"});
  REQUIRE(eventually([&] { return watcher.connected(); }));

  wire::CommitSession c = commit_request("s", 0, 0, true, {file("cookies.txt", "one")}).commit();
  c.set_idempotency_key("k1");
  auto r = writer.commit(c);
  CHECK(r.version() == 1);
  CHECK(writer.current_endpoint() == one.endpoint());

  wire::FetchSession f;
  f.set_session_id("s");
  auto got = writer.fetch(f);
  REQUIRE(got.files_size() == 1);
  CHECK(got.files(0).content() == "one");

  CHECK(eventually([&] {
    std::lock_guard lock(mu);
    return !changes.empty() && changes.back().version() == 1;
  }));

  // Replica one goes away; the client moves to replica two by itself.
  CHECK(one.stop() == 0);
  c = commit_request("s", 1, 1, false, {file("cookies.txt", "two")}).commit();
  c.set_idempotency_key("k2");
  r = writer.commit(c);
  CHECK(r.version() == 2);
  CHECK(writer.current_endpoint() == two.endpoint());
  CHECK(eventually([&] {
    std::lock_guard lock(mu);
    return !changes.empty() && changes.back().version() == 2;
  }));

  // Typed errors come through as RequestError.
  c = commit_request("s", 1, 1, false, {file("cookies.txt", "stale")}).commit();
  try {
    writer.commit(c);
    FAIL("expected VERSION_CONFLICT");
  } catch (const RequestError& e) {
    CHECK(e.code() == wire::VERSION_CONFLICT);
    CHECK(e.error().current_version() == 2);
  }
  writer.stop();
  watcher.stop();
}
