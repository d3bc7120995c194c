// Helpers shared by the files of SessionCache (session_cache.cpp,
// session_fetch.cpp, session_commit.cpp, session_adopt.cpp); not for other
// callers. Pure, or touching only the paths they are given.
#pragma once

#include <filesystem>
#include <functional>
#include <string>

#include "cache_disk.hpp"
#include "manifest.hpp"
#include "session_cache.hpp"

namespace cookiefs::mount {

// 128 random bits as 32 hex digits (idempotency keys, temporary names).
std::string random_hex();

// The mark of a tree that may be torn (Session::pages_in_flight).
inline constexpr const char* kPagesInFlight = "pages-in-flight";

// Writes the entries of `target` (with the contents in `reply`) under `base`,
// skipping those `local` already has as wanted; `give` hands each written
// path to the mount owner. Parents sort before their children.
TouchedPaths write_entries(CacheDisk& disk, const std::filesystem::path& base,
                           const wire::FetchReply& reply, const Manifest& target,
                           const Snapshot& local,
                           const std::function<void(const std::filesystem::path&)>& give);

// The manifest of a fetched version. `contents`: sizes and hashes come from the
// file contents (a full fetch), else from the reply's fields (manifest only).
Manifest manifest_of_reply(const wire::FetchReply& reply, bool contents);

}  // namespace cookiefs::mount
