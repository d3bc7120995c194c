// `storage-service token create`: makes a 256-bit random token (OpenSSL
// RAND_bytes), shows it once (or writes it to a 0600 file with --out) and
// prints the credentials-file entry to add, which holds only its SHA-256.
// Used from main() only.
#pragma once

#include <ostream>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace cookiefs::storage {

class TokenCommand {
 public:
  void bind(CLI::App& app);
  bool chosen() const;
  // Exit code: 0, or 2 for a bad argument, 1 when the token could not be made.
  int run(std::ostream& out, std::ostream& err) const;

 private:
  CLI::App* create_ = nullptr;
  std::string namespace_name_ = "default";
  std::string name_;
  std::string role_;
  std::vector<std::string> engine_ids_;
  std::string out_file_;
};

// 32 random bytes as 64 lowercase hex digits. Throws std::runtime_error when
// the random generator fails.
std::string make_token();

// The credentials-file lines for one principal (a list item under its
// namespace), e.g. "- name: a\n  role: engine\n  engine_ids: [a]\n  token_sha256: ...\n".
std::string principal_entry(const std::string& name, const std::string& role,
                            const std::vector<std::string>& engine_ids, const std::string& token);

}  // namespace cookiefs::storage
