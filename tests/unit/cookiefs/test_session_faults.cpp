// Fault injection on the SessionCache's seams (session_fakes.hpp): a fake
// storage service, a disk that fails or loses unsynced writes, a manual
// clock. Each test drives the cache the way the commit queue and the FUSE
// handlers do (process(), sync(), files written into the session's tree) and
// checks what PostgreSQL (the fake) and the cache dir hold afterwards.
// Deterministic: no worker threads (the queue has none), no timing.
#include <doctest/doctest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "session_cache.hpp"
#include "session_fakes.hpp"

using namespace cookiefs;
using namespace cookiefs::mount;
using namespace cookiefs::mount::test;
namespace fs = std::filesystem;

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void put(const fs::path& p, const std::string& data) {
  std::ofstream(p, std::ios::binary | std::ios::trunc) << data;
}

// Every file under <cache>/quarantine/*/files/<name>, concatenated.
std::string quarantined(const fs::path& cache, const std::string& name) {
  std::string out;
  std::error_code ec;
  for (const auto& d : fs::directory_iterator(cache / "quarantine", ec)) {
    const fs::path f = d.path() / "files" / name;
    if (fs::exists(f)) out += slurp(f) + ";";
  }
  return out;
}

// One mount (engine-a) over a fresh cache dir, with the three fakes.
struct Mount {
  fs::path dir;
  MountConfig cfg;
  FakeStore& store;
  std::unique_ptr<FaultyDisk> disk_owner;  // a restart is a new process: a new one
  FaultyDisk* disk_ = nullptr;
  ManualTime time;
  CommitQueue queue{std::chrono::milliseconds(0), std::chrono::milliseconds(0)};
  std::unique_ptr<SessionCache> cache;

  Mount(FakeStore& st, fs::path d, std::string engine = "engine-a") : dir(std::move(d)), store(st) {
    cfg.cache_dir = dir.string();
    cfg.engine_id = std::move(engine);
    cfg.affinity = "strict";
    cfg.commit_fsync_timeout = std::chrono::milliseconds(20);
    open();
  }
  ~Mount() { queue.stop(); }
  FaultyDisk& disk() { return *disk_; }

  // A restart of the daemon on the same cache dir.
  void open() {
    queue.stop();
    cache.reset();
    disk_owner = std::make_unique<FaultyDisk>();
    disk_ = disk_owner.get();
    cache = std::make_unique<SessionCache>(cfg, store, queue, *disk_, time);
    cache->open();
    queue.start([this](const std::string& id) { return cache->process(id); }, 0);
  }
  fs::path file(const std::string& id, const std::string& name) const {
    return fs::canonical(dir) / "sessions" / id / "files" / name;
  }
  // What a FUSE write does: the bytes land in the backing file, then the change is noted.
  void write(const std::string& id, const std::string& name, const std::string& data) {
    auto s = cache->find(id);
    REQUIRE(s);
    put(file(id, name), data);
    cache->note_change(*s);
  }
  std::uint64_t manifest_version(const std::string& id) {
    return decode_manifest(slurp(fs::canonical(dir) / "sessions" / id / "manifest")).version;
  }
};

// The errno a call fails with as the kernel would see it; 0 when it succeeds.
template <class Call>
int errno_of(Call&& call) {
  try {
    call();
    return 0;
  } catch (const Errno& e) {
    return e.code;
  }
}

struct TempDir {
  fs::path path;
  TempDir() {
    static int n = 0;
    path = fs::temp_directory_path() /
           ("cookiefs-faults-" + std::to_string(::getpid()) + "-" + std::to_string(++n));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

}  // namespace

TEST_CASE("a new session commits once, and fsync of an untouched fetched one succeeds") {
  TempDir a, b;
  FakeStore store;
  Mount ma(store, a.path);
  ma.cache->create("s1");
  ma.write("s1", "cookies.txt", "a=1");
  REQUIRE(ma.cache->process("s1"));
  CHECK(store.content("s1", "cookies.txt") == "a=1");
  CHECK(ma.manifest_version("s1") == 1);

  // Another host fetches it: its first fsync (SQLite's, on a hot journal)
  // comes before any change. It used to answer EIO.
  Mount mb(store, b.path, "engine-b");
  auto s = mb.cache->get_or_fetch("s1");
  CHECK(slurp(mb.file("s1", "cookies.txt")) == "a=1");
  CHECK_NOTHROW(mb.cache->sync(*s));
}

TEST_CASE("a commit whose reply is lost (reconnect mid-commit) lands exactly once") {
  TempDir a;
  FakeStore store;
  Mount m(store, a.path);
  m.cache->create("s1");
  m.write("s1", "cookies.txt", "a=1");
  store.lose_next_commit_reply = true;
  CHECK_FALSE(m.cache->process("s1"));  // transient: retried
  CHECK(store.sessions["s1"].version == 1);
  CHECK(m.cache->process("s1"));  // resent with the same idempotency key
  CHECK(store.sessions["s1"].version == 1);
  CHECK(m.manifest_version("s1") == 1);
  CHECK(m.cache->counters.quarantined == 0);
}

TEST_CASE("a fenced commit is kept aside, the new owner's state adopted, fsync answers EIO") {
  TempDir a;
  FakeStore store;
  Mount m(store, a.path);
  m.cache->create("s1");
  m.write("s1", "cookies.txt", "mine-1");
  REQUIRE(m.cache->process("s1"));
  // The NM moved the session to engine-b, which committed its own jar.
  store.move_owner("s1", "engine-b");
  {
    auto& fs1 = store.sessions["s1"];
    fs1.files["cookies.txt"].set_content("theirs");
    fs1.files["cookies.txt"].set_size(6);
    fs1.files["cookies.txt"].set_sha256(sha256("theirs"));
    ++fs1.version;
  }
  // A write this host made before it learned of the move.
  m.write("s1", "cookies.txt", "mine-2");
  auto s = m.cache->find("s1");
  CHECK_THROWS_AS(m.cache->sync(*s), Errno);
  CHECK(m.cache->counters.fenced == 1);
  CHECK(store.content("s1", "cookies.txt") == "theirs");   // never overwritten
  CHECK(slurp(m.file("s1", "cookies.txt")) == "theirs");   // adopted
  CHECK(quarantined(a.path, "cookies.txt") == "mine-2;");  // kept aside
}

TEST_CASE("rebase after a crash: a landed commit whose manifest write was lost") {
  TempDir a;
  FakeStore store;
  Mount m(store, a.path);
  m.cache->create("s1");
  m.write("s1", "cookies.txt", "a=1");
  REQUIRE(m.cache->process("s1"));
  m.write("s1", "cookies.txt", "a=2");
  // The commit lands; the manifest that records it cannot be written (the
  // cache dir filled up), and the daemon dies before it could retry.
  m.disk().fail_durable_writes = ENOSPC;
  CHECK_FALSE(m.cache->process("s1"));
  CHECK(m.cache->counters.work_failures == 1);
  CHECK(store.sessions["s1"].version == 2);
  CHECK(m.manifest_version("s1") == 1);
  m.disk().fail_durable_writes = 0;
  m.open();  // restart on the same cache dir
  m.cache->recover();
  CHECK(m.cache->process("s1"));
  // Its own commit found and taken as the base: nothing sent twice, nothing
  // quarantined, and the manifest caught up.
  CHECK(store.sessions["s1"].version == 2);
  CHECK(m.cache->counters.quarantined == 0);
  CHECK(m.manifest_version("s1") == 2);
  CHECK(slurp(m.file("s1", "cookies.txt")) == "a=2");
}

TEST_CASE("ENOSPC while creating a session is ENOSPC, and nothing is left behind") {
  TempDir a;
  FakeStore store;
  Mount m(store, a.path);
  m.disk().fail_writes = ENOSPC;
  CHECK(errno_of([&] { m.cache->create("s1"); }) == ENOSPC);
  CHECK(m.cache->find("s1") == nullptr);
  m.disk().fail_writes = 0;
  CHECK_NOTHROW(m.cache->create("s1"));
}

TEST_CASE(
    "a commit that cannot reach the service: fsync gives EIO, the change is kept and lands later") {
  TempDir a;
  FakeStore store;
  Mount m(store, a.path);
  m.cache->create("s1");
  m.write("s1", "cookies.txt", "a=1");
  REQUIRE(m.cache->process("s1"));
  m.write("s1", "cookies.txt", "a=2");
  store.reachable = false;
  auto s = m.cache->find("s1");
  CHECK_THROWS_AS(m.cache->sync(*s), Errno);           // commit.fsync_timeout passed
  CHECK(slurp(m.file("s1", "cookies.txt")) == "a=2");  // nothing reverted
  store.reachable = true;
  CHECK(m.cache->process("s1"));
  CHECK(store.content("s1", "cookies.txt") == "a=2");
  CHECK_NOTHROW(m.cache->sync(*s));
}

TEST_CASE(
    "a database restored from an older backup: its state is adopted, the cache's kept aside") {
  TempDir a;
  FakeStore store;
  Mount m(store, a.path);
  m.cache->create("s1");
  m.write("s1", "cookies.txt", "v1");
  REQUIRE(m.cache->process("s1"));
  const FakeSession backup = store.sessions["s1"];
  m.write("s1", "cookies.txt", "v2");
  REQUIRE(m.cache->process("s1"));
  REQUIRE(m.manifest_version("s1") == 2);
  store.restore_backup("s1", backup);
  // The mount reconnects (the service came back with the restored database).
  m.cache->reconnected();
  CHECK(m.cache->process("s1"));
  CHECK(slurp(m.file("s1", "cookies.txt")) == "v1");
  CHECK(m.manifest_version("s1") == 1);
  CHECK(quarantined(a.path, "cookies.txt") == "v2;");
  // And it carries on from the database's version, no conflict.
  m.write("s1", "cookies.txt", "v3");
  CHECK(m.cache->process("s1"));
  CHECK(store.sessions["s1"].version == 2);
  CHECK(store.content("s1", "cookies.txt") == "v3");
}

TEST_CASE("a torn tree (the daemon died mid write-back) is reverted to the committed version") {
  TempDir a;
  FakeStore store;
  Mount m(store, a.path);
  m.cache->create("s1");
  m.write("s1", "cookies.sqlite", "page1-v1");
  REQUIRE(m.cache->process("s1"));
  // Writeback cache: the mark is made before pages land, then the daemon dies.
  auto s = m.cache->find("s1");
  m.cache->note_write_back(*s);
  put(m.file("s1", "cookies.sqlite"), "page1-half");
  m.open();
  m.cache->recover();
  CHECK(m.cache->process("s1"));
  CHECK(slurp(m.file("s1", "cookies.sqlite")) == "page1-v1");
  CHECK(quarantined(a.path, "cookies.sqlite") == "page1-half;");
  CHECK(store.sessions["s1"].version == 1);  // the torn tree never reached the service
}

TEST_CASE("a drain commits what is pending under the old epoch, confirms, and stops writes") {
  TempDir a;
  FakeStore store;
  Mount m(store, a.path);
  m.cache->create("s1");
  m.write("s1", "cookies.txt", "a=1");
  REQUIRE(m.cache->process("s1"));
  m.write("s1", "cookies.txt", "a=2");  // pending when the drain arrives
  const std::uint64_t epoch = store.sessions["s1"].epoch;
  m.cache->drain_requested("s1", epoch, 1000);
  CHECK(m.cache->process("s1"));
  CHECK(store.content("s1", "cookies.txt") == "a=2");
  REQUIRE(store.drains_done.size() == 1);
  CHECK(store.drains_done[0] == epoch);
  auto s = m.cache->find("s1");
  CHECK_THROWS_AS(m.cache->ensure_writable(*s), Errno);  // retired until the owner moves
  // The retirement ends by the clock if the hand-off never completes.
  m.time.advance(std::chrono::seconds(13));
  CHECK_NOTHROW(m.cache->ensure_writable(*s));
}

TEST_CASE("offline lookup of an unknown session is 'unreachable', never ENOENT") {
  TempDir a;
  FakeStore store;
  Mount m(store, a.path);
  store.reachable = false;
  CHECK(errno_of([&] { m.cache->get_or_fetch("elsewhere"); }) == kUnreachable);
  store.reachable = true;
  CHECK(errno_of([&] { m.cache->get_or_fetch("elsewhere"); }) == ENOENT);
}

TEST_CASE("a session id of 128 characters commits (the idempotency key stays within bounds)") {
  TempDir a;
  FakeStore store;
  Mount m(store, a.path);
  const std::string id(128, 'x');
  m.cache->create(id);
  m.write(id, "c", "1");
  // The fake checks what the service checks.
  REQUIRE(m.cache->process(id));
  CHECK(store.sessions[id].version == 1);
  for (const auto& [key, reply] : store.sessions[id].keys) CHECK(key.size() <= 128);
}

TEST_CASE("offline mkdir of a session this host does not hold is refused, never forked") {
  TempDir a;
  FakeStore store;
  Mount m(store, a.path);
  store.reachable = false;
  CHECK(errno_of([&] { m.cache->create("maybe-elsewhere"); }) == EAGAIN);
  CHECK(m.cache->find("maybe-elsewhere") == nullptr);
  store.reachable = true;
  CHECK_NOTHROW(m.cache->create("maybe-elsewhere"));
}
