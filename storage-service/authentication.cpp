// Token checks at hello and after reloads; see authentication.hpp.
#include "authentication.hpp"

#include <openssl/crypto.h>
#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <spdlog/spdlog.h>

namespace cookiefs::storage {
namespace {

constexpr auto kLogEvery = std::chrono::minutes(1);
constexpr std::size_t kMaxPeersRemembered = 4096;

}  // namespace

Authenticator::Authenticator(std::shared_ptr<CredentialStore> store,
                             prometheus::Family<prometheus::Counter>* failures)
    : store_(std::move(store)), failures_(failures) {}

bool Authenticator::should_log(const std::string& peer) {
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(log_mu_);
  if (last_logged_.size() >= kMaxPeersRemembered) {
    std::erase_if(last_logged_, [&](const auto& kv) { return now - kv.second >= kLogEvery; });
  }
  auto [it, fresh] = last_logged_.try_emplace(peer, now);
  if (!fresh && now - it->second < kLogEvery) return false;
  it->second = now;
  return last_logged_.size() <= kMaxPeersRemembered;
}

AuthResult Authenticator::refuse(const std::string& reason, const std::string& message,
                                 const std::string& peer, const std::string& namespace_name,
                                 const std::string& engine_id) {
  if (failures_) failures_->Add({{"reason", reason}}).Increment();
  const bool log = should_log(peer);
  if (log) {
    spdlog::warn(
        "refused a connection from {} (namespace '{}', engine id '{}'): {}; further refusals "
        "of this peer within a minute are only counted",
        peer, namespace_name, engine_id, reason);
  }
  return {.ok = false, .identity = {}, .reason = reason, .message = message};
}

AuthResult Authenticator::check(const Credentials&, const Principal* p,
                                const std::string& engine_id, std::uint64_t generation) {
  AuthResult r;
  const bool id_ok = p->role == Role::engine ? !engine_id.empty() && p->may_speak_for(engine_id)
                                             : engine_id.empty();
  if (!id_ok) {
    r.reason = "engine_id";
    r.message = engine_id.empty() ? "this token is for an engine: hello must name its engine id"
                                  : "this token may not speak for engine id " + engine_id;
    return r;
  }
  r.ok = true;
  r.identity = Identity{.principal = p->name,
                        .namespace_name = p->namespace_name,
                        .engine_id = engine_id,
                        .role = p->role,
                        .token_sha256 = p->token_sha256,
                        .generation = generation};
  return r;
}

AuthResult Authenticator::hello(const std::string& namespace_name, const std::string& engine_id,
                                const std::string& token, const std::string& peer) {
  if (!store_) {
    AuthResult r;
    r.ok = true;
    r.identity = Identity{.principal = "anonymous",
                          .namespace_name = namespace_name,
                          .engine_id = engine_id,
                          .role = engine_id.empty() ? Role::unrestricted : Role::engine};
    return r;
  }
  if (token.empty()) {
    return refuse("no_token", "a token is required", peer, namespace_name, engine_id);
  }
  const std::uint64_t generation = store_->generation();
  const auto creds = store_->current();
  const Principal* p = creds->find_by_token(namespace_name, token);
  if (!p) return refuse("bad_token", "token rejected", peer, namespace_name, engine_id);
  AuthResult r = check(*creds, p, engine_id, generation);
  if (!r.ok) return refuse(r.reason, r.message, peer, namespace_name, engine_id);
  return r;
}

bool Authenticator::current(const Identity& id) const {
  return !store_ || id.generation == store_->generation();
}

AuthResult Authenticator::recheck(const Identity& id, const std::string& peer) {
  if (!store_) return {.ok = true, .identity = id, .reason = {}, .message = {}};
  const std::uint64_t generation = store_->generation();
  const auto creds = store_->current();
  const Principal* p = creds->find_by_name(id.namespace_name, id.principal);
  if (!p ||
      CRYPTO_memcmp(p->token_sha256.data(), id.token_sha256.data(), id.token_sha256.size()) != 0) {
    return refuse("revoked", "the connection's token is no longer valid", peer, id.namespace_name,
                  id.engine_id);
  }
  AuthResult r = check(*creds, p, id.engine_id, generation);
  if (!r.ok) {
    return refuse("revoked", "the connection's token may no longer speak for its engine id", peer,
                  id.namespace_name, id.engine_id);
  }
  return r;
}

void Authenticator::replace_credentials(std::shared_ptr<const Credentials> next) {
  if (store_) store_->replace(std::move(next));
}

}  // namespace cookiefs::storage
