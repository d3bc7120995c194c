// HealthHttpServer; see health_http.hpp.
#include "health_http.hpp"

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>
#include <prometheus/text_serializer.h>
#include <spdlog/spdlog.h>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/read_until.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>

#include <charconv>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

namespace cookiefs {
namespace {
struct HeadEnd;
}
}  // namespace cookiefs

template <>
struct asio::is_match_condition<cookiefs::HeadEnd> : std::true_type {};

namespace cookiefs {
namespace {

using asio::ip::tcp;

struct Response {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  bool allow_header = false;  // 405 says what is allowed
};

const char* reason_phrase(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 400:
      return "Bad Request";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    default:
      return "Unknown";
  }
}

std::string render(const Response& r, bool with_body) {
  std::string out = "HTTP/1.1 " + std::to_string(r.status) + " " + reason_phrase(r.status) + "\r\n";
  out += "Content-Type: " + r.content_type + "\r\n";
  out += "Content-Length: " + std::to_string(r.body.size()) + "\r\n";
  if (r.allow_header) out += "Allow: GET, HEAD\r\n";
  out += "Cache-Control: no-store\r\nConnection: close\r\n\r\n";
  if (with_body) out += r.body;
  return out;
}

// The end of a request head: an empty line, with CRLF or (leniently) LF.
struct HeadEnd {
  template <typename Iterator>
  std::pair<Iterator, bool> operator()(Iterator begin, Iterator end) const {
    for (auto it = begin; it != end; ++it) {
      if (*it != '\n') continue;
      auto next = it + 1;
      if (next != end && *next == '\n') return {next + 1, true};
      if (next != end && *next == '\r' && next + 1 != end && *(next + 1) == '\n') {
        return {next + 2, true};
      }
    }
    return {begin, false};
  }
};

}  // namespace

std::pair<std::string, std::uint16_t> parse_listen(const std::string& text) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos) {
    throw std::invalid_argument("expected HOST:PORT, got \"" + text + "\"");
  }
  std::string host = text.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  const std::string port_text = text.substr(colon + 1);
  unsigned port = 0;
  auto [p, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (port_text.empty() || ec != std::errc() || p != port_text.data() + port_text.size() ||
      port > 65535) {
    throw std::invalid_argument("expected HOST:PORT with a port 0-65535, got \"" + text + "\"");
  }
  return {host.empty() ? "0.0.0.0" : host, static_cast<std::uint16_t>(port)};
}

struct HealthHttpServer::State {
  Options options;
  asio::io_context io{1};
  tcp::acceptor acceptor{io};
  std::size_t open = 0;  // connections being served; io thread only
  std::thread thread;

  std::mutex mu;
  std::vector<std::weak_ptr<prometheus::Collectable>> collectables;  // guarded by mu
  ReadinessCheck ready;                                              // guarded by mu

  Response respond(const std::string& method, const std::string& path);
  Response metrics();
  Response readiness();
  asio::awaitable<void> accept_loop();
  asio::awaitable<void> serve(tcp::socket socket);
};

Response HealthHttpServer::State::metrics() {
  std::vector<std::shared_ptr<prometheus::Collectable>> live;
  {
    std::lock_guard lock(mu);
    for (const auto& weak : collectables) {
      if (auto c = weak.lock()) live.push_back(std::move(c));
    }
  }
  std::vector<prometheus::MetricFamily> families;
  for (const auto& c : live) {
    auto f = c->Collect();
    families.insert(families.end(), std::make_move_iterator(f.begin()),
                    std::make_move_iterator(f.end()));
  }
  Response r;
  r.content_type = "text/plain; version=0.0.4; charset=utf-8";
  r.body = prometheus::TextSerializer().Serialize(families);
  return r;
}

Response HealthHttpServer::State::readiness() {
  ReadinessCheck check;
  {
    std::lock_guard lock(mu);
    check = ready;
  }
  Readiness state;
  try {
    if (check) state = check();
  } catch (const std::exception& e) {
    state = Readiness::no(std::string("readiness check failed: ") + e.what());
  }
  if (state.ready) return {.status = 200, .body = "ready\n"};
  std::string reason = state.reason.empty() ? std::string("not ready") : state.reason;
  for (char& c : reason) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return {.status = 503, .body = reason + "\n"};
}

Response HealthHttpServer::State::respond(const std::string& method, const std::string& path) {
  if (path != "/metrics" && path != "/healthz" && path != "/readyz") {
    return {.status = 404, .body = "not found\n"};
  }
  if (method != "GET" && method != "HEAD") {
    return {.status = 405, .body = "method not allowed\n", .allow_header = true};
  }
  if (path == "/metrics") return metrics();
  if (path == "/healthz") return {.status = 200, .body = "ok\n"};
  return readiness();
}

asio::awaitable<void> HealthHttpServer::State::serve(tcp::socket socket) {
  // The deadline closes the socket under whatever operation is pending, so a
  // client that trickles bytes or never reads cannot hold a slot for long.
  asio::steady_timer deadline(io);
  deadline.expires_after(options.timeout);
  bool timed_out = false;
  deadline.async_wait([&socket, &timed_out](const asio::error_code& ec) {
    if (ec) return;
    timed_out = true;
    asio::error_code ignored;
    socket.close(ignored);
  });

  std::string head;
  asio::error_code ec;
  co_await asio::async_read_until(socket, asio::dynamic_buffer(head, options.max_request_bytes),
                                  HeadEnd{}, asio::redirect_error(asio::use_awaitable, ec));
  Response response;
  bool head_only = false;
  bool reply = true;
  if (ec == asio::error::not_found) {
    response = {.status = 431, .body = "request too large\n"};
  } else if (ec) {
    reply = false;  // hung up, reset or timed out: nobody to answer
  } else {
    const auto line_end = head.find_first_of("\r\n");
    const std::string line = head.substr(0, line_end);
    const auto sp1 = line.find(' ');
    const auto sp2 = sp1 == std::string::npos ? sp1 : line.find(' ', sp1 + 1);
    if (sp1 == std::string::npos || sp2 == std::string::npos ||
        !line.substr(sp2 + 1).starts_with("HTTP/1.")) {
      response = {.status = 400, .body = "bad request\n"};
    } else {
      const std::string method = line.substr(0, sp1);
      std::string target = line.substr(sp1 + 1, sp2 - sp1 - 1);
      target = target.substr(0, target.find('?'));
      head_only = method == "HEAD";
      try {
        response = respond(method, target);
      } catch (const std::exception& e) {
        spdlog::warn("health endpoint failed: {}", e.what());
        response = {.status = 500, .body = "internal error\n"};
      }
    }
  }
  if (reply && !timed_out) {
    const std::string out = render(response, !head_only);
    co_await asio::async_write(socket, asio::buffer(out),
                               asio::redirect_error(asio::use_awaitable, ec));
  }
  deadline.cancel();
  asio::error_code ignored;
  socket.shutdown(tcp::socket::shutdown_both, ignored);
  socket.close(ignored);
  // Not RAII on purpose: frames destroyed unrun at shutdown must not touch us.
  --open;
}

asio::awaitable<void> HealthHttpServer::State::accept_loop() {
  while (acceptor.is_open()) {
    asio::error_code ec;
    tcp::socket socket =
        co_await acceptor.async_accept(asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
      // EMFILE and friends: back off instead of spinning.
      spdlog::warn("health endpoint: accept failed: {}", ec.message());
      asio::steady_timer pause(io, std::chrono::milliseconds(100));
      co_await pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    if (open >= options.max_connections) {
      asio::error_code ignored;
      socket.close(ignored);
      continue;
    }
    ++open;
    asio::co_spawn(io, serve(std::move(socket)), asio::detached);
  }
}

HealthHttpServer::HealthHttpServer(const std::string& listen, ReadinessCheck ready)
    : HealthHttpServer(listen, std::move(ready), Options{}) {}

HealthHttpServer::HealthHttpServer(const std::string& listen, ReadinessCheck ready, Options options)
    : state_(std::make_unique<State>()) {
  state_->options = options;
  state_->ready = std::move(ready);
  const auto [host, port] = parse_listen(listen);
  const tcp::endpoint ep(asio::ip::make_address(host), port);
  state_->acceptor.open(ep.protocol());
  state_->acceptor.set_option(tcp::acceptor::reuse_address(true));
  state_->acceptor.bind(ep);
  state_->acceptor.listen();
  asio::co_spawn(state_->io, state_->accept_loop(), asio::detached);
  state_->thread = std::thread([s = state_.get()] { s->io.run(); });
}

HealthHttpServer::~HealthHttpServer() {
  state_->io.stop();
  if (state_->thread.joinable()) state_->thread.join();
  // Unfinished connection frames die with the io_context, before the acceptor
  // they never touch again.
  asio::error_code ignored;
  state_->acceptor.close(ignored);
}

void HealthHttpServer::add_collectable(const std::weak_ptr<prometheus::Collectable>& collectable) {
  std::lock_guard lock(state_->mu);
  state_->collectables.push_back(collectable);
}

void HealthHttpServer::set_readiness(ReadinessCheck ready) {
  std::lock_guard lock(state_->mu);
  state_->ready = std::move(ready);
}

std::uint16_t HealthHttpServer::port() const {
  return state_->acceptor.local_endpoint().port();
}

}  // namespace cookiefs
