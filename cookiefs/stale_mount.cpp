// Stale mounts at start-up; see stale_mount.hpp.
#include "stale_mount.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

namespace cookiefs::mount {
namespace {

constexpr const char* kOurType = "fuse.cookiefs";
// A dead connection answers at once -- once the kernel has aborted it, which
// with FUSE over io_uring waits for the dead daemon's rings to be torn down
// by a kernel worker, seconds later on a loaded machine (the io_uring
// variant of the restart test failed with 3 s). A live one answers within
// milliseconds. No answer by then: a hung daemon, left alone like a live one.
constexpr std::chrono::milliseconds kProbeDeadline{15000};
// Mounts stacked on one point that a start will detach, at most.
constexpr int kMaxStale = 8;

// Runs `fusermount3 -uz PATH` (for a start without CAP_SYS_ADMIN); true
// when it succeeded.
bool fusermount_detach(const std::string& path) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int null = ::open("/dev/null", O_WRONLY);
    if (null >= 0) ::dup2(null, 2);
    ::execlp("fusermount3", "fusermount3", "-uz", path.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  if (pid < 0) return false;
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// The topmost mount on `point`, if any.
std::optional<MountEntry> mounted_on(const std::string& point) {
  std::ifstream in("/proc/self/mountinfo");
  std::optional<MountEntry> top;
  for (auto& e : parse_mountinfo(in)) {
    if (e.point == point) top = std::move(e);
  }
  return top;
}

// The canonical path of `given`, resolved through its parent when the path
// itself cannot be (a dead mount answers ENOTCONN once its cached
// attributes expire).
std::string canonical_mountpoint(const std::string& given) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path p = fs::path(given).lexically_normal();
  if (!p.has_filename() && p.has_parent_path()) p = p.parent_path();  // "dir/"
  if (auto real = fs::canonical(p, ec); !ec) return real.string();
  const int err = ec.value();
  if (err == ENOENT || err == ENOTDIR)
    throw MountpointError(std::string("mountpoint: ") + std::strerror(err));
  auto parent = fs::canonical(p.has_parent_path() ? p.parent_path() : fs::current_path(), ec);
  if (ec) throw MountpointError("mountpoint: " + ec.message());
  return (parent / p.filename()).string();
}

}  // namespace

std::string unescape_mountinfo(const std::string& s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    auto octal = [&](std::size_t k) { return s[k] >= '0' && s[k] <= '7'; };
    if (s[i] == '\\' && i + 3 < s.size() && octal(i + 1) && octal(i + 2) && octal(i + 3)) {
      out += static_cast<char>(std::stoi(s.substr(i + 1, 3), nullptr, 8));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::vector<MountEntry> parse_mountinfo(std::istream& in) {
  // id parent major:minor root point options [optional...] - fstype source super
  std::vector<MountEntry> out;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string id, parent, devno, root, point, options, field;
    if (!(fields >> id >> parent >> devno >> root >> point >> options)) continue;
    while (fields >> field && field != "-") {
    }
    MountEntry e;
    e.point = unescape_mountinfo(point);
    if (!(fields >> e.fstype)) continue;
    out.push_back(std::move(e));
  }
  return out;
}

Connection probe_connection(const std::string& path, std::chrono::milliseconds deadline) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    // Only async-signal-safe calls here.
    struct statfs sf;
    if (::statfs(path.c_str(), &sf) == 0) ::_exit(0);
    ::_exit(errno == ENOTCONN ? 1 : 2);
  }
  if (pid < 0) return Connection::unknown;
  const auto until = std::chrono::steady_clock::now() + deadline;
  int status = 0;
  pid_t done = 0;
  while ((done = ::waitpid(pid, &status, WNOHANG)) == 0 &&
         std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (done == 0) {
    ::kill(pid, SIGKILL);  // a FUSE request waits killably
    ::waitpid(pid, &status, 0);
    return Connection::unknown;
  }
  if (done < 0 || !WIFEXITED(status)) return Connection::unknown;
  switch (WEXITSTATUS(status)) {
    case 0:
      return Connection::alive;
    case 1:
      return Connection::dead;
    default:
      return Connection::unknown;
  }
}

std::string take_mountpoint(const std::string& given) {
  if (given.empty()) {
    throw MountpointError("mountpoint: missing (positional MOUNTPOINT or key mountpoint)");
  }
  const std::string real = canonical_mountpoint(given);
  for (int stale = 0;; ++stale) {
    const auto top = mounted_on(real);
    if (!top) break;
    if (top->fstype != kOurType) {
      throw MountpointError("mountpoint: already in use (a " + top->fstype + " mount is there)");
    }
    switch (probe_connection(real, kProbeDeadline)) {
      case Connection::alive:
        throw MountpointError("mountpoint: already in use by a running cookiefs");
      case Connection::unknown:
        throw MountpointError(
            "mountpoint: already in use by a cookiefs mount not shown to be dead (its statfs "
            "hung or was refused): stop it first");
      case Connection::dead:
        break;
    }
    if (stale == kMaxStale) throw MountpointError("mountpoint: too many stale mounts stacked");
    // Dead: what a crashed cookiefs leaves. Nothing can be served through it
    // again, so detaching it loses nothing (its cache dir holds the data).
    spdlog::warn("mountpoint: a stale cookiefs mount (its daemon is gone) is detached first");
    if (::umount2(real.c_str(), MNT_DETACH) != 0) {
      const int err = errno;  // EPERM without CAP_SYS_ADMIN: fusermount3 may
      if (!fusermount_detach(real)) {
        throw MountpointError(
            std::string("mountpoint: a stale cookiefs mount cannot be detached: ") +
            std::strerror(err));
      }
    }
  }
  struct stat st;
  if (::stat(real.c_str(), &st) != 0) {
    throw MountpointError(std::string("mountpoint: ") + std::strerror(errno));
  }
  if (!S_ISDIR(st.st_mode)) throw MountpointError("mountpoint: not a directory");
  return real;
}

}  // namespace cookiefs::mount
