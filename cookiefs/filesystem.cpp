// Shared pieces of the FUSE handlers; see filesystem.hpp.
#include "filesystem.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cstring>

#include "status_files.hpp"

namespace cookiefs::mount {

Filesystem::Filesystem(const MountConfig& c, SessionCache& s, StorageClient& cl, Metrics* m)
    : cfg(c), inodes(StatusFiles::names()), sessions(s), client(cl), metrics(m) {}

void log_unexpected(Op op, const std::exception& e) {
  spdlog::error("{}: unexpected failure answered EIO: {}", op_name(op), e.what());
}

struct stat stat_of(Filesystem& fs, Inode& i) {
  struct stat st {};
  if (i.is_real()) {
    check(::fstatat(i.fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW));
    return st;
  }
  st.st_ino = i.ino | (1ull << 62);  // clear of backing inode numbers
  st.st_uid = ::getuid();
  st.st_gid = ::getgid();
  if (i.kind == NodeKind::status_file) {
    st.st_mode = S_IFREG | 0444;
    st.st_nlink = 1;
    st.st_size = 0;  // generated on open and served direct_io
  } else {
    st.st_mode = S_IFDIR | (i.kind == NodeKind::root ? 0755 : 0555);
    st.st_nlink = 2;
  }
  (void)fs;
  return st;
}

static double seconds(std::chrono::milliseconds ms) {
  return ms.count() / 1000.0;
}

void reply_real_entry(fuse_req_t req, Filesystem& fs, int fd, NodeKind kind,
                      std::shared_ptr<Session> session, int depth) {
  struct stat st;
  if (::fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) {
    const int err = errno;
    ::close(fd);
    throw Errno{err};
  }
  Inode& i = fs.inodes.remember(fd, st, kind, std::move(session), depth);
  fuse_entry_param e{};
  e.ino = InodeTable::node_id(i);
  e.attr = st;
  e.attr_timeout = seconds(fs.cfg.attr_timeout);
  e.entry_timeout = seconds(fs.cfg.entry_timeout);
  if (fuse_reply_entry(req, &e) == -ENOENT) {
    fs.inodes.forget(e.ino, 1);  // interrupted: the kernel never saw the lookup
  }
}

void reply_virtual_entry(fuse_req_t req, Filesystem& fs, Inode& i) {
  fuse_entry_param e{};
  e.ino = fs.inodes.id_of(i);
  e.attr = stat_of(fs, i);
  e.attr_timeout = seconds(fs.cfg.attr_timeout);
  e.entry_timeout = seconds(fs.cfg.entry_timeout);
  fuse_reply_entry(req, &e);
}

void reply_negative(fuse_req_t req, Filesystem& fs) {
  fuse_entry_param e{};
  e.ino = 0;  // cached by the kernel as "does not exist" for entry_timeout
  e.entry_timeout = seconds(fs.cfg.negative_timeout);
  fuse_reply_entry(req, &e);
}

Inode& writable_dir(Filesystem& fs, fuse_ino_t parent) {
  Inode& p = fs.inodes.get(parent);
  if (p.kind == NodeKind::root) throw Errno{EPERM};  // the root holds sessions only
  if (!p.is_real()) throw Errno{EACCES};             // .cookiefs is read-only
  return p;
}

void check_new_name(Filesystem& fs, const Inode& parent, const char* name) {
  const std::size_t n = std::strlen(name);
  if (n > 255) throw Errno{ENAMETOOLONG};
  if (n == 0 || std::strcmp(name, ".") == 0 || std::strcmp(name, "..") == 0) throw Errno{EINVAL};
  if (parent.depth + 1 > fs.cfg.max_depth) throw Errno{ENAMETOOLONG};
}

}  // namespace cookiefs::mount
