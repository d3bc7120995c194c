// ServiceConfig: the shipped example config loads, keys are checked.
#include <doctest/doctest.h>

#include <fstream>

#include "service_config.hpp"

using namespace cookiefs;
using namespace cookiefs::storage;

TEST_CASE("the example config documents every key and loads") {
  ServiceConfig cfg;
  ConfigSchema schema("storage-service");
  register_keys(schema, cfg);
  const std::string path = std::string(COOKIEFS_SOURCE_DIR) + "/config/storage-service.yaml";
  schema.load_file(path);
  cfg.database_url = "postgresql://x@localhost/x";  // commented out in the example
  CHECK_NOTHROW(check(cfg, path));
  CHECK(cfg.listen == "0.0.0.0:7070");
  CHECK(cfg.history_versions == 16);
  CHECK(cfg.max_frame_bytes.bytes == 32ull << 20);

  // Every registered key appears in the example file.
  std::ifstream in(path);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (const char* key : {"listen:",
                          "metrics_listen:",
                          "url:",
                          "pool_size:",
                          "connect_timeout:",
                          "threads:",
                          "max_connections:",
                          "max_in_flight_per_connection:",
                          "shutdown_grace:",
                          "max_frame_bytes:",
                          "max_file_bytes:",
                          "max_session_bytes:",
                          "max_files_per_session:",
                          "versions:",
                          "drain_grace:",
                          "level:",
                          "mode:",
                          "credentials_file:",
                          "credentials_poll:",
                          "cert_file:",
                          "key_file:",
                          "client_ca_file:"}) {
    CHECK_MESSAGE(text.find(key) != std::string::npos, key);
  }
}

TEST_CASE("listen addresses are HOST:PORT") {
  CHECK(split_host_port("127.0.0.1:7070") ==
        std::pair<std::string, std::uint16_t>{"127.0.0.1", 7070});
  CHECK(split_host_port("[::1]:80") == std::pair<std::string, std::uint16_t>{"::1", 80});
  CHECK_THROWS_AS(split_host_port("localhost"), ConfigError);
  CHECK_THROWS_AS(split_host_port("h:70000"), ConfigError);
  CHECK_THROWS_AS(split_host_port("h:"), ConfigError);
  CHECK_THROWS_AS(split_host_port(":1"), ConfigError);

  ServiceConfig cfg;
  cfg.listen = "nowhere";
  try {
    check(cfg, "f.yaml");
    FAIL("expected a ConfigError");
  } catch (const ConfigError& e) {
    CHECK(std::string(e.what()).starts_with("f.yaml: listen: "));
  }
  cfg.listen = "0.0.0.0:1";
  cfg.max_file_bytes.bytes = cfg.max_frame_bytes.bytes + 1;
  CHECK_THROWS_AS(check(cfg, "f.yaml"), ConfigError);
}

TEST_CASE("auth.mode tokens needs a credentials file, and none must not name one") {
  ServiceConfig cfg;
  cfg.database_url = "postgresql://x@localhost/x";
  cfg.auth_mode = "tokens";
  try {
    check(cfg, "s.yaml");
    FAIL("accepted");
  } catch (const ConfigError& e) {
    CHECK(std::string(e.what()).rfind("s.yaml: auth.credentials_file: required", 0) == 0);
  }
  cfg.credentials_file = "/etc/creds.yaml";
  CHECK_NOTHROW(check(cfg, "s.yaml"));
  cfg.auth_mode = "none";
  CHECK_THROWS_AS(check(cfg, "s.yaml"), ConfigError);
  CHECK(loopback_host("127.0.0.1"));
  CHECK(loopback_host("::1"));
  CHECK_FALSE(loopback_host("0.0.0.0"));
  CHECK_FALSE(loopback_host("10.1.2.3"));
}
