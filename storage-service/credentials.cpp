// Credentials file parsing and token lookup; see credentials.hpp.
#include "credentials.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <yaml-cpp/yaml.h>

#include <fstream>
#include <set>
#include <sstream>

#include "config.hpp"
#include "names.hpp"

namespace cookiefs::storage {
namespace {

// Thrown inside parse() with the key only; parse() adds the source.
struct KeyError {
  std::string key;
  std::string what;
};

std::string scalar(const YAML::Node& n, const std::string& key, const char* what) {
  if (!n.IsScalar()) throw KeyError{key, std::string("expected ") + what};
  return n.Scalar();
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

TokenHash parse_hash(const std::string& text, const std::string& key) {
  TokenHash h{};
  if (text.size() != 2 * h.size()) {
    throw KeyError{key, "expected 64 hex digits (a SHA-256), got " + std::to_string(text.size()) +
                            " characters"};
  }
  for (std::size_t i = 0; i < h.size(); ++i) {
    const int hi = hex_digit(text[2 * i]), lo = hex_digit(text[2 * i + 1]);
    if (hi < 0 || lo < 0) throw KeyError{key, "expected 64 hex digits (a SHA-256)"};
    h[i] = static_cast<unsigned char>(hi * 16 + lo);
  }
  return h;
}

Role parse_role(const std::string& text, const std::string& key) {
  if (text == "engine") return Role::engine;
  if (text == "manager") return Role::manager;
  if (text == "operator") return Role::operator_;
  throw KeyError{key, "unknown role \"" + text + "\" (expected engine, manager or operator)"};
}

Principal parse_principal(const YAML::Node& node, const std::string& ns, const std::string& at) {
  if (!node.IsMap()) throw KeyError{at, "expected a map with name, role, token_sha256"};
  Principal p;
  p.namespace_name = ns;
  bool has_name = false, has_role = false, has_hash = false, has_ids = false;
  for (const auto& entry : node) {
    const std::string field = entry.first.as<std::string>();
    const std::string key = at + "." + field;
    if (field == "name") {
      p.name = scalar(entry.second, key, "a name");
      if (!valid_id(p.name)) throw KeyError{key, "invalid name \"" + p.name + "\""};
      has_name = true;
    } else if (field == "role") {
      p.role = parse_role(scalar(entry.second, key, "a role"), key);
      has_role = true;
    } else if (field == "token_sha256") {
      p.token_sha256 = parse_hash(scalar(entry.second, key, "64 hex digits"), key);
      has_hash = true;
    } else if (field == "engine_ids") {
      if (!entry.second.IsSequence()) throw KeyError{key, "expected a list of engine ids"};
      for (const auto& item : entry.second) {
        const std::string id = scalar(item, key, "an engine id");
        if (!valid_id(id)) throw KeyError{key, "invalid engine id \"" + id + "\""};
        p.engine_ids.push_back(id);
      }
      has_ids = true;
    } else {
      throw KeyError{key, "unknown key"};
    }
  }
  if (!has_name) throw KeyError{at + ".name", "required"};
  if (!has_role) throw KeyError{at + ".role", "required"};
  if (!has_hash) throw KeyError{at + ".token_sha256", "required"};
  if (p.role == Role::engine && p.engine_ids.empty()) {
    throw KeyError{at + ".engine_ids", "an engine principal needs at least one engine id"};
  }
  if (p.role != Role::engine && has_ids) {
    throw KeyError{at + ".engine_ids", "only engine principals have engine ids"};
  }
  return p;
}

}  // namespace

TokenHash token_hash(std::string_view token) {
  TokenHash h{};
  unsigned int len = 0;
  if (EVP_Digest(token.data(), token.size(), h.data(), &len, EVP_sha256(), nullptr) != 1 ||
      len != h.size()) {
    throw std::runtime_error("SHA-256 failed");
  }
  return h;
}

std::string to_hex(const unsigned char* data, std::size_t n) {
  static const char* kDigits = "0123456789abcdef";
  std::string out;
  out.reserve(2 * n);
  for (std::size_t i = 0; i < n; ++i) {
    out += kDigits[data[i] >> 4];
    out += kDigits[data[i] & 0xf];
  }
  return out;
}

bool Principal::may_speak_for(std::string_view engine_id) const {
  for (const auto& id : engine_ids) {
    if (id == engine_id) return true;
  }
  return false;
}

Credentials Credentials::parse(const std::string& yaml_text, const std::string& source) {
  Credentials c;
  try {
    YAML::Node root;
    try {
      root = YAML::Load(yaml_text);
    } catch (const YAML::ParserException& e) {
      throw ConfigError(source + ": line " + std::to_string(e.mark.line + 1) + ": " + e.msg);
    }
    if (!root.IsMap()) throw KeyError{"namespaces", "required (a map of namespace to principals)"};
    bool has_namespaces = false;
    for (const auto& top : root) {
      const std::string key = top.first.as<std::string>();
      if (key != "namespaces") throw KeyError{key, "unknown key"};
      has_namespaces = true;
      if (top.second.IsNull()) continue;
      if (!top.second.IsMap()) throw KeyError{key, "expected a map of namespace to principals"};
      for (const auto& ns_entry : top.second) {
        const std::string ns = ns_entry.first.as<std::string>();
        const std::string at = "namespaces." + ns;
        if (!valid_id(ns)) throw KeyError{at, "invalid namespace name"};
        if (!ns_entry.second.IsSequence()) throw KeyError{at, "expected a list of principals"};
        auto& list = c.by_namespace_[ns];
        std::set<std::string> names;
        for (std::size_t i = 0; i < ns_entry.second.size(); ++i) {
          const std::string item = at + "[" + std::to_string(i) + "]";
          Principal p = parse_principal(ns_entry.second[i], ns, item);
          if (!names.insert(p.name).second) {
            throw KeyError{item + ".name", "duplicate name \"" + p.name + "\""};
          }
          for (const auto& other : list) {
            if (other.token_sha256 == p.token_sha256) {
              throw KeyError{item + ".token_sha256", "same token as \"" + other.name + "\""};
            }
          }
          list.push_back(std::move(p));
        }
      }
    }
    if (!has_namespaces) throw KeyError{"namespaces", "required"};
  } catch (const KeyError& e) {
    throw ConfigError(source + ": " + e.key + ": " + e.what);
  } catch (const YAML::Exception& e) {
    throw ConfigError(source + ": " + e.msg);
  }
  return c;
}

Credentials Credentials::load(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError(path + ": cannot open credentials file");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse(ss.str(), path);
}

const Principal* Credentials::find_by_token(const std::string& namespace_name,
                                            std::string_view token) const {
  auto it = by_namespace_.find(namespace_name);
  if (it == by_namespace_.end() || token.empty()) return nullptr;
  const TokenHash h = token_hash(token);
  const Principal* found = nullptr;
  for (const auto& p : it->second) {
    // Every hash is compared; hashes are unique per namespace (parse checks).
    const bool same = CRYPTO_memcmp(p.token_sha256.data(), h.data(), h.size()) == 0;
    if (same) found = &p;
  }
  return found;
}

const Principal* Credentials::find_by_name(const std::string& namespace_name,
                                           const std::string& name) const {
  auto it = by_namespace_.find(namespace_name);
  if (it == by_namespace_.end()) return nullptr;
  for (const auto& p : it->second) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

std::size_t Credentials::size() const {
  std::size_t n = 0;
  for (const auto& [ns, list] : by_namespace_) n += list.size();
  return n;
}

CredentialStore::CredentialStore(std::shared_ptr<const Credentials> initial)
    : current_(std::move(initial)) {}

std::shared_ptr<const Credentials> CredentialStore::current() const {
  std::lock_guard lock(mu_);
  return current_;
}

void CredentialStore::replace(std::shared_ptr<const Credentials> next) {
  {
    std::lock_guard lock(mu_);
    current_ = std::move(next);
  }
  generation_.fetch_add(1, std::memory_order_acq_rel);
}

}  // namespace cookiefs::storage
