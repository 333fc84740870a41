// pmap/persistent_map.hpp — PersistentMap<K, V>: a concurrent hash map whose
// every write is made durable by a Backend.
//
//   pmap::PersistentMap<std::string, int> map{pmap::SqliteBackend("app.db")};
//   map.insert("apples", 3).get();   // committed to app.db when get() returns
//   map.get("apples");               // std::optional<int>{3}, from memory
//
// (Construct with braces: `map(pmap::SqliteBackend(path))` in parentheses
// would declare a function.)
//
// The whole map lives in memory. Reads (get, contains, size, for_each,
// snapshot) are served from there and never wait for the disk or for the
// writer. A write changes the memory at once and is committed by the map's
// writer thread, together with every other write waiting (group commit: one
// backend transaction); its future completes once the write is durable.
//
// Guarantees:
//   - read your writes: once insert() has returned its future, get() in any
//     thread sees the value or a later one;
//   - per-key order: writes to one key reach the backend in the order the
//     map applied them;
//   - a completed write future means committed in the backend (with the
//     SQLite default, durable against power loss);
//   - a write the backend rejects fails its future, and before it does, the
//     map shows what the backend holds again (a key with a newer write still
//     on its way keeps showing that newer value);
//   - writers faster than the disk wait in insert()/erase()/... once
//     Options::max_pending_writes are queued (back-pressure); readers never do;
//   - the destructor commits every write already accepted; it never throws.
//
// On a shared store (SQLite with mode=shared; see README "Many processes"),
// each map's watcher thread applies other maps' commits to its cache, and
// update() is a compare-and-set in the store.
//
// Thread safety: every member may be called concurrently from any thread,
// except that the map must not be destroyed while other threads still use it,
// nor from one of its own continuations. User code (continuations, on_error)
// never runs on the thread that talks to the backend. docs/threading.md has
// the threads and locks.
#pragma once

#include <absl/container/flat_hash_map.h>

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "pmap/backend.hpp"
#include "pmap/codec.hpp"
#include "pmap/detail/cache.hpp"
#include "pmap/detail/feed.hpp"
#include "pmap/detail/store.hpp"
#include "pmap/error.hpp"
#include "pmap/future.hpp"
#include "pmap/options.hpp"
#include "pmap/watch.hpp"

namespace pmap {

// A group of inserts and erases that apply() commits all-or-nothing and makes
// visible at once. Operations apply in the order added (a later one on the
// same key wins). Not thread-safe: build it on one thread.
template <class K, class V>
class Batch {
 public:
  Batch& insert(K key, V value) {
    ops_.emplace_back(std::move(key), std::optional<V>(std::move(value)));
    return *this;
  }
  Batch& erase(K key) {
    ops_.emplace_back(std::move(key), std::nullopt);
    return *this;
  }
  std::size_t size() const noexcept { return ops_.size(); }
  bool empty() const noexcept { return ops_.empty(); }
  void clear() noexcept { ops_.clear(); }

  // Each operation: the key, and the value to insert (nullopt: erase).
  const std::vector<std::pair<K, std::optional<V>>>& operations() const noexcept { return ops_; }

 private:
  std::vector<std::pair<K, std::optional<V>>> ops_;
};

// Q is a type the map can look K up by: K itself or anything convertible to
// it; for std::string keys, anything convertible to std::string_view (looked
// up without building a std::string).
template <class K, class Q>
concept LookupKeyFor = detail::KeyTraits<K>::template kLookup<Q>;

template <class K, class V>
class PersistentMap final {
  using Traits = detail::KeyTraits<K>;
  using Cache = detail::Cache<K, V>;

 public:
  using key_type = K;
  using mapped_type = V;

  // Opens the map on a backend (moved in), loading every entry into memory.
  // Errors: the backend's (Errc::io, corrupt, locked, ...); Errc::codec
  // naming the key when a stored key or value does not decode.
  template <class B>
    requires std::derived_from<B, Backend> && (!std::is_lvalue_reference_v<B>)
  explicit PersistentMap(B&& backend, Options options = {})
      : PersistentMap(std::unique_ptr<Backend>(std::make_unique<B>(std::move(backend))),
                      std::move(options)) {}

  // Opens the map on a backend URI ("sqlite:app.db", "csv:data.csv", "memory:").
  // Errors: as open_backend(), and as above.
  explicit PersistentMap(std::string_view uri, Options options = {})
      : PersistentMap(open_backend(uri), std::move(options)) {}
  explicit PersistentMap(const char* uri, Options options = {})
      : PersistentMap(std::string_view(uri), std::move(options)) {}

  // Opens the map on a backend you made.
  // Errors: Errc::invalid_argument for a null backend; as above.
  explicit PersistentMap(std::unique_ptr<Backend> backend, Options options = {})
      : cache_(options.shards, [this] { return store_->settled(); }) {
    if (!backend) throw Error(Errc::invalid_argument, "PersistentMap: the backend is null");
    where_ = backend->describe();
    const std::uint64_t position = load(*backend);
    std::optional<detail::Store::Shared> shared;
    if (backend->shared()) {
      shared_ = true;
      origin_ = backend->origin();
      cache_.follow_store();
      shared.emplace(detail::Store::Shared{
          position, origin_, [this] { return !feed_->empty(); },
          [this](Backend::ChangeRead&& read, std::uint64_t settled) {
            observe(std::move(read), settled);
          },
          [this](std::vector<std::pair<std::string, std::string>>&& entries,
                 std::uint64_t settled) { reload(std::move(entries), settled); }});
    }
    const bool local_feed = !shared;  // a shared store's watcher reports every commit
    store_ = std::make_unique<detail::Store>(
        std::move(backend), options, [this](detail::Restore&& r) { restore(std::move(r)); },
        std::move(shared),
        local_feed ? detail::Store::Committed([this](std::span<const Write> writes) {
          if (!feed_->empty()) feed_->publish(events_of(writes));
        })
                   : nullptr);
    feed_->attach(store_->completion());
  }

  PersistentMap(const PersistentMap&) = delete;
  PersistentMap& operator=(const PersistentMap&) = delete;

  // Commits every write already accepted, releases the backend, and runs the
  // continuations (and watch calls) still queued. A failure of that last
  // commit goes to Options::on_error; the destructor never throws.
  ~PersistentMap() {
    store_.reset();
    feed_->close();  // every Subscription is inert from here
  }

  // Inserts or replaces. The future yields the previous value (as the cache
  // saw it) once the write is durable.
  // Errors: thrown now — Errc::codec if the key or value does not encode,
  // Errc::closed after close(); through the future — the backend's error
  // (the cache then shows what the store holds again), or Errc::io after a
  // failed fsync (see flush()).
  Future<std::optional<V>> insert(K key, V value) {
    std::string key_bytes, value_bytes;
    Traits::encode(key, key_bytes);
    Codec<V>::encode(value, value_bytes);
    auto ticket = store_->reserve(1);
    auto state = new_state<std::optional<V>>();
    cache_.insert(std::move(key), std::move(value), state->value.emplace(), [&] {
      return store_->push(
          ticket, Write{Write::Op::put, std::move(key_bytes), std::move(value_bytes)}, state);
    });
    return detail::make_future(std::move(state));
  }

  // Removes key. The future yields the removed value (nullopt, at once, when
  // the key is absent: there is nothing to commit).
  // Errors: as insert().
  template <class Q>
    requires LookupKeyFor<K, Q>
  Future<std::optional<V>> erase(const Q& key) {
    std::string key_bytes;
    Traits::encode(key, key_bytes);
    auto ticket = store_->reserve(1);
    auto state = new_state<std::optional<V>>();
    const bool erased = cache_.erase(key, state->value.emplace(), [&] {
      return store_->push(ticket, Write{Write::Op::erase, std::move(key_bytes), {}}, state);
    });
    if (!erased) return ready(std::move(state), std::optional<V>());
    return detail::make_future(std::move(state));
  }

  // Read-modify-write, atomic with respect to every other write of key:
  // f(std::optional<V>& value) sees the current value (nullopt when absent)
  // and may change it; leaving nullopt erases. The future yields the new
  // value. f runs on the calling thread under the key's shard lock: keep it
  // short, and do not call the map from it. A K is built only when a new key
  // is inserted.
  //
  // On a shared store the update is atomic in the store, across every map
  // and process: a compare-and-set that commits only if the key still holds
  // the value f saw. When another map wrote the key first, the cache takes
  // the stored value and f runs again on it — so f may run more than once
  // (keep it free of side effects), the retries on the completion executor
  // (Options::executor) — until an attempt commits; the future yields that
  // attempt's value. A retry after close() fails with Errc::closed.
  // Errors: whatever f throws propagates (from a retry: through the
  // future), and nothing changes; otherwise as insert().
  template <class Q, class F>
    requires LookupKeyFor<K, Q> && std::is_invocable_v<F&, std::optional<V>&>
  Future<std::optional<V>> update(const Q& key, F f) {
    if (shared_) return shared_update(K(Traits::view(key)), std::move(f));
    std::string key_bytes;
    Traits::encode(key, key_bytes);
    auto ticket = store_->reserve(1);
    auto state = new_state<std::optional<V>>();
    const bool changed = cache_.update(key, f, [&](const std::optional<V>& result, const V*) {
      Write w{result ? Write::Op::put : Write::Op::erase, std::move(key_bytes), {}};
#if defined(__GNUC__) && !defined(__clang__)
// GCC 12, inlining an f that always erases, warns that *result "may be used
// uninitialized" in the branch it can no longer reach.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
      if (result) Codec<V>::encode(*result, w.value);
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
      state->value.emplace(result);  // before the write is queued: it may complete at once
      return store_->push(ticket, std::move(w), state);
    });
    if (!changed) return ready(std::move(state), std::optional<V>());
    return detail::make_future(std::move(state));
  }

  // Applies every operation of batch at once: readers see all of it or none
  // of it, and the backend commits it in one transaction.
  // Errors: as insert() (a failure fails the whole batch, and the cache shows
  // none of it).
  Future<void> apply(const Batch<K, V>& batch) {
    auto state = new_state<void>();
    if (batch.empty()) return ready(std::move(state));
    std::vector<Write> writes;
    std::vector<typename Cache::Change> changes;
    writes.reserve(batch.size());
    changes.reserve(batch.size());
    for (const auto& [key, value] : batch.operations()) {
      Write w{value ? Write::Op::put : Write::Op::erase, {}, {}};
      Traits::encode(key, w.key);
      if (value) Codec<V>::encode(*value, w.value);
      writes.push_back(std::move(w));
      changes.push_back({key, value});
    }
    auto ticket = store_->reserve(writes.size());
    cache_.apply(changes, [&] { return store_->push(ticket, std::move(writes), state); });
    return detail::make_future(std::move(state));
  }

  // Empties the map and the backend.
  // Errors: Errc::closed (thrown) after close(); through the future, as insert().
  Future<void> clear() {
    auto ticket = store_->reserve(1);
    auto state = new_state<void>();
    cache_.clear([&] { return store_->push(ticket, Write{Write::Op::clear, {}, {}}, state); });
    return detail::make_future(std::move(state));
  }

  // Completes when every write accepted before it is durable (Backend::flush).
  // Errors (through the future): the first failure of a write accepted
  // before it, since the previous flush() — also when that write's own
  // future already reported it; Errc::closed after close(). After the
  // backend reported a failed fsync, what the disk holds is unknown: that
  // write, every later write and every flush fail with Errc::io until the
  // map is reopened (reads keep working).
  Future<void> flush() {
    auto state = new_state<void>();
    store_->flush(state);
    return detail::make_future(std::move(state));
  }

  // Completes once this map's cache reflects everything committed to the
  // store before the call, by any map in any process: read others' writes
  // on demand (the watcher applies them by itself soon anyway). On a store
  // only this map writes, completes at once.
  // Errors (through the future): Errc::closed after close(); the store's
  // error when its change record cannot be read (the map reports that to
  // on_error once, keeps serving its cache, and keeps retrying).
  Future<void> refresh() {
    auto state = new_state<void>();
    store_->refresh(state);
    return detail::make_future(std::move(state));
  }

  // Stops accepting writes (they fail with Errc::closed), commits everything
  // accepted, flushes and releases the backend (its file and lock). Reads
  // keep working on the cache. Calling it again completes once the first
  // close has. Errors: like flush().
  Future<void> close() {
    auto state = new_state<void>();
    store_->close(state, detail::Store::CloseReport::earlier_failures);
    return detail::make_future(std::move(state));
  }

  // The value of key, from memory. Never waits for I/O or for the writer.
  template <class Q>
    requires LookupKeyFor<K, Q>
  std::optional<V> get(const Q& key) const {
    return cache_.get(key);
  }

  // Whether key is present, from memory, like get().
  template <class Q>
    requires LookupKeyFor<K, Q>
  bool contains(const Q& key) const {
    return cache_.contains(key);
  }

  std::size_t size() const noexcept { return cache_.size(); }
  bool empty() const noexcept { return size() == 0; }

  // Calls f(const K&, const V&) for every entry, weakly consistent: an entry
  // written meanwhile may or may not be seen, none is seen twice. It holds
  // no lock while f runs, so f may use the map.
  template <class F>
    requires std::is_invocable_v<F&, const K&, const V&>
  void for_each(F f) const {
    cache_.for_each(f);
  }

  // A copy of every entry, weakly consistent like for_each, in no order.
  std::vector<std::pair<K, V>> snapshot() const { return cache_.snapshot(); }

  // Calls f(const pmap::Change<K, V>&) for every change this map sees once
  // it is committed: its own writes (Origin::local; a failed write is never
  // reported) and, on a shared store, every other map's (Origin::remote),
  // per key in commit order. Several remote writes to a key may arrive
  // coalesced into the last one; when the map had to reload the store, the
  // differences it found arrive as remote changes. Calls run on the
  // completion executor (never on the writer's or the backend's threads),
  // one at a time for one subscription. A call that throws goes to
  // Options::on_error, and the feed goes on. The calls stop when the
  // returned Subscription is destroyed or reset().
  template <class F>
    requires std::is_invocable_v<F&, const Change<K, V>&>
  [[nodiscard]] Subscription watch(F f) {
    auto completion = store_->completion();
    auto deliver = [f = std::move(f), completion, where = where_](
                       const detail::Feed::Events& events,
                       const std::atomic<bool>& active) mutable {
      for (const detail::Feed::Event& e : events) {
        if (!active.load()) return;
        try {
          Change<K, V> c;
          c.kind = e.op == Write::Op::put     ? ChangeKind::put
                   : e.op == Write::Op::erase ? ChangeKind::erase
                                              : ChangeKind::clear;
          c.origin = e.local ? Origin::local : Origin::remote;
          if (e.op != Write::Op::clear) c.key = decode_key(e.key, where);
          if (e.op == Write::Op::put && e.value) c.value = decode_value(e.key, *e.value, where);
          f(std::as_const(c));
        } catch (...) {
          completion->report(std::current_exception(), "a watch callback threw", Errc::backend);
        }
      }
    };
    const std::uint64_t id = feed_->subscribe(std::move(deliver));
    return Subscription(id ? feed_ : nullptr, id);
  }

  // The backend, for describe() or backend-specific inspection. Its I/O
  // members must not be called while the map may use it (any time before
  // close() completes), and the reference is valid only until close()
  // completes or the map is destroyed.
  // Errors: Errc::closed once close() has released the backend.
  Backend& backend() const {
    Backend* b = store_->backend();
    if (!b) throw Error(Errc::closed, "the map is closed; its backend was released");
    return *b;
  }

 private:
  template <class T>
  std::shared_ptr<detail::State<T>> new_state() const {
    return std::make_shared<detail::State<T>>(store_->completion());
  }
  template <class T, class... Value>
  static Future<T> ready(std::shared_ptr<detail::State<T>> state, Value&&... value) {
    if constexpr (sizeof...(Value) > 0) state->value.emplace(std::forward<Value>(value)...);
    state->complete(nullptr);
    return detail::make_future(std::move(state));
  }

  static K decode_key(std::string_view bytes, std::string_view where) {
    try {
      return Codec<K>::decode(bytes);
    } catch (const Error& e) {
      detail::rethrow_with_key(e, bytes, where);
    }
  }
  static V decode_value(std::string_view key, std::string_view bytes, std::string_view where) {
    try {
      return Codec<V>::decode(bytes);
    } catch (const Error& e) {
      detail::rethrow_with_key(e, key, where);
    }
  }

  // ---- update() on a shared store: compare-and-set, retried.

  template <class F>
  struct Attempt {
    K key;
    F f;
    std::shared_ptr<detail::State<std::optional<V>>> state;
  };

  template <class F>
  Future<std::optional<V>> shared_update(K key, F f) {
    auto state = new_state<std::optional<V>>();
    auto attempt = std::make_shared<Attempt<F>>(Attempt<F>{std::move(key), std::move(f), state});
    if (!try_update(attempt)) return ready(std::move(state), std::optional<V>());
    return detail::make_future(std::move(state));
  }

  // One attempt: f on the cached value, queued as a write conditional on
  // the store still holding the value f saw. false: the key stays absent
  // (nothing to write).
  template <class F>
  bool try_update(const std::shared_ptr<Attempt<F>>& a) {
    std::string key_bytes;
    Traits::encode(a->key, key_bytes);
    auto ticket = store_->reserve(1);
    return cache_.update(a->key, a->f, [&](const std::optional<V>& result, const V* before) {
      Write w{result ? Write::Op::put : Write::Op::erase, std::move(key_bytes), {}};
      if (result) Codec<V>::encode(*result, w.value);
      std::optional<std::string> expected;
      if (before) Codec<V>::encode(*before, expected.emplace());
      a->state->value.emplace(result);  // before the write is queued: it may complete at once
      return store_->push_conditional(
          ticket, std::move(w), std::move(expected), a->state,
          [this, a](detail::Seq seq, std::optional<std::string> stored) {
            conflicted(a, seq, std::move(stored));
          });
    });
  }

  // On the writer thread: the attempt's write did not apply, the store holds
  // `stored`. The cache shows it, and f runs again on the completion executor.
  template <class F>
  void conflicted(const std::shared_ptr<Attempt<F>>& a, detail::Seq seq,
                  std::optional<std::string> stored) {
    std::optional<V> value;
    try {
      std::string key_bytes;
      Traits::encode(a->key, key_bytes);
      if (stored) value.emplace(decode_value(key_bytes, *stored, where_));
    } catch (...) {
      a->state->complete(std::current_exception());  // the stored value does not decode
      return;
    }
    cache_.conflicted(a->key, std::move(value), seq);
    store_->completion()->post([this, a] {
      try {
        if (!try_update(a)) {
          a->state->value.emplace(std::nullopt);
          a->state->complete(nullptr);
        }
      } catch (...) {
        a->state->complete(std::current_exception());
      }
    });
  }

  // Loads every stored entry; returns the change record's position they
  // reflect (0 on a store only this map writes).
  std::uint64_t load(Backend& backend) {
    const std::string where = backend.describe();
    const auto sink = [&](std::string_view key, std::string_view value) {
      cache_.load(decode_key(key, where), decode_value(key, value, where));
    };
    if (backend.shared()) return backend.scan_at(sink);
    backend.scan(sink);
    return 0;
  }

  // What reloading `entries` changes in the cache, as remote changes for
  // watchers (values compared as bytes).
  detail::Feed::Events differences(
      const std::vector<std::pair<std::string, std::string>>& entries) {
    detail::Feed::Events events;
    absl::flat_hash_map<std::string_view, std::string_view> stored;
    for (const auto& [key, value] : entries) stored.emplace(key, value);
    std::string key_bytes, value_bytes;
    auto compare = [&](const K& key, const V& value) {
      key_bytes.clear();
      Traits::encode(key, key_bytes);
      const auto it = stored.find(key_bytes);
      if (it == stored.end()) {
        events.push_back({Write::Op::erase, key_bytes, std::nullopt, false});
        return;
      }
      value_bytes.clear();
      Codec<V>::encode(value, value_bytes);
      if (value_bytes != it->second)
        events.push_back({Write::Op::put, key_bytes, std::string(it->second), false});
      stored.erase(it);
    };
    cache_.for_each(compare);
    for (const auto& [key, value] : stored)
      events.push_back({Write::Op::put, std::string(key), std::string(value), false});
    return events;
  }

  // A committed group of this map's writes, for the watch feed.
  static detail::Feed::Events events_of(std::span<const Write> writes) {
    detail::Feed::Events events;
    events.reserve(writes.size());
    for (const Write& w : writes)
      events.push_back({w.op, w.key,
                        w.op == Write::Op::put ? std::optional<std::string>(w.value) : std::nullopt,
                        true});
    return events;
  }

  // ---- Shared stores: on the watcher thread.

  // Applies a read of the store's change record: per key, its last change
  // in the read (after the last clear), unless this map made it. A remote
  // change is committed after this map's own commits seen before it in the
  // record (their groups' numbers, the tags): local writes numbered after
  // those keep their value (see Cache::observe).
  void observe(Backend::ChangeRead&& read, detail::Seq settled) {
    const std::string& where = where_;
    detail::Seq own = own_through_;
    std::optional<detail::Seq> clear;
    std::size_t from = 0;  // changes before the last clear do not matter
    std::vector<detail::Seq> after(read.changes.size());
    for (std::size_t i = 0; i < read.changes.size(); ++i) {
      const Backend::RecordedChange& c = read.changes[i];
      if (c.origin == origin_) own = std::max<detail::Seq>(own, c.tag);
      after[i] = own;
      if (c.op == Write::Op::clear) {
        from = i + 1;
        clear = c.origin == origin_ ? std::nullopt : std::optional<detail::Seq>(own);
      }
    }
    // The last change of each key, in commit order.
    absl::flat_hash_map<std::string_view, std::size_t> last;
    for (std::size_t i = from; i < read.changes.size(); ++i) last[read.changes[i].key] = i;
    std::vector<std::size_t> order;
    order.reserve(last.size());
    for (const auto& [key, i] : last) order.push_back(i);
    std::sort(order.begin(), order.end());
    std::vector<typename Cache::Observed> changes;
    changes.reserve(order.size());
    std::optional<Error> undecodable;
    for (const std::size_t i : order) {
      Backend::RecordedChange& c = read.changes[i];
      if (c.origin == origin_) continue;  // in the cache already, or a newer local value
      try {
        std::optional<V> value;
        if (c.op == Write::Op::put && c.value) value.emplace(decode_value(c.key, *c.value, where));
        changes.push_back({decode_key(c.key, where), std::move(value), after[i]});
      } catch (const Error& e) {
        if (!undecodable) undecodable.emplace(e);
      }
    }
    if (clear || !changes.empty()) cache_.observe(clear, changes);
    own_through_ = own;
    cache_.see_through(std::max(own, settled));
    if (!feed_->empty()) {
      // The same, coalesced, for watchers: the last clear, then the last
      // change of each key after it, in commit order.
      detail::Feed::Events events;
      if (from > 0) {
        const Backend::RecordedChange& c = read.changes[from - 1];
        events.push_back({Write::Op::clear, {}, std::nullopt, c.origin == origin_});
      }
      for (const std::size_t i : order) {
        Backend::RecordedChange& c = read.changes[i];
        const Write::Op op = c.op == Write::Op::put && !c.value ? Write::Op::erase : c.op;
        events.push_back({op, std::move(c.key), std::move(c.value), c.origin == origin_});
      }
      feed_->publish(std::move(events));
    }
    if (undecodable) throw *undecodable;
  }

  // The change record no longer reaches back to where this map read last:
  // entries is the whole store, as of a point after every local write
  // numbered up to settled was committed (or failed).
  void reload(std::vector<std::pair<std::string, std::string>>&& entries, detail::Seq settled) {
    if (!feed_->empty()) feed_->publish(differences(entries));
    std::vector<typename Cache::Observed> changes;
    changes.reserve(entries.size());
    std::optional<Error> undecodable;
    for (auto& [key, value] : entries) {
      try {
        changes.push_back({decode_key(key, where_), decode_value(key, value, where_), settled});
      } catch (const Error& e) {
        if (!undecodable) undecodable.emplace(e);
      }
    }
    cache_.observe(settled, changes);
    own_through_ = std::max(own_through_, settled);
    cache_.see_through(own_through_);
    if (undecodable) throw *undecodable;
  }

  // On the writer thread, after a failed commit: the cache shows what the
  // store holds again — from the writes' undo records, or, after a failed
  // clear, from the store read back: decoded here, with no lock held.
  // Entries that do not decode are left out, and the first such error is
  // thrown afterwards (the writer reports it to on_error).
  void restore(detail::Restore&& stored) {
    if (!stored.full) {
      cache_.undo(stored.first, stored.through);
      return;
    }
    std::vector<typename Cache::Change> changes;
    changes.reserve(stored.entries.size());
    std::optional<Error> undecodable;
    for (const auto& [key, value] : stored.entries) {
      try {
        changes.push_back({decode_key(key, stored.where),
                           value ? std::optional<V>(decode_value(key, *value, stored.where))
                                 : std::optional<V>()});
      } catch (const Error& e) {
        if (!undecodable) undecodable.emplace(e);
      }
    }
    cache_.restore(changes, stored.first, stored.through);
    if (undecodable) throw *undecodable;
  }

  Cache cache_;
  // Shared stores: whether the backend is one, this map's origin in the
  // change record, and (watcher thread only) the last of its own groups
  // seen there.
  bool shared_ = false;
  std::uint64_t origin_ = 0;
  detail::Seq own_through_ = 0;
  std::string where_;  // the backend's describe(), for messages
  // watch(); Subscriptions share it. Made before the store (whose threads
  // publish to it), given the store's completion executor after.
  std::shared_ptr<detail::Feed> feed_ = std::make_shared<detail::Feed>();
  std::unique_ptr<detail::Store> store_;  // after cache_: destroyed (and closed) first
};

}  // namespace pmap
