// PgPool; see pg_pool.hpp.
#include "pg_pool.hpp"

#include <spdlog/spdlog.h>
#include <pqxx/pqxx>

#include "metrics.hpp"
#include "pg_store.hpp"
#include "store_error.hpp"

namespace cookiefs::storage {
namespace {

// SQLSTATE classes that mean "the database is (temporarily) not there":
// 08 connection exception, 57P0x shutdown/crash, 53 insufficient resources,
// 25006 read-only transaction (a replica after a failover), 40 rollback
// (serialization failure, deadlock): all safe to retry.
bool retryable_sqlstate(const std::string& s) {
  return s.starts_with("08") || s.starts_with("57P") || s.starts_with("53") || s == "25006" ||
         s.starts_with("40");
}

}  // namespace

std::string one_line(const std::string& message) {
  std::string out;
  for (char c : message) {
    if (c == '\n' || c == '\t') {
      if (!out.empty() && out.back() != ' ') out += ' ';
    } else {
      out += c;
    }
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

std::string with_connect_timeout(const std::string& url, std::chrono::milliseconds timeout) {
  const auto secs = std::max<long long>(1, (timeout.count() + 999) / 1000);
  const std::string param = "connect_timeout=" + std::to_string(secs);
  if (url.find("connect_timeout=") != std::string::npos) return url;
  if (url.starts_with("postgresql://") || url.starts_with("postgres://")) {
    return url + (url.find('?') == std::string::npos ? "?" : "&") + param;
  }
  return url + " " + param;
}

PgPool::PgPool(std::string database_url, int size, std::chrono::milliseconds connect_timeout,
               Metrics* metrics)
    : url_(with_connect_timeout(database_url, connect_timeout)),
      metrics_(metrics),
      threads_(static_cast<std::size_t>(size)) {}

PgPool::~PgPool() {
  stop();
}

void PgPool::stop() {
  threads_.join();
  std::lock_guard lock(mu_);
  idle_.clear();
}

std::unique_ptr<pqxx::connection> PgPool::connect() {
  auto c = std::make_unique<pqxx::connection>(url_);
  prepare_statements(*c);
  return c;
}

void PgPool::report_unavailable(const std::string& why) {
  if (healthy_.exchange(false)) {
    spdlog::warn("database unavailable: {}", why);
  } else {
    spdlog::debug("database still unavailable: {}", why);
  }
}

void PgPool::with_connection(const std::function<void(pqxx::connection&)>& fn) {
  // Threads == connections, so there is always an idle one or room for one.
  for (int attempt = 0;; ++attempt) {
    std::unique_ptr<pqxx::connection> conn;
    bool reused = false;
    {
      std::lock_guard lock(mu_);
      if (!idle_.empty()) {
        conn = std::move(idle_.back());
        idle_.pop_back();
        reused = true;
      }
    }
    if (metrics_) metrics_->db_pool_in_use->Increment();
    struct InUse {
      Metrics* m;
      ~InUse() {
        if (m) m->db_pool_in_use->Decrement();
      }
    } in_use{metrics_};
    try {
      if (!conn) conn = connect();
      fn(*conn);
      if (!healthy_.exchange(true)) spdlog::info("database reachable again");
      std::lock_guard lock(mu_);
      idle_.push_back(std::move(conn));
      return;
    } catch (const StoreError&) {
      std::lock_guard lock(mu_);
      if (conn && conn->is_open()) idle_.push_back(std::move(conn));
      throw;
    } catch (const pqxx::in_doubt_error& e) {
      // The commit may or may not have landed; the client's retry with the
      // same idempotency key finds out.
      spdlog::warn("database connection lost during commit; outcome unknown");
      throw StoreError(wire::UNAVAILABLE, "database connection lost during commit");
    } catch (const pqxx::broken_connection& e) {
      // An idle connection may have died with a database restart: one retry
      // on a fresh connection; the statement never ran on the old one.
      if (reused && attempt == 0) {
        spdlog::info("database connection was broken; reconnecting");
        continue;
      }
      report_unavailable(one_line(e.what()));
      throw StoreError(wire::UNAVAILABLE, "database unavailable");
    } catch (const pqxx::sql_error& e) {
      const bool open = conn && conn->is_open();
      if (open) {
        std::lock_guard lock(mu_);
        idle_.push_back(std::move(conn));
      }
      if (!open || retryable_sqlstate(e.sqlstate())) {
        report_unavailable("SQLSTATE " + e.sqlstate());
        throw StoreError(wire::UNAVAILABLE, "database unavailable");
      }
      // The message may quote values (session ids): debug only.
      spdlog::error("database error SQLSTATE {}", e.sqlstate());
      spdlog::debug("database error: {}", e.what());
      throw StoreError(wire::INTERNAL, "database error " + e.sqlstate());
    } catch (const pqxx::failure& e) {
      report_unavailable(one_line(e.what()));
      throw StoreError(wire::UNAVAILABLE, "database unavailable");
    }
  }
}

}  // namespace cookiefs::storage
