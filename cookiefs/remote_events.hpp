// RemoteEvents: turns what the storage service pushes (SessionChanged,
// SessionDeleted, reconnects) into session-cache work, and the session
// cache's adoptions into kernel cache invalidations
// (fuse_lowlevel_notify_inval_inode / _entry).
//
// Thread-safety: the event handlers run on the storage client's I/O thread
// and only flag and queue; invalidations run on commit-queue threads with no
// session lock held.
#pragma once

#include "filesystem.hpp"

namespace cookiefs::mount {

class RemoteEvents {
 public:
  explicit RemoteEvents(Filesystem& fs);
  // Installs the handlers; call before StorageClient::start().
  void install();

 private:
  void invalidate(Session& s, const TouchedPaths& paths);
  void vanished(const std::string& id);
  Filesystem& fs_;
};

}  // namespace cookiefs::mount
