// SpareFiles; see spare_files.hpp.
#include "spare_files.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <string>

#include "inode_table.hpp"
#include "manifest.hpp"

namespace cookiefs::mount {

SpareFiles::~SpareFiles() {
  if (dir_fd_ >= 0) ::close(dir_fd_);
}

void SpareFiles::open(const std::string& dir, InodeTable& inodes) {
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return;
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) return;
  // Spares of an earlier run: nothing refers to them any more.
  if (DIR* d = ::fdopendir(::dup(fd))) {
    while (const dirent* e = ::readdir(d)) {
      if (e->d_name[0] != '.') ::unlinkat(fd, e->d_name, 0);
    }
    ::closedir(d);
  }
  std::lock_guard lock(mu_);
  dir_fd_ = fd;
  inodes_ = &inodes;
}

bool SpareFiles::keep(int dir_fd, const char* name, const struct stat& st) {
  std::string spare;
  {
    std::lock_guard lock(mu_);
    if (dir_fd_ < 0 || pending_ + reusable_.size() >= kMaxSpares) return false;
    spare = "s" + std::to_string(next_++);
    ++pending_;
  }
  // Marked before the rename: the kernel cannot forget the inode while its
  // unlink is being served, so released() comes after this.
  const bool marked = inodes_->mark_spare(st.st_dev, st.st_ino, spare);
  if (!marked || ::renameat2(dir_fd, name, dir_fd_, spare.c_str(), RENAME_NOREPLACE) != 0) {
    if (marked) inodes_->mark_spare(st.st_dev, st.st_ino, "");
    std::lock_guard lock(mu_);
    --pending_;
    return false;
  }
  return true;
}

void SpareFiles::released(const std::string& spare) {
  // Emptied now, on the FORGET (which nobody waits for), not at reuse: a
  // file truncated to zero makes ext4 write its next contents back at the
  // following close (auto_da_alloc), and closing right after the truncate,
  // with nothing written, clears that.
  const int fd = ::openat(dir_fd_, spare.c_str(), O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
  const bool emptied = fd >= 0 && ::ftruncate(fd, 0) == 0;
  if (fd >= 0) ::close(fd);
  if (!emptied) ::unlinkat(dir_fd_, spare.c_str(), 0);
  std::lock_guard lock(mu_);
  if (pending_ > 0) --pending_;
  if (emptied) reusable_.push_back(spare);
}

int SpareFiles::take(int dir_fd, const char* name, int flags, mode_t mode) {
  std::string spare;
  {
    std::lock_guard lock(mu_);
    if (reusable_.empty()) return -1;
    spare = std::move(reusable_.back());
    reusable_.pop_back();
  }
  if (::renameat2(dir_fd_, spare.c_str(), dir_fd, name, RENAME_NOREPLACE) != 0) {
    const int err = errno;
    if (err == EEXIST) {
      std::lock_guard lock(mu_);
      reusable_.push_back(std::move(spare));
    } else {
      ::unlinkat(dir_fd_, spare.c_str(), 0);  // gone or unusable: forget it
    }
    errno = err;
    return -1;
  }
  const int prep = ::openat(dir_fd, name, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
  bool ready = prep >= 0 && ::fchown(prep, ::geteuid(), ::getegid()) == 0 &&
               ::fchmod(prep, mode & kModeBits) == 0 && ::futimens(prep, nullptr) == 0;
  int fd = prep;
  const int wanted = (flags & ~(O_CREAT | O_EXCL | O_NOCTTY | O_TRUNC)) | O_CLOEXEC;
  if (ready && wanted != (O_RDWR | O_CLOEXEC)) {
    fd = ::openat(dir_fd, name, wanted | O_NOFOLLOW);
    ::close(prep);
    ready = fd >= 0;
  }
  if (!ready) {
    // Half-made: remove it so the caller's plain create starts clean.
    if (fd >= 0) ::close(fd);
    ::unlinkat(dir_fd, name, 0);
    errno = 0;
    return -1;
  }
  return fd;
}

std::size_t SpareFiles::reusable() {
  std::lock_guard lock(mu_);
  return reusable_.size();
}

}  // namespace cookiefs::mount
