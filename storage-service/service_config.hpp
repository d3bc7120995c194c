// The storage-service's settings: one struct, and the one function that binds
// every key to the shared ConfigSchema (YAML + flags + environment). Used from
// main() (and unit tests) only; not thread-safe. After load() the struct is
// read-only and may be shared freely between threads.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "config.hpp"

namespace cookiefs::storage {

struct ServiceConfig {
  std::string listen = "0.0.0.0:7070";
  std::string metrics_listen = "0.0.0.0:9102";  // "" disables the exposer
  std::string database_url;                     // secret: never logged
  std::int64_t pool_size = 8;
  std::int64_t commit_lanes = 0;  // 0: half the pool, at least 1
  std::int64_t commit_batch_max = 32;
  std::chrono::milliseconds connect_timeout{5000};
  std::int64_t threads = 2;
  std::int64_t max_connections = 10000;
  std::int64_t max_in_flight_per_connection = 64;
  std::chrono::milliseconds shutdown_grace{10000};
  ByteSize max_frame_bytes{32ull << 20};
  ByteSize max_file_bytes{8ull << 20};
  ByteSize max_session_bytes{24ull << 20};
  std::int64_t max_files_per_session = 1000;
  std::int64_t history_versions = 16;
  std::chrono::milliseconds drain_grace{5000};
  std::string log_level = "info";
  std::string auth_mode = "none";  // none | tokens
  std::string credentials_file;    // auth.mode tokens: principals and token hashes
  std::chrono::milliseconds credentials_poll{2000};  // 0: reload on SIGHUP only
  std::string tls_mode = "off";                      // off | on
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_client_ca_file;  // set: clients must show a certificate it signed
};

// True for addresses only this host can reach (127.0.0.0/8, ::1, localhost).
bool loopback_host(const std::string& host);

// Registers every key of ServiceConfig on schema, pointing into cfg (which
// must outlive schema).
void register_keys(ConfigSchema& schema, ServiceConfig& cfg);

// Cross-key checks ConfigSchema cannot express (e.g. listen must be HOST:PORT,
// auth.mode tokens needs auth.credentials_file).
// Throws ConfigError naming the key.
void check(const ServiceConfig& cfg, const std::string& source);

// Group-commit transactions that may run at once (database.commit_lanes, or
// its default from the pool size).
std::size_t commit_lanes(const ServiceConfig& cfg);

// "host:port" or "[v6]:port" -> {host, port}. Throws ConfigError("...") without
// a source prefix.
std::pair<std::string, std::uint16_t> split_host_port(const std::string& text);

}  // namespace cookiefs::storage
