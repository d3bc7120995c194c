// CommitPlan; see commit_plan.hpp.
#include "commit_plan.hpp"

#include <openssl/evp.h>

#include <charconv>
#include <set>

#include "names.hpp"
#include "store_error.hpp"

namespace cookiefs::storage {
namespace {

[[noreturn]] void bad_request(const std::string& why) {
  throw StoreError(wire::BAD_REQUEST, why);
}

}  // namespace

std::string sha256_of(const std::string& bytes) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(bytes.data(), bytes.size(), md, &len, EVP_sha256(), nullptr) != 1) {
    throw StoreError(wire::INTERNAL, "sha256 failed");
  }
  return std::string(reinterpret_cast<const char*>(md), len);
}

void check_commit_request(const wire::CommitSession& req, const Limits& limits) {
  if (!valid_id(req.session_id())) bad_request("invalid session id");
  if (req.idempotency_key().size() > 128) bad_request("idempotency key longer than 128 bytes");
  std::set<std::string_view> seen;
  for (const auto& f : req.changed()) {
    if (auto why = path_problem(f.path()); !why.empty()) bad_request("changed file: " + why);
    if (!seen.insert(f.path()).second) bad_request("a path appears twice in one commit");
    switch (f.kind()) {
      case wire::REGULAR:
      case wire::DIRECTORY:
      case wire::SYMLINK:
        break;
      default:
        bad_request("changed file has no valid kind");
    }
    if (f.kind() == wire::DIRECTORY && !f.content().empty()) {
      bad_request("a directory has no content");
    }
    if (f.content().size() > limits.max_file_bytes) {
      throw StoreError(wire::TOO_LARGE, "file of " + std::to_string(f.content().size()) +
                                            " bytes exceeds limits.max_file_bytes (" +
                                            std::to_string(limits.max_file_bytes) + ")");
    }
  }
  for (const auto& p : req.deleted()) {
    if (auto why = path_problem(p); !why.empty()) bad_request("deleted file: " + why);
    if (!seen.insert(p).second) bad_request("a path is changed and deleted in one commit");
  }
}

CommitPlan plan_commit(const wire::CommitSession& req,
                       const std::map<std::string, std::uint64_t>& manifest, const Limits& limits) {
  CommitPlan plan;
  std::map<std::string, std::uint64_t> after = manifest;
  for (const auto& p : req.deleted()) {
    if (after.erase(p) > 0) plan.close_paths.push_back(p);
  }
  for (const auto& f : req.changed()) {
    std::string sha = sha256_of(f.content());
    if (!f.sha256().empty() && f.sha256() != sha) {
      bad_request("sha256 of a changed file does not match its content");
    }
    if (manifest.contains(f.path())) plan.close_paths.push_back(f.path());
    after[f.path()] = f.content().size();
    plan.inserts.push_back({&f, std::move(sha)});
  }
  for (const auto& [path, size] : after) plan.total_bytes += size;
  plan.file_count = after.size();
  if (plan.total_bytes > limits.max_session_bytes) {
    throw StoreError(wire::TOO_LARGE, "session of " + std::to_string(plan.total_bytes) +
                                          " bytes would exceed limits.max_session_bytes (" +
                                          std::to_string(limits.max_session_bytes) + ")");
  }
  if (plan.file_count > limits.max_files_per_session) {
    throw StoreError(wire::TOO_LARGE, "session of " + std::to_string(plan.file_count) +
                                          " files would exceed limits.max_files_per_session");
  }
  return plan;
}

void Manifest::add(std::string path, std::uint64_t size, std::int64_t valid_from) {
  from.emplace(path, valid_from);
  sizes.emplace(std::move(path), size);
}

std::string encode_manifest(const Manifest& m) {
  std::string out;
  for (const auto& [path, size] : m.sizes) {
    out += path;
    out += '\0';
    out += std::to_string(m.from.at(path));
    out += '\0';
    out += std::to_string(size);
    out += '\0';
  }
  return out;
}

Manifest decode_manifest(std::string_view in) {
  auto corrupt = [] { return StoreError(wire::INTERNAL, "corrupt session manifest"); };
  auto next = [&] {
    const auto end = in.find('\0');
    if (end == std::string_view::npos) throw corrupt();
    auto part = in.substr(0, end);
    in.remove_prefix(end + 1);
    return part;
  };
  auto number = [&](auto& value) {
    const auto part = next();
    const auto [end, ec] = std::from_chars(part.data(), part.data() + part.size(), value);
    if (ec != std::errc() || end != part.data() + part.size() || part.empty()) throw corrupt();
  };
  Manifest m;
  while (!in.empty()) {
    std::string path(next());
    std::int64_t from = 0;
    std::uint64_t size = 0;
    number(from);
    number(size);
    if (path.empty()) throw corrupt();
    m.add(std::move(path), size, from);
  }
  return m;
}

Manifest manifest_after(const Manifest& before, const CommitPlan& plan, std::int64_t version) {
  Manifest after = before;
  for (const auto& path : plan.close_paths) {
    after.sizes.erase(path);
    after.from.erase(path);
  }
  for (const auto& f : plan.inserts) {
    after.sizes.insert_or_assign(f.entry->path(), f.entry->content().size());
    after.from.insert_or_assign(f.entry->path(), version);
  }
  return after;
}

}  // namespace cookiefs::storage
