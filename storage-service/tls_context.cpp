// The server's TLS context; see tls_context.hpp.
#include "tls_context.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <functional>
#include <stdexcept>
#include <system_error>

namespace cookiefs::storage {
namespace {

void load(const char* what, const std::string& path, const std::function<void()>& f) {
  try {
    f();
  } catch (const std::system_error& e) {
    throw std::runtime_error(path + ": cannot load the " + what + ": " + e.code().message());
  }
}

}  // namespace

std::shared_ptr<asio::ssl::context> TlsContexts::build(const TlsFiles& files) {
  auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
  ctx->set_options(asio::ssl::context::default_workarounds | asio::ssl::context::no_sslv2 |
                   asio::ssl::context::no_sslv3 | asio::ssl::context::no_tlsv1 |
                   asio::ssl::context::no_tlsv1_1 | asio::ssl::context::single_dh_use);
  SSL_CTX_set_min_proto_version(ctx->native_handle(), TLS1_2_VERSION);
  load("certificate chain", files.cert_file,
       [&] { ctx->use_certificate_chain_file(files.cert_file); });
  load("private key", files.key_file,
       [&] { ctx->use_private_key_file(files.key_file, asio::ssl::context::pem); });
  if (SSL_CTX_check_private_key(ctx->native_handle()) != 1) {
    throw std::runtime_error(files.key_file + ": the private key does not match the certificate " +
                             files.cert_file);
  }
  if (!files.client_ca_file.empty()) {
    load("client CA bundle", files.client_ca_file,
         [&] { ctx->load_verify_file(files.client_ca_file); });
    ctx->set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert);
  }
  return ctx;
}

TlsContexts::TlsContexts(TlsFiles files) : files_(std::move(files)), current_(build(files_)) {}

std::shared_ptr<asio::ssl::context> TlsContexts::current() const {
  std::lock_guard lock(mu_);
  return current_;
}

void TlsContexts::reload() {
  auto next = build(files_);
  std::lock_guard lock(mu_);
  current_ = std::move(next);
}

std::string describe_tls_error(const std::error_code& ec) {
  std::string what = ec.message();
  if (what.find("wrong version number") != std::string::npos ||
      what.find("http request") != std::string::npos ||
      what.find("packet length too long") != std::string::npos) {
    return what + " (a plaintext client on this TLS port?)";
  }
  if (what.find("unknown ca") != std::string::npos) {
    return what + " (the client does not trust this server's certificate authority)";
  }
  if (what.find("certificate verify failed") != std::string::npos) {
    return what + " (the client's certificate is not signed by tls.client_ca_file, or expired)";
  }
  if (what.find("peer did not return a certificate") != std::string::npos) {
    return what + " (tls.client_ca_file is set: clients must show a certificate)";
  }
  if (ec == asio::error::connection_reset) {
    return what + " (the client gave up during the handshake: it may not trust this server)";
  }
  return what;
}

}  // namespace cookiefs::storage
