// Group commit against a real database: commits of many sessions arriving at
// once (one connection each, one commit lane so they must share
// transactions) all land with the right versions; a fenced or conflicting
// commit in the same batch is rejected alone; an idempotent retry in a batch
// is replayed, not applied twice. That batches really formed is read from the
// service's cookiefs_storage_commit_batch_size histogram (fewer transactions
// than commits).
#include <doctest/doctest.h>
#include <openssl/sha.h>

#include <barrier>
#include <cstdlib>
#include <functional>
#include <map>
#include <thread>

#include "http_probe.hpp"
#include "ports.hpp"
#include "storage_fixture.hpp"

using namespace cookiefs;
using namespace cookiefs::test;

namespace {

constexpr int kWriters = 24;

struct Service {
  explicit Service(std::vector<std::string> extra = {})
      : process(shared_cluster().url(), 0, [&] {
          std::vector<std::string> args{
              "--metrics-listen",        "127.0.0.1:" + std::to_string(metrics_port),
              "--database-commit-lanes", "1",
              "--database-pool-size",    "2"};
          args.insert(args.end(), extra.begin(), extra.end());
          return args;
        }()) {}
  std::uint16_t metrics_port = free_tcp_port();
  StorageServiceProcess process;
};

// Value of an unlabelled sample (e.g. "cookiefs_storage_commit_batch_size_count").
double sample(std::uint16_t metrics_port, const std::string& name) {
  auto m = http_get(metrics_port, "/metrics");
  REQUIRE(m.has_value());
  const std::string key = "\n" + name + " ";
  const auto at = m->body.find(key);
  REQUIRE_MESSAGE(at != std::string::npos, name);
  return std::strtod(m->body.c_str() + at + key.size(), nullptr);
}

// Runs make_request(i) for i in [0, kWriters) on kWriters connections at once
// (released together by a barrier) and returns the replies in order.
std::vector<wire::Envelope> all_at_once(const std::vector<std::unique_ptr<WireConnection>>& conns,
                                        const std::function<wire::Envelope(int)>& make_request) {
  std::vector<wire::Envelope> replies(conns.size());
  std::barrier start(static_cast<std::ptrdiff_t>(conns.size()));
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < conns.size(); ++i) {
    threads.emplace_back([&, i] {
      auto req = make_request(static_cast<int>(i));
      start.arrive_and_wait();
      replies[i] = conns[i]->call(req, std::chrono::seconds(120));
    });
  }
  for (auto& t : threads) t.join();
  return replies;
}

std::vector<std::unique_ptr<WireConnection>> writers(const Service& svc, const std::string& ns) {
  std::vector<std::unique_ptr<WireConnection>> conns;
  for (int i = 0; i < kWriters; ++i) conns.push_back(connect(svc.process.port(), ns, "engine-a"));
  return conns;
}

std::string sha256_of(const std::string& bytes) {
  unsigned char d[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), d);
  return std::string(reinterpret_cast<const char*>(d), sizeof d);
}

std::string sid(int i) {
  return "gc-" + std::to_string(i);
}

}  // namespace

TEST_CASE("group commit: concurrent commits of many sessions all land, in shared transactions") {
  Service svc;
  const auto ns = fresh_namespace();
  auto conns = writers(svc, ns);

  auto replies = all_at_once(conns, [](int i) {
    return commit_request(sid(i), 0, 0, true, {file("cookies.txt", "v1 of " + sid(i))});
  });
  for (const auto& r : replies) {
    REQUIRE_MESSAGE(r.has_commit_reply(), r.DebugString());
    CHECK(r.commit_reply().version() == 1);
    CHECK(r.commit_reply().epoch() == 1);
  }
  // Several rounds on existing sessions: every commit lands exactly once.
  constexpr int kRounds = 5;
  for (int round = 2; round <= kRounds + 1; ++round) {
    replies = all_at_once(conns, [round](int i) {
      return commit_request(sid(i), 1, static_cast<std::uint64_t>(round - 1), false,
                            {file("cookies.txt", "v" + std::to_string(round) + " of " + sid(i))});
    });
    for (const auto& r : replies) {
      REQUIRE_MESSAGE(r.has_commit_reply(), r.DebugString());
      CHECK(r.commit_reply().version() == static_cast<std::uint64_t>(round));
    }
  }
  auto check = connect(svc.process.port(), ns, "engine-a");
  for (int i = 0; i < kWriters; ++i) {
    auto f = check->call(fetch_request(sid(i)));
    REQUIRE(f.has_fetch_reply());
    CHECK(f.fetch_reply().info().version() == kRounds + 1);
    REQUIRE(f.fetch_reply().files_size() == 1);
    CHECK(f.fetch_reply().files(0).content() ==
          "v" + std::to_string(kRounds + 1) + " of " + sid(i));
  }
  const double commits = sample(svc.metrics_port, "cookiefs_storage_commit_batch_size_sum");
  const double batches = sample(svc.metrics_port, "cookiefs_storage_commit_batch_size_count");
  CHECK(commits == kWriters * (kRounds + 1));
  CHECK(batches < commits);  // with one lane, commits that arrive together share a transaction
}

TEST_CASE("group commit: a fenced or conflicting commit fails alone; retries are replayed") {
  Service svc;
  const auto ns = fresh_namespace();
  auto conns = writers(svc, ns);
  auto replies = all_at_once(conns, [](int i) {
    return commit_request(sid(i), 0, 0, true, {file("cookies.txt", "one")}, {},
                          "key-" + std::to_string(i) + "-1");
  });
  for (const auto& r : replies) REQUIRE_MESSAGE(r.has_commit_reply(), r.DebugString());

  // Move session 0 to another engine: engine-a's epoch 1 is now stale.
  auto nm = connect(svc.process.port(), ns);
  auto a = nm->call(assign_request(sid(0), "engine-b", 200));
  REQUIRE_MESSAGE(a.has_assign_reply(), a.DebugString());
  REQUIRE(a.assign_reply().epoch() == 2);

  // Until batches are seen to have formed (almost always the first try):
  // writer 0 is fenced, writer 1 conflicts (stale base), writer 2 retries its
  // first commit (same key), writer 3 creates a session with a wrong base
  // (rejected inside a savepoint), the rest commit normally.
  std::uint64_t expected = 1;
  for (int attempt = 0; attempt < 5; ++attempt) {
    const double batches_before =
        sample(svc.metrics_port, "cookiefs_storage_commit_batch_size_count");
    replies = all_at_once(conns, [&](int i) {
      switch (i) {
        case 0:
          return commit_request(sid(0), 1, 1, false, {file("cookies.txt", "fenced")});
        case 1:
          return commit_request(sid(1), 1, 0, false, {file("cookies.txt", "stale base")});
        case 2:
          return commit_request(sid(2), 0, 0, true, {file("cookies.txt", "one")}, {}, "key-2-1");
        case 3:
          return commit_request("gc-new-" + std::to_string(attempt), 0, 5, true,
                                {file("cookies.txt", "x")});
        default:
          return commit_request(sid(i), 1, expected, false,
                                {file("cookies.txt", "next " + std::to_string(expected))}, {},
                                "key-" + std::to_string(i) + "-" + std::to_string(expected + 1));
      }
    });
    REQUIRE(error_of(replies[0]) == wire::STALE_EPOCH);
    CHECK(replies[0].error().current_epoch() == 2);
    CHECK(replies[0].error().current_owner() == "engine-b");
    REQUIRE(error_of(replies[1]) == wire::VERSION_CONFLICT);
    REQUIRE_MESSAGE(replies[2].has_commit_reply(), replies[2].DebugString());
    CHECK(replies[2].commit_reply().replayed());
    CHECK(replies[2].commit_reply().version() == 1);
    REQUIRE(error_of(replies[3]) == wire::VERSION_CONFLICT);
    ++expected;
    for (int i = 4; i < kWriters; ++i) {
      REQUIRE_MESSAGE(replies[i].has_commit_reply(), replies[i].DebugString());
      CHECK(replies[i].commit_reply().version() == expected);
      CHECK_FALSE(replies[i].commit_reply().replayed());
    }
    const double batches =
        sample(svc.metrics_port, "cookiefs_storage_commit_batch_size_count") - batches_before;
    if (batches < kWriters) break;
  }
  const double commits = sample(svc.metrics_port, "cookiefs_storage_commit_batch_size_sum");
  const double batches = sample(svc.metrics_port, "cookiefs_storage_commit_batch_size_count");
  CHECK(batches < commits);

  // Nothing of the rejected ones landed; the retried commit did not run twice.
  auto check = connect(svc.process.port(), ns, "engine-a");
  auto f = check->call(fetch_request(sid(0)));
  REQUIRE(f.has_fetch_reply());
  CHECK(f.fetch_reply().info().version() == 1);
  CHECK(f.fetch_reply().files(0).content() == "one");
  f = check->call(fetch_request(sid(1)));
  CHECK(f.fetch_reply().info().version() == 1);
  f = check->call(fetch_request(sid(2)));
  CHECK(f.fetch_reply().info().version() == 1);
  CHECK(error_of(check->call(fetch_request("gc-new-0"))) == wire::NOT_FOUND);
  for (int i = 4; i < kWriters; ++i) {
    f = check->call(fetch_request(sid(i)));
    REQUIRE(f.has_fetch_reply());
    CHECK(f.fetch_reply().info().version() == expected);
    CHECK(f.fetch_reply().files(0).content() == "next " + std::to_string(expected - 1));
  }
  // A retry of a batched commit after it landed: replayed with its version.
  auto r = conns[4]->call(
      commit_request(sid(4), 1, 1, false, {file("cookies.txt", "next 1")}, {}, "key-4-2"));
  REQUIRE_MESSAGE(r.has_commit_reply(), r.DebugString());
  CHECK(r.commit_reply().replayed());
  CHECK(r.commit_reply().version() == 2);
}

TEST_CASE(
    "group commit: racing commits of one session: one wins each round, history stays linear") {
  Service svc;
  const auto ns = fresh_namespace();
  auto c = connect(svc.process.port(), ns, "engine-a");
  REQUIRE(c->call(commit_request("pair", 0, 0, true, {file("a", "1")})).has_commit_reply());
  // Many writers race on one session with the same base: exactly one wins
  // each round, the others get VERSION_CONFLICT, and the history is linear.
  auto conns = writers(svc, ns);
  std::uint64_t version = 1;
  for (int round = 0; round < 3; ++round) {
    auto replies = all_at_once(conns, [&](int i) {
      return commit_request("pair", 1, version, false, {file("a", "w" + std::to_string(i))});
    });
    int won = 0;
    for (const auto& r : replies) {
      if (r.has_commit_reply()) {
        ++won;
        CHECK(r.commit_reply().version() == version + 1);
      } else {
        CHECK(error_of(r) == wire::VERSION_CONFLICT);
      }
    }
    CHECK(won == 1);
    ++version;
  }
  auto f = c->call(fetch_request("pair"));
  REQUIRE(f.has_fetch_reply());
  CHECK(f.fetch_reply().info().version() == version);
  CHECK(f.fetch_reply().files_size() == 1);
}

TEST_CASE("group commit: paths with quotes, backslashes, commas and braces are replaced exactly") {
  // The paths a commit closes travel as one text[] literal: any character a
  // path may hold must survive it, or an old row stays current beside the new.
  Service svc;
  const auto ns = fresh_namespace();
  const std::vector<std::string> paths{"a\"b", "c\\d", "e,f", "{g}", "NULL", "h i", "\"", "j'k"};
  auto conns = writers(svc, ns);
  std::vector<wire::FileEntry> files;
  for (const auto& p : paths) files.push_back(file(p, "one " + p));
  auto replies =
      all_at_once(conns, [&](int i) { return commit_request(sid(i), 0, 0, true, files); });
  for (const auto& r : replies) REQUIRE_MESSAGE(r.has_commit_reply(), r.DebugString());
  // Change half of them and delete the other half, all sessions at once.
  replies = all_at_once(conns, [&](int i) {
    std::vector<wire::FileEntry> changed;
    std::vector<std::string> deleted;
    for (std::size_t k = 0; k < paths.size(); ++k) {
      if (k % 2 == 0) {
        changed.push_back(file(paths[k], "two " + paths[k]));
      } else {
        deleted.push_back(paths[k]);
      }
    }
    return commit_request(sid(i), 1, 1, false, changed, deleted);
  });
  for (const auto& r : replies) REQUIRE_MESSAGE(r.has_commit_reply(), r.DebugString());
  auto check = connect(svc.process.port(), ns, "engine-a");
  for (int i = 0; i < kWriters; ++i) {
    auto f = check->call(fetch_request(sid(i)));
    REQUIRE(f.has_fetch_reply());
    CHECK(f.fetch_reply().info().file_count() == paths.size() / 2);
    REQUIRE(f.fetch_reply().files_size() == static_cast<int>(paths.size() / 2));
    for (const auto& e : f.fetch_reply().files()) CHECK(e.content() == "two " + e.path());
  }
}

TEST_CASE("group commit: batched writes keep every file's bytes, checksum and history") {
  // A batch's writes travel in one statement, the new files' bytes in one
  // binary parameter cut by offsets: several files per commit, of different
  // sizes, with every byte value, an empty one and a directory must come
  // back exactly, at every kept version, and older versions must be pruned.
  constexpr std::uint64_t kKept = 3;
  Service svc({"--history-versions", std::to_string(kKept)});
  const auto ns = fresh_namespace();
  auto conns = writers(svc, ns);
  auto content = [](int i, std::uint64_t version, std::size_t size) {
    std::string c(size, '\0');
    for (std::size_t k = 0; k < size; ++k) {
      c[k] = static_cast<char>((k * 7 + static_cast<std::size_t>(i) * 13 + version * 31) & 0xff);
    }
    return c;
  };
  // Version v of session i: db (size varies), journal (deleted every other
  // version), an empty file and a directory that never change after v1.
  auto files_of = [&](int i, std::uint64_t v) {
    std::vector<wire::FileEntry> changed{
        file("cookies.sqlite", content(i, v, 4096 + static_cast<std::size_t>(i) * 97 + v * 11))};
    if (v % 2 == 1) changed.push_back(file("cookies.sqlite-journal", content(i + 100, v, 300)));
    if (v == 1) {
      changed.push_back(file("empty", ""));
      changed.push_back(file("dir", "", wire::DIRECTORY));
    }
    return changed;
  };
  constexpr std::uint64_t kVersions = 9;
  for (std::uint64_t v = 1; v <= kVersions; ++v) {
    auto replies = all_at_once(conns, [&](int i) {
      std::vector<std::string> deleted;
      if (v % 2 == 0) deleted.push_back("cookies.sqlite-journal");
      return commit_request(sid(i), v == 1 ? 0 : 1, v - 1, v == 1, files_of(i, v), deleted);
    });
    for (const auto& r : replies) {
      REQUIRE_MESSAGE(r.has_commit_reply(), r.DebugString());
      CHECK(r.commit_reply().version() == v);
    }
  }
  auto check = connect(svc.process.port(), ns, "engine-a");
  for (int i = 0; i < kWriters; ++i) {
    for (std::uint64_t v = kVersions - kKept + 1; v <= kVersions; ++v) {
      auto f = check->call(fetch_request(sid(i), v));
      REQUIRE_MESSAGE(f.has_fetch_reply(), f.DebugString());
      const auto& reply = f.fetch_reply();
      CHECK(reply.info().version() == v);
      // The db of version v, the journal only at odd versions, empty, dir.
      std::map<std::string, std::string> want{
          {"cookies.sqlite", content(i, v, 4096 + static_cast<std::size_t>(i) * 97 + v * 11)},
          {"empty", ""},
          {"dir", ""}};
      if (v % 2 == 1) want["cookies.sqlite-journal"] = content(i + 100, v, 300);
      REQUIRE(reply.files_size() == static_cast<int>(want.size()));
      std::uint64_t total = 0;
      for (const auto& e : reply.files()) {
        REQUIRE_MESSAGE(want.contains(e.path()), e.path());
        CHECK(e.content() == want[e.path()]);
        CHECK(e.size() == want[e.path()].size());
        CHECK(e.sha256() == sha256_of(want[e.path()]));
        CHECK(e.kind() == (e.path() == "dir" ? wire::DIRECTORY : wire::REGULAR));
        total += e.size();
      }
      CHECK(reply.info().total_bytes() == total);
    }
    // The current version's session row (sizes, count) matches version 9,
    // which has a journal.
    auto cur = check->call(fetch_request(sid(i), 0, true));
    REQUIRE(cur.has_fetch_reply());
    CHECK(cur.fetch_reply().info().version() == kVersions);
    CHECK(cur.fetch_reply().info().file_count() == 4);
    CHECK(cur.fetch_reply().info().total_bytes() ==
          4096 + static_cast<std::size_t>(i) * 97 + kVersions * 11 + 300);
    CHECK(error_of(check->call(fetch_request(sid(i), kVersions - kKept))) == wire::NOT_FOUND);
  }
  CHECK(sample(svc.metrics_port, "cookiefs_storage_commit_batch_size_count") <
        sample(svc.metrics_port, "cookiefs_storage_commit_batch_size_sum"));
  // Old versions are pruned a few commits at a time (every 4th version):
  // nothing closed before the kept range and three commits back is left.
  CHECK(psql(shared_cluster().url(),
             "SELECT count(*) FROM files WHERE namespace = '" + ns +
                 "' AND valid_to <= " + std::to_string(kVersions - kKept + 1 - 3)) == "0");
  CHECK(psql(shared_cluster().url(), "SELECT count(*) FROM files WHERE namespace = '" + ns +
                                         "' AND valid_to = " + std::to_string(kVersions)) ==
        std::to_string(kWriters));  // version 8's db
}
