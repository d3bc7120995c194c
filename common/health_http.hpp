// HealthHttpServer: the small HTTP/1.1 endpoint every cookiefs binary offers
// to Prometheus and to Kubernetes probes, on one port:
//   GET /metrics  Prometheus text format of the registered collectables
//   GET /healthz  200 "ok" while the process runs (liveness)
//   GET /readyz   200 "ready" when the readiness check says so, else 503 with
//                 the check's one-line reason (readiness; a draining replica
//                 answers 503 so the load balancer stops sending it work)
// HEAD is answered like GET without a body. prometheus-cpp's Exposer serves
// /metrics only, which is why this exists.
//
// Deliberately minimal and hostile-input safe: one request per connection
// (the response closes it), a bounded request head, a deadline per
// connection, a bound on connections at once. It runs on its own thread and
// io_context so a probe is answered even while the service's own threads are
// busy.
//
// Thread-safety: the constructor binds and starts the thread; the destructor
// stops and joins it. add_collectable() may be called from any thread. The
// readiness check runs on the server's thread and must be thread-safe and
// quick (it should read state, not probe a database).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>

namespace prometheus {
class Collectable;
}

namespace cookiefs {

// Parses the HOST:PORT a server listens on ("[v6]:port" allowed, empty host =
// 0.0.0.0, port 0-65535). Throws std::invalid_argument naming the text.
std::pair<std::string, std::uint16_t> parse_listen(const std::string& text);

struct Readiness {
  bool ready = true;
  std::string reason;  // one line; shown in the 503 body

  static Readiness yes() { return {true, {}}; }
  static Readiness no(std::string why) { return {false, std::move(why)}; }
};

class HealthHttpServer {
 public:
  using ReadinessCheck = std::function<Readiness()>;

  struct Options {
    std::size_t max_request_bytes = 8192;       // request line + headers
    std::chrono::milliseconds timeout{10'000};  // whole exchange, per connection
    std::size_t max_connections = 64;
  };

  // listen is HOST:PORT ("[v6]:port" allowed; port 0 picks a free one).
  // Throws std::system_error when the address cannot be bound and
  // std::invalid_argument when it is not HOST:PORT.
  HealthHttpServer(const std::string& listen, ReadinessCheck ready);
  HealthHttpServer(const std::string& listen, ReadinessCheck ready, Options options);
  ~HealthHttpServer();
  HealthHttpServer(const HealthHttpServer&) = delete;
  HealthHttpServer& operator=(const HealthHttpServer&) = delete;

  // Served by /metrics, in the order added; held weakly, like prometheus-cpp's
  // Exposer, so a registry may go away first.
  void add_collectable(const std::weak_ptr<prometheus::Collectable>& collectable);
  void set_readiness(ReadinessCheck ready);

  std::uint16_t port() const;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace cookiefs
