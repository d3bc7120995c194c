// The start-up mountpoint check: mountinfo parsing (escapes, optional
// fields, stacked mounts) and the refusals that need no mount.
#include <doctest/doctest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "stale_mount.hpp"

using namespace cookiefs::mount;
namespace fs = std::filesystem;

TEST_CASE("mountinfo lines give the unescaped point and the file system type") {
  std::istringstream in(
      "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/root rw\n"
      "90 22 0:52 / /var/lib/cookie\\040jars rw,nosuid,nodev,relatime shared:40 master:2 - "
      "fuse.cookiefs cookiefs rw,user_id=0,group_id=0\n"
      "91 90 0:53 / /var/lib/cookie\\040jars rw - fuse.cookiefs cookiefs rw\n"
      "garbage\n");
  const auto entries = parse_mountinfo(in);
  REQUIRE(entries.size() == 3);
  CHECK(entries[0].point == "/");
  CHECK(entries[0].fstype == "ext4");
  CHECK(entries[1].point == "/var/lib/cookie jars");
  CHECK(entries[1].fstype == "fuse.cookiefs");
  CHECK(entries[2].point == "/var/lib/cookie jars");  // stacked on top
  CHECK(unescape_mountinfo("a\\134b\\011c\\") == "a\\b\tc\\");
}

TEST_CASE("a plain directory is taken as it is; a missing one or a file is refused") {
  char tmpl[] = "/tmp/cookiefs-mountpoint-test-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  const fs::path dir = tmpl;
  CHECK(take_mountpoint(dir.string() + "/") == fs::canonical(dir).string());
  CHECK_THROWS_AS(take_mountpoint((dir / "missing").string()), MountpointError);
  std::ofstream(dir / "file") << "x";
  CHECK_THROWS_AS(take_mountpoint((dir / "file").string()), MountpointError);
  CHECK_THROWS_AS(take_mountpoint(""), MountpointError);
  fs::remove_all(dir);
}
