// Database schema and its migrations. migrate() brings a database to the
// newest schema in one transaction under a transaction-scoped advisory lock,
// recording each step in schema_versions, so several replicas may start at the
// same time against one database. Call from one thread (start-up).
//
// Every table is keyed by (namespace, session_id) first and no foreign key or
// statement spans two sessions, so the tables can be distributed (Citus:
// distribution column = session key, co-located) without changing queries.
#pragma once

namespace pqxx {
class connection_base;
}

namespace cookiefs::storage {

// Returns the schema version now in place. Throws pqxx exceptions on failure.
int migrate(pqxx::connection_base& conn);

// The newest version migrate() knows.
int latest_schema_version();

}  // namespace cookiefs::storage
