// pmap/detail/store.hpp — the map's handle on its store: a small,
// non-template facade over the write path in src/writer.cpp. Not API.
//
// For every write the map calls:
//   1. reserve(n): back-pressure; may block; no lock held;
//   2. with the shard lock(s) of the keys held: push(...), which queues the
//      encoded write(s) and returns their sequence number (one per
//      operation, in queue order); the cache then records it. Writes to one
//      key are thus queued in the order the cache saw them.
// The writer thread commits what is queued in groups (one Backend::commit
// each); then the group is finished, by the writer or the sync thread:
// made durable (Backend::sync, when the commit returned Durability::later)
// and every future of the group completed with one status. When a commit
// fails, the writer reads back what the store holds for the group's keys
// and hands it to the Repair function, before any future of the group
// completes.
//
// Thread safety: every member may be called from any thread (Repair runs on
// the writer thread).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pmap/backend.hpp"
#include "pmap/future.hpp"
#include "pmap/options.hpp"

namespace pmap::detail {

class Writer;
class Watcher;

// Sequence numbers of the write queue, one per operation, in queue order
// (0 is "no local write").
using Seq = std::uint64_t;

// A failed commit, for the cache to show what the store holds again. None
// of the group's writes reached the store (Backend::commit is atomic): the
// cache puts back what they replaced — except after a clear (full), when
// entries is every stored entry, read back.
struct Restore {
  std::vector<std::pair<std::string, std::optional<std::string>>> entries;
  bool full = false;
  // The failed group's first and last sequence numbers: a key written after
  // `through` keeps its cached value.
  std::uint64_t first = 0;
  std::uint64_t through = 0;
  // The store's describe(), for messages.
  std::string where;
};

class Store {
 public:
  // Called on the writer thread after a failed commit, before the group's
  // futures complete; it must not call back into the Store. Exceptions are
  // reported to on_error.
  using Repair = std::function<void(Restore&&)>;

  // On a shared store (Backend::shared()): where the map's load left the
  // change record, and what the watcher thread hands the map — each read of
  // the record, or the whole store when the record no longer reaches back
  // (a gap). `settled`: every local write numbered up to it was committed
  // before the read began, or failed. Both run on the watcher thread, one
  // at a time; exceptions go to on_error.
  struct Shared {
    std::uint64_t position = 0;
    std::uint64_t origin = 0;  // the map's (Backend::origin())
    // Whether anyone watches the map: only then does a read fetch the
    // values of the map's own puts.
    std::function<bool()> watched;
    std::function<void(Backend::ChangeRead&& read, std::uint64_t settled)> observe;
    std::function<void(std::vector<std::pair<std::string, std::string>>&& entries,
                       std::uint64_t settled)>
        reload;
  };

  // Called on the writer thread with each group it committed (not on a
  // shared store, whose watcher sees every commit in the change record).
  // It must not call back into the Store; exceptions go to on_error.
  using Committed = std::function<void(std::span<const Write> writes)>;

  // Starts the writer and sync threads on backend (non-null), and with
  // `shared`, the watcher thread on a reader session of it.
  Store(std::unique_ptr<Backend> backend, const Options& options, Repair repair,
        std::optional<Shared> shared = std::nullopt, Committed committed = nullptr);
  // Closes (committing everything accepted; a failure goes to on_error),
  // then ends the map's threads. The Repair function may still run until it
  // returns.
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Room for n writes in the queue, held until pushed or dropped.
  class Ticket {
   public:
    Ticket(Ticket&& other) noexcept
        : writer_(std::exchange(other.writer_, nullptr)), count_(other.count_) {}
    Ticket& operator=(Ticket&&) = delete;
    ~Ticket();

   private:
    friend class Writer;

    // Sequence numbers of the write queue, one per operation, in queue order
    // (0 is "no local write").
    using Seq = std::uint64_t;
    Ticket(Writer* writer, std::size_t count) : writer_(writer), count_(count) {}
    Writer* writer_;
    std::size_t count_;
  };

  // Waits until n more writes fit (back-pressure), then reserves them.
  // Errors: Errc::closed once close() has begun.
  Ticket reserve(std::size_t n);

  // Queues one write, or one batch committed all-or-nothing; done completes
  // when it is durable or has failed. Never blocks on I/O. Returns the
  // operation's sequence number.
  std::uint64_t push(Ticket& ticket, Write write, std::shared_ptr<StateBase> done);
  std::uint64_t push(Ticket& ticket, std::vector<Write> writes, std::shared_ptr<StateBase> done);

  // A write applied only if its key still holds `expected` (nullopt:
  // absent) in the store — on a shared store only. When it does not, done
  // is not completed: on_conflict(seq, stored) runs on the writer thread
  // instead, with the write's number and what the key holds, and takes
  // over (it must not call back into the Store).
  using OnConflict = std::function<void(std::uint64_t seq, std::optional<std::string> stored)>;
  std::uint64_t push_conditional(Ticket& ticket, Write write, std::optional<std::string> expected,
                                 std::shared_ptr<StateBase> done, OnConflict on_conflict);

  // done completes once a read of the store's change record that began
  // after this call has been applied to the cache; at once on a store only
  // this map writes. Errors: Errc::closed after close().
  void refresh(std::shared_ptr<StateBase> done);

  // done completes once every write pushed before it is durable, failing if
  // any of them failed since the previous flush.
  void flush(std::shared_ptr<StateBase> done);

  // What a close reports besides a failure of its own final flush.
  enum class CloseReport { earlier_failures, own_failures_only };
  // Stops accepting writes, commits everything accepted, flushes and
  // releases the backend; done completes after that. Later calls complete
  // their done, with success, once the first close has.
  void close(std::shared_ptr<StateBase> done, CloseReport report);

  // The sequence number through which every write is committed or repaired.
  std::uint64_t settled() const noexcept;

  // The backend, until close() has released it (then null).
  Backend* backend() const;
  const std::shared_ptr<Completion>& completion() const noexcept { return completion_; }

 private:
  std::shared_ptr<Completion> completion_;
  std::unique_ptr<Writer> writer_;
  std::unique_ptr<Watcher> watcher_;  // shared stores only
};

// Rethrows error (a codec's, decoding a stored key or value) with the key
// and the store added: "... (key "k" in sqlite:/x.db#kv)".
[[noreturn]] void rethrow_with_key(const Error& error, std::string_view key,
                                   std::string_view where);

}  // namespace pmap::detail
