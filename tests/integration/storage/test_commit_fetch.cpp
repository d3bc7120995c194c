// Commit/fetch semantics against a real database: round trip, atomicity,
// version conflicts, idempotent retries, history, list paging, delete.
#include <doctest/doctest.h>

#include "storage_fixture.hpp"

using namespace cookiefs;
using namespace cookiefs::test;

TEST_CASE("a multi-file session round-trips through commit and fetch") {
  StorageServiceProcess svc(shared_cluster().url());
  const auto ns = fresh_namespace();
  auto c = connect(svc.port(), ns, "engine-a");

  std::string db(20000, '\0');
  for (std::size_t i = 0; i < db.size(); ++i) db[i] = static_cast<char>(i * 7 + 3);
  auto r = c->call(commit_request(
      "s1", 0, 0, true,
      {file("cookies.sqlite", db), file("cookies.txt", "a\tb\n"), file("sub", "", wire::DIRECTORY),
       file("link", "cookies.txt", wire::SYMLINK)}));
  REQUIRE_MESSAGE(r.has_commit_reply(), r.DebugString());
  CHECK(r.commit_reply().version() == 1);
  CHECK(r.commit_reply().epoch() == 1);
  CHECK_FALSE(r.commit_reply().replayed());

  auto f = c->call(fetch_request("s1"));
  REQUIRE(f.has_fetch_reply());
  const auto& info = f.fetch_reply().info();
  CHECK(info.version() == 1);
  CHECK(info.owner() == "engine-a");
  CHECK(info.file_count() == 4);
  CHECK(info.total_bytes() == db.size() + 4 + 11);
  REQUIRE(f.fetch_reply().files_size() == 4);
  std::map<std::string, wire::FileEntry> by_path;
  for (const auto& e : f.fetch_reply().files()) by_path[e.path()] = e;
  CHECK(by_path["cookies.sqlite"].content() == db);
  CHECK(by_path["cookies.sqlite"].sha256().size() == 32);
  CHECK(by_path["cookies.txt"].content() == "a\tb\n");
  CHECK(by_path["sub"].kind() == wire::DIRECTORY);
  CHECK(by_path["link"].kind() == wire::SYMLINK);
  CHECK(by_path["link"].content() == "cookies.txt");

  // Second commit: change one, delete one.
  r = c->call(commit_request("s1", 1, 1, false, {file("cookies.txt", "c\n")}, {"link"}));
  REQUIRE_MESSAGE(r.has_commit_reply(), r.DebugString());
  CHECK(r.commit_reply().version() == 2);
  f = c->call(fetch_request("s1", 0, true));
  REQUIRE(f.has_fetch_reply());
  CHECK(f.fetch_reply().files_size() == 3);
  for (const auto& e : f.fetch_reply().files()) CHECK(e.content().empty());

  // if_newer_than: nothing newer than 2.
  wire::Envelope n = fetch_request("s1");
  n.mutable_fetch()->set_if_newer_than(2);
  f = c->call(n);
  CHECK(f.fetch_reply().not_modified());
  CHECK(f.fetch_reply().files_size() == 0);

  // Another namespace does not see the session.
  auto other = connect(svc.port(), fresh_namespace());
  CHECK(error_of(other->call(fetch_request("s1"))) == wire::NOT_FOUND);
}

TEST_CASE("a failing commit changes nothing") {
  StorageServiceProcess svc(
      shared_cluster().url(), 0,
      {"--limits-max-session-bytes", "1000", "--limits-max-file-bytes", "800"});
  const auto ns = fresh_namespace();
  auto c = connect(svc.port(), ns, "engine-a");
  REQUIRE(c->call(commit_request("s", 0, 0, true, {file("a", "one")})).has_commit_reply());

  // Over the session limit, found only inside the transaction (after other
  // files were already written): all rolled back.
  auto r = c->call(commit_request(
      "s", 1, 1, false,
      {file("a", "two"), file("b", std::string(700, 'b')), file("c", std::string(700, 'c'))}));
  CHECK(error_of(r) == wire::TOO_LARGE);
  // A file over the file limit.
  r = c->call(commit_request("s", 1, 1, false, {file("a", std::string(900, 'x'))}));
  CHECK(error_of(r) == wire::TOO_LARGE);
  // An invalid path after a valid change.
  r = c->call(commit_request("s", 1, 1, false, {file("a", "three"), file("../evil", "x")}));
  CHECK(error_of(r) == wire::BAD_REQUEST);

  auto f = c->call(fetch_request("s"));
  REQUIRE(f.has_fetch_reply());
  CHECK(f.fetch_reply().info().version() == 1);
  REQUIRE(f.fetch_reply().files_size() == 1);
  CHECK(f.fetch_reply().files(0).content() == "one");

  // A create that fails leaves no session behind.
  r = c->call(commit_request("new", 0, 0, true, {file("big", std::string(1200, 'x'))}));
  CHECK(error_of(r) == wire::TOO_LARGE);
  CHECK(error_of(c->call(fetch_request("new"))) == wire::NOT_FOUND);
  CHECK(error_of(c->call(commit_request("missing", 1, 0, false, {file("a", "x")}))) ==
        wire::NOT_FOUND);
}

TEST_CASE("a commit on a stale base version is a conflict") {
  StorageServiceProcess svc(shared_cluster().url());
  auto c = connect(svc.port(), fresh_namespace(), "engine-a");
  REQUIRE(c->call(commit_request("s", 0, 0, true, {file("a", "1")})).has_commit_reply());
  REQUIRE(c->call(commit_request("s", 1, 1, false, {file("a", "2")})).has_commit_reply());
  auto r = c->call(commit_request("s", 1, 1, false, {file("a", "lost")}));
  REQUIRE(error_of(r) == wire::VERSION_CONFLICT);
  CHECK(r.error().current_version() == 2);
  CHECK_FALSE(r.error().retryable());
  CHECK(c->call(fetch_request("s")).fetch_reply().files(0).content() == "2");
}

TEST_CASE("a retried commit returns its first result") {
  StorageServiceProcess svc(shared_cluster().url());
  auto c = connect(svc.port(), fresh_namespace(), "engine-a");
  auto first = c->call(commit_request("s", 0, 0, true, {file("a", "1")}, {}, "key-1"));
  REQUIRE(first.has_commit_reply());
  auto again = c->call(commit_request("s", 0, 0, true, {file("a", "1")}, {}, "key-1"));
  REQUIRE_MESSAGE(again.has_commit_reply(), again.DebugString());
  CHECK(again.commit_reply().replayed());
  CHECK(again.commit_reply().version() == first.commit_reply().version());
  CHECK(again.commit_reply().epoch() == first.commit_reply().epoch());

  auto second = c->call(commit_request("s", 1, 1, false, {file("a", "2")}, {}, "key-2"));
  REQUIRE(second.has_commit_reply());
  CHECK(second.commit_reply().version() == 2);
  // The first key still answers with version 1, and nothing was re-applied.
  again = c->call(commit_request("s", 0, 0, true, {file("a", "1")}, {}, "key-1"));
  CHECK(again.commit_reply().version() == 1);
  CHECK(again.commit_reply().replayed());
  auto f = c->call(fetch_request("s"));
  CHECK(f.fetch_reply().info().version() == 2);
  CHECK(f.fetch_reply().files(0).content() == "2");
}

TEST_CASE("history keeps the last N versions") {
  StorageServiceProcess svc(shared_cluster().url(), 0, {"--history-versions", "3"});
  auto c = connect(svc.port(), fresh_namespace(), "engine-a");
  REQUIRE(c->call(commit_request("s", 0, 0, true, {file("a", "v1"), file("b", "b1")}))
              .has_commit_reply());
  REQUIRE(c->call(commit_request("s", 1, 1, false, {file("a", "v2")})).has_commit_reply());
  REQUIRE(c->call(commit_request("s", 1, 2, false, {}, {"b"})).has_commit_reply());

  auto v1 = c->call(fetch_request("s", 1));
  REQUIRE_MESSAGE(v1.has_fetch_reply(), v1.DebugString());
  CHECK(v1.fetch_reply().info().version() == 1);
  REQUIRE(v1.fetch_reply().files_size() == 2);
  CHECK(v1.fetch_reply().files(0).content() == "v1");
  CHECK(v1.fetch_reply().files(1).content() == "b1");
  auto v2 = c->call(fetch_request("s", 2));
  REQUIRE(v2.fetch_reply().files_size() == 2);
  CHECK(v2.fetch_reply().files(0).content() == "v2");
  auto v3 = c->call(fetch_request("s", 3));
  REQUIRE(v3.fetch_reply().files_size() == 1);

  REQUIRE(c->call(commit_request("s", 1, 3, false, {file("a", "v4")})).has_commit_reply());
  CHECK(error_of(c->call(fetch_request("s", 1))) == wire::NOT_FOUND);  // pruned
  CHECK(c->call(fetch_request("s", 2)).fetch_reply().files(0).content() == "v2");
  CHECK(error_of(c->call(fetch_request("s", 9))) == wire::NOT_FOUND);
}

TEST_CASE("list pages through sessions and filters by owner") {
  StorageServiceProcess svc(shared_cluster().url());
  auto a = connect(svc.port(), fresh_namespace(), "engine-a");
  for (int i = 0; i < 25; ++i) {
    char id[16];
    std::snprintf(id, sizeof id, "s%02d", i);
    REQUIRE(a->call(commit_request(id, 0, 0, true, {file("f", "x")})).has_commit_reply());
  }
  std::vector<std::string> seen;
  std::string after;
  int pages = 0;
  do {
    wire::Envelope l;
    l.mutable_list()->set_after(after);
    l.mutable_list()->set_limit(10);
    auto r = a->call(l);
    REQUIRE(r.has_list_reply());
    for (const auto& s : r.list_reply().sessions()) seen.push_back(s.session_id());
    after = r.list_reply().next_after();
    ++pages;
  } while (!after.empty() && pages < 10);
  CHECK(pages == 3);
  REQUIRE(seen.size() == 25);
  CHECK(seen.front() == "s00");
  CHECK(seen.back() == "s24");
  CHECK(std::is_sorted(seen.begin(), seen.end()));

  wire::Envelope l;
  l.mutable_list()->set_owner("engine-b");
  CHECK(a->call(l).list_reply().sessions_size() == 0);
  l.mutable_list()->set_owner("engine-a");
  CHECK(a->call(l).list_reply().sessions_size() == 25);
}

TEST_CASE("delete removes a session, checking the epoch when given") {
  StorageServiceProcess svc(shared_cluster().url());
  auto c = connect(svc.port(), fresh_namespace(), "engine-a");
  REQUIRE(c->call(commit_request("s", 0, 0, true, {file("a", "1")})).has_commit_reply());
  wire::Envelope d;
  d.mutable_delete_session()->set_session_id("s");
  d.mutable_delete_session()->set_writer_epoch(7);
  CHECK(error_of(c->call(d)) == wire::STALE_EPOCH);
  d.mutable_delete_session()->set_writer_epoch(1);
  CHECK(c->call(d).has_ack());
  CHECK(error_of(c->call(fetch_request("s"))) == wire::NOT_FOUND);
  CHECK(error_of(c->call(d)) == wire::NOT_FOUND);
  // The id can be used again, from version 1.
  auto r = c->call(commit_request("s", 0, 0, true, {file("a", "new")}));
  REQUIRE(r.has_commit_reply());
  CHECK(r.commit_reply().version() == 1);
}

TEST_CASE("fetch: a session without files, and a manifest of an older version") {
  // A fetch is one statement joining the session row to its files: a session
  // with none must still come back, and a manifest carries no content.
  StorageServiceProcess svc(shared_cluster().url());
  const auto ns = fresh_namespace();
  auto c = connect(svc.port(), ns, "engine-a");
  REQUIRE(
      c->call(commit_request("s", 0, 0, true, {file("cookies.txt", "abc")})).has_commit_reply());
  REQUIRE(c->call(commit_request("s", 1, 1, false, {}, {"cookies.txt"})).has_commit_reply());

  auto f = c->call(fetch_request("s"));
  REQUIRE_MESSAGE(f.has_fetch_reply(), f.DebugString());
  CHECK(f.fetch_reply().info().version() == 2);
  CHECK(f.fetch_reply().info().file_count() == 0);
  CHECK(f.fetch_reply().files_size() == 0);

  f = c->call(fetch_request("s", 1, true));
  REQUIRE_MESSAGE(f.has_fetch_reply(), f.DebugString());
  CHECK(f.fetch_reply().info().version() == 1);
  CHECK(f.fetch_reply().info().total_bytes() == 3);
  REQUIRE(f.fetch_reply().files_size() == 1);
  CHECK(f.fetch_reply().files(0).path() == "cookies.txt");
  CHECK(f.fetch_reply().files(0).size() == 3);
  CHECK(f.fetch_reply().files(0).sha256().size() == 32);
  CHECK(f.fetch_reply().files(0).content().empty());

  f = c->call(fetch_request("s", 1));
  REQUIRE(f.has_fetch_reply());
  REQUIRE(f.fetch_reply().files_size() == 1);
  CHECK(f.fetch_reply().files(0).content() == "abc");
}
