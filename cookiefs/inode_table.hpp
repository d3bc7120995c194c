// InodeTable: the kernel-visible inodes of the mount. A FUSE node id is the
// address of an Inode. Real inodes (session roots and everything below) own
// an O_PATH descriptor of their backing file in the cache dir and are keyed by
// its (dev, ino), so a name looked up twice is one inode. The root, the
// .cookiefs directory and its status files are virtual and live forever.
//
// Thread-safety: all methods may be called from any thread. The table's mutex
// is a leaf lock: nothing else is locked while it is held. An Inode stays
// valid while the kernel holds a lookup count on it (until forget), so FUSE
// handlers may use the Inode* of their request without the lock.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>

namespace cookiefs::mount {

struct Session;

enum class NodeKind { root, status_dir, status_file, session_root, entry };

struct Inode {
  Inode(NodeKind k, int fd_, dev_t d, ino_t i) : kind(k), fd(fd_), dev(d), ino(i) {}
  ~Inode();
  Inode(const Inode&) = delete;
  Inode& operator=(const Inode&) = delete;

  const NodeKind kind;
  const int fd;  // O_PATH; -1 for virtual inodes
  const dev_t dev;
  const ino_t ino;
  std::atomic<int> io_fd{-1};
  std::shared_ptr<Session> session;  // null for virtual inodes
  int depth = 0;                     // path components below the session root
  bool regular = false;              // a regular file (set once, at creation)
  std::string spare;                 // unlinked, kept as this spare (SpareFiles); guarded
  // Set with `spare`: the file is unlinked although its backing file still
  // has a link (in the spare dir), so its attributes say st_nlink 0.
  std::atomic<bool> unlinked{false};
  // Held by a write or truncate that may change the file's size, from the
  // size it reads to the change: the session's usage (SessionLimits) then
  // counts each growth once, however many WRITEs the kernel sends at once.
  // Taken inside a Mutation (tree_lock shared); nothing is locked under it.
  std::mutex size_mu;
  std::string status_name;  // status files only
  // Status files of a writeback-cache mount: rendered at lookup into an inode
  // of their own (the kernel keeps a regular file's size, so each lookup must
  // be a new inode), freed at forget.
  std::string status_text;
  bool transient = false;
  std::uint64_t nlookup = 0;  // guarded by the table's mutex

  bool is_real() const { return fd >= 0; }
  // A read-write descriptor of the backing file for the kernel's page-cache
  // reads and write-backs (writeback-cache mounts have no per-open handles),
  // opened on first use and kept until the inode is dropped. -1 with errno
  // when the backing file cannot be opened.
  int io();
  // "/proc/self/fd/N": reopens the O_PATH descriptor with real access modes.
  std::string proc_path() const { return "/proc/self/fd/" + std::to_string(fd); }
};

class InodeTable {
 public:
  explicit InodeTable(std::vector<std::string> status_names);

  Inode& root() { return root_; }
  Inode& status_dir() { return status_dir_; }
  Inode* status_file(const std::string& name);
  const std::vector<std::string>& status_names() const { return status_names_; }

  Inode& get(fuse_ino_t node) {
    return node == FUSE_ROOT_ID ? root_ : *reinterpret_cast<Inode*>(node);
  }
  static fuse_ino_t node_id(Inode& i) { return reinterpret_cast<fuse_ino_t>(&i); }
  fuse_ino_t id_of(Inode& i) { return &i == &root_ ? FUSE_ROOT_ID : node_id(i); }

  // Adds one lookup to the inode of `st`, creating it from `fd` (taken over;
  // closed when an inode already exists).
  Inode& remember(int fd, const struct stat& st, NodeKind kind, std::shared_ptr<Session> session,
                  int depth);
  void forget(fuse_ino_t node, std::uint64_t n);
  // A status file rendered now, with one lookup (see Inode::status_text).
  Inode& transient_status(const std::string& name, std::string text);
  // The next lookup of `i`'s backing file gets a new inode (and node id):
  // the kernel trusts its own size of a writeback-cached file, so a file
  // rewritten behind its back must come back as a new inode. `i` lives on
  // until the kernel forgets it.
  void retire(Inode& i);

  // Marks the only inode of backing file (dev, ino) as kept in SpareFiles
  // under `spare` ("" unmarks); when the kernel forgets it,
  // on_spare_released(spare) runs. False when no inode, or more than one,
  // refers to that file (then it is not kept).
  bool mark_spare(dev_t dev, ino_t ino, const std::string& spare);
  std::function<void(const std::string&)> on_spare_released;  // set before serving

  // Node id of a cached inode, or 0.
  fuse_ino_t find(dev_t dev, ino_t ino);
  // Node ids of every inode of a session (for invalidation), or only of its
  // regular files (the only ones with pages to write back).
  std::vector<fuse_ino_t> of_session(const Session* s, bool regular_only = false);
  std::size_t size();

 private:
  std::mutex mu_;
  std::map<std::pair<dev_t, ino_t>, std::unique_ptr<Inode>> inodes_;
  // Retired and transient inodes, until forgotten.
  std::map<const Inode*, std::unique_ptr<Inode>> detached_;
  ino_t next_transient_ = 1;
  std::vector<std::string> status_names_;
  Inode root_{NodeKind::root, -1, 0, 1};
  Inode status_dir_{NodeKind::status_dir, -1, 0, 2};
  std::vector<std::unique_ptr<Inode>> status_files_;
};

}  // namespace cookiefs::mount
