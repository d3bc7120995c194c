// The prepared statements of PgStore; see pg_statements.hpp.
#include "pg_statements.hpp"

#include <pqxx/pqxx>

#include <string>

namespace cookiefs::storage {
namespace {

// Session columns shared by fetch and list, in SessionInfo order.
constexpr const char* kInfoColumns =
    "session_id, owner, epoch, version, total_bytes, file_count,"
    " (extract(epoch from created_at) * 1000)::bigint,"
    " (extract(epoch from updated_at) * 1000)::bigint";

}  // namespace

void prepare_pg_statements(pqxx::connection_base& c) {
  const std::string info = kInfoColumns;
  c.prepare("session_create",
            "INSERT INTO sessions (namespace, session_id, owner, epoch, version)"
            " VALUES ($1, $2, $3, $4, 0) ON CONFLICT DO NOTHING RETURNING 1");
  c.prepare("session_lock",
            "SELECT owner, epoch, version, manifest_version = version, manifest FROM sessions"
            " WHERE namespace = $1 AND session_id = $2 FOR UPDATE");
  // session_lock, and the commit that stored idempotency key $3 (if any).
  c.prepare("session_lock_key",
            "SELECT s.owner, s.epoch, s.version, s.manifest_version = s.version, s.manifest,"
            " k.version, k.epoch FROM sessions s LEFT JOIN commit_keys k"
            " ON k.namespace = s.namespace AND k.session_id = s.session_id"
            " AND k.idempotency_key = $3 AND $3 <> ''"
            " WHERE s.namespace = $1 AND s.session_id = $2 FOR UPDATE OF s");
  c.prepare("key_lookup",
            "SELECT version, epoch FROM commit_keys"
            " WHERE namespace = $1 AND session_id = $2 AND idempotency_key = $3");
  c.prepare("manifest",
            "SELECT path, size, valid_from FROM files"
            " WHERE namespace = $1 AND session_id = $2 AND valid_to IS NULL");
  c.prepare("file_insert",
            "INSERT INTO files (namespace, session_id, path, valid_from, kind, mode, mtime_ns,"
            " size, content, sha256) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)");
  // The writes of one commit in one round trip. Every part sees the snapshot
  // of the statement's start: the close does not see the row inserted here
  // (but does see rows inserted at this version by earlier statements, so it
  // skips them by valid_from), and the prune does not see rows closed here
  // (with history.versions = 1 they go at the next commit). Keys of the
  // last 128 commits are kept, and any younger than ten minutes: a retry
  // comes long before either bound. The keys pruned are those below the
  // oldest young one's version (all old by definition), so the prune reads
  // only what it deletes, on commit_keys_by_version, not every key of the
  // session.
  const std::string write_common =
      "WITH closed AS (UPDATE files SET valid_to = $3 WHERE namespace = $1 AND session_id = $2"
      " AND valid_to IS NULL AND valid_from < $3 AND path = ANY ($4::text[])),"
      " bumped AS (UPDATE sessions SET version = $3, total_bytes = $5, file_count = $6,"
      " updated_at = now(), manifest = $12, manifest_version = $3"
      " WHERE namespace = $1 AND session_id = $2),"
      " pruned AS (DELETE FROM files WHERE $7 > 0 AND namespace = $1 AND session_id = $2"
      " AND valid_to IS NOT NULL AND valid_to <= $7),"
      " keys_pruned AS (DELETE FROM commit_keys WHERE $8 <> '' AND namespace = $1"
      " AND session_id = $2 AND idempotency_key <> '' AND version <= $3 - 128"
      " AND version < coalesce((SELECT min(version) FROM commit_keys WHERE namespace = $1"
      " AND session_id = $2 AND idempotency_key <> ''"
      " AND created_at >= now() - interval '10 minutes'), $3)),"
      " key_added AS (INSERT INTO commit_keys (namespace, session_id, idempotency_key, version,"
      " epoch) SELECT $1, $2, $8, $3, $9 WHERE $8 <> '')";
  c.prepare("commit_write_none", write_common + " SELECT pg_notify($10, $11)");
  c.prepare("commit_write",
            write_common +
                ", inserted AS (INSERT INTO files (namespace, session_id, path, valid_from, kind,"
                " mode, mtime_ns, size, content, sha256)"
                " VALUES ($1, $2, $13, $3, $14, $15, $16, $17, $18, $19))"
                " SELECT pg_notify($10, $11)");
  c.prepare("notify", "SELECT pg_notify($1, $2)");
  // The owner and epoch a DrainDone/SessionReady is checked against.
  c.prepare("session_owner",
            "SELECT owner, epoch FROM sessions WHERE namespace = $1 AND session_id = $2");
  // Group commit: the writes of every commit of a batch that used the batch
  // reads, in one statement (one parse/plan/executor start-up per batch, not
  // per commit). One row of `c` per commit (each session at most once, so
  // every UPDATE ... FROM matches a row once); closes and new files are rows
  // of their own. New files' content and sha256 come out of one binary
  // parameter ($22) by offset: a bytea[] would travel as hex text. As in
  // commit_write, every part sees the statement's starting snapshot.
  c.prepare(
      "batch_write",
      "WITH c AS MATERIALIZED (SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[],"
      " $4::bigint[], $5::bigint[], $6::bigint[], $7::text[], $8::bigint[], $25::bool[],"
      " $26::bigint[], $27::bigint[]) AS c(ns, id, version, total_bytes, file_count, prune_to,"
      " key, epoch, prune_keys, m_off, m_len)),"
      " closed AS (UPDATE files f SET valid_to = x.version FROM unnest($9::text[], $10::text[],"
      " $11::text[], $12::bigint[], $28::bigint[]) AS x(ns, id, path, version, valid_from)"
      " WHERE f.namespace = x.ns AND f.session_id = x.id AND f.path = x.path"
      " AND f.valid_from = x.valid_from AND coalesce(f.valid_to, 0) = 0),"
      " bumped AS (UPDATE sessions s SET version = c.version, total_bytes = c.total_bytes,"
      " file_count = c.file_count, updated_at = now(),"
      " manifest = substring($22::bytea FROM c.m_off::int FOR c.m_len::int),"
      " manifest_version = c.version FROM c WHERE s.namespace = c.ns AND s.session_id = c.id),"
      " pruned AS (DELETE FROM files f USING c WHERE c.prune_to > 0 AND f.namespace = c.ns"
      " AND f.session_id = c.id AND f.valid_to IS NOT NULL AND f.valid_to <= c.prune_to),"
      " keys_pruned AS (DELETE FROM commit_keys k USING c WHERE c.prune_keys AND c.key <> ''"
      " AND k.namespace = c.ns AND k.session_id = c.id AND k.idempotency_key <> ''"
      " AND k.version <= c.version - 128 AND k.version < coalesce((SELECT min(y.version)"
      " FROM commit_keys y WHERE y.namespace = c.ns AND y.session_id = c.id"
      " AND y.idempotency_key <> '' AND y.created_at >= now() - interval '10 minutes'),"
      " c.version)),"
      " key_added AS (INSERT INTO commit_keys (namespace, session_id, idempotency_key, version,"
      " epoch) SELECT ns, id, key, version, epoch FROM c WHERE key <> ''),"
      " inserted AS (INSERT INTO files (namespace, session_id, path, valid_from, kind, mode,"
      " mtime_ns, size, content, sha256) SELECT ns, id, path, version, kind, mode, mtime, size,"
      " substring($22::bytea FROM off::int FOR size::int),"
      " substring($22::bytea FROM (off + size)::int FOR 32)"
      " FROM unnest($13::text[], $14::text[], $15::text[], $16::bigint[], $17::int[],"
      " $18::int[], $19::bigint[], $20::bigint[], $21::bigint[])"
      " AS n(ns, id, path, version, kind, mode, mtime, size, off))"
      " SELECT pg_notify($23, n) FROM unnest($24::text[]) AS n");
  // Group commit: every session of a batch locked in one statement, in lock
  // order (the sort runs below the row locks), with whether each commit's
  // idempotency key is stored (see commit_in); then, for sessions without a
  // stored manifest, their current files in one more.
  c.prepare("batch_lock",
            "SELECT s.namespace, s.session_id, s.owner, s.epoch, s.version,"
            " s.manifest_version = s.version, s.manifest, k.version, k.epoch"
            " FROM sessions s JOIN unnest($1::text[], $2::text[], $3::text[]) AS b(ns, id, key)"
            " ON s.namespace = b.ns AND s.session_id = b.id"
            " LEFT JOIN commit_keys k ON k.namespace = b.ns AND k.session_id = b.id"
            " AND k.idempotency_key = b.key AND b.key <> ''"
            " ORDER BY s.namespace, s.session_id FOR UPDATE OF s");
  c.prepare("batch_manifests",
            "SELECT namespace, session_id, path, size, valid_from FROM files"
            " WHERE (namespace, session_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))"
            " AND valid_to IS NULL");
  // A whole fetch in one statement (one round trip, no BEGIN/COMMIT: a
  // single statement reads one snapshot): the session row on every row, then
  // its files in path order. Content only when $4. Current files, none when
  // the caller's copy is current ($3 = its version); or the files at version
  // $3, none when it is not kept ($5 = history.versions). Two statements, not
  // one with an OR: a generic plan of the OR scanned every row of the session.
  const std::string fetch_head =
      "SELECT s.*, f.path, f.kind, f.mode, f.mtime_ns, f.size, f.sha256,"
      " CASE WHEN $4::bool THEN f.content END FROM (SELECT " +
      info +
      " FROM sessions WHERE namespace = $1 AND session_id = $2) s"
      " LEFT JOIN LATERAL (SELECT * FROM files f WHERE f.namespace = $1 AND f.session_id = $2";
  c.prepare("fetch_current",
            fetch_head +
                " AND f.valid_to IS NULL AND NOT ($3::bigint > 0 AND s.version <= $3))"
                " f ON true ORDER BY f.path");
  c.prepare("fetch_at", fetch_head +
                            " AND $3::bigint <= s.version AND $3 > s.version - $5::bigint"
                            " AND f.valid_from <= $3 AND (f.valid_to IS NULL OR f.valid_to > $3))"
                            " f ON true ORDER BY f.path");
  c.prepare("list_all", "SELECT " + info +
                            " FROM sessions WHERE namespace = $1 AND session_id > $2"
                            " ORDER BY session_id LIMIT $3");
  c.prepare("list_owner", "SELECT " + info +
                              " FROM sessions WHERE namespace = $1 AND session_id > $2"
                              " AND owner = $4 ORDER BY session_id LIMIT $3");
  c.prepare("session_delete", "DELETE FROM sessions WHERE namespace = $1 AND session_id = $2");
  c.prepare("files_delete", "DELETE FROM files WHERE namespace = $1 AND session_id = $2");
  c.prepare("keys_delete", "DELETE FROM commit_keys WHERE namespace = $1 AND session_id = $2");
  c.prepare("assign_mark",
            "UPDATE sessions SET assign_id = $3,"
            " assign_until = now() + $4 * interval '1 millisecond'"
            " WHERE namespace = $1 AND session_id = $2"
            " AND (assign_until IS NULL OR assign_until < now())"
            " RETURNING owner, epoch, version");
  c.prepare("assign_lock",
            "SELECT owner, epoch, version FROM sessions"
            " WHERE namespace = $1 AND session_id = $2 AND assign_id = $3 FOR UPDATE");
  c.prepare("assign_owner",
            "UPDATE sessions SET owner = $3, epoch = epoch + 1, updated_at = now()"
            " WHERE namespace = $1 AND session_id = $2 RETURNING epoch, version");
  c.prepare("assign_end",
            "UPDATE sessions SET assign_id = NULL, assign_until = NULL"
            " WHERE namespace = $1 AND session_id = $2 AND assign_id = $3");
  c.prepare("release_owner",
            "UPDATE sessions SET owner = '', updated_at = now()"
            " WHERE namespace = $1 AND session_id = $2");
}

}  // namespace cookiefs::storage
