// Validation of ids and session-relative paths.
#include <doctest/doctest.h>

#include "names.hpp"

using cookiefs::path_problem;
using cookiefs::valid_id;

TEST_CASE("session ids") {
  CHECK(valid_id("abc-DEF_0.9"));
  CHECK(valid_id(std::string(128, 'a')));
  CHECK_FALSE(valid_id(std::string(129, 'a')));
  CHECK_FALSE(valid_id(""));
  CHECK_FALSE(valid_id(".hidden"));
  CHECK_FALSE(valid_id("a/b"));
  CHECK_FALSE(valid_id("a b"));
  CHECK_FALSE(valid_id(std::string("a\0b", 3)));
}

TEST_CASE("session paths") {
  CHECK(path_problem("cookies.sqlite").empty());
  CHECK(path_problem("Default/Cookies-journal").empty());
  CHECK(path_problem("") == "empty path");
  CHECK(path_problem("/etc/passwd") == "absolute path");
  CHECK(path_problem("a/../b") == "dot path component");
  CHECK(path_problem("a//b") == "empty path component");
  CHECK(path_problem("a/") == "empty path component");
  CHECK(path_problem(std::string(256, 'x')) == "path component too long");
  CHECK(path_problem("1/2/3/4/5/6/7/8/9") == "path too deep");
}
