// SpareFiles: an unlinked file is kept, becomes reusable only when the kernel
// forgets its inode, and comes back empty with fresh mode; every failure
// falls back to a plain unlink/create.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "inode_table.hpp"
#include "spare_files.hpp"

using namespace cookiefs::mount;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    char tmpl[] = "/tmp/cookiefs-spare-test-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

int dir_fd(const fs::path& p) {
  fs::create_directories(p);
  const int fd = ::open(p.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  return fd;
}

// A file with content, remembered by the table as the kernel would after a lookup.
Inode& make_file(InodeTable& inodes, int dir, const char* name, struct stat& st) {
  const int fd = ::openat(dir, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  REQUIRE(fd >= 0);
  REQUIRE(::write(fd, "journal", 7) == 7);
  ::close(fd);
  const int path_fd = ::openat(dir, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
  REQUIRE(::fstat(path_fd, &st) == 0);
  return inodes.remember(path_fd, st, NodeKind::entry, nullptr, 1);
}

// A mount's table and spares over a temp cache dir with one session dir.
struct Mount {
  TempDir tmp;
  InodeTable inodes{{}};
  SpareFiles spares;
  int session = -1;
  Mount() {
    spares.open((tmp.path / "spare").string(), inodes);
    inodes.on_spare_released = [this](const std::string& s) { spares.released(s); };
    session = dir_fd(tmp.path / "session");
  }
  ~Mount() { ::close(session); }
};

}  // namespace

TEST_CASE("a kept file is reused only after the kernel forgets it, empty and with a new mode") {
  Mount m;
  InodeTable& inodes = m.inodes;
  SpareFiles& spares = m.spares;
  const int session = m.session;

  struct stat st;
  Inode& journal = make_file(inodes, session, "db-journal", st);
  REQUIRE(spares.keep(session, "db-journal", st));
  CHECK(::faccessat(session, "db-journal", F_OK, 0) != 0);  // gone from the session

  // Still known to the kernel: not reusable, a create makes a new file.
  CHECK(spares.reusable() == 0);
  CHECK(spares.take(session, "other", O_RDWR, 0600) == -1);

  inodes.forget(InodeTable::node_id(journal), 1);
  REQUIRE(spares.reusable() == 1);

  // 0664: bits a 022 umask of the daemon would take; the caller's mode is kept.
  const int fd = spares.take(session, "db-journal", O_RDWR, 0664);
  REQUIRE(fd >= 0);
  struct stat again;
  REQUIRE(::fstat(fd, &again) == 0);
  CHECK(again.st_ino == st.st_ino);  // the same backing inode, not a new one
  CHECK(again.st_size == 0);
  CHECK((again.st_mode & 07777) == 0664);
  ::close(fd);
  CHECK(spares.reusable() == 0);
}

TEST_CASE("a spare never replaces an existing name, and set-id bits are dropped") {
  Mount m;
  InodeTable& inodes = m.inodes;
  SpareFiles& spares = m.spares;
  const int session = m.session;

  struct stat st;
  Inode& old = make_file(inodes, session, "a", st);
  REQUIRE(spares.keep(session, "a", st));
  inodes.forget(InodeTable::node_id(old), 1);
  REQUIRE(spares.reusable() == 1);

  struct stat busy;
  make_file(inodes, session, "b", busy);
  errno = 0;
  CHECK(spares.take(session, "b", O_RDWR, 0600) == -1);
  CHECK(errno == EEXIST);
  CHECK(spares.reusable() == 1);  // still there for the next create

  const int fd = spares.take(session, "c", O_RDWR, 06755);
  REQUIRE(fd >= 0);
  struct stat c;
  REQUIRE(::fstat(fd, &c) == 0);
  CHECK((c.st_mode & 06000) == 0);
  ::close(fd);
}

TEST_CASE("without a usable spare dir, nothing is kept") {
  TempDir tmp;
  InodeTable inodes({});
  SpareFiles spares;  // never opened
  const int session = dir_fd(tmp.path / "session");
  struct stat st;
  make_file(inodes, session, "x", st);
  CHECK_FALSE(spares.keep(session, "x", st));
  CHECK(spares.take(session, "y", O_RDWR, 0600) == -1);
  ::close(session);
}
