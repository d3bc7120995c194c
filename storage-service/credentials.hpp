// Credentials: the principals the storage-service knows, per namespace, as
// loaded from the credentials file (auth.credentials_file):
//
//   namespaces:
//     default:
//       - name: host-a
//         role: engine            # engine | manager | operator
//         engine_ids: [host-a]    # engine role only: the ids it may speak for
//         token_sha256: 9f86d0... # hex SHA-256 of the token, 64 digits
//
// Parsing is strict: an unknown key, an unknown role, a malformed hash, a
// duplicate name (or token) in a namespace is a ConfigError naming the file
// and the key (`creds.yaml: namespaces.default[1].role: unknown role "admin"`).
// Tokens themselves are never stored, only their SHA-256, and compared in
// constant time.
//
// Thread-safety: a Credentials object is immutable after parse() and may be
// shared between threads. CredentialStore swaps whole sets under a mutex; its
// readers get a shared_ptr to a consistent set.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "authorization.hpp"

namespace cookiefs::storage {

using TokenHash = std::array<unsigned char, 32>;

TokenHash token_hash(std::string_view token);
std::string to_hex(const unsigned char* data, std::size_t n);

struct Principal {
  std::string name;
  std::string namespace_name;
  Role role = Role::engine;
  std::vector<std::string> engine_ids;  // engine role only
  TokenHash token_sha256{};

  bool may_speak_for(std::string_view engine_id) const;
};

class Credentials {
 public:
  // Throws ConfigError("<source>: <key>: <what>").
  static Credentials parse(const std::string& yaml_text, const std::string& source);
  static Credentials load(const std::string& path);

  // The principal of `namespace_name` whose token hashes to the same value,
  // or nullptr. Compares against every principal of the namespace in
  // constant time (no early exit), so timing tells nothing about which hash
  // was close.
  const Principal* find_by_token(const std::string& namespace_name, std::string_view token) const;
  const Principal* find_by_name(const std::string& namespace_name, const std::string& name) const;
  std::size_t size() const;

 private:
  std::map<std::string, std::vector<Principal>> by_namespace_;
};

// The current credentials and a generation that changes on every reload, so
// a connection can tell cheaply whether its principal must be looked up
// again.
class CredentialStore {
 public:
  explicit CredentialStore(std::shared_ptr<const Credentials> initial);
  std::shared_ptr<const Credentials> current() const;
  std::uint64_t generation() const { return generation_.load(std::memory_order_acquire); }
  void replace(std::shared_ptr<const Credentials> next);

 private:
  mutable std::mutex mu_;
  std::shared_ptr<const Credentials> current_;  // guarded by mu_
  std::atomic<std::uint64_t> generation_{1};
};

}  // namespace cookiefs::storage
