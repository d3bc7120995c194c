// Authentication and authorization against the real service (auth.mode
// tokens) and PostgreSQL: one test per refusal, each asserting the refusal
// and that nothing changed in the database; the credentials file's reload;
// a bad credentials file stops the start with exit 2.
#include <doctest/doctest.h>
#include <openssl/evp.h>
#include <signal.h>

#include <fstream>
#include <future>
#include <random>
#include <thread>

#include "http_probe.hpp"
#include "ports.hpp"
#include "storage_fixture.hpp"
#include "subprocess.hpp"

using namespace cookiefs;
using namespace cookiefs::test;
using namespace std::chrono_literals;

namespace {

std::string sha256_hex(const std::string& s) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  REQUIRE(EVP_Digest(s.data(), s.size(), md, &len, EVP_sha256(), nullptr) == 1);
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < len; ++i) {
    out += digits[md[i] >> 4];
    out += digits[md[i] & 0xf];
  }
  return out;
}

std::string random_token() {
  static std::mt19937_64 rng{std::random_device{}()};
  char buf[40];
  std::snprintf(buf, sizeof buf, "tok-%016llx%016llx", static_cast<unsigned long long>(rng()),
                static_cast<unsigned long long>(rng()));
  return buf;
}

struct PrincipalSpec {
  std::string ns, name, role;
  std::vector<std::string> engine_ids;
  std::string token = random_token();
};

std::string credentials_yaml(const std::vector<PrincipalSpec>& ps) {
  std::map<std::string, std::string> by_ns;
  for (const auto& p : ps) {
    std::string e = "    - name: " + p.name + "\n      role: " + p.role + "\n";
    if (!p.engine_ids.empty()) {
      e += "      engine_ids: [";
      for (std::size_t i = 0; i < p.engine_ids.size(); ++i) {
        e += (i ? ", " : "") + p.engine_ids[i];
      }
      e += "]\n";
    }
    e += "      token_sha256: " + sha256_hex(p.token) + "\n";
    by_ns[p.ns] += e;
  }
  std::string out = "namespaces:\n";
  for (const auto& [ns, entries] : by_ns) out += "  " + ns + ":\n" + entries;
  return out;
}

std::string temp_path(const char* what) {
  std::string tmpl = std::string("/tmp/cookiefs-") + what + "-XXXXXX";
  const int fd = ::mkstemp(tmpl.data());
  REQUIRE(fd >= 0);
  ::close(fd);
  return tmpl;
}

void write_file(const std::string& path, const std::string& text) {
  // Replaced by rename, as editors and Kubernetes do: a reader never sees half.
  const std::string tmp = path + ".new";
  {
    std::ofstream out(tmp);
    out << text;
  }
  REQUIRE(::rename(tmp.c_str(), path.c_str()) == 0);
}

// Two namespaces: in `a`, engines host-a and host-b, a manager and an
// operator; in `b`, engine host-x. A storage-service in auth.mode tokens.
struct AuthStack {
  std::string a = fresh_namespace(), b = fresh_namespace();
  PrincipalSpec eng_a{a, "eng-a", "engine", {"host-a"}};
  PrincipalSpec eng_b{a, "eng-b", "engine", {"host-b"}};
  PrincipalSpec nm{a, "nm", "manager", {}};
  PrincipalSpec ops{a, "ops", "operator", {}};
  PrincipalSpec eng_x{b, "eng-x", "engine", {"host-x"}};
  std::string creds_path = temp_path("creds");
  std::uint16_t metrics_port = free_tcp_port();
  std::unique_ptr<StorageServiceProcess> svc;

  AuthStack() {
    write_file(creds_path, credentials_yaml({eng_a, eng_b, nm, ops, eng_x}));
    svc = std::make_unique<StorageServiceProcess>(
        shared_cluster().url(), 0,
        std::vector<std::string>{"--auth-mode", "tokens", "--auth-credentials-file", creds_path,
                                 "--auth-credentials-poll", "100ms", "--metrics-listen",
                                 "127.0.0.1:" + std::to_string(metrics_port)});
  }
  ~AuthStack() { ::unlink(creds_path.c_str()); }

  std::unique_ptr<WireConnection> as(const PrincipalSpec& p, const std::string& engine = "") {
    auto c = std::make_unique<WireConnection>(svc->port());
    const std::string id = engine.empty() && !p.engine_ids.empty() ? p.engine_ids[0] : engine;
    auto reply = c->hello(p.ns, id, p.token);
    REQUIRE_MESSAGE(reply.has_hello_reply(), reply.DebugString());
    return c;
  }

  // Everything the database holds of a namespace, as one comparable string.
  std::string state(const std::string& ns) const {
    return psql(shared_cluster().url(),
                "SELECT coalesce(string_agg(session_id || ':' || owner || ':' || epoch || ':' || "
                "version, ',' ORDER BY session_id), '') || ' files=' || (SELECT count(*) FROM "
                "files WHERE namespace = '" +
                    ns + "') FROM sessions WHERE namespace = '" + ns + "'");
  }

  double failures(const std::string& reason) const {
    auto r = http_get(metrics_port, "/metrics");
    REQUIRE(r);
    const std::string key = "cookiefs_storage_auth_failures_total{reason=\"" + reason + "\"} ";
    const auto at = r->body.find(key);
    if (at == std::string::npos) return 0;
    return std::stod(r->body.substr(at + key.size()));
  }
};

// A hello that must be refused: UNAUTHENTICATED, then the connection closes.
void expect_refused(AuthStack& s, const std::string& ns, const std::string& engine,
                    const std::string& token) {
  WireConnection c(s.svc->port());
  auto reply = c.hello(ns, engine, token);
  REQUIRE_MESSAGE(error_of(reply) == wire::UNAUTHENTICATED, reply.DebugString());
  CHECK(reply.error().message().find(token.empty() ? "\x01" : token) == std::string::npos);
  CHECK(c.closed_by_peer(5s));
}

wire::Envelope request_of(auto setter) {
  wire::Envelope env;
  setter(env);
  return env;
}

// A session `id` in the stack's namespace a, owned by host-a at epoch 1 with
// one file.
void owned_session(AuthStack& s, const std::string& id) {
  auto nm = s.as(s.nm);
  auto r = nm->call(assign_request(id, "host-a", 100, true));
  REQUIRE_MESSAGE(r.has_assign_reply(), r.DebugString());
  auto a = s.as(s.eng_a);
  REQUIRE(
      a->call(commit_request(id, 1, 0, false, {file("cookies", "secret-1")})).has_commit_reply());
}

}  // namespace

TEST_CASE("auth: a hello without a token is refused and the connection closed") {
  AuthStack s;
  owned_session(s, "s");
  const auto before = s.state(s.a);
  const double counted = s.failures("no_token");
  expect_refused(s, s.a, "host-a", "");
  expect_refused(s, s.a, "", "");
  // A request without a hello gets nothing either.
  WireConnection raw(s.svc->port());
  CHECK(error_of(raw.call(request_of([](auto& e) { e.mutable_list(); }))) == wire::UNAUTHENTICATED);
  CHECK(s.failures("no_token") == counted + 2);
  CHECK(s.state(s.a) == before);
  // Logged once per peer and minute, and never with a token.
  const std::string log = s.svc->log();
  std::size_t n = 0;
  for (auto at = log.find("refused a connection from"); at != std::string::npos;
       at = log.find("refused a connection from", at + 1)) {
    ++n;
  }
  CHECK(n == 1);
}

TEST_CASE("auth: a wrong token, or another namespace's token, is refused") {
  AuthStack s;
  owned_session(s, "s");
  const auto before_a = s.state(s.a), before_b = s.state(s.b);
  expect_refused(s, s.a, "host-a", "totally-wrong");
  expect_refused(s, s.a, "host-a", s.eng_a.token + "x");
  expect_refused(s, s.a, "", s.eng_x.token);        // b's token in a
  expect_refused(s, s.b, "host-a", s.eng_a.token);  // a's token in b
  CHECK(s.failures("bad_token") >= 4);
  CHECK(s.svc->log().find(s.eng_a.token) == std::string::npos);
  CHECK(s.state(s.a) == before_a);
  CHECK(s.state(s.b) == before_b);
}

TEST_CASE("auth: a spoofed engine id is refused") {
  AuthStack s;
  owned_session(s, "s");
  const auto before = s.state(s.a);
  expect_refused(s, s.a, "host-b", s.eng_a.token);  // another engine's id
  expect_refused(s, s.a, "", s.eng_a.token);        // an engine token must name its id
  expect_refused(s, s.a, "host-a", s.nm.token);     // a manager speaks for no engine
  expect_refused(s, s.a, "host-a", s.ops.token);
  CHECK(s.failures("engine_id") >= 4);
  CHECK(s.state(s.a) == before);
}

TEST_CASE("auth: another namespace's sessions cannot be listed, fetched, watched or written") {
  AuthStack s;
  auto x = s.as(s.eng_x);
  REQUIRE(x->call(commit_request("theirs", 0, 0, true, {file("cookies", "b-secret")}))
              .has_commit_reply());
  const auto before_b = s.state(s.b);
  auto a = s.as(s.eng_a);
  auto ops = s.as(s.ops);

  // list: only namespace a, which is empty.
  for (auto* c : {a.get(), ops.get()}) {
    auto l = c->call(request_of([](auto& e) { e.mutable_list(); }));
    REQUIRE(l.has_list_reply());
    CHECK(l.list_reply().sessions_size() == 0);
  }
  // fetch: no such session here.
  CHECK(error_of(a->call(fetch_request("theirs"))) == wire::NOT_FOUND);
  CHECK(error_of(ops->call(fetch_request("theirs"))) == wire::NOT_FOUND);
  // subscribe (one session, and all): b's commits are not seen.
  REQUIRE(a->call(request_of([](auto& e) {
             e.mutable_subscribe()->add_session_ids("theirs");
           })).has_ack());
  REQUIRE(ops->call(request_of([](auto& e) { e.mutable_subscribe()->set_all_sessions(true); }))
              .has_ack());
  REQUIRE(x->call(commit_request("theirs", 1, 1, false, {file("cookies", "b-secret-2")}))
              .has_commit_reply());
  CHECK_FALSE(a->next_event(500ms));
  CHECK_FALSE(ops->next_event(100ms));
  const auto after_b_commit = s.state(s.b);
  // commit: lands in a's own namespace, b's session is untouched.
  REQUIRE(a->call(commit_request("theirs", 0, 0, true, {file("cookies", "a-wrote")}))
              .has_commit_reply());
  CHECK(s.state(s.b) == after_b_commit);
  CHECK(after_b_commit != before_b);  // (b's own commit did land)
  auto f = x->call(fetch_request("theirs"));
  REQUIRE(f.has_fetch_reply());
  CHECK(f.fetch_reply().files(0).content() == "b-secret-2");
  // And a hello naming b with a's token is refused outright.
  expect_refused(s, s.b, "host-a", s.eng_a.token);
}

TEST_CASE("auth: only a manager assigns; an engine only claims an unowned session for itself") {
  AuthStack s;
  owned_session(s, "s");
  const auto before = s.state(s.a);
  auto a = s.as(s.eng_a);
  auto b = s.as(s.eng_b);
  auto ops = s.as(s.ops);
  for (auto* c : {a.get(), b.get(), ops.get()}) {
    auto r = c->call(assign_request("s", "host-b", 100));
    CHECK_MESSAGE(error_of(r) == wire::PERMISSION_DENIED, r.DebugString());
    CHECK(error_of(c->call(assign_request("new", "host-b", 100, true))) == wire::PERMISSION_DENIED);
  }
  // host-b may not claim what host-a owns.
  CHECK(error_of(b->call(assign_request("s", "host-b", 100))) == wire::PERMISSION_DENIED);
  CHECK(s.state(s.a) == before);
  // Released, it is unowned: host-b claims it for itself (auto affinity).
  REQUIRE(a->call(request_of([](auto& e) {
             e.mutable_release()->set_session_id("s");
             e.mutable_release()->set_epoch(1);
           })).has_ack());
  const auto released = s.state(s.a);
  CHECK(error_of(a->call(assign_request("s", "host-b", 100))) == wire::PERMISSION_DENIED);
  CHECK(s.state(s.a) == released);
  auto claim = b->call(assign_request("s", "host-b", 100));
  REQUIRE_MESSAGE(claim.has_assign_reply(), claim.DebugString());
  CHECK(claim.assign_reply().epoch() == 2);
  // The manager may move it back (positive control).
  CHECK(s.as(s.nm)->call(assign_request("s", "host-a", 100)).has_assign_reply());
}

TEST_CASE("auth: a non-owner may not delete, at any epoch") {
  AuthStack s;
  owned_session(s, "s");
  const auto before = s.state(s.a);
  auto b = s.as(s.eng_b);
  auto nm = s.as(s.nm);
  const auto del = [](std::uint64_t epoch) {
    return request_of([&](auto& e) {
      e.mutable_delete_session()->set_session_id("s");
      e.mutable_delete_session()->set_writer_epoch(epoch);
    });
  };
  CHECK(error_of(b->call(del(1))) == wire::NOT_OWNER);
  CHECK(error_of(b->call(del(0))) == wire::STALE_EPOCH);  // the old epoch-0 bypass
  CHECK(error_of(s.as(s.eng_a)->call(del(0))) == wire::STALE_EPOCH);
  CHECK(error_of(nm->call(del(1))) == wire::PERMISSION_DENIED);
  CHECK(error_of(nm->call(del(0))) == wire::PERMISSION_DENIED);
  CHECK(s.state(s.a) == before);
  // The owner at its epoch may, and so may an operator.
  CHECK(s.as(s.eng_a)->call(del(1)).has_ack());
  owned_session(s, "s");
  CHECK(s.as(s.ops)->call(del(0)).has_ack());
  CHECK(s.state(s.a) == " files=0");
}

TEST_CASE("auth: a non-owner may not release") {
  AuthStack s;
  owned_session(s, "s");
  const auto before = s.state(s.a);
  const auto rel = request_of([](auto& e) {
    e.mutable_release()->set_session_id("s");
    e.mutable_release()->set_epoch(1);
  });
  CHECK(error_of(s.as(s.eng_b)->call(rel)) == wire::NOT_OWNER);
  CHECK(error_of(s.as(s.ops)->call(rel)) == wire::PERMISSION_DENIED);
  CHECK(s.state(s.a) == before);
  CHECK(s.as(s.eng_a)->call(rel).has_ack());
  CHECK(s.state(s.a) != before);  // owner cleared
}

TEST_CASE("auth: forged DrainDone and SessionReady do not move a hand-off on") {
  AuthStack s;
  owned_session(s, "s");
  auto a = s.as(s.eng_a);
  auto b = s.as(s.eng_b);
  REQUIRE(
      a->call(request_of([](auto& e) { e.mutable_subscribe()->add_session_ids("s"); })).has_ack());
  const auto before = s.state(s.a);

  // host-b forges the drain host-a was asked for: refused, nothing sent on.
  auto nm = s.as(s.nm);
  auto assign = std::async(std::launch::async,
                           [&] { return nm->call(assign_request("s", "host-b", 1500), 30s); });
  bool drain_seen = false;
  for (auto ev = a->next_event(10s); ev; ev = a->next_event(10s)) {
    if (ev->has_drain()) {
      drain_seen = true;
      break;
    }
  }
  REQUIRE(drain_seen);
  const auto forged_drain = request_of([](auto& e) {
    e.mutable_drain_done()->set_session_id("s");
    e.mutable_drain_done()->set_epoch(1);
  });
  CHECK(error_of(b->call(forged_drain)) == wire::NOT_OWNER);
  // (nm's own connection is busy with the assign: one call at a time each.)
  CHECK(error_of(s.as(s.nm)->call(forged_drain)) == wire::PERMISSION_DENIED);
  CHECK(s.state(s.a) == before);  // still host-a's while the assign waits

  // Now host-a forges host-b's SessionReady once the owner moved: refused.
  bool moved = false;
  for (auto ev = a->next_event(10s); ev; ev = a->next_event(10s)) {
    if (ev->has_owner_changed() && ev->owner_changed().owner() == "host-b") {
      moved = true;
      break;
    }
  }
  REQUIRE(moved);
  const auto forged_ready = request_of([](auto& e) {
    e.mutable_session_ready()->set_session_id("s");
    e.mutable_session_ready()->set_epoch(2);
  });
  CHECK(error_of(a->call(forged_ready)) == wire::NOT_OWNER);
  auto r = assign.get();
  REQUIRE_MESSAGE(r.has_assign_reply(), r.DebugString());
  CHECK_FALSE(r.assign_reply().drained());  // the forged drain did not count
  CHECK_FALSE(r.assign_reply().ready());    // nor the forged ready

  // The real owner's confirmations are accepted.
  CHECK(b->call(forged_ready).has_ack());
}

TEST_CASE("auth: the credentials file is reloaded without dropping valid connections") {
  AuthStack s;
  auto a = s.as(s.eng_a);
  auto b = s.as(s.eng_b);
  const auto list = request_of([](auto& e) { e.mutable_list(); });
  // eng-b's token is revoked; a new operator appears.
  PrincipalSpec ops2{s.a, "ops2", "operator", {}};
  write_file(s.creds_path, credentials_yaml({s.eng_a, s.nm, s.ops, s.eng_x, ops2}));
  CHECK(b->closed_by_peer(10s));
  CHECK(a->call(list).has_list_reply());
  expect_refused(s, s.a, "host-b", s.eng_b.token);
  CHECK(s.as(ops2)->call(list).has_list_reply());

  // A broken file keeps the previous credentials.
  write_file(s.creds_path, "namespaces:\n  x:\n    - {name: n, role: admin}\n");
  std::this_thread::sleep_for(500ms);
  CHECK(a->call(list).has_list_reply());
  CHECK(s.as(ops2)->call(list).has_list_reply());
  CHECK(s.svc->log().find("credentials not reloaded") != std::string::npos);

  // SIGHUP reloads too (polling alone would also see it; the log says which).
  {
    std::ofstream out(s.creds_path);
    out << credentials_yaml({s.eng_a, s.eng_b});
  }
  s.svc->process().signal(SIGHUP);
  std::this_thread::sleep_for(500ms);
  CHECK(s.svc->log().find("SIGHUP: reloading") != std::string::npos);
  CHECK(s.as(s.eng_b)->call(list).has_list_reply());
  CHECK(a->call(list).has_list_reply());
  expect_refused(s, s.a, "", ops2.token);
}

TEST_CASE("auth: a bad credentials file stops the start with exit 2, naming the key") {
  const std::string path = temp_path("creds");
  write_file(path, "namespaces:\n  d:\n    - {name: n, role: admin, token_sha256: " +
                       std::string(64, 'a') + "}\n");
  const auto [rc, out] = run_and_capture({built_binary("storage-service/storage-service"),
                                          "--database-url", shared_cluster().url(), "--auth-mode",
                                          "tokens", "--auth-credentials-file", path});
  CHECK(rc == 2);
  CHECK_MESSAGE(
      out.find(path + ": namespaces.d[0].role: unknown role \"admin\"") != std::string::npos, out);
  // tokens without a file, too.
  const auto [rc2, out2] =
      run_and_capture({built_binary("storage-service/storage-service"), "--database-url",
                       shared_cluster().url(), "--auth-mode", "tokens"});
  CHECK(rc2 == 2);
  CHECK(out2.find("auth.credentials_file: required") != std::string::npos);
  ::unlink(path.c_str());
}

TEST_CASE("auth none on a non-loopback address warns at start") {
  const auto port = free_tcp_port();
  Subprocess svc({built_binary("storage-service/storage-service"), "--listen",
                  "0.0.0.0:" + std::to_string(port), "--metrics-listen", ""},
                 {{"COOKIEFS_DATABASE_URL", shared_cluster().url()}}, temp_path("log"));
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (!wait_for_port(port, 200ms) && svc.running() &&
         std::chrono::steady_clock::now() < deadline) {
  }
  CHECK_MESSAGE(svc.log().find("auth: none on 0.0.0.0:") != std::string::npos, svc.log());
  svc.signal(SIGTERM);
  CHECK(svc.wait(30s) == 0);
  ::unlink(svc.log_path().c_str());
}
