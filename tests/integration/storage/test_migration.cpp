// Schema migrations against a real database: a database at schema 2 (as that
// release left it) holding a session with history and idempotency keys is
// migrated by a new service at start-up, and everything stored before keeps
// working: retries replay, fetch of the current and older versions, new
// commits (batched and alone), the prune index replaced, the manifest kept
// with the session (and ignored once a commit by an older release made it
// stale).
#include <doctest/doctest.h>

#include <unistd.h>

#include <barrier>
#include <functional>
#include <thread>

#include "storage_fixture.hpp"

using namespace cookiefs;
using namespace cookiefs::test;

namespace {

// Schema 2 exactly as migrations 1 and 2 of that release created it.
constexpr const char* kSchema2 = R"sql(
CREATE TABLE schema_versions (version integer PRIMARY KEY,
  applied_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE sessions (
  namespace text NOT NULL, session_id text NOT NULL, owner text NOT NULL DEFAULT '',
  epoch bigint NOT NULL, version bigint NOT NULL, total_bytes bigint NOT NULL DEFAULT 0,
  file_count integer NOT NULL DEFAULT 0, created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(), assign_id text, assign_until timestamptz,
  PRIMARY KEY (namespace, session_id));
CREATE INDEX sessions_by_owner ON sessions (namespace, owner, session_id);
CREATE TABLE files (
  namespace text NOT NULL, session_id text NOT NULL, path text NOT NULL,
  valid_from bigint NOT NULL, valid_to bigint, kind smallint NOT NULL, mode integer NOT NULL,
  mtime_ns bigint NOT NULL, size bigint NOT NULL, content bytea NOT NULL,
  sha256 bytea NOT NULL, PRIMARY KEY (namespace, session_id, path, valid_from));
CREATE INDEX files_current ON files (namespace, session_id, path) WHERE valid_to IS NULL;
CREATE TABLE commit_keys (
  namespace text NOT NULL, session_id text NOT NULL, idempotency_key text NOT NULL,
  version bigint NOT NULL, epoch bigint NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (namespace, session_id, idempotency_key));
CREATE INDEX commit_keys_by_version ON commit_keys (namespace, session_id, version);
INSERT INTO schema_versions (version) VALUES (1), (2);
)sql";

// Session "old" at version 2, owned by engine-a at epoch 1: cookies.txt was
// "one" at version 1 and "two" from version 2; journal existed only at 1.
constexpr const char* kOldSession = R"sql(
INSERT INTO sessions (namespace, session_id, owner, epoch, version, total_bytes, file_count)
  VALUES ('mig', 'old', 'engine-a', 1, 2, 3, 1);
INSERT INTO files VALUES
  ('mig', 'old', 'cookies.txt', 1, 2, 1, 384, 0, 3, 'one'::bytea, sha256('one'::bytea)),
  ('mig', 'old', 'cookies.txt', 2, NULL, 1, 384, 0, 3, 'two'::bytea, sha256('two'::bytea)),
  ('mig', 'old', 'journal', 1, 2, 1, 384, 0, 1, 'j'::bytea, sha256('j'::bytea));
INSERT INTO commit_keys (namespace, session_id, idempotency_key, version, epoch)
  VALUES ('mig', 'old', 'k1', 1, 1), ('mig', 'old', 'k2', 2, 1);
)sql";

std::string content_at(WireConnection& c, const std::string& session, std::uint64_t version,
                       const std::string& path) {
  auto f = c.call(fetch_request(session, version));
  REQUIRE_MESSAGE(f.has_fetch_reply(), f.DebugString());
  for (const auto& e : f.fetch_reply().files()) {
    if (e.path() == path) return e.content();
  }
  return "<missing>";
}

}  // namespace

TEST_CASE("a database at schema 2 with stored sessions migrates and keeps working") {
  const std::string db = "migrate_" + std::to_string(::getpid());
  const std::string admin = shared_cluster().url();
  psql(admin, "CREATE DATABASE " + db);
  const std::string url = admin.substr(0, admin.rfind('/') + 1) + db;
  psql(url, kSchema2);
  psql(url, kOldSession);

  {
    // One commit lane: commits arriving together share a transaction.
    StorageServiceProcess svc(url, 0,
                              {"--database-commit-lanes", "1", "--database-pool-size", "2"});
    CHECK(psql(url, "SELECT max(version) FROM schema_versions") == "5");
    // Debian's PostgreSQL is built with lz4 (migration 5 keeps pglz otherwise).
    CHECK(psql(url,
               "SELECT attcompression FROM pg_attribute WHERE attrelid = 'files'::regclass"
               " AND attname = 'content'") == "l");
    CHECK(psql(url,
               "SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes"
               " WHERE tablename = 'commit_keys'") ==
          "commit_keys_by_version_for_prune,commit_keys_pkey");

    auto c = connect(svc.port(), "mig", "engine-a");
    // A retry of a commit made before the upgrade is replayed, not applied.
    auto r = c->call(commit_request("old", 1, 1, false, {file("cookies.txt", "x")}, {}, "k2"));
    REQUIRE_MESSAGE(r.has_commit_reply(), r.DebugString());
    CHECK(r.commit_reply().replayed());
    CHECK(r.commit_reply().version() == 2);
    // Both stored versions fetch as they were.
    CHECK(content_at(*c, "old", 2, "cookies.txt") == "two");
    CHECK(content_at(*c, "old", 1, "cookies.txt") == "one");
    CHECK(content_at(*c, "old", 1, "journal") == "j");
    CHECK(content_at(*c, "old", 2, "journal") == "<missing>");
    // A new commit alone, then several sessions at once (a batch).
    r = c->call(commit_request("old", 1, 2, false, {file("cookies.txt", "three")}, {}, "k3"));
    REQUIRE_MESSAGE(r.has_commit_reply(), r.DebugString());
    CHECK(r.commit_reply().version() == 3);
    constexpr int kOthers = 8;
    std::vector<std::unique_ptr<WireConnection>> conns;
    for (int i = 0; i <= kOthers; ++i) conns.push_back(connect(svc.port(), "mig", "engine-a"));
    // Commit i of `make` on connection i, all released together (a batch).
    auto at_once = [&](const std::function<wire::Envelope(int)>& make) {
      std::barrier start(kOthers + 1);
      std::vector<wire::Envelope> replies(kOthers + 1);
      std::vector<std::thread> threads;
      for (int i = 0; i <= kOthers; ++i) {
        threads.emplace_back([&, i] {
          auto req = make(i);
          start.arrive_and_wait();
          replies[i] = conns[i]->call(req, std::chrono::seconds(120));
        });
      }
      for (auto& t : threads) t.join();
      for (const auto& rep : replies) REQUIRE_MESSAGE(rep.has_commit_reply(), rep.DebugString());
      return replies;
    };
    auto replies = at_once([](int i) {
      return i == 0 ? commit_request("old", 1, 3, false, {file("cookies.txt", "four")}, {}, "k4")
                    : commit_request("new-" + std::to_string(i), 0, 0, true,
                                     {file("cookies.txt", "n")}, {}, "n1");
    });
    CHECK(replies[0].commit_reply().version() == 4);
    CHECK(content_at(*c, "old", 4, "cookies.txt") == "four");
    CHECK(content_at(*c, "old", 3, "cookies.txt") == "three");
    CHECK(content_at(*c, "old", 2, "cookies.txt") == "two");
    // The keys written before and after the upgrade all replay.
    for (const auto& [key, version] :
         std::vector<std::pair<std::string, std::uint64_t>>{{"k1", 1}, {"k3", 3}, {"k4", 4}}) {
      r = c->call(commit_request("old", 1, 4, false, {file("cookies.txt", "y")}, {}, key));
      REQUIRE_MESSAGE(r.has_commit_reply(), r.DebugString());
      CHECK(r.commit_reply().replayed());
      CHECK(r.commit_reply().version() == version);
    }
    // The manifest stored with the session is now of version 4. A commit by
    // an older release (which does not keep it) makes it stale: the next
    // commit must read the files instead, and close the right rows.
    CHECK(psql(url, "SELECT manifest_version FROM sessions WHERE session_id = 'old'") == "4");
    psql(url, R"sql(
UPDATE files SET valid_to = 5 WHERE namespace = 'mig' AND session_id = 'old' AND valid_to IS NULL;
INSERT INTO files VALUES
  ('mig', 'old', 'cookies.txt', 5, NULL, 1, 384, 0, 5, 'older'::bytea, sha256('older'::bytea)),
  ('mig', 'old', 'extra', 5, NULL, 1, 384, 0, 2, 'ex'::bytea, sha256('ex'::bytea));
UPDATE sessions SET version = 5, total_bytes = 7, file_count = 2
  WHERE namespace = 'mig' AND session_id = 'old';
)sql");
    // In a batch, with sessions whose stored manifests are current.
    replies = at_once([](int i) {
      return i == 0 ? commit_request("old", 1, 5, false, {file("cookies.txt", "six")}, {}, "k6")
                    : commit_request("new-" + std::to_string(i), 1, 1, false,
                                     {file("cookies.txt", "n2")}, {}, "n2");
    });
    CHECK(replies[0].commit_reply().version() == 6);
    for (int i = 1; i <= kOthers; ++i) {
      CHECK(replies[i].commit_reply().version() == 2);
      CHECK(content_at(*c, "new-" + std::to_string(i), 2, "cookies.txt") == "n2");
      CHECK(content_at(*c, "new-" + std::to_string(i), 1, "cookies.txt") == "n");
    }
    auto f = c->call(fetch_request("old"));
    REQUIRE(f.has_fetch_reply());
    CHECK(f.fetch_reply().info().total_bytes() == 5);
    CHECK(f.fetch_reply().files_size() == 2);
    CHECK(content_at(*c, "old", 6, "cookies.txt") == "six");
    CHECK(content_at(*c, "old", 6, "extra") == "ex");
    CHECK(content_at(*c, "old", 5, "cookies.txt") == "older");
    CHECK(psql(url, "SELECT count(*) FROM files WHERE session_id = 'old' AND valid_to IS NULL") ==
          "2");
    // And the one after it uses the manifest stored again.
    r = c->call(commit_request("old", 1, 6, false, {}, {"extra"}, "k7"));
    REQUIRE_MESSAGE(r.has_commit_reply(), r.DebugString());
    CHECK(psql(url, "SELECT manifest_version FROM sessions WHERE session_id = 'old'") == "7");
    f = c->call(fetch_request("old"));
    REQUIRE(f.has_fetch_reply());
    REQUIRE(f.fetch_reply().files_size() == 1);
    CHECK(f.fetch_reply().files(0).content() == "six");
    CHECK(content_at(*c, "old", 6, "extra") == "ex");
  }
  psql(admin, "DROP DATABASE " + db);
}
