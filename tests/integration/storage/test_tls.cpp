// TLS on the protocol, against the real service and PostgreSQL, with the
// real client library: a client that trusts the CA works; a plaintext client
// on the TLS port, a client with another CA, a wrong server name and an
// expired certificate are each refused with a line naming the cause; the
// certificate is reloaded on SIGHUP; client certificates when required.
#include <doctest/doctest.h>
#include <signal.h>

#include <cstdlib>
#include <filesystem>
#include <thread>

#include "storage_client.hpp"
#include "storage_fixture.hpp"
#include "subprocess.hpp"

using namespace cookiefs;
using namespace cookiefs::test;
using namespace std::chrono_literals;

namespace {

// A CA, certificates it signed (server for localhost and 127.0.0.1, an
// expired one, a client one) and another, unrelated CA; made once with the
// openssl command.
struct Pki {
  std::string dir;
  Pki() {
    char tmpl[] = "/tmp/cookiefs-pki-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    dir = tmpl;
    const std::string ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    const std::string script =
        "set -e; cd " + dir +
        "\n"
        "ca() { openssl req -x509 " +
        ec +
        " -keyout $1.key -out $1.crt -days 2 -subj /CN=$1 2>/dev/null; }\n"
        "leaf() { openssl req " +
        ec +
        " -keyout $1.key -out $1.csr -subj /CN=$1 2>/dev/null;"
        " openssl x509 -req -in $1.csr -CA $2.crt -CAkey $2.key -CAcreateserial -out $1.crt"
        " -days $3 -extfile $4 2>/dev/null; }\n"
        "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > server.ext\n"
        "printf 'extendedKeyUsage=clientAuth\\n' > client.ext\n"
        "ca ca; ca other\n"
        "leaf server ca 2 server.ext\n"
        "leaf expired ca -1 server.ext\n"
        "leaf server2 other 2 server.ext\n"
        "leaf client ca 2 client.ext\n";
    REQUIRE(std::system(("bash -c '" + escape(script) + "'").c_str()) == 0);
  }
  ~Pki() { std::filesystem::remove_all(dir); }
  std::string operator()(const std::string& file) const { return dir + "/" + file; }

  static std::string escape(const std::string& s) {
    std::string out;
    for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return out;
  }
};

Pki& pki() {
  static Pki p;
  return p;
}

std::vector<std::string> tls_args(const std::string& cert, const std::string& key,
                                  const std::string& client_ca = "") {
  std::vector<std::string> a{"--tls-mode",     "on",      "--tls-cert-file", pki()(cert),
                             "--tls-key-file", pki()(key)};
  if (!client_ca.empty()) a.insert(a.end(), {"--tls-client-ca-file", pki()(client_ca)});
  return a;
}

ClientOptions client_options(const StorageServiceProcess& svc, const std::string& ns,
                             const std::string& ca, const std::string& server_name = "") {
  ClientOptions o;
  o.endpoints = {svc.endpoint()};
  o.namespace_name = ns;
  o.engine_id = "engine-a";
  o.request_timeout = 5s;
  o.tls = {.enabled = true, .ca_file = pki()(ca), .server_name = server_name};
  return o;
}

// The error a list request ends with, "" when it succeeds.
std::string list_error(ClientOptions o) {
  StorageClient client(std::move(o));
  client.start();
  try {
    client.list({});
    return "";
  } catch (const RequestError& e) {
    return e.what();
  }
}

bool log_has(const StorageServiceProcess& svc, const std::string& text) {
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < deadline) {
    if (svc.log().find(text) != std::string::npos) return true;
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

}  // namespace

TEST_CASE("TLS: a client that trusts the CA commits and fetches, by IP and by name") {
  StorageServiceProcess svc(shared_cluster().url(), 0, tls_args("server.crt", "server.key"));
  const auto ns = fresh_namespace();
  for (const std::string name : {"", "localhost"}) {
    StorageClient client(client_options(svc, ns, "ca.crt", name));
    client.start();
    wire::CommitSession c;
    c.set_session_id("s-" + std::to_string(name.size()));
    c.set_create(true);
    *c.add_changed() = file("cookies", "over tls");
    REQUIRE(client.commit(c).version() == 1);
    wire::FetchSession f;
    f.set_session_id(c.session_id());
    CHECK(client.fetch(f).files(0).content() == "over tls");
  }
  CHECK(svc.log().find("tls: on") != std::string::npos);
}

TEST_CASE("TLS: a plaintext client on the TLS port is refused, and both sides say why") {
  StorageServiceProcess svc(shared_cluster().url(), 0, tls_args("server.crt", "server.key"));
  WireConnection raw(svc.port());
  CHECK_THROWS(raw.hello(fresh_namespace(), "engine-a"));
  CHECK(log_has(svc, "a plaintext client on this TLS port?"));
  // The real client library without TLS: its log names the likely cause.
  const auto [rc, out] = run_and_capture({built_binary("engine-shim/cookiefs-shim"), "--storage",
                                          svc.endpoint(), "--timeout", "2s", "assign", "s", "e"});
  CHECK(rc != 0);
  CHECK_MESSAGE(out.find("is it a TLS port?") != std::string::npos, out);
}

TEST_CASE("TLS: a client that does not trust the server's CA is refused") {
  StorageServiceProcess svc(shared_cluster().url(), 0, tls_args("server.crt", "server.key"));
  const std::string err = list_error(client_options(svc, fresh_namespace(), "other.crt"));
  CHECK_MESSAGE(err.find("the server's certificate was not accepted") != std::string::npos, err);
  CHECK_MESSAGE(err.find("check tls.ca_file") != std::string::npos, err);
  CHECK(log_has(svc, "TLS handshake with 127.0.0.1 failed"));
  CHECK(svc.log().find("unknown ca") != std::string::npos);
}

TEST_CASE("TLS: a certificate for another name is refused") {
  StorageServiceProcess svc(shared_cluster().url(), 0, tls_args("server.crt", "server.key"));
  const std::string err =
      list_error(client_options(svc, fresh_namespace(), "ca.crt", "storage.example"));
  CHECK_MESSAGE(err.find("is not for \"storage.example\"") != std::string::npos, err);
}

TEST_CASE("TLS: an expired certificate is refused") {
  StorageServiceProcess svc(shared_cluster().url(), 0, tls_args("expired.crt", "expired.key"));
  const std::string err = list_error(client_options(svc, fresh_namespace(), "ca.crt"));
  CHECK_MESSAGE(err.find("certificate has expired") != std::string::npos, err);
}

TEST_CASE("TLS: the certificate is reloaded on SIGHUP; open connections keep theirs") {
  const std::string cert = pki()("live.crt"), key = pki()("live.key");
  std::filesystem::copy_file(pki()("server.crt"), cert,
                             std::filesystem::copy_options::overwrite_existing);
  std::filesystem::copy_file(pki()("server.key"), key,
                             std::filesystem::copy_options::overwrite_existing);
  StorageServiceProcess svc(shared_cluster().url(), 0,
                            {"--tls-mode", "on", "--tls-cert-file", cert, "--tls-key-file", key});
  const auto ns = fresh_namespace();
  StorageClient before(client_options(svc, ns, "ca.crt"));
  before.start();
  before.list({});
  std::filesystem::copy_file(pki()("server2.crt"), cert,
                             std::filesystem::copy_options::overwrite_existing);
  std::filesystem::copy_file(pki()("server2.key"), key,
                             std::filesystem::copy_options::overwrite_existing);
  svc.process().signal(SIGHUP);
  REQUIRE(log_has(svc, "TLS certificate " + cert + " reloaded"));
  CHECK(list_error(client_options(svc, ns, "other.crt")) == "");
  CHECK(list_error(client_options(svc, ns, "ca.crt")) != "");
  before.list({});  // the connection made before the reload still works
  CHECK(before.reconnects() == 0);
}

TEST_CASE("TLS: client certificates, when required") {
  StorageServiceProcess svc(shared_cluster().url(), 0,
                            tls_args("server.crt", "server.key", "ca.crt"));
  const auto ns = fresh_namespace();
  CHECK(list_error(client_options(svc, ns, "ca.crt")) != "");
  CHECK(log_has(svc, "clients must show a certificate"));
  auto with_cert = client_options(svc, ns, "ca.crt");
  with_cert.tls.cert_file = pki()("client.crt");
  with_cert.tls.key_file = pki()("client.key");
  CHECK(list_error(with_cert) == "");
}

TEST_CASE("TLS: files that do not load stop the start with exit 2, naming the file") {
  const auto [rc, out] =
      run_and_capture({built_binary("storage-service/storage-service"), "--database-url",
                       shared_cluster().url(), "--tls-mode", "on", "--tls-cert-file",
                       "/nonexistent/tls.crt", "--tls-key-file", pki()("server.key")});
  CHECK(rc == 2);
  CHECK_MESSAGE(
      out.find("/nonexistent/tls.crt: cannot load the certificate chain") != std::string::npos,
      out);
  const auto [rc2, out2] =
      run_and_capture({built_binary("storage-service/storage-service"), "--database-url",
                       shared_cluster().url(), "--tls-mode", "on", "--tls-cert-file",
                       pki()("server.crt"), "--tls-key-file", pki()("client.key")});
  CHECK(rc2 == 2);
  CHECK_MESSAGE(
      out2.find(pki()("client.key") + ": cannot load the private key") != std::string::npos, out2);
}
