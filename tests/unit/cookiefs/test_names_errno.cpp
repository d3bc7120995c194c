// Name checks of new entries and configuration cross-checks → errno / errors.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <memory>
#include <string>

#include "filesystem.hpp"

using namespace cookiefs::mount;

namespace {

int errno_of(Filesystem& fs, const Inode& parent, const std::string& name) {
  try {
    check_new_name(fs, parent, name.c_str());
    return 0;
  } catch (const Errno& e) {
    return e.code;
  }
}

}  // namespace

TEST_CASE("new names: length, dots and depth map to errno") {
  MountConfig cfg;
  cfg.max_depth = 3;
  cookiefs::StorageClient client(cookiefs::ClientOptions{.endpoints = {"127.0.0.1:1"}});
  CommitQueue queue(cfg.commit_delay, cfg.commit_max_lag);
  ClientSessionStore store(client);
  PosixDisk disk;
  SystemTime time;
  SessionCache sessions(cfg, store, queue, disk, time);
  Filesystem fs(cfg, sessions, client, nullptr);
  Inode dir(NodeKind::entry, -1, 0, 99);
  dir.depth = 1;
  CHECK(errno_of(fs, dir, "cookies.sqlite-journal") == 0);
  CHECK(errno_of(fs, dir, std::string(255, 'a')) == 0);
  CHECK(errno_of(fs, dir, std::string(256, 'a')) == ENAMETOOLONG);
  CHECK(errno_of(fs, dir, ".") == EINVAL);
  CHECK(errno_of(fs, dir, "..") == EINVAL);
  dir.depth = 2;
  CHECK(errno_of(fs, dir, "ok") == 0);
  dir.depth = 3;
  CHECK(errno_of(fs, dir, "too-deep") == ENAMETOOLONG);
}

TEST_CASE("new names: the whole session-relative path is bounded (names.hpp)") {
  const std::filesystem::path tmp =
      std::filesystem::canonical(std::filesystem::temp_directory_path()) /
      ("cookiefs-unit-path-" + std::to_string(::getpid()));
  MountConfig cfg;
  cookiefs::StorageClient client(cookiefs::ClientOptions{.endpoints = {"127.0.0.1:1"}});
  CommitQueue queue(cfg.commit_delay, cfg.commit_max_lag);
  ClientSessionStore store(client);
  PosixDisk disk;
  SystemTime time;
  SessionCache sessions(cfg, store, queue, disk, time);
  Filesystem mount(cfg, sessions, client, nullptr);
  auto session = std::make_shared<Session>("s", tmp);
  // Four 250-byte directories: 1003 bytes of path before the new name.
  std::filesystem::path deep = session->files();
  for (char c : {'a', 'b', 'c', 'd'}) deep /= std::string(250, c);
  std::filesystem::create_directories(deep);
  const int fd = ::open(deep.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  Inode dir(NodeKind::entry, fd, 0, 99);  // owns and closes fd
  dir.session = session;
  dir.depth = 4;
  REQUIRE(relative_path(dir).value_or("?").size() == 4 * 250 + 3);
  CHECK(errno_of(mount, dir, std::string(20, 'x')) == 0);             // 1024 bytes
  CHECK(errno_of(mount, dir, std::string(21, 'x')) == ENAMETOOLONG);  // 1025
  CHECK(errno_of(mount, dir, std::string(30, 'x')) == ENAMETOOLONG);
  // A moved directory's subtree counts too.
  CHECK_THROWS_AS(check_new_name(mount, dir, "x", SubtreeExtent{.length = 30, .depth = 1}), Errno);
  CHECK_NOTHROW(check_new_name(mount, dir, "x", SubtreeExtent{.length = 10, .depth = 1}));
  CHECK_THROWS_AS(check_new_name(mount, dir, "x", SubtreeExtent{.length = 2, .depth = 4}), Errno);
  // The depth comes from the path (Inode::depth may predate a rename).
  dir.depth = 0;
  CHECK_THROWS_AS(check_new_name(mount, dir, "x", SubtreeExtent{.length = 2, .depth = 4}), Errno);
  std::filesystem::remove_all(tmp);
}

TEST_CASE("config cross-checks") {
  MountConfig cfg;
  cfg.storage = {"127.0.0.1:7070"};
  cfg.engine_id = "engine-a";
  CHECK_NOTHROW(check(cfg));
  cfg.engine_id = ".hidden";
  CHECK_THROWS_AS(check(cfg), cookiefs::ConfigError);
  cfg.engine_id = "engine-a";
  cfg.writeback_cache = true;  // supported: snapshots are taken at rest
  CHECK_NOTHROW(check(cfg));
  cfg.writeback_cache = false;
  cfg.commit_max_lag = std::chrono::milliseconds(1);
  cfg.commit_delay = std::chrono::milliseconds(10);
  CHECK_THROWS_AS(check(cfg), cookiefs::ConfigError);
}
