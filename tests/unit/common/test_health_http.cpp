// HealthHttpServer: the three endpoints, readiness changes, and hostile or
// idle clients, against a real socket on 127.0.0.1.
#include <doctest/doctest.h>
#include <prometheus/counter.h>
#include <prometheus/registry.h>
#include <asio/connect.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/read.hpp>
#include <asio/write.hpp>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "health_http.hpp"

using cookiefs::HealthHttpServer;
using cookiefs::Readiness;

namespace {

struct Reply {
  int status = 0;
  std::string head;
  std::string body;
};

// Sends raw bytes, then reads until the server closes (it always does).
std::string round_trip(std::uint16_t port, const std::string& request) {
  asio::io_context io;
  asio::ip::tcp::socket s(io);
  s.connect({asio::ip::make_address("127.0.0.1"), port});
  asio::error_code ec;
  asio::write(s, asio::buffer(request), ec);
  std::string out;
  asio::read(s, asio::dynamic_buffer(out), ec);  // to EOF
  return out;
}

Reply parse(const std::string& raw) {
  Reply r;
  const auto end = raw.find("\r\n\r\n");
  REQUIRE_MESSAGE(end != std::string::npos, raw);
  r.head = raw.substr(0, end);
  r.body = raw.substr(end + 4);
  REQUIRE(r.head.starts_with("HTTP/1.1 "));
  r.status = std::stoi(r.head.substr(9, 3));
  return r;
}

Reply get(std::uint16_t port, const std::string& path, const std::string& method = "GET") {
  return parse(round_trip(port, method + " " + path + " HTTP/1.1\r\nHost: x\r\n\r\n"));
}

}  // namespace

TEST_CASE("health endpoint: healthz, readyz and metrics") {
  auto registry = std::make_shared<prometheus::Registry>();
  auto& counter = prometheus::BuildCounter()
                      .Name("cookiefs_test_things_total")
                      .Help("Things")
                      .Register(*registry)
                      .Add({{"result", "ok"}});
  counter.Increment(3);
  std::atomic<bool> ready{false};
  HealthHttpServer server("127.0.0.1:0", [&] {
    return ready ? Readiness::yes() : Readiness::no("starting: not yet\nsecond line");
  });
  server.add_collectable(registry);
  const auto port = server.port();
  REQUIRE(port != 0);

  auto r = get(port, "/healthz");
  CHECK(r.status == 200);
  CHECK(r.body == "ok\n");
  CHECK(r.head.find("Connection: close") != std::string::npos);
  CHECK(r.head.find("Content-Length: 3") != std::string::npos);

  r = get(port, "/readyz");
  CHECK(r.status == 503);
  CHECK(r.body == "starting: not yet second line\n");  // always one line
  ready = true;
  r = get(port, "/readyz");
  CHECK(r.status == 200);
  CHECK(r.body == "ready\n");

  r = get(port, "/metrics");
  CHECK(r.status == 200);
  CHECK(r.head.find("text/plain; version=0.0.4") != std::string::npos);
  CHECK(r.body.find("cookiefs_test_things_total{result=\"ok\"} 3") != std::string::npos);
  counter.Increment();
  CHECK(get(port, "/metrics?x=1").body.find("cookiefs_test_things_total{result=\"ok\"} 4") !=
        std::string::npos);

  // A registry that went away is skipped, not dereferenced.
  registry.reset();
  r = get(port, "/metrics");
  CHECK(r.status == 200);
  CHECK(r.body.find("cookiefs_test_things_total") == std::string::npos);
}

TEST_CASE("health endpoint: readiness can be replaced and may throw") {
  HealthHttpServer server("127.0.0.1:0", nullptr);
  CHECK(get(server.port(), "/readyz").status == 200);  // no check: ready
  server.set_readiness([]() -> Readiness { throw std::runtime_error("boom"); });
  auto r = get(server.port(), "/readyz");
  CHECK(r.status == 503);
  CHECK(r.body == "readiness check failed: boom\n");
  server.set_readiness([] { return Readiness::no(""); });
  CHECK(get(server.port(), "/readyz").body == "not ready\n");
  CHECK(get(server.port(), "/healthz").status == 200);
}

TEST_CASE("health endpoint: methods, paths and malformed requests") {
  HealthHttpServer server("127.0.0.1:0", [] { return Readiness::no("draining"); });
  const auto port = server.port();

  CHECK(get(port, "/nope").status == 404);
  auto r = get(port, "/healthz", "POST");
  CHECK(r.status == 405);
  CHECK(r.head.find("Allow: GET, HEAD") != std::string::npos);
  r = get(port, "/readyz", "HEAD");
  CHECK(r.status == 503);
  CHECK(r.body.empty());
  CHECK(r.head.find("Content-Length: 9") != std::string::npos);  // "draining\n"

  // Bare LF line ends are accepted.
  CHECK(parse(round_trip(port, "GET /healthz HTTP/1.0\n\n")).status == 200);
  CHECK(parse(round_trip(port, "hello\r\n\r\n")).status == 400);
  CHECK(parse(round_trip(port, "GET /healthz SPDY/3\r\n\r\n")).status == 400);

  // A head over the bound: 431, and the server stays up.
  const std::string huge =
      "GET /healthz HTTP/1.1\r\nX-Filler: " + std::string(64 * 1024, 'a') + "\r\n\r\n";
  CHECK(parse(round_trip(port, huge)).status == 431);
  // A client that hangs up mid-request costs nothing.
  {
    asio::io_context io;
    asio::ip::tcp::socket s(io);
    s.connect({asio::ip::make_address("127.0.0.1"), port});
    asio::write(s, asio::buffer(std::string("GET /hea")));
  }
  CHECK(get(port, "/healthz").status == 200);
}

TEST_CASE("health endpoint: an idle client is disconnected after the timeout") {
  HealthHttpServer server(
      "127.0.0.1:0", nullptr,
      {.max_request_bytes = 1024, .timeout = std::chrono::milliseconds(300), .max_connections = 4});
  asio::io_context io;
  std::vector<asio::ip::tcp::socket> idle;
  for (int i = 0; i < 4; ++i) {
    idle.emplace_back(io);
    idle.back().connect({asio::ip::make_address("127.0.0.1"), server.port()});
  }
  // Every slot is taken by a silent client; each is closed by the deadline
  // (the read sees EOF or a reset), after which the server answers again.
  for (auto& s : idle) {
    std::string out;
    asio::error_code ec;
    asio::read(s, asio::dynamic_buffer(out), ec);
    CHECK(ec);
    CHECK(out.empty());
  }
  // The slots free up as the closed connections finish: poll, don't race.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  std::string raw;
  while (std::chrono::steady_clock::now() < deadline) {
    raw = round_trip(server.port(), "GET /healthz HTTP/1.1\r\n\r\n");
    if (!raw.empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  CHECK(parse(raw).status == 200);
}

TEST_CASE("health endpoint: bad listen addresses") {
  CHECK_THROWS_AS(HealthHttpServer("no-port", nullptr), std::invalid_argument);
  CHECK_THROWS_AS(HealthHttpServer("127.0.0.1:99999", nullptr), std::invalid_argument);
  HealthHttpServer first("127.0.0.1:0", nullptr);
  CHECK_THROWS_AS(HealthHttpServer("127.0.0.1:" + std::to_string(first.port()), nullptr),
                  std::system_error);
}
