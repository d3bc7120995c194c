// Schema migrations; see schema.hpp. Append new steps; never edit a shipped one.
#include "schema.hpp"

#include <spdlog/spdlog.h>
#include <pqxx/pqxx>

#include <array>

namespace cookiefs::storage {
namespace {

// Arbitrary constant shared by every replica: "cook" in ASCII.
constexpr long long kMigrationLockKey = 0x636f6f6b;

constexpr std::array<const char*, 5> kMigrations{
    // 1: sessions, file versions (history as valid_from/valid_to ranges, so a
    // commit writes only its changed files), idempotency keys of recent commits.
    R"sql(
CREATE TABLE sessions (
  namespace    text        NOT NULL,
  session_id   text        NOT NULL,
  owner        text        NOT NULL DEFAULT '',
  epoch        bigint      NOT NULL,
  version      bigint      NOT NULL,
  total_bytes  bigint      NOT NULL DEFAULT 0,
  file_count   integer     NOT NULL DEFAULT 0,
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_at   timestamptz NOT NULL DEFAULT now(),
  assign_id    text,
  assign_until timestamptz,
  PRIMARY KEY (namespace, session_id)
);
CREATE INDEX sessions_by_owner ON sessions (namespace, owner, session_id);

CREATE TABLE files (
  namespace  text     NOT NULL,
  session_id text     NOT NULL,
  path       text     NOT NULL,
  valid_from bigint   NOT NULL,
  valid_to   bigint,
  kind       smallint NOT NULL,
  mode       integer  NOT NULL,
  mtime_ns   bigint   NOT NULL,
  size       bigint   NOT NULL,
  content    bytea    NOT NULL,
  sha256     bytea    NOT NULL,
  PRIMARY KEY (namespace, session_id, path, valid_from)
);
CREATE INDEX files_current ON files (namespace, session_id, path) WHERE valid_to IS NULL;

CREATE TABLE commit_keys (
  namespace       text        NOT NULL,
  session_id      text        NOT NULL,
  idempotency_key text        NOT NULL,
  version         bigint      NOT NULL,
  epoch           bigint      NOT NULL,
  created_at      timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (namespace, session_id, idempotency_key)
);
)sql",
    // 2: commit keys by version, so a commit prunes old keys by a range scan
    // instead of reading every key of the session (keys younger than ten
    // minutes are kept, so a busy session has thousands).
    R"sql(
CREATE INDEX commit_keys_by_version ON commit_keys (namespace, session_id, version);
)sql",
    // 3: the same index, partial (every stored key is non-empty), so that
    // only the prune (which says idempotency_key <> '') can use it. Before
    // the first ANALYZE the planner took the full one for key look-ups too,
    // reading every key of the session to find one.
    R"sql(
CREATE INDEX commit_keys_by_version_for_prune ON commit_keys (namespace, session_id, version)
  WHERE idempotency_key <> '';
DROP INDEX commit_keys_by_version;
)sql",
    // 4: each session's current files (path, size, first version) stored
    // with it, valid for manifest_version, so a commit reads no file rows.
    // NULL (every session until its next commit) or an older version (a
    // commit by an older release) means: read them from files.
    R"sql(
ALTER TABLE sessions ADD COLUMN manifest bytea, ADD COLUMN manifest_version bigint;
)sql",
    // 5: file contents compressed with lz4 instead of pglz when TOASTed (new
    // values only; old ones stay readable). A SQLite jar of 100 KiB cost the
    // commit ~1 ms of pglz; lz4 takes a fraction of that at a similar ratio.
    // A server built without lz4 keeps pglz.
    R"sql(
DO $$
BEGIN
  ALTER TABLE files ALTER COLUMN content SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported THEN
  RAISE NOTICE 'this PostgreSQL has no lz4: file contents stay pglz-compressed';
END $$;
)sql",
};

}  // namespace

int latest_schema_version() {
  return static_cast<int>(kMigrations.size());
}

int migrate(pqxx::connection_base& conn) {
  pqxx::work w(conn);
  w.exec("SELECT pg_advisory_xact_lock(" + std::to_string(kMigrationLockKey) + ")");
  w.exec(
      "CREATE TABLE IF NOT EXISTS schema_versions ("
      " version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())");
  int current = w.exec1("SELECT coalesce(max(version), 0) FROM schema_versions")[0].as<int>();
  if (current > latest_schema_version()) {
    spdlog::warn("database schema version {} is newer than this build's {}", current,
                 latest_schema_version());
    w.commit();
    return current;
  }
  for (int v = current + 1; v <= latest_schema_version(); ++v) {
    spdlog::info("applying database schema migration {}", v);
    w.exec(kMigrations[v - 1]);
    w.exec("INSERT INTO schema_versions (version) VALUES (" + std::to_string(v) + ")");
  }
  w.commit();
  return latest_schema_version();
}

}  // namespace cookiefs::storage
