// Metrics; see metrics.hpp.
#include "metrics.hpp"

#include "version.hpp"

namespace cookiefs::storage {
namespace {

const prometheus::Histogram::BucketBoundaries kLatencyBuckets{
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};

}  // namespace

Metrics::Metrics() : registry(std::make_shared<prometheus::Registry>()) {
  using namespace prometheus;
  requests = &BuildCounter()
                  .Name("cookiefs_storage_requests_total")
                  .Help("Requests handled, by operation and result (ok or error code)")
                  .Register(*registry);
  request_duration = &BuildHistogram()
                          .Name("cookiefs_storage_request_duration_seconds")
                          .Help("Time from a request's arrival to its reply, by operation")
                          .Register(*registry);
  commit_duration = &BuildHistogram()
                         .Name("cookiefs_storage_commit_duration_seconds")
                         .Help(
                             "Time of a commit in the database layer, waiting for its group-commit "
                             "batch included")
                         .Register(*registry)
                         .Add({}, kLatencyBuckets);
  commit_batch_size =
      &BuildHistogram()
           .Name("cookiefs_storage_commit_batch_size")
           .Help("Commits per group-commit transaction")
           .Register(*registry)
           .Add({}, prometheus::Histogram::BucketBoundaries{1, 2, 4, 8, 16, 32, 64, 128});
  connections = &BuildGauge()
                     .Name("cookiefs_storage_connections")
                     .Help("Open client connections")
                     .Register(*registry)
                     .Add({});
  db_pool_in_use = &BuildGauge()
                        .Name("cookiefs_storage_db_pool_in_use")
                        .Help("Database connections running a statement")
                        .Register(*registry)
                        .Add({});
  events_pushed = &BuildCounter()
                       .Name("cookiefs_storage_events_pushed_total")
                       .Help("Events pushed to subscribed connections")
                       .Register(*registry)
                       .Add({});
  bad_frames = &BuildCounter()
                    .Name("cookiefs_storage_bad_frames_total")
                    .Help("Connections closed because of a malformed frame")
                    .Register(*registry)
                    .Add({});
  notices_received = &BuildCounter()
                          .Name("cookiefs_storage_notices_received_total")
                          .Help("Change notices received from PostgreSQL LISTEN")
                          .Register(*registry)
                          .Add({});
  change_feed_connected = &BuildGauge()
                               .Name("cookiefs_storage_change_feed_connected")
                               .Help("1 while the LISTEN connection is up")
                               .Register(*registry)
                               .Add({});
  auth_failures = &BuildCounter()
                       .Name("cookiefs_storage_auth_failures_total")
                       .Help(
                           "Connections refused or closed for their credentials, by reason "
                           "(no_token, bad_token, engine_id, revoked)")
                       .Register(*registry);
  credential_reloads_failed =
      &BuildCounter()
           .Name("cookiefs_storage_credential_reloads_failed_total")
           .Help("Reloads of auth.credentials_file that failed (the previous credentials stay)")
           .Register(*registry)
           .Add({});
  tls_handshake_failures =
      &BuildCounter()
           .Name("cookiefs_storage_tls_handshake_failures_total")
           .Help(
               "TLS handshakes that failed (plaintext clients, untrusted or missing certificates)")
           .Register(*registry)
           .Add({});
  BuildGauge()
      .Name("cookiefs_storage_build_info")
      .Help("Build of this storage-service")
      .Register(*registry)
      .Add({{"version", COOKIEFS_VERSION}})
      .Set(1);
}

void Metrics::request_done(const std::string& op, const std::string& result, double seconds) {
  requests->Add({{"op", op}, {"result", result}}).Increment();
  request_duration->Add({{"op", op}}, kLatencyBuckets).Observe(seconds);
}

}  // namespace cookiefs::storage
