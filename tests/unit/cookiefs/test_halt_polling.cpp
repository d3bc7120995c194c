// idle_vcpus_halt_without_polling() on a fake sysfs tree.
#include <doctest/doctest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "halt_polling.hpp"

namespace fs = std::filesystem;

namespace {

struct FakeSysfs {
  fs::path root;
  FakeSysfs() {
    std::string tmpl = (fs::temp_directory_path() / "cookiefs-sysfs-XXXXXX").string();
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    root = tmpl;
  }
  ~FakeSysfs() { fs::remove_all(root); }
  void write(const std::string& rel, const std::string& text) const {
    fs::create_directories((root / rel).parent_path());
    std::ofstream(root / rel) << text;
  }
  void governor(const std::string& name) const {
    write("devices/system/cpu/cpuidle/current_governor", name + "\n");
  }
  void poll_ns(const std::string& ns) const {
    write("module/haltpoll/parameters/guest_halt_poll_ns", ns + "\n");
  }
};

}  // namespace

TEST_CASE("halt polling: the haltpoll governor with guest_halt_poll_ns 0 halts at once") {
  FakeSysfs sys;
  sys.governor("haltpoll");
  sys.poll_ns("0");
  CHECK(cookiefs::idle_vcpus_halt_without_polling(sys.root));
}

TEST_CASE("halt polling: polling on, another governor, or nothing to read is not reported") {
  FakeSysfs sys;
  CHECK_FALSE(cookiefs::idle_vcpus_halt_without_polling(sys.root));  // not a guest
  sys.governor("haltpoll");
  CHECK_FALSE(cookiefs::idle_vcpus_halt_without_polling(sys.root));  // no parameter
  sys.poll_ns("200000");
  CHECK_FALSE(cookiefs::idle_vcpus_halt_without_polling(sys.root));
  sys.poll_ns("0");
  sys.governor("menu");  // bare metal: the parameter may exist, the governor is not in use
  CHECK_FALSE(cookiefs::idle_vcpus_halt_without_polling(sys.root));
  sys.governor("haltpoll");
  sys.poll_ns("garbage");
  CHECK_FALSE(cookiefs::idle_vcpus_halt_without_polling(sys.root));
}
