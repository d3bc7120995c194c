// The real clocks; see time_source.hpp.
#include "time_source.hpp"

#include <thread>

namespace cookiefs::mount {

std::chrono::steady_clock::time_point SystemTime::now() const {
  return std::chrono::steady_clock::now();
}

std::chrono::system_clock::time_point SystemTime::wall() const {
  return std::chrono::system_clock::now();
}

void SystemTime::sleep_for(std::chrono::microseconds d) const {
  std::this_thread::sleep_for(d);
}

}  // namespace cookiefs::mount
