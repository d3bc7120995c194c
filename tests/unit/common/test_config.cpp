// ConfigSchema: precedence, types, ranges, and one-line errors naming file and key.
#include <doctest/doctest.h>

#include <CLI/CLI.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "config.hpp"

using namespace cookiefs;
using namespace std::chrono_literals;

namespace {

struct TempYaml {
  explicit TempYaml(const std::string& text) {
    path = (std::filesystem::temp_directory_path() /
            ("cookiefs-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) +
             ".yaml"))
               .string();
    std::ofstream(path) << text;
  }
  ~TempYaml() { std::filesystem::remove(path); }
  std::string path;
  static inline int counter = 0;
};

struct Settings {
  std::string url;
  std::int64_t pool_size = 8;
  bool verbose = false;
  std::chrono::milliseconds delay = 20ms;
  ByteSize max_file{1 << 20};
  std::vector<std::string> storage{"127.0.0.1:7070"};
  std::string mode = "auto";

  void describe(ConfigSchema& s) {
    s.add("database.url", &url, "database URL",
          {.env = "COOKIEFS_TEST_DATABASE_URL", .required = true, .secret = true});
    s.add("database.pool_size", &pool_size, "pool", {.min = 1, .max = 64});
    s.add("verbose", &verbose, "verbose");
    s.add("commit.delay", &delay, "delay", {.min = 0, .max = 10000});
    s.add("limits.max_file_bytes", &max_file, "max file");
    s.add("storage", &storage, "endpoints");
    s.add("affinity", &mode, "mode", {.choices = {"auto", "strict"}});
  }
};

std::string load_error(const std::string& yaml) {
  TempYaml f(yaml);
  Settings st;
  ConfigSchema schema("test");
  st.describe(schema);
  try {
    schema.load_file(f.path);
    schema.validate();
  } catch (const ConfigError& e) {
    std::string msg = e.what();
    // Report relative to the file so assertions don't depend on the temp path.
    if (msg.rfind(f.path, 0) == 0) msg = "FILE" + msg.substr(f.path.size());
    return msg;
  }
  return "";
}

}  // namespace

TEST_CASE("values of every type load from YAML") {
  TempYaml f(R"(
database:
  url: postgresql://x@h/db
  pool_size: 16
verbose: yes
commit:
  delay: 2s
limits:
  max_file_bytes: 16MiB
storage: [a:1, b:2]
affinity: strict
)");
  Settings st;
  ConfigSchema schema("test");
  st.describe(schema);
  schema.load_file(f.path);
  schema.validate();
  CHECK(st.url == "postgresql://x@h/db");
  CHECK(st.pool_size == 16);
  CHECK(st.verbose);
  CHECK(st.delay == 2000ms);
  CHECK(st.max_file.bytes == 16u << 20);
  CHECK(st.storage == std::vector<std::string>{"a:1", "b:2"});
  CHECK(st.mode == "strict");
  CHECK(schema.dump().find("postgresql://") == std::string::npos);  // secret redacted
}

TEST_CASE("errors name the file and the key on one line") {
  CHECK(load_error("database:\n  url: u\n  pool_size: ten\n") ==
        "FILE: database.pool_size: expected an integer, got \"ten\"");
  CHECK(load_error("database:\n  url: u\n  pool_sise: 3\n") == "FILE: database.pool_sise: unknown key");
  CHECK(load_error("database:\n  url: u\n  pool_size: 0\n") ==
        "FILE: database.pool_size: value 0 is out of range [1, 64]");
  CHECK(load_error("pool_size: 3\n").find("FILE: pool_size: unknown key") == 0);
  CHECK(load_error("verbose: 3\n") == "FILE: verbose: expected true or false, got \"3\"");
  CHECK(load_error("database:\n  url: u\ncommit:\n  delay: soon\n") ==
        "FILE: commit.delay: expected a duration (e.g. 250ms, 5s), got \"soon\"");
  CHECK(load_error("database:\n  url: u\nlimits:\n  max_file_bytes: 3 parsecs\n")
            .find("FILE: limits.max_file_bytes: expected a size") == 0);
  CHECK(load_error("database:\n  url: u\naffinity: maybe\n") ==
        "FILE: affinity: expected one of auto, strict, got \"maybe\"");
  CHECK(load_error("database: 5\n") == "FILE: database: expected a map of settings");
  CHECK(load_error("database:\n  url: [a]\n") == "FILE: database.url: expected a string, got a list");
  CHECK(load_error("verbose: true\n").find("FILE: database.url: required but not set") == 0);
  CHECK(load_error("a: [\n").find("FILE: line ") == 0);
  CHECK(load_error("- 1\n- 2\n") == "FILE: expected a map of settings at the top level");
}

TEST_CASE("secrets come from a file named by <key>_file") {
  TempYaml secret("postgresql://from-file\n");
  TempYaml f("database:\n  url_file: " + secret.path + "\n");
  Settings st;
  ConfigSchema schema("test");
  st.describe(schema);
  schema.load_file(f.path);
  schema.validate();
  CHECK(st.url == "postgresql://from-file");
}

TEST_CASE("secrets come from <flag>-file and <ENV>_FILE too, never only from a flag") {
  TempYaml secret("  from-flag-file\n");
  {
    Settings st;
    ConfigSchema schema("test");
    st.describe(schema);
    CLI::App app("test");
    schema.bind(app);
    std::vector<std::string> args = {"--database-url-file", secret.path};
    std::reverse(args.begin(), args.end());
    app.parse(args);
    schema.load();
    CHECK(st.url == "from-flag-file");
  }
  {
    TempYaml env_secret("from-env-file\n");
    Settings st;
    ConfigSchema schema("test");
    st.describe(schema);
    CLI::App app("test");
    schema.bind(app);
    ::setenv("COOKIEFS_TEST_DATABASE_URL_FILE", env_secret.path.c_str(), 1);
    app.parse(std::vector<std::string>{});
    schema.load();
    ::unsetenv("COOKIEFS_TEST_DATABASE_URL_FILE");
    CHECK(st.url == "from-env-file");
  }
  {
    Settings st;
    ConfigSchema schema("test");
    st.describe(schema);
    CLI::App app("test");
    schema.bind(app);
    std::vector<std::string> args = {"--database-url-file", "/nonexistent/secret"};
    std::reverse(args.begin(), args.end());
    app.parse(args);
    CHECK_THROWS_WITH_AS(schema.load(),
                         "--database-url-file: cannot read secret file \"/nonexistent/secret\"",
                         ConfigError);
  }
  {
    Settings st;
    ConfigSchema schema("test");
    st.describe(schema);
    CLI::App app("test");
    schema.bind(app);
    std::vector<std::string> args = {"--database-url", "u", "--database-url-file", secret.path};
    std::reverse(args.begin(), args.end());
    app.parse(args);
    CHECK_THROWS_AS(schema.load(), ConfigError);
  }
  // Only secrets get a -file flag.
  Settings st;
  ConfigSchema schema("test");
  st.describe(schema);
  CLI::App app("test");
  schema.bind(app);
  std::vector<std::string> args = {"--database-pool-size-file", "x"};
  CHECK_THROWS(app.parse(args));
}

TEST_CASE("precedence: default < file < environment < flag") {
  TempYaml f("database:\n  url: from-file\n  pool_size: 4\n");
  Settings st;
  ConfigSchema schema("test");
  st.describe(schema);
  CLI::App app("test");
  schema.bind(app);
  ::setenv("COOKIEFS_TEST_DATABASE_URL", "from-env", 1);
  std::vector<std::string> args = {"--database-pool-size", "9", "--config", f.path};
  std::reverse(args.begin(), args.end());  // CLI11 takes args in reverse
  app.parse(args);
  schema.load();
  ::unsetenv("COOKIEFS_TEST_DATABASE_URL");
  CHECK(st.url == "from-env");
  CHECK(st.pool_size == 9);
  CHECK(st.delay == 20ms);  // default kept
}

TEST_CASE("bad flag value names the flag") {
  Settings st;
  ConfigSchema schema("test");
  st.describe(schema);
  CLI::App app("test");
  schema.bind(app);
  std::vector<std::string> args = {"--database-url", "u", "--commit-delay", "later"};
  std::reverse(args.begin(), args.end());
  app.parse(args);
  CHECK_THROWS_WITH_AS(schema.load(),
                       "--commit-delay: expected a duration (e.g. 250ms, 5s), got \"later\"",
                       ConfigError);
}

TEST_CASE("scalar parsers") {
  CHECK(parse_integer(" 42 ") == 42);
  CHECK_THROWS_AS(parse_integer("4x"), ConfigError);
  CHECK(parse_duration("250ms") == 250ms);
  CHECK(parse_duration("3m") == 180000ms);
  CHECK(parse_byte_size("64KiB") == 65536);
  CHECK(parse_byte_size("1G") == 1u << 30);
  CHECK_THROWS_AS(parse_byte_size("-1"), ConfigError);
}
