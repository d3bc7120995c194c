// CommitPlan: the database-free half of a commit. Validates a CommitSession
// (ids, paths, kinds, duplicates, checksums, limits) against the session's
// current manifest and computes what the transaction must write. Pure
// functions; thread-safe. Throws StoreError (BAD_REQUEST, TOO_LARGE).
#pragma once

#include <cstdint>
#include <map>
#include <string>
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

}  // namespace cookiefs::storage
