// ConfigSchema implementation; see config.hpp for precedence and error format.
#include "config.hpp"

#include <CLI/CLI.hpp>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

namespace cookiefs {
namespace {

std::string quoted(const std::string& s) { return "\"" + s + "\""; }

std::string trim(std::string s) {
  auto not_space = [](unsigned char c) { return !std::isspace(c); };
  s.erase(s.begin(), std::find_if(s.begin(), s.end(), not_space));
  s.erase(std::find_if(s.rbegin(), s.rend(), not_space).base(), s.end());
  return s;
}

std::string scalar_text(const YAML::Node& node, const char* expected) {
  if (!node.IsScalar()) {
    throw ConfigError(std::string("expected ") + expected + ", got a " +
                      (node.IsMap() ? "map" : node.IsSequence() ? "list" : "null value"));
  }
  return node.Scalar();
}

std::string flag_for(const std::string& key) {
  std::string f = "--";
  for (char c : key) f += (c == '.' || c == '_') ? '-' : c;
  return f;
}

// Splits "16MiB" into number and unit.
std::pair<std::uint64_t, std::string> number_and_unit(const std::string& text, const char* what) {
  std::string t = trim(text);
  std::size_t i = 0;
  while (i < t.size() && std::isdigit(static_cast<unsigned char>(t[i]))) ++i;
  if (i == 0) throw ConfigError(std::string("expected ") + what + ", got " + quoted(text));
  std::uint64_t n = 0;
  auto [p, ec] = std::from_chars(t.data(), t.data() + i, n);
  if (ec != std::errc()) throw ConfigError(std::string("expected ") + what + ", got " + quoted(text));
  return {n, trim(t.substr(i))};
}

}  // namespace

std::int64_t parse_integer(const std::string& text) {
  const std::string t = trim(text);
  std::int64_t v = 0;
  auto [p, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
  if (t.empty() || ec != std::errc() || p != t.data() + t.size()) {
    throw ConfigError("expected an integer, got " + quoted(text));
  }
  return v;
}

bool parse_bool(const std::string& text) {
  std::string t = trim(text);
  std::transform(t.begin(), t.end(), t.begin(), [](unsigned char c) { return std::tolower(c); });
  if (t == "true" || t == "yes" || t == "on" || t == "1") return true;
  if (t == "false" || t == "no" || t == "off" || t == "0") return false;
  throw ConfigError("expected true or false, got " + quoted(text));
}

std::chrono::milliseconds parse_duration(const std::string& text) {
  auto [n, unit] = number_and_unit(text, "a duration (e.g. 250ms, 5s)");
  std::uint64_t mult = 0;
  if (unit.empty() || unit == "ms") mult = 1;
  else if (unit == "s") mult = 1000;
  else if (unit == "m" || unit == "min") mult = 60'000;
  else if (unit == "h") mult = 3'600'000;
  else throw ConfigError("expected a duration (e.g. 250ms, 5s), got " + quoted(text));
  return std::chrono::milliseconds(static_cast<std::int64_t>(n * mult));
}

std::uint64_t parse_byte_size(const std::string& text) {
  auto [n, unit] = number_and_unit(text, "a size (e.g. 65536, 64KiB, 16MiB)");
  std::uint64_t mult = 0;
  if (unit.empty() || unit == "B") mult = 1;
  else if (unit == "KiB" || unit == "K" || unit == "KB" || unit == "k") mult = 1ull << 10;
  else if (unit == "MiB" || unit == "M" || unit == "MB") mult = 1ull << 20;
  else if (unit == "GiB" || unit == "G" || unit == "GB") mult = 1ull << 30;
  else throw ConfigError("expected a size (e.g. 65536, 64KiB, 16MiB), got " + quoted(text));
  return n * mult;
}

ConfigSchema::ConfigSchema(std::string program) : program_(std::move(program)) {}

ConfigSchema::Key& ConfigSchema::add_key(const std::string& key, std::string help,
                                         KeyOptions opt, std::string type_name) {
  if (opt.flag.empty()) opt.flag = flag_for(key);
  index_[key] = keys_.size();
  Key k;
  k.name = key;
  k.help = std::move(help);
  k.opt = std::move(opt);
  k.type_name = std::move(type_name);
  keys_.push_back(std::move(k));
  return keys_.back();
}

void ConfigSchema::add(const std::string& key, std::string* target, std::string help,
                       KeyOptions opt) {
  Key& k = add_key(key, std::move(help), std::move(opt), "string");
  const auto choices = k.opt.choices;
  k.from_text = [target, choices](const std::string&, const std::string& text) {
    if (!choices.empty() && std::find(choices.begin(), choices.end(), text) == choices.end()) {
      std::string list;
      for (const auto& c : choices) list += (list.empty() ? "" : ", ") + c;
      throw ConfigError("expected one of " + list + ", got " + quoted(text));
    }
    *target = text;
  };
  k.from_yaml = [f = k.from_text](const std::string& src, const YAML::Node& n) {
    f(src, scalar_text(n, "a string"));
  };
  k.show = [target] { return *target; };
}

void ConfigSchema::add(const std::string& key, std::int64_t* target, std::string help,
                       KeyOptions opt) {
  Key& k = add_key(key, std::move(help), std::move(opt), "integer");
  k.from_text = [target](const std::string&, const std::string& t) { *target = parse_integer(t); };
  k.from_yaml = [target](const std::string&, const YAML::Node& n) {
    *target = parse_integer(scalar_text(n, "an integer"));
  };
  k.check_range = [target, o = k.opt](const std::string&) {
    if ((o.min && *target < *o.min) || (o.max && *target > *o.max)) {
      throw ConfigError("value " + std::to_string(*target) + " is out of range [" +
                        (o.min ? std::to_string(*o.min) : "") + ", " +
                        (o.max ? std::to_string(*o.max) : "") + "]");
    }
  };
  k.show = [target] { return std::to_string(*target); };
}

void ConfigSchema::add(const std::string& key, bool* target, std::string help, KeyOptions opt) {
  Key& k = add_key(key, std::move(help), std::move(opt), "boolean");
  k.from_text = [target](const std::string&, const std::string& t) { *target = parse_bool(t); };
  k.from_yaml = [target](const std::string&, const YAML::Node& n) {
    *target = parse_bool(scalar_text(n, "true or false"));
  };
  k.show = [target] { return *target ? std::string("true") : std::string("false"); };
}

void ConfigSchema::add(const std::string& key, std::chrono::milliseconds* target,
                       std::string help, KeyOptions opt) {
  Key& k = add_key(key, std::move(help), std::move(opt), "duration");
  k.from_text = [target](const std::string&, const std::string& t) { *target = parse_duration(t); };
  k.from_yaml = [target](const std::string&, const YAML::Node& n) {
    *target = parse_duration(scalar_text(n, "a duration (e.g. 250ms, 5s)"));
  };
  k.check_range = [target, o = k.opt](const std::string&) {
    const auto v = target->count();
    if ((o.min && v < *o.min) || (o.max && v > *o.max)) {
      throw ConfigError(std::to_string(v) + "ms is out of range [" +
                        (o.min ? std::to_string(*o.min) + "ms" : "") + ", " +
                        (o.max ? std::to_string(*o.max) + "ms" : "") + "]");
    }
  };
  k.show = [target] { return std::to_string(target->count()) + "ms"; };
}

void ConfigSchema::add(const std::string& key, ByteSize* target, std::string help,
                       KeyOptions opt) {
  Key& k = add_key(key, std::move(help), std::move(opt), "size");
  k.from_text = [target](const std::string&, const std::string& t) {
    target->bytes = parse_byte_size(t);
  };
  k.from_yaml = [target](const std::string&, const YAML::Node& n) {
    target->bytes = parse_byte_size(scalar_text(n, "a size (e.g. 65536, 64KiB, 16MiB)"));
  };
  k.check_range = [target, o = k.opt](const std::string&) {
    const auto v = static_cast<std::int64_t>(target->bytes);
    if ((o.min && v < *o.min) || (o.max && v > *o.max)) {
      throw ConfigError(std::to_string(v) + " bytes is out of range [" +
                        (o.min ? std::to_string(*o.min) : "") + ", " +
                        (o.max ? std::to_string(*o.max) : "") + "]");
    }
  };
  k.show = [target] { return std::to_string(target->bytes); };
}

void ConfigSchema::add(const std::string& key, std::vector<std::string>* target,
                       std::string help, KeyOptions opt) {
  Key& k = add_key(key, std::move(help), std::move(opt), "list");
  k.from_text = [target](const std::string&, const std::string& t) {
    target->clear();
    std::stringstream ss(t);
    std::string item;
    while (std::getline(ss, item, ',')) {
      item = trim(item);
      if (!item.empty()) target->push_back(item);
    }
  };
  k.from_yaml = [target, f = k.from_text](const std::string& src, const YAML::Node& n) {
    if (n.IsScalar()) return f(src, n.Scalar());
    if (!n.IsSequence()) throw ConfigError("expected a list of strings");
    target->clear();
    for (const auto& item : n) target->push_back(scalar_text(item, "a string"));
  };
  k.show = [target] {
    std::string s;
    for (const auto& i : *target) s += (s.empty() ? "" : ",") + i;
    return s;
  };
}

namespace {

// The trimmed contents of a secret file.
std::string read_secret_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError("cannot read secret file " + quoted(path));
  std::stringstream ss;
  ss << in.rdbuf();
  return trim(ss.str());
}

}  // namespace

void ConfigSchema::bind(CLI::App& app) {
  app.add_option("-c,--config", config_path_, "YAML config file (see config/ for examples)");
  for (auto& k : keys_) {
    std::string help = k.help + " [" + k.name + "]";
    if (!k.opt.env.empty()) help += " (env " + k.opt.env + ")";
    if (k.type_name == "boolean") {
      // `--json` alone means true; `--json=false` still works.
      app.add_flag(k.opt.flag, k.flag_value, help);
    } else {
      app.add_option(k.opt.flag, k.flag_value, help)->type_name("VALUE");
    }
    if (k.opt.secret) {
      std::string file_help = "file whose contents are " + k.name +
                              " (secrets belong in files or the environment, not in flags) [" +
                              k.name + "_file]";
      if (!k.opt.env.empty()) file_help += " (env " + k.opt.env + "_FILE)";
      app.add_option(k.opt.flag + "-file", k.file_flag_value, file_help)->type_name("PATH");
    }
  }
  app.callback([this, &app] {
    for (auto& k : keys_) {
      k.flag_given = app.count(k.opt.flag) > 0;
      k.file_flag_given = k.opt.secret && app.count(k.opt.flag + "-file") > 0;
    }
  });
}

bool ConfigSchema::is_prefix(const std::string& prefix) const {
  const std::string p = prefix + ".";
  auto it = index_.lower_bound(p);
  return it != index_.end() && it->first.compare(0, p.size(), p) == 0;
}

void ConfigSchema::walk(const std::string& source, const YAML::Node& node,
                        const std::string& prefix) {
  for (const auto& entry : node) {
    const std::string name = entry.first.as<std::string>();
    const std::string key = prefix.empty() ? name : prefix + "." + name;
    try {
      auto it = index_.find(key);
      if (it != index_.end()) {
        Key& k = keys_[it->second];
        k.from_yaml(source, entry.second);
        k.set = true;
        continue;
      }
      // `<secret>_file`: read the secret from a file.
      if (key.size() > 5 && key.ends_with("_file")) {
        auto sit = index_.find(key.substr(0, key.size() - 5));
        if (sit != index_.end() && keys_[sit->second].opt.secret) {
          const std::string path = scalar_text(entry.second, "a file path");
          Key& k = keys_[sit->second];
          k.from_text(source, read_secret_file(path));
          k.set = true;
          continue;
        }
      }
      if (is_prefix(key)) {
        if (!entry.second.IsMap()) throw ConfigError("expected a map of settings");
        walk(source, entry.second, key);
        continue;
      }
      throw ConfigError("unknown key");
    } catch (const ConfigError& e) {
      const std::string msg = e.what();
      if (msg.rfind(source + ": ", 0) == 0) throw;
      throw ConfigError(source + ": " + key + ": " + msg);
    }
  }
}

void ConfigSchema::load_file(const std::string& path) {
  config_path_ = path;  // validate() names the file in its errors
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    throw ConfigError(path + ": cannot open config file");
  } catch (const YAML::ParserException& e) {
    throw ConfigError(path + ": line " + std::to_string(e.mark.line + 1) + ": " + e.msg);
  }
  if (root.IsNull()) return;
  if (!root.IsMap()) throw ConfigError(path + ": expected a map of settings at the top level");
  try {
    walk(path, root, "");
  } catch (const YAML::Exception& e) {
    throw ConfigError(path + ": " + e.msg);
  }
}

void ConfigSchema::load() {
  if (!config_path_.empty()) load_file(config_path_);
  for (auto& k : keys_) {
    if (k.opt.env.empty()) continue;
    if (const char* v = std::getenv(k.opt.env.c_str()); v && *v) {
      try {
        k.from_text(k.opt.env, v);
      } catch (const ConfigError& e) {
        throw ConfigError("environment " + k.opt.env + ": " + k.name + ": " + e.what());
      }
      k.set = true;
    }
    if (!k.opt.secret) continue;
    const std::string file_env = k.opt.env + "_FILE";
    if (const char* v = std::getenv(file_env.c_str()); v && *v) {
      try {
        k.from_text(file_env, read_secret_file(v));
      } catch (const ConfigError& e) {
        throw ConfigError("environment " + file_env + ": " + k.name + ": " + e.what());
      }
      k.set = true;
    }
  }
  for (auto& k : keys_) {
    if (k.flag_given && k.file_flag_given) {
      throw ConfigError(k.opt.flag + " and " + k.opt.flag + "-file: give only one");
    }
    try {
      if (k.flag_given) {
        k.from_text(k.opt.flag, k.flag_value);
        if (k.opt.secret && !k.flag_value.empty()) {
          std::cerr << program_ << ": warning: " << k.opt.flag
                    << " puts a secret on the command line, where every local user can read it; "
                       "prefer "
                    << k.opt.flag << "-file"
                    << (k.opt.env.empty() ? std::string() : " or " + k.opt.env) << "\n";
        }
      } else if (k.file_flag_given) {
        k.from_text(k.opt.flag + "-file", read_secret_file(k.file_flag_value));
      } else {
        continue;
      }
    } catch (const ConfigError& e) {
      throw ConfigError((k.flag_given ? k.opt.flag : k.opt.flag + "-file") + ": " + e.what());
    }
    k.set = true;
  }
  validate();
}

void ConfigSchema::validate() {
  const std::string src = config_path_.empty() ? program_ : config_path_;
  for (auto& k : keys_) {
    if (k.opt.required && !k.set) {
      std::string how = k.opt.flag;
      if (!k.opt.env.empty()) how += " or " + k.opt.env;
      throw ConfigError(src + ": " + k.name + ": required but not set (use " + how + ")");
    }
    if (k.check_range) {
      try {
        k.check_range(src);
      } catch (const ConfigError& e) {
        throw ConfigError(src + ": " + k.name + ": " + e.what());
      }
    }
  }
}

std::string ConfigSchema::dump() const {
  std::string out;
  for (const auto& k : keys_) {
    out += k.name + ": " + (k.opt.secret && !k.show().empty() ? "<redacted>" : k.show()) + "\n";
  }
  return out;
}

}  // namespace cookiefs
