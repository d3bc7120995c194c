// SessionStore: what the sessions side of the mount asks of the storage
// service, as an interface, so that unit tests can put a fake service with
// injected faults (unreachable, lost replies, fencing) in place of the real
// client. ClientSessionStore is the production one: a thin forwarder to the
// StorageClient the daemon owns.
//
// Errors: every blocking call throws RequestError with the service's typed
// error (or UNAVAILABLE when it could not be reached before the deadline).
// transient() is the one definition of "try again later".
//
// Thread-safety: implementations may be called from any thread but the
// storage client's I/O thread; fetch_async's callback may run on any thread
// and must not block.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "storage_client.hpp"

namespace cookiefs::mount {

// The one answer to "is this error worth retrying?": the service or the
// connection failed, not the request. UNAUTHENTICATED is transient for a
// mount: the operator fixes the token or the credentials file and the mount
// carries on.
bool transient(wire::ErrorCode c);

class SessionStore {
 public:
  using FetchCallback = std::function<void(StorageClient::Result)>;

  virtual ~SessionStore() = default;

  virtual bool connected() const = 0;
  virtual wire::FetchReply fetch(const wire::FetchSession& req) = 0;
  // Answers `cb` exactly once; timeout 0 = the client's default deadline.
  virtual void fetch_async(const wire::FetchSession& req, FetchCallback cb,
                           std::chrono::milliseconds timeout) = 0;
  virtual wire::CommitReply commit(const wire::CommitSession& req) = 0;
  virtual wire::AssignReply assign(const wire::Assign& req, std::chrono::milliseconds timeout) = 0;
  virtual void delete_session(const wire::DeleteSession& req) = 0;
  virtual void release(const wire::Release& req) = 0;
  virtual void drain_done(const wire::DrainDone& req) = 0;
  virtual void session_ready(const wire::SessionReady& req) = 0;
  virtual void subscribe(const std::vector<std::string>& ids) = 0;
  virtual void unsubscribe(const std::vector<std::string>& ids) = 0;
};

class ClientSessionStore final : public SessionStore {
 public:
  explicit ClientSessionStore(StorageClient& client) : client_(client) {}

  bool connected() const override { return client_.connected(); }
  wire::FetchReply fetch(const wire::FetchSession& req) override { return client_.fetch(req); }
  void fetch_async(const wire::FetchSession& req, FetchCallback cb,
                   std::chrono::milliseconds timeout) override;
  wire::CommitReply commit(const wire::CommitSession& req) override { return client_.commit(req); }
  wire::AssignReply assign(const wire::Assign& req, std::chrono::milliseconds timeout) override {
    return client_.assign(req, timeout);
  }
  void delete_session(const wire::DeleteSession& req) override { client_.delete_session(req); }
  void release(const wire::Release& req) override { client_.release(req); }
  void drain_done(const wire::DrainDone& req) override { client_.drain_done(req); }
  void session_ready(const wire::SessionReady& req) override { client_.session_ready(req); }
  void subscribe(const std::vector<std::string>& ids) override { client_.subscribe(ids); }
  void unsubscribe(const std::vector<std::string>& ids) override { client_.unsubscribe(ids); }

 private:
  StorageClient& client_;
};

}  // namespace cookiefs::mount
