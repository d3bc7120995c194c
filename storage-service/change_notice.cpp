// ChangeNotice encoding; see change_notice.hpp. Format, version 1:
//   1|kind|namespace|session|version|epoch|engine|deadline_ms
#include "change_notice.hpp"

#include <array>
#include <charconv>
#include <vector>

#include "names.hpp"

namespace cookiefs::storage {
namespace {

constexpr std::array<std::pair<ChangeNotice::Kind, std::string_view>, 6> kKinds{{
    {ChangeNotice::Kind::changed, "changed"},
    {ChangeNotice::Kind::owner, "owner"},
    {ChangeNotice::Kind::deleted, "deleted"},
    {ChangeNotice::Kind::drain, "drain"},
    {ChangeNotice::Kind::drained, "drained"},
    {ChangeNotice::Kind::ready, "ready"},
}};

template <typename T>
bool parse_number(std::string_view text, T& out) {
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return !text.empty() && ec == std::errc() && p == text.data() + text.size();
}

}  // namespace

std::string encode_notice(const ChangeNotice& n) {
  std::string_view kind;
  for (const auto& [k, name] : kKinds) {
    if (k == n.kind) kind = name;
  }
  std::string out = "1|";
  out.append(kind);
  out += '|' + n.namespace_name + '|' + n.session_id + '|' + std::to_string(n.version) + '|' +
         std::to_string(n.epoch) + '|' + n.engine + '|' + std::to_string(n.deadline_ms);
  return out;
}

std::optional<ChangeNotice> decode_notice(std::string_view payload) {
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  while (true) {
    const auto bar = payload.find('|', start);
    parts.push_back(payload.substr(start, bar == std::string_view::npos ? bar : bar - start));
    if (bar == std::string_view::npos) break;
    start = bar + 1;
  }
  if (parts.size() != 8 || parts[0] != "1") return std::nullopt;
  ChangeNotice n;
  bool known = false;
  for (const auto& [k, name] : kKinds) {
    if (name == parts[1]) {
      n.kind = k;
      known = true;
    }
  }
  if (!known || !valid_id(parts[2]) || !valid_id(parts[3])) return std::nullopt;
  if (!parts[6].empty() && !valid_id(parts[6])) return std::nullopt;
  n.namespace_name = parts[2];
  n.session_id = parts[3];
  n.engine = parts[6];
  if (!parse_number(parts[4], n.version) || !parse_number(parts[5], n.epoch) ||
      !parse_number(parts[7], n.deadline_ms)) {
    return std::nullopt;
  }
  return n;
}

}  // namespace cookiefs::storage
