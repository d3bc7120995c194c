// ChangeNotice encoding: round trips, and rejection of anything malformed.
#include <doctest/doctest.h>

#include "change_notice.hpp"

using namespace cookiefs::storage;

TEST_CASE("change notices round-trip") {
  for (auto kind :
       {ChangeNotice::Kind::changed, ChangeNotice::Kind::owner, ChangeNotice::Kind::deleted,
        ChangeNotice::Kind::drain, ChangeNotice::Kind::drained, ChangeNotice::Kind::ready}) {
    ChangeNotice n{kind, "tenant-1", "sess.A_b-9", 42, 7, "engine-3", 5000};
    auto back = decode_notice(encode_notice(n));
    REQUIRE(back.has_value());
    CHECK(*back == n);
  }
  ChangeNotice released{ChangeNotice::Kind::owner, "default", "s", 1, 2, "", 0};
  CHECK(decode_notice(encode_notice(released)) == released);
}

TEST_CASE("malformed change notices are rejected") {
  CHECK_FALSE(decode_notice(""));
  CHECK_FALSE(decode_notice("1|changed|ns|s|1|1|e"));          // too few fields
  CHECK_FALSE(decode_notice("1|changed|ns|s|1|1|e|0|extra"));  // too many
  CHECK_FALSE(decode_notice("2|changed|ns|s|1|1|e|0"));        // newer format
  CHECK_FALSE(decode_notice("1|exploded|ns|s|1|1|e|0"));       // unknown kind
  CHECK_FALSE(decode_notice("1|changed|ns|../s|1|1|e|0"));     // invalid id
  CHECK_FALSE(decode_notice("1|changed||s|1|1|e|0"));          // empty namespace
  CHECK_FALSE(decode_notice("1|changed|ns|s|x|1|e|0"));        // not a number
  CHECK_FALSE(decode_notice("1|changed|ns|s|-1|1|e|0"));
  CHECK(decode_notice("1|changed|ns|s|1|1|e|0"));
}
