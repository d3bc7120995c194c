// Fetching a session this host does not hold (a lookup of an unknown id, a
// takeover's prefetch): staged beside the cache and renamed into place.
// Part of SessionCache; see session_cache.hpp.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <future>

#include "names.hpp"
#include "session_cache.hpp"
#include "session_internal.hpp"

namespace cookiefs::mount {
namespace fs = std::filesystem;

namespace {

// An empty file in a staging dir, renamed over the fetched session's first file.
constexpr const char* kStagingBlank = "blank";

// A fetch's staging dir until it is renamed into place; removed on failure so
// a failed lookup leaves nothing behind until the next start-up.
struct StagingDir {
  CacheDisk& disk;
  fs::path path;
  bool kept = false;
  StagingDir(CacheDisk& d, fs::path p) : disk(d), path(std::move(p)) {}
  ~StagingDir() {
    if (!kept) disk.remove_all(path);
  }
  StagingDir(const StagingDir&) = delete;
  StagingDir& operator=(const StagingDir&) = delete;
};

}  // namespace

// Every inode a fetch writes, made while its request is in flight.
void SessionCache::prepare_staging(const Session& staging) const {
  disk_.make_dir(staging.dir, 0700, false);
  disk_.make_dir(staging.files(), 0755, false);
  give_to_mount_owner(staging.files());
  disk_.make_file(staging.dir / "manifest");
  disk_.make_file(staging.dir / kStagingBlank);
  // save_owner() writes owner.tmp, then renames it: it now only truncates it.
  disk_.make_file(staging.dir / "owner.tmp");
}

std::shared_ptr<Session> SessionCache::get_or_fetch(const std::string& id) {
  if (auto s = find(id)) {
    // A tree a crash may have torn is not served before its revert (which
    // the queue may be doing already): an application reading it first
    // would see files that the revert then replaces or removes.
    if (s->torn && !settle_torn(*s)) throw Errno{EIO};
    return s;
  }
  // Subscribed before the fetch: a commit landing between the fetch's answer
  // and the session's insertion below would otherwise never be announced, and
  // this mount would serve the older version until the next reconnect.
  store_.subscribe({id});
  const auto unsubscribe_unless_held = [&] {
    std::lock_guard lock(mu_);
    if (!sessions_.contains(id)) store_.unsubscribe({id});
  };
  wire::FetchSession fetch;
  fetch.set_session_id(id);
  // Offline, a lookup must not hang for the client's whole retry deadline:
  // wait only as long as a (re)connect normally takes.
  const auto timeout = store_.connected() ? std::chrono::milliseconds(0) : cfg_.offline_wait;
  // Pipelined: the request is on its way before the staging dir is made, as
  // creating an inode costs a few hundred microseconds on the cache's ext4.
  // Written beside the cache under a name that is not a valid id, then renamed
  // into place: a crash never leaves a half-fetched session that looks dirty.
  // Nothing is fsync'ed: PostgreSQL has the data, a process crash loses no
  // page-cache write, and a leftover staging dir is removed at start-up.
  auto answered = std::make_shared<std::promise<StorageClient::Result>>();
  auto answer = answered->get_future();
  store_.fetch_async(
      fetch, [answered](StorageClient::Result r) { answered->set_value(std::move(r)); }, timeout);
  fs::path spare;
  {
    std::lock_guard lock(mu_);
    spare = std::exchange(spare_staging_, fs::path());
  }
  StagingDir tmp(disk_, spare.empty() ? root_ / "sessions" / (".fetch-" + random_hex()) : spare);
  Session staging(id, tmp.path);
  std::string unprepared;
  try {
    if (spare.empty()) prepare_staging(staging);
  } catch (const std::exception& e) {
    unprepared = e.what();
  }
  StorageClient::Result result = answer.get();
  if (result.has_error || !result.reply.has_fetch_reply()) {
    // Unused: kept for the next fetch, so looking up ids that do not exist
    // (each mkdir of a new session does) costs no inode.
    if (unprepared.empty()) {
      std::lock_guard lock(mu_);
      if (spare_staging_.empty()) {
        spare_staging_ = tmp.path;
        tmp.kept = true;
      }
    }
  }
  if (result.has_error) {
    unsubscribe_unless_held();
    if (result.error.code() == wire::NOT_FOUND) throw Errno{ENOENT};
    if (transient(result.error.code())) throw Errno{kUnreachable};
    spdlog::warn("fetching a session failed: {}", wire::ErrorCode_Name(result.error.code()));
    throw Errno{EIO};
  }
  if (!result.reply.has_fetch_reply()) {
    unsubscribe_unless_held();
    throw Errno{EIO};
  }
  const wire::FetchReply& reply = result.reply.fetch_reply();
  try {
    if (!unprepared.empty()) throw std::runtime_error(unprepared);
    staging.manifest = manifest_of_reply(reply, true);
    // The first top-level regular file takes the blank prepared for it.
    const auto first = std::find_if(
        staging.manifest.entries.begin(), staging.manifest.entries.end(), [](const auto& e) {
          return e.second.kind == wire::REGULAR && e.first.find('/') == std::string::npos;
        });
    const fs::path blank = staging.dir / kStagingBlank;
    if (first == staging.manifest.entries.end()) {
      disk_.unlink(blank);
    } else {
      disk_.rename(blank, staging.files() / first->first);
    }
    write_entries(disk_, staging.files(), reply, staging.manifest, {},
                  [this](const fs::path& p) { give_to_mount_owner(p); });
    disk_.write_file(staging.dir / "manifest", encode_manifest(staging.manifest), 0600);
    staging.owner_known = true;
    staging.owner = reply.info().owner();
    staging.owner_epoch = reply.info().epoch();
    save_owner(staging);
  } catch (const std::exception& e) {
    unsubscribe_unless_held();
    // what() of a filesystem error names paths, which name the session.
    const auto* sys = dynamic_cast<const std::system_error*>(&e);
    spdlog::error("writing a fetched session into the cache failed: {}",
                  sys ? sys->code().message() : std::string("internal error"));
    spdlog::debug("session {}: {}", id, e.what());
    throw Errno{EIO};
  }
  auto s = std::make_shared<Session>(id, root_ / "sessions" / id);
  s->manifest = std::move(staging.manifest);
  s->owner_known = true;
  s->owner = staging.owner;
  s->owner_epoch = staging.owner_epoch;
  std::lock_guard lock(mu_);
  if (auto it = sessions_.find(id); it != sessions_.end()) return it->second;
  disk_.rename(tmp.path, s->dir);
  tmp.kept = true;
  sessions_.emplace(id, s);
  // Events that arrived before the emplace found no session and were dropped:
  // ask once whether a newer version landed meanwhile. Not urgent: that window
  // is a fraction of a millisecond, and an urgent check would snapshot the
  // session (exclusive tree lock) while the lookup's caller starts reading it.
  s->check_remote = true;
  queue_.changed(id);
  return s;
}

}  // namespace cookiefs::mount
