// Shared pieces of the storage-service integration tests: one private
// PostgreSQL cluster per test binary (each test case isolates itself with its
// own namespace), and small builders for requests. Single-threaded use.
#pragma once

#include <doctest/doctest.h>

#include <atomic>
#include <cstdio>
#include <string>
#include <vector>

#include "cookiefs.pb.h"
#include "pg_cluster.hpp"
#include "storage_service_process.hpp"
#include "wire_connection.hpp"

namespace cookiefs::test {

inline PgCluster& shared_cluster() {
  static PgCluster cluster;
  cluster.start();
  return cluster;
}

// A namespace no other test case uses.
inline std::string fresh_namespace() {
  static std::atomic<int> n{0};
  return "ns-" + std::to_string(::getpid()) + "-" + std::to_string(++n);
}

inline wire::FileEntry file(const std::string& path, const std::string& content,
                            wire::FileKind kind = wire::REGULAR) {
  wire::FileEntry f;
  f.set_path(path);
  f.set_kind(kind);
  f.set_mode(kind == wire::DIRECTORY ? 0755 : 0600);
  f.set_mtime_ns(1'700'000'000'000'000'000);
  f.set_size(content.size());
  f.set_content(content);
  return f;
}

inline wire::Envelope commit_request(const std::string& session, std::uint64_t epoch,
                                     std::uint64_t base, bool create,
                                     const std::vector<wire::FileEntry>& changed,
                                     const std::vector<std::string>& deleted = {},
                                     const std::string& key = "") {
  wire::Envelope env;
  auto* c = env.mutable_commit();
  c->set_session_id(session);
  c->set_writer_epoch(epoch);
  c->set_base_version(base);
  c->set_create(create);
  for (const auto& f : changed) *c->add_changed() = f;
  for (const auto& d : deleted) c->add_deleted(d);
  c->set_idempotency_key(key);
  return env;
}

inline wire::Envelope fetch_request(const std::string& session, std::uint64_t at_version = 0,
                                    bool manifest_only = false) {
  wire::Envelope env;
  auto* f = env.mutable_fetch();
  f->set_session_id(session);
  f->set_at_version(at_version);
  f->set_manifest_only(manifest_only);
  return env;
}

inline wire::Envelope assign_request(const std::string& session, const std::string& engine,
                                     std::uint32_t grace_ms, bool create = false) {
  wire::Envelope env;
  auto* a = env.mutable_assign();
  a->set_session_id(session);
  a->set_engine_id(engine);
  a->set_grace_ms(grace_ms);
  a->set_create(create);
  return env;
}

// Error code of a reply, ERROR_UNSPECIFIED when it is not an error.
inline wire::ErrorCode error_of(const wire::Envelope& env) {
  return env.has_error() ? env.error().code() : wire::ERROR_UNSPECIFIED;
}

// A connection that said hello in `ns` (as `engine`).
inline std::unique_ptr<WireConnection> connect(std::uint16_t port, const std::string& ns,
                                               const std::string& engine = "") {
  auto c = std::make_unique<WireConnection>(port);
  auto reply = c->hello(ns, engine);
  REQUIRE_MESSAGE(reply.has_hello_reply(), reply.DebugString());
  return c;
}

// Runs SQL through psql (the tests link no libpq) against `url`; returns its
// unaligned output without the trailing newline. Fails the test on error.
inline std::string psql(const std::string& url, const std::string& sql) {
  const std::string cmd = "psql -X -v ON_ERROR_STOP=1 -Atq '" + url + "' 2>&1 <<'COOKIEFS_SQL'\n" +
                          sql + "\nCOOKIEFS_SQL";
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::string out;
  char buf[256];
  while (std::fgets(buf, sizeof buf, p) != nullptr) out += buf;
  const int status = ::pclose(p);
  REQUIRE_MESSAGE(status == 0, out);
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

}  // namespace cookiefs::test
