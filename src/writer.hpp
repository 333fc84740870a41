// The write path below the cache: group commit, durability, fan-out.
//
// One Writer per map (the implementation of detail::Store), with two threads:
//
//   writer thread  takes everything queued, commits the longest run that fits
//                  a group (Options::max_group_*; an apply() batch is never
//                  split) with one Backend::commit, and on failure has the
//                  cache undo the group's writes (after a clear: restore
//                  what the store holds, read back). Then it finishes the
//                  group: itself when nothing else is waiting to be
//                  committed and no earlier group is still at the sync
//                  thread (a lone write pays no thread hop), otherwise by
//                  handing it to the sync thread, in order.
//   sync thread    takes every group handed over since its last round and
//                  finishes them together, so that one group's fsync
//                  overlaps the next group's commit.
//
// Finishing a round is one function, finish_round(), whichever thread runs
// it (one at a time, in queue order): Backend::sync() once if any group of
// the round needs it (Durability::later), then every future of the round
// completed with its one status — the commit's error, else the sync's — in
// one loop (LevelDB's DBImpl::Write), and the first failure since the last
// flush latched in one variable. flush markers travel the same way.
//
// A failed sync leaves the disk in an unknown state (the kernel may have
// dropped the pages it could not write), so the map is then "poisoned": the
// writes that sync covered fail, and so does every later write and flush,
// until the map is reopened. Reads keep serving the cache.
//
// Lock order: shard locks, then mu_; sync_mu_ and round_mu_ are never held
// with another lock. No lock is held across backend I/O or while a future
// completes.
#pragma once

#include <absl/base/thread_annotations.h>

#include <atomic>
#include <cstddef>
#include <exception>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "pmap/detail/store.hpp"
#include "sync.hpp"

namespace pmap::detail {

class Writer {
 public:
  Writer(std::unique_ptr<Backend> backend, std::shared_ptr<Completion> completion,
         const Options& options, Store::Repair repair, Store::Committed committed);
  // shut_down(), unless done already.
  ~Writer();
  // Closes (if nobody did; a failure of the final flush goes to on_error)
  // and ends both threads. Called once, by the map's owner.
  void shut_down() noexcept;
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  Store::Ticket reserve(std::size_t n);
  void unreserve(std::size_t n) noexcept;
  Seq push(Store::Ticket& ticket, Write write, std::shared_ptr<StateBase> done);
  Seq push(Store::Ticket& ticket, std::vector<Write> writes, std::shared_ptr<StateBase> done);
  Seq push_conditional(Store::Ticket& ticket, Write write, std::optional<std::string> expected,
                       std::shared_ptr<StateBase> done, Store::OnConflict on_conflict);
  void flush(std::shared_ptr<StateBase> done);
  void close(std::shared_ptr<StateBase> done, Store::CloseReport report);
  Seq settled() const noexcept { return settled_.load(std::memory_order_acquire); }
  Backend* backend() const;

 private:
  // A conditional write's condition (push_conditional).
  struct Condition {
    std::optional<std::string> expected;
    Store::OnConflict on_conflict;
  };

  struct Item {
    enum class Kind : unsigned char { write, flush, close };
    Kind kind = Kind::write;
    bool last = true;  // last write of its operation: a group may end after it
    Write write;
    Seq seq = 0;                      // the operation's number
    std::shared_ptr<StateBase> done;  // on the last item of an operation
    std::unique_ptr<Condition> condition = nullptr;
  };

  // A group handed to the sync thread, or a flush.
  struct Committed {
    std::vector<std::shared_ptr<StateBase>> done;
    std::size_t writes = 0;    // 0 for a flush
    std::exception_ptr error;  // the commit's (or the flush's) own failure
    bool needs_sync = false;   // committed with Durability::later
  };

  // Items the queues hold without reallocating (beyond it they grow).
  static constexpr std::size_t kReservedItems = std::size_t{1} << 17;

  // Runs append (which adds `used` items to queue_) and settles the ticket.
  template <class Append>
  Seq enqueue(Store::Ticket& ticket, std::size_t used, Append append);
  void wake_room_waiters() noexcept;

  // The writer thread.
  void run() noexcept;
  void take_queue();
  void commit_group(std::span<Item> group);
  Durability commit(std::span<Item> group);
  void repair(std::span<const Write> writes, Seq first, Seq through) noexcept;
  void close_now(Item& item) noexcept;
  // Finishing groups and flushes (see the top of this file).
  void finish(Committed entry);
  void run_sync() noexcept;
  void finish_round(std::vector<Committed>& round);
  std::exception_ptr poison() const;

  // Owned by the writer thread after construction (the sync thread calls
  // only sync() on it, as Backend's contract allows); released by close.
  std::unique_ptr<Backend> backend_;
  const std::string description_;
  const std::shared_ptr<Completion> completion_;
  const Store::Repair repair_;
  const Store::Committed committed_;
  const std::size_t max_pending_;
  const std::size_t max_group_writes_;
  const std::size_t max_group_bytes_;

  mutable Mutex mu_;
  CondVar work_cv_;  // the writer thread waits for items
  CondVar room_cv_;  // producers wait for room; close waits for tickets
  std::vector<Item> queue_ ABSL_GUARDED_BY(mu_);
  Seq last_seq_ ABSL_GUARDED_BY(mu_) = 0;
  Backend* open_backend_ ABSL_GUARDED_BY(mu_);  // backend_ until it is released
  bool closed_ ABSL_GUARDED_BY(mu_) = false;    // the backend is released
  std::vector<std::shared_ptr<StateBase>> close_waiters_ ABSL_GUARDED_BY(mu_);
  // Admission is lock-free when there is room: reserve() is a CAS on
  // pending_. The three atomics below are seq_cst: close() stores closing_
  // then reads tickets_, reserve() adds to tickets_ then reads closing_, so
  // one of them always sees the other (no ticket slips past a close).
  std::atomic<std::size_t> pending_{0};  // reserved + queued + not yet completed writes
  std::atomic<std::size_t> tickets_{0};  // writes reserved, not yet pushed
  std::atomic<bool> closing_{false};     // set under mu_
  std::atomic<int> room_waiters_{0};     // producers blocked in reserve(), changed under mu_
  // Release: a reader of settled() sees the cache repairs made before it.
  std::atomic<Seq> settled_{0};

  Mutex sync_mu_;
  CondVar sync_cv_;  // the sync thread waits for entries
  std::vector<Committed> handed_ ABSL_GUARDED_BY(sync_mu_);
  bool sync_stop_ ABSL_GUARDED_BY(sync_mu_) = false;
  // Entries handed to the sync thread and not yet finished: added to by the
  // writer thread only, subtracted by the sync thread after their round.
  std::atomic<std::size_t> outstanding_{0};

  // Guards what rounds share (rounds never overlap; the lock makes that
  // visible to the analysis and to the writer's poison check).
  mutable Mutex round_mu_;
  // The first failure since the last flush.
  std::exception_ptr latched_ ABSL_GUARDED_BY(round_mu_);
  // The failed sync that poisoned the map (null: none).
  std::exception_ptr poison_ ABSL_GUARDED_BY(round_mu_);
  std::atomic<bool> poisoned_{false};  // poison_ is set: the writer's cheap first check

  // Writer thread only.
  const bool shared_;          // the backend is shared: commit_shared()
  std::vector<Write> writes_;  // the group being committed
  std::vector<Backend::Expect> expect_;
  std::vector<Backend::Conflict> conflicts_;
  std::vector<Item> taken_;  // taken from queue_, done up to next_
  std::size_t next_ = 0;

  std::thread sync_thread_;
  std::thread thread_;
};

}  // namespace pmap::detail
