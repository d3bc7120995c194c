// Authentication: who a connection is, decided once at hello and looked at
// again after every reload of the credentials file.
//
// auth.mode tokens: the hello's token must hash to a principal of the hello's
// namespace, and the hello's engine id must be one that principal may speak
// for (engine role: one of its engine_ids; other roles: none). auth.mode none:
// every hello is accepted, as an engine when it names an engine id and as an
// unrestricted (manager + operator) connection when it does not.
//
// Failures are counted (cookiefs_storage_auth_failures_total{reason}) and
// logged at most once per peer address and minute, never with the token.
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "authorization.hpp"
#include "credentials.hpp"

namespace prometheus {
class Counter;
template <typename T>
class Family;
}  // namespace prometheus

namespace cookiefs::storage {

// What a connection proved at hello.
struct Identity {
  std::string principal;  // "anonymous" in auth.mode none
  std::string namespace_name;
  std::string engine_id;
  Role role = Role::unrestricted;
  TokenHash token_sha256{};
  std::uint64_t generation = 0;  // of the credentials it was checked against
};

struct AuthResult {
  bool ok = false;
  Identity identity;    // when ok
  std::string reason;   // metric label when not ok: no_token, bad_token, engine_id, revoked
  std::string message;  // for the client; names no principal and no token
};

class Authenticator {
 public:
  // store == nullptr: auth.mode none.
  Authenticator(std::shared_ptr<CredentialStore> store,
                prometheus::Family<prometheus::Counter>* failures);

  bool tokens_required() const { return store_ != nullptr; }

  AuthResult hello(const std::string& namespace_name, const std::string& engine_id,
                   const std::string& token, const std::string& peer);

  // True when `id` was checked against the current credentials.
  bool current(const Identity& id) const;
  // Checks `id` against the current credentials: its principal must still
  // exist with the same token and may still speak for its engine id. Updates
  // the role (a role change applies at once) and generation.
  AuthResult recheck(const Identity& id, const std::string& peer);

  void replace_credentials(std::shared_ptr<const Credentials> next);

  // True at most once per peer address and minute: refusals (and failed TLS
  // handshakes) are logged that often, and only counted otherwise.
  bool should_log(const std::string& peer);

 private:
  AuthResult refuse(const std::string& reason, const std::string& message, const std::string& peer,
                    const std::string& namespace_name, const std::string& engine_id);
  AuthResult check(const Credentials& creds, const Principal* p, const std::string& engine_id,
                   std::uint64_t generation);

  std::shared_ptr<CredentialStore> store_;
  prometheus::Family<prometheus::Counter>* failures_;
  std::mutex log_mu_;
  std::unordered_map<std::string, std::chrono::steady_clock::time_point> last_logged_;  // log_mu_
};

}  // namespace cookiefs::storage
