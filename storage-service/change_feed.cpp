// ChangeFeed; see change_feed.hpp.
#include "change_feed.hpp"

#include <spdlog/spdlog.h>
#include <pqxx/pqxx>

#include "metrics.hpp"
#include "pg_pool.hpp"

namespace cookiefs::storage {
namespace {

class Receiver final : public pqxx::notification_receiver {
 public:
  Receiver(pqxx::connection_base& c, const ChangeFeed::Handler& handler, Metrics* metrics)
      : pqxx::notification_receiver(c, kNotifyChannel), handler_(handler), metrics_(metrics) {}

  void operator()(const std::string& payload, int) override {
    if (metrics_) metrics_->notices_received->Increment();
    auto notice = decode_notice(payload);
    if (!notice) {
      spdlog::warn("ignoring a malformed change notice ({} bytes)", payload.size());
      return;
    }
    try {
      handler_(*notice);
    } catch (const std::exception& e) {
      spdlog::error("change notice handler failed: {}", e.what());
    }
  }

 private:
  const ChangeFeed::Handler& handler_;
  Metrics* metrics_;
};

}  // namespace

ChangeFeed::ChangeFeed(std::string database_url, std::chrono::milliseconds connect_timeout,
                       Handler handler, Metrics* metrics)
    : url_(with_connect_timeout(database_url, connect_timeout)),
      handler_(std::move(handler)),
      metrics_(metrics) {}

ChangeFeed::~ChangeFeed() {
  stop();
}

void ChangeFeed::start() {
  thread_ = std::thread([this] { run(); });
}

void ChangeFeed::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  stop_flag_ = true;
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool ChangeFeed::pause(std::chrono::milliseconds d) {
  std::unique_lock lock(mu_);
  return !cv_.wait_for(lock, d, [this] { return stopping_; });
}

void ChangeFeed::run() {
  constexpr std::chrono::milliseconds kBackoffMin{100}, kBackoffMax{5000};
  auto backoff = kBackoffMin;
  while (!stop_flag_) {
    try {
      listen_once();
      backoff = kBackoffMin;
    } catch (const std::exception& e) {
      if (connected_.exchange(false)) {
        spdlog::warn("change feed lost its database connection: {}", one_line(e.what()));
      } else {
        spdlog::debug("change feed cannot connect: {}", one_line(e.what()));
      }
      if (metrics_) metrics_->change_feed_connected->Set(0);
      if (!pause(backoff)) break;
      backoff = std::min(backoff * 2, kBackoffMax);
    }
  }
  connected_ = false;
}

void ChangeFeed::listen_once() {
  pqxx::connection conn(url_);
  Receiver receiver(conn, handler_, metrics_);
  connected_ = true;
  if (metrics_) metrics_->change_feed_connected->Set(1);
  spdlog::info("change feed listening");
  auto last_check = std::chrono::steady_clock::now();
  while (!stop_flag_) {
    conn.await_notification(0, 250'000);
    if (!conn.is_open()) throw pqxx::broken_connection("connection closed");
    // A silently dead peer (no FIN) is only noticed by talking to it.
    if (std::chrono::steady_clock::now() - last_check > std::chrono::seconds(10)) {
      pqxx::nontransaction(conn).exec("SELECT 1");
      last_check = std::chrono::steady_clock::now();
    }
  }
}

}  // namespace cookiefs::storage
