// The typed, blocking requests of StorageClient (fetch, commit, assign, ...)
// built on call_sync(), and endpoint parsing. Same thread-safety as
// StorageClient: callable from any thread except the client's I/O thread.
#include <stdexcept>
#include <string>

#include "storage_client.hpp"

namespace cookiefs {

namespace {

// The reply must carry the body that answers the request, else the peer broke the protocol.
void expect(const wire::Envelope& reply, wire::Envelope::BodyCase body, const char* what) {
  if (reply.body_case() != body) {
    wire::Error e;
    e.set_code(wire::INTERNAL);
    e.set_message(std::string("storage service sent a wrong reply to ") + what);
    throw RequestError(std::move(e));
  }
}

}  // namespace

wire::FetchReply StorageClient::fetch(const wire::FetchSession& req) {
  wire::Envelope env;
  *env.mutable_fetch() = req;
  auto reply = call_sync(std::move(env));
  expect(reply, wire::Envelope::kFetchReply, "fetch");
  return std::move(*reply.mutable_fetch_reply());
}

wire::CommitReply StorageClient::commit(const wire::CommitSession& req) {
  wire::Envelope env;
  *env.mutable_commit() = req;
  auto reply = call_sync(std::move(env));
  expect(reply, wire::Envelope::kCommitReply, "commit");
  return std::move(*reply.mutable_commit_reply());
}

wire::AssignReply StorageClient::assign(const wire::Assign& req,
                                        std::chrono::milliseconds timeout) {
  wire::Envelope env;
  *env.mutable_assign() = req;
  auto reply = call_sync(std::move(env), timeout);
  expect(reply, wire::Envelope::kAssignReply, "assign");
  return std::move(*reply.mutable_assign_reply());
}

wire::ListReply StorageClient::list(const wire::ListSessions& req) {
  wire::Envelope env;
  *env.mutable_list() = req;
  auto reply = call_sync(std::move(env));
  expect(reply, wire::Envelope::kListReply, "list");
  return std::move(*reply.mutable_list_reply());
}

void StorageClient::delete_session(const wire::DeleteSession& req) {
  wire::Envelope env;
  *env.mutable_delete_session() = req;
  expect(call_sync(std::move(env)), wire::Envelope::kAck, "delete");
}

void StorageClient::release(const wire::Release& req) {
  wire::Envelope env;
  *env.mutable_release() = req;
  expect(call_sync(std::move(env)), wire::Envelope::kAck, "release");
}

void StorageClient::drain_done(const wire::DrainDone& req) {
  wire::Envelope env;
  *env.mutable_drain_done() = req;
  expect(call_sync(std::move(env)), wire::Envelope::kAck, "drain_done");
}

void StorageClient::session_ready(const wire::SessionReady& req) {
  wire::Envelope env;
  *env.mutable_session_ready() = req;
  expect(call_sync(std::move(env)), wire::Envelope::kAck, "session_ready");
}

std::pair<std::string, std::uint16_t> parse_endpoint(const std::string& endpoint) {
  std::string host;
  std::string port;
  if (!endpoint.empty() && endpoint.front() == '[') {
    const auto close = endpoint.find(']');
    if (close == std::string::npos || close + 1 >= endpoint.size() || endpoint[close + 1] != ':') {
      throw std::invalid_argument("endpoint '" + endpoint + "' is not [host]:port");
    }
    host = endpoint.substr(1, close - 1);
    port = endpoint.substr(close + 2);
  } else {
    const auto colon = endpoint.rfind(':');
    if (colon == std::string::npos || endpoint.find(':') != colon) {
      throw std::invalid_argument("endpoint '" + endpoint + "' is not host:port");
    }
    host = endpoint.substr(0, colon);
    port = endpoint.substr(colon + 1);
  }
  if (host.empty()) throw std::invalid_argument("endpoint '" + endpoint + "' has no host");
  if (port.empty() || port.size() > 5 ||
      port.find_first_not_of("0123456789") != std::string::npos) {
    throw std::invalid_argument("endpoint '" + endpoint + "' has no valid port");
  }
  const unsigned long value = std::stoul(port);
  if (value == 0 || value > 65535) {
    throw std::invalid_argument("endpoint '" + endpoint + "' has a port out of range");
  }
  return {host, static_cast<std::uint16_t>(value)};
}

}  // namespace cookiefs
