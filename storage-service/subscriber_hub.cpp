// SubscriberHub; see subscriber_hub.hpp.
#include "subscriber_hub.hpp"

namespace cookiefs::storage {

void SubscriberHub::add_to(std::unordered_map<std::string, std::set<Id>>& index,
                           const std::string& k, Id id) {
  index[k].insert(id);
}

void SubscriberHub::remove_from(std::unordered_map<std::string, std::set<Id>>& index,
                                const std::string& k, Id id) {
  auto it = index.find(k);
  if (it == index.end()) return;
  it->second.erase(id);
  if (it->second.empty()) index.erase(it);
}

SubscriberHub::Id SubscriberHub::attach(std::weak_ptr<EventSink> sink,
                                        const std::string& namespace_name,
                                        const std::string& engine_id) {
  std::lock_guard lock(mu_);
  const Id id = next_id_++;
  entries_[id] = Entry{std::move(sink), namespace_name, engine_id, false, {}};
  if (!engine_id.empty()) add_to(by_engine_, key(namespace_name, engine_id), id);
  return id;
}

void SubscriberHub::detach(Id id) {
  std::lock_guard lock(mu_);
  auto it = entries_.find(id);
  if (it == entries_.end()) return;
  const Entry& e = it->second;
  for (const auto& s : e.sessions) remove_from(by_session_, key(e.ns, s), id);
  if (e.all) remove_from(all_by_ns_, key(e.ns, ""), id);
  if (!e.engine.empty()) remove_from(by_engine_, key(e.ns, e.engine), id);
  entries_.erase(it);
}

void SubscriberHub::subscribe(Id id, const wire::Subscribe& req) {
  std::lock_guard lock(mu_);
  auto it = entries_.find(id);
  if (it == entries_.end()) return;
  Entry& e = it->second;
  if (req.unsubscribe()) {
    for (const auto& s : req.session_ids()) {
      if (e.sessions.erase(s) > 0) remove_from(by_session_, key(e.ns, s), id);
    }
    if (req.all_sessions() && e.all) {
      e.all = false;
      remove_from(all_by_ns_, key(e.ns, ""), id);
    }
    return;
  }
  for (const auto& s : req.session_ids()) {
    if (e.sessions.insert(s).second) add_to(by_session_, key(e.ns, s), id);
  }
  if (req.all_sessions() && !e.all) {
    e.all = true;
    add_to(all_by_ns_, key(e.ns, ""), id);
  }
}

bool SubscriberHub::to_event(const ChangeNotice& n, wire::Event& ev) {
  using Kind = ChangeNotice::Kind;
  switch (n.kind) {
    case Kind::changed: {
      auto* c = ev.mutable_changed();
      c->set_session_id(n.session_id);
      c->set_version(n.version);
      c->set_epoch(n.epoch);
      c->set_writer(n.engine);
      return true;
    }
    case Kind::owner: {
      auto* o = ev.mutable_owner_changed();
      o->set_session_id(n.session_id);
      o->set_owner(n.engine);
      o->set_epoch(n.epoch);
      o->set_version(n.version);
      return true;
    }
    case Kind::deleted:
      ev.mutable_deleted()->set_session_id(n.session_id);
      return true;
    case Kind::drain: {
      auto* d = ev.mutable_drain();
      d->set_session_id(n.session_id);
      d->set_epoch(n.epoch);
      d->set_deadline_ms(n.deadline_ms);
      return true;
    }
    case Kind::drained:
    case Kind::ready:
      return false;
  }
  return false;
}

std::size_t SubscriberHub::deliver(const ChangeNotice& n) {
  wire::Event ev;
  if (!to_event(n, ev)) return 0;
  std::set<Id> ids;
  std::vector<std::shared_ptr<EventSink>> sinks;
  {
    std::lock_guard lock(mu_);
    const auto collect = [&](const std::unordered_map<std::string, std::set<Id>>& index,
                             const std::string& k) {
      auto it = index.find(k);
      if (it != index.end()) ids.insert(it->second.begin(), it->second.end());
    };
    if (n.kind == ChangeNotice::Kind::drain) {
      collect(by_engine_, key(n.namespace_name, n.engine));
    } else {
      collect(by_session_, key(n.namespace_name, n.session_id));
      collect(all_by_ns_, key(n.namespace_name, ""));
      if (n.kind == ChangeNotice::Kind::owner && !n.engine.empty()) {
        collect(by_engine_, key(n.namespace_name, n.engine));
      }
    }
    for (Id id : ids) {
      auto it = entries_.find(id);
      if (it == entries_.end()) continue;
      if (auto s = it->second.sink.lock()) sinks.push_back(std::move(s));
    }
  }
  for (auto& s : sinks) s->push_event(ev);
  return sinks.size();
}

}  // namespace cookiefs::storage
