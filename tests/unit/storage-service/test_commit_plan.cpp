// CommitPlan: request validation and limits, without a database.
#include <doctest/doctest.h>

#include "commit_plan.hpp"
#include "store_error.hpp"

using namespace cookiefs;
using namespace cookiefs::storage;

namespace {

wire::CommitSession request(std::initializer_list<std::pair<const char*, std::string>> files,
                            std::initializer_list<const char*> deleted = {}) {
  wire::CommitSession req;
  req.set_session_id("s1");
  for (const auto& [path, content] : files) {
    auto* f = req.add_changed();
    f->set_path(path);
    f->set_kind(wire::REGULAR);
    f->set_content(content);
  }
  for (const char* d : deleted) req.add_deleted(d);
  return req;
}

wire::ErrorCode failure(const std::function<void()>& f) {
  try {
    f();
  } catch (const StoreError& e) {
    return e.code();
  }
  return wire::ERROR_UNSPECIFIED;
}

}  // namespace

TEST_CASE("commit requests are validated before any SQL") {
  Limits limits;
  limits.max_file_bytes = 10;
  CHECK(failure([&] {
          check_commit_request(request({{"a", "x"}}), limits);
        }) == wire::ERROR_UNSPECIFIED);
  auto bad_id = request({{"a", "x"}});
  bad_id.set_session_id("../x");
  CHECK(failure([&] { check_commit_request(bad_id, limits); }) == wire::BAD_REQUEST);
  CHECK(failure([&] {
          check_commit_request(request({{"../a", "x"}}), limits);
        }) == wire::BAD_REQUEST);
  CHECK(failure([&] {
          check_commit_request(request({{"a", "x"}, {"a", "y"}}), limits);
        }) == wire::BAD_REQUEST);
  CHECK(failure([&] {
          check_commit_request(request({{"a", "x"}}, {"a"}), limits);
        }) == wire::BAD_REQUEST);
  CHECK(failure([&] { check_commit_request(request({}, {"/abs"}), limits); }) == wire::BAD_REQUEST);
  CHECK(failure([&] {
          check_commit_request(request({{"a", std::string(11, 'x')}}), limits);
        }) == wire::TOO_LARGE);
  auto no_kind = request({{"a", "x"}});
  no_kind.mutable_changed(0)->set_kind(wire::FILE_KIND_UNSPECIFIED);
  CHECK(failure([&] { check_commit_request(no_kind, limits); }) == wire::BAD_REQUEST);
  auto long_key = request({{"a", "x"}});
  long_key.set_idempotency_key(std::string(129, 'k'));
  CHECK(failure([&] { check_commit_request(long_key, limits); }) == wire::BAD_REQUEST);
}

TEST_CASE("a plan closes replaced and deleted files and totals the session") {
  Limits limits;
  const std::map<std::string, std::uint64_t> manifest{{"a", 5}, {"b", 7}, {"c", 1}};
  auto req = request({{"a", "12"}, {"new", "123"}}, {"b", "missing"});
  auto plan = plan_commit(req, manifest, limits);
  std::sort(plan.close_paths.begin(), plan.close_paths.end());
  CHECK(plan.close_paths == std::vector<std::string>{"a", "b"});
  REQUIRE(plan.inserts.size() == 2);
  CHECK(plan.inserts[0].sha256 == sha256_of("12"));
  CHECK(plan.inserts[0].sha256.size() == 32);
  CHECK(plan.total_bytes == 2 + 3 + 1);
  CHECK(plan.file_count == 3);
}

TEST_CASE("plans enforce session limits and checksums") {
  Limits limits;
  limits.max_session_bytes = 10;
  limits.max_files_per_session = 2;
  CHECK(failure([&] {
          plan_commit(request({{"a", std::string(11, 'x')}}), {}, limits);
        }) == wire::TOO_LARGE);
  CHECK(failure([&] {
          plan_commit(request({{"c", "x"}}), {{"a", 1}, {"b", 1}}, limits);
        }) == wire::TOO_LARGE);
  // Replacing a file does not count it twice.
  CHECK(failure([&] {
          plan_commit(request({{"a", "xy"}}), {{"a", 9}, {"b", 1}}, limits);
        }) == wire::ERROR_UNSPECIFIED);
  auto bad_sum = request({{"a", "x"}});
  bad_sum.mutable_changed(0)->set_sha256(std::string(32, '\0'));
  CHECK(failure([&] { plan_commit(bad_sum, {}, limits); }) == wire::BAD_REQUEST);
  auto good_sum = request({{"a", "x"}});
  good_sum.mutable_changed(0)->set_sha256(sha256_of("x"));
  CHECK(failure([&] { plan_commit(good_sum, {}, limits); }) == wire::ERROR_UNSPECIFIED);
}

TEST_CASE("a session's manifest survives encoding and follows its commits") {
  Manifest m;
  m.add("cookies.sqlite", 16384, 3);
  m.add("dir/odd \"name\",{x}", 0, 1);
  m.add("e", 7, 9'000'000'000);
  const auto back = decode_manifest(encode_manifest(m));
  CHECK(back.sizes == m.sizes);
  CHECK(back.from == m.from);
  CHECK(decode_manifest("").sizes.empty());
  CHECK(encode_manifest(Manifest{}).empty());

  // A commit replacing one file, deleting one and adding one, at version 10.
  auto req = request({{"cookies.sqlite", "abc"}, {"new", "xy"}}, {"e"});
  const auto plan = plan_commit(req, m.sizes, Limits{});
  const auto after = manifest_after(m, plan, 10);
  CHECK(after.sizes == std::map<std::string, std::uint64_t>{
                           {"cookies.sqlite", 3}, {"dir/odd \"name\",{x}", 0}, {"new", 2}});
  CHECK(after.from == std::map<std::string, std::int64_t>{
                          {"cookies.sqlite", 10}, {"dir/odd \"name\",{x}", 1}, {"new", 10}});

  // Anything else is refused, not misread.
  using namespace std::string_literals;
  for (const auto& bad : {"a"s, "a\0001\000"s, "a\000x\0002\000"s, "a\0001\0002"s,
                          "\0001\0002\000"s, "a\000-\0002\000"s}) {
    CHECK(failure([&] { decode_manifest(bad); }) == wire::INTERNAL);
  }
}
