// The cache dir's file-system calls; see cache_disk.hpp.
#include "cache_disk.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <system_error>

namespace cookiefs::mount {
namespace fs = std::filesystem;

namespace {

[[noreturn]] void fail(const char* what) {
  throw std::system_error(errno, std::generic_category(), what);
}

// Owns a file descriptor.
struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

std::string read_all(int fd) {
  std::string out;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("read");
    if (n == 0) return out;
    out.append(buf, static_cast<std::size_t>(n));
  }
}

void write_all(int fd, const std::string& data) {
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail("write");
    done += static_cast<std::size_t>(n);
  }
}

}  // namespace

PosixDisk::~PosixDisk() {
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

void PosixDisk::make_dirs(const path& p) {
  std::error_code ec;
  fs::create_directories(p, ec);
  if (ec) throw std::system_error(ec, "mkdir");
}

void PosixDisk::make_dir(const path& p, std::uint32_t mode, bool exist_ok) {
  if (::mkdir(p.c_str(), mode) != 0 && !(exist_ok && errno == EEXIST)) fail("mkdir");
}

void PosixDisk::make_file(const path& p) {
  Fd f(::open(p.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (f.fd < 0) fail("create");
}

std::string PosixDisk::read_file(const path& p) {
  Fd f(::open(p.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (f.fd < 0) fail("open");
  return read_all(f.fd);
}

void PosixDisk::write_file(const path& p, const std::string& content, std::uint32_t mode) {
  Fd f(::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode));
  if (f.fd < 0) fail("open");
  write_all(f.fd, content);
  ::fchmod(f.fd, mode);
}

void PosixDisk::write_durably(const path& p, const std::string& content) {
  const fs::path tmp = p.string() + ".tmp";
  {
    Fd f(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (f.fd < 0) fail("open");
    write_all(f.fd, content);
    if (::fsync(f.fd) != 0) fail("fsync");
  }
  if (::rename(tmp.c_str(), p.c_str()) != 0) fail("rename");
}

void PosixDisk::symlink(const std::string& target, const path& p) {
  ::unlink(p.c_str());
  if (::symlink(target.c_str(), p.c_str()) != 0) fail("symlink");
}

void PosixDisk::chmod(const path& p, std::uint32_t mode) {
  if (::chmod(p.c_str(), mode) != 0) fail("chmod");
}

void PosixDisk::chown(const path& p, int uid, int gid) {
  if (::lchown(p.c_str(), static_cast<uid_t>(uid), static_cast<gid_t>(gid)) != 0) fail("chown");
}

void PosixDisk::rename(const path& from, const path& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) fail("rename");
}

void PosixDisk::sync_dir(const path& dir) {
  Fd f(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (f.fd < 0) fail("open");
  if (::fsync(f.fd) != 0) fail("fsync");
}

void PosixDisk::remove_all(const path& p) noexcept {
  std::error_code ec;
  fs::remove_all(p, ec);
}

void PosixDisk::unlink(const path& p) noexcept {
  ::unlink(p.c_str());
}

bool PosixDisk::exists(const path& p) {
  struct stat st;
  return ::lstat(p.c_str(), &st) == 0;
}

bool PosixDisk::is_empty_dir(const path& p) {
  std::error_code ec;
  const bool empty = fs::is_empty(p, ec);
  if (ec) throw std::system_error(ec, "readdir");
  return empty;
}

std::vector<std::string> PosixDisk::list(const path& dir) {
  std::vector<std::string> names;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    names.push_back(it->path().filename().string());
  }
  if (ec) throw std::system_error(ec, "readdir");
  return names;
}

std::vector<TreeEntry> PosixDisk::read_tree(const path& base) {
  std::vector<TreeEntry> out;
  for (auto it = fs::recursive_directory_iterator(base); it != fs::recursive_directory_iterator();
       ++it) {
    const fs::path& p = it->path();
    struct stat st;
    if (::lstat(p.c_str(), &st) != 0) continue;  // removed meanwhile
    TreeEntry e;
    e.mtime_ns = static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    e.mode = st.st_mode & 07777;
    if (S_ISDIR(st.st_mode)) {
      e.kind = wire::DIRECTORY;
    } else if (S_ISLNK(st.st_mode)) {
      e.kind = wire::SYMLINK;
      e.content = fs::read_symlink(p).string();
    } else if (S_ISREG(st.st_mode)) {
      e.kind = wire::REGULAR;
      e.content = read_file(p);
    } else {
      continue;
    }
    // Lexical: p comes from iterating base (fs::relative would resolve both
    // paths, a stat and a readlink per component, on every snapshot).
    e.path = p.lexically_relative(base).generic_string();
    out.push_back(std::move(e));
  }
  return out;
}

CacheDisk::path PosixDisk::canonical(const path& p) {
  return fs::canonical(p);
}

bool PosixDisk::lock(const path& p) {
  const int fd = ::open(p.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) fail("cache_dir lock");
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    ::close(fd);
    return false;
  }
  if (lock_fd_ >= 0) ::close(lock_fd_);
  lock_fd_ = fd;
  return true;
}

}  // namespace cookiefs::mount
