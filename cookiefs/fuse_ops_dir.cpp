// FUSE handlers for directories: mkdir (a session at the root), rmdir
// (deletes a session at the root), opendir/readdir/releasedir, fsyncdir.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "filesystem.hpp"
#include "names.hpp"
#include "status_files.hpp"

namespace cookiefs::mount {
namespace {

DirHandle& handle_of(fuse_file_info* fi) {
  return *reinterpret_cast<DirHandle*>(fi->fh);
}

void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  serve(req, Op::mkdir, [&] {
    Filesystem& fs = fs_of(req);
    Inode& p = fs.inodes.get(parent);
    if (p.kind == NodeKind::root) {
      if (std::strlen(name) > kMaxIdLength) throw Errno{ENAMETOOLONG};
      if (!valid_id(name)) throw Errno{EINVAL};
      auto s = fs.sessions.create(name);
      give_to_caller(req, AT_FDCWD, s->files().c_str());
      const int fd = check(::open(s->files().c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
      return reply_real_entry(req, fs, fd, NodeKind::session_root, s, 0);
    }
    Inode& dir = writable_dir(fs, parent);
    check_new_name(fs, dir, name);
    Mutation m(fs, *dir.session);
    fs.limits.add(*dir.session, 0, 1);
    if (::mkdirat(dir.fd, name, mode & kModeBits) != 0) {
      const int err = errno;
      fs.limits.undo(*dir.session, 0, 1);
      throw Errno{err};
    }
    m.done();
    restore_mode(fs, -1, dir.fd, name, mode);
    give_to_caller(req, dir.fd, name);
    const int fd = check(::openat(dir.fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC));
    reply_real_entry(req, fs, fd, NodeKind::entry, dir.session, dir.depth + 1);
  });
}

void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  serve(req, Op::rmdir, [&] {
    Filesystem& fs = fs_of(req);
    Inode& p = fs.inodes.get(parent);
    if (p.kind == NodeKind::root) {
      if (std::strcmp(name, StatusFiles::kDir) == 0) throw Errno{EPERM};
      fs.sessions.remove(name);
      return fuse_reply_err(req, 0), void();
    }
    Inode& dir = writable_dir(fs, parent);
    Mutation m(fs, *dir.session);
    check(::unlinkat(dir.fd, name, AT_REMOVEDIR));
    fs.limits.undo(*dir.session, 0, 1);
    m.done();
    fuse_reply_err(req, 0);
  });
}

void op_opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  serve(req, Op::opendir, [&] {
    Filesystem& fs = fs_of(req);
    Inode& i = fs.inodes.get(ino);
    auto h = std::make_unique<DirHandle>();
    if (i.kind == NodeKind::root) {
      h->names = {{".", S_IFDIR}, {"..", S_IFDIR}, {StatusFiles::kDir, S_IFDIR}};
      for (const auto& s : fs.sessions.list()) h->names.emplace_back(s->id, S_IFDIR);
    } else if (i.kind == NodeKind::status_dir) {
      h->names = {{".", S_IFDIR}, {"..", S_IFDIR}};
      for (const auto& n : fs.inodes.status_names()) h->names.emplace_back(n, S_IFREG);
    } else if (i.is_real()) {
      const int fd = check(::openat(i.fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      h->dp = ::fdopendir(fd);
      if (!h->dp) {
        const int err = errno;
        ::close(fd);
        throw Errno{err};
      }
    } else {
      throw Errno{ENOTDIR};
    }
    fi->fh = reinterpret_cast<uint64_t>(h.get());
    fi->cache_readdir = i.kind == NodeKind::status_dir;
    if (fuse_reply_open(req, fi) == 0) fs.dirs.keep(std::move(h));
  });
}

void op_readdir(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi) {
  serve(req, Op::readdir, [&] {
    DirHandle& h = handle_of(fi);
    std::vector<char> buf(size);
    size_t used = 0;
    if (!h.dp) {
      for (auto i = static_cast<std::size_t>(off); i < h.names.size(); ++i) {
        struct stat st {};
        st.st_mode = h.names[i].second;
        st.st_ino = i + 1;
        const size_t n =
            fuse_add_direntry(req, buf.data() + used, size - used, h.names[i].first.c_str(), &st,
                              static_cast<off_t>(i + 1));
        if (n > size - used) break;
        used += n;
      }
      return void(fuse_reply_buf(req, buf.data(), used));
    }
    if (off != h.offset) {
      ::seekdir(h.dp, off);
      h.offset = off;
    }
    for (;;) {
      errno = 0;
      struct dirent* d = ::readdir(h.dp);
      if (!d) {
        if (errno) throw Errno{errno};
        break;
      }
      struct stat st {};
      st.st_ino = d->d_ino;
      st.st_mode = static_cast<mode_t>(DTTOIF(d->d_type));
      const size_t n =
          fuse_add_direntry(req, buf.data() + used, size - used, d->d_name, &st, d->d_off);
      if (n > size - used) {
        ::seekdir(h.dp, h.offset);  // did not fit: hand it out next time
        break;
      }
      used += n;
      h.offset = d->d_off;
    }
    fuse_reply_buf(req, buf.data(), used);
  });
}

void op_releasedir(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  serve(req, Op::releasedir, [&] {
    fs_of(req).dirs.drop(&handle_of(fi));
    fuse_reply_err(req, 0);
  });
}

void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int, fuse_file_info*) {
  serve(req, Op::fsyncdir,
        [&] { reply_when_synced(req, Op::fsyncdir, fs_of(req).inodes.get(ino)); });
}

}  // namespace

void add_dir_ops(fuse_lowlevel_ops& ops) {
  ops.mkdir = op_mkdir;
  ops.rmdir = op_rmdir;
  ops.opendir = op_opendir;
  ops.readdir = op_readdir;
  ops.releasedir = op_releasedir;
  ops.fsyncdir = op_fsyncdir;
}

}  // namespace cookiefs::mount
