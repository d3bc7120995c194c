// cookiefs-service-bench: service-level benchmarks that bypass FUSE, driven by
// bench/run.py. Talks to the storage service only through StorageClient, the
// same client the mount uses.
//
//   commits  N writers commit 16 KiB snapshots of their own session as fast as
//            the service acknowledges them (each commit durable in PostgreSQL);
//            prints commits/s and commit latency p50/p99.
//   handoff  assigns each listed session to an engine and times assign -> ready
//            (the call returns once the new owner's mount holds the session).
//
// Results are one JSON object on stdout. Exit codes: 0 ok, 1 runtime failure
// (service unreachable, a commit rejected), 2 usage error.
//
// Thread-safety: writers are plain threads each owning one session; they share
// only the clients (thread-safe) and pre-sized per-writer result vectors.
#include <openssl/sha.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "storage_client.hpp"
#include "version.hpp"

namespace {

using Clock = std::chrono::steady_clock;

struct Latencies {
  std::vector<double> micros;

  void add(Clock::duration d) {
    micros.push_back(std::chrono::duration<double, std::micro>(d).count());
  }
  double percentile(double q) {
    if (micros.empty()) return 0;
    std::sort(micros.begin(), micros.end());
    auto k = static_cast<std::size_t>(q * static_cast<double>(micros.size() - 1) + 0.5);
    return micros[std::min(k, micros.size() - 1)];
  }
};

std::vector<std::unique_ptr<cookiefs::StorageClient>> connect(const std::vector<std::string>& eps,
                                                              int count,
                                                              const std::string& engine_id) {
  std::vector<std::unique_ptr<cookiefs::StorageClient>> clients;
  for (int i = 0; i < count; ++i) {
    cookiefs::ClientOptions o;
    o.endpoints = eps;
    o.engine_id = engine_id;
    o.client_name = "cookiefs-service-bench";
    o.request_timeout = std::chrono::seconds(60);
    clients.push_back(std::make_unique<cookiefs::StorageClient>(o));
    clients.back()->start();
  }
  return clients;
}

// SplitMix64: random, incompressible bytes at a fraction of mt19937_64's
// cost; the client shares the machine's CPUs with PostgreSQL and the service.
struct SplitMix64 {
  std::uint64_t state = 0;
  void seed(std::uint64_t s) { state = s; }
  std::uint64_t operator()() {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
};

void fill_file(cookiefs::wire::FileEntry& f, SplitMix64& rng, std::size_t size) {
  std::string content(size, '\0');
  for (std::size_t i = 0; i < size; i += 8) {
    auto v = rng();
    std::memcpy(content.data() + i, &v, std::min<std::size_t>(8, size - i));
  }
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(content.data()), content.size(), digest);
  f.set_path("cookies.sqlite");
  f.set_kind(cookiefs::wire::REGULAR);
  f.set_mode(0600);
  f.set_mtime_ns(std::chrono::duration_cast<std::chrono::nanoseconds>(
                     std::chrono::system_clock::now().time_since_epoch())
                     .count());
  f.set_size(size);
  f.set_content(std::move(content));
  f.set_sha256(reinterpret_cast<const char*>(digest), sizeof digest);
}

struct CommitOptions {
  std::vector<std::string> storage;
  int writers = 64;
  int connections = 8;
  std::size_t size = 16384;
  double seconds = 5;
  int commits = 0;  // total; when set, replaces the time budget
  std::string prefix = "bench";
  std::string engine_id = "bench-writer";
};

int run_commits(const CommitOptions& o) {
  auto clients = connect(o.storage, o.connections, o.engine_id);
  std::vector<Latencies> lat(o.writers);
  std::atomic<int> remaining{o.commits > 0 ? o.commits : 0};
  std::atomic<bool> failed{false};
  std::string first_error;
  std::mutex error_mu;

  // Creating the sessions is setup, not measured.
  struct Writer {
    std::string session;
    std::uint64_t version = 0, epoch = 0, seq = 0;
    SplitMix64 rng;
  };
  std::vector<Writer> writers(o.writers);
  auto commit = [&](int i) {
    Writer& w = writers[i];
    cookiefs::wire::CommitSession req;
    req.set_session_id(w.session);
    req.set_writer_epoch(w.epoch);
    req.set_base_version(w.version);
    req.set_create(w.version == 0);
    req.set_idempotency_key(w.session + "/" + std::to_string(++w.seq));
    fill_file(*req.add_changed(), w.rng, o.size);
    auto reply = clients[i % clients.size()]->commit(req);
    w.version = reply.version();
    w.epoch = reply.epoch();
  };
  auto guarded = [&](int i) {
    try {
      commit(i);
      return true;
    } catch (const std::exception& e) {
      std::lock_guard lock(error_mu);
      if (!failed.exchange(true)) first_error = e.what();
      return false;
    }
  };
  for (int i = 0; i < o.writers; ++i) {
    writers[i].session = o.prefix + "-w" + std::to_string(i);
    writers[i].rng.seed(i + 1);
    if (!guarded(i)) break;
  }
  if (failed) {
    std::fprintf(stderr, "cookiefs-service-bench: creating sessions failed: %s\n",
                 first_error.c_str());
    return 1;
  }

  const auto start = Clock::now();
  const auto deadline =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.seconds));
  std::vector<std::thread> threads;
  for (int i = 0; i < o.writers; ++i) {
    threads.emplace_back([&, i] {
      while (!failed) {
        if (o.commits > 0) {
          if (remaining.fetch_sub(1) <= 0) break;
        } else if (Clock::now() >= deadline) {
          break;
        }
        auto t0 = Clock::now();
        if (!guarded(i)) break;
        lat[i].add(Clock::now() - t0);
      }
    });
  }
  for (auto& t : threads) t.join();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  if (failed) {
    std::fprintf(stderr, "cookiefs-service-bench: a commit failed: %s\n", first_error.c_str());
    return 1;
  }
  Latencies all;
  for (auto& l : lat) all.micros.insert(all.micros.end(), l.micros.begin(), l.micros.end());
  const auto n = all.micros.size();
  std::printf(
      "{\"commits\": %zu, \"seconds\": %.3f, \"commits_per_s\": %.1f, \"p50_us\": %.1f, "
      "\"p99_us\": %.1f, \"writers\": %d, \"connections\": %d, \"bytes\": %zu}\n",
      n, elapsed, static_cast<double>(n) / elapsed, all.percentile(0.5), all.percentile(0.99),
      o.writers, o.connections, o.size);
  return 0;
}

struct HandoffOptions {
  std::vector<std::string> storage;
  std::string sessions_file;
  std::string to_engine;
  int grace_ms = 0;
};

int run_handoff(const HandoffOptions& o) {
  std::ifstream in(o.sessions_file);
  if (!in) {
    std::fprintf(stderr, "cookiefs-service-bench: cannot read %s\n", o.sessions_file.c_str());
    return 2;
  }
  std::vector<std::string> sessions;
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) sessions.push_back(line);
  auto clients = connect(o.storage, 1, "");
  Latencies lat;
  int ready = 0, drained = 0;
  for (const auto& s : sessions) {
    cookiefs::wire::Assign req;
    req.set_session_id(s);
    req.set_engine_id(o.to_engine);
    req.set_grace_ms(o.grace_ms);
    auto t0 = Clock::now();
    try {
      auto reply = clients[0]->assign(req, std::chrono::seconds(60));
      lat.add(Clock::now() - t0);
      ready += reply.ready();
      drained += reply.drained();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "cookiefs-service-bench: assign failed: %s\n", e.what());
      return 1;
    }
  }
  std::printf(
      "{\"assigns\": %zu, \"p50_us\": %.1f, \"p99_us\": %.1f, \"ready\": %d, \"drained\": %d}\n",
      sessions.size(), lat.percentile(0.5), lat.percentile(0.99), ready, drained);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app("cookiefs-service-bench: storage-service benchmarks without FUSE",
               "cookiefs-service-bench");
  app.set_version_flag("--version", std::string("cookiefs-service-bench ") + COOKIEFS_VERSION);
  app.require_subcommand(1);
  app.footer("Exit codes: 0 ok, 1 runtime failure, 2 usage error.");

  CommitOptions co;
  auto* commits = app.add_subcommand("commits", "durable snapshot commits per second");
  commits->add_option("--storage", co.storage, "storage endpoints HOST:PORT")
      ->required()
      ->delimiter(',');
  commits->add_option("--writers", co.writers, "concurrent writers, one session each")
      ->check(CLI::Range(1, 4096));
  commits->add_option("--connections", co.connections, "client connections shared by writers")
      ->check(CLI::Range(1, 1024));
  commits->add_option("--size", co.size, "bytes per snapshot")->check(CLI::Range(1, 1 << 24));
  commits->add_option("--seconds", co.seconds, "time budget")->check(CLI::Range(0.1, 3600.0));
  commits->add_option("--commits", co.commits, "fixed number of commits instead of a budget")
      ->check(CLI::Range(1, 100000000));
  commits->add_option("--prefix", co.prefix, "session id prefix (unique per run)");
  commits->add_option("--engine-id", co.engine_id, "engine id the writers claim sessions as");

  HandoffOptions ho;
  auto* handoff = app.add_subcommand("handoff", "assign -> ready latency");
  handoff->add_option("--storage", ho.storage, "storage endpoints HOST:PORT")
      ->required()
      ->delimiter(',');
  handoff->add_option("--sessions-file", ho.sessions_file, "session ids, one per line")->required();
  handoff->add_option("--to", ho.to_engine, "engine id to assign the sessions to")->required();
  handoff->add_option("--grace-ms", ho.grace_ms, "drain grace period (0 = server default)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  try {
    if (*commits) return run_commits(co);
    return run_handoff(ho);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cookiefs-service-bench: %s\n", e.what());
    return 1;
  }
}
