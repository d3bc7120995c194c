// StorageServiceProcess; see storage_service_process.hpp.
#include "storage_service_process.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <stdexcept>

#include "ports.hpp"

namespace cookiefs::test {

std::string built_binary(const std::string& relative) {
  return std::string(COOKIEFS_BINARY_DIR) + "/" + relative;
}

StorageServiceProcess::StorageServiceProcess(const std::string& database_url, std::uint16_t port,
                                             std::vector<std::string> extra_args)
    : port_(port == 0 ? free_tcp_port() : port) {
  char tmpl[] = "/tmp/cookiefs-storage-log-XXXXXX";
  const int fd = ::mkstemp(tmpl);
  if (fd < 0) throw std::runtime_error("mkstemp failed");
  ::close(fd);
  log_path_ = tmpl;
  std::vector<std::string> argv{built_binary("storage-service/storage-service"), "--listen",
                                "127.0.0.1:" + std::to_string(port_), "--log-level", "debug"};
  // No health endpoint unless a test asks for one (it would need a port).
  if (std::find(extra_args.begin(), extra_args.end(), "--metrics-listen") == extra_args.end()) {
    argv.insert(argv.end(), {"--metrics-listen", ""});
  }
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  // The URL goes through the environment, as secrets should.
  process_ = std::make_unique<Subprocess>(
      argv, std::map<std::string, std::string>{{"COOKIEFS_DATABASE_URL", database_url}}, log_path_);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!wait_for_port(port_, std::chrono::milliseconds(200))) {
    if (!process_->running() || std::chrono::steady_clock::now() > deadline) {
      const std::string log = process_->log();
      process_->kill();
      throw std::runtime_error("storage-service did not start listening: " + log);
    }
  }
}

StorageServiceProcess::~StorageServiceProcess() {
  process_.reset();
  // Set COOKIEFS_TEST_SHOW_LOGS=1 to see what the service said.
  if (const char* v = std::getenv("COOKIEFS_TEST_SHOW_LOGS"); v && *v == '1') {
    std::ifstream in(log_path_);
    std::cerr << "---- storage-service log (port " << port_ << ") ----\n" << in.rdbuf();
  }
  ::unlink(log_path_.c_str());
}

std::optional<int> StorageServiceProcess::stop(std::chrono::milliseconds timeout) {
  process_->signal(SIGTERM);
  return process_->wait(timeout);
}

}  // namespace cookiefs::test
