// ChangeFeed: one dedicated thread and database connection that LISTENs on
// the replicas' notification channel and hands every ChangeNotice to a
// handler, so a commit through one replica reaches the subscribers of all
// (no polling). If the database goes away it reconnects with capped
// exponential back-off; notices sent while it was away are lost, which is why
// clients re-fetch what they hold after a reconnect of their own.
//
// Thread-safety: the handler runs on the feed's thread and must not block for
// long. start()/stop() from one owning thread; connected() from any.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "change_notice.hpp"

namespace cookiefs::storage {

class Metrics;

class ChangeFeed {
 public:
  using Handler = std::function<void(const ChangeNotice&)>;

  ChangeFeed(std::string database_url, std::chrono::milliseconds connect_timeout, Handler handler,
             Metrics* metrics);
  ~ChangeFeed();
  ChangeFeed(const ChangeFeed&) = delete;
  ChangeFeed& operator=(const ChangeFeed&) = delete;

  void start();
  void stop();
  bool connected() const { return connected_.load(); }

 private:
  void run();
  void listen_once();
  // Sleeps up to d; returns false when stop() was called.
  bool pause(std::chrono::milliseconds d);

  std::string url_;
  Handler handler_;
  Metrics* metrics_;
  std::thread thread_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;  // guarded by mu_
  std::atomic<bool> stop_flag_{false};
  std::atomic<bool> connected_{false};
};

}  // namespace cookiefs::storage
