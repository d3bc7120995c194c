// Taking the database's state into the cache: adoption of a remote version
// (or of a database behind the cache), applying it to the tree, reverting a
// tree torn by a crash, and keeping refused snapshots aside. Part of
// SessionCache; see session_cache.hpp.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

#include "names.hpp"
#include "session_cache.hpp"
#include "session_internal.hpp"

namespace cookiefs::mount {
namespace fs = std::filesystem;

bool SessionCache::adopt(Session& s, const std::string& reason, bool force) {
  wire::FetchSession req;
  req.set_session_id(s.id);
  {
    std::lock_guard lock(s.state_mu);
    if (!force && !s.manifest.applying) req.set_if_newer_than(s.manifest.version);
  }
  wire::FetchReply reply;
  try {
    reply = store_.fetch(req);
  } catch (const RequestError& e) {
    if (e.code() == wire::NOT_FOUND) {
      bool never_committed;
      {
        std::lock_guard lock(s.state_mu);
        never_committed = s.manifest.version == 0 && !s.manifest.applying;
      }
      // Created here (maybe offline) and not committed yet: the commit
      // creates it. Anything else that is gone was deleted remotely.
      if (never_committed) return true;
      s.remote_deleted = true;
      return false;
    }
    set_error(s, "fetch failed: " + wire::ErrorCode_Name(e.code()));
    return false;
  }
  // The database behind what this cache recorded of it (restored from a
  // backup, or a failed-over primary that lost commits): its state wins, as
  // every other host sees it; the cached tree, whose versions may now exist
  // nowhere else, is kept aside.
  std::uint64_t had_version, had_epoch;
  bool behind;
  {
    std::lock_guard lock(s.state_mu);
    had_version = s.manifest.version;
    had_epoch = s.manifest.epoch;
    behind = !s.manifest.applying && had_version > 0 &&
             (reply.info().version() < had_version || reply.info().epoch() < had_epoch);
  }
  if (behind) {
    spdlog::warn(
        "the database holds an older state of a session than this cache (version {} < {} or "
        "epoch {} < {}): adopting the database's state, the cached one kept aside",
        reply.info().version(), had_version, reply.info().epoch(), had_epoch);
    if (reply.not_modified()) {
      wire::FetchSession full;
      full.set_session_id(s.id);
      try {
        reply = store_.fetch(full);
      } catch (const RequestError& e) {
        set_error(s, "fetch failed: " + wire::ErrorCode_Name(e.code()));
        return false;
      }
    }
    // The owner record goes back with the database (note_owner ignores an
    // epoch older than the one known).
    set_owner(s, reply.info().owner(), reply.info().epoch(), true);
  } else {
    note_owner(s, reply.info().owner(), reply.info().epoch());
    if (reply.not_modified()) return true;
  }
  TouchedPaths touched;
  {
    std::unique_lock tree(s.tree_lock);
    const std::uint64_t gen = s.change_gen;
    Snapshot local = take_snapshot(s);
    bool dirty;
    {
      std::lock_guard lock(s.state_mu);
      dirty = !s.manifest.applying && !compute_delta(s.manifest, local).empty();
    }
    if (behind) {
      quarantine(s.id, local, "the database is behind this cache (" + reason + ")");
    } else if (dirty) {
      // Our own landed commits are no conflict: commit() sends the rest.
      bool retry = false;
      if (rebase(s, &reply, retry)) return true;
      quarantine(s.id, local, reason);
    }
    touched = apply(s, reply, local);
    std::lock_guard lock(s.state_mu);
    if (dirty) s.rejected_gen = std::max(s.rejected_gen, gen);
    s.committed_gen = std::max(s.committed_gen, gen);
    s.dirty_bytes = 0;
    s.committed_cv.notify_all();
  }
  ++counters.adopted;
  spdlog::debug("session {} adopted remote version {}", s.id, reply.info().version());
  if (on_adopted) on_adopted(s, touched);
  return true;
}

TouchedPaths SessionCache::apply(Session& s, const wire::FetchReply& reply, const Snapshot& local) {
  Manifest target = manifest_of_reply(reply, true);
  target.applying = true;
  write_manifest(s, target);
  TouchedPaths touched;
  const fs::path base = s.files();
  // Children sort after their parents, so reverse order removes them first.
  for (auto it = local.rbegin(); it != local.rend(); ++it) {
    auto t = target.entries.find(it->first);
    if (t == target.entries.end() || t->second.kind != it->second.entry.kind) {
      disk_.remove_all(base / it->first);
      touched.push_back(it->first);
    }
  }
  const TouchedPaths written = write_entries(disk_, base, reply, target, local,
                                             [this](const fs::path& p) { give_to_mount_owner(p); });
  touched.insert(touched.end(), written.begin(), written.end());
  target.applying = false;
  write_manifest(s, target);
  {
    std::lock_guard lock(s.state_mu);
    s.manifest = target;
  }
  return touched;
}

bool SessionCache::settle_torn(Session& s) {
  std::lock_guard commit_lock(s.commit_mu);
  return !s.torn || revert_torn(s);
}

bool SessionCache::revert_torn(Session& s) {
  Snapshot local;
  {
    std::unique_lock tree(s.tree_lock);
    local = take_snapshot(s);
  }
  std::uint64_t version;
  {
    std::lock_guard lock(s.state_mu);
    version = s.manifest.version;
  }
  wire::FetchReply reply;
  if (version > 0) {
    wire::FetchSession req;
    req.set_session_id(s.id);
    try {
      reply = store_.fetch(req);
    } catch (const RequestError& e) {
      if (e.code() != wire::NOT_FOUND) return false;
      s.remote_deleted = true;  // handled by the next run
      version = 0;
    }
  }
  quarantine(s.id, local,
             "the mount stopped while the kernel was writing pages back (writeback cache): the "
             "uncommitted local tree may be torn; reverted to the committed version");
  TouchedPaths touched;
  {
    std::unique_lock tree(s.tree_lock);
    if (version > 0) {
      note_owner(s, reply.info().owner(), reply.info().epoch());
      touched = apply(s, reply, take_snapshot(s));
    } else {
      for (const auto& name : disk_.list(s.files())) disk_.remove_all(s.files() / name);
    }
    disk_.unlink(s.dir / kPagesInFlight);
    s.pages_in_flight = false;
    s.torn = false;
    std::lock_guard lock(s.state_mu);
    s.committed_gen = std::max(s.committed_gen, s.change_gen.load());
    s.dirty_bytes = 0;
    s.committed_cv.notify_all();
  }
  spdlog::warn(
      "a session's uncommitted changes were reverted after an unexpected stop (kept in "
      "quarantine)");
  if (on_adopted && !touched.empty()) on_adopted(s, touched);
  return true;
}

void SessionCache::quarantine(const std::string& id, const Snapshot& snap,
                              const std::string& reason) {
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(time_.wall().time_since_epoch())
          .count();
  const fs::path dir = root_ / "quarantine" / (id + "." + std::to_string(ms) + "." + random_hex());
  // Built under a name no reader looks at, then renamed: a quarantine entry
  // is whole (files and reason) from the moment it appears.
  const fs::path incoming = root_ / "quarantine" / (".incoming-" + random_hex());
  try {
    disk_.make_dirs(incoming / "files");
    for (const auto& [path, f] : snap) {
      const fs::path p = incoming / "files" / path;
      if (f.entry.kind == wire::DIRECTORY) {
        disk_.make_dirs(p);
      } else if (f.entry.kind == wire::SYMLINK) {
        disk_.make_dirs(p.parent_path());
        disk_.symlink(f.content, p);
      } else {
        disk_.make_dirs(p.parent_path());
        // Synced: a refused snapshot may be the only copy of those cookies.
        disk_.write_durably(p, f.content);
        disk_.chmod(p, f.entry.mode & kModeBits);
      }
    }
    disk_.write_durably(incoming / "reason", reason + "\n");
    disk_.rename(incoming, dir);
    disk_.sync_dir(root_ / "quarantine");
    ++counters.quarantined;
    spdlog::warn("kept a session snapshot in quarantine ({})", reason);
    spdlog::debug("quarantined session {} in {}", id, dir.string());
  } catch (const std::system_error& e) {
    disk_.remove_all(incoming);
    spdlog::error("quarantine failed: {}", e.code().message());
  } catch (const std::exception& e) {
    disk_.remove_all(incoming);
    spdlog::error("quarantine failed: {}", e.what());
  }
}

}  // namespace cookiefs::mount
