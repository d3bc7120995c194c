// Handoff; see handoff.hpp.
#include "handoff.hpp"

#include <asio/post.hpp>
#include <asio/redirect_error.hpp>
#include <asio/use_awaitable.hpp>

namespace cookiefs::storage {

Handoff::Ticket Handoff::expect(asio::any_io_executor ex, ChangeNotice::Kind kind,
                                const std::string& ns, const std::string& session,
                                std::uint64_t epoch) {
  auto t = std::make_shared<Expectation>(std::move(ex), kind, ns, session, epoch);
  std::lock_guard lock(mu_);
  waiting_.push_back(t);
  return t;
}

void Handoff::forget(const Ticket& ticket) {
  std::lock_guard lock(mu_);
  waiting_.remove_if([&](const std::weak_ptr<Expectation>& w) {
    auto s = w.lock();
    return !s || s == ticket;
  });
}

asio::awaitable<bool> Handoff::wait(Ticket t, std::chrono::milliseconds within) {
  // signal() sets `fired` before posting the cancel to this executor, so
  // either we see the flag here or the cancel ends the wait below.
  if (!t->fired) {
    t->timer.expires_after(within);
    asio::error_code ec;
    co_await t->timer.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  forget(t);
  co_return t->fired.load();
}

std::size_t Handoff::signal(const ChangeNotice& n) {
  std::size_t woken = 0;
  std::lock_guard lock(mu_);
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    auto t = it->lock();
    if (!t) {
      it = waiting_.erase(it);
      continue;
    }
    if (t->kind == n.kind && (t->epoch == 0 || t->epoch == n.epoch) && t->session == n.session_id &&
        t->ns == n.namespace_name && !t->fired.exchange(true)) {
      asio::post(t->timer.get_executor(), [t] { t->timer.cancel(); });
      ++woken;
    }
    ++it;
  }
  return woken;
}

}  // namespace cookiefs::storage
