// The documented example config/cookiefs.yaml loads through the daemon's own
// key registration, and the keys added for affinity keep their YAML shape.
#include <doctest/doctest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include <unistd.h>

#include "mount_config.hpp"

using namespace cookiefs::mount;

namespace {

std::string source_dir() {
  const char* env = std::getenv("COOKIEFS_SOURCE_DIR");
  return env ? env : COOKIEFS_TEST_SOURCE_DIR;
}

}  // namespace

TEST_CASE("config/cookiefs.yaml loads and passes the daemon's checks") {
  MountConfig cfg;
  cookiefs::ConfigSchema schema("cookiefs");
  register_keys(schema, cfg);
  REQUIRE_NOTHROW(schema.load_file(source_dir() + "/config/cookiefs.yaml"));
  REQUIRE_NOTHROW(schema.validate());
  REQUIRE_NOTHROW(check(cfg));
  CHECK(cfg.affinity == "auto");
  CHECK(cfg.claim_timeout == std::chrono::seconds(5));
  CHECK(control_mode_bits(cfg.control_mode) == 0600);
  CHECK(cfg.control_socket == cfg.cache_dir + "/control.sock");
  // Short: a session created elsewhere is not announced to this mount.
  CHECK(cfg.negative_session_timeout == std::chrono::seconds(1));
  CHECK(cfg.negative_timeout == std::chrono::hours(24));
  const std::string dump = schema.dump();
  CHECK(dump.find("affinity_claim_timeout: 5000ms") != std::string::npos);
}

TEST_CASE("affinity mode and claim timeout can both be set in one YAML file") {
  const auto path = std::filesystem::temp_directory_path() /
                    ("cookiefs-unit-" + std::to_string(::getpid()) + ".yaml");
  {
    std::ofstream out(path);
    out << "storage: [127.0.0.1:7070]\nengine_id: e\ncache_dir: /tmp/c\n"
           "affinity: strict\naffinity_claim_timeout: 2s\n"
           "control:\n  socket: /tmp/c.sock\n  mode: \"0660\"\n";
  }
  MountConfig cfg;
  cookiefs::ConfigSchema schema("cookiefs");
  register_keys(schema, cfg);
  schema.load_file(path.string());
  schema.validate();
  check(cfg);
  std::filesystem::remove(path);
  CHECK(cfg.affinity == "strict");
  CHECK(cfg.claim_timeout == std::chrono::seconds(2));
  CHECK(cfg.control_socket == "/tmp/c.sock");
  CHECK(control_mode_bits(cfg.control_mode) == 0660);
}
