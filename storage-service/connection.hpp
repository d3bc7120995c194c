// Connection: one client connection. A reader coroutine decodes frames and
// starts one handler coroutine per request (at most
// server.max_in_flight_per_connection at a time: beyond that it stops reading,
// which pushes back on the client); a writer coroutine sends replies and
// pushed events in order. Everything of one connection runs on its strand; SQL
// runs on PgPool's threads and resumes here.
//
// Malformed input (bad header, oversized or undecodable frame, a request with
// id 0) is logged at warn with a reason — never contents — and closes this
// connection only. A refused hello (authentication.hpp) is answered with
// UNAUTHENTICATED and the connection closed once the reply is out; every
// request is authorized (authorization.hpp) before it is run.
//
// Thread-safety: push_event(), close() and recheck_credentials() may be
// called from any thread; the rest is internal to the strand.
#pragma once

#include <asio/awaitable.hpp>
#include <asio/ip/tcp.hpp>
#include <asio/ssl/context.hpp>
#include <asio/ssl/stream.hpp>
#include <asio/steady_timer.hpp>

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>

#include "authentication.hpp"
#include "commit_plan.hpp"
#include "cookiefs.pb.h"
#include "pg_store.hpp"
#include "subscriber_hub.hpp"

namespace cookiefs::storage {

struct ServiceConfig;
class PgPool;
class CommitBatcher;
class Handoff;
class Metrics;
class TlsContexts;

// What every connection of this replica shares. Outlives all connections.
struct ServiceContext {
  const ServiceConfig& config;
  Limits limits;
  PgPool& pool;
  CommitBatcher& commits;
  SubscriberHub& hub;
  Handoff& handoff;
  Metrics& metrics;
  Authenticator& auth;
  TlsContexts* tls = nullptr;  // null: plaintext (tls.mode off)
  std::string server_id;
  std::atomic<bool> stopping{false};
  std::atomic<std::int64_t> in_flight{0};  // requests being handled, all connections
};

class Connection final : public EventSink, public std::enable_shared_from_this<Connection> {
 public:
  // tls: the context of a TLS listener (the handshake runs first), or null.
  Connection(asio::ip::tcp::socket socket, std::shared_ptr<asio::ssl::context> tls,
             ServiceContext& ctx, std::function<void(Connection*)> on_closed);
  ~Connection() override;

  void start();
  void close();  // thread-safe, idempotent
  // After a reload of the credentials: closes the connection when its token
  // is no longer valid. Thread-safe.
  void recheck_credentials();
  void push_event(const wire::Event& event) override;

 private:
  asio::awaitable<void> read_loop();
  asio::awaitable<void> write_loop();
  asio::awaitable<void> handle(wire::Envelope request);
  asio::awaitable<wire::Envelope> dispatch(const wire::Envelope& request);
  asio::awaitable<wire::AssignReply> assign(const wire::Assign& req);
  void hello(const wire::Envelope& request);
  void send(const wire::Envelope& env);  // on the strand
  void close_now();                      // on the strand
  void close_after_replies();            // on the strand: stop reading, flush, close
  bool credentials_still_valid();        // on the strand

  asio::ip::tcp::socket& tcp() { return tls_ ? tls_->next_layer() : socket_; }
  asio::awaitable<bool> tls_handshake();

  asio::ip::tcp::socket socket_;  // moved into tls_ on a TLS connection
  std::shared_ptr<asio::ssl::context> tls_context_;
  std::unique_ptr<asio::ssl::stream<asio::ip::tcp::socket>> tls_;
  ServiceContext& ctx_;
  std::function<void(Connection*)> on_closed_;
  asio::steady_timer wake_writer_;
  asio::steady_timer slot_free_;
  std::deque<std::string> out_;
  std::size_t out_bytes_ = 0;
  bool closed_ = false;
  bool greeted_ = false;
  bool closing_ = false;  // close_after_replies() was called
  std::string peer_;      // remote address, for logs
  Identity identity_;
  Scope scope_;
  SubscriberHub::Id hub_id_ = 0;
  std::int64_t in_flight_ = 0;
};

}  // namespace cookiefs::storage
