// The prepared statements of PgStore (pg_store.cpp): every SQL text of the
// storage-service in one place, named for exec_prepared.
//
// Thread-safety: prepare_pg_statements() runs once per connection, on the
// thread that owns it.
#pragma once

namespace pqxx {
class connection_base;
}

namespace cookiefs::storage {

// Prepares every statement on `conn` (its column order is what pg_store.cpp
// reads: the session columns first, in SessionInfo order, where a statement
// returns a session).
void prepare_pg_statements(pqxx::connection_base& conn);

}  // namespace cookiefs::storage
