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
// The whole map lives in memory, in N shards, each an open-addressing hash
// map (absl::flat_hash_map: a lookup reads one group of control bytes and,
// usually, one slot) under its own reader-writer lock
// (detail::ReadMostlyMutex, whose readers write no cache line another
// thread's readers write). Reads (get, contains, size, for_each, snapshot)
// are served from there and never wait for disk or for the writer. A write
// updates the cache and queues the encoded change under the same shard lock,
// so the backend applies writes to one key in the order the cache saw them;
// the writer thread commits everything queued together in one backend
// transaction (group commit) and then completes the futures (with SQLite's
// default durability, a second thread does, after fsyncing the WAL). When the
// backend rejects a commit, the futures of that group fail with the error
// and, before they complete, the cache is put back to what the backend holds
// (keys with a newer queued write keep that newer value).
//
// Guarantees:
//   - read your writes: once insert() has returned its future, get() in any
//     thread sees the value or a later one;
//   - a completed write future means committed in the backend (with the
//     SQLite default, durable against power loss);
//   - writers faster than the disk wait in insert()/erase()/... once
//     Options::max_pending_writes are queued (back-pressure); readers never do;
//   - the destructor commits every write already accepted; it never throws.
//
// Thread safety: every member may be called concurrently from any thread,
// except that the map must not be destroyed while other threads still use it,
// nor from one of its own continuations.
#pragma once

#include <absl/container/flat_hash_map.h>
#include <absl/hash/hash.h>

#include <algorithm>
#include <atomic>
#include <concepts>
#include <cstddef>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>  // std::shared_lock
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <vector>

#include "pmap/backend.hpp"
#include "pmap/codec.hpp"
#include "pmap/detail/completion.hpp"
#include "pmap/detail/read_mostly_mutex.hpp"
#include "pmap/detail/writer.hpp"
#include "pmap/error.hpp"
#include "pmap/future.hpp"
#include "pmap/options.hpp"

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

namespace detail {

// Hashing and equality for the cache: transparent for std::string keys, so
// that a lookup by "literal" or std::string_view builds no std::string.
// absl::Hash: the open-addressing table needs well-mixed bits (std::hash of
// an integer is the integer itself); it falls back to std::hash<K>, mixed,
// for a type that only specialises that.
template <class K>
struct KeyTraits {
  using Hash = absl::Hash<K>;
  using Equal = std::equal_to<K>;
  // K itself, or anything that converts to K (map.get(5) on an int64_t map).
  template <class Q>
  static constexpr bool kLookup =
      std::is_same_v<std::remove_cvref_t<Q>, K> || std::is_convertible_v<const Q&, K>;
  template <class Q>
  static decltype(auto) view(const Q& key) {
    if constexpr (std::is_same_v<std::remove_cvref_t<Q>, K>)
      return (key);  // const K&: no copy
    else
      return K(key);
  }
  template <class Q>
  static void encode(const Q& key, std::string& out) {
    Codec<K>::encode(view(key), out);
  }
  // What the table is searched with, given the key's hash (unused here).
  template <class View>
  static const View& probe(const View& key, std::size_t) noexcept {
    return key;
  }
};

template <>
struct KeyTraits<std::string> {
  // A key with its hash already computed (for the shard), so the table
  // does not hash it a second time.
  struct Hashed {
    std::string_view key;
    std::size_t hash;
  };
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept {
      return absl::Hash<std::string_view>{}(s);
    }
    std::size_t operator()(const Hashed& h) const noexcept { return h.hash; }
  };
  struct Equal {
    using is_transparent = void;
    bool operator()(std::string_view a, std::string_view b) const noexcept { return a == b; }
    bool operator()(const Hashed& a, std::string_view b) const noexcept { return a.key == b; }
    bool operator()(std::string_view a, const Hashed& b) const noexcept { return a == b.key; }
  };
  static Hashed probe(std::string_view key, std::size_t hash) noexcept { return {key, hash}; }
  template <class Q>
  static constexpr bool kLookup = std::is_convertible_v<const Q&, std::string_view>;
  static std::string_view view(std::string_view key) noexcept { return key; }
  static void encode(std::string_view key, std::string& out) { out.append(key); }
};

// Adds the key to a decoding error: "... (key "k" in sqlite:/x.db#kv)".
[[noreturn]] inline void rethrow_with_key(const Error& e, std::string_view key_bytes,
                                          std::string_view where) {
  constexpr std::size_t kShown = 80;
  std::string key(key_bytes.substr(0, kShown));
  if (key_bytes.size() > kShown) key += "...";
  throw Error(e.code(),
              std::string(e.what()) + " (key \"" + key + "\" in " + std::string(where) + ")");
}

}  // namespace detail

// Q is a type the map can look K up by: K itself or anything convertible to
// it; for std::string keys, anything convertible to std::string_view (looked
// up without building a std::string).
template <class K, class Q>
concept LookupKeyFor = detail::KeyTraits<K>::template kLookup<Q>;

template <class K, class V>
class PersistentMap final : private detail::CacheRepair {
  using Traits = detail::KeyTraits<K>;
  using Table = absl::flat_hash_map<K, V, typename Traits::Hash, typename Traits::Equal>;

 public:
  using key_type = K;
  using mapped_type = V;

  // Opens the map on a backend (moved in), loading every entry into memory.
  // Errors: the backend's (Errc::io, corrupt, locked, ...); Errc::codec
  // naming the key when a stored key or value does not decode.
  template <class B>
  requires std::derived_from<B, Backend> &&
      (!std::is_lvalue_reference_v<B>)explicit PersistentMap(B&& backend, Options options = {})
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
      : shard_count_(round_up_pow2(options.shards)),
        readers_(shard_count_),
        shards_(std::make_unique<Shard[]>(shard_count_)) {
    for (std::size_t i = 0; i < shard_count_; ++i) shards_[i].mutex.attach(readers_, i);
    if (!backend) throw Error(Errc::invalid_argument, "PersistentMap: the backend is null");
    load(*backend);
    completion_ = std::make_shared<detail::Completion>(options.executor, options.on_error);
    writer_ = std::make_unique<detail::Writer>(std::move(backend), completion_, options,
                                               static_cast<detail::CacheRepair&>(*this));
  }

  PersistentMap(const PersistentMap&) = delete;
  PersistentMap& operator=(const PersistentMap&) = delete;

  // Commits every write already accepted, releases the backend, and runs the
  // continuations still queued. A failure goes to Options::on_error.
  ~PersistentMap() {
    try {
      // Each failed write already went to its future or to on_error; what is
      // left to report is a failure of the final flush, and dropping this
      // future hands that to on_error.
      auto state = new_state<void>();
      writer_->close(state, /*like_flush=*/false);
      detail::make_future(std::move(state)).wait();
    } catch (...) {
      // Only allocation can fail here; the writer's own destructor still closes.
    }
    writer_->join();
    completion_->stop();
  }

  // Inserts or replaces. The future yields the previous value (as the cache
  // saw it) once the write is committed.
  // Errors: thrown now — Errc::codec if the key or value does not encode,
  // Errc::closed after close(); through the future — the backend's error.
  Future<std::optional<V>> insert(K key, V value) {
    std::string key_bytes, value_bytes;
    Traits::encode(key, key_bytes);
    Codec<V>::encode(value, value_bytes);
    auto ticket = writer_->reserve(1);
    auto state = new_state<std::optional<V>>();
    Shard& shard = shard_for(hash(Traits::view(key)));
    {
      std::unique_lock lock(shard.mutex);
      auto [it, inserted] = shard.table.try_emplace(std::move(key), std::move(value));
      if (inserted) {
        state->value.emplace(std::nullopt);
        size_.fetch_add(1, std::memory_order_relaxed);
      } else {
        state->value.emplace(std::exchange(it->second, std::move(value)));
      }
      writer_->push(ticket, Write{Write::Op::put, std::move(key_bytes), std::move(value_bytes)},
                    state);
    }
    return detail::make_future(std::move(state));
  }

  // Removes key. The future yields the removed value (nullopt, at once, when
  // the key is absent: there is nothing to commit).
  template <class Q>
  requires LookupKeyFor<K, Q> Future<std::optional<V>> erase(const Q& key) {
    std::string key_bytes;
    Traits::encode(key, key_bytes);
    auto ticket = writer_->reserve(1);
    auto state = new_state<std::optional<V>>();
    const auto& view = Traits::view(key);
    const std::size_t h = hash(view);
    Shard& shard = shard_for(h);
    {
      std::unique_lock lock(shard.mutex);
      auto it = shard.table.find(Traits::probe(view, h));
      if (it == shard.table.end()) {
        lock.unlock();
        return ready(std::move(state), std::optional<V>());
      }
      state->value.emplace(std::move(it->second));
      shard.table.erase(it);
      size_.fetch_sub(1, std::memory_order_relaxed);
      writer_->push(ticket, Write{Write::Op::erase, std::move(key_bytes), {}}, state);
    }
    return detail::make_future(std::move(state));
  }

  // Read-modify-write, atomic with respect to every other write of key:
  // f(std::optional<V>& value) sees the current value (nullopt when absent)
  // and may change it; leaving nullopt erases. The future yields the new
  // value. f runs on the calling thread under the key's shard lock: keep it
  // short, and do not call the map from it. If f throws, nothing changes and
  // the exception propagates. A K is built only when a new key is inserted.
  template <class Q, class F>
  requires LookupKeyFor<K, Q> && std::is_invocable_v < F&, std::optional<V>
  & > Future<std::optional<V>> update(const Q& key, F f) {
    std::string key_bytes;
    Traits::encode(key, key_bytes);
    auto ticket = writer_->reserve(1);
    auto state = new_state<std::optional<V>>();
    const auto& view = Traits::view(key);
    const std::size_t h = hash(view);
    Shard& shard = shard_for(h);
    {
      std::unique_lock lock(shard.mutex);
      auto it = shard.table.find(Traits::probe(view, h));
      const bool found = it != shard.table.end();
      std::optional<V> value;
      if (found) value = it->second;  // a copy: f may throw halfway
      f(value);
      if (!value && !found) {
        lock.unlock();
        return ready(std::move(state), std::optional<V>());
      }
      if (value) {
        std::string value_bytes;
        Codec<V>::encode(*value, value_bytes);
        if (found) {
          it->second = *value;
        } else {
          shard.table.emplace(K(key), *value);
          size_.fetch_add(1, std::memory_order_relaxed);
        }
        state->value.emplace(std::move(value));
        writer_->push(ticket, Write{Write::Op::put, std::move(key_bytes), std::move(value_bytes)},
                      state);
      } else {
        shard.table.erase(it);
        size_.fetch_sub(1, std::memory_order_relaxed);
        state->value.emplace(std::nullopt);
        writer_->push(ticket, Write{Write::Op::erase, std::move(key_bytes), {}}, state);
      }
    }
    return detail::make_future(std::move(state));
  }

  // Applies every operation of batch at once: readers see all of it or none
  // of it, and the backend commits it in one transaction.
  Future<void> apply(const Batch<K, V>& batch) {
    auto state = new_state<void>();
    if (batch.empty()) return ready(std::move(state));
    std::vector<Write> writes;
    std::vector<std::size_t> shard_of;
    writes.reserve(batch.size());
    shard_of.reserve(batch.size());
    for (const auto& [key, value] : batch.operations()) {
      Write w{value ? Write::Op::put : Write::Op::erase, {}, {}};
      Traits::encode(key, w.key);
      if (value) Codec<V>::encode(*value, w.value);
      writes.push_back(std::move(w));
      shard_of.push_back(shard_index(hash(Traits::view(key))));
    }
    auto ticket = writer_->reserve(writes.size());
    std::vector<std::size_t> order = shard_of;
    std::sort(order.begin(), order.end());
    order.erase(std::unique(order.begin(), order.end()), order.end());
    std::vector<std::unique_lock<detail::ReadMostlyMutex>> locks;
    locks.reserve(order.size());
    for (std::size_t i : order) locks.emplace_back(shards_[i].mutex);  // ascending: no deadlock
    std::size_t i = 0;
    for (const auto& [key, value] : batch.operations()) {
      Table& table = shards_[shard_of[i++]].table;
      if (value) {
        if (table.insert_or_assign(key, *value).second)
          size_.fetch_add(1, std::memory_order_relaxed);
      } else if (table.erase(key) > 0) {
        size_.fetch_sub(1, std::memory_order_relaxed);
      }
    }
    writer_->push(ticket, std::move(writes), state);
    locks.clear();
    return detail::make_future(std::move(state));
  }

  // Empties the map and the backend.
  Future<void> clear() {
    auto ticket = writer_->reserve(1);
    auto state = new_state<void>();
    auto locks = lock_all();
    for (std::size_t i = 0; i < shard_count_; ++i) shards_[i].table.clear();
    size_.store(0, std::memory_order_relaxed);
    writer_->push(ticket, Write{Write::Op::clear, {}, {}}, state);
    return detail::make_future(std::move(state));
  }

  // Completes when every write accepted before it is durable (Backend::flush).
  // Fails if any write accepted before it, since the previous flush(), failed
  // — also when that write's own future already reported it.
  Future<void> flush() {
    auto state = new_state<void>();
    writer_->push_flush(state);
    return detail::make_future(std::move(state));
  }

  // Stops accepting writes (they fail with Errc::closed), commits everything
  // accepted, flushes and releases the backend (its file and lock). Reads
  // keep working on the cache. Fails like flush().
  Future<void> close() {
    auto state = new_state<void>();
    writer_->close(state);
    return detail::make_future(std::move(state));
  }

  // The value of key, from memory. Never waits for I/O or for the writer.
  template <class Q>
  requires LookupKeyFor<K, Q> std::optional<V> get(const Q& key)
  const {
    const auto& view = Traits::view(key);
    const std::size_t h = hash(view);
    const Shard& shard = shard_for(h);
    std::shared_lock lock(shard.mutex);
    auto it = shard.table.find(Traits::probe(view, h));
    if (it == shard.table.end()) return std::nullopt;
    return it->second;
  }

  template <class Q>
  requires LookupKeyFor<K, Q>
  bool contains(const Q& key) const {
    const auto& view = Traits::view(key);
    const std::size_t h = hash(view);
    const Shard& shard = shard_for(h);
    std::shared_lock lock(shard.mutex);
    return shard.table.find(Traits::probe(view, h)) != shard.table.end();
  }

  std::size_t size() const noexcept { return size_.load(std::memory_order_relaxed); }
  bool empty() const noexcept { return size() == 0; }

  // Calls f(const K&, const V&) for every entry, weakly consistent: an entry
  // written meanwhile may or may not be seen, none is seen twice. It copies
  // one shard at a time and holds no lock while f runs, so f may use the map.
  template <class F>
  requires std::is_invocable_v<F&, const K&, const V&>
  void for_each(F f) const {
    std::vector<std::pair<K, V>> chunk;
    for (std::size_t i = 0; i < shard_count_; ++i) {
      chunk.clear();
      {
        std::shared_lock lock(shards_[i].mutex);
        chunk.assign(shards_[i].table.begin(), shards_[i].table.end());
      }
      for (const auto& [k, v] : chunk) f(k, v);
    }
  }

  // A copy of every entry, weakly consistent like for_each, in no order.
  std::vector<std::pair<K, V>> snapshot() const {
    std::vector<std::pair<K, V>> out;
    out.reserve(size());
    for (std::size_t i = 0; i < shard_count_; ++i) {
      std::shared_lock lock(shards_[i].mutex);
      out.insert(out.end(), shards_[i].table.begin(), shards_[i].table.end());
    }
    return out;
  }

  // The backend. Use it for describe() or backend-specific inspection; its
  // I/O members are not safe to call while the map's writer may use it.
  // Errors: Errc::closed after close() completed.
  Backend& backend() const {
    Backend* b = writer_->backend();
    if (!b) throw Error(Errc::closed, "the map is closed; its backend was released");
    return *b;
  }

 private:
  struct alignas(64) Shard {
    mutable detail::ReadMostlyMutex mutex;
    Table table;  // guarded by mutex
  };

  static std::size_t round_up_pow2(std::size_t n) {
    std::size_t p = 1;
    while (p < n && p < (std::size_t{1} << 16)) p <<= 1;
    return p;
  }
  template <class View>
  static std::size_t hash(const View& key) {
    return typename Traits::Hash{}(key);
  }
  std::size_t shard_index(std::size_t h) const noexcept {
    // Mix, so the shard uses other bits than the table's bucket index.
    return static_cast<std::size_t>((static_cast<std::uint64_t>(h) * 0x9E3779B97F4A7C15ull) >> 32) &
           (shard_count_ - 1);
  }
  Shard& shard_for(std::size_t h) const noexcept { return shards_[shard_index(h)]; }

  std::vector<std::unique_lock<detail::ReadMostlyMutex>> lock_all() const {
    std::vector<std::unique_lock<detail::ReadMostlyMutex>> locks;
    locks.reserve(shard_count_);
    for (std::size_t i = 0; i < shard_count_; ++i) locks.emplace_back(shards_[i].mutex);
    return locks;
  }

  template <class T>
  std::shared_ptr<detail::State<T>> new_state() const {
    return std::make_shared<detail::State<T>>(completion_);
  }
  template <class T, class... Value>
  static Future<T> ready(std::shared_ptr<detail::State<T>> state, Value&&... value) {
    if constexpr (sizeof...(Value) > 0) state->value.emplace(std::forward<Value>(value)...);
    state->complete(nullptr);
    return detail::make_future(std::move(state));
  }

  static K decode_key(std::string_view bytes, const std::string& where) {
    try {
      return Codec<K>::decode(bytes);
    } catch (const Error& e) {
      detail::rethrow_with_key(e, bytes, where);
    }
  }
  static V decode_value(std::string_view key, std::string_view bytes, const std::string& where) {
    try {
      return Codec<V>::decode(bytes);
    } catch (const Error& e) {
      detail::rethrow_with_key(e, key, where);
    }
  }

  void load(Backend& backend) {
    const std::string where = backend.describe();
    std::size_t count = 0;
    backend.scan([&](std::string_view key, std::string_view value) {
      K k = decode_key(key, where);
      V v = decode_value(key, value, where);
      Shard& shard = shard_for(hash(Traits::view(k)));
      if (shard.table.insert_or_assign(std::move(k), std::move(v)).second) ++count;
    });
    size_.store(count, std::memory_order_relaxed);
  }

  // CacheRepair: runs on the writer thread after a failed commit.
  void restore(const detail::Writer& writer, std::span<const detail::StoredEntry> entries,
               bool all) override {
    auto locks = lock_all();
    std::unordered_set<std::string> queued;
    bool clear_queued = false;
    writer.for_each_queued([&](const Write& w) {
      if (w.op == Write::Op::clear) clear_queued = true;
      queued.emplace(w.key);
    });
    if (clear_queued) return;  // the cache already shows the queued clear and what follows it
    if (all) {
      std::string bytes;
      for (std::size_t i = 0; i < shard_count_; ++i) {
        Table& table = shards_[i].table;
        for (auto it = table.begin(); it != table.end();) {
          bytes.clear();
          Traits::encode(it->first, bytes);
          if (queued.count(bytes))
            ++it;
          else
            table.erase(it++);  // erasing leaves the other iterators valid
        }
      }
    }
    for (const auto& entry : entries) {
      if (queued.count(entry.key)) continue;
      try {
        K key = decode_key(entry.key, writer.description());
        Table& table = shard_for(hash(Traits::view(key))).table;
        if (entry.value)
          table.insert_or_assign(std::move(key),
                                 decode_value(entry.key, *entry.value, writer.description()));
        else
          table.erase(key);
      } catch (const Error& e) {
        completion_->report(e);
      }
    }
    std::size_t count = 0;
    for (std::size_t i = 0; i < shard_count_; ++i) count += shards_[i].table.size();
    size_.store(count, std::memory_order_relaxed);
  }

  const std::size_t shard_count_;
  detail::ReaderCounters readers_;  // the shard locks' reader counts
  std::unique_ptr<Shard[]> shards_;
  std::atomic<std::size_t> size_{0};  // relaxed: a count, not a synchronisation point
  std::shared_ptr<detail::Completion> completion_;
  std::unique_ptr<detail::Writer> writer_;
};

}  // namespace pmap
