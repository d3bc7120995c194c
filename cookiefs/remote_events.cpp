// Event handling and kernel invalidation; see remote_events.hpp.
#include "remote_events.hpp"

#include <fcntl.h>
#include <sys/stat.h>

#include <filesystem>
#include <set>

namespace cookiefs::mount {

RemoteEvents::RemoteEvents(Filesystem& fs) : fs_(fs) {}

void RemoteEvents::install() {
  fs_.client.on_event([this](const wire::Event& ev) {
    if (fs_.metrics) fs_.metrics->events->Increment();
    if (ev.has_changed()) {
      fs_.sessions.remote_changed(ev.changed().session_id(), ev.changed().version(),
                                  ev.changed().writer());
    } else if (ev.has_deleted()) {
      fs_.sessions.remote_deleted(ev.deleted().session_id());
    } else if (ev.has_owner_changed()) {
      const auto& o = ev.owner_changed();
      fs_.sessions.owner_changed(o.session_id(), o.owner(), o.epoch());
    } else if (ev.has_drain()) {
      fs_.sessions.drain_requested(ev.drain().session_id(), ev.drain().epoch(),
                                   ev.drain().deadline_ms());
    }
  });
  fs_.client.on_connection_state([this](bool connected) {
    if (fs_.metrics) fs_.metrics->storage_connected->Set(connected ? 1 : 0);
    spdlog::info("storage service {}", connected ? "connected" : "disconnected");
    // Events may have been missed while away: ask for newer versions.
    if (connected) fs_.sessions.reconnected();
  });
  fs_.sessions.on_adopted = [this](Session& s, const TouchedPaths& p) { invalidate(s, p); };
  fs_.sessions.on_vanished = [this](const std::string& id) { vanished(id); };
}

void RemoteEvents::invalidate(Session& s, const TouchedPaths& paths) {
  SessionLimits::forget_usage(s);  // the tree changed behind the handlers
  if (!fs_.se) return;
  namespace fsys = std::filesystem;
  const fsys::path base = s.files();
  std::set<fuse_ino_t> done;
  for (const auto& rel : paths) {
    const fsys::path p(rel);
    struct stat st;
    // The parent's cached name (positive or negative) of this path.
    if (::lstat((base / p.parent_path()).c_str(), &st) == 0) {
      if (fuse_ino_t parent = fs_.inodes.find(st.st_dev, st.st_ino)) {
        const std::string name = p.filename().string();
        fuse_lowlevel_notify_inval_entry(fs_.se, parent, name.c_str(), name.size());
        if (done.insert(parent).second) fuse_lowlevel_notify_inval_inode(fs_.se, parent, 0, 0);
      }
    }
  }
  // Contents rewritten in place keep their inodes: drop their pages and attributes.
  for (fuse_ino_t node : fs_.inodes.of_session(&s)) {
    if (done.insert(node).second) fuse_lowlevel_notify_inval_inode(fs_.se, node, 0, 0);
  }
}

void RemoteEvents::vanished(const std::string& id) {
  if (fs_.se) fuse_lowlevel_notify_inval_entry(fs_.se, FUSE_ROOT_ID, id.c_str(), id.size());
}

}  // namespace cookiefs::mount
