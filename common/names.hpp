// Validation of every name that crosses a trust boundary: namespaces, session
// ids, engine ids and file paths inside a session. Pure functions, thread-safe.
#pragma once

#include <string>
#include <string_view>

namespace cookiefs {

inline constexpr std::size_t kMaxIdLength = 128;
inline constexpr std::size_t kMaxNameLength = 255;   // one path component
inline constexpr std::size_t kMaxPathLength = 1024;  // a whole relative path
inline constexpr int kMaxPathDepth = 8;              // components in a relative path

// [A-Za-z0-9._-]{1,128}, no leading '.': session ids, namespaces, engine ids.
bool valid_id(std::string_view id);

// A '/'-separated relative path inside a session: no empty, '.' or '..'
// components, no NUL, bounded length and depth. Returns an empty string when
// valid, else a short reason (for error messages; never includes the path).
std::string path_problem(std::string_view path);
inline bool valid_session_path(std::string_view path) { return path_problem(path).empty(); }

}  // namespace cookiefs
