// StorageClient implementation: one I/O thread, one connection coroutine that
// walks the endpoint list, and a table of in-flight requests keyed by request id.
//
// Thread-safety: all state below "I/O thread only" is touched exclusively by
// handlers running on io_; public methods reach it by asio::post. The few
// fields read from other threads are atomics (connected_, endpoint_index_,
// reconnects_) or guarded by life_mutex_ (stopped_ vs. posting, see call()).
#include "storage_client.hpp"

#include <asio.hpp>
#include <asio/ssl.hpp>
#include <atomic>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <thread>

#include <spdlog/spdlog.h>

#include "version.hpp"

namespace cookiefs {

namespace {

using asio::ip::tcp;
using namespace std::chrono_literals;

constexpr auto kInitialBackoff = 50ms;
constexpr auto kRetryBackoffMax = 1000ms;

wire::Error make_error(wire::ErrorCode code, std::string message, bool retryable = false) {
  wire::Error e;
  e.set_code(code);
  e.set_message(std::move(message));
  e.set_retryable(retryable);
  return e;
}

bool is_retryable(const wire::Error& e) {
  return e.retryable() || e.code() == wire::UNAVAILABLE || e.code() == wire::SHUTTING_DOWN;
}

// One TCP connection attempt and, once Hello is answered, one live session.
struct Connection {
  explicit Connection(asio::io_context& io)
      : socket(io), resolver(io), watchdog(io), keepalive(io) {}
  tcp::socket socket;
  std::unique_ptr<asio::ssl::stream<tcp::socket&>> tls;  // over socket, when TLS is on
  tcp::resolver resolver;
  asio::steady_timer watchdog;                         // connect + Hello deadline
  asio::steady_timer keepalive;                        // ping cadence once ready
  std::chrono::steady_clock::time_point last_heard{};  // any byte from the service
  std::deque<std::string> outbox;
  bool writing = false;
  bool ready = false;  // HelloReply received
  bool hello_refused = false;
  std::uint64_t hello_id = 0;
  std::uint64_t max_frame_bytes = kDefaultMaxFrameBytes;
  std::size_t endpoint_index = 0;

  void close() {
    std::error_code ignored;
    resolver.cancel();
    watchdog.cancel();
    keepalive.cancel();
    socket.shutdown(tcp::socket::shutdown_both, ignored);
    socket.close(ignored);
  }
};

// A request the caller is still waiting for.
struct Pending {
  std::string frame;  // encoded once, re-sent verbatim on retry (same id, same key)
  StorageClient::Callback callback;
  std::unique_ptr<asio::steady_timer> deadline;
  std::unique_ptr<asio::steady_timer> retry;
  std::chrono::milliseconds timeout{0};
  std::chrono::milliseconds retry_backoff{0};
  bool sent = false;           // written on the current connection
  bool waiting_retry = false;  // backing off after a retryable error
  std::optional<wire::Error> last_error;
};

}  // namespace

std::unique_ptr<asio::ssl::context> make_tls_context(const ClientTls& t) {
  auto ctx = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
  SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
  const auto load = [](const char* what, const std::string& path, auto&& f) {
    try {
      f();
    } catch (const std::system_error& e) {
      throw std::runtime_error(path + ": cannot load the " + what + ": " + e.code().message());
    }
  };
  if (t.ca_file.empty()) {
    ctx->set_default_verify_paths();
  } else {
    load("CA bundle (tls.ca_file)", t.ca_file, [&] { ctx->load_verify_file(t.ca_file); });
  }
  if (!t.cert_file.empty()) {
    load("client certificate (tls.cert_file)", t.cert_file,
         [&] { ctx->use_certificate_chain_file(t.cert_file); });
    load("client key (tls.key_file)", t.key_file,
         [&] { ctx->use_private_key_file(t.key_file, asio::ssl::context::pem); });
  }
  ctx->set_verify_mode(asio::ssl::verify_peer);
  return ctx;
}

// Why a client handshake failed, in one line.
std::string tls_failure(SSL* ssl, const std::error_code& ec, const std::string& server_name) {
  const long verify = SSL_get_verify_result(ssl);
  if (verify == X509_V_ERR_HOSTNAME_MISMATCH || verify == X509_V_ERR_IP_ADDRESS_MISMATCH) {
    return "the server's certificate is not for \"" + server_name + "\" (tls.server_name)";
  }
  if (verify != X509_V_OK) {
    return std::string("the server's certificate was not accepted: ") +
           X509_verify_cert_error_string(verify) + " (check tls.ca_file)";
  }
  const std::string what = ec.message();
  if (what.find("wrong version number") != std::string::npos ||
      what.find("packet length too long") != std::string::npos || ec == asio::error::eof) {
    return what + " (is the server's port plaintext? then turn tls off in this client)";
  }
  return what;
}

class StorageClient::Impl {
 public:
  explicit Impl(ClientOptions options) : options_(std::move(options)), backoff_timer_(io_) {
    if (options_.endpoints.empty()) throw std::invalid_argument("no storage endpoint given");
    for (const auto& ep : options_.endpoints) parsed_.push_back(parse_endpoint(ep));
    if (options_.tls.enabled) tls_context_ = make_tls_context(options_.tls);
  }

  ~Impl() { stop(); }

  void start() {
    std::lock_guard lock(life_mutex_);
    if (started_ || stopped_) return;
    started_ = true;
    asio::co_spawn(io_, run(), asio::detached);
    thread_ = std::thread([this] {
      io_thread_id_ = std::this_thread::get_id();
      io_.run();
    });
  }

  void stop() {
    {
      std::lock_guard lock(life_mutex_);
      if (stopped_) return;
      stopped_ = true;
      // FIFO: every call() posted before this runs first and is then failed here.
      asio::post(io_, [this] { shutdown(); });
    }
    if (thread_.joinable()) {
      if (std::this_thread::get_id() == thread_.get_id()) {
        thread_.detach();  // stop() from a callback: the thread ends after this handler
      } else {
        thread_.join();
      }
    } else {
      io_.run();  // never started: run the queued calls and the shutdown here
    }
  }

  void call(wire::Envelope request, Callback cb, std::chrono::milliseconds timeout) {
    {
      std::lock_guard lock(life_mutex_);
      if (!stopped_) {
        asio::post(io_, [this, req = std::move(request), cb = std::move(cb), timeout]() mutable {
          submit(std::move(req), std::move(cb), timeout);
        });
        return;
      }
    }
    Result r;
    r.has_error = true;
    r.error = make_error(wire::SHUTTING_DOWN, "storage client is stopped");
    cb(std::move(r));
  }

  bool on_io_thread() const { return std::this_thread::get_id() == io_thread_id_.load(); }

  void subscribe(std::vector<std::string> ids, bool all, bool unsubscribe) {
    std::lock_guard lock(life_mutex_);
    if (stopped_) return;
    asio::post(io_, [this, ids = std::move(ids), all, unsubscribe] {
      wire::Envelope env;
      auto* sub = env.mutable_subscribe();
      for (const auto& id : ids) {
        if (unsubscribe) {
          subscriptions_.erase(id);
        } else {
          subscriptions_.insert(id);
        }
        sub->add_session_ids(id);
      }
      if (!unsubscribe && all) all_sessions_ = true;
      sub->set_all_sessions(!unsubscribe && all);
      sub->set_unsubscribe(unsubscribe);
      // While disconnected there is nothing to send: the replay after Hello covers it.
      if (conn_ && conn_->ready) send_fire_and_forget(std::move(env));
    });
  }

  ClientOptions options_;
  EventHandler event_handler_;
  StateHandler state_handler_;
  HelloHandler hello_handler_;
  std::atomic<bool> connected_{false};
  std::atomic<long> endpoint_index_{-1};
  std::atomic<std::uint64_t> reconnects_{0};

 private:
  // --- requests (I/O thread only) -------------------------------------------

  void submit(wire::Envelope req, Callback cb, std::chrono::milliseconds timeout) {
    if (stopping_) {
      fail(std::move(cb), make_error(wire::SHUTTING_DOWN, "storage client is stopped"));
      return;
    }
    const std::uint64_t id = next_id_++;
    req.set_request_id(id);
    Pending p;
    p.callback = std::move(cb);
    p.timeout = timeout.count() > 0 ? timeout : options_.request_timeout;
    try {
      p.frame = encode_frame(req, outgoing_limit());
    } catch (const FrameError& e) {
      fail(std::move(p.callback), make_error(wire::TOO_LARGE, e.what()));
      return;
    }
    p.deadline = std::make_unique<asio::steady_timer>(io_, p.timeout);
    p.deadline->async_wait([this, id](std::error_code ec) {
      if (!ec) expire(id);
    });
    auto& slot = pending_.emplace(id, std::move(p)).first->second;
    if (conn_ && conn_->ready) transmit(id, slot);
  }

  std::uint64_t outgoing_limit() const {
    return conn_ && conn_->ready ? std::min(options_.max_frame_bytes, conn_->max_frame_bytes)
                                 : options_.max_frame_bytes;
  }

  void transmit(std::uint64_t /*id*/, Pending& p) {
    p.sent = true;
    write(conn_, p.frame);
  }

  void send_fire_and_forget(wire::Envelope env) {
    const std::uint64_t id = next_id_++;
    env.set_request_id(id);
    internal_ids_.insert(id);
    write(conn_, encode_frame(env, outgoing_limit()));
  }

  void expire(std::uint64_t id) {
    auto it = pending_.find(id);
    if (it == pending_.end()) return;
    const auto ms = std::to_string(it->second.timeout.count());
    wire::Error e = it->second.last_error
                        ? make_error(wire::UNAVAILABLE,
                                     "storage unavailable after " + ms +
                                         " ms: " + it->second.last_error->message(),
                                     true)
                        : make_error(wire::UNAVAILABLE,
                                     "no storage endpoint answered within " + ms + " ms", true);
    complete(it, std::nullopt, std::move(e));
  }

  void complete(std::map<std::uint64_t, Pending>::iterator it, std::optional<wire::Envelope> reply,
                std::optional<wire::Error> error) {
    Callback cb = std::move(it->second.callback);
    pending_.erase(it);  // timers cancel on destruction
    Result r;
    if (reply) r.reply = std::move(*reply);
    if (error) {
      r.has_error = true;
      r.error = std::move(*error);
    }
    invoke(cb, std::move(r));
  }

  void fail(Callback cb, wire::Error e) {
    Result r;
    r.has_error = true;
    r.error = std::move(e);
    invoke(cb, std::move(r));
  }

  static void invoke(Callback& cb, Result r) {
    try {
      cb(std::move(r));
    } catch (const std::exception& e) {
      spdlog::error("storage client: reply callback threw: {}", e.what());
    }
  }

  void on_reply(wire::Envelope env) {
    const std::uint64_t id = env.request_id();
    if (internal_ids_.erase(id) > 0) {
      if (env.has_error()) {
        spdlog::warn("storage client: {} rejected: {}", env.has_pong() ? "ping" : "subscribe",
                     env.error().message());
      }
      return;
    }
    auto it = pending_.find(id);
    if (it == pending_.end()) return;  // late reply to a request that already timed out
    if (!env.has_error()) {
      complete(it, std::move(env), std::nullopt);
      return;
    }
    if (!is_retryable(env.error())) {
      wire::Error e = env.error();
      complete(it, std::move(env), std::move(e));
      return;
    }
    Pending& p = it->second;
    p.last_error = env.error();
    p.sent = false;
    p.waiting_retry = true;
    p.retry_backoff = std::clamp(p.retry_backoff * 2, std::chrono::milliseconds(kInitialBackoff),
                                 std::chrono::milliseconds(kRetryBackoffMax));
    if (!p.retry) p.retry = std::make_unique<asio::steady_timer>(io_);
    p.retry->expires_after(p.retry_backoff);
    p.retry->async_wait([this, id](std::error_code ec) {
      if (ec) return;
      auto it2 = pending_.find(id);
      if (it2 == pending_.end()) return;
      it2->second.waiting_retry = false;
      if (conn_ && conn_->ready && !it2->second.sent) transmit(id, it2->second);
    });
    // A replica that is shutting down will not serve us again: move on now.
    if (env.error().code() == wire::SHUTTING_DOWN && conn_) conn_->close();
  }

  void on_event(const wire::Envelope& env) {
    if (!env.has_event()) {
      spdlog::debug("storage client: ignoring unsolicited message without request id");
      return;
    }
    if (!event_handler_) return;
    try {
      event_handler_(env.event());
    } catch (const std::exception& e) {
      spdlog::error("storage client: event handler threw: {}", e.what());
    }
  }

  // --- connection (I/O thread only) -----------------------------------------

  void write(const std::shared_ptr<Connection>& c, std::string frame) {
    c->outbox.push_back(std::move(frame));
    if (!c->writing) write_next(c);
  }

  // One async_write at a time per connection; the handler chains the next frame.
  static void write_next(std::shared_ptr<Connection> c) {
    c->writing = true;
    auto done = [c](std::error_code ec, std::size_t) {
      c->outbox.pop_front();
      c->writing = false;
      if (ec) {
        c->close();  // the reader sees it and reconnects
        return;
      }
      if (!c->outbox.empty()) write_next(c);
    };
    if (c->tls) {
      asio::async_write(*c->tls, asio::buffer(c->outbox.front()), std::move(done));
    } else {
      asio::async_write(c->socket, asio::buffer(c->outbox.front()), std::move(done));
    }
  }

  // Walks the endpoint list forever: a full round of failures costs one
  // capped, jittered back-off; losing an established connection does not.
  asio::awaitable<void> run() {
    std::size_t next = 0;
    std::size_t failures = 0;
    auto backoff = std::chrono::milliseconds(kInitialBackoff);
    std::minstd_rand jitter(std::random_device{}());
    while (!stopping_) {
      const std::size_t index = next;
      next = (next + 1) % parsed_.size();
      const bool was_ready = co_await connect_and_serve(index);
      if (stopping_) break;
      if (was_ready) {
        failures = 0;
        backoff = kInitialBackoff;
        continue;
      }
      if (++failures < parsed_.size()) continue;
      failures = 0;
      const auto spread = std::uniform_int_distribution<long>(0, backoff.count() / 4)(jitter);
      backoff_timer_.expires_after(backoff + std::chrono::milliseconds(spread));
      std::error_code ec;
      co_await backoff_timer_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      backoff = std::min(backoff * 2, std::max(options_.reconnect_backoff_max,
                                               std::chrono::milliseconds(kInitialBackoff)));
    }
  }

  // Returns whether the connection got as far as a HelloReply.
  asio::awaitable<bool> connect_and_serve(std::size_t index) {
    const auto& [host, port] = parsed_[index];
    const std::string& name = options_.endpoints[index];
    auto c = std::make_shared<Connection>(io_);
    c->endpoint_index = index;
    conn_ = c;
    c->watchdog.expires_after(options_.connect_timeout);
    c->watchdog.async_wait([c](std::error_code ec) {
      if (!ec) c->close();
    });

    std::error_code ec;
    auto addresses = co_await c->resolver.async_resolve(
        host, std::to_string(port), asio::redirect_error(asio::use_awaitable, ec));
    if (!ec && !stopping_) {
      co_await asio::async_connect(c->socket, addresses,
                                   asio::redirect_error(asio::use_awaitable, ec));
    }
    if (ec || stopping_) {
      spdlog::debug("storage client: cannot reach {}: {}", name, ec.message());
      c->close();
      if (conn_ == c) conn_.reset();
      co_return false;
    }
    std::error_code ignored;
    c->socket.set_option(tcp::no_delay(true), ignored);
    if (tls_context_ && !co_await tls_handshake(c, host, name)) {
      c->close();
      if (conn_ == c) conn_.reset();
      co_return false;
    }

    wire::Envelope hello;
    c->hello_id = next_id_++;
    hello.set_request_id(c->hello_id);
    auto* h = hello.mutable_hello();
    h->set_protocol_version(wire::PROTOCOL_VERSION_CURRENT);
    h->set_namespace_name(options_.namespace_name);
    h->set_engine_id(options_.engine_id);
    h->set_token(options_.token);
    h->set_client_name(options_.client_name + "/" + COOKIEFS_VERSION);
    write(c, encode_frame(hello, options_.max_frame_bytes));

    co_await serve(c, name);

    if (!c->ready && !c->hello_refused && should_warn(index)) {
      spdlog::warn("storage client: {} closed the connection before answering Hello{}", name,
                   tls_context_ ? " (does it require a client certificate? see tls.cert_file)"
                                : " (is it a TLS port? then turn tls on in this client)");
    }
    c->close();
    if (conn_ == c) conn_.reset();
    if (c->ready) on_lost(name);
    co_return c->ready;
  }

  // At most one warning per endpoint and minute for connections that fail
  // the same way again and again.
  bool should_warn(std::size_t index) {
    const auto now = std::chrono::steady_clock::now();
    auto [it, fresh] = last_warned_.try_emplace(index, now);
    if (!fresh && now - it->second < std::chrono::minutes(1)) return false;
    it->second = now;
    return true;
  }

  asio::awaitable<bool> tls_handshake(std::shared_ptr<Connection> c, const std::string& host,
                                      const std::string& name) {
    const std::string server_name =
        options_.tls.server_name.empty() ? host : options_.tls.server_name;
    c->tls = std::make_unique<asio::ssl::stream<tcp::socket&>>(c->socket, *tls_context_);
    SSL* ssl = c->tls->native_handle();
    std::error_code ec;
    const auto ip = asio::ip::make_address(server_name, ec);
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
    if (!ec) {
      X509_VERIFY_PARAM_set1_ip(
          param, ip.is_v4() ? ip.to_v4().to_bytes().data() : ip.to_v6().to_bytes().data(),
          ip.is_v4() ? 4 : 16);
    } else {
      SSL_set_tlsext_host_name(ssl, server_name.c_str());
      X509_VERIFY_PARAM_set1_host(param, server_name.c_str(), 0);
    }
    ec = {};
    co_await c->tls->async_handshake(asio::ssl::stream_base::client,
                                     asio::redirect_error(asio::use_awaitable, ec));
    if (!ec) co_return true;
    const std::string why = tls_failure(ssl, ec, server_name);
    if (should_warn(c->endpoint_index)) {
      spdlog::warn("storage client: TLS handshake with {} failed: {}", name, why);
    }
    if (SSL_get_verify_result(ssl) != X509_V_OK) {
      // An untrusted server will not become trusted by retrying: tell every waiter now.
      const auto e =
          make_error(wire::UNAVAILABLE, "TLS handshake with " + name + " failed: " + why);
      while (!pending_.empty()) complete(pending_.begin(), std::nullopt, e);
    }
    co_return false;
  }

  asio::awaitable<void> serve(std::shared_ptr<Connection> c, const std::string& name) {
    FrameDecoder decoder(options_.max_frame_bytes);
    std::vector<char> buf(64 * 1024);
    std::error_code ec;
    while (!stopping_) {
      const std::size_t n =
          c->tls ? co_await c->tls->async_read_some(asio::buffer(buf),
                                                    asio::redirect_error(asio::use_awaitable, ec))
                 : co_await c->socket.async_read_some(
                       asio::buffer(buf), asio::redirect_error(asio::use_awaitable, ec));
      if (ec) {
        if (c->ready) spdlog::warn("storage client: connection to {} lost: {}", name, ec.message());
        co_return;
      }
      c->last_heard = std::chrono::steady_clock::now();
      try {
        decoder.feed(std::string_view(buf.data(), n));
        while (auto env = decoder.next()) {
          if (!dispatch(c, std::move(*env), name)) co_return;
          if (stopping_ || !c->socket.is_open()) co_return;
        }
      } catch (const FrameError& e) {
        spdlog::warn("storage client: closing connection to {}: {}", name, e.what());
        co_return;
      }
    }
  }

  // Returns false when the connection must be closed.
  bool dispatch(const std::shared_ptr<Connection>& c, wire::Envelope env, const std::string& name) {
    if (env.request_id() == 0) {
      on_event(env);
      return true;
    }
    if (c->ready) {
      on_reply(std::move(env));
      return true;
    }
    if (env.request_id() != c->hello_id) {
      spdlog::warn("storage client: {} answered before Hello completed", name);
      return false;
    }
    if (env.has_hello_reply()) {
      c->watchdog.cancel();
      c->ready = true;
      if (env.hello_reply().max_frame_bytes() > 0) {
        c->max_frame_bytes = env.hello_reply().max_frame_bytes();
      }
      notify_hello(env.hello_reply());
      on_ready(c, name);
      return true;
    }
    const wire::Error e =
        env.has_error() ? env.error() : make_error(wire::INTERNAL, "unexpected reply to Hello");
    c->hello_refused = true;
    spdlog::warn("storage client: {} refused Hello: {}", name, e.message());
    if (!is_retryable(e)) {
      // Bad token or namespace will not fix itself by retrying: tell every waiter now.
      while (!pending_.empty()) complete(pending_.begin(), std::nullopt, e);
    }
    return false;
  }

  // While the connection lives: a Ping after ping_interval of silence, and
  // the connection closed (the reader then reconnects) after ping_timeout.
  // A stopped or wedged service keeps its TCP connections open and answers
  // nothing; without this the client called it connected until a request
  // timed out (request_timeout, 15 s by default).
  asio::awaitable<void> keep_alive(std::shared_ptr<Connection> c, std::string name) {
    using namespace std::chrono;
    const auto interval = options_.ping_interval;
    const auto timeout = std::max(options_.ping_timeout, interval);
    while (!stopping_ && c->socket.is_open()) {
      c->keepalive.expires_after(interval);
      std::error_code ec;
      co_await c->keepalive.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (ec || stopping_ || !c->socket.is_open() || conn_ != c) co_return;
      const auto silent = steady_clock::now() - c->last_heard;
      if (silent >= timeout) {
        spdlog::warn("storage client: {} answered nothing for {} ms (hung?); connecting again",
                     name, duration_cast<milliseconds>(silent).count());
        c->close();
        co_return;
      }
      if (silent >= interval) {
        wire::Envelope ping;
        ping.mutable_ping();
        send_fire_and_forget(std::move(ping));
      }
    }
  }

  void on_ready(const std::shared_ptr<Connection>& c, const std::string& name) {
    c->last_heard = std::chrono::steady_clock::now();
    if (options_.ping_interval.count() > 0) {
      asio::co_spawn(io_, keep_alive(c, name), asio::detached);
    }
    if (ever_connected_) ++reconnects_;
    ever_connected_ = true;
    endpoint_index_ = static_cast<long>(c->endpoint_index);
    connected_ = true;
    spdlog::info("storage client: connected to {}", name);
    if (!subscriptions_.empty() || all_sessions_) {
      wire::Envelope env;
      auto* sub = env.mutable_subscribe();
      for (const auto& id : subscriptions_) sub->add_session_ids(id);
      sub->set_all_sessions(all_sessions_);
      send_fire_and_forget(std::move(env));
    }
    for (auto& [id, p] : pending_) {
      if (!p.waiting_retry) transmit(id, p);
    }
    notify_state(true);
  }

  // A throwing handler must not end the connection coroutine (and with it the client).
  void notify_state(bool up) {
    if (!state_handler_) return;
    try {
      state_handler_(up);
    } catch (const std::exception& e) {
      spdlog::error("storage client: connection-state handler threw: {}", e.what());
    }
  }

  void notify_hello(const wire::HelloReply& reply) {
    if (!hello_handler_) return;
    try {
      hello_handler_(reply);
    } catch (const std::exception& e) {
      spdlog::error("storage client: hello handler threw: {}", e.what());
    }
  }

  void on_lost(const std::string& name) {
    connected_ = false;
    endpoint_index_ = -1;
    internal_ids_.clear();
    for (auto& [id, p] : pending_) p.sent = false;
    spdlog::debug("storage client: disconnected from {}", name);
    if (!stopping_) notify_state(false);
  }

  void shutdown() {
    stopping_ = true;
    backoff_timer_.cancel();
    if (conn_) conn_->close();
    while (!pending_.empty()) {
      complete(pending_.begin(), std::nullopt,
               make_error(wire::SHUTTING_DOWN, "storage client is stopping"));
    }
    const bool was_connected = connected_.exchange(false);
    endpoint_index_ = -1;
    if (was_connected) notify_state(false);
    // Suspended coroutines are destroyed with io_; nothing else must run.
    io_.stop();
  }

  // Declared first: destroyed last, after everything that refers to it.
  asio::io_context io_;
  std::vector<std::pair<std::string, std::uint16_t>> parsed_;
  asio::steady_timer backoff_timer_;
  std::unique_ptr<asio::ssl::context> tls_context_;                           // when tls.enabled
  std::map<std::size_t, std::chrono::steady_clock::time_point> last_warned_;  // I/O thread only
  std::thread thread_;
  std::atomic<std::thread::id> io_thread_id_{};
  std::mutex life_mutex_;
  bool started_ = false;  // guarded by life_mutex_
  bool stopped_ = false;  // guarded by life_mutex_

  // I/O thread only.
  bool stopping_ = false;
  bool ever_connected_ = false;
  std::uint64_t next_id_ = 1;
  std::shared_ptr<Connection> conn_;
  std::map<std::uint64_t, Pending> pending_;
  std::set<std::uint64_t> internal_ids_;
  std::set<std::string> subscriptions_;
  bool all_sessions_ = false;
};

// --- public surface -----------------------------------------------------------

StorageClient::StorageClient(ClientOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}
StorageClient::~StorageClient() {
  stop();
}

void StorageClient::on_event(EventHandler handler) {
  impl_->event_handler_ = std::move(handler);
}
void StorageClient::on_connection_state(StateHandler handler) {
  impl_->state_handler_ = std::move(handler);
}
void StorageClient::on_hello(HelloHandler handler) {
  impl_->hello_handler_ = std::move(handler);
}
void StorageClient::start() {
  impl_->start();
}
void StorageClient::stop() {
  impl_->stop();
}
bool StorageClient::connected() const {
  return impl_->connected_;
}

const std::string& StorageClient::current_endpoint() const {
  // Endpoint strings never change after construction, so a reference is safe to hand out.
  static const std::string kNone;
  const long i = impl_->endpoint_index_;
  return i < 0 ? kNone : impl_->options_.endpoints[static_cast<std::size_t>(i)];
}

std::uint64_t StorageClient::reconnects() const {
  return impl_->reconnects_;
}

void StorageClient::call(wire::Envelope request, Callback cb, std::chrono::milliseconds timeout) {
  impl_->call(std::move(request), std::move(cb), timeout);
}

wire::Envelope StorageClient::call_sync(wire::Envelope request, std::chrono::milliseconds timeout) {
  if (impl_->on_io_thread()) {
    throw std::logic_error("StorageClient::call_sync called from a client callback");
  }
  auto promise = std::make_shared<std::promise<Result>>();
  auto future = promise->get_future();
  call(
      std::move(request), [promise](Result r) { promise->set_value(std::move(r)); }, timeout);
  Result r = future.get();
  if (r.has_error) throw RequestError(std::move(r.error));
  return std::move(r.reply);
}

void StorageClient::subscribe(const std::vector<std::string>& session_ids, bool all_sessions) {
  impl_->subscribe(session_ids, all_sessions, false);
}

void StorageClient::unsubscribe(const std::vector<std::string>& session_ids) {
  impl_->subscribe(session_ids, false, true);
}

}  // namespace cookiefs
