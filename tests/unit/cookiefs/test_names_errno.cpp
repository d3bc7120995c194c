// Name checks of new entries and configuration cross-checks → errno / errors.
#include <doctest/doctest.h>

#include <cerrno>
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
  SessionCache sessions(cfg, client, queue);
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

TEST_CASE("config cross-checks") {
  MountConfig cfg;
  cfg.storage = {"127.0.0.1:7070"};
  cfg.engine_id = "engine-a";
  CHECK_NOTHROW(check(cfg));
  cfg.engine_id = ".hidden";
  CHECK_THROWS_AS(check(cfg), cookiefs::ConfigError);
  cfg.engine_id = "engine-a";
  cfg.writeback_cache = true;
  CHECK_THROWS_AS(check(cfg), cookiefs::ConfigError);
  cfg.writeback_cache = false;
  cfg.commit_max_lag = std::chrono::milliseconds(1);
  cfg.commit_delay = std::chrono::milliseconds(10);
  CHECK_THROWS_AS(check(cfg), cookiefs::ConfigError);
}
