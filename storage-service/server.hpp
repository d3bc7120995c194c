// Server: the acceptor and the set of live connections of one replica, and
// the orderly shutdown: stop accepting, let in-flight requests finish (bounded
// by server.shutdown_grace), close every connection.
//
// Thread-safety: listen() and start() from main before the io_context runs;
// shutdown() is a coroutine on the io_context; the connection set is guarded
// by a mutex because connections close on their own strands.
#pragma once

#include <asio/awaitable.hpp>
#include <asio/io_context.hpp>
#include <asio/ip/tcp.hpp>

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "connection.hpp"

namespace cookiefs::storage {

class Server {
 public:
  Server(asio::io_context& io, ServiceContext& ctx);

  // Binds and listens; throws std::system_error when the address is taken.
  void listen(const std::string& host, std::uint16_t port);
  std::uint16_t port() const;
  void start();
  asio::awaitable<void> shutdown(std::chrono::milliseconds grace);
  // After a reload of the credentials: every connection checks its token
  // again and closes when it is no longer valid; the others carry on.
  void recheck_credentials();

 private:
  asio::awaitable<void> accept_loop();
  void forget(Connection* c);

  asio::io_context& io_;
  ServiceContext& ctx_;
  asio::ip::tcp::acceptor acceptor_;
  std::mutex mu_;
  std::unordered_map<Connection*, std::weak_ptr<Connection>> connections_;  // guarded by mu_
};

}  // namespace cookiefs::storage
