// SubscriberHub: which connection of this replica wants which events. The
// change feed hands it every ChangeNotice; it turns the notice into a wire
// Event and pushes it to the matching connections:
//   changed, deleted -> subscribers of the session (or of all sessions) in its namespace
//   owner            -> those subscribers, plus the new owner's connections
//   drain            -> the connections of the engine asked to drain
// Thread-safety: every method may be called from any thread; one internal
// mutex, never held while calling into a sink (sinks may call back).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "change_notice.hpp"
#include "cookiefs.pb.h"

namespace cookiefs::storage {

// Something an event can be pushed to (a client connection). push_event must
// be thread-safe and must not block.
class EventSink {
 public:
  virtual ~EventSink() = default;
  virtual void push_event(const wire::Event& event) = 0;
};

class SubscriberHub {
 public:
  using Id = std::uint64_t;

  Id attach(std::weak_ptr<EventSink> sink, const std::string& namespace_name,
            const std::string& engine_id);
  void detach(Id id);

  // Applies a Subscribe request (ids must already be validated).
  void subscribe(Id id, const wire::Subscribe& req);

  // Returns how many sinks the event was pushed to.
  std::size_t deliver(const ChangeNotice& notice);

  // Builds the wire event of a notice; false for notices that are not events
  // (drained, ready).
  static bool to_event(const ChangeNotice& notice, wire::Event& event);

 private:
  struct Entry {
    std::weak_ptr<EventSink> sink;
    std::string ns;
    std::string engine;
    bool all = false;
    std::set<std::string> sessions;
  };
  static std::string key(const std::string& a, const std::string& b) { return a + '/' + b; }
  void add_to(std::unordered_map<std::string, std::set<Id>>& index, const std::string& k, Id id);
  void remove_from(std::unordered_map<std::string, std::set<Id>>& index, const std::string& k,
                   Id id);

  std::mutex mu_;
  Id next_id_ = 1;
  std::unordered_map<Id, Entry> entries_;
  std::unordered_map<std::string, std::set<Id>> by_session_;  // "ns/session"
  std::unordered_map<std::string, std::set<Id>> all_by_ns_;   // "ns/"
  std::unordered_map<std::string, std::set<Id>> by_engine_;   // "ns/engine"
};

}  // namespace cookiefs::storage
