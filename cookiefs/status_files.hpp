// StatusFiles: the read-only files under <mount>/.cookiefs/, rendered when
// opened: `status` (connection, sessions, dirty bytes, commits, last error)
// and `sessions` (one line per held session: id version epoch dirty).
// Thread-safety: render() may run on any FUSE worker concurrently.
#pragma once

#include <string>
#include <vector>

namespace cookiefs::mount {

struct Filesystem;

class StatusFiles {
 public:
  static constexpr const char* kDir = ".cookiefs";
  static std::vector<std::string> names() { return {"status", "sessions"}; }
  static std::string render(Filesystem& fs, const std::string& name);
};

}  // namespace cookiefs::mount
