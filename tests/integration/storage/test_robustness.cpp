// Hostile input, database outages, configuration errors and shutdown.
#include <doctest/doctest.h>
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <future>
#include <random>
#include <thread>

#include "storage_fixture.hpp"
#include "subprocess.hpp"

using namespace cookiefs;
using namespace cookiefs::test;

TEST_CASE("garbage and oversized frames close only the offending connection") {
  StorageServiceProcess svc(shared_cluster().url());
  const auto ns = fresh_namespace();
  auto good = connect(svc.port(), ns, "engine-a");
  REQUIRE(good->call(commit_request("s", 0, 0, true, {file("a", "1")})).has_commit_reply());

  SUBCASE("1 MiB of random bytes") {
    std::mt19937 rng(42);
    std::string junk(1 << 20, '\0');
    for (auto& ch : junk) ch = static_cast<char>(rng());
    WireConnection bad(svc.port());
    try {
      bad.send_raw(junk);
    } catch (const std::exception&) {
      // The server may close before all of it was sent: that is the point.
    }
    CHECK(bad.closed_by_peer(std::chrono::seconds(20)));
  }
  SUBCASE("a frame claiming 4 GiB") {
    WireConnection bad(svc.port());
    bad.send_raw(std::string("CF\x01\x00\xff\xff\xff\xff", 8) + std::string(1000, 'x'));
    CHECK(bad.closed_by_peer(std::chrono::seconds(20)));
  }
  SUBCASE("a truncated frame, then a hang-up") {
    {
      WireConnection bad(svc.port());
      bad.send_raw(std::string("CF\x01\x00\x00\x00\x01\x00", 8) + "partial");
    }
  }
  SUBCASE("a valid header with an unparsable payload") {
    WireConnection bad(svc.port());
    bad.send_raw(std::string("CF\x01\x00\x00\x00\x00\x04", 8) + "\xff\xff\xff\xff");
    CHECK(bad.closed_by_peer(std::chrono::seconds(20)));
  }
  SUBCASE("requests before hello are refused, not crashed on") {
    WireConnection early(svc.port());
    CHECK(error_of(early.call(fetch_request("s"))) == wire::UNAUTHENTICATED);
  }

  // The other client never noticed.
  auto r = good->call(commit_request("s", 1, 1, false, {file("a", "2")}));
  REQUIRE_MESSAGE(r.has_commit_reply(), r.DebugString());
  CHECK(svc.process().running());
  auto fresh = connect(svc.port(), ns);
  CHECK(fresh->call(fetch_request("s")).fetch_reply().files(0).content() == "2");
}

TEST_CASE("a PostgreSQL restart under load: retryable errors, then recovery") {
  PgCluster pg;
  pg.start();
  StorageServiceProcess svc(pg.url(), 0, {"--database-connect-timeout", "2s"});
  const auto ns = fresh_namespace();
  auto c = connect(svc.port(), ns, "engine-a");
  auto watcher = connect(svc.port(), ns, "engine-w");
  REQUIRE(c->call(commit_request("s", 0, 0, true, {file("a", "0")})).has_commit_reply());
  wire::Envelope sub;
  sub.mutable_subscribe()->set_all_sessions(true);
  REQUIRE(watcher->call(sub).has_ack());

  // Load from other connections throughout the restart.
  std::atomic<bool> stop{false};
  std::atomic<int> load_ok{0}, load_unavailable{0}, load_other{0};
  std::thread load([&] {
    auto l = connect(svc.port(), ns, "engine-l");
    std::uint64_t version = 0;
    int i = 0;
    while (!stop) {
      auto r = l->call(commit_request("load", version == 0 ? 0 : 1, version, version == 0,
                                      {file("f", std::to_string(i++))}));
      if (r.has_commit_reply()) {
        version = r.commit_reply().version();
        ++load_ok;
      } else if (error_of(r) == wire::UNAVAILABLE && r.error().retryable()) {
        ++load_unavailable;
      } else if (error_of(r) == wire::VERSION_CONFLICT) {
        version = r.error().current_version();  // an in-doubt commit had landed
      } else {
        ++load_other;
      }
    }
  });

  pg.stop();
  auto r = c->call(commit_request("s", 1, 1, false, {file("a", "during")}));
  CHECK(error_of(r) == wire::UNAVAILABLE);
  CHECK(r.error().retryable());
  CHECK(error_of(c->call(fetch_request("s"))) == wire::UNAVAILABLE);
  CHECK(svc.process().running());

  pg.start();
  // The service reconnects by itself: poll until a commit goes through.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  bool recovered = false;
  while (std::chrono::steady_clock::now() < deadline) {
    r = c->call(commit_request("s", 1, 1, false, {file("a", "after")}, {}, "after-restart"));
    if (r.has_commit_reply()) {
      recovered = true;
      break;
    }
    REQUIRE_MESSAGE(error_of(r) == wire::UNAVAILABLE, r.DebugString());
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  REQUIRE(recovered);
  stop = true;
  load.join();
  CHECK(load_other == 0);
  CHECK(load_ok > 0);
  CHECK(svc.process().running());

  // The change feed came back too: a commit after the restart is pushed.
  bool pushed = false;
  const auto feed_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  std::uint64_t version = r.commit_reply().version();
  while (!pushed && std::chrono::steady_clock::now() < feed_deadline) {
    auto next = c->call(commit_request("s", 1, version, false, {file("a", "again")}));
    REQUIRE(next.has_commit_reply());
    version = next.commit_reply().version();
    while (auto ev = watcher->next_event(std::chrono::milliseconds(500))) {
      if (ev->has_changed() && ev->changed().session_id() == "s" &&
          ev->changed().version() == version) {
        pushed = true;
      }
    }
  }
  CHECK(pushed);
  CHECK(svc.stop() == 0);
}

TEST_CASE("a bad configuration exits 2 naming the key") {
  const auto bin = built_binary("storage-service/storage-service");
  char path[] = "/tmp/cookiefs-bad-config-XXXXXX";
  const int fd = ::mkstemp(path);
  REQUIRE(fd >= 0);
  ::close(fd);
  {
    std::ofstream out(path);
    out << "database:\n  url: postgresql://x@127.0.0.1:1/x\nserver:\n  threads: ten\n";
  }
  auto [code, out] = run_and_capture({bin, "--config", path});
  CHECK(code == 2);
  CHECK(out.find("server.threads") != std::string::npos);
  CHECK(std::count(out.begin(), out.end(), '\n') == 1);

  {
    std::ofstream o(path);
    o << "database:\n  url: postgresql://x@127.0.0.1:1/x\nlimits:\n  max_frame_bites: 1MiB\n";
  }
  std::tie(code, out) = run_and_capture({bin, "--config", path});
  CHECK(code == 2);
  CHECK(out.find("limits.max_frame_bites: unknown key") != std::string::npos);

  std::tie(code, out) = run_and_capture({bin, "--config", path + std::string("-missing")});
  CHECK(code == 2);
  ::unlink(path);

  std::tie(code, out) = run_and_capture(
      {bin, "--database-url", "postgresql://x@127.0.0.1:1/x", "--listen", "nowhere"});
  CHECK(code == 2);
  CHECK(out.find("listen") != std::string::npos);

  std::tie(code, out) = run_and_capture({bin, "--listen", "127.0.0.1:1"});
  CHECK(code == 2);
  CHECK(out.find("database.url") != std::string::npos);

  std::tie(code, out) = run_and_capture({bin, "--version"});
  CHECK(code == 0);
  CHECK(out.find("storage-service") != std::string::npos);
}

TEST_CASE("SIGTERM finishes in-flight work and exits 0") {
  StorageServiceProcess svc(shared_cluster().url(), 0, {"--server-shutdown-grace", "30s"});
  const auto ns = fresh_namespace();
  auto nm = connect(svc.port(), ns);
  REQUIRE(nm->call(assign_request("s", "engine-a", 100, true)).has_assign_reply());
  // An assign that waits ~3s (drain, then ready, neither ever answered) is in flight.
  auto pending = std::async(std::launch::async, [&] {
    auto c = connect(svc.port(), ns);
    return c->call(assign_request("s", "engine-b", 1500), std::chrono::seconds(60));
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  svc.process().signal(SIGTERM);
  auto r = pending.get();
  CHECK_MESSAGE(r.has_assign_reply(), r.DebugString());
  CHECK(svc.process().wait(std::chrono::seconds(30)) == 0);
}
