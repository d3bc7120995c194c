// FUSE handlers for names and attributes: lookup, forget, getattr, setattr,
// readlink, mknod (regular files), symlink, unlink, rename, statfs; link is
// refused.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cstring>

#include "filesystem.hpp"
#include "names.hpp"
#include "status_files.hpp"

namespace cookiefs::mount {
namespace {

void lookup_session(fuse_req_t req, Filesystem& fs, const char* name) {
  if (std::strcmp(name, StatusFiles::kDir) == 0)
    return reply_virtual_entry(req, fs, fs.inodes.status_dir());
  if (!valid_id(name)) return reply_negative(req, fs);
  auto s = fs.sessions.get_or_fetch(name);  // Errno(ENOENT) when it exists nowhere
  const int fd = check(::open(s->files().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  reply_real_entry(req, fs, fd, NodeKind::session_root, s, 0);
}

void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  serve(req, Op::lookup, [&] {
    Filesystem& fs = fs_of(req);
    Inode& p = fs.inodes.get(parent);
    switch (p.kind) {
      case NodeKind::root:
        try {
          return lookup_session(req, fs, name);
        } catch (const Errno& e) {
          if (e.code == ENOENT) return reply_negative_session(req, fs);
          // Unknown here and the service did not answer within offline_wait:
          // it may exist elsewhere, so never ENOENT (an engine would create a
          // fresh jar that forks the session); try again later.
          if (e.code == kUnreachable) {
            fs.sessions.note_offline_refusal();
            throw Errno{EAGAIN};
          }
          throw;
        }
      case NodeKind::status_dir:
        if (Inode* f = fs.inodes.status_file(name)) {
          // Writeback: no opens to render at; render now, into an inode of its own.
          return reply_virtual_entry(
              req, fs,
              fs.writeback ? fs.inodes.transient_status(name, StatusFiles::render(fs, name)) : *f);
        }
        throw Errno{ENOENT};
      case NodeKind::status_file:
        throw Errno{ENOTDIR};
      default:
        break;
    }
    if (std::strlen(name) > 255) throw Errno{ENAMETOOLONG};
    const int fd = ::openat(p.fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) return reply_negative(req, fs);
    check(fd);
    reply_real_entry(req, fs, fd, NodeKind::entry, p.session, p.depth + 1);
  });
}

void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  serve(req, Op::forget, [&] {
    fs_of(req).inodes.forget(ino, nlookup);
    fuse_reply_none(req);
  });
}

void op_forget_multi(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  serve(req, Op::forget, [&] {
    for (size_t i = 0; i < count; ++i) fs_of(req).inodes.forget(forgets[i].ino, forgets[i].nlookup);
    fuse_reply_none(req);
  });
}

void op_getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  serve(req, Op::getattr, [&] {
    Filesystem& fs = fs_of(req);
    const struct stat st = stat_of(fs, fs.inodes.get(ino));
    fuse_reply_attr(req, &st, fs.cfg.attr_timeout.count() / 1000.0);
  });
}

void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int valid, fuse_file_info* fi) {
  serve(req, Op::setattr, [&] {
    Filesystem& fs = fs_of(req);
    Inode& i = fs.inodes.get(ino);
    if (!i.is_real()) throw Errno{EPERM};
    Mutation m(fs, *i.session);
    const std::string proc = i.proc_path();
    // Writeback: no handles of ours, but the inode's own descriptor spares
    // a path walk through /proc for each change.
    int fd = fi != nullptr && !fs.writeback ? static_cast<int>(fi->fh) : -1;
    if (fd < 0 && fs.writeback && i.kind == NodeKind::entry) fd = i.io();
    const bool have_fd = fd >= 0;
    if (valid & FUSE_SET_ATTR_MODE) {
      if (attr->st_mode & 07000 & ~kModeBits) throw Errno{EPERM};  // set-id bits: kModeBits
      check(have_fd ? ::fchmod(fd, attr->st_mode) : ::chmod(proc.c_str(), attr->st_mode));
      m.done();
    }
    if (valid & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
      const uid_t uid = (valid & FUSE_SET_ATTR_UID) ? attr->st_uid : static_cast<uid_t>(-1);
      const gid_t gid = (valid & FUSE_SET_ATTR_GID) ? attr->st_gid : static_cast<gid_t>(-1);
      check(::fchownat(i.fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW));
    }
    if (valid & FUSE_SET_ATTR_SIZE) {
      const auto size = attr->st_size;
      if (size < 0) throw Errno{EINVAL};
      // A sparse file is committed at its size: the size is what counts.
      fs.limits.check_file_size(static_cast<std::uint64_t>(size));
      std::lock_guard sized(i.size_mu);
      struct stat before;
      check(::fstatat(i.fd, "", &before, AT_EMPTY_PATH));
      // An unlinked file is never committed: it counts for nothing.
      const auto growth = i.unlinked || before.st_nlink == 0 ? 0 : size - before.st_size;
      fs.limits.add(*i.session, growth);
      if ((have_fd ? ::ftruncate(fd, size) : ::truncate(proc.c_str(), size)) != 0) {
        const int err = errno;
        fs.limits.undo(*i.session, growth);
        throw Errno{err};
      }
      m.done();
    }
    if (valid & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)) {
      struct timespec tv[2];
      tv[0].tv_nsec = tv[1].tv_nsec = UTIME_OMIT;
      if (valid & FUSE_SET_ATTR_ATIME_NOW) {
        tv[0].tv_nsec = UTIME_NOW;
      } else if (valid & FUSE_SET_ATTR_ATIME) {
        tv[0] = attr->st_atim;
      }
      if (valid & FUSE_SET_ATTR_MTIME_NOW) {
        tv[1].tv_nsec = UTIME_NOW;
      } else if (valid & FUSE_SET_ATTR_MTIME) {
        tv[1] = attr->st_mtim;
      }
      check(have_fd ? ::futimens(fd, tv) : ::utimensat(AT_FDCWD, proc.c_str(), tv, 0));
    }
    const struct stat st = stat_of(fs, i);
    fuse_reply_attr(req, &st, fs.cfg.attr_timeout.count() / 1000.0);
  });
}

void op_readlink(fuse_req_t req, fuse_ino_t ino) {
  serve(req, Op::readlink, [&] {
    Inode& i = fs_of(req).inodes.get(ino);
    if (!i.is_real()) throw Errno{EINVAL};
    char buf[PATH_MAX + 1];
    const ssize_t n = ::readlinkat(i.fd, "", buf, sizeof buf - 1);
    check(static_cast<int>(n));
    buf[n] = '\0';
    fuse_reply_readlink(req, buf);
  });
}

// Regular files only (the writeback-cache mount has no create: the kernel
// then makes files with mknod and opens them without a request). Jars never
// need devices, fifos or sockets.
void op_mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t) {
  serve(req, Op::mknod, [&] {
    if (!S_ISREG(mode)) throw Errno{EPERM};
    Filesystem& fs = fs_of(req);
    Inode& p = writable_dir(fs, parent);
    check_new_name(fs, p, name);
    Mutation m(fs, *p.session);
    fs.limits.add(*p.session, 0, 1);
    int io = fs.spares.take(p.fd, name, O_RDWR, mode);
    if (io < 0) io = ::openat(p.fd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode & kModeBits);
    if (io < 0) {
      const int err = errno;
      fs.limits.undo(*p.session, 0, 1);
      throw Errno{err};
    }
    m.done();
    restore_mode(fs, io, p.fd, name, mode);
    give_to_caller(req, p.fd, name);
    const int fd = ::openat(p.fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
      const int err = errno;
      ::close(io);
      throw Errno{err};
    }
    // The descriptor just created serves the kernel's write-backs (Inode::io).
    reply_real_entry(req, fs, fd, NodeKind::entry, p.session, p.depth + 1, io);
  });
}

void op_link(fuse_req_t req, fuse_ino_t, fuse_ino_t, const char*) {
  serve(req, Op::link, [&] { throw Errno{EPERM}; });
}

void op_symlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name) {
  serve(req, Op::symlink, [&] {
    Filesystem& fs = fs_of(req);
    Inode& p = writable_dir(fs, parent);
    check_new_name(fs, p, name);
    const auto length = static_cast<std::int64_t>(std::strlen(link));
    if (length > 4095) throw Errno{ENAMETOOLONG};
    Mutation m(fs, *p.session);
    fs.limits.add(*p.session, length, 1);  // committed with its target as content
    if (::symlinkat(link, p.fd, name) != 0) {
      const int err = errno;
      fs.limits.undo(*p.session, length, 1);
      throw Errno{err};
    }
    m.done();
    give_to_caller(req, p.fd, name);
    const int fd = check(::openat(p.fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC));
    reply_real_entry(req, fs, fd, NodeKind::entry, p.session, p.depth + 1);
  });
}

void op_unlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  serve(req, Op::unlink, [&] {
    Filesystem& fs = fs_of(req);
    Inode& p = writable_dir(fs, parent);
    Mutation m(fs, *p.session);
    struct stat st {};
    const bool known = ::fstatat(p.fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
    const bool kept =
        known && S_ISREG(st.st_mode) && st.st_nlink == 1 && fs.spares.keep(p.fd, name, st);
    if (!kept) check(::unlinkat(p.fd, name, 0));
    if (known) fs.limits.undo(*p.session, S_ISDIR(st.st_mode) ? 0 : st.st_size, 1);
    m.done();
    fuse_reply_err(req, 0);
  });
}

void op_rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
               const char* newname, unsigned int flags) {
  serve(req, Op::rename, [&] {
    Filesystem& fs = fs_of(req);
    Inode& from = writable_dir(fs, parent);
    Inode& to = writable_dir(fs, newparent);
    if (from.session != to.session) throw Errno{EXDEV};  // sessions commit separately
    if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE)) throw Errno{EINVAL};
    // A moved directory takes its subtree along: every path below must fit too.
    check_new_name(fs, to, newname, subtree_extent(from.fd, name));
    if (flags & RENAME_EXCHANGE) check_new_name(fs, from, name, subtree_extent(to.fd, newname));
    Mutation m(fs, *from.session);
    // A replaced target leaves the tree (an exchange keeps both).
    struct stat replaced {};
    const bool same = &from == &to && std::strcmp(name, newname) == 0;
    const bool replaces = !same && !(flags & (RENAME_EXCHANGE | RENAME_NOREPLACE)) &&
                          ::fstatat(to.fd, newname, &replaced, AT_SYMLINK_NOFOLLOW) == 0;
    check(::renameat2(from.fd, name, to.fd, newname, flags));
    if (replaces)
      fs.limits.undo(*from.session, S_ISDIR(replaced.st_mode) ? 0 : replaced.st_size, 1);
    m.done();
    fuse_reply_err(req, 0);
  });
}

void op_statfs(fuse_req_t req, fuse_ino_t) {
  serve(req, Op::statfs, [&] {
    struct statvfs sv;
    check(::statvfs(fs_of(req).cfg.cache_dir.c_str(), &sv));
    fuse_reply_statfs(req, &sv);
  });
}

}  // namespace

void add_entry_ops(fuse_lowlevel_ops& ops) {
  ops.lookup = op_lookup;
  ops.forget = op_forget;
  ops.forget_multi = op_forget_multi;
  ops.getattr = op_getattr;
  ops.setattr = op_setattr;
  ops.readlink = op_readlink;
  ops.mknod = op_mknod;
  ops.link = op_link;
  ops.symlink = op_symlink;
  ops.unlink = op_unlink;
  ops.rename = op_rename;
  ops.statfs = op_statfs;
}

}  // namespace cookiefs::mount
