// CommitPlan: the database-free half of a commit. Validates a CommitSession
// (ids, paths, kinds, duplicates, checksums, limits) against the session's
// current manifest and computes what the transaction must write. Pure
// functions; thread-safe. Throws StoreError (BAD_REQUEST, TOO_LARGE).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "cookiefs.pb.h"

namespace cookiefs::storage {

struct Limits {
  std::uint64_t max_file_bytes = 8ull << 20;
  std::uint64_t max_session_bytes = 24ull << 20;
  std::uint64_t max_files_per_session = 1000;
  std::int64_t history_versions = 16;
};

struct PlannedFile {
  const wire::FileEntry* entry;  // points into the request
  std::string sha256;            // computed here, 32 raw bytes
};

struct CommitPlan {
  std::vector<std::string> close_paths;  // current rows that end at the new version
  std::vector<PlannedFile> inserts;      // rows that start at the new version
  std::uint64_t total_bytes = 0;         // of the session after the commit
  std::uint64_t file_count = 0;
};

// Checks what can be checked without the database (fails fast, before a
// transaction is opened).
void check_commit_request(const wire::CommitSession& req, const Limits& limits);

// manifest: current path -> size. Assumes check_commit_request() passed.
CommitPlan plan_commit(const wire::CommitSession& req,
                       const std::map<std::string, std::uint64_t>& manifest, const Limits& limits);

std::string sha256_of(const std::string& bytes);

// A session's current files as a commit needs them: path -> size (for the
// plan) and path -> the version its row starts at (to close it by primary
// key). Stored encoded with the session (sessions.manifest), so a commit
// need not read its file rows.
struct Manifest {
  std::map<std::string, std::uint64_t> sizes;
  std::map<std::string, std::int64_t> from;

  void add(std::string path, std::uint64_t size, std::int64_t valid_from);
};

// "path\0valid_from\0size\0" per file, in path order (a path holds no NUL).
std::string encode_manifest(const Manifest& m);
// Throws StoreError(INTERNAL) on anything encode_manifest does not produce.
Manifest decode_manifest(std::string_view encoded);

// The session's files once `plan` is written at `version`.
Manifest manifest_after(const Manifest& before, const CommitPlan& plan, std::int64_t version);

}  // namespace cookiefs::storage
