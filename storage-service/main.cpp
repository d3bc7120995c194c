// storage-service: the stateless server between cookiefs mounts and
// PostgreSQL. main() wires the pieces together: config, metrics and health
// endpoint, schema migration, database pool, change feed, subscriber hub,
// network threads, and the SIGTERM/SIGINT shutdown (a clean stop, exit 0, at
// any point of the start-up too). Exit codes: 0 ok, 1 runtime failure, 2 usage
// or config error.
#include <spdlog/spdlog.h>
#include <unistd.h>
#include <CLI/CLI.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>
#include <pqxx/pqxx>

#include <atomic>
#include <iostream>
#include <optional>
#include <thread>
#include <vector>

#include "change_feed.hpp"
#include "commit_batcher.hpp"
#include "config.hpp"
#include "connection.hpp"
#include "handoff.hpp"
#include "health_http.hpp"
#include "logging.hpp"
#include "metrics.hpp"
#include "pg_pool.hpp"
#include "schema.hpp"
#include "server.hpp"
#include "service_config.hpp"
#include "store_error.hpp"
#include "subscriber_hub.hpp"
#include "version.hpp"

namespace storage = cookiefs::storage;

namespace {

constexpr const char* kProgram = "storage-service";

// What /readyz reports. Written by main and the signal handler, read by the
// health endpoint's thread.
struct ServiceState {
  std::atomic<bool> serving{false};   // migrated and accepting connections
  std::atomic<bool> draining{false};  // SIGTERM/SIGINT received
};

// Migrations run once at start-up; a database that is not up yet (the
// service and PostgreSQL starting together) is waited for, within reason.
// The waits run the io_context so a SIGTERM meanwhile is noticed: returns
// nullopt when stopped that way.
std::optional<int> migrate_with_retry(storage::PgPool& pool, asio::io_context& io,
                                      const std::atomic<bool>& stop_requested) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (;;) {
    if (stop_requested) return std::nullopt;
    try {
      int v = 0;
      pool.run_here([&](pqxx::connection& c) { v = storage::migrate(c); });
      return v;
    } catch (const storage::StoreError& e) {
      if (e.code() != cookiefs::wire::UNAVAILABLE || std::chrono::steady_clock::now() > deadline) {
        throw;
      }
      spdlog::warn("database not reachable yet; retrying");
      io.restart();
      io.run_for(std::chrono::seconds(1));
    }
  }
}

std::string make_server_id() {
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  std::string id = host;
  for (char& c : id) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.') c = '-';
  }
  return (id.empty() ? "storage" : id) + "-" + std::to_string(getpid());
}

}  // namespace

int main(int argc, char** argv) {
  storage::ServiceConfig cfg;
  cookiefs::ConfigSchema schema(kProgram);
  storage::register_keys(schema, cfg);
  CLI::App app{"cookiefs storage-service: the protocol server in front of PostgreSQL", kProgram};
  app.set_version_flag("--version", std::string(kProgram) + " " + COOKIEFS_VERSION);
  bool print_config = false;
  app.add_flag("--print-config", print_config,
               "load and check the configuration, print it (secrets redacted), exit");
  schema.bind(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  try {
    schema.load();
    storage::check(cfg, schema.config_path().empty() ? kProgram : schema.config_path());
  } catch (const cookiefs::ConfigError& e) {
    std::cerr << kProgram << ": " << e.what() << "\n";
    return 2;
  }
  if (print_config) {
    std::cout << schema.dump() << std::flush;
    return 0;
  }
  cookiefs::init_logging(kProgram, cfg.log_level);

  try {
    // Declared before the io_context: connections still held by its
    // handlers use them while it is destroyed.
    ServiceState state;
    storage::Metrics metrics;
    std::optional<cookiefs::HealthHttpServer> health;
    if (!cfg.metrics_listen.empty()) {
      health.emplace(cfg.metrics_listen, [&]() -> cookiefs::Readiness {
        if (state.draining) return cookiefs::Readiness::no("draining: shutting down");
        if (!state.serving) return cookiefs::Readiness::no("starting: database schema not ready");
        // The feed's gauge, not the feed: it outlives every other piece.
        if (metrics.change_feed_connected->Value() < 1) {
          return cookiefs::Readiness::no("database unreachable: change feed not listening");
        }
        return cookiefs::Readiness::yes();
      });
      health->add_collectable(metrics.registry);
    }

    storage::PgPool pool(cfg.database_url, static_cast<int>(cfg.pool_size), cfg.connect_timeout,
                         &metrics);
    // After the pool (its lanes run on the pool's threads), so destroyed first.
    storage::CommitBatcher commits(pool, storage::commit_lanes(cfg),
                                   static_cast<std::size_t>(cfg.commit_batch_max), &metrics);
    storage::SubscriberHub hub;
    storage::Handoff handoff;
    storage::AcceptAnyToken tokens;
    storage::ServiceContext ctx{
        .config = cfg,
        .limits = {.max_file_bytes = cfg.max_file_bytes.bytes,
                   .max_session_bytes = cfg.max_session_bytes.bytes,
                   .max_files_per_session = static_cast<std::uint64_t>(cfg.max_files_per_session),
                   .history_versions = cfg.history_versions},
        .pool = pool,
        .commits = commits,
        .hub = hub,
        .handoff = handoff,
        .metrics = metrics,
        .tokens = tokens,
        .server_id = make_server_id(),
    };

    asio::io_context io(static_cast<int>(cfg.threads));
    std::atomic<bool> stop_requested{false};
    std::optional<storage::Server> server;

    // Registered before anything slow, so SIGTERM during the start-up (the
    // migration waiting for PostgreSQL) is a clean stop, not a kill.
    asio::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&](const asio::error_code& ec, int sig) {
      if (ec) return;
      state.draining = true;
      stop_requested = true;
      if (!server) {
        spdlog::info("signal {}: stopping during start-up", sig);
        io.stop();
        return;
      }
      spdlog::info("signal {}: stopping (grace {}ms)", sig, cfg.shutdown_grace.count());
      asio::co_spawn(
          io, [&]() -> asio::awaitable<void> { co_await server->shutdown(cfg.shutdown_grace); },
          [&](std::exception_ptr) { io.stop(); });
    });

    const auto schema_version = migrate_with_retry(pool, io, stop_requested);
    if (!schema_version) {
      pool.stop();
      spdlog::info("stopped");
      return 0;
    }

    std::optional<storage::ChangeFeed> feed;
    feed.emplace(
        cfg.database_url, cfg.connect_timeout,
        [&](const storage::ChangeNotice& n) {
          hub.deliver(n);
          handoff.signal(n);
        },
        &metrics);
    feed->start();
    // A replica that accepts subscribers before it LISTENs would miss the
    // changes they subscribed for: give the feed a moment before opening up.
    const auto feed_deadline = std::chrono::steady_clock::now() + 2 * cfg.connect_timeout;
    while (!feed->connected() && !stop_requested &&
           std::chrono::steady_clock::now() < feed_deadline) {
      io.restart();
      io.run_for(std::chrono::milliseconds(10));
    }
    if (stop_requested) {
      feed->stop();
      pool.stop();
      spdlog::info("stopped");
      return 0;
    }
    if (!feed->connected()) spdlog::warn("change feed not connected yet; starting anyway");

    server.emplace(io, ctx);
    const auto [host, port] = storage::split_host_port(cfg.listen);
    server->listen(host, port);
    server->start();
    state.serving = true;
    spdlog::info("storage-service {} listening on {} (schema version {}, {} network threads)",
                 COOKIEFS_VERSION, cfg.listen, *schema_version, cfg.threads);

    io.restart();
    std::vector<std::thread> threads;
    for (int i = 1; i < cfg.threads; ++i) threads.emplace_back([&] { io.run(); });
    io.run();
    for (auto& t : threads) t.join();
    feed->stop();
    pool.stop();
    spdlog::info("stopped");
    return 0;
  } catch (const std::exception& e) {
    spdlog::error("fatal: {}", e.what());
    return 1;
  }
}
