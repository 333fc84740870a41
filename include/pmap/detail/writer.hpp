// pmap/detail/writer.hpp — the write path below the cache. Not API.
//
// One Writer per map: a bounded queue of encoded writes and one thread that
// drains it. Writers that queued together are committed together — the
// writer takes everything waiting (up to Options::max_group_*), hands it to
// Backend::write as one atomic batch, then completes every future of the
// group with the one outcome (LevelDB's DBImpl::Write / BuildBatchGroup).
//
// The map calls, for every write:
//   1. reserve(n)  — back-pressure; may block; no lock held;
//   2. under the shard lock(s) of the keys: update the cache, then push(...),
//      which never blocks. So the queue order of writes to one key is the
//      order in which the cache saw them, and the backend applies them in
//      that order.
// When a commit fails, the writer reads what the backend now holds for the
// group's keys (no lock held) and asks the map (CacheRepair) to put those
// values back in the cache, except for keys that have a newer write queued;
// only then does it fail the group's futures.
//
// With a backend that defers its fsync (DeferredSync: SQLite with
// Synchronous::full), a second thread completes the futures: the writer
// commits a group and moves on to the next, the sync thread fsyncs whatever
// has been committed and then completes those groups' futures (and flushes
// queued after them). A failed fsync fails the futures of the groups it
// covered; their writes are committed, so the cache is left as it is.
//
// Thread safety: reserve/push/push_flush/close may be called from any
// thread. for_each_queued is for CacheRepair::restore, on the writer
// thread. Lock order: shard locks (ascending) before the queue mutex.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "pmap/backend.hpp"
#include "pmap/detail/completion.hpp"
#include "pmap/detail/deferred_sync.hpp"
#include "pmap/future.hpp"
#include "pmap/options.hpp"

namespace pmap::detail {

class Writer;

// What the backend holds for a key after a failed commit (nullopt: absent).
struct StoredEntry {
  std::string key;
  std::optional<std::string> value;
};

// Implemented by the typed map: puts backend values back in the cache.
class CacheRepair {
 public:
  // entries: what the backend holds for every key of a failed group. When
  // all is true, entries is the whole backend (a clear failed) and every
  // cached key not in it goes too. Keys with a newer write still queued
  // (Writer::for_each_queued) keep their cached value; if a clear is queued,
  // the cache is already right for every key.
  virtual void restore(const Writer& writer, std::span<const StoredEntry> entries, bool all) = 0;

 protected:
  ~CacheRepair() = default;
};

class Writer {
 public:
  // Starts the writer thread. repair must outlive the writer.
  Writer(std::unique_ptr<Backend> backend, std::shared_ptr<Completion> completion,
         const Options& options, CacheRepair& repair);
  // Closes (committing everything accepted) and joins the thread.
  ~Writer();
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  // Room for n writes in the queue, held until pushed or dropped.
  class Ticket {
   public:
    Ticket() = default;
    Ticket(Ticket&& other) noexcept
        : writer_(std::exchange(other.writer_, nullptr)), count_(other.count_) {}
    Ticket& operator=(Ticket&&) = delete;
    ~Ticket() {
      if (writer_) writer_->unreserve(count_);
    }

   private:
    friend class Writer;
    Ticket(Writer* writer, std::size_t count) : writer_(writer), count_(count) {}
    Writer* writer_ = nullptr;
    std::size_t count_ = 0;
  };

  // Waits until n more writes fit (back-pressure), then reserves them.
  // Errors: Errc::closed once close() has begun.
  Ticket reserve(std::size_t n);

  // Queues one write (or one atomic batch of writes) under a reservation;
  // done completes when it is committed or has failed. Never blocks on I/O.
  void push(Ticket& ticket, Write write, std::shared_ptr<StateBase> done);
  void push(Ticket& ticket, std::vector<Write> writes, std::shared_ptr<StateBase> done);

  // done completes once every write pushed before it is durable, failing if
  // any of them failed since the previous flush.
  void push_flush(std::shared_ptr<StateBase> done);

  // Stops accepting writes, commits everything accepted, flushes and releases
  // the backend; done completes after that, failing if the final flush failed
  // or — when like_flush — like a flush (a write failed since the last one).
  // Only the first call queues anything; later calls complete done, with
  // success, when the first completes.
  void close(std::shared_ptr<StateBase> done, bool like_flush = true);

  // Waits until the writer thread has ended (after close).
  void join();

  // Calls fn with every write still queued (not yet taken into a group).
  // For CacheRepair::restore only; the caller holds the shard locks.
  void for_each_queued(const std::function<void(const Write&)>& fn) const;

  // The backend; null after close.
  Backend* backend() const noexcept { return backend_.get(); }
  const std::string& description() const noexcept { return description_; }

 private:
  struct Item {
    enum class Kind : unsigned char { write, flush, close };
    Kind kind = Kind::write;
    bool last = true;  // last write of its operation: ends a possible group
                       // (for close: whether it fails like a flush)
    Write write;
    std::shared_ptr<StateBase> done;  // on the last item of an operation
  };

  // Items the queues hold without reallocating (beyond it they grow).
  static constexpr std::size_t kReservedItems = std::size_t{1} << 17;

  void unreserve(std::size_t n) noexcept;
  // Wakes producers waiting for room (and close() waiting for tickets).
  void wake_room_waiters() noexcept;
  // Runs append (which adds `used` items to queue_) under the queue mutex and
  // settles the ticket.
  template <class Append>
  void enqueue(Ticket& ticket, std::size_t used, Append append);
  void run() noexcept;
  // Waits for work, then moves the queue into taken_.
  void take_queue();
  void commit_group(std::span<Item> group);
  // Completes a group's futures with error and gives its room back.
  void finish_group(std::span<Item> group, const std::exception_ptr& error);

  // The sync thread (deferred_ only). An entry is a committed group (its
  // futures and size) or a flush (its future and what it fails with unless
  // a sync fails first).
  struct Synced {
    std::vector<std::shared_ptr<StateBase>> done;
    std::size_t writes = 0;
    bool flush = false;
    std::exception_ptr flush_error;
  };
  // Syncs and completes the group on this thread when nothing else is
  // waiting to be committed or synced; false when it did not.
  bool sync_here(std::span<Item> group);
  // deferred_->sync(); a failure is returned and latched for the next flush.
  std::exception_ptr sync_backend() noexcept;
  void enqueue_sync(Synced entry);
  void run_sync() noexcept;
  // Waits until every queued entry is synced and completed, then ends the
  // sync thread.
  void stop_sync() noexcept;
  void repair_after(std::span<const Write> writes) noexcept;
  void finish_flush(std::shared_ptr<StateBase>& done, bool release_backend,
                    bool report_latched) noexcept;

  std::unique_ptr<Backend> backend_;  // touched only by the writer thread after construction
  const std::string description_;
  std::shared_ptr<Completion> completion_;
  CacheRepair& repair_;
  const std::size_t max_pending_;
  const std::size_t max_group_writes_;
  const std::size_t max_group_bytes_;

  mutable std::mutex mu_;
  std::condition_variable work_cv_;  // writer waits for items
  std::condition_variable room_cv_;  // producers wait for room; close waits for tickets
  std::vector<Item> queue_;          // guarded by mu_
  // Admission is lock-free when there is room: reserve() is a CAS on
  // pending_. The three atomics below are seq_cst: close() stores closing_
  // then reads tickets_, reserve() adds to tickets_ then reads closing_, so
  // one of them always sees the other (no ticket slips past a close).
  std::atomic<std::size_t> pending_{0};  // reserved + queued + committing writes
  std::atomic<std::size_t> tickets_{0};  // writes reserved, not yet pushed
  std::atomic<bool> closing_{false};     // written under mu_
  std::atomic<int> room_waiters_{0};     // producers blocked in reserve(), under mu_
  bool closed_ = false;  // guarded by mu_: the writer thread has released the backend
  std::vector<std::shared_ptr<StateBase>> close_waiters_;  // guarded by mu_

  DeferredSync* deferred_ = nullptr;  // the backend, when its commits are synced apart
  std::mutex sync_mu_;
  std::condition_variable sync_cv_;  // the sync thread waits for entries
  std::vector<Synced> sync_queue_;   // guarded by sync_mu_
  bool sync_stop_ = false;           // guarded by sync_mu_
  bool sync_busy_ = false;           // guarded by sync_mu_: a batch is being synced
  // First failed fsync since the last flush: the sync thread's while it is
  // busy, the writer thread's while it is idle (sync_here) or stopped.
  std::exception_ptr sync_latched_;
  std::thread sync_thread_;

  std::exception_ptr latched_;  // writer thread only: first failure since the last flush
  std::vector<Write> writes_;   // writer thread only: the group being committed
  std::vector<Item> taken_;     // writer thread only: taken from queue_, done up to next_
  std::size_t next_ = 0;
  std::thread thread_;
};

// Turns the exception in flight into a pmap::Error (kept if it is one;
// otherwise Errc::backend with its message, prefixed by where).
std::exception_ptr as_pmap_error(std::exception_ptr error, const std::string& where);

}  // namespace pmap::detail
