// Credentials file: what loads, every bad input refused with the key named,
// and the token lookup.
#include <doctest/doctest.h>

#include <string>

#include "config.hpp"
#include "credentials.hpp"
#include "token_command.hpp"

using namespace cookiefs;
using namespace cookiefs::storage;

namespace {

const std::string kHashA(64, 'a');
const std::string kHashB(64, 'b');

std::string hash_hex(const std::string& token) {
  const auto h = token_hash(token);
  return to_hex(h.data(), h.size());
}

// The error parse() throws, or "" when it loads.
std::string error_of(const std::string& yaml) {
  try {
    Credentials::parse(yaml, "creds.yaml");
    return "";
  } catch (const ConfigError& e) {
    return e.what();
  }
}

}  // namespace

TEST_CASE("a credentials file with every role loads") {
  const std::string yaml =
      "namespaces:\n"
      "  default:\n"
      "    - name: host-a\n"
      "      role: engine\n"
      "      engine_ids: [host-a, host-a2]\n"
      "      token_sha256: " +
      hash_hex("tok-a") +
      "\n"
      "    - name: nm\n"
      "      role: manager\n"
      "      token_sha256: " +
      hash_hex("tok-nm") +
      "\n"
      "  other:\n"
      "    - name: ops\n"
      "      role: operator\n"
      "      token_sha256: " +
      hash_hex("tok-ops") + "\n";
  const Credentials c = Credentials::parse(yaml, "creds.yaml");
  CHECK(c.size() == 3);
  const Principal* a = c.find_by_token("default", "tok-a");
  REQUIRE(a != nullptr);
  CHECK(a->name == "host-a");
  CHECK(a->role == Role::engine);
  CHECK(a->may_speak_for("host-a2"));
  CHECK_FALSE(a->may_speak_for("host-b"));
  CHECK(c.find_by_token("default", "tok-nm")->role == Role::manager);
  // A token is only good in its own namespace, and only the exact token.
  CHECK(c.find_by_token("other", "tok-a") == nullptr);
  CHECK(c.find_by_token("default", "tok-ops") == nullptr);
  CHECK(c.find_by_token("default", "tok-a ") == nullptr);
  CHECK(c.find_by_token("default", "") == nullptr);
  CHECK(c.find_by_token("nowhere", "tok-a") == nullptr);
  CHECK(c.find_by_name("other", "ops")->role == Role::operator_);
  CHECK(c.find_by_name("default", "ops") == nullptr);
}

TEST_CASE("hashes may be upper case; an empty namespace list is allowed") {
  std::string upper = hash_hex("t");
  for (auto& ch : upper) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  const Credentials c = Credentials::parse(
      "namespaces:\n  d:\n    - {name: n, role: manager, token_sha256: " + upper + "}\n", "f");
  CHECK(c.find_by_token("d", "t") != nullptr);
  CHECK(Credentials::parse("namespaces: {}\n", "f").size() == 0);
}

TEST_CASE("every bad input is refused, naming the file and the key") {
  const std::string ok_hash = "token_sha256: " + kHashA;
  struct Case {
    const char* what;
    std::string yaml;
    std::string expect;
  };
  const Case cases[] = {
      {"unknown role", "namespaces:\n  d:\n    - {name: n, role: admin, " + ok_hash + "}\n",
       "creds.yaml: namespaces.d[0].role: unknown role \"admin\""},
      {"short hash", "namespaces:\n  d:\n    - {name: n, role: manager, token_sha256: abc}\n",
       "creds.yaml: namespaces.d[0].token_sha256: expected 64 hex digits"},
      {"hash not hex",
       "namespaces:\n  d:\n    - {name: n, role: manager, token_sha256: " + std::string(64, 'g') +
           "}\n",
       "creds.yaml: namespaces.d[0].token_sha256: expected 64 hex digits"},
      {"duplicate name",
       "namespaces:\n  d:\n    - {name: n, role: manager, " + ok_hash +
           "}\n    - {name: n, role: operator, token_sha256: " + kHashB + "}\n",
       "creds.yaml: namespaces.d[1].name: duplicate name \"n\""},
      {"duplicate token",
       "namespaces:\n  d:\n    - {name: n, role: manager, " + ok_hash +
           "}\n    - {name: m, role: operator, " + ok_hash + "}\n",
       "creds.yaml: namespaces.d[1].token_sha256: same token as \"n\""},
      {"unknown key in a principal",
       "namespaces:\n  d:\n    - {name: n, role: manager, token: x, " + ok_hash + "}\n",
       "creds.yaml: namespaces.d[0].token: unknown key"},
      {"unknown top-level key", "namespace:\n  d: []\n", "creds.yaml: namespace: unknown key"},
      {"no namespaces", "{}\n", "creds.yaml: namespaces: required"},
      {"empty file", "", "creds.yaml: namespaces: required"},
      {"missing role", "namespaces:\n  d:\n    - {name: n, " + ok_hash + "}\n",
       "creds.yaml: namespaces.d[0].role: required"},
      {"missing hash", "namespaces:\n  d:\n    - {name: n, role: manager}\n",
       "creds.yaml: namespaces.d[0].token_sha256: required"},
      {"missing name", "namespaces:\n  d:\n    - {role: manager, " + ok_hash + "}\n",
       "creds.yaml: namespaces.d[0].name: required"},
      {"engine without ids", "namespaces:\n  d:\n    - {name: n, role: engine, " + ok_hash + "}\n",
       "creds.yaml: namespaces.d[0].engine_ids: an engine principal needs"},
      {"ids on a manager",
       "namespaces:\n  d:\n    - {name: n, role: manager, engine_ids: [a], " + ok_hash + "}\n",
       "creds.yaml: namespaces.d[0].engine_ids: only engine principals"},
      {"bad engine id",
       "namespaces:\n  d:\n    - {name: n, role: engine, engine_ids: [../x], " + ok_hash + "}\n",
       "creds.yaml: namespaces.d[0].engine_ids: invalid engine id"},
      {"bad namespace", "namespaces:\n  ../x: []\n", "creds.yaml: namespaces.../x: invalid"},
      {"bad name", "namespaces:\n  d:\n    - {name: 'a b', role: manager, " + ok_hash + "}\n",
       "creds.yaml: namespaces.d[0].name: invalid name"},
      {"principals not a list", "namespaces:\n  d: {name: n}\n",
       "creds.yaml: namespaces.d: expected a list"},
      {"not YAML", "namespaces: [\n", "creds.yaml: line "},
  };
  for (const auto& c : cases) {
    const std::string err = error_of(c.yaml);
    CHECK_MESSAGE(err.rfind(c.expect, 0) == 0, c.what, ": ", err);
    CHECK_MESSAGE(err.find('\n') == std::string::npos, c.what);
  }
}

TEST_CASE("a missing credentials file names the file") {
  try {
    Credentials::load("/nonexistent/creds.yaml");
    FAIL("loaded");
  } catch (const ConfigError& e) {
    CHECK(std::string(e.what()) == "/nonexistent/creds.yaml: cannot open credentials file");
  }
}

TEST_CASE("token create: 256 random bits, and an entry the loader accepts") {
  const std::string t1 = make_token(), t2 = make_token();
  CHECK(t1.size() == 64);
  CHECK(t1 != t2);
  const std::string entry = principal_entry("host-a", "engine", {"host-a", "host-b"}, t1);
  CHECK(entry.find(t1) == std::string::npos);  // only the hash
  std::string indented;
  for (std::size_t i = 0; i < entry.size(); ++i) {
    if (i == 0 || entry[i - 1] == '\n') indented += "    ";
    indented += entry[i];
  }
  const Credentials c = Credentials::parse("namespaces:\n  ns:\n" + indented, "f");
  const Principal* p = c.find_by_token("ns", t1);
  REQUIRE(p != nullptr);
  CHECK(p->may_speak_for("host-b"));
}

TEST_CASE("the store swaps whole sets and counts generations") {
  CredentialStore store(std::make_shared<const Credentials>(Credentials::parse(
      "namespaces:\n  d:\n    - {name: n, role: manager, token_sha256: " + hash_hex("x") + "}\n",
      "f")));
  const auto g = store.generation();
  CHECK(store.current()->find_by_token("d", "x") != nullptr);
  store.replace(std::make_shared<const Credentials>(Credentials::parse("namespaces: {}\n", "f")));
  CHECK(store.generation() != g);
  CHECK(store.current()->find_by_token("d", "x") == nullptr);
}
