// PgCluster; see pg_cluster.hpp.
#include "pg_cluster.hpp"

#include <stdlib.h>

#include <filesystem>
#include <stdexcept>

#include "ports.hpp"
#include "subprocess.hpp"

namespace cookiefs::test {
namespace {

const std::string kScript = std::string(COOKIEFS_SOURCE_DIR) + "/scripts/pg-cluster.sh";

std::string last_line(const std::string& text) {
  auto end = text.find_last_not_of("\n");
  if (end == std::string::npos) return "";
  auto start = text.rfind('\n', end);
  return text.substr(start == std::string::npos ? 0 : start + 1,
                     end - (start == std::string::npos ? 0 : start + 1) + 1);
}

}  // namespace

PgCluster::~PgCluster() {
  try {
    stop();
  } catch (...) {
  }
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
}

void PgCluster::start() {
  if (running_) return;
  if (dir_.empty()) {
    char tmpl[] = "/tmp/cookiefs-pg-XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    dir_ = tmpl;
    port_ = free_tcp_port();
  }
  auto [code, out] = run_and_capture({"bash", kScript, "start", dir_, std::to_string(port_)},
                                     std::chrono::seconds(120));
  if (code != 0) throw std::runtime_error("pg-cluster.sh start failed: " + out);
  url_ = last_line(out);
  if (url_.rfind("postgresql://", 0) != 0) {
    throw std::runtime_error("pg-cluster.sh printed no URL: " + out);
  }
  running_ = true;
}

void PgCluster::stop() {
  if (!running_) return;
  run_and_capture({"bash", kScript, "stop", dir_}, std::chrono::seconds(120));
  running_ = false;
}

}  // namespace cookiefs::test
