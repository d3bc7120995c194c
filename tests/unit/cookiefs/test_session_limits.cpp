// SessionLimits: the stricter of the mount's and the service's limits, usage
// counted as the service counts a commit (sparse files at their size,
// symlinks by their target), and growth past a limit refused without being
// recorded.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "session_cache.hpp"
#include "session_limits.hpp"

using namespace cookiefs::mount;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    char tmpl[] = "/tmp/cookiefs-limits-test-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

MountConfig config(std::uint64_t file, std::uint64_t session, std::int64_t entries) {
  MountConfig c;
  c.max_file_bytes.bytes = file;
  c.max_session_bytes.bytes = session;
  c.max_files_per_session = entries;
  return c;
}

int errno_of(auto&& fn) {
  try {
    fn();
  } catch (const Errno& e) {
    return e.code;
  }
  return 0;
}

}  // namespace

TEST_CASE("the stricter of the mount's and the service's limits applies") {
  SessionLimits limits(config(16 << 20, 64 << 20, 5000));
  CHECK(limits.max_file_bytes() == 16u << 20);
  cookiefs::wire::HelloReply hello;
  hello.set_max_file_bytes(8 << 20);
  hello.set_max_session_bytes(128 << 20);  // looser than ours: ours stays
  hello.set_max_files_per_session(1000);
  limits.from_service(hello);
  CHECK(limits.max_file_bytes() == 8u << 20);
  CHECK(limits.max_session_bytes() == 64u << 20);
  CHECK(limits.max_entries() == 1000);
  CHECK(errno_of([&] { limits.check_file_size(8 << 20); }) == 0);
  CHECK(errno_of([&] { limits.check_file_size((8 << 20) + 1); }) == EFBIG);
  // An older service sends no file count (0): ours applies again.
  cookiefs::wire::HelloReply older;
  older.set_max_file_bytes(8 << 20);
  older.set_max_session_bytes(24 << 20);
  limits.from_service(older);
  CHECK(limits.max_entries() == 5000);
  CHECK(limits.max_session_bytes() == 24u << 20);
}

TEST_CASE("usage is counted from the tree as the service counts a commit") {
  TempDir t;
  fs::create_directories(t.path / "files" / "Default");
  std::ofstream(t.path / "files" / "cookies.txt") << "abc";
  fs::create_symlink("cookies.txt", t.path / "files" / "Default" / "Cookies");
  {
    const int fd = ::open((t.path / "files" / "sparse").c_str(), O_WRONLY | O_CREAT, 0600);
    REQUIRE(fd >= 0);
    REQUIRE(::ftruncate(fd, 1 << 20) == 0);  // no blocks, 1 MiB in a commit
    ::close(fd);
  }
  Session s("s", t.path);
  SessionLimits limits(config(8 << 20, (1 << 20) + 100, 4));
  CHECK(s.usage_bytes == -1);
  limits.count(s);
  CHECK(s.usage_entries == 4);  // Default, cookies.txt, Default/Cookies, sparse
  CHECK(s.usage_bytes == 3 + 11 + (1 << 20));

  CHECK(errno_of([&] { limits.add(s, 0, 1); }) == EDQUOT);  // a 5th entry
  CHECK(s.usage_entries == 4);
  CHECK(errno_of([&] { limits.add(s, 100, 0); }) == EDQUOT);  // past the session bytes
  CHECK(s.usage_bytes == 3 + 11 + (1 << 20));
  limits.undo(s, 3, 1);                                      // cookies.txt unlinked
  CHECK(errno_of([&] { limits.add(s, 90, 1); }) == EDQUOT);  // one byte too many
  CHECK(errno_of([&] { limits.add(s, 89, 1); }) == 0);       // exactly the limit
  CHECK(s.usage_entries == 4);
  CHECK(s.usage_bytes == (1 << 20) + 100);

  // Adopted from elsewhere: unknown until counted again, and nothing is
  // added to an unknown usage.
  SessionLimits::forget_usage(s);
  CHECK(errno_of([&] { limits.add(s, 1 << 30, 100); }) == 0);
  CHECK(s.usage_bytes == -1);
  limits.count(s);
  CHECK(s.usage_entries == 4);
}
