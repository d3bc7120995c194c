// Metric families; see metrics.hpp.
#include "metrics.hpp"

#include <mutex>

#include "version.hpp"

namespace cookiefs::mount {

const char* op_name(Op op) {
  static const char* names[] = {"lookup",     "forget",   "getattr", "setattr", "readlink",
                                "mknod",      "mkdir",    "unlink",  "rmdir",   "symlink",
                                "rename",     "link",     "open",    "read",    "write",
                                "flush",      "release",  "fsync",   "opendir", "readdir",
                                "releasedir", "fsyncdir", "statfs",  "xattr",   "create"};
  return names[static_cast<int>(op)];
}

class Metrics::Refreshing final : public prometheus::Collectable {
 public:
  explicit Refreshing(std::shared_ptr<prometheus::Registry> r) : registry_(std::move(r)) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
    {
      std::lock_guard lock(mu_);
      if (refresh_) refresh_();
    }
    return registry_->Collect();
  }
  void set(std::function<void()> refresh) {
    std::lock_guard lock(mu_);
    refresh_ = std::move(refresh);
  }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  mutable std::mutex mu_;
  std::function<void()> refresh_;
};

Metrics::Metrics(const std::string& listen)
    : registry_(std::make_shared<prometheus::Registry>()),
      collectable_(std::make_shared<Refreshing>(registry_)) {
  using namespace prometheus;
  auto& req = BuildCounter()
                  .Name("cookiefs_fuse_requests_total")
                  .Help("FUSE requests by operation")
                  .Register(*registry_);
  auto& err = BuildCounter()
                  .Name("cookiefs_fuse_errors_total")
                  .Help("FUSE requests answered with an error, by operation")
                  .Register(*registry_);
  auto& dur = BuildHistogram()
                  .Name("cookiefs_fuse_request_duration_seconds")
                  .Help("FUSE request handling time")
                  .Register(*registry_);
  const Histogram::BucketBoundaries fuse_buckets{1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3,
                                                 0.01, 0.05, 0.1,  0.5,  1,    5};
  for (int i = 0; i < static_cast<int>(Op::count_); ++i) {
    const std::string name = op_name(static_cast<Op>(i));
    requests_[i] = &req.Add({{"op", name}});
    errors_[i] = &err.Add({{"op", name}});
    durations_[i] = &dur.Add({{"op", name}}, fuse_buckets);
  }
  commits_ = &BuildCounter()
                  .Name("cookiefs_commits_total")
                  .Help("Session commits by result")
                  .Register(*registry_);
  commit_duration_ = &BuildHistogram()
                          .Name("cookiefs_commit_duration_seconds")
                          .Help("Time from snapshot to commit reply")
                          .Register(*registry_)
                          .Add({}, Histogram::BucketBoundaries{1e-4, 5e-4, 1e-3, 5e-3, 0.01, 0.05,
                                                               0.1, 0.5, 1, 5, 15});
  dirty_bytes = &BuildGauge()
                     .Name("cookiefs_dirty_bytes")
                     .Help("Bytes of changed files not yet committed")
                     .Register(*registry_)
                     .Add({});
  sessions_pending = &BuildGauge()
                          .Name("cookiefs_sessions_pending")
                          .Help("Sessions waiting for a commit or an adoption")
                          .Register(*registry_)
                          .Add({});
  sessions_held = &BuildGauge()
                       .Name("cookiefs_sessions_held")
                       .Help("Sessions this mount holds")
                       .Register(*registry_)
                       .Add({});
  storage_connected = &BuildGauge()
                           .Name("cookiefs_storage_connected")
                           .Help("1 while connected to a storage-service replica")
                           .Register(*registry_)
                           .Add({});
  events = &BuildCounter()
                .Name("cookiefs_events_received_total")
                .Help("Events pushed by the storage service")
                .Register(*registry_)
                .Add({});
  quarantined = &BuildCounter()
                     .Name("cookiefs_quarantined_total")
                     .Help("Snapshots kept aside because they could not be committed")
                     .Register(*registry_)
                     .Add({});
  uring_requests = &BuildCounter()
                        .Name("cookiefs_fuse_io_uring_requests_total")
                        .Help("FUSE requests served through io_uring rings (fuse.io_uring)")
                        .Register(*registry_)
                        .Add({});
  BuildGauge()
      .Name("cookiefs_build_info")
      .Help("Build identity")
      .Register(*registry_)
      .Add({{"version", COOKIEFS_VERSION}})
      .Set(1);
  if (!listen.empty()) {
    // Not ready until main() installs the real check (storage reachable).
    http_ = std::make_unique<HealthHttpServer>(listen, [] { return Readiness::no("starting"); });
    http_->add_collectable(collectable_);
  }
}

void Metrics::on_scrape(std::function<void()> refresh) {
  collectable_->set(std::move(refresh));
}

void Metrics::arrived(Op op) {
  requests_[static_cast<std::size_t>(op)]->Increment();
}

void Metrics::answered(Op op, std::chrono::steady_clock::duration took, int err) {
  const auto i = static_cast<std::size_t>(op);
  if (err) errors_[i]->Increment();
  durations_[i]->Observe(std::chrono::duration<double>(took).count());
}

void Metrics::set_readiness(HealthHttpServer::ReadinessCheck ready) {
  if (http_) http_->set_readiness(std::move(ready));
}

void Metrics::commit(const std::string& result, double seconds) {
  commits_->Add({{"result", result}}).Increment();
  commit_duration_->Observe(seconds);
}

}  // namespace cookiefs::mount
