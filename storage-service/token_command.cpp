// The token subcommand; see token_command.hpp.
#include "token_command.hpp"

#include <fcntl.h>
#include <openssl/rand.h>
#include <unistd.h>
#include <CLI/CLI.hpp>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "credentials.hpp"
#include "names.hpp"

namespace cookiefs::storage {

std::string make_token() {
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof bytes) != 1) throw std::runtime_error("RAND_bytes failed");
  std::string token = to_hex(bytes, sizeof bytes);
  OPENSSL_cleanse(bytes, sizeof bytes);
  return token;
}

std::string principal_entry(const std::string& name, const std::string& role,
                            const std::vector<std::string>& engine_ids, const std::string& token) {
  const TokenHash h = token_hash(token);
  std::string out = "- name: " + name + "\n  role: " + role + "\n";
  if (!engine_ids.empty()) {
    out += "  engine_ids: [";
    for (std::size_t i = 0; i < engine_ids.size(); ++i) {
      out += (i ? ", " : "") + engine_ids[i];
    }
    out += "]\n";
  }
  out += "  token_sha256: " + to_hex(h.data(), h.size()) + "\n";
  return out;
}

void TokenCommand::bind(CLI::App& app) {
  auto* token = app.add_subcommand("token", "make tokens for auth.mode tokens");
  create_ = token->add_subcommand("create",
                                  "make a 256-bit random token: show it once and print the "
                                  "credentials-file entry (its SHA-256) to add");
  create_->add_option("--namespace", namespace_name_, "namespace of the principal")
      ->capture_default_str();
  create_->add_option("--name", name_, "principal name, unique in its namespace")->required();
  create_->add_option("--role", role_, "engine, manager or operator")
      ->required()
      ->check(CLI::IsMember({"engine", "manager", "operator"}));
  create_->add_option("--engine-id", engine_ids_,
                      "engine id the principal may speak for (engine role; repeatable)");
  create_->add_option("--out", out_file_,
                      "write the token to this new file (mode 0600) instead of showing it");
  token->require_subcommand(1);
}

bool TokenCommand::chosen() const {
  return create_ && create_->parsed();
}

int TokenCommand::run(std::ostream& out, std::ostream& err) const {
  const auto usage = [&](const std::string& what) {
    err << "storage-service token create: " << what << "\n";
    return 2;
  };
  if (!valid_id(namespace_name_)) return usage("--namespace: invalid namespace");
  if (!valid_id(name_)) return usage("--name: invalid name");
  for (const auto& id : engine_ids_) {
    if (!valid_id(id)) return usage("--engine-id: invalid engine id \"" + id + "\"");
  }
  if (role_ == "engine" && engine_ids_.empty()) {
    return usage("--engine-id: an engine principal needs at least one");
  }
  if (role_ != "engine" && !engine_ids_.empty()) {
    return usage("--engine-id: only engine principals have engine ids");
  }
  std::string token;
  try {
    token = make_token();
  } catch (const std::exception& e) {
    err << "storage-service token create: " << e.what() << "\n";
    return 1;
  }
  if (!out_file_.empty()) {
    const int fd = ::open(out_file_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
      err << "storage-service token create: --out: " << out_file_ << ": " << std::strerror(errno)
          << "\n";
      return 1;
    }
    const std::string line = token + "\n";
    const bool ok = ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
    ::close(fd);
    if (!ok) {
      err << "storage-service token create: --out: " << out_file_ << ": write failed\n";
      return 1;
    }
  } else {
    out << "token (shown once; give it to the client through a file or COOKIEFS_TOKEN):\n"
        << token << "\n\n";
  }
  out << "add to auth.credentials_file under namespaces: -> " << namespace_name_ << ":\n"
      << principal_entry(name_, role_, engine_ids_, token);
  return 0;
}

}  // namespace cookiefs::storage
