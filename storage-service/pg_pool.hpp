// PgPool: the only way request handlers reach PostgreSQL. SQL runs on a
// dedicated thread pool (one thread per pooled connection), never on the
// network threads; run() suspends the calling coroutine and resumes it on its
// own executor with the result.
//
// Connections are made lazily and re-made after a failure, so a database
// restart costs the requests that were in flight (UNAVAILABLE, retryable) and
// nothing else. Database exceptions become StoreError here, in one place:
// connection trouble -> UNAVAILABLE, anything unexpected -> INTERNAL.
//
// Thread-safety: run() may be called from any thread or coroutine. stop()
// once, from the thread that owns the pool, after all run() calls finished.
#pragma once

#include <asio/any_io_executor.hpp>
#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/awaitable.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/post.hpp>
#include <asio/thread_pool.hpp>
#include <asio/use_awaitable.hpp>
#include <pqxx/connection>

#include <atomic>
#include <chrono>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace cookiefs::storage {

class Metrics;

class PgPool {
 public:
  PgPool(std::string database_url, int size, std::chrono::milliseconds connect_timeout,
         Metrics* metrics);
  ~PgPool();
  PgPool(const PgPool&) = delete;
  PgPool& operator=(const PgPool&) = delete;

  // Runs fn(connection) on a database thread; rethrows its StoreError.
  // Deliberately not a coroutine itself: GCC 12 destroys a coroutine's
  // by-value std::function parameter twice when it is moved into a lambda.
  template <typename R>
  asio::awaitable<R> run(std::function<R(pqxx::connection&)> fn) {
    return asio::async_initiate<decltype(asio::use_awaitable), void(std::exception_ptr, R)>(
        [this](auto handler, std::function<R(pqxx::connection&)> work_fn) {
          auto work = asio::make_work_guard(asio::get_associated_executor(handler));
          asio::post(threads_, [this, fn = std::move(work_fn), handler = std::move(handler),
                                work = std::move(work)]() mutable {
            std::exception_ptr error;
            R result{};
            try {
              with_connection([&](pqxx::connection& c) { result = fn(c); });
            } catch (...) {
              error = std::current_exception();
            }
            auto ex = asio::get_associated_executor(handler);
            asio::post(ex,
                       [handler = std::move(handler), error, result = std::move(result)]() mutable {
                         std::move(handler)(error, std::move(result));
                       });
          });
        },
        asio::use_awaitable, std::move(fn));
  }

  // The same, run from the calling thread (start-up work such as migrations,
  // or a job already on a database thread, like a group-commit lane).
  void run_here(const std::function<void(pqxx::connection&)>& fn) { with_connection(fn); }

  // Queues job on a database thread (FIFO with run()'s work); job must not
  // throw. Used by CommitBatcher's lanes.
  void post(std::function<void()> job) { asio::post(threads_, std::move(job)); }

  void stop();

 private:
  void with_connection(const std::function<void(pqxx::connection&)>& fn);
  std::unique_ptr<pqxx::connection> connect();

  // Logs the first failure of an outage at warn and the rest at debug.
  void report_unavailable(const std::string& why);

  std::string url_;
  Metrics* metrics_;
  std::atomic<bool> healthy_{true};
  asio::thread_pool threads_;
  std::mutex mu_;
  std::vector<std::unique_ptr<pqxx::connection>> idle_;  // guarded by mu_
};

// libpq's messages span lines; logs want one.
std::string one_line(const std::string& message);

// Appends libpq's connect_timeout (whole seconds) to a URL or keyword string.
std::string with_connect_timeout(const std::string& url, std::chrono::milliseconds timeout);

}  // namespace cookiefs::storage
