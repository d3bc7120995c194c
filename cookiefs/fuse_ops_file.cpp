// FUSE handlers for file contents: create, open, read, write, flush, release,
// fsync. Write-through (fuse.writeback_cache: false): every write is in the
// cache file when the syscall returns, so a snapshot taken under the session's
// exclusive lock is one instant of the application's view. Writeback cache
// (fuse.writeback_cache: true): the kernel holds writes in its page cache and
// sends them late; a snapshot first forces them back and is taken only if
// nothing changed while it did (SessionCache::snapshot_at_rest), which again
// makes it one instant of the application's view.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <mutex>
#include <shared_mutex>
#include <string>

#include "filesystem.hpp"
#include "status_files.hpp"

namespace cookiefs::mount {
namespace {

// Flags for reopening a backing file: creation and symlink flags were handled
// by the lookup/create already.
int reopen_flags(int flags) {
  return (flags & ~(O_CREAT | O_EXCL | O_NOCTTY | O_NOFOLLOW)) | O_CLOEXEC;
}

void set_cache_flags(fuse_file_info* fi) {
  // Remote changes invalidate the kernel's pages explicitly, so data this host
  // holds may stay cached across opens.
  fi->keep_cache = 1;
  // Write-through: there is nothing to flush on close.
  fi->noflush = 1;
}

void op_create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
               fuse_file_info* fi) {
  serve(req, Op::create, [&] {
    Filesystem& fs = fs_of(req);
    Inode& p = writable_dir(fs, parent);
    check_new_name(fs, p, name);
    if (!S_ISREG(mode)) throw Errno{EPERM};
    Mutation m(fs, *p.session);
    fs.limits.add(*p.session, 0, 1);
    int fd = fs.spares.take(p.fd, name, fi->flags, mode);
    bool created = fd >= 0;
    if (fd < 0) {
      const int flags = (fi->flags | O_CREAT | O_CLOEXEC) & ~O_NOCTTY;
      fd = ::openat(p.fd, name, flags | O_EXCL, mode & kModeBits);
      created = fd >= 0;
      // The kernel thought the name free but it exists (a remote change it
      // has not seen yet): an open of that file, as without O_EXCL.
      if (fd < 0 && errno == EEXIST && !(fi->flags & O_EXCL)) {
        struct stat before {};
        const bool known = ::fstatat(p.fd, name, &before, AT_SYMLINK_NOFOLLOW) == 0;
        fd = ::openat(p.fd, name, flags, mode & kModeBits);
        if (fd >= 0) {
          const bool emptied = known && (fi->flags & O_TRUNC);
          fs.limits.undo(*p.session, emptied ? before.st_size : 0, 1);
        }
      }
    }
    if (fd < 0) {
      const int err = errno;
      fs.limits.undo(*p.session, 0, 1);
      throw Errno{err};
    }
    m.done();
    if (created) restore_mode(fs, fd, p.fd, name, mode);
    give_to_caller(req, p.fd, name);
    int path_fd = ::openat(p.fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (path_fd < 0 || ::fstat(fd, &st) != 0) {
      const int err = errno;
      if (path_fd >= 0) ::close(path_fd);
      ::close(fd);
      throw Errno{err};
    }
    Inode& i = fs.inodes.remember(path_fd, st, NodeKind::entry, p.session, p.depth + 1);
    fuse_entry_param e{};
    e.ino = InodeTable::node_id(i);
    e.attr = st;
    e.attr_timeout = fs.cfg.attr_timeout.count() / 1000.0;
    e.entry_timeout = fs.cfg.entry_timeout.count() / 1000.0;
    fi->fh = static_cast<uint64_t>(fd);
    set_cache_flags(fi);
    if (fuse_reply_create(req, &e, fi) == -ENOENT) {
      ::close(fd);
      fs.inodes.forget(e.ino, 1);
    }
  });
}

void op_open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  serve(req, Op::open, [&] {
    Filesystem& fs = fs_of(req);
    Inode& i = fs.inodes.get(ino);
    // Writeback cache: the kernel needs no handle of ours (reads and
    // write-backs use the inode's own descriptor, remote changes invalidate
    // explicitly), and ENOSYS makes it stop asking: an open or close of a
    // cached file then costs no request at all.
    if (fs.writeback) throw Errno{ENOSYS};
    if (i.kind == NodeKind::status_file) {
      if ((fi->flags & O_ACCMODE) != O_RDONLY) throw Errno{EACCES};
      auto* text = new std::string(StatusFiles::render(fs, i.status_name));
      fi->fh = reinterpret_cast<uint64_t>(text);
      fi->direct_io = 1;  // sized 0 in getattr; generated per open
      if (fuse_reply_open(req, fi) == -ENOENT) delete text;
      return;
    }
    if (!i.is_real()) throw Errno{EISDIR};
    const bool truncating = fi->flags & O_TRUNC;
    // Not the owner: refuse write access up front, so SQLite opens read-only.
    if ((fi->flags & O_ACCMODE) != O_RDONLY && i.session) fs.sessions.ensure_writable(*i.session);
    std::optional<Mutation> m;
    std::unique_lock<std::mutex> sized;
    if (truncating && (fi->flags & O_ACCMODE) != O_RDONLY) {
      m.emplace(fs, *i.session);
      sized = std::unique_lock(i.size_mu);
    }
    struct stat before {};
    if (m) ::fstatat(i.fd, "", &before, AT_EMPTY_PATH);
    const int fd = check(::open(i.proc_path().c_str(), reopen_flags(fi->flags)));
    if (m) {
      if (!i.unlinked && before.st_nlink > 0) fs.limits.undo(*i.session, before.st_size);
      m->done();
    }
    fi->fh = static_cast<uint64_t>(fd);
    set_cache_flags(fi);
    if (m) fi->keep_cache = 0;
    if (fuse_reply_open(req, fi) == -ENOENT) ::close(fd);
  });
}

void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  serve(req, Op::read, [&] {
    Filesystem& fs = fs_of(req);
    Inode& i = fs.inodes.get(ino);
    if (i.kind == NodeKind::status_file) {
      const auto* text =
          i.transient ? &i.status_text : reinterpret_cast<const std::string*>(fi->fh);
      if (static_cast<std::size_t>(off) >= text->size())
        return void(fuse_reply_buf(req, nullptr, 0));
      fuse_reply_buf(req, text->data() + off, std::min(size, text->size() - off));
      return;
    }
    // A remote adoption rewrites cache files in place under the exclusive
    // lock: a read waits for it instead of seeing a half-written file.
    std::shared_lock<std::shared_mutex> tree;
    if (i.session) tree = std::shared_lock(i.session->tree_lock);
    fuse_bufvec buf = FUSE_BUFVEC_INIT(size);
    buf.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
    buf.buf[0].fd = fs.writeback ? check(i.io()) : static_cast<int>(fi->fh);
    buf.buf[0].pos = off;
    fuse_reply_data(req, &buf, static_cast<fuse_buf_copy_flags>(0));
  });
}

void op_write(fuse_req_t req, fuse_ino_t ino, const char* data, size_t size, off_t off,
              fuse_file_info* fi) {
  serve(req, Op::write, [&] {
    Filesystem& fs = fs_of(req);
    Inode& i = fs.inodes.get(ino);
    if (!i.is_real()) throw Errno{EBADF};
    Session& s = *i.session;
    // Writeback: the kernel placed O_APPEND data itself; the offset is final.
    const int fd = fs.writeback ? check(i.io()) : static_cast<int>(fi->fh);
    Mutation m(fs, s);
    struct stat st;
    check(::fstat(fd, &st));
    const bool appending = !fs.writeback && (fi->flags & O_APPEND);
    auto start_of = [&](const struct stat& now) { return appending ? now.st_size : off; };
    auto end_of = [&](const struct stat& now) {
      return static_cast<std::uint64_t>(start_of(now)) + size;
    };
    fs.limits.check_file_size(end_of(st));
    // A write that may grow the file reads its size again under the inode's
    // size lock, so concurrent write-backs count each growth once.
    std::unique_lock<std::mutex> sized;
    if (end_of(st) > static_cast<std::uint64_t>(st.st_size)) {
      sized = std::unique_lock(i.size_mu);
      check(::fstat(fd, &st));
    }
    // An unlinked file is never committed: it counts for nothing.
    const bool counted = !i.unlinked && st.st_nlink > 0;
    const std::int64_t growth =
        counted ? std::max<std::int64_t>(0, static_cast<std::int64_t>(end_of(st)) - st.st_size) : 0;
    fs.limits.add(s, growth);
    try {
      if (fs.writeback) fs.sessions.note_write_back(s);
    } catch (...) {
      fs.limits.undo(s, growth);
      throw;
    }
    // The whole request, or as much as fits: the cache file system may be
    // full (ENOSPC) after part of it.
    std::size_t n = 0;
    int err = 0;
    while (n < size) {
      const ssize_t w =
          ::pwrite(fd, data + n, size - n, off + static_cast<off_t>(n));  // O_APPEND on fd appends
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        err = w < 0 ? errno : EIO;
        break;
      }
      n += static_cast<std::size_t>(w);
    }
    // A short write grew the file less.
    if (counted && n < size) {
      const auto grown =
          n == 0 ? 0 : std::max<std::int64_t>(0, start_of(st) + static_cast<off_t>(n) - st.st_size);
      fs.limits.undo(s, growth - grown);
    }
    // Write-through: a short count is the application's to see (it retries
    // and gets the error). A write-back WRITE answered short is taken as
    // written by the kernel, and its pages dropped: only an error is noticed.
    if (err != 0 && (n == 0 || fs.writeback)) {
      if (n > 0) m.done();
      throw Errno{err};
    }
    m.done();
    ++fs.writes_served;
    fuse_reply_write(req, n);
  });
}

void op_flush(fuse_req_t req, fuse_ino_t, fuse_file_info*) {
  serve(req, Op::flush, [&] {
    // Writeback: close already wrote the file's pages back; a snapshot is
    // taken only after forcing the rest (flush_kernel_pages), so a FLUSH
    // tells nothing and ENOSYS stops the kernel from sending it.
    if (fs_of(req).writeback) throw Errno{ENOSYS};
    fuse_reply_err(req, 0);
  });
}

void op_release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  serve(req, Op::release, [&] {
    Inode& i = fs_of(req).inodes.get(ino);
    if (fs_of(req).writeback) {
      // No handles of ours (open answers ENOSYS).
    } else if (i.kind == NodeKind::status_file) {
      delete reinterpret_cast<std::string*>(fi->fh);
    } else {
      ::close(static_cast<int>(fi->fh));
    }
    fuse_reply_err(req, 0);
  });
}

void op_fsync(fuse_req_t req, fuse_ino_t ino, int, fuse_file_info*) {
  serve(req, Op::fsync, [&] { reply_when_synced(req, Op::fsync, fs_of(req).inodes.get(ino)); });
}

}  // namespace

void add_file_ops(fuse_lowlevel_ops& ops) {
  ops.create = op_create;
  ops.open = op_open;
  ops.read = op_read;
  ops.write = op_write;
  ops.flush = op_flush;
  ops.release = op_release;
  ops.fsync = op_fsync;
}

}  // namespace cookiefs::mount
