// SpareFiles: backing files of unlinked regular files, kept for reuse by the
// next create instead of being deleted.
//
// Why: SQLite creates and deletes its rollback journal in every transaction,
// so every cookie change costs the cache file system an inode allocation and
// a deletion. On ext4 without a journal (this project's VMs) the allocator
// skips every inode deleted in the last ~30 s, and with thousands of journals
// a second that scan was half of the daemon's CPU time. A renamed spare costs
// two directory entries and a truncate instead.
//
// Lifecycle of a spare: unlink renames the backing file into <cache>/spare/
// and marks its Inode (InodeTable::mark_spare); it becomes reusable only when
// the kernel forgets that inode (then no descriptor or page of the old file
// is in use) and is emptied then; create renames it into place
// (RENAME_NOREPLACE) and gives it fresh ownership, mode and times. Anything unexpected (a rename
// failing, a spare gone) falls back to a plain unlink or create. The spare
// dir is emptied at start-up.
//
// Thread-safety: open() before serving; then every method may be called from
// any thread (one mutex; the spare dir's descriptor is fixed by open()).
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstddef>
#include <mutex>
#include <string>
#include <vector>

namespace cookiefs::mount {

class InodeTable;

class SpareFiles {
 public:
  SpareFiles() = default;
  ~SpareFiles();
  SpareFiles(const SpareFiles&) = delete;
  SpareFiles& operator=(const SpareFiles&) = delete;

  // Creates (or empties) `dir`; must be on the cache dir's file system.
  // Without it (an error), unlink and create work as without spares.
  void open(const std::string& dir, InodeTable& inodes);

  // Instead of unlinking `name` in `dir_fd` (a regular file `st` with one
  // link): renames it into the spare dir. False: nothing done, unlink it.
  bool keep(int dir_fd, const char* name, const struct stat& st);
  // The kernel forgot the inode of spare `spare`: it may be reused.
  void released(const std::string& spare);
  // A reusable (empty) spare renamed to `name` in `dir_fd` and opened with
  // `flags` (O_CREAT/O_EXCL/O_TRUNC are implied and dropped), with mode `mode`
  // exactly (the kernel applied the caller's umask; the daemon's own is not
  // applied on top), owned by this process
  // and with current times. -1 when there is none (or it could not be made
  // ready): create the file as usual. errno EEXIST when `name` exists.
  int take(int dir_fd, const char* name, int flags, mode_t mode);

  std::size_t reusable();  // for tests and status

 private:
  static constexpr std::size_t kMaxSpares = 64;  // pending + reusable
  std::mutex mu_;
  int dir_fd_ = -1;
  InodeTable* inodes_ = nullptr;
  std::vector<std::string> reusable_;
  std::size_t pending_ = 0;
  std::uint64_t next_ = 0;
};

}  // namespace cookiefs::mount
