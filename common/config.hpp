// Config loading shared by every binary: one schema per program binds each
// dotted YAML key (e.g. `database.pool_size`) to a variable, a command-line
// flag and optionally an environment variable. Precedence, lowest first:
// built-in default (the variable's value at registration), the YAML file,
// the environment, the flag. Secret keys also accept `<key>_file` in YAML,
// `<ENV>_FILE` in the environment and `<flag>-file` on the command line (a
// path whose trimmed contents are the value), so secrets never need to be
// written into a flag, where every local user sees them (ps); a secret given
// as a flag itself still works, with a warning on stderr.
//
// Every error is a ConfigError whose message is one line naming the source
// and the key: `storage.yaml: database.pool_size: expected an integer, got "ten"`.
// Binaries print it and exit 2. Used from main() only; not thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace CLI {
class App;
}
namespace YAML {
class Node;
}

namespace cookiefs {

class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A byte count written as `65536`, `64KiB`, `16MiB`, `1GiB` (also K/M/G, KB/MB/GB).
struct ByteSize {
  std::uint64_t bytes = 0;
};

struct KeyOptions {
  std::string flag;        // e.g. "--database-url"; empty = derived from the key
  std::string env;         // environment variable that may set the key
  bool required = false;   // must end up set by file, env or flag
  bool secret = false;     // redacted in dumps; `<key>_file` accepted in YAML
  std::optional<std::int64_t> min;  // integers, durations (ms), sizes (bytes)
  std::optional<std::int64_t> max;
  std::vector<std::string> choices;  // strings only
};

class ConfigSchema {
 public:
  explicit ConfigSchema(std::string program);

  void add(const std::string& key, std::string* target, std::string help, KeyOptions opt = {});
  void add(const std::string& key, std::int64_t* target, std::string help, KeyOptions opt = {});
  void add(const std::string& key, bool* target, std::string help, KeyOptions opt = {});
  void add(const std::string& key, std::chrono::milliseconds* target, std::string help,
           KeyOptions opt = {});
  void add(const std::string& key, ByteSize* target, std::string help, KeyOptions opt = {});
  void add(const std::string& key, std::vector<std::string>* target, std::string help,
           KeyOptions opt = {});

  // Registers `--config FILE` and one flag per key on the app.
  void bind(CLI::App& app);

  // Applies file, environment and flags (after app.parse) and validates.
  void load();

  // Applies one YAML file without environment or flags (tests, `config check`);
  // call validate() afterwards.
  void load_file(const std::string& path);
  // Checks required keys and ranges.
  void validate();

  const std::string& config_path() const { return config_path_; }
  // One `key: value` line per key, secrets redacted.
  std::string dump() const;

 private:
  struct Key {
    std::string name;
    std::string help;
    KeyOptions opt;
    std::string type_name;
    std::function<void(const std::string& source, const YAML::Node&)> from_yaml;
    std::function<void(const std::string& source, const std::string&)> from_text;
    std::function<void(const std::string& source)> check_range;
    std::function<std::string()> show;
    bool set = false;
    std::string flag_value;
    bool flag_given = false;
    std::string file_flag_value;  // secrets: <flag>-file
    bool file_flag_given = false;
  };
  Key& add_key(const std::string& key, std::string help, KeyOptions opt, std::string type_name);
  void walk(const std::string& source, const YAML::Node& node, const std::string& prefix);
  bool is_prefix(const std::string& prefix) const;

  std::string program_;
  std::string config_path_;
  std::vector<Key> keys_;
  std::map<std::string, std::size_t> index_;
};

// Parses strictly; throw ConfigError("<what>") without source prefix.
std::int64_t parse_integer(const std::string& text);
bool parse_bool(const std::string& text);
std::chrono::milliseconds parse_duration(const std::string& text);
std::uint64_t parse_byte_size(const std::string& text);

}  // namespace cookiefs
