// TlsContexts: the server's TLS settings (tls.*) as an asio::ssl::context —
// certificate chain and key, TLS 1.2 at least (1.3 preferred, OpenSSL's
// default order), optionally client certificates checked against a CA bundle.
// reload() builds a new context from the files (SIGHUP); connections keep the
// context they were accepted with, new ones get the new one.
//
// Thread-safety: current() and reload() may be called from any thread.
#pragma once

#include <asio/ssl/context.hpp>

#include <memory>
#include <mutex>
#include <string>

namespace cookiefs::storage {

struct TlsFiles {
  std::string cert_file;       // PEM chain, leaf first
  std::string key_file;        // PEM private key
  std::string client_ca_file;  // PEM bundle; set: clients must show a certificate it signed
};

class TlsContexts {
 public:
  // Throws std::runtime_error naming the file and what is wrong with it.
  explicit TlsContexts(TlsFiles files);
  std::shared_ptr<asio::ssl::context> current() const;
  // Keeps the previous context when the files do not load (and throws).
  void reload();

  // The same checks without keeping a context (for config checks at start).
  static std::shared_ptr<asio::ssl::context> build(const TlsFiles& files);

 private:
  const TlsFiles files_;
  mutable std::mutex mu_;
  std::shared_ptr<asio::ssl::context> current_;  // guarded by mu_
};

// One line saying why a TLS handshake failed, with a hint for the usual
// causes (a plaintext client on a TLS port, an untrusted certificate).
std::string describe_tls_error(const std::error_code& ec);

}  // namespace cookiefs::storage
