// CommitBatcher: group commit. Commits arriving at the same time, from any
// connection, run as one PostgreSQL transaction (one WAL flush for all of
// them) instead of one transaction each. Each keeps its own checks (owner,
// epoch, base version, idempotency key) and its own reply: a rejected one
// writes nothing (commit_in checks before it writes; a creating commit runs
// in a savepoint), so it neither fails nor rolls back the others. Change
// notices are sent per commit inside the transaction, as before.
//
// Up to `lanes` batches run at once, each on a PgPool thread; a lane takes at
// most `max_batch` commits — whatever queued up while its previous
// transaction ran — so an idle service commits at once, without a timer. A
// lane re-posts itself after each batch so fetches queued on the pool run in
// between. If a batch fails on an unexpected SQL error, its commits are
// retried one transaction each, so one bad commit costs only itself; a lost
// database fails the whole batch with UNAVAILABLE (clients retry with their
// idempotency keys).
//
// Thread-safety: commit() may be called from any thread or coroutine. The
// destructor waits for running lanes; the PgPool must outlive this object.
#pragma once

#include <asio/awaitable.hpp>

#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <mutex>
#include <vector>

#include "commit_plan.hpp"
#include "commit_queue.hpp"
#include "cookiefs.pb.h"
#include "pg_store.hpp"

namespace cookiefs::storage {

class PgPool;
class Metrics;

class CommitBatcher {
 public:
  CommitBatcher(PgPool& pool, std::size_t lanes, std::size_t max_batch, Metrics* metrics);
  ~CommitBatcher();
  CommitBatcher(const CommitBatcher&) = delete;
  CommitBatcher& operator=(const CommitBatcher&) = delete;

  // Commits req in the next batch; req must stay alive until this completes.
  // Throws StoreError like commit() in pg_store.hpp.
  asio::awaitable<wire::CommitReply> commit(const Scope& scope, const wire::CommitSession& req,
                                            const Limits& limits);

 private:
  struct Pending {
    Scope scope;
    const wire::CommitSession* req;
    Limits limits;
    std::function<void(std::exception_ptr, wire::CommitReply)> done;
  };
  struct Outcome {
    std::exception_ptr error;
    wire::CommitReply reply;
  };

  void enqueue(Pending p);
  void lane();  // on a PgPool thread
  std::vector<Outcome> run_batch(const std::vector<Pending>& batch);

  PgPool& pool_;
  Metrics* metrics_;
  std::mutex mu_;
  std::condition_variable lanes_done_;
  CommitQueue<Pending> queue_;  // guarded by mu_
};

}  // namespace cookiefs::storage
