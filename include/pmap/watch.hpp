// pmap/watch.hpp — watching a map's changes: PersistentMap::watch(f) calls
// f(const pmap::Change<K, V>&) for every change the map sees, its own and
// other maps'.
//
//   auto sub = map.watch([](const pmap::Change<std::string, int>& c) {
//     if (c.kind == pmap::ChangeKind::put) std::cout << c.key << " = " << *c.value << "\n";
//   });
//   ...
//   sub.reset();  // no more calls
//
// Thread safety: a Subscription is one owner's (movable, not copyable);
// reset() may be called from any thread, including from inside the callback.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <utility>

namespace pmap {

namespace detail {
class Feed;
}

enum class ChangeKind { put, erase, clear };

// local: written through this map; remote: by any other map, in this
// process or another (on a shared store).
enum class Origin { local, remote };

template <class K, class V>
struct Change {
  ChangeKind kind = ChangeKind::put;
  K key{};                 // a default K for a clear
  std::optional<V> value;  // the value for a put, nullopt otherwise
  Origin origin = Origin::local;
};

// Stops its watch callback when destroyed or reset(). A Subscription that
// outlives its map is inert.
class Subscription {
 public:
  Subscription() = default;
  Subscription(std::shared_ptr<detail::Feed> feed, std::uint64_t id) noexcept
      : feed_(std::move(feed)), id_(id) {}
  Subscription(Subscription&& other) noexcept
      : feed_(std::move(other.feed_)), id_(std::exchange(other.id_, 0)) {}
  Subscription& operator=(Subscription&& other) noexcept {
    if (this != &other) {
      reset();
      feed_ = std::move(other.feed_);
      id_ = std::exchange(other.id_, 0);
    }
    return *this;
  }
  Subscription(const Subscription&) = delete;
  Subscription& operator=(const Subscription&) = delete;
  ~Subscription() { reset(); }

  // No call begins after it returns. It waits for a call already running
  // on another thread to finish; called from inside the callback, it
  // returns at once.
  void reset() noexcept;

  // Whether it is subscribed (not reset, not moved from).
  explicit operator bool() const noexcept { return id_ != 0; }

 private:
  std::shared_ptr<detail::Feed> feed_;
  std::uint64_t id_ = 0;
};

}  // namespace pmap
