// Manifest: what PostgreSQL holds of one session (committed version, epoch and
// per-path kind/mode/size/sha256), kept at <cache-dir>/sessions/<id>/manifest.
// A session is dirty when its cached tree differs from its manifest; the delta
// between a tree snapshot and the manifest is exactly what a commit sends.
// Pure value types and functions: thread-safe as long as callers do not share
// a mutable instance.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "cookiefs.pb.h"

namespace cookiefs::mount {

// Permission bits a session's files and directories may have: no set-user-ID
// or set-group-ID (stripped at create and fetch, refused by chmod). Jars never
// need them, and the mount tells the kernel it kills them itself on write,
// truncate and chown (FUSE_CAP_HANDLE_KILLPRIV, libfuse's default) — which
// its root-owned writes to the cache files would not do; without set-id bits
// that holds trivially.
constexpr std::uint32_t kModeBits = 01777;

struct ManifestEntry {
  wire::FileKind kind = wire::REGULAR;
  std::uint32_t mode = 0644;
  std::uint64_t size = 0;
  std::string sha256;  // raw 32 bytes; empty for directories

  bool operator==(const ManifestEntry&) const = default;
};

struct Manifest {
  std::uint64_t version = 0;  // 0 = never committed (the session must be created)
  std::uint64_t epoch = 0;
  // Set while a remote state is being written into the tree: a crash then must
  // re-fetch instead of committing a half-applied tree as if it were local work.
  bool applying = false;
  std::map<std::string, ManifestEntry> entries;  // by session-relative path
};

// One file of a snapshot: its manifest entry and content (file data or link target).
struct SnapshotFile {
  ManifestEntry entry;
  std::string content;
  std::int64_t mtime_ns = 0;
};
using Snapshot = std::map<std::string, SnapshotFile>;

struct Delta {
  std::vector<std::string> changed;  // paths, sorted
  std::vector<std::string> deleted;  // paths, sorted
  bool empty() const { return changed.empty() && deleted.empty(); }
};

std::string encode_manifest(const Manifest& m);
// Throws std::runtime_error with a one-line reason on malformed input.
Manifest decode_manifest(const std::string& text);

Delta compute_delta(const Manifest& committed, const Snapshot& now);

// The manifest a successful commit of `snap` leaves behind.
Manifest manifest_of(const Snapshot& snap, std::uint64_t version, std::uint64_t epoch);

std::string sha256(const std::string& data);
std::string hex(const std::string& bytes);

}  // namespace cookiefs::mount
