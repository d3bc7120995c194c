// The storage-service's HTTP endpoint (/healthz, /readyz, /metrics) through
// the real binary, --print-config on the documented config file, and a
// SIGTERM while the start-up still waits for PostgreSQL.
#include <doctest/doctest.h>
#include <signal.h>
#include <stdlib.h>

#include <future>
#include <thread>

#include "http_probe.hpp"
#include "ports.hpp"
#include "storage_fixture.hpp"
#include "subprocess.hpp"

using namespace cookiefs;
using namespace cookiefs::test;
using namespace std::chrono_literals;

namespace {

std::vector<std::string> with_metrics(std::uint16_t port, std::vector<std::string> more = {}) {
  std::vector<std::string> args{"--metrics-listen", "127.0.0.1:" + std::to_string(port)};
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

std::string temp_log() {
  char tmpl[] = "/tmp/cookiefs-storage-test-XXXXXX";
  const int fd = ::mkstemp(tmpl);
  REQUIRE(fd >= 0);
  ::close(fd);
  return tmpl;
}

}  // namespace

TEST_CASE("health endpoint: live, ready, metrics, and not ready while draining") {
  const auto mport = free_tcp_port();
  StorageServiceProcess svc(shared_cluster().url(), 0,
                            with_metrics(mport, {"--server-shutdown-grace", "30s"}));
  auto healthz = http_get(mport, "/healthz");
  REQUIRE(healthz.has_value());
  CHECK(healthz->status == 200);
  CHECK(healthz->body == "ok\n");
  auto ready = wait_for_status(mport, "/readyz", 200, 60s);
  REQUIRE(ready.has_value());
  CHECK(ready->status == 200);

  const auto ns = fresh_namespace();
  auto c = connect(svc.port(), ns, "engine-a");
  REQUIRE(c->call(commit_request("s", 0, 0, true, {file("a", "1")})).has_commit_reply());
  auto metrics = http_get(mport, "/metrics");
  REQUIRE(metrics.has_value());
  CHECK(metrics->status == 200);
  // The names the dashboards and alerts use.
  for (const char* name :
       {"cookiefs_storage_requests_total{op=\"commit\",result=\"ok\"} 1",
        "cookiefs_storage_connections ", "cookiefs_storage_change_feed_connected 1",
        "cookiefs_storage_commit_duration_seconds_count 1", "cookiefs_storage_build_info{",
        "cookiefs_storage_db_pool_in_use"}) {
    CHECK_MESSAGE(metrics->body.find(name) != std::string::npos, name);
  }
  // Cookies are credentials: no session id or namespace in any label.
  CHECK(metrics->body.find(ns) == std::string::npos);

  // An assign that waits for a drain nobody sends keeps the shutdown busy;
  // meanwhile the replica says it is not ready, and is still alive.
  auto nm = connect(svc.port(), ns);
  auto pending = std::async(std::launch::async, [&] {
    auto other = connect(svc.port(), ns);
    return other->call(assign_request("s", "engine-b", 3000), 60s);
  });
  std::this_thread::sleep_for(500ms);
  svc.process().signal(SIGTERM);
  auto draining = wait_for_status(mport, "/readyz", 503, 20s);
  REQUIRE(draining.has_value());
  CHECK(draining->status == 503);
  CHECK(draining->body.find("draining") != std::string::npos);
  if (svc.process().running()) {
    auto live = http_get(mport, "/healthz");
    CHECK((!live || live->status == 200));  // answered, or the process just finished
  }
  auto r = pending.get();
  CHECK_MESSAGE(r.has_assign_reply(), r.DebugString());
  CHECK(svc.process().wait(60s) == 0);
}

TEST_CASE("health endpoint: not ready while PostgreSQL is down, ready again after") {
  PgCluster pg;
  pg.start();
  const auto mport = free_tcp_port();
  StorageServiceProcess svc(pg.url(), 0, with_metrics(mport, {"--database-connect-timeout", "2s"}));
  REQUIRE(wait_for_status(mport, "/readyz", 200, 60s)->status == 200);

  pg.stop();
  auto down = wait_for_status(mport, "/readyz", 503, 60s);
  REQUIRE(down.has_value());
  CHECK(down->status == 503);
  CHECK(down->body.find("database unreachable") != std::string::npos);
  CHECK(http_get(mport, "/healthz")->status == 200);  // alive: no restart wanted

  pg.start();
  auto up = wait_for_status(mport, "/readyz", 200, 90s);
  REQUIRE(up.has_value());
  CHECK(up->status == 200);
  CHECK(svc.stop() == 0);
}

TEST_CASE("SIGTERM while the start-up waits for PostgreSQL is a clean stop") {
  // Nothing listens on this port: the migration keeps retrying.
  const auto db_port = free_tcp_port();
  const auto mport = free_tcp_port();
  const auto log = temp_log();
  Subprocess svc({built_binary("storage-service/storage-service"), "--listen", "127.0.0.1:0",
                  "--metrics-listen", "127.0.0.1:" + std::to_string(mport),
                  "--database-connect-timeout", "1s"},
                 {{"COOKIEFS_DATABASE_URL",
                   "postgresql://cookiefs@127.0.0.1:" + std::to_string(db_port) + "/cookiefs"}},
                 log);
  // Alive but not ready while it waits.
  auto live = wait_for_status(mport, "/healthz", 200, 60s);
  REQUIRE(live.has_value());
  CHECK(live->status == 200);
  auto ready = http_get(mport, "/readyz");
  REQUIRE(ready.has_value());
  CHECK(ready->status == 503);
  CHECK(ready->body.find("starting") != std::string::npos);
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (svc.log().find("database not reachable yet") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(50ms);
  }
  REQUIRE_MESSAGE(svc.log().find("database not reachable yet") != std::string::npos, svc.log());

  svc.signal(SIGTERM);
  const auto code = svc.wait(60s);
  CHECK_MESSAGE(code == 0, svc.log());
  CHECK(svc.log().find("stopping during start-up") != std::string::npos);
  ::unlink(log.c_str());
}

TEST_CASE("--print-config loads config/storage-service.yaml and redacts the database URL") {
  const auto bin = built_binary("storage-service/storage-service");
  const std::string config = std::string(COOKIEFS_SOURCE_DIR) + "/config/storage-service.yaml";
  ::setenv("COOKIEFS_DATABASE_URL", "postgresql://cookiefs:hunter2@db.example:5432/cookiefs", 1);
  auto [code, out] = run_and_capture({bin, "--config", config, "--print-config"});
  CHECK_MESSAGE(code == 0, out);
  CHECK(out.find("listen: 0.0.0.0:7070\n") != std::string::npos);
  CHECK(out.find("metrics_listen: 0.0.0.0:9102\n") != std::string::npos);
  CHECK(out.find("database.pool_size: 8\n") != std::string::npos);
  CHECK(out.find("database.url: <redacted>\n") != std::string::npos);
  CHECK(out.find("hunter2") == std::string::npos);

  // Flags override the file, and the result is still checked.
  std::tie(code, out) =
      run_and_capture({bin, "--config", config, "--server-threads", "7", "--print-config"});
  CHECK(code == 0);
  CHECK(out.find("server.threads: 7\n") != std::string::npos);
  std::tie(code, out) =
      run_and_capture({bin, "--config", config, "--listen", "nowhere", "--print-config"});
  CHECK(code == 2);
  CHECK(out.find("listen") != std::string::npos);

  // Without a URL the configuration is incomplete: a usage error, not a dump.
  ::unsetenv("COOKIEFS_DATABASE_URL");
  std::tie(code, out) = run_and_capture({bin, "--config", config, "--print-config"});
  CHECK(code == 2);
  CHECK(out.find("database.url") != std::string::npos);
}
