// Server; see server.hpp.
#include "server.hpp"

#include <spdlog/spdlog.h>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/redirect_error.hpp>
#include <asio/steady_timer.hpp>
#include <asio/strand.hpp>
#include <asio/use_awaitable.hpp>

#include <vector>

#include "service_config.hpp"
#include "tls_context.hpp"

namespace cookiefs::storage {

Server::Server(asio::io_context& io, ServiceContext& ctx) : io_(io), ctx_(ctx), acceptor_(io) {}

void Server::listen(const std::string& host, std::uint16_t port) {
  const auto address = asio::ip::make_address(host.empty() ? "0.0.0.0" : host);
  asio::ip::tcp::endpoint ep(address, port);
  acceptor_.open(ep.protocol());
  acceptor_.set_option(asio::ip::tcp::acceptor::reuse_address(true));
  acceptor_.bind(ep);
  acceptor_.listen(asio::socket_base::max_listen_connections);
}

std::uint16_t Server::port() const {
  return acceptor_.local_endpoint().port();
}

void Server::start() {
  asio::co_spawn(io_, accept_loop(), asio::detached);
}

void Server::recheck_credentials() {
  std::vector<std::shared_ptr<Connection>> open;
  {
    std::lock_guard lock(mu_);
    for (auto& [ptr, weak] : connections_) {
      if (auto c = weak.lock()) open.push_back(std::move(c));
    }
  }
  for (auto& c : open) c->recheck_credentials();
}

void Server::forget(Connection* c) {
  std::lock_guard lock(mu_);
  connections_.erase(c);
}

asio::awaitable<void> Server::accept_loop() {
  while (acceptor_.is_open()) {
    asio::error_code ec;
    auto socket = co_await acceptor_.async_accept(asio::make_strand(io_),
                                                  asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor_.is_open()) break;
      // EMFILE and friends: back off briefly instead of spinning.
      spdlog::warn("accept failed: {}", ec.message());
      asio::steady_timer t(io_, std::chrono::milliseconds(100));
      co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    std::shared_ptr<Connection> conn;
    {
      std::lock_guard lock(mu_);
      if (static_cast<std::int64_t>(connections_.size()) >= ctx_.config.max_connections) {
        spdlog::warn("refusing a connection: server.max_connections ({}) reached",
                     ctx_.config.max_connections);
        continue;
      }
      conn =
          std::make_shared<Connection>(std::move(socket), ctx_.tls ? ctx_.tls->current() : nullptr,
                                       ctx_, [this](Connection* c) { forget(c); });
      connections_[conn.get()] = conn;
    }
    conn->start();
  }
}

asio::awaitable<void> Server::shutdown(std::chrono::milliseconds grace) {
  asio::error_code ec;
  acceptor_.close(ec);
  ctx_.stopping = true;
  const auto deadline = std::chrono::steady_clock::now() + grace;
  asio::steady_timer t(io_);
  while (ctx_.in_flight > 0 && std::chrono::steady_clock::now() < deadline) {
    t.expires_after(std::chrono::milliseconds(20));
    co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  if (ctx_.in_flight > 0) {
    spdlog::warn("shutdown grace over with {} requests still in flight", ctx_.in_flight.load());
  }
  // Replies already queued get a moment to leave before the sockets close.
  t.expires_after(std::chrono::milliseconds(50));
  co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  std::vector<std::shared_ptr<Connection>> open;
  {
    std::lock_guard lock(mu_);
    for (auto& [ptr, weak] : connections_) {
      if (auto c = weak.lock()) open.push_back(std::move(c));
    }
  }
  for (auto& c : open) c->close();
}

}  // namespace cookiefs::storage
