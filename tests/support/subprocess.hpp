// Subprocess: a child process for tests — fork/exec of an argv with extra
// environment variables, stdout and stderr appended to a log file, signals,
// wait with a timeout, and SIGKILL on destruction so a failing test never
// leaves processes behind. Not thread-safe: one owner.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace cookiefs::test {

class Subprocess {
 public:
  Subprocess(std::vector<std::string> argv, std::map<std::string, std::string> env,
             std::string log_path);
  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  pid_t pid() const { return pid_; }
  bool running();
  void signal(int sig);
  // Exit code (128 + signal when killed by one), or nullopt on timeout.
  std::optional<int> wait(std::chrono::milliseconds timeout);
  // Sends SIGKILL and reaps.
  void kill();
  const std::string& log_path() const { return log_path_; }
  std::string log() const;

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
  std::string log_path_;
};

// Runs argv to completion and returns {exit code, stdout+stderr}.
std::pair<int, std::string> run_and_capture(
    const std::vector<std::string>& argv,
    std::chrono::milliseconds timeout = std::chrono::seconds(60));

}  // namespace cookiefs::test
