// Status file contents; see status_files.hpp.
#include "status_files.hpp"

#include <sstream>

#include "filesystem.hpp"
#include "version.hpp"

namespace cookiefs::mount {

std::string StatusFiles::render(Filesystem& fs, const std::string& name) {
  std::ostringstream out;
  const auto sessions = fs.sessions.list();
  if (name == "sessions") {
    for (const auto& s : sessions) {
      std::lock_guard lock(s->state_mu);
      const bool dirty = s->change_gen > s->committed_gen || s->unsettled.has_value();
      out << s->id << ' ' << s->manifest.version << ' ' << s->manifest.epoch << ' '
          << (dirty ? "dirty" : "clean") << '\n';
    }
    return out.str();
  }
  std::size_t dirty_sessions = 0;
  std::uint64_t dirty_bytes = 0;
  for (const auto& s : sessions) {
    if (s->change_gen > s->committed_gen) ++dirty_sessions;
    dirty_bytes += s->dirty_bytes;
  }
  const auto& c = fs.sessions.counters;
  const bool connected = fs.client.connected();
  out << "version: " << COOKIEFS_VERSION << '\n'
      << "engine_id: " << fs.cfg.engine_id << '\n'
      << "connection: " << (connected ? "connected" : "disconnected") << '\n'
      << "endpoint: " << (connected ? fs.client.current_endpoint() : std::string()) << '\n'
      << "reconnects: " << fs.client.reconnects() << '\n'
      << "sessions_held: " << sessions.size() << '\n'
      << "sessions_dirty: " << dirty_sessions << '\n'
      << "dirty_bytes: " << dirty_bytes << '\n'
      << "commits_ok: " << c.commits_ok << '\n'
      << "commits_failed: " << c.commits_failed << '\n'
      << "commits_rejected: " << c.commits_rejected << '\n'
      << "remote_adopted: " << c.adopted << '\n'
      << "quarantined: " << c.quarantined << '\n'
      << "last_commit_error: " << fs.sessions.last_error()
      << '\n'
      // In force: the stricter of this mount's and the storage service's.
      << "max_file_bytes: " << fs.limits.max_file_bytes() << '\n'
      << "max_session_bytes: " << fs.limits.max_session_bytes() << '\n'
      << "max_files_per_session: " << fs.limits.max_entries() << '\n';
  return out.str();
}

}  // namespace cookiefs::mount
