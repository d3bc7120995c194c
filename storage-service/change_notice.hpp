// ChangeNotice: what replicas tell each other through PostgreSQL NOTIFY on one
// channel, and its compact text encoding. Ids are [A-Za-z0-9._-] (valid_id),
// so '|' is a safe delimiter; payloads stay far below NOTIFY's 8000 bytes.
// Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace cookiefs::storage {

inline constexpr const char* kNotifyChannel = "cookiefs_events";

struct ChangeNotice {
  enum class Kind {
    changed,  // a commit landed: version, epoch, engine = writer
    owner,    // ownership moved (or was released): epoch, version, engine = new owner
    deleted,  // the session was deleted
    drain,    // assign asks the owner `engine` to drain `epoch` within deadline_ms
    drained,  // the owner confirmed the drain of `epoch` (DrainDone)
    ready,    // the new owner holds the session at `epoch` (SessionReady)
  };
  Kind kind = Kind::changed;
  std::string namespace_name;
  std::string session_id;
  std::uint64_t version = 0;
  std::uint64_t epoch = 0;
  std::string engine;
  std::uint32_t deadline_ms = 0;

  bool operator==(const ChangeNotice&) const = default;
};

std::string encode_notice(const ChangeNotice& notice);
// Returns nullopt for anything malformed or from an unknown (newer) format.
std::optional<ChangeNotice> decode_notice(std::string_view payload);

}  // namespace cookiefs::storage
