// pmap/detail/cache.hpp — the in-memory side of a map: every entry, in
// shards. Not API: PersistentMap's template needs to see it.
//
// N shards, each an open-addressing hash map (absl::flat_hash_map) under its
// own reader-writer lock (ReadMostlyMutex: readers write no cache line that
// other threads' readers write). Reads take one shard's lock shared and never
// wait for the disk or the writer.
//
// Each local write also keeps an undo record — its sequence number (the
// write queue numbers each operation, in queue order), its key and the value
// it replaced — beside its shard, until the writer settles it; a local clear
// records its number once, for every key. So the cache can tell, for any key,
// whether a local write newer than some point may still be on its way to the
// store, and what the key held before it — which is all that repairing a
// failed commit needs (and, later, applying other processes' changes): the
// rule lives here, not in the writer's queue. A commit that fails stored
// none of its writes (Backend::commit is atomic), so the cache is repaired
// from those records alone (undo()) — no read of a store that may be damaged
// or out of reach — except after a clear, whose record would be the whole
// map: then the writer reads the store back (restore()). The records sit
// beside the entries, so that the entries themselves stay as small as a
// plain hash map's (reads and loading touch no more memory).
//
// Every change reaches an entry through one function, assign(): local writes
// (insert, erase, update, apply, clear) and the repair of a failed commit
// (undo, restore).
//
// Thread safety: every member may be called from any thread, except load(),
// which is for the constructing thread before the cache is shared. A local
// write calls `publish` with the key's shard lock held (every involved
// shard's, ascending, for apply and clear): the write queue's order of two
// writes to one key is then the order in which the cache saw them. Lock
// order: shard locks (ascending) before the write queue's mutex.
#pragma once

#include <absl/base/thread_annotations.h>
#include <absl/container/flat_hash_map.h>
#include <absl/container/flat_hash_set.h>
#include <absl/hash/hash.h>

#include <algorithm>
#include <atomic>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "pmap/codec.hpp"
#include "pmap/detail/read_mostly_mutex.hpp"

namespace pmap::detail {

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

// Sequence numbers of the write queue: 0 is "no local write".
using Seq = std::uint64_t;

template <class K, class V>
class Cache {
  using Traits = KeyTraits<K>;

 public:
  // A change to one key: the new value, or nullopt to erase it.
  struct Change {
    K key;
    std::optional<V> value;
  };

  // What a local write replaced: the value before it (nullopt: absent),
  // kept here or, for insert and erase, in their future's value — which
  // lives until the writer has settled the write, and is read only before
  // then (a settled record is never read, only dropped).
  struct Undo {
    Seq seq;
    K key;
    std::optional<V> kept;
    const std::optional<V>* replaced = nullptr;  // when not kept here
    bool failed = false;  // the write did not reach the store (it is not on its way)
    const std::optional<V>& before() const { return replaced ? *replaced : kept; }
    void learn(const std::optional<V>& value) {
      kept = value;
      replaced = nullptr;
    }
  };

  // settled() returns the sequence number up to which the writer has
  // committed or repaired every write (numbers at or below it can go).
  Cache(std::size_t shards, std::function<Seq()> settled)
      : shard_count_(round_up_pow2(shards)),
        readers_(shard_count_),
        shards_(std::make_unique<Shard[]>(shard_count_)),
        settled_(std::move(settled)) {
    for (std::size_t i = 0; i < shard_count_; ++i) shards_[i].mutex.attach(readers_, i);
  }

  // ---- Reads: one shard's lock, shared.

  template <class Q>
  std::optional<V> get(const Q& key) const {
    const auto& view = Traits::view(key);
    const std::size_t h = hash(view);
    const Shard& shard = shard_for(h);
    ReaderLock lock(shard.mutex);
    auto it = shard.table.find(Traits::probe(view, h));
    if (it == shard.table.end()) return std::nullopt;
    return it->second;
  }

  template <class Q>
  bool contains(const Q& key) const {
    const auto& view = Traits::view(key);
    const std::size_t h = hash(view);
    const Shard& shard = shard_for(h);
    ReaderLock lock(shard.mutex);
    return shard.table.find(Traits::probe(view, h)) != shard.table.end();
  }

  std::size_t size() const noexcept { return size_.load(std::memory_order_relaxed); }

  // f(const K&, const V&) for every entry: one shard copied at a time, f
  // called with no lock held.
  template <class F>
  void for_each(F& f) const {
    std::vector<std::pair<K, V>> chunk;
    for (std::size_t i = 0; i < shard_count_; ++i) {
      chunk.clear();
      copy_shard(shards_[i], chunk);
      for (const auto& [k, v] : chunk) f(k, v);
    }
  }

  std::vector<std::pair<K, V>> snapshot() const {
    std::vector<std::pair<K, V>> out;
    out.reserve(size());
    for (std::size_t i = 0; i < shard_count_; ++i) copy_shard(shards_[i], out);
    return out;
  }

  // ---- Loading, before the cache is shared (no sequence number: stored).
  void load(K key, V value) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    Shard& shard = shard_for(hash(Traits::view(key)));
    if (shard.table.insert_or_assign(std::move(key), std::move(value)).second)
      size_.fetch_add(1, std::memory_order_relaxed);
  }

  // ---- Local writes. `publish` queues the encoded write and returns its
  // sequence number; it runs with the shard lock(s) held, after every check
  // that could fail and before the cache changes; when it throws, the cache
  // stays as it was. Insert and erase first move the value they replace
  // into `replaced` — their future's value, which the writer keeps where it
  // is until it has settled the write: the write's undo record points at it.

  template <class Publish>
  void insert(K key, V value, std::optional<V>& replaced, Publish&& publish) {
    const std::size_t h = hash(Traits::view(key));
    Shard& shard = shard_for(h);
    WriterLock lock(shard.mutex);
    auto it = shard.table.find(Traits::probe(Traits::view(key), h));
    const bool found = it != shard.table.end();
    const Seq seq = publish_replacing(shard, it, replaced, publish);
    if (found) {  // the table keeps its own key: this one goes to the record
      keep(shard, Undo{seq, std::move(key), {}, &replaced});
      assign(shard, it, nullptr, std::optional<V>(std::move(value)));
    } else {
      keep(shard, Undo{seq, key, {}, &replaced});
      assign(shard, it, &key, std::optional<V>(std::move(value)));
    }
  }

  // Returns false (and publishes nothing) when key is absent.
  template <class Q, class Publish>
  bool erase(const Q& key, std::optional<V>& replaced, Publish&& publish) {
    const auto& view = Traits::view(key);
    const std::size_t h = hash(view);
    Shard& shard = shard_for(h);
    WriterLock lock(shard.mutex);
    auto it = shard.table.find(Traits::probe(view, h));
    if (it == shard.table.end()) return false;
    const Seq seq = publish_replacing(shard, it, replaced, publish);
    keep(shard, Undo{seq, it->first, {}, &replaced});
    assign(shard, it, nullptr, std::nullopt);
    return true;
  }

  // f(std::optional<V>&) edits a copy of the value; leaving nullopt erases.
  // publish(const std::optional<V>& result, const V* before) -> Seq (before:
  // the value f saw, null when absent), called unless the key stays absent
  // (then it returns false). If f or publish throws, nothing changes.
  template <class Q, class F, class Publish>
  bool update(const Q& key, F& f, Publish&& publish) {
    const auto& view = Traits::view(key);
    const std::size_t h = hash(view);
    Shard& shard = shard_for(h);
    WriterLock lock(shard.mutex);
    auto it = shard.table.find(Traits::probe(view, h));
    const bool found = it != shard.table.end();
    // A copy: f may throw halfway.
    std::optional<V> value = found ? std::optional<V>(it->second) : std::optional<V>();
    f(value);
    if (!value && !found) return false;
    const Seq seq = publish(std::as_const(value), found ? &std::as_const(it->second) : nullptr);
    if (found) {
      keep(shard, Undo{seq, it->first, std::move(it->second)});
      assign(shard, it, nullptr, std::move(value));
    } else {
      K k(key);
      keep(shard, Undo{seq, k, std::nullopt});
      assign(shard, it, &k, std::move(value));
    }
    return true;
  }

  // Applies changes (in order: a later one on a key wins) with the lock of
  // every shard involved held at once, so readers see all of them or none.
  // publish() -> Seq, once for all of them.
  template <class Publish>
  void apply(std::span<Change> changes, Publish&& publish) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    std::vector<std::size_t> shard_of;
    shard_of.reserve(changes.size());
    for (const Change& c : changes) shard_of.push_back(shard_index(hash(Traits::view(c.key))));
    const auto locks = lock_shards(shard_of);
    const Seq seq = publish();
    for (std::size_t i = 0; i < changes.size(); ++i) {
      Shard& shard = shards_[shard_of[i]];
      auto it = shard.table.find(changes[i].key);
      if (it != shard.table.end()) {  // the table keeps its own key
        keep(shard, Undo{seq, std::move(changes[i].key), std::move(it->second)});
        assign(shard, it, nullptr, std::move(changes[i].value));
      } else {
        keep(shard, Undo{seq, changes[i].key, std::nullopt});
        assign(shard, it, &changes[i].key, std::move(changes[i].value));
      }
    }
  }

  // Empties the cache. publish() -> Seq.
  template <class Publish>
  void clear(Publish&& publish) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    const auto locks = lock_all();
    const Seq seq = publish();
    for (std::size_t i = 0; i < shard_count_; ++i) shards_[i].table.clear();
    clear_seq_ = seq;
    const Seq settled = prunable();
    std::erase_if(clears_, [&](Seq c) { return c <= settled; });
    clears_.push_back(seq);
    size_.store(0, std::memory_order_relaxed);
  }

  // ---- Others' writes, on a shared store.
  //
  // A change read from the store's change record, committed after this
  // map's own commits of the local writes numbered up to `after` (and
  // before any later one).
  struct Observed {
    K key;
    std::optional<V> value;  // nullopt: erased
    Seq after = 0;
  };

  // From now on undo records (and pending clears) stay until the watcher
  // has seen them committed: see_through().
  void follow_store() { horizon_.store(0, std::memory_order_release); }
  // The watcher has applied every change of the record up to the local
  // writes numbered through seq.
  void see_through(Seq seq) {
    if (seq > horizon_.load(std::memory_order_relaxed))
      horizon_.store(seq, std::memory_order_release);
  }

  // Applies what the store committed, with every shard lock involved held
  // at once (all of them with a clear), so readers see all of it or none:
  // first a clear, when `clear` is set (committed after the local writes
  // numbered up to *clear), then each change in order. A key whose local
  // write committed after the change, or may still (a record numbered after
  // `after` that did not fail, or a local clear numbered after it), keeps
  // its cached value, and that write's first record learns the store's
  // value instead (in case it fails). Returns whether the cache changed.
  bool observe(std::optional<Seq> clear,
               std::span<Observed> changes) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    std::vector<std::size_t> shard_of;
    shard_of.reserve(changes.size());
    for (const Observed& c : changes) shard_of.push_back(shard_index(hash(Traits::view(c.key))));
    const auto locks = clear ? lock_all() : lock_shards(shard_of);
    bool changed = false;
    if (clear && first_clear_after(*clear) == std::numeric_limits<Seq>::max()) {
      for (std::size_t i = 0; i < shard_count_; ++i) {
        Shard& shard = shards_[i];
        absl::flat_hash_set<K, typename Traits::Hash, typename Traits::Equal> newer;
        for (Undo* u = first_after(shard, *clear); u != shard.undo.data() + shard.undo.size(); ++u)
          if (!u->failed && newer.insert(u->key).second) u->learn(std::nullopt);
        for (auto it = shard.table.begin(); it != shard.table.end();) {
          auto next = std::next(it);
          if (!newer.contains(it->first)) {
            assign(shard, it, nullptr, std::nullopt);
            changed = true;
          }
          it = next;
        }
      }
    }
    for (std::size_t i = 0; i < changes.size(); ++i) {
      Observed& c = changes[i];
      if (first_clear_after(c.after) != std::numeric_limits<Seq>::max()) continue;
      Shard& shard = shards_[shard_of[i]];
      if (Undo* u = first_pending(shard, c.key, c.after)) {
        u->learn(c.value);
        continue;
      }
      const auto it = shard.table.find(c.key);
      if (it == shard.table.end() && !c.value) continue;
      if constexpr (std::equality_comparable<V>)
        if (it != shard.table.end() && c.value && it->second == *c.value) continue;
      assign(shard, it, &c.key, std::move(c.value));
      changed = true;
    }
    return changed;
  }

  // A local write numbered seq did not apply (its condition failed) and the
  // store holds `stored` for its key: the key shows that, unless a newer
  // local write is on its way (whose record learns it).
  void conflicted(K key, std::optional<V> stored, Seq seq) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    Shard& shard = shard_for(hash(Traits::view(key)));
    {
      WriterLock lock(shard.mutex);
      for (Undo* u = first_after(shard, seq - 1);
           u != shard.undo.data() + shard.undo.size() && u->seq == seq; ++u)
        u->failed = true;
    }
    Observed c{std::move(key), std::move(stored), seq};
    observe(std::nullopt, std::span<Observed>(&c, 1));
  }

  // ---- Repair after a failed commit of the writes numbered first..through.
  // Neither function is for several threads at once (the writer calls them).

  // None of those writes reached the store: each key they wrote goes back to
  // what the first of them replaced. A key with a local write newer than
  // `through` still on its way keeps showing it, and that write's undo
  // record learns the value, in case its own commit fails too. Nothing is
  // read from the store. Takes one shard lock at a time.
  void undo(Seq first, Seq through) {
    for (std::size_t i = 0; i < shard_count_; ++i) {
      Shard& shard = shards_[i];
      WriterLock lock(shard.mutex);
      // The failed writes' first records, by key; nullptr once a newer
      // write's record has taken the value over.
      absl::flat_hash_map<K, Undo*, typename Traits::Hash, typename Traits::Equal> earliest;
      const Seq clear = first_clear_after(through);
      for (Undo* u = first_after(shard, first - 1);
           u != shard.undo.data() + shard.undo.size() && u->seq < clear; ++u) {
        if (u->seq <= through) {
          u->failed = true;
          earliest.try_emplace(u->key, u);
        } else if (auto e = earliest.find(u->key); e != earliest.end() && e->second) {
          u->learn(e->second->before());
          e->second = nullptr;
        }
      }
      if (clear_seq_ > through) continue;  // a newer clear shows every key as it should
      for (auto& [key, u] : earliest) {
        if (!u) continue;
        const std::size_t h = hash(Traits::view(key));
        assign(shard, shard.table.find(Traits::probe(Traits::view(key), h)), &u->key,
               std::optional<V>(u->before()));
      }
    }
  }

  // The failed writes held a clear, and `stored` is the whole store, read
  // back: every key shows its stored value, or goes, unless a local write
  // newer than `through` is on its way for it (that write's undo record
  // learns the stored value instead). Takes one shard lock at a time;
  // nothing is decoded under a lock.
  void restore(std::span<Change> stored, Seq first, Seq through) {
    {
      // The failed clears are no longer on their way.
      const auto locks = lock_all();
      std::erase_if(clears_, [&](Seq c) { return c >= first && c <= through; });
    }
    absl::flat_hash_map<K, std::size_t, typename Traits::Hash, typename Traits::Equal> index;
    index.reserve(stored.size());
    for (std::size_t i = 0; i < stored.size(); ++i) index.insert_or_assign(stored[i].key, i);
    // Per shard, the keys with a local write newer than `through` (from
    // their undo records): they keep their cached value.
    std::vector<absl::flat_hash_set<K, typename Traits::Hash, typename Traits::Equal>> newer(
        shard_count_);
    for (std::size_t i = 0; i < shard_count_; ++i) {
      Shard& shard = shards_[i];
      WriterLock lock(shard.mutex);
      for (Undo* u = first_after(shard, first - 1);
           u != shard.undo.data() + shard.undo.size() && u->seq <= through; ++u)
        u->failed = true;
      // Their first records learn what the store holds.
      const Seq clear = first_clear_after(through);
      for (Undo* u = first_after(shard, through);
           u != shard.undo.data() + shard.undo.size() && u->seq < clear; ++u) {
        if (!newer[i].insert(u->key).second) continue;
        const auto at = index.find(u->key);
        u->learn(at == index.end() ? std::nullopt : stored[at->second].value);
      }
      if (clear_seq_ > through) continue;  // a newer clear shows every key as it should
      for (auto it = shard.table.begin(); it != shard.table.end();) {
        auto next = std::next(it);  // erasing leaves the other iterators valid
        if (!newer[i].contains(it->first) && !index.contains(it->first))
          assign(shard, it, nullptr, std::nullopt);
        it = next;
      }
    }
    for (Change& c : stored) {
      const std::size_t i = shard_index(hash(Traits::view(c.key)));
      Shard& shard = shards_[i];
      WriterLock lock(shard.mutex);
      if (clear_seq_ > through || newer[i].contains(c.key)) continue;
      const auto it = shard.table.find(c.key);  // before the key is moved from
      assign(shard, it, &c.key, std::move(c.value));
    }
  }

 private:
  using Table = absl::flat_hash_map<K, V, typename Traits::Hash, typename Traits::Equal>;

  struct alignas(64) Shard {
    mutable ReadMostlyMutex mutex;
    Table table ABSL_GUARDED_BY(mutex);
    // Undo records of the local writes, in sequence order (the shard lock
    // orders them): those from undo_head on may not be settled yet.
    std::vector<Undo> undo ABSL_GUARDED_BY(mutex);
    std::size_t undo_head ABSL_GUARDED_BY(mutex) = 0;
    std::size_t undo_prune_at ABSL_GUARDED_BY(mutex) = kMinPrune;
  };
  static constexpr std::size_t kMinPrune = 64;

  // Keeps a local write's undo record. Settled records go once the shard
  // has kept more than undo_prune_at since the last pruning.
  void keep(Shard& shard, Undo&& undo) ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mutex) {
    shard.undo.push_back(std::move(undo));
    if (shard.undo.size() - shard.undo_head < shard.undo_prune_at) return;
    const Seq settled = prunable();
    while (shard.undo_head < shard.undo.size() && shard.undo[shard.undo_head].seq <= settled)
      ++shard.undo_head;
    if (shard.undo_head * 2 >= shard.undo.size()) {
      shard.undo.erase(shard.undo.begin(),
                       shard.undo.begin() + static_cast<std::ptrdiff_t>(shard.undo_head));
      shard.undo_head = 0;
    }
    shard.undo_prune_at = std::max(kMinPrune, 2 * (shard.undo.size() - shard.undo_head));
  }

  // Records numbered up to here can go: settled by the writer, and (on a
  // shared store) seen in the change record by the watcher.
  Seq prunable() const { return std::min(settled_(), horizon_.load(std::memory_order_acquire)); }

  // The number of the first local clear after seq, or max() when none may
  // be pending: a record after it was made on an emptied cache, and learns
  // nothing from what came before the clear. Any shard lock held.
  Seq first_clear_after(Seq seq) const {
    const auto c = std::upper_bound(clears_.begin(), clears_.end(), seq);
    return c == clears_.end() ? std::numeric_limits<Seq>::max() : *c;
  }

  // The first record of a local write to key numbered after seq that did
  // not fail (one on its way, or committed after seq), or null.
  template <class Q>
  static Undo* first_pending(Shard& shard, const Q& key, Seq seq)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mutex) {
    for (Undo* u = first_after(shard, seq); u != shard.undo.data() + shard.undo.size(); ++u)
      if (!u->failed && u->key == key) return u;
    return nullptr;
  }

  // The first undo record numbered after seq.
  static Undo* first_after(Shard& shard, Seq seq) ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mutex) {
    return std::partition_point(shard.undo.data() + shard.undo_head,
                                shard.undo.data() + shard.undo.size(),
                                [&](const Undo& u) { return u.seq <= seq; });
  }

  // The one place an entry changes. `it` is key's position in shard.table
  // (end() when absent); *key is moved into the table when it is absent
  // (may be null otherwise). value: the new value, or nullopt to erase.
  void assign(Shard& shard, typename Table::iterator it, K* key, std::optional<V> value)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mutex) {
    if (value) {
      if (it != shard.table.end()) {
        it->second = std::move(*value);
      } else {
        shard.table.emplace(std::move(*key), std::move(*value));
        size_.fetch_add(1, std::memory_order_relaxed);
      }
    } else if (it != shard.table.end()) {
      shard.table.erase(it);
      size_.fetch_sub(1, std::memory_order_relaxed);
    }
  }

  // Moves the value at it (if any) into `replaced`, then publish(); if that
  // throws, the value goes back.
  template <class Publish>
  static Seq publish_replacing(Shard& shard, typename Table::iterator it,
                               std::optional<V>& replaced, Publish& publish)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(shard.mutex) {
    replaced.reset();
    if (it != shard.table.end()) replaced.emplace(std::move(it->second));
    try {
      return publish();
    } catch (...) {
      if (replaced) it->second = std::move(*replaced);
      replaced.reset();
      throw;
    }
  }

  template <class Out>
  static void copy_shard(const Shard& shard, Out& out) {
    ReaderLock lock(shard.mutex);
    for (const auto& [k, v] : shard.table) out.emplace_back(k, v);
  }

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

  // Locks the given shards (repeats allowed), ascending: no deadlock. (The
  // thread-safety analysis cannot follow a vector of locks: the functions
  // that use these two are marked ABSL_NO_THREAD_SAFETY_ANALYSIS.)
  std::vector<std::unique_lock<ReadMostlyMutex>> lock_shards(std::vector<std::size_t> which) const {
    std::sort(which.begin(), which.end());
    which.erase(std::unique(which.begin(), which.end()), which.end());
    std::vector<std::unique_lock<ReadMostlyMutex>> locks;
    locks.reserve(which.size());
    for (std::size_t i : which) locks.emplace_back(shards_[i].mutex);
    return locks;
  }
  std::vector<std::unique_lock<ReadMostlyMutex>> lock_all() const {
    std::vector<std::unique_lock<ReadMostlyMutex>> locks;
    locks.reserve(shard_count_);
    for (std::size_t i = 0; i < shard_count_; ++i) locks.emplace_back(shards_[i].mutex);
    return locks;
  }

  const std::size_t shard_count_;
  ReaderCounters readers_;  // the shard locks' reader counts
  std::unique_ptr<Shard[]> shards_;
  std::atomic<std::size_t> size_{0};  // relaxed: a count, not a synchronisation point
  // The number of the last local clear, and of every clear the writer may
  // not have settled yet (ascending): written with every shard lock held,
  // read with any one of them held.
  Seq clear_seq_ = 0;
  std::vector<Seq> clears_;
  const std::function<Seq()> settled_;
  // On a shared store, the watcher's progress (see follow_store()).
  std::atomic<Seq> horizon_{std::numeric_limits<Seq>::max()};
};

}  // namespace pmap::detail
