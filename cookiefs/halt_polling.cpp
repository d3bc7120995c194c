#include "halt_polling.hpp"

#include <fstream>
#include <string>

namespace cookiefs {

bool idle_vcpus_halt_without_polling(const std::filesystem::path& sysfs) {
  std::ifstream governor(sysfs / "devices/system/cpu/cpuidle/current_governor");
  std::ifstream poll(sysfs / "module/haltpoll/parameters/guest_halt_poll_ns");
  std::string name;
  long ns = -1;
  return governor >> name && name == "haltpoll" && poll >> ns && ns == 0;
}

}  // namespace cookiefs
