// pmap/detail/feed.hpp — the fan-out behind PersistentMap::watch. Not API
// (the map's template needs to see it); the implementation is src/feed.cpp.
//
// The map publishes committed changes as bytes (Event); each subscription
// decodes and delivers them through its own Deliver function, on the
// completion executor, one batch at a time: calls for one subscription
// never overlap, and come in publication order.
//
// Thread safety: every member may be called from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "pmap/backend.hpp"
#include "pmap/detail/completion.hpp"

namespace pmap::detail {

class Feed {
 public:
  struct Event {
    Write::Op op = Write::Op::put;
    std::string key;
    std::optional<std::string> value;
    bool local = true;
  };
  using Events = std::vector<Event>;
  // Delivers a batch; `active` turns false when the subscription is reset
  // meanwhile (stop at the next event). Exceptions go to on_error.
  using Deliver = std::function<void(const Events& events, const std::atomic<bool>& active)>;

  Feed();
  // Where the calls run. Before anyone subscribes (the map's constructor).
  void attach(std::shared_ptr<Completion> completion) noexcept;
  ~Feed();
  Feed(const Feed&) = delete;
  Feed& operator=(const Feed&) = delete;

  // Whether anyone is subscribed: the publishers' cheap first check.
  bool empty() const noexcept { return count_.load(std::memory_order_acquire) == 0; }

  std::uint64_t subscribe(Deliver deliver);
  // See Subscription::reset().
  void unsubscribe(std::uint64_t id) noexcept;
  void publish(Events events);
  // The map is going: every subscription becomes inert.
  void close() noexcept;

  // Reports an exception a callback threw.
  void report(std::exception_ptr error) noexcept;

 private:
  struct Impl;
  struct Sub;
  std::unique_ptr<Impl> impl_;
  std::atomic<std::size_t> count_{0};
};

}  // namespace pmap::detail
