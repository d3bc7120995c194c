// CommitBatcher; see commit_batcher.hpp.
#include "commit_batcher.hpp"

#include <asio/associated_executor.hpp>
#include <asio/async_result.hpp>
#include <asio/executor_work_guard.hpp>
#include <asio/post.hpp>
#include <asio/use_awaitable.hpp>
#include <pqxx/pqxx>

#include <memory>
#include <tuple>

#include "metrics.hpp"
#include "pg_pool.hpp"
#include "store_error.hpp"

namespace cookiefs::storage {
namespace {

// Lock order of a batch: by namespace, then session.
auto lock_key(const auto& pending) {
  return std::tie(pending.scope.namespace_name, pending.req->session_id());
}

}  // namespace

CommitBatcher::CommitBatcher(PgPool& pool, std::size_t lanes, std::size_t max_batch,
                             Metrics* metrics)
    : pool_(pool), metrics_(metrics), queue_(lanes, max_batch) {}

CommitBatcher::~CommitBatcher() {
  std::unique_lock lock(mu_);
  lanes_done_.wait(lock, [&] { return queue_.running() == 0; });
}

asio::awaitable<wire::CommitReply> CommitBatcher::commit(const Scope& scope,
                                                         const wire::CommitSession& req,
                                                         const Limits& limits) {
  check_commit_request(req, limits);  // a malformed commit never reaches a batch
  return asio::async_initiate<decltype(asio::use_awaitable),
                              void(std::exception_ptr, wire::CommitReply)>(
      [this](auto handler, Scope s, const wire::CommitSession* r, Limits l) {
        using Handler = decltype(handler);
        auto work = asio::make_work_guard(asio::get_associated_executor(handler));
        // std::function needs a copyable target; the handler is move-only.
        auto h = std::make_shared<Handler>(std::move(handler));
        auto w = std::make_shared<decltype(work)>(std::move(work));
        enqueue({std::move(s), r, l, [h, w](std::exception_ptr e, wire::CommitReply reply) {
                   auto ex = asio::get_associated_executor(*h);
                   asio::post(ex, [h, e, reply = std::move(reply)]() mutable {
                     std::move (*h)(e, std::move(reply));
                   });
                 }});
      },
      asio::use_awaitable, scope, &req, limits);
}

void CommitBatcher::enqueue(Pending p) {
  bool start;
  {
    std::lock_guard lock(mu_);
    start = queue_.push(std::move(p));
  }
  if (start) pool_.post([this] { lane(); });
}

void CommitBatcher::lane() {
  std::vector<Pending> batch;
  {
    std::lock_guard lock(mu_);
    batch = queue_.take([](const Pending& p) { return lock_key(p); });
    if (batch.empty()) {
      lanes_done_.notify_all();
      return;
    }
  }
  if (metrics_) metrics_->commit_batch_size->Observe(static_cast<double>(batch.size()));
  auto outcomes = run_batch(batch);
  for (std::size_t i = 0; i < batch.size(); ++i) {
    batch[i].done(outcomes[i].error, std::move(outcomes[i].reply));
  }
  pool_.post([this] { lane(); });
}

std::vector<CommitBatcher::Outcome> CommitBatcher::run_batch(const std::vector<Pending>& batch) {
  std::vector<Outcome> out(batch.size());
  try {
    pool_.run_here([&](pqxx::connection& c) {
      // Built here: a retry on a fresh connection starts over.
      std::vector<BatchCommit> commits;
      commits.reserve(batch.size());
      for (const auto& p : batch) commits.push_back({&p.scope, p.req, &p.limits, nullptr, {}});
      pqxx::work t(c);
      commit_batch(t, commits);
      t.commit();
      for (std::size_t i = 0; i < batch.size(); ++i) {
        out[i] = Outcome{commits[i].error, std::move(commits[i].reply)};
      }
    });
    return out;
  } catch (const StoreError& e) {
    if (e.code() != wire::INTERNAL || batch.size() == 1) {
      for (auto& o : out) o = Outcome{std::current_exception(), {}};
      return out;
    }
  }
  // An unexpected SQL error aborted the whole transaction: find out whose it
  // was by committing each alone.
  for (std::size_t i = 0; i < batch.size(); ++i) {
    const auto& p = batch[i];
    try {
      pool_.run_here([&](pqxx::connection& c) {
        out[i].reply = storage::commit(c, p.scope, *p.req, p.limits);
      });
      out[i].error = nullptr;
    } catch (...) {
      out[i].error = std::current_exception();
    }
  }
  return out;
}

}  // namespace cookiefs::storage
