// Name validation; see names.hpp.
#include "names.hpp"

namespace cookiefs {

bool valid_id(std::string_view id) {
  if (id.empty() || id.size() > kMaxIdLength || id.front() == '.') return false;
  for (char c : id) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::string path_problem(std::string_view path) {
  if (path.empty()) return "empty path";
  if (path.size() > kMaxPathLength) return "path too long";
  if (path.front() == '/') return "absolute path";
  int depth = 0;
  std::size_t start = 0;
  while (start <= path.size()) {
    std::size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    const std::string_view comp = path.substr(start, end - start);
    if (comp.empty()) return "empty path component";
    if (comp == "." || comp == "..") return "dot path component";
    if (comp.size() > kMaxNameLength) return "path component too long";
    if (comp.find('\0') != std::string_view::npos) return "NUL in path";
    if (++depth > kMaxPathDepth) return "path too deep";
    start = end + 1;
  }
  return {};
}

}  // namespace cookiefs
