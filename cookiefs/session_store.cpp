// The storage service as the sessions side sees it; see session_store.hpp.
#include "session_store.hpp"

namespace cookiefs::mount {

bool transient(wire::ErrorCode c) {
  return c == wire::UNAVAILABLE || c == wire::SHUTTING_DOWN || c == wire::INTERNAL ||
         c == wire::ERROR_UNSPECIFIED || c == wire::UNAUTHENTICATED;
}

void ClientSessionStore::fetch_async(const wire::FetchSession& req, FetchCallback cb,
                                     std::chrono::milliseconds timeout) {
  wire::Envelope env;
  *env.mutable_fetch() = req;
  client_.call(std::move(env), std::move(cb), timeout);
}

}  // namespace cookiefs::mount
