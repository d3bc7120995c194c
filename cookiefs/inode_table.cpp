// Inode bookkeeping; see inode_table.hpp.
#include "inode_table.hpp"

#include <fcntl.h>
#include <unistd.h>

namespace cookiefs::mount {

Inode::~Inode() {
  if (fd >= 0) ::close(fd);
  if (const int io = io_fd.load(); io >= 0) ::close(io);
}

int Inode::io() {
  if (fd < 0) return -1;
  int have = io_fd.load(std::memory_order_acquire);
  if (have >= 0) return have;
  const std::string path = proc_path();
  // No O_NOFOLLOW: /proc/self/fd/N is itself a link (to the backing file).
  int opened = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (opened < 0 && (errno == EACCES || errno == EPERM)) {
    opened = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  }
  if (opened < 0) return -1;
  if (!io_fd.compare_exchange_strong(have, opened)) {
    ::close(opened);  // another thread was first
    return have;
  }
  return opened;
}

InodeTable::InodeTable(std::vector<std::string> status_names)
    : status_names_(std::move(status_names)) {
  ino_t ino = 3;
  for (const auto& n : status_names_) {
    auto i = std::make_unique<Inode>(NodeKind::status_file, -1, 0, ino++);
    i->status_name = n;
    status_files_.push_back(std::move(i));
  }
}

Inode* InodeTable::status_file(const std::string& name) {
  for (auto& i : status_files_) {
    if (i->status_name == name) return i.get();
  }
  return nullptr;
}

Inode& InodeTable::remember(int fd, const struct stat& st, NodeKind kind,
                            std::shared_ptr<Session> session, int depth) {
  std::lock_guard lock(mu_);
  auto& slot = inodes_[{st.st_dev, st.st_ino}];
  if (slot) {
    ::close(fd);
    slot->depth = depth;  // a rename may have moved it
  } else {
    slot = std::make_unique<Inode>(kind, fd, st.st_dev, st.st_ino);
    slot->session = std::move(session);
    slot->depth = depth;
    slot->regular = S_ISREG(st.st_mode);
  }
  ++slot->nlookup;
  return *slot;
}

void InodeTable::forget(fuse_ino_t node, std::uint64_t n) {
  Inode& i = get(node);
  if (!i.is_real() && !i.transient) return;
  std::unique_ptr<Inode> dead;  // closed after the lock is dropped
  {
    std::lock_guard lock(mu_);
    i.nlookup = i.nlookup > n ? i.nlookup - n : 0;
    if (i.nlookup != 0) return;
    if (auto d = detached_.find(&i); d != detached_.end()) {
      dead = std::move(d->second);
      detached_.erase(d);
    } else if (auto it = inodes_.find({i.dev, i.ino});
               it != inodes_.end() && it->second.get() == &i) {
      dead = std::move(it->second);
      inodes_.erase(it);
    }
  }
  if (!dead) return;
  std::string spare = std::move(dead->spare);
  dead.reset();  // its descriptors are closed before the file is reused
  if (!spare.empty() && on_spare_released) on_spare_released(spare);
}

bool InodeTable::mark_spare(dev_t dev, ino_t ino, const std::string& spare) {
  std::lock_guard lock(mu_);
  auto it = inodes_.find({dev, ino});
  if (it == inodes_.end()) return false;
  for (const auto& [ptr, d] : detached_) {
    if (d->dev == dev && d->ino == ino) return false;
  }
  it->second->spare = spare;
  it->second->unlinked = !spare.empty();
  return true;
}

Inode& InodeTable::transient_status(const std::string& name, std::string text) {
  std::lock_guard lock(mu_);
  // Inode numbers above the fixed virtual ones and apart from backing files.
  auto i = std::make_unique<Inode>(NodeKind::status_file, -1, 0, (1ull << 40) + next_transient_++);
  i->status_name = name;
  i->status_text = std::move(text);
  i->transient = true;
  i->nlookup = 1;
  Inode& out = *i;
  detached_.emplace(&out, std::move(i));
  return out;
}

void InodeTable::retire(Inode& i) {
  if (!i.is_real()) return;
  std::lock_guard lock(mu_);
  auto it = inodes_.find({i.dev, i.ino});
  if (it == inodes_.end() || it->second.get() != &i) return;  // retired already
  detached_.emplace(&i, std::move(it->second));
  inodes_.erase(it);
}

fuse_ino_t InodeTable::find(dev_t dev, ino_t ino) {
  std::lock_guard lock(mu_);
  auto it = inodes_.find({dev, ino});
  return it == inodes_.end() ? 0 : node_id(*it->second);
}

std::vector<fuse_ino_t> InodeTable::of_session(const Session* s, bool regular_only) {
  std::lock_guard lock(mu_);
  std::vector<fuse_ino_t> out;
  for (auto& [key, i] : inodes_) {
    if (i->session.get() == s && (i->regular || !regular_only)) out.push_back(node_id(*i));
  }
  return out;
}

std::size_t InodeTable::size() {
  std::lock_guard lock(mu_);
  return inodes_.size();
}

}  // namespace cookiefs::mount
