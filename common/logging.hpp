// Logging setup shared by every binary (spdlog to stderr). Cookie contents,
// session ids and paths are only ever logged at debug level or below.
#pragma once

#include <string>

namespace cookiefs {

inline const char* kLogLevels[] = {"trace", "debug", "info", "warn", "error", "off"};

// level: one of kLogLevels. Thread-safe after the first call.
void init_logging(const std::string& program, const std::string& level);

}  // namespace cookiefs
