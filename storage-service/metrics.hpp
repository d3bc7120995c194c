// Metrics: the storage-service's Prometheus registry and its families. Label
// values are operation names and results only — never session ids or paths.
// Thread-safety: prometheus-cpp metrics are thread-safe; the struct is built
// once at start-up and then only read.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <memory>
#include <string>

namespace cookiefs::storage {

class Metrics {
 public:
  Metrics();

  void request_done(const std::string& op, const std::string& result, double seconds);

  std::shared_ptr<prometheus::Registry> registry;
  prometheus::Family<prometheus::Counter>* requests;
  prometheus::Family<prometheus::Histogram>* request_duration;
  prometheus::Histogram* commit_duration;
  prometheus::Histogram* commit_batch_size;
  prometheus::Gauge* connections;
  prometheus::Gauge* db_pool_in_use;
  prometheus::Counter* events_pushed;
  prometheus::Counter* bad_frames;
  prometheus::Counter* notices_received;
  prometheus::Gauge* change_feed_connected;
  prometheus::Family<prometheus::Counter>* auth_failures;  // {reason}
  prometheus::Counter* credential_reloads_failed;
  prometheus::Counter* tls_handshake_failures;
};

}  // namespace cookiefs::storage
