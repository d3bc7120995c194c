// StorageServiceProcess: the built storage-service binary started for a test
// with a database URL and a port (free one by default), waited for until it
// listens; SIGKILLed on destruction unless stopped. Not thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "subprocess.hpp"

namespace cookiefs::test {

// Path of a binary built in this build tree, e.g. "storage-service/storage-service".
std::string built_binary(const std::string& relative);

class StorageServiceProcess {
 public:
  // extra_args are appended (e.g. {"--limits-max-file-bytes", "1MiB"}). The
  // health endpoint is off unless they include "--metrics-listen".
  StorageServiceProcess(const std::string& database_url, std::uint16_t port = 0,
                        std::vector<std::string> extra_args = {});
  ~StorageServiceProcess();

  std::uint16_t port() const { return port_; }
  std::string endpoint() const { return "127.0.0.1:" + std::to_string(port_); }
  Subprocess& process() { return *process_; }
  // SIGTERM and wait; returns the exit code (nullopt on timeout).
  std::optional<int> stop(std::chrono::milliseconds timeout = std::chrono::seconds(30));
  std::string log() const { return process_->log(); }

 private:
  std::uint16_t port_;
  std::string log_path_;
  std::unique_ptr<Subprocess> process_;
};

}  // namespace cookiefs::test
