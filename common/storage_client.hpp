// StorageClient: the one client of the storage-service protocol, used by the
// cookiefs mount, the engine-shim and the tests.
//
// Thread-safety: every public method may be called from any thread. The client
// owns one I/O thread running an asio::io_context; callbacks (replies, events,
// connection-state changes) run on that thread and must not block on another
// call_sync() (that would deadlock) — hand work off instead.
//
// Connection: one TCP connection to one endpoint at a time, chosen from the
// endpoint list in order; on failure it moves to the next endpoint with
// capped exponential back-off, sends Hello, then replays the subscriptions.
// Many requests are in flight at once, matched by request id.
//
// Retries: a request that fails because the connection broke, or with a
// retryable error (UNAVAILABLE, SHUTTING_DOWN), is re-sent until its deadline.
// This is safe because every operation is idempotent (commits carry an
// idempotency key; see CommitSession).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "cookiefs.pb.h"
#include "frame.hpp"

namespace cookiefs {

// TLS towards the storage service (its tls.mode: on). The server's
// certificate must chain to ca_file and name server_name (a DNS name or an IP
// address); a client certificate is shown when cert_file is set (mutual TLS).
struct ClientTls {
  bool enabled = false;
  std::string ca_file;      // PEM bundle; "" = the system's default trust store
  std::string server_name;  // "" = the host part of each endpoint
  std::string cert_file;    // PEM chain of this client (optional)
  std::string key_file;     // its private key
};

struct ClientOptions {
  std::vector<std::string> endpoints;  // "host:port"
  std::string namespace_name = "default";
  std::string engine_id;  // empty for the shim / NM
  std::string token;
  std::string client_name = "cookiefs";
  std::chrono::milliseconds connect_timeout{2000};
  std::chrono::milliseconds request_timeout{15000};  // default deadline incl. retries
  std::chrono::milliseconds reconnect_backoff_max{2000};
  // Keep-alive: after ping_interval without a byte from the service, a Ping;
  // after ping_timeout without one, the peer counts as hung and the client
  // reconnects (to the next endpoint). 0 disables.
  std::chrono::milliseconds ping_interval{1000};
  std::chrono::milliseconds ping_timeout{5000};
  std::uint64_t max_frame_bytes = kDefaultMaxFrameBytes;
  ClientTls tls;
};

// A failed request: the server's typed error, or a local one (UNAVAILABLE when
// no endpoint answered before the deadline, INTERNAL for a protocol violation).
class RequestError : public std::runtime_error {
 public:
  explicit RequestError(wire::Error e) : std::runtime_error(e.message()), error_(std::move(e)) {}
  const wire::Error& error() const { return error_; }
  wire::ErrorCode code() const { return error_.code(); }

 private:
  wire::Error error_;
};

class StorageClient {
 public:
  // A reply envelope whose body is the operation's reply, or error set.
  struct Result {
    bool ok() const { return !has_error; }
    bool has_error = false;
    wire::Error error;
    wire::Envelope reply;
  };
  using Callback = std::function<void(Result)>;
  using EventHandler = std::function<void(const wire::Event&)>;
  using StateHandler = std::function<void(bool connected)>;
  using HelloHandler = std::function<void(const wire::HelloReply&)>;

  // Throws std::invalid_argument for a bad endpoint and std::runtime_error
  // for TLS files that do not load (naming the file).
  explicit StorageClient(ClientOptions options);
  ~StorageClient();  // stop()s
  StorageClient(const StorageClient&) = delete;
  StorageClient& operator=(const StorageClient&) = delete;

  // Handlers must be set before start().
  void on_event(EventHandler handler);
  void on_connection_state(StateHandler handler);
  // Called with each HelloReply (the service's limits), on every connection,
  // before requests are sent on it and before on_connection_state(true).
  void on_hello(HelloHandler handler);

  void start();  // starts the I/O thread and connects in the background
  void stop();   // fails pending requests with SHUTTING_DOWN, joins the thread

  bool connected() const;
  const std::string& current_endpoint() const;  // "" when not connected
  std::uint64_t reconnects() const;

  // Sends request (request_id is assigned here); cb gets exactly one Result.
  // timeout 0 = options.request_timeout.
  void call(wire::Envelope request, Callback cb,
            std::chrono::milliseconds timeout = std::chrono::milliseconds(0));

  // Blocking form: returns the reply envelope or throws RequestError.
  // Never call from a callback (the I/O thread).
  wire::Envelope call_sync(wire::Envelope request,
                           std::chrono::milliseconds timeout = std::chrono::milliseconds(0));

  // Typed blocking wrappers.
  wire::FetchReply fetch(const wire::FetchSession& req);
  wire::CommitReply commit(const wire::CommitSession& req);
  wire::AssignReply assign(const wire::Assign& req,
                           std::chrono::milliseconds timeout = std::chrono::milliseconds(0));
  wire::ListReply list(const wire::ListSessions& req);
  void delete_session(const wire::DeleteSession& req);
  void release(const wire::Release& req);
  void drain_done(const wire::DrainDone& req);
  void session_ready(const wire::SessionReady& req);

  // Subscriptions are remembered and replayed after every reconnect.
  void subscribe(const std::vector<std::string>& session_ids, bool all_sessions = false);
  void unsubscribe(const std::vector<std::string>& session_ids);

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// Parses "host:port" (IPv6 as "[::1]:7070"). Throws std::invalid_argument.
std::pair<std::string, std::uint16_t> parse_endpoint(const std::string& endpoint);

}  // namespace cookiefs
