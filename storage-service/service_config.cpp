// ServiceConfig key registration; see service_config.hpp.
#include "service_config.hpp"

#include <algorithm>

#include "health_http.hpp"
#include "logging.hpp"

namespace cookiefs::storage {

void register_keys(ConfigSchema& s, ServiceConfig& c) {
  std::vector<std::string> levels(std::begin(kLogLevels), std::end(kLogLevels));
  s.add("listen", &c.listen, "protocol listen address HOST:PORT");
  s.add("metrics_listen", &c.metrics_listen,
        "metrics/health listen address HOST:PORT (empty disables)");
  s.add(
      "database.url", &c.database_url, "PostgreSQL URL (libpq syntax, multi-host allowed)",
      {.flag = "--database-url", .env = "COOKIEFS_DATABASE_URL", .required = true, .secret = true});
  s.add("database.pool_size", &c.pool_size, "database connections (and SQL threads)",
        {.min = 1, .max = 256});
  s.add("database.commit_lanes", &c.commit_lanes,
        "group-commit transactions at once (0: half of database.pool_size, at least 1)",
        {.min = 0, .max = 256});
  s.add("database.commit_batch_max", &c.commit_batch_max,
        "most commits (of different sessions) in one group-commit transaction",
        {.min = 1, .max = 1024});
  s.add("database.connect_timeout", &c.connect_timeout, "timeout of one database connect",
        {.min = 1000, .max = 600'000});
  s.add("server.threads", &c.threads, "network threads", {.min = 1, .max = 256});
  s.add("server.max_connections", &c.max_connections, "connections accepted at once",
        {.min = 1, .max = 1'000'000});
  s.add("server.max_in_flight_per_connection", &c.max_in_flight_per_connection,
        "requests handled at once per connection", {.min = 1, .max = 10'000});
  s.add("server.shutdown_grace", &c.shutdown_grace, "how long SIGTERM waits for in-flight requests",
        {.min = 0, .max = 3'600'000});
  s.add("limits.max_frame_bytes", &c.max_frame_bytes, "largest frame accepted",
        {.min = 4096, .max = 1ll << 31});
  s.add("limits.max_file_bytes", &c.max_file_bytes, "largest file in a session",
        {.min = 1, .max = 1ll << 31});
  s.add("limits.max_session_bytes", &c.max_session_bytes, "largest session (sum of its files)",
        {.min = 1, .max = 1ll << 40});
  s.add("limits.max_files_per_session", &c.max_files_per_session, "files in one session",
        {.min = 1, .max = 1'000'000});
  s.add("history.versions", &c.history_versions, "versions of each session kept for fetch",
        {.min = 1, .max = 100'000});
  s.add("affinity.drain_grace", &c.drain_grace,
        "default wait for the previous owner's drain (and the new owner's ready)",
        {.min = 0, .max = 600'000});
  s.add("log.level", &c.log_level, "log level", {.choices = levels});
  s.add("auth.mode", &c.auth_mode,
        "none: every hello is accepted (tests, single-host demo); tokens: principals from "
        "auth.credentials_file",
        {.choices = {"none", "tokens"}});
  s.add("auth.credentials_file", &c.credentials_file,
        "YAML file of principals per namespace (name, role, engine_ids, token_sha256); "
        "reloaded on SIGHUP and when it changes");
  s.add("auth.credentials_poll", &c.credentials_poll,
        "how often the credentials file is checked for changes (0: on SIGHUP only)",
        {.min = 0, .max = 3'600'000});
  s.add("tls.mode", &c.tls_mode,
        "on: the protocol port speaks TLS only (1.2 at least); off: plaintext only",
        {.choices = {"off", "on"}});
  s.add("tls.cert_file", &c.tls_cert_file,
        "PEM certificate chain of the server (leaf first); reloaded on SIGHUP");
  s.add("tls.key_file", &c.tls_key_file, "PEM private key of the server; reloaded on SIGHUP");
  s.add("tls.client_ca_file", &c.tls_client_ca_file,
        "PEM CA bundle: when set, clients must show a certificate it signed (mutual TLS)");
}

std::pair<std::string, std::uint16_t> split_host_port(const std::string& text) {
  if (text.empty() || text.front() == ':') {
    throw ConfigError("expected HOST:PORT, got \"" + text + "\"");
  }
  try {
    return parse_listen(text);  // the one HOST:PORT parser of listening servers
  } catch (const std::invalid_argument& e) {
    throw ConfigError(e.what());
  }
}

bool loopback_host(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

std::size_t commit_lanes(const ServiceConfig& c) {
  if (c.commit_lanes > 0) return static_cast<std::size_t>(std::min(c.commit_lanes, c.pool_size));
  return static_cast<std::size_t>(std::max<std::int64_t>(1, c.pool_size / 2));
}

void check(const ServiceConfig& c, const std::string& source) {
  const auto key_error = [&](const char* key, const ConfigError& e) {
    return ConfigError(source + ": " + key + ": " + e.what());
  };
  try {
    split_host_port(c.listen);
  } catch (const ConfigError& e) {
    throw key_error("listen", e);
  }
  if (!c.metrics_listen.empty()) {
    try {
      split_host_port(c.metrics_listen);
    } catch (const ConfigError& e) {
      throw key_error("metrics_listen", e);
    }
  }
  if (c.auth_mode == "tokens" && c.credentials_file.empty()) {
    throw ConfigError(source + ": auth.credentials_file: required when auth.mode is tokens");
  }
  if (c.auth_mode != "tokens" && !c.credentials_file.empty()) {
    throw ConfigError(source +
                      ": auth.credentials_file: set, but auth.mode is not tokens (the file would "
                      "be ignored)");
  }
  if (c.tls_mode == "on") {
    if (c.tls_cert_file.empty()) {
      throw ConfigError(source + ": tls.cert_file: required when tls.mode is on");
    }
    if (c.tls_key_file.empty()) {
      throw ConfigError(source + ": tls.key_file: required when tls.mode is on");
    }
  } else if (!c.tls_cert_file.empty() || !c.tls_key_file.empty() || !c.tls_client_ca_file.empty()) {
    throw ConfigError(source +
                      ": tls.mode: certificate files are set, but tls.mode is off (say "
                      "on, or remove them)");
  }
  if (c.max_file_bytes.bytes > c.max_frame_bytes.bytes) {
    throw ConfigError(source + ": limits.max_file_bytes: must not exceed limits.max_frame_bytes");
  }
}

}  // namespace cookiefs::storage
