// SessionCache: the sessions this mount holds, as plain files under
// <cache-dir>/sessions/<id>/files plus a manifest of what PostgreSQL has, and
// every transition between the two: create (mkdir), fetch (lookup of an
// unknown id), snapshot + commit, adoption of a remote version, quarantine of
// a rejected snapshot, delete (rmdir), and recovery at start-up.
//
// Affinity (ownership.cpp): each session has one owner engine and an epoch;
// this mount writes a session only while it owns it (or, with `affinity:
// auto`, after claiming an unowned one). Owner changes, drain requests and
// hand-off readiness arrive as storage events and are settled by process().
//
// Lock order (outer first): Session::claim_mu → Session::commit_mu →
// Session::tree_lock → Session::state_mu → SessionCache::mu_. InodeTable's lock is a leaf and is
// never held while taking any of these; so is Session::owner_file_mu.
//
// File I/O: never under state_mu (taken by every FUSE write's access check)
// and, but for create()'s mkdir, never under mu_. tree_lock is held
// exclusive by snapshots and adoption on purpose (the tree is one instant);
// commit_mu serialises the manifest's writers, which write it unlocked. Kernel notifications are
// sent with no session lock held (the kernel may be waiting on a request that needs one).
//
// Thread-safety: every public method may be called from any thread except the
// storage client's I/O thread (they may block on the network).
#pragma once

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <vector>

#include "cache_disk.hpp"
#include "commit_queue.hpp"
#include "manifest.hpp"
#include "mount_config.hpp"
#include "session_store.hpp"
#include "time_source.hpp"

namespace cookiefs::mount {

// An error for the kernel: converted to -errno at the FUSE boundary.
struct Errno {
  int code;
};

// get_or_fetch(): the storage service did not answer within offline_wait.
// Lookups answer EAGAIN, never ENOENT (the id may exist; ask again later).
inline constexpr int kUnreachable = EHOSTUNREACH;

struct Session {
  Session(std::string id_, std::filesystem::path dir_) : id(std::move(id_)), dir(std::move(dir_)) {}
  const std::string id;
  const std::filesystem::path dir;  // <cache-dir>/sessions/<id>
  std::filesystem::path files() const { return dir / "files"; }

  // Held shared by every mutating FUSE request for the duration of its
  // syscalls, exclusive by snapshots and remote adoption: a snapshot is then
  // one instant of the application's view.
  std::shared_mutex tree_lock;
  // Serialises commit/adopt/delete of this session (one in flight).
  std::mutex commit_mu;
  // Counts mutations; bumped under tree_lock (shared) after each one.
  std::atomic<std::uint64_t> change_gen{0};
  std::atomic<std::int64_t> bytes{0};  // approximate between snapshots
  std::atomic<std::uint64_t> dirty_bytes{0};
  std::atomic<std::uint64_t> remote_version{0};  // highest version announced by events
  std::atomic<bool> remote_deleted{false};
  std::atomic<bool> check_remote{false};  // reconnected: ask for newer versions
  // Writeback cache: the kernel has written pages back since the last
  // snapshot at rest, so the tree may be torn until the next one; mirrored by
  // the file <dir>/pages-in-flight, which survives a crash of the daemon.
  std::atomic<bool> pages_in_flight{false};
  // Found that file at start-up: the tree is reverted to the committed
  // version before anything else, and never served before (written under
  // commit_mu).
  std::atomic<bool> torn{false};

  std::mutex state_mu;  // guards the fields below
  std::condition_variable committed_cv;
  Manifest manifest;
  std::uint64_t committed_gen = 0;
  std::uint64_t rejected_gen = 0;  // changes up to this gen were quarantined
  std::string last_error;
  bool deleted = false;
  std::optional<wire::CommitSession> unsettled;  // sent, outcome unknown
  std::uint64_t unsettled_gen = 0;

  // Ownership as last learned from the storage service (events, fetches,
  // assign replies); persisted in <dir>/owner. Unknown = never learned.
  bool owner_known = false;
  std::string owner;  // "" = unowned
  std::uint64_t owner_epoch = 0;
  // Drained or released: no writes under this epoch until `retired_until`
  // or until the owner epoch moves past it.
  std::uint64_t retired_epoch = 0;
  std::chrono::steady_clock::time_point retired_until{};
  std::uint64_t drain_epoch = 0;  // a drain to answer (DrainDone)
  std::uint32_t drain_deadline_ms = 0;
  std::uint64_t ready_epoch = 0;  // became owner: prefetch, then SessionReady

  std::uint64_t owner_seq = 0;  // bumped (under state_mu) with each owner change

  std::mutex claim_mu;  // one auto-claim at a time
  // Serialises writes of the owner file (a leaf: no other lock is taken
  // under it, and state_mu is never held while taking it).
  std::mutex owner_file_mu;
  std::uint64_t owner_written_seq = 0;  // guarded by owner_file_mu

  // ---- Limit bookkeeping: read and written only by SessionLimits ----------
  // (session_limits.hpp). The tree's bytes and entries as the storage
  // service counts them, kept by the FUSE handlers; -1 = unknown (loaded,
  // fetched or adopted since), counted from the tree on the next mutation.
  std::atomic<std::int64_t> usage_bytes{-1};
  std::atomic<std::int64_t> usage_entries{-1};
  // ---- end of limit bookkeeping -------------------------------------------
};

// What a step of a session's work says comes next (SessionCache::process).
enum class Outcome {
  committed,  // done: landed, nothing to commit, or kept aside for good
  retry,      // the service could not be asked, or the tree kept changing
  rebase,     // our own commit landed before a crash cut off its manifest
  adopt,      // refused (fenced, conflict): take the database's state
  gone,       // deleted remotely: the next run drops it
};

// What this mount may do with a session's tree.
enum class Access { writable, claimable, read_only };

// A pending owner change or drain, noted by the event thread.
struct OwnerNote {
  std::string owner;
  std::uint64_t epoch = 0;
};
struct DrainNote {
  std::uint64_t epoch = 0;
  std::uint32_t deadline_ms = 0;
};

// Paths (session-relative) that a remote adoption touched; "" is the session root.
using TouchedPaths = std::vector<std::string>;

struct CacheCounters {
  std::atomic<std::uint64_t> commits_ok{0};
  std::atomic<std::uint64_t> commits_failed{0};
  std::atomic<std::uint64_t> commits_rejected{0};
  std::atomic<std::uint64_t> adopted{0};
  std::atomic<std::uint64_t> quarantined{0};
  std::atomic<std::uint64_t> fenced{0};         // commits rejected for a stale epoch / not owner
  std::atomic<std::uint64_t> work_failures{0};  // process() steps that threw (cache-dir I/O)
};

class SessionCache {
 public:
  // The three seams: the storage service, the cache dir's disk and the
  // clocks (real ones in the daemon, fakes with injected faults in tests).
  SessionCache(const MountConfig& cfg, SessionStore& store, CommitQueue& queue, CacheDisk& disk,
               const TimeSource& time);
  ~SessionCache();

  // Creates the cache layout and takes its flock (throws std::runtime_error
  // "cache dir in use" when another daemon holds it). Loads cached sessions.
  void open();
  // After the client started: subscribe and queue recovery of every session.
  void recover();

  std::shared_ptr<Session> find(const std::string& id) const;
  // find(), else fetch from storage. Throws Errno (ENOENT, kUnreachable, EIO).
  std::shared_ptr<Session> get_or_fetch(const std::string& id);
  // mkdir at the root. Throws Errno (EEXIST, EIO, ENOSPC; EAGAIN when the
  // service is unreachable and cannot say whether the id exists elsewhere).
  std::shared_ptr<Session> create(const std::string& id);
  // rmdir at the root. Throws Errno (ENOENT, ENOTEMPTY, EIO).
  void remove(const std::string& id);
  std::vector<std::shared_ptr<Session>> list() const;
  // A lookup or mkdir refused for an unreachable service: logged once per outage.
  void note_offline_refusal();

  // After a mutation, with tree_lock still held shared.
  void note_change(Session& s);
  // Writeback cache: before a write-back lands in the tree (tree_lock held
  // shared). Throws Errno(EIO) when the mark cannot be made.
  void note_write_back(Session& s);
  // fsync: waits until every change so far is in PostgreSQL. Throws Errno(EIO).
  void sync(Session& s);

  // Storage events (any thread; only flags and queues).
  void remote_changed(const std::string& id, std::uint64_t version, const std::string& writer);
  void remote_deleted(const std::string& id);
  void reconnected();

  void owner_changed(const std::string& id, const std::string& owner, std::uint64_t epoch);
  void drain_requested(const std::string& id, std::uint64_t epoch, std::uint32_t deadline_ms);

  // Before a mutation, with no session lock held: returns when this mount may
  // write `s` (claiming it first under `affinity: auto`). Throws Errno(EROFS).
  void ensure_writable(Session& s);
  Access access(Session& s);                     // takes state_mu
  bool writable_locked(const Session& s) const;  // state_mu held
  bool owned_locked(const Session& s) const;     // state_mu held

  // Control socket (engine-shim). Each returns the reply body.
  wire::Envelope control_flush(const wire::Flush& req);
  wire::Envelope control_release(const wire::Release& req);
  wire::Envelope control_status(const wire::StatusRequest& req);
  wire::Envelope control_wait_ready(const wire::WaitReady& req);

  // The commit queue's work function: settles notes, drains, remote changes,
  // readiness, then commits. False: run again later. Never throws.
  bool process(const std::string& id);

  // Called after a remote adoption, with no lock held.
  std::function<void(Session&, const TouchedPaths&)> on_adopted;
  // Called after a session vanished (remote delete), with no lock held.
  std::function<void(const std::string& id)> on_vanished;

  // Writeback cache: forces the kernel's dirty pages of a session back into
  // its cache files (Filesystem::flush_kernel_pages); called with no lock
  // held. Unset for write-through mounts.
  std::function<bool(Session&)> before_snapshot;

  // Called after each commit attempt with "ok", "failed" or "rejected".
  std::function<void(const char* result, double seconds)> on_commit;

  CacheCounters counters;
  std::string last_error() const;
  const MountConfig& config() const { return cfg_; }

 private:
  bool process_once(const std::string& id);  // process() without its catch
  std::shared_ptr<Session> load(const std::string& id);
  Snapshot take_snapshot(Session& s);  // tree_lock held exclusive by the caller
  // A snapshot that is one instant of the application's view (see
  // before_snapshot); false when the session kept changing.
  bool snapshot_at_rest(Session& s, Snapshot& snap, std::uint64_t& gen);
  // A tree marked pages-in-flight at start-up: quarantine it and go back to
  // the committed version (commit_mu held). False: retry later.
  bool revert_torn(Session& s);
  // revert_torn() unless done (takes commit_mu). False: still torn.
  bool settle_torn(Session& s);
  // Commits what changed, chaining commit() and rebase() by their outcomes;
  // a refused snapshot ends in adopt(). False: run again later. commit_mu held.
  bool commit_pending(Session& s);
  // One commit attempt; says what comes next (`reason` for adopt). Never
  // calls another step. `may_rebase`: a conflict at our own epoch asks for a
  // rebase instead of counting as a rejection.
  Outcome commit(Session& s, bool may_rebase, std::string& reason);
  bool adopt(Session& s, const std::string& reason, bool force = false);
  // The remote is ahead of our manifest at our own epoch and we own it: the
  // versions we do not know are our own commits whose manifest rewrite a crash
  // cut off. Returns true when the session is at our epoch and owner.
  bool own_landed(const Session& s, const wire::SessionInfo& remote) const;  // state_mu held
  // Takes the remote manifest (from `reply`, or fetched manifest-only when
  // null) as the commit base, leaving the tree alone. `retry` is set when the
  // storage service could not be asked. Returns true when rebased.
  bool rebase(Session& s, const wire::FetchReply* reply, bool& retry);
  bool resend_unsettled(Session& s);
  // tree_lock exclusive; `local` is the tree's current snapshot.
  TouchedPaths apply(Session& s, const wire::FetchReply& reply, const Snapshot& local);
  void quarantine(const std::string& id, const Snapshot& snap, const std::string& reason);
  void write_manifest(const Session& s, const Manifest& m);
  void give_to_mount_owner(const std::filesystem::path& p) const;
  void prepare_staging(const Session& staging) const;  // get_or_fetch
  void set_error(Session& s, const std::string& e);
  void forget(const std::string& id, bool remove_files);

  // ownership.cpp
  void load_owner(Session& s);
  void save_owner(const Session& s);  // a Session no other thread sees yet (a fetch's staging)
  void write_owner_record(const Session& s, const std::string& record);
  // Records owner and epoch (older ones too when `older_too`), then writes the
  // owner file with no state lock held.
  void set_owner(Session& s, const std::string& owner, std::uint64_t epoch, bool older_too);
  // The manifest's epoch raised to `epoch` (a takeover or a claim, before the
  // first commit under it). commit_mu held, state_mu not.
  void raise_manifest_epoch(Session& s, std::uint64_t epoch);
  // Adopts an authoritative owner/epoch if it is not older than what we know.
  void note_owner(Session& s, const std::string& owner, std::uint64_t epoch);
  bool process_unheld(const std::string& id, std::optional<OwnerNote>& note,
                      std::optional<DrainNote>& drain);
  void take_notes(Session& s, std::optional<OwnerNote> note, std::optional<DrainNote> drain);
  bool settle_drain(Session& s);  // commit_mu held
  bool settle_ready(Session& s);  // commit_mu held
  // Waits until every change up to now is committed; "" when it is, else an
  // error code name set in `code`.
  bool wait_committed(Session& s, std::chrono::milliseconds timeout, wire::ErrorCode& code,
                      std::string& why);
  void retire(Session& s, std::uint64_t epoch, std::chrono::steady_clock::time_point until);

  const MountConfig& cfg_;
  SessionStore& store_;
  CommitQueue& queue_;
  CacheDisk& disk_;
  const TimeSource& time_;
  std::filesystem::path root_;
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<Session>> sessions_;
  std::string last_error_;
  std::atomic<bool> offline_refusal_logged_{false};
  std::map<std::string, OwnerNote> owner_notes_;  // guarded by mu_
  std::map<std::string, DrainNote> drain_notes_;  // guarded by mu_
  // A prepared staging dir a failed fetch did not use; guarded by mu_.
  std::filesystem::path spare_staging_;
};

}  // namespace cookiefs::mount
