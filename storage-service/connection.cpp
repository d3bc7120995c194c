// Connection: framing, ordering and dispatch of one client connection; see
// connection.hpp.
#include "connection.hpp"

#include <spdlog/spdlog.h>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/dispatch.hpp>
#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>
#include <asio/write.hpp>
#include <pqxx/connection>

#include <algorithm>
#include <cctype>
#include <optional>
#include <random>

#include "commit_batcher.hpp"
#include "frame.hpp"
#include "handoff.hpp"
#include "metrics.hpp"
#include "names.hpp"
#include "pg_pool.hpp"
#include "service_config.hpp"
#include "store_error.hpp"
#include "tls_context.hpp"
#include "version.hpp"

namespace cookiefs::storage {
namespace {

using asio::use_awaitable;
using Clock = std::chrono::steady_clock;

// A client that does not read its events must not make us buffer forever.
constexpr std::size_t kMaxQueuedBytes = 256ull << 20;

// The operation authorize() is asked about; nullopt when not a request.
std::optional<Operation> operation_of(wire::Envelope::BodyCase c) {
  switch (c) {
    case wire::Envelope::kFetch:
      return Operation::fetch;
    case wire::Envelope::kCommit:
      return Operation::commit;
    case wire::Envelope::kAssign:
      return Operation::assign;
    case wire::Envelope::kDrainDone:
      return Operation::drain_done;
    case wire::Envelope::kSessionReady:
      return Operation::session_ready;
    case wire::Envelope::kRelease:
      return Operation::release;
    case wire::Envelope::kSubscribe:
      return Operation::subscribe;
    case wire::Envelope::kList:
      return Operation::list;
    case wire::Envelope::kDeleteSession:
      return Operation::delete_session;
    default:
      return std::nullopt;
  }
}

const char* op_name(wire::Envelope::BodyCase c) {
  switch (c) {
    case wire::Envelope::kFetch:
      return "fetch";
    case wire::Envelope::kCommit:
      return "commit";
    case wire::Envelope::kAssign:
      return "assign";
    case wire::Envelope::kDrainDone:
      return "drain_done";
    case wire::Envelope::kSessionReady:
      return "session_ready";
    case wire::Envelope::kRelease:
      return "release";
    case wire::Envelope::kSubscribe:
      return "subscribe";
    case wire::Envelope::kList:
      return "list";
    case wire::Envelope::kDeleteSession:
      return "delete";
    case wire::Envelope::kHello:
      return "hello";
    default:
      return "other";
  }
}

std::string result_label(wire::ErrorCode code) {
  std::string s = wire::ErrorCode_Name(code);
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

std::string random_id() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(rng()));
  return buf;
}

void require_id(const std::string& id, const char* what) {
  if (!valid_id(id)) throw StoreError(wire::BAD_REQUEST, std::string("invalid ") + what);
}

}  // namespace

Connection::Connection(asio::ip::tcp::socket socket, std::shared_ptr<asio::ssl::context> tls,
                       ServiceContext& ctx, std::function<void(Connection*)> on_closed)
    : socket_(std::move(socket)),
      tls_context_(std::move(tls)),
      tls_(tls_context_ ? std::make_unique<asio::ssl::stream<asio::ip::tcp::socket>>(
                              std::move(socket_), *tls_context_)
                        : nullptr),
      ctx_(ctx),
      on_closed_(std::move(on_closed)),
      wake_writer_(tcp().get_executor()),
      slot_free_(tcp().get_executor()) {
  ctx_.metrics.connections->Increment();
}

Connection::~Connection() {
  if (hub_id_ != 0) ctx_.hub.detach(hub_id_);
  ctx_.metrics.connections->Decrement();
}

void Connection::start() {
  asio::error_code ec;
  tcp().set_option(asio::ip::tcp::no_delay(true), ec);
  const auto ep = tcp().remote_endpoint(ec);
  peer_ = ec ? std::string("?") : ep.address().to_string();
  wake_writer_.expires_at(asio::steady_timer::time_point::max());
  slot_free_.expires_at(asio::steady_timer::time_point::max());
  auto self = shared_from_this();
  asio::co_spawn(
      tcp().get_executor(), [self]() { return self->read_loop(); }, asio::detached);
  asio::co_spawn(
      tcp().get_executor(), [self]() { return self->write_loop(); }, asio::detached);
}

void Connection::close() {
  asio::dispatch(tcp().get_executor(), [self = shared_from_this()] { self->close_now(); });
}

void Connection::recheck_credentials() {
  asio::dispatch(tcp().get_executor(), [self = shared_from_this()] {
    if (self->closed_ || !self->greeted_) return;
    if (!self->credentials_still_valid()) self->close_now();
  });
}

bool Connection::credentials_still_valid() {
  if (ctx_.auth.current(identity_)) return true;
  const AuthResult r = ctx_.auth.recheck(identity_, peer_);
  if (!r.ok) return false;
  identity_ = r.identity;
  scope_.role = identity_.role;
  return true;
}

void Connection::close_after_replies() {
  closing_ = true;
  wake_writer_.cancel_one();
}

void Connection::close_now() {
  if (closed_) return;
  closed_ = true;
  asio::error_code ec;
  tcp().shutdown(asio::ip::tcp::socket::shutdown_both, ec);
  tcp().close(ec);
  wake_writer_.cancel();
  slot_free_.cancel();
  if (hub_id_ != 0) {
    ctx_.hub.detach(hub_id_);
    hub_id_ = 0;
  }
  if (on_closed_) on_closed_(this);
}

void Connection::push_event(const wire::Event& event) {
  wire::Envelope env;
  *env.mutable_event() = event;
  asio::dispatch(tcp().get_executor(), [self = shared_from_this(), env = std::move(env)] {
    if (self->closed_) return;
    self->ctx_.metrics.events_pushed->Increment();
    self->send(env);
  });
}

void Connection::send(const wire::Envelope& env) {
  if (closed_) return;
  std::string frame;
  try {
    frame = encode_frame(env, ctx_.config.max_frame_bytes.bytes);
  } catch (const FrameError& e) {
    // A reply too large for a frame (a fetch of a huge session): tell the client.
    wire::Envelope err;
    err.set_request_id(env.request_id());
    err.mutable_error()->set_code(wire::TOO_LARGE);
    err.mutable_error()->set_message("reply exceeds limits.max_frame_bytes");
    frame = encode_frame(err);
  }
  out_bytes_ += frame.size();
  out_.push_back(std::move(frame));
  if (out_bytes_ > kMaxQueuedBytes) {
    spdlog::warn("closing a connection that does not read its replies ({} bytes queued)",
                 out_bytes_);
    close_now();
    return;
  }
  wake_writer_.cancel_one();
}

asio::awaitable<void> Connection::write_loop() {
  auto self = shared_from_this();
  while (!closed_) {
    if (out_.empty()) {
      if (closing_) {
        close_now();
        break;
      }
      asio::error_code ec;
      co_await wake_writer_.async_wait(asio::redirect_error(use_awaitable, ec));
      continue;
    }
    std::string frame = std::move(out_.front());
    out_.pop_front();
    out_bytes_ -= frame.size();
    asio::error_code ec;
    if (tls_) {
      co_await asio::async_write(*tls_, asio::buffer(frame),
                                 asio::redirect_error(use_awaitable, ec));
    } else {
      co_await asio::async_write(socket_, asio::buffer(frame),
                                 asio::redirect_error(use_awaitable, ec));
    }
    if (ec) {
      spdlog::debug("write failed: {}", ec.message());
      close_now();
    }
  }
}

asio::awaitable<bool> Connection::tls_handshake() {
  // A client that connects and says nothing must not hold a connection.
  asio::steady_timer deadline(tcp().get_executor(), std::chrono::seconds(10));
  deadline.async_wait([self = shared_from_this()](const asio::error_code& ec) {
    if (ec) return;
    asio::error_code ignored;
    self->tcp().cancel(ignored);
  });
  asio::error_code ec;
  co_await tls_->async_handshake(asio::ssl::stream_base::server,
                                 asio::redirect_error(use_awaitable, ec));
  deadline.cancel();
  if (!ec) co_return true;
  if (ec == asio::ssl::error::stream_truncated || ec == asio::error::eof) {
    // Connected and closed without a word: a port probe or a TCP health check.
    spdlog::debug("{} closed the connection during the TLS handshake", peer_);
    co_return false;
  }
  ctx_.metrics.tls_handshake_failures->Increment();
  if (ctx_.auth.should_log(peer_)) {
    spdlog::warn("TLS handshake with {} failed: {}", peer_,
                 ec == asio::error::operation_aborted ? std::string("no handshake within 10 s")
                                                      : describe_tls_error(ec));
  }
  co_return false;
}

asio::awaitable<void> Connection::read_loop() {
  auto self = shared_from_this();
  if (tls_ && !co_await tls_handshake()) {
    close_now();
    co_return;
  }
  FrameDecoder decoder(ctx_.config.max_frame_bytes.bytes);
  std::string buf(64 * 1024, '\0');
  try {
    while (!closed_ && !closing_) {
      asio::error_code ec;
      const std::size_t n = tls_ ? co_await tls_->async_read_some(
                                       asio::buffer(buf), asio::redirect_error(use_awaitable, ec))
                                 : co_await socket_.async_read_some(
                                       asio::buffer(buf), asio::redirect_error(use_awaitable, ec));
      if (ec) {
        if (ec != asio::error::eof && ec != asio::error::operation_aborted) {
          spdlog::debug("read failed: {}", ec.message());
        }
        break;
      }
      decoder.feed(std::string_view(buf.data(), n));
      while (!closing_) {
        auto env = decoder.next();
        if (!env) break;
        if (env->request_id() == 0) throw FrameError("request without a request id");
        if (env->has_hello()) {
          hello(*env);
          if (closing_) break;
          continue;
        }
        if (env->has_ping() && greeted_) {
          // Answered here, ahead of queued requests and slot limits: it says
          // only that this replica still reads and writes its connections.
          wire::Envelope pong;
          pong.set_request_id(env->request_id());
          pong.mutable_pong();
          send(pong);
          continue;
        }
        while (in_flight_ >= ctx_.config.max_in_flight_per_connection && !closed_) {
          asio::error_code wait_ec;
          co_await slot_free_.async_wait(asio::redirect_error(use_awaitable, wait_ec));
        }
        if (closed_) break;
        ++in_flight_;
        ++ctx_.in_flight;
        asio::co_spawn(tcp().get_executor(), handle(std::move(*env)), asio::detached);
      }
    }
  } catch (const FrameError& e) {
    ctx_.metrics.bad_frames->Increment();
    spdlog::warn(
        "closing connection from {}: {}",
        [&] {
          asio::error_code ec;
          auto ep = tcp().remote_endpoint(ec);
          return ec ? std::string("?") : ep.address().to_string();
        }(),
        e.what());
  }
  if (closing_) {
    wake_writer_.cancel_one();  // the writer closes once the last reply is out
  } else {
    close_now();
  }
}

void Connection::hello(const wire::Envelope& req) {
  const auto& h = req.hello();
  wire::Envelope reply;
  reply.set_request_id(req.request_id());
  const auto fail = [&](wire::ErrorCode code, const std::string& why) {
    reply.mutable_error()->set_code(code);
    reply.mutable_error()->set_message(why);
    ctx_.metrics.request_done("hello", result_label(code), 0);
    send(reply);
  };
  if (greeted_) return fail(wire::BAD_REQUEST, "hello was already sent on this connection");
  if (h.protocol_version() != wire::PROTOCOL_VERSION_CURRENT) {
    return fail(wire::BAD_REQUEST,
                "unsupported protocol version " + std::to_string(h.protocol_version()));
  }
  const std::string ns = h.namespace_name().empty() ? "default" : h.namespace_name();
  if (!valid_id(ns)) {
    fail(wire::UNAUTHENTICATED, "invalid namespace");
    close_after_replies();
    return;
  }
  if (!h.engine_id().empty() && !valid_id(h.engine_id())) {
    return fail(wire::BAD_REQUEST, "invalid engine id");
  }
  AuthResult auth = ctx_.auth.hello(ns, h.engine_id(), h.token(), peer_);
  if (!auth.ok) {
    fail(wire::UNAUTHENTICATED, auth.message);
    close_after_replies();
    return;
  }
  greeted_ = true;
  identity_ = std::move(auth.identity);
  scope_ = Scope{ns, h.engine_id(), identity_.role};
  hub_id_ = ctx_.hub.attach(weak_from_this(), ns, h.engine_id());
  auto* r = reply.mutable_hello_reply();
  r->set_protocol_version(wire::PROTOCOL_VERSION_CURRENT);
  r->set_server_id(ctx_.server_id);
  r->set_max_frame_bytes(ctx_.config.max_frame_bytes.bytes);
  r->set_max_file_bytes(ctx_.limits.max_file_bytes);
  r->set_max_session_bytes(ctx_.limits.max_session_bytes);
  r->set_max_files_per_session(ctx_.limits.max_files_per_session);
  ctx_.metrics.request_done("hello", "ok", 0);
  spdlog::debug("hello from engine '{}' in namespace '{}' as {} ({}, {})", h.engine_id(), ns,
                identity_.principal, role_name(identity_.role), h.client_name());
  send(reply);
}

asio::awaitable<void> Connection::handle(wire::Envelope req) {
  auto self = shared_from_this();
  const auto started = Clock::now();
  const char* op = op_name(req.body_case());
  wire::Envelope reply;
  std::string result = "ok";
  try {
    if (ctx_.stopping) throw StoreError(wire::SHUTTING_DOWN, "storage replica is shutting down");
    if (!greeted_) throw StoreError(wire::UNAUTHENTICATED, "hello first");
    if (!credentials_still_valid()) {
      close_after_replies();
      throw StoreError(wire::UNAUTHENTICATED, "the connection's token is no longer valid");
    }
    reply = co_await dispatch(req);
  } catch (const StoreError& e) {
    reply.Clear();
    *reply.mutable_error() = e.error();
    result = result_label(e.code());
  } catch (const std::exception& e) {
    spdlog::error("{} failed: {}", op, e.what());
    reply.Clear();
    reply.mutable_error()->set_code(wire::INTERNAL);
    reply.mutable_error()->set_message("internal error");
    result = "internal";
  }
  reply.set_request_id(req.request_id());
  send(reply);
  ctx_.metrics.request_done(op, result,
                            std::chrono::duration<double>(Clock::now() - started).count());
  --in_flight_;
  --ctx_.in_flight;
  slot_free_.cancel_one();
}

asio::awaitable<wire::Envelope> Connection::dispatch(const wire::Envelope& req) {
  wire::Envelope reply;
  const Scope scope = scope_;
  const auto operation = operation_of(req.body_case());
  if (!operation) {
    throw StoreError(wire::BAD_REQUEST, std::string("not a request: ") + op_name(req.body_case()));
  }
  // The role rules; the owner and epoch rules run with the session's row.
  const Decision allowed =
      req.has_assign()
          ? authorize_assign(scope.caller(), req.assign().engine_id(), req.assign().create())
          : authorize(scope.caller(), *operation);
  if (!allowed.allowed()) throw StoreError(allowed.code, allowed.reason);
  const Limits limits = ctx_.limits;
  auto& pool = ctx_.pool;
  switch (req.body_case()) {
    case wire::Envelope::kFetch: {
      const auto history = ctx_.config.history_versions;
      *reply.mutable_fetch_reply() = co_await pool.run<wire::FetchReply>(
          [&, history](pqxx::connection& c) { return fetch(c, scope, req.fetch(), history); });
      break;
    }
    case wire::Envelope::kCommit: {
      const auto started = Clock::now();
      *reply.mutable_commit_reply() = co_await ctx_.commits.commit(scope, req.commit(), limits);
      ctx_.metrics.commit_duration->Observe(
          std::chrono::duration<double>(Clock::now() - started).count());
      break;
    }
    case wire::Envelope::kList:
      *reply.mutable_list_reply() = co_await pool.run<wire::ListReply>(
          [&](pqxx::connection& c) { return list(c, scope, req.list()); });
      break;
    case wire::Envelope::kDeleteSession:
      co_await pool.run<bool>([&](pqxx::connection& c) {
        delete_session(c, scope, req.delete_session());
        return true;
      });
      reply.mutable_ack();
      break;
    case wire::Envelope::kAssign:
      *reply.mutable_assign_reply() = co_await assign(req.assign());
      break;
    case wire::Envelope::kRelease:
      co_await pool.run<bool>([&](pqxx::connection& c) {
        release(c, scope, req.release());
        return true;
      });
      reply.mutable_ack();
      break;
    case wire::Envelope::kDrainDone:
    case wire::Envelope::kSessionReady: {
      const bool drained = req.has_drain_done();
      const std::string& id =
          drained ? req.drain_done().session_id() : req.session_ready().session_id();
      require_id(id, "session id");
      ChangeNotice n{
          .kind = drained ? ChangeNotice::Kind::drained : ChangeNotice::Kind::ready,
          .namespace_name = scope.namespace_name,
          .session_id = id,
          .version = drained ? req.drain_done().version() : req.session_ready().version(),
          .epoch = drained ? req.drain_done().epoch() : req.session_ready().epoch(),
          .engine = scope.engine_id};
      // Checked against the session's owner and epoch, then announced to the
      // other replicas through PostgreSQL; an assign waiting on this replica
      // goes on at once (the feed's second signal here finds no waiter).
      co_await pool.run<bool>([&](pqxx::connection& c) {
        announce(c, scope, n);
        return true;
      });
      ctx_.handoff.signal(n);
      reply.mutable_ack();
      break;
    }
    case wire::Envelope::kSubscribe: {
      for (const auto& id : req.subscribe().session_ids()) require_id(id, "session id");
      ctx_.hub.subscribe(hub_id_, req.subscribe());
      reply.mutable_ack();
      break;
    }
    default:
      throw StoreError(wire::BAD_REQUEST,
                       std::string("not a request: ") + op_name(req.body_case()));
  }
  co_return reply;
}

asio::awaitable<wire::AssignReply> Connection::assign(const wire::Assign& req) {
  require_id(req.session_id(), "session id");
  require_id(req.engine_id(), "engine id");
  const Scope scope = scope_;
  const auto grace = req.grace_ms() > 0 ? std::min(std::chrono::milliseconds(req.grace_ms()),
                                                   std::chrono::milliseconds(600'000))
                                        : ctx_.config.drain_grace;
  // Held across both waits; expires by itself if this replica dies mid-way.
  const auto hold = 2 * grace + std::chrono::seconds(10);
  const std::string assign_id = ctx_.server_id + "-" + random_id();
  auto ex = co_await asio::this_coro::executor;
  auto& pool = ctx_.pool;

  // Registered before the drain notice can go out: a fast owner may answer
  // before begin_assign() even returns.
  auto drain_ticket = ctx_.handoff.expect(ex, ChangeNotice::Kind::drained, scope.namespace_name,
                                          req.session_id(), 0);
  AssignStart start;
  try {
    start = co_await pool.run<AssignStart>([&](pqxx::connection& c) {
      return begin_assign(c, scope, req, assign_id, hold,
                          static_cast<std::uint32_t>(grace.count()));
    });
  } catch (...) {
    ctx_.handoff.forget(drain_ticket);
    throw;
  }
  const auto end_mark = [&]() -> asio::awaitable<void> {
    try {
      co_await pool.run<bool>([&](pqxx::connection& c) {
        end_assign(c, scope, req.session_id(), assign_id);
        return true;
      });
    } catch (const StoreError&) {
      // The mark expires by itself.
    }
  };
  bool drained = true;
  if (start.drain_requested) {
    drain_ticket->epoch = start.epoch;
    drained = co_await ctx_.handoff.wait(drain_ticket, grace);
    if (!drained)
      spdlog::info("previous owner did not drain within {}ms; moving anyway", grace.count());
  } else {
    ctx_.handoff.forget(drain_ticket);
  }
  const bool already_owner = start.previous_owner == req.engine_id() && start.epoch > 0;
  auto ready_ticket = ctx_.handoff.expect(ex, ChangeNotice::Kind::ready, scope.namespace_name,
                                          req.session_id(), start.epoch + 1);
  wire::AssignReply reply;
  std::exception_ptr failed;  // no co_await inside a catch block
  try {
    reply = co_await pool.run<wire::AssignReply>(
        [&](pqxx::connection& c) { return finish_assign(c, scope, req, assign_id); });
  } catch (const StoreError&) {
    failed = std::current_exception();
  }
  if (failed) {
    ctx_.handoff.forget(ready_ticket);
    co_await end_mark();
    std::rethrow_exception(failed);
  }
  bool ready = already_owner;
  if (!already_owner) {
    ready = co_await ctx_.handoff.wait(ready_ticket, grace);
  } else {
    ctx_.handoff.forget(ready_ticket);
  }
  co_await end_mark();
  reply.set_drained(drained);
  reply.set_ready(ready);
  co_return reply;
}

}  // namespace cookiefs::storage
