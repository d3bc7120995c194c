// Metrics: the daemon's Prometheus families and, when metrics_listen is set,
// the HTTP exposer. No label ever carries a session id or a path.
//
// Thread-safety: request()/commit() may be called from any thread
// (prometheus-cpp metrics are thread-safe); construct once in main().
#pragma once

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <array>
#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "health_http.hpp"

namespace cookiefs::mount {

enum class Op {
  lookup,
  forget,
  getattr,
  setattr,
  readlink,
  mknod,
  mkdir,
  unlink,
  rmdir,
  symlink,
  rename,
  link,
  open,
  read,
  write,
  flush,
  release,
  fsync,
  opendir,
  readdir,
  releasedir,
  fsyncdir,
  statfs,
  xattr,
  create,
  count_
};
const char* op_name(Op op);

class Metrics {
 public:
  // Throws std::exception when the listen address cannot be bound.
  explicit Metrics(const std::string& listen);

  // A request is counted when it arrives, before its reply: once a syscall
  // returned, every request it caused is in cookiefs_fuse_requests_total
  // (a reader of the counter never races the reply). Its duration and error
  // are recorded after the reply.
  void arrived(Op op);
  void answered(Op op, std::chrono::steady_clock::duration took, int err);
  void commit(const std::string& result, double seconds);
  // Runs `refresh` (under a lock of its own) before every scrape of
  // /metrics, so gauges read from the session cache are true when read --
  // right after a commit too -- instead of up to a sampling period old.
  void on_scrape(std::function<void()> refresh);
  // /readyz answers 503 with the check's reason while it says not ready.
  void set_readiness(HealthHttpServer::ReadinessCheck ready);

  prometheus::Gauge* dirty_bytes;
  prometheus::Gauge* sessions_pending;
  prometheus::Gauge* sessions_held;
  prometheus::Gauge* storage_connected;
  prometheus::Counter* events;
  prometheus::Counter* quarantined;
  prometheus::Counter* uring_requests;

 private:
  class Refreshing;  // the registry, refreshed before each Collect()
  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<Refreshing> collectable_;
  std::unique_ptr<HealthHttpServer> http_;  // /metrics, /healthz, /readyz
  std::array<prometheus::Counter*, static_cast<std::size_t>(Op::count_)> requests_{};
  std::array<prometheus::Counter*, static_cast<std::size_t>(Op::count_)> errors_{};
  std::array<prometheus::Histogram*, static_cast<std::size_t>(Op::count_)> durations_{};
  prometheus::Family<prometheus::Counter>* commits_;
  prometheus::Histogram* commit_duration_;
};

}  // namespace cookiefs::mount
