// CacheDisk: every file-system call the sessions side makes in the mount's
// cache dir (manifests, owner records, fetched trees, snapshots, quarantine),
// as an interface in the manner of LevelDB's Env, so unit tests can inject
// faults: a disk that fails writes (ENOSPC, EIO), or that loses what was not
// synced when the host "crashes". PosixDisk is the real one.
//
// The FUSE handlers' own I/O on the backing files (the application's reads
// and writes, passthrough) does not go through here: that is the kernel side.
//
// Errors: every call but remove_all/unlink throws std::system_error carrying
// the errno (so ENOSPC stays ENOSPC up to the FUSE boundary).
//
// Thread-safety: PosixDisk has no state of its own; callers serialise access
// to the same path (the session locks do).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "cookiefs.pb.h"

namespace cookiefs::mount {

// One entry of a session tree as read for a snapshot.
struct TreeEntry {
  std::string path;  // relative to the tree's base, '/'-separated
  wire::FileKind kind = wire::REGULAR;
  std::uint32_t mode = 0;
  std::int64_t mtime_ns = 0;
  std::string content;  // file data or link target; empty for directories
};

class CacheDisk {
 public:
  using path = std::filesystem::path;
  virtual ~CacheDisk() = default;

  virtual void make_dirs(const path& p) = 0;
  // mkdir(p, mode); an existing directory is fine when exist_ok.
  virtual void make_dir(const path& p, std::uint32_t mode, bool exist_ok) = 0;
  virtual void make_file(const path& p) = 0;         // new and empty (O_EXCL), 0600
  virtual std::string read_file(const path& p) = 0;  // never follows a symlink
  // Writes in place (the inode stays, so open handles stay valid); no fsync.
  virtual void write_file(const path& p, const std::string& content, std::uint32_t mode) = 0;
  // Writes a temporary file, fsyncs it and renames it over p.
  virtual void write_durably(const path& p, const std::string& content) = 0;
  virtual void symlink(const std::string& target, const path& p) = 0;  // replaces p
  virtual void chmod(const path& p, std::uint32_t mode) = 0;
  virtual void chown(const path& p, int uid, int gid) = 0;  // lchown; -1 keeps
  virtual void rename(const path& from, const path& to) = 0;
  virtual void sync_dir(const path& dir) = 0;           // fsync: its entries survive a crash
  virtual void remove_all(const path& p) noexcept = 0;  // best effort
  virtual void unlink(const path& p) noexcept = 0;      // best effort
  virtual bool exists(const path& p) = 0;
  virtual bool is_empty_dir(const path& p) = 0;
  virtual std::vector<std::string> list(const path& dir) = 0;  // names
  // Every directory, regular file and symlink under base, parents first.
  virtual std::vector<TreeEntry> read_tree(const path& base) = 0;
  virtual path canonical(const path& p) = 0;
  // Takes an exclusive flock on p (created 0600) and keeps it until the
  // process ends; false when another process holds it.
  virtual bool lock(const path& p) = 0;
};

class PosixDisk : public CacheDisk {
 public:
  ~PosixDisk() override;
  void make_dirs(const path& p) override;
  void make_dir(const path& p, std::uint32_t mode, bool exist_ok) override;
  void make_file(const path& p) override;
  std::string read_file(const path& p) override;
  void write_file(const path& p, const std::string& content, std::uint32_t mode) override;
  void write_durably(const path& p, const std::string& content) override;
  void symlink(const std::string& target, const path& p) override;
  void chmod(const path& p, std::uint32_t mode) override;
  void chown(const path& p, int uid, int gid) override;
  void rename(const path& from, const path& to) override;
  void sync_dir(const path& dir) override;
  void remove_all(const path& p) noexcept override;
  void unlink(const path& p) noexcept override;
  bool exists(const path& p) override;
  bool is_empty_dir(const path& p) override;
  std::vector<std::string> list(const path& dir) override;
  std::vector<TreeEntry> read_tree(const path& base) override;
  path canonical(const path& p) override;
  bool lock(const path& p) override;

 private:
  int lock_fd_ = -1;
};

}  // namespace cookiefs::mount
