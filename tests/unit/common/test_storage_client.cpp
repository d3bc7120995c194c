// Unit tests of StorageClient against an in-process fake storage service
// (asio + the real frame codec) whose behaviour each test scripts.
//
// Thread-safety: FakeServer runs its own I/O thread; its public methods may be
// called from the test thread. Handlers run on the server's thread.
#include <doctest/doctest.h>

#include <asio.hpp>
#include <atomic>
#include <deque>
#include <future>
#include <mutex>
#include <set>
#include <thread>

#include "frame.hpp"
#include "storage_client.hpp"

namespace cookiefs {
namespace {

using namespace std::chrono_literals;
using asio::ip::tcp;

// Polls instead of sleeping a fixed time: generous deadline for slow CI machines.
template <class Predicate>
bool eventually(Predicate p, std::chrono::milliseconds deadline = 20s) {
  const auto end = std::chrono::steady_clock::now() + deadline;
  while (std::chrono::steady_clock::now() < end) {
    if (p()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return p();
}

// A port on which nothing listens (bound once, then released).
std::string dead_endpoint() {
  asio::io_context io;
  tcp::acceptor a(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  const auto port = a.local_endpoint().port();
  a.close();
  return "127.0.0.1:" + std::to_string(port);
}

class FakeServer {
 public:
  struct Peer {
    explicit Peer(asio::io_context& io) : socket(io) {}
    tcp::socket socket;
    std::deque<std::string> outbox;
    bool writing = false;
  };
  using PeerPtr = std::shared_ptr<Peer>;
  // Gets every request except Hello; replies with reply().
  using Handler = std::function<void(FakeServer&, const PeerPtr&, const wire::Envelope&)>;

  explicit FakeServer(Handler handler = {}) : handler_(std::move(handler)) {
    acceptor_.open(tcp::v4());
    acceptor_.set_option(tcp::acceptor::reuse_address(true));
    acceptor_.bind(tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    acceptor_.listen();
    port_ = acceptor_.local_endpoint().port();
    asio::co_spawn(io_, accept_loop(), asio::detached);
    thread_ = std::thread([this] { io_.run(); });
  }

  ~FakeServer() {
    asio::post(io_, [this] {
      std::error_code ec;
      acceptor_.close(ec);
      for (auto& p : peers_) p->socket.close(ec);
      io_.stop();
    });
    thread_.join();
  }

  std::string endpoint() const { return "127.0.0.1:" + std::to_string(port_); }

  // Server thread only (from a handler).
  void reply(const PeerPtr& peer, const wire::Envelope& env) {
    peer->outbox.push_back(encode_frame(env));
    if (!peer->writing) write_next(peer);
  }
  void send_raw(const PeerPtr& peer, std::string bytes) {
    peer->outbox.push_back(std::move(bytes));
    if (!peer->writing) write_next(peer);
  }

  // Any thread.
  void drop_all() {
    asio::post(io_, [this] {
      std::error_code ec;
      for (auto& p : peers_) p->socket.close(ec);
      peers_.clear();
    });
  }
  void push_to_all(wire::Envelope env) {
    asio::post(io_, [this, env = std::move(env)] {
      for (auto& p : peers_) reply(p, env);
    });
  }
  std::vector<wire::Envelope> received() const {
    std::lock_guard lock(mutex_);
    return received_;
  }
  std::size_t received_count() const {
    std::lock_guard lock(mutex_);
    return received_.size();
  }
  int hellos() const { return hellos_; }
  wire::Hello last_hello() const {
    std::lock_guard lock(mutex_);
    return last_hello_;
  }
  std::optional<wire::Error> hello_error;  // set before clients connect

 private:
  static void write_next(PeerPtr peer) {
    peer->writing = true;
    asio::async_write(peer->socket, asio::buffer(peer->outbox.front()),
                      [peer](std::error_code ec, std::size_t) {
                        peer->outbox.pop_front();
                        peer->writing = false;
                        if (!ec && !peer->outbox.empty()) write_next(peer);
                      });
  }

  asio::awaitable<void> accept_loop() {
    for (;;) {
      auto peer = std::make_shared<Peer>(io_);
      std::error_code ec;
      co_await acceptor_.async_accept(peer->socket, asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return;
      peers_.insert(peer);
      asio::co_spawn(io_, serve(peer), asio::detached);
    }
  }

  asio::awaitable<void> serve(PeerPtr peer) {
    FrameDecoder decoder;
    std::vector<char> buf(65536);
    for (;;) {
      std::error_code ec;
      const auto n = co_await peer->socket.async_read_some(
          asio::buffer(buf), asio::redirect_error(asio::use_awaitable, ec));
      if (ec) break;
      decoder.feed(std::string_view(buf.data(), n));
      while (auto env = decoder.next()) {
        if (env->has_hello()) {
          {
            std::lock_guard lock(mutex_);
            last_hello_ = env->hello();
          }
          ++hellos_;
          wire::Envelope r;
          r.set_request_id(env->request_id());
          if (hello_error) {
            *r.mutable_error() = *hello_error;
          } else {
            r.mutable_hello_reply()->set_protocol_version(1);
            r.mutable_hello_reply()->set_server_id("fake");
          }
          reply(peer, r);
          continue;
        }
        {
          std::lock_guard lock(mutex_);
          received_.push_back(*env);
        }
        if (handler_) handler_(*this, peer, *env);
      }
    }
    peers_.erase(peer);
  }

  asio::io_context io_;
  tcp::acceptor acceptor_{io_};
  std::uint16_t port_ = 0;
  Handler handler_;
  std::set<PeerPtr> peers_;  // server thread only
  mutable std::mutex mutex_;
  std::vector<wire::Envelope> received_;
  wire::Hello last_hello_;
  std::atomic<int> hellos_{0};
  std::thread thread_;
};

// Answers fetch with info.version = the number in the session id ("s17" -> 17),
// commits with version 1, everything else with Ack.
void answer(FakeServer& server, const FakeServer::PeerPtr& peer, const wire::Envelope& req) {
  wire::Envelope r;
  r.set_request_id(req.request_id());
  if (req.has_fetch()) {
    auto* info = r.mutable_fetch_reply()->mutable_info();
    info->set_session_id(req.fetch().session_id());
    info->set_version(std::stoull(req.fetch().session_id().substr(1)));
  } else if (req.has_commit()) {
    r.mutable_commit_reply()->set_version(1);
  } else {
    r.mutable_ack();
  }
  server.reply(peer, r);
}

ClientOptions options_for(std::vector<std::string> endpoints) {
  ClientOptions o;
  o.endpoints = std::move(endpoints);
  o.engine_id = "engine-a";
  o.token = "t0ken";
  o.connect_timeout = 2000ms;
  o.request_timeout = 20000ms;
  o.reconnect_backoff_max = 200ms;
  return o;
}

wire::FetchSession fetch_of(const std::string& id) {
  wire::FetchSession f;
  f.set_session_id(id);
  return f;
}

}  // namespace

TEST_CASE("parse_endpoint accepts host:port and [v6]:port, rejects the rest") {
  CHECK(parse_endpoint("localhost:7070") ==
        std::pair<std::string, std::uint16_t>{"localhost", 7070});
  CHECK(parse_endpoint("[::1]:9") == std::pair<std::string, std::uint16_t>{"::1", 9});
  for (const char* bad : {"", "host", "host:", ":7070", "host:0", "host:65536", "host:7x",
                          "::1:7070", "[::1]7070", "[::1]:"}) {
    CAPTURE(bad);
    CHECK_THROWS_AS(parse_endpoint(bad), std::invalid_argument);
  }
}

TEST_CASE("many requests in flight get their own replies, even out of order") {
  constexpr int kRequests = 40;
  std::mutex held_mutex;
  // weak: the peers belong to the server, which is destroyed first.
  std::vector<std::pair<std::weak_ptr<FakeServer::Peer>, wire::Envelope>> held;
  // Holds every fetch until all arrived, then answers them newest first.
  FakeServer server([&](FakeServer& s, const FakeServer::PeerPtr& peer, const wire::Envelope& req) {
    std::lock_guard lock(held_mutex);
    held.emplace_back(peer, req);
    if (held.size() == kRequests) {
      for (auto it = held.rbegin(); it != held.rend(); ++it) {
        if (auto p = it->first.lock()) answer(s, p, it->second);
      }
    }
  });
  StorageClient client(options_for({server.endpoint()}));
  client.start();

  std::vector<std::future<StorageClient::Result>> results;
  for (int i = 0; i < kRequests; ++i) {
    auto promise = std::make_shared<std::promise<StorageClient::Result>>();
    results.push_back(promise->get_future());
    wire::Envelope env;
    *env.mutable_fetch() = fetch_of("s" + std::to_string(i));
    client.call(env, [promise](StorageClient::Result r) { promise->set_value(std::move(r)); });
  }
  std::set<std::uint64_t> ids;
  for (int i = 0; i < kRequests; ++i) {
    REQUIRE(results[i].wait_for(20s) == std::future_status::ready);
    auto r = results[i].get();
    REQUIRE(r.ok());
    REQUIRE(r.reply.has_fetch_reply());
    CHECK(r.reply.fetch_reply().info().version() == static_cast<std::uint64_t>(i));
    ids.insert(r.reply.request_id());
  }
  CHECK(ids.size() == kRequests);
  CHECK(client.connected());
  CHECK(client.current_endpoint() == server.endpoint());
  CHECK(server.last_hello().engine_id() == "engine-a");
  CHECK(server.last_hello().token() == "t0ken");
  CHECK(server.last_hello().namespace_name() == "default");
}

TEST_CASE("fails over to the second endpoint when the first is down") {
  FakeServer server(answer);
  const std::string dead = dead_endpoint();
  StorageClient client(options_for({dead, server.endpoint()}));
  client.start();
  CHECK(client.fetch(fetch_of("s7")).info().version() == 7);
  CHECK(client.current_endpoint() == server.endpoint());
}

TEST_CASE("a request cut off by a dropped connection is retried after reconnecting") {
  std::atomic<int> commits{0};
  FakeServer server([&](FakeServer& s, const FakeServer::PeerPtr& peer, const wire::Envelope& req) {
    if (req.has_commit() && ++commits == 1) {
      std::error_code ec;
      peer->socket.close(ec);  // the first attempt dies mid-request
      return;
    }
    answer(s, peer, req);
  });
  std::atomic<int> ups{0};
  std::atomic<int> downs{0};
  StorageClient client(options_for({server.endpoint()}));
  client.on_connection_state([&](bool up) { ++(up ? ups : downs); });
  client.start();

  wire::CommitSession c;
  c.set_session_id("s1");
  c.set_idempotency_key("key-1");
  CHECK(client.commit(c).version() == 1);
  CHECK(commits == 2);
  CHECK(client.reconnects() == 1);
  CHECK(ups == 2);
  CHECK(downs == 1);
  // Same request, same idempotency key on the wire both times.
  const auto seen = server.received();
  REQUIRE(seen.size() == 2);
  CHECK(seen[0].commit().idempotency_key() == "key-1");
  CHECK(seen[1].commit().idempotency_key() == "key-1");
  CHECK(seen[0].request_id() == seen[1].request_id());
}

TEST_CASE("retryable errors are retried, others are returned at once") {
  std::atomic<int> attempts{0};
  FakeServer server([&](FakeServer& s, const FakeServer::PeerPtr& peer, const wire::Envelope& req) {
    wire::Envelope r;
    r.set_request_id(req.request_id());
    if (req.fetch().session_id() == "s404") {
      r.mutable_error()->set_code(wire::NOT_FOUND);
      r.mutable_error()->set_message("no such session");
      s.reply(peer, r);
    } else if (++attempts < 3) {
      r.mutable_error()->set_code(wire::UNAVAILABLE);
      r.mutable_error()->set_message("database down");
      s.reply(peer, r);
    } else {
      answer(s, peer, req);
    }
  });
  StorageClient client(options_for({server.endpoint()}));
  client.start();
  CHECK(client.fetch(fetch_of("s5")).info().version() == 5);
  CHECK(attempts == 3);
  try {
    client.fetch(fetch_of("s404"));
    FAIL("expected NOT_FOUND");
  } catch (const RequestError& e) {
    CHECK(e.code() == wire::NOT_FOUND);
    CHECK(std::string(e.what()) == "no such session");
  }
}

TEST_CASE("subscriptions are replayed after a reconnect") {
  FakeServer server(answer);
  StorageClient client(options_for({server.endpoint()}));
  client.start();
  // Connected first, so each call below goes out on its own (before that they only join the
  // replay).
  REQUIRE(eventually([&] { return client.connected(); }));
  client.subscribe({"a", "b"});
  client.subscribe({"c"});
  client.unsubscribe({"b"});
  auto subscribes = [&] {
    std::vector<wire::Subscribe> out;
    for (const auto& env : server.received()) {
      if (env.has_subscribe()) out.push_back(env.subscribe());
    }
    return out;
  };
  REQUIRE(eventually([&] { return subscribes().size() >= 3; }));
  const int hellos_before = server.hellos();
  server.drop_all();
  REQUIRE(eventually([&] { return server.hellos() > hellos_before && subscribes().size() >= 4; }));
  const auto replay = subscribes().back();
  CHECK_FALSE(replay.unsubscribe());
  const std::set<std::string> ids(replay.session_ids().begin(), replay.session_ids().end());
  CHECK(ids == std::set<std::string>{"a", "c"});
}

TEST_CASE("server-pushed events reach the event handler") {
  FakeServer server(answer);
  StorageClient client(options_for({server.endpoint()}));
  std::promise<wire::Event> got;
  std::atomic<bool> once{false};
  client.on_event([&](const wire::Event& e) {
    if (!once.exchange(true)) got.set_value(e);
  });
  client.start();
  REQUIRE(eventually([&] { return client.connected(); }));
  wire::Envelope ev;
  auto* changed = ev.mutable_event()->mutable_changed();
  changed->set_session_id("s9");
  changed->set_version(42);
  server.push_to_all(ev);
  auto future = got.get_future();
  REQUIRE(future.wait_for(20s) == std::future_status::ready);
  const auto e = future.get();
  CHECK(e.changed().session_id() == "s9");
  CHECK(e.changed().version() == 42);
}

TEST_CASE("a request past its deadline fails with UNAVAILABLE") {
  SUBCASE("no endpoint is up") {
    StorageClient client(options_for({dead_endpoint(), dead_endpoint()}));
    client.start();
    wire::Envelope env;
    *env.mutable_fetch() = fetch_of("s1");
    try {
      client.call_sync(env, 300ms);
      FAIL("expected UNAVAILABLE");
    } catch (const RequestError& e) {
      CHECK(e.code() == wire::UNAVAILABLE);
      CHECK(e.error().retryable());
    }
    CHECK_FALSE(client.connected());
    CHECK(client.current_endpoint().empty());
  }
  SUBCASE("the server never answers") {
    FakeServer server;  // no handler: requests are swallowed
    StorageClient client(options_for({server.endpoint()}));
    client.start();
    wire::Envelope env;
    *env.mutable_fetch() = fetch_of("s1");
    CHECK_THROWS_AS(client.call_sync(env, 300ms), RequestError);
    CHECK(server.received_count() == 1);
  }
}

TEST_CASE("stop() fails pending requests with SHUTTING_DOWN, later calls too") {
  FakeServer server;  // never answers
  StorageClient client(options_for({server.endpoint()}));
  client.start();
  std::promise<StorageClient::Result> pending;
  wire::Envelope env;
  *env.mutable_fetch() = fetch_of("s1");
  client.call(env, [&](StorageClient::Result r) { pending.set_value(std::move(r)); });
  REQUIRE(eventually([&] { return server.received_count() == 1; }));
  client.stop();
  auto future = pending.get_future();
  REQUIRE(future.wait_for(0s) == std::future_status::ready);
  const auto r = future.get();
  CHECK_FALSE(r.ok());
  CHECK(r.error.code() == wire::SHUTTING_DOWN);
  CHECK_FALSE(client.connected());

  bool called = false;
  client.call(env, [&](StorageClient::Result r2) {
    called = true;
    CHECK(r2.error.code() == wire::SHUTTING_DOWN);
  });
  CHECK(called);
  client.stop();  // idempotent
}

TEST_CASE("a client that was never started still answers every call on stop()") {
  StorageClient client(options_for({dead_endpoint()}));
  int calls = 0;
  wire::Envelope env;
  *env.mutable_fetch() = fetch_of("s1");
  client.call(env, [&](StorageClient::Result r) {
    ++calls;
    CHECK(r.error.code() == wire::SHUTTING_DOWN);
  });
  client.stop();
  CHECK(calls == 1);
}

TEST_CASE("a refused Hello fails waiting requests with the server's error") {
  FakeServer server(answer);
  wire::Error refused;
  refused.set_code(wire::UNAUTHENTICATED);
  refused.set_message("bad token");
  server.hello_error = refused;
  StorageClient client(options_for({server.endpoint()}));
  client.start();
  try {
    client.fetch(fetch_of("s1"));
    FAIL("expected UNAUTHENTICATED");
  } catch (const RequestError& e) {
    CHECK(e.code() == wire::UNAUTHENTICATED);
  }
  CHECK_FALSE(client.connected());
}

TEST_CASE("a malformed frame closes the connection and the client reconnects") {
  std::atomic<int> fetches{0};
  FakeServer server([&](FakeServer& s, const FakeServer::PeerPtr& peer, const wire::Envelope& req) {
    if (++fetches == 1) {
      s.send_raw(peer, std::string("XX\x01\x00\x00\x00\x00\x01!", 9));
      return;
    }
    answer(s, peer, req);
  });
  StorageClient client(options_for({server.endpoint()}));
  client.start();
  CHECK(client.fetch(fetch_of("s3")).info().version() == 3);
  CHECK(fetches == 2);
  CHECK(client.reconnects() == 1);
}

TEST_CASE("a reply of the wrong kind is a protocol error") {
  FakeServer server([](FakeServer& s, const FakeServer::PeerPtr& peer, const wire::Envelope& req) {
    wire::Envelope r;
    r.set_request_id(req.request_id());
    r.mutable_ack();
    s.reply(peer, r);
  });
  StorageClient client(options_for({server.endpoint()}));
  client.start();
  try {
    client.fetch(fetch_of("s1"));
    FAIL("expected INTERNAL");
  } catch (const RequestError& e) {
    CHECK(e.code() == wire::INTERNAL);
  }
}

}  // namespace cookiefs
