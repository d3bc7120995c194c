// PgCluster: a private PostgreSQL 15 cluster for one test, made with
// scripts/pg-cluster.sh in a fresh temp dir on a free port, and removed
// (stopped and deleted) in the destructor. Not thread-safe: one owner.
#pragma once

#include <cstdint>
#include <string>

namespace cookiefs::test {

class PgCluster {
 public:
  PgCluster() = default;
  ~PgCluster();
  PgCluster(const PgCluster&) = delete;
  PgCluster& operator=(const PgCluster&) = delete;

  // Starts (initializing on first use); throws std::runtime_error with the
  // script's output on failure.
  void start();
  void stop();
  void restart() {
    stop();
    start();
  }
  const std::string& url() const { return url_; }
  std::uint16_t port() const { return port_; }
  const std::string& dir() const { return dir_; }

 private:
  std::string dir_;
  std::uint16_t port_ = 0;
  std::string url_;
  bool running_ = false;
};

}  // namespace cookiefs::test
