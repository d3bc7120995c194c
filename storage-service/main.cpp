// storage-service: the stateless server between cookiefs mounts and
// PostgreSQL. main() wires the pieces together: config, metrics and health
// endpoint, schema migration, database pool, change feed, subscriber hub,
// network threads, the credentials (loaded at start, reloaded on SIGHUP and
// when the file changes), and the SIGTERM/SIGINT shutdown (a clean stop, exit
// 0, at any point of the start-up too). `storage-service token create` makes
// a token (token_command.cpp). Exit codes: 0 ok, 1 runtime failure, 2 usage
// or config error.
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>
#include <CLI/CLI.hpp>
#include <asio/co_spawn.hpp>
#include <asio/detached.hpp>
#include <asio/io_context.hpp>
#include <asio/signal_set.hpp>
#include <asio/steady_timer.hpp>
#include <pqxx/pqxx>

#include <atomic>
#include <iostream>
#include <optional>
#include <thread>
#include <vector>

#include "authentication.hpp"
#include "change_feed.hpp"
#include "commit_batcher.hpp"
#include "config.hpp"
#include "connection.hpp"
#include "credentials.hpp"
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
#include "tls_context.hpp"
#include "token_command.hpp"
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

// What identifies a version of the credentials file: a change of any of
// these (an edit, or a Kubernetes Secret's symlink swap) triggers a reload.
struct FileStamp {
  dev_t dev = 0;
  ino_t ino = 0;
  off_t size = -1;
  std::int64_t mtime_ns = 0;
  bool operator==(const FileStamp&) const = default;
};

FileStamp stamp_of(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return {};
  return {st.st_dev, st.st_ino, st.st_size,
          static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec};
}

// Reloads auth.credentials_file on SIGHUP and when its stamp changes, and the
// TLS certificate and key on SIGHUP. Files that no longer load keep the
// previous ones (and say so).
class Reloader {
 public:
  Reloader(asio::io_context& io, const storage::ServiceConfig& cfg, storage::Authenticator& auth,
           storage::TlsContexts* tls, storage::Metrics& metrics,
           std::optional<storage::Server>& server)
      : cfg_(cfg),
        auth_(auth),
        tls_(tls),
        metrics_(metrics),
        server_(server),
        hup_(io, SIGHUP),
        poll_(io),
        stamp_(stamp_of(cfg.credentials_file)) {}

  void start() {
    wait_hup();
    if (auth_.tokens_required() && cfg_.credentials_poll.count() > 0) wait_poll();
  }
  void stop() {
    asio::error_code ec;
    hup_.cancel(ec);
    poll_.cancel();
  }

 private:
  void wait_hup() {
    hup_.async_wait([this](const asio::error_code& ec, int) {
      if (ec) return;
      if (tls_) {
        try {
          tls_->reload();
          spdlog::info("SIGHUP: TLS certificate {} reloaded", cfg_.tls_cert_file);
        } catch (const std::exception& e) {
          spdlog::error("TLS certificate not reloaded, the previous one stays: {}", e.what());
        }
      }
      if (auth_.tokens_required()) {
        spdlog::info("SIGHUP: reloading {}", cfg_.credentials_file);
        reload();
      }
      wait_hup();
    });
  }
  void wait_poll() {
    poll_.expires_after(cfg_.credentials_poll);
    poll_.async_wait([this](const asio::error_code& ec) {
      if (ec) return;
      if (const FileStamp now = stamp_of(cfg_.credentials_file); !(now == stamp_)) {
        spdlog::info("{} changed: reloading", cfg_.credentials_file);
        reload();
      }
      wait_poll();
    });
  }
  void reload() {
    stamp_ = stamp_of(cfg_.credentials_file);
    try {
      auto next = std::make_shared<const storage::Credentials>(
          storage::Credentials::load(cfg_.credentials_file));
      const auto n = next->size();
      auth_.replace_credentials(std::move(next));
      if (server_) server_->recheck_credentials();
      spdlog::info("credentials reloaded: {} principals", n);
    } catch (const std::exception& e) {
      metrics_.credential_reloads_failed->Increment();
      spdlog::error("credentials not reloaded, the previous ones stay: {}", e.what());
    }
  }

  const storage::ServiceConfig& cfg_;
  storage::Authenticator& auth_;
  storage::TlsContexts* tls_;
  storage::Metrics& metrics_;
  std::optional<storage::Server>& server_;
  asio::signal_set hup_;
  asio::steady_timer poll_;
  FileStamp stamp_;
};

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
  storage::TokenCommand token_command;
  token_command.bind(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  if (token_command.chosen()) return token_command.run(std::cout, std::cerr);
  std::shared_ptr<storage::CredentialStore> credentials;
  std::unique_ptr<storage::TlsContexts> tls;
  try {
    schema.load();
    storage::check(cfg, schema.config_path().empty() ? kProgram : schema.config_path());
    if (cfg.auth_mode == "tokens") {
      credentials =
          std::make_shared<storage::CredentialStore>(std::make_shared<const storage::Credentials>(
              storage::Credentials::load(cfg.credentials_file)));
    }
    if (cfg.tls_mode == "on") {
      tls = std::make_unique<storage::TlsContexts>(
          storage::TlsFiles{cfg.tls_cert_file, cfg.tls_key_file, cfg.tls_client_ca_file});
    }
  } catch (const cookiefs::ConfigError& e) {
    std::cerr << kProgram << ": " << e.what() << "\n";
    return 2;
  } catch (const std::runtime_error& e) {  // a TLS file that does not load
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
    storage::Authenticator auth(credentials, metrics.auth_failures);
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
        .auth = auth,
        .tls = tls.get(),
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
    std::optional<Reloader> reloader;
    if (credentials || tls) {
      reloader.emplace(io, cfg, auth, tls.get(), metrics, server);
      reloader->start();
    }
    if (credentials) {
      spdlog::info("auth: tokens ({} principals from {})", credentials->current()->size(),
                   cfg.credentials_file);
    } else if (!storage::loopback_host(host)) {
      spdlog::warn(
          "auth: none on {}, which is not a loopback address: anyone who can reach this port "
          "reads and writes every session (set auth.mode: tokens)",
          cfg.listen);
    }
    if (tls) {
      spdlog::info("tls: on (certificate {}{})", cfg.tls_cert_file,
                   cfg.tls_client_ca_file.empty() ? "" : ", client certificates required");
    } else if (!storage::loopback_host(host)) {
      spdlog::warn(
          "tls: off on {}, which is not a loopback address: tokens and cookies cross the network "
          "in plain text (set tls.mode: on)",
          cfg.listen);
    }
    server->start();
    state.serving = true;
    spdlog::info("storage-service {} listening on {} (schema version {}, {} network threads)",
                 COOKIEFS_VERSION, cfg.listen, *schema_version, cfg.threads);

    io.restart();
    std::vector<std::thread> threads;
    for (int i = 1; i < cfg.threads; ++i) threads.emplace_back([&] { io.run(); });
    io.run();
    for (auto& t : threads) t.join();
    if (reloader) reloader->stop();
    feed->stop();
    pool.stop();
    spdlog::info("stopped");
    return 0;
  } catch (const std::exception& e) {
    spdlog::error("fatal: {}", e.what());
    return 1;
  }
}
