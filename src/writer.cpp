// The writer: group commit, durability and fan-out. See writer.hpp.
//
// The writer thread's loop, in one sentence: wait for the queue to be
// non-empty, take the longest run of writes at its front that fits a group
// (never splitting an apply() batch), commit it with one Backend::commit,
// repair the cache if that failed, and finish the group (finish(): itself
// when nothing waits behind it and nothing is outstanding at the sync
// thread, else by handing it over). The sync thread's loop: take every group
// handed over and finish them as one round. finish_round(), on either
// thread: sync once if any group needs it, complete every future with its
// status, give the room back. flush markers travel the same way, in queue
// order; close joins the sync thread, then releases the backend.

#include "writer.hpp"

#include <algorithm>

#include "errors.hpp"
#include "watcher.hpp"

namespace pmap::detail {

// ---------------------------------------------------------------- Store

Store::Store(std::unique_ptr<Backend> backend, const Options& options, Repair repair,
             std::optional<Shared> shared, Committed committed)
    : completion_(std::make_shared<Completion>(options.executor, options.on_error)) {
  std::unique_ptr<Backend> reader;
  if (shared) {
    reader = backend->open_reader();
    if (!reader)
      throw Error(Errc::invalid_argument,
                  backend->describe() +
                      ": a shared backend must give reader sessions (Backend::open_reader)");
  }
  writer_ = std::make_unique<Writer>(std::move(backend), completion_, options, std::move(repair),
                                     std::move(committed));
  if (shared) {
    const std::uint64_t position = shared->position;
    watcher_ = std::make_unique<Watcher>(
        std::move(reader), position, [w = writer_.get()] { return w->settled(); },
        std::move(*shared), completion_);
  }
}

Store::~Store() {
  if (watcher_) watcher_->stop();  // its reader session goes before the backend
  writer_->shut_down();            // commits what was accepted and ends the writer's threads
  completion_->stop();
}

std::uint64_t Store::push_conditional(Ticket& ticket, Write write,
                                      std::optional<std::string> expected,
                                      std::shared_ptr<StateBase> done, OnConflict on_conflict) {
  return writer_->push_conditional(ticket, std::move(write), std::move(expected), std::move(done),
                                   std::move(on_conflict));
}

void Store::refresh(std::shared_ptr<StateBase> done) {
  if (watcher_)
    watcher_->refresh(std::move(done));
  else
    done->complete(nullptr);  // only this map writes: its cache is the store
}

Store::Ticket::~Ticket() {
  if (writer_) writer_->unreserve(count_);
}

Store::Ticket Store::reserve(std::size_t n) { return writer_->reserve(n); }
std::uint64_t Store::push(Ticket& ticket, Write write, std::shared_ptr<StateBase> done) {
  return writer_->push(ticket, std::move(write), std::move(done));
}
std::uint64_t Store::push(Ticket& ticket, std::vector<Write> writes,
                          std::shared_ptr<StateBase> done) {
  return writer_->push(ticket, std::move(writes), std::move(done));
}
void Store::flush(std::shared_ptr<StateBase> done) { writer_->flush(std::move(done)); }
void Store::close(std::shared_ptr<StateBase> done, CloseReport report) {
  if (watcher_) watcher_->stop();  // its reader session goes before the backend
  writer_->close(std::move(done), report);
}
std::uint64_t Store::settled() const noexcept { return writer_->settled(); }
Backend* Store::backend() const { return writer_->backend(); }

// ---------------------------------------------------------------- Writer

namespace {
// The most writes in one group: Options::max_group_writes, or the backend's
// own limit if that is smaller.
std::size_t group_writes(const Options& options, const Backend& backend) {
  const std::size_t limit = backend.max_commit_writes();
  return std::max<std::size_t>(
      limit ? std::min(options.max_group_writes, limit) : options.max_group_writes, 1);
}
}  // namespace

Writer::Writer(std::unique_ptr<Backend> backend, std::shared_ptr<Completion> completion,
               const Options& options, Store::Repair repair, Store::Committed committed)
    : backend_(std::move(backend)),
      description_(backend_->describe()),
      completion_(std::move(completion)),
      repair_(std::move(repair)),
      committed_(std::move(committed)),
      max_pending_(std::max<std::size_t>(options.max_pending_writes, 1)),
      max_group_writes_(group_writes(options, *backend_)),
      max_group_bytes_(std::max<std::size_t>(options.max_group_bytes, 1)),
      open_backend_(backend_.get()),
      shared_(backend_->shared()) {
  // Capacity up front, so that a push never grows the queue under its mutex
  // (copying it, and touching fresh pages there) in steady state.
  const std::size_t items = std::min(max_pending_, kReservedItems);
  {
    MutexLock lock(mu_);
    queue_.reserve(items);
  }
  taken_.reserve(items);
  writes_.reserve(std::min(max_group_writes_, items));
  backend_->report_to([completion = completion_](const Error& e) { completion->report(e); });
  sync_thread_ = std::thread([this] { run_sync(); });
  thread_ = std::thread([this] { run(); });
}

Writer::~Writer() { shut_down(); }

void Writer::shut_down() noexcept {
  if (!thread_.joinable()) return;
  auto done = std::make_shared<State<void>>(completion_);
  close(done, Store::CloseReport::own_failures_only);
  thread_.join();   // the writer thread joins the sync thread when it closes
  done->release();  // an unobserved failure of the final flush goes to on_error
}

Store::Ticket Writer::reserve(std::size_t n) {
  // An operation larger than the whole queue is admitted alone, once the
  // queue has drained: memory stays bounded, and nothing waits forever.
  auto fits = [&](std::size_t pending) { return pending + n <= max_pending_ || pending == 0; };
  const auto closed = [&] {
    return Error(Errc::closed, "cannot write to " + description_ + ": the map is closed");
  };
  for (;;) {
    if (closing_.load()) throw closed();
    std::size_t pending = pending_.load(std::memory_order_relaxed);
    while (fits(pending)) {
      // relaxed: pending_ is a counter; the ticket handshake below is seq_cst.
      if (pending_.compare_exchange_weak(pending, pending + n, std::memory_order_relaxed)) {
        tickets_.fetch_add(n);
        if (closing_.load()) {  // close() began: it may not have seen our ticket
          unreserve(n);
          throw closed();
        }
        return Store::Ticket(this, n);
      }
    }
    // Back-pressure: wait for the sync thread to complete something.
    MutexLock lock(mu_);
    ++room_waiters_;
    while (!closing_.load() && !fits(pending_.load())) room_cv_.wait(mu_);
    --room_waiters_;
  }
}

void Writer::unreserve(std::size_t n) noexcept {
  pending_.fetch_sub(n);
  tickets_.fetch_sub(n);
  wake_room_waiters();
}

void Writer::wake_room_waiters() noexcept {
  if (room_waiters_.load() == 0 && !closing_.load()) return;
  {
    MutexLock lock(mu_);  // a waiter between its check and its sleep holds mu_
  }
  room_cv_.signal_all();
}

Seq Writer::push(Store::Ticket& ticket, Write write, std::shared_ptr<StateBase> done) {
  return enqueue(ticket, 1, [&](Seq seq) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    queue_.push_back(Item{Item::Kind::write, true, std::move(write), seq, std::move(done)});
  });
}

Seq Writer::push(Store::Ticket& ticket, std::vector<Write> writes,
                 std::shared_ptr<StateBase> done) {
  return enqueue(ticket, writes.size(), [&](Seq seq) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (std::size_t i = 0; i < writes.size(); ++i) {
      const bool last = i + 1 == writes.size();
      queue_.push_back(Item{Item::Kind::write, last, std::move(writes[i]), seq,
                            last ? std::move(done) : nullptr});
    }
  });
}

Seq Writer::push_conditional(Store::Ticket& ticket, Write write,
                             std::optional<std::string> expected, std::shared_ptr<StateBase> done,
                             Store::OnConflict on_conflict) {
  auto condition =
      std::make_unique<Condition>(Condition{std::move(expected), std::move(on_conflict)});
  return enqueue(ticket, 1, [&](Seq seq) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    queue_.push_back(Item{Item::Kind::write, true, std::move(write), seq, std::move(done),
                          std::move(condition)});
  });
}

template <class Append>
Seq Writer::enqueue(Store::Ticket& ticket, std::size_t used, Append append) {
  bool wake, closing;
  Seq seq;
  {
    MutexLock lock(mu_);
    wake = queue_.empty();
    seq = last_seq_ + 1;
    append(seq);  // may throw (allocation): nothing is queued then
    last_seq_ = seq;
    tickets_.fetch_sub(ticket.count_);
    if (ticket.count_ > used) pending_.fetch_sub(ticket.count_ - used);  // unused room goes back
    ticket.writer_ = nullptr;
    closing = closing_.load();
  }
  if (wake) work_cv_.signal();
  if (closing) room_cv_.signal_all();  // close() waits for outstanding tickets
  return seq;
}

void Writer::flush(std::shared_ptr<StateBase> done) {
  {
    MutexLock lock(mu_);
    if (!closing_) {
      const bool wake = queue_.empty();
      queue_.push_back(Item{Item::Kind::flush, true, {}, 0, std::move(done)});
      if (wake) work_cv_.signal();
      return;
    }
  }
  done->complete(std::make_exception_ptr(
      Error(Errc::closed, "cannot flush " + description_ + ": the map is closed")));
}

void Writer::close(std::shared_ptr<StateBase> done, Store::CloseReport report) {
  {
    MutexLock lock(mu_);
    if (!closed_ && closing_) {
      close_waiters_.push_back(std::move(done));
      return;
    }
    if (!closed_) {
      closing_.store(true);
      room_cv_.signal_all();  // writers waiting for room now fail with Errc::closed
      // A write that holds a ticket has already changed the cache: let it queue.
      while (tickets_.load() != 0) room_cv_.wait(mu_);
      const bool wake = queue_.empty();
      queue_.push_back(Item{Item::Kind::close,
                            report == Store::CloseReport::earlier_failures,
                            {},
                            0,
                            std::move(done)});
      if (wake) work_cv_.signal();
      return;
    }
  }
  done->complete(nullptr);  // closed already
}

Backend* Writer::backend() const {
  MutexLock lock(mu_);
  return open_backend_;
}

// ---------------------------------------------------------------- writer thread

void Writer::take_queue() {
  MutexLock lock(mu_);
  while (queue_.empty() && next_ == taken_.size()) work_cv_.wait(mu_);
  if (next_ == taken_.size()) {
    // The common case: everything taken before is done. Swapping keeps both
    // vectors' capacity, so the queue allocates nothing in steady state.
    taken_.clear();
    next_ = 0;
    taken_.swap(queue_);
    return;
  }
  // A partial group is left: let what arrived since join it.
  if (!queue_.empty()) {
    taken_.erase(taken_.begin(), taken_.begin() + static_cast<std::ptrdiff_t>(next_));
    next_ = 0;
    taken_.insert(taken_.end(), std::make_move_iterator(queue_.begin()),
                  std::make_move_iterator(queue_.end()));
    queue_.clear();
  }
}

void Writer::run() noexcept {
  for (;;) {
    if (next_ == taken_.size() || taken_.size() - next_ < max_group_writes_) take_queue();
    Item& first = taken_[next_];
    if (first.kind == Item::Kind::flush) {
      ++next_;
      Committed flush;
      try {
        backend_->flush();
      } catch (...) {
        flush.error = to_error_ptr(std::current_exception(), description_);
      }
      flush.done.push_back(std::move(first.done));
      finish(std::move(flush));
      continue;
    }
    if (first.kind == Item::Kind::close) {
      ++next_;
      close_now(first);
      return;
    }
    // The longest run of writes that fits a group, never splitting an apply().
    std::size_t end = next_, bytes = 0;
    while (end < taken_.size() && taken_[end].kind == Item::Kind::write) {
      const bool at_boundary = end == next_ || taken_[end - 1].last;
      if (at_boundary && end > next_ &&
          (end - next_ >= max_group_writes_ || bytes >= max_group_bytes_))
        break;
      bytes += taken_[end].write.key.size() + taken_[end].write.value.size();
      ++end;
    }
    const std::span<Item> group(taken_.data() + next_, end - next_);
    next_ = end;
    commit_group(group);
  }
}

void Writer::commit_group(std::span<Item> group) {
  writes_.clear();
  for (Item& item : group) writes_.push_back(std::move(item.write));
  Committed entry;
  entry.writes = group.size();
  try {
    if (poisoned_.load(std::memory_order_acquire)) std::rethrow_exception(poison());
    entry.needs_sync = commit(group) == Durability::later;
  } catch (...) {
    entry.error = to_error_ptr(std::current_exception(), description_);
  }
  const Seq through = group.back().seq;
  // Before any future of the group completes, the cache must show what
  // the store holds.
  if (entry.error) {
    repair(writes_, group.front().seq, through);
  } else if (committed_) {
    try {
      committed_(writes_);
    } catch (...) {
      completion_->report(to_error(std::current_exception(), description_));
    }
  }
  settled_.store(through, std::memory_order_release);
  for (Item& item : group)
    if (item.done) entry.done.push_back(std::move(item.done));
  finish(std::move(entry));
}

// One Backend::commit of the group's writes (in writes_); on a shared store
// commit_shared(), tagged with the group's last number, and a conditional
// write that conflicted hands its future to its on_conflict instead.
Durability Writer::commit(std::span<Item> group) {
  if (!shared_) return backend_->commit(writes_);
  expect_.clear();
  for (std::size_t i = 0; i < group.size(); ++i)
    if (group[i].condition) expect_.push_back(Backend::Expect{i, group[i].condition->expected});
  const Durability durability =
      backend_->commit_shared(writes_, expect_, group.back().seq, conflicts_);
  for (Backend::Conflict& c : conflicts_) {
    Item& item = group[c.index];
    std::shared_ptr<StateBase> done = std::move(item.done);  // the retry completes it
    try {
      item.condition->on_conflict(item.seq, std::move(c.stored));
    } catch (...) {
      done->complete(to_error_ptr(std::current_exception(), description_));
    }
  }
  return durability;
}

void Writer::repair(std::span<const Write> writes, Seq first, Seq through) noexcept {
  Restore restore;
  restore.first = first;
  restore.through = through;
  restore.where = description_;
  restore.full = std::any_of(writes.begin(), writes.end(),
                             [](const Write& w) { return w.op == Write::Op::clear; });
  try {
    // Only a clear needs the store read back; the rest is undone from the
    // cache's own records.
    if (restore.full)
      backend_->scan([&](std::string_view key, std::string_view value) {
        restore.entries.emplace_back(std::string(key), std::string(value));
      });
  } catch (...) {
    const Error e = to_error(std::current_exception(), description_);
    completion_->report(Error(e.code(), "after a failed commit, " + description_ +
                                            " could not be read back (" + e.what() +
                                            "); the map's cache may now differ from it: "
                                            "reopen the map"));
    return;
  }
  try {
    repair_(std::move(restore));
  } catch (...) {
    completion_->report(to_error(std::current_exception(), description_));
  }
}

void Writer::close_now(Item& item) noexcept {
  std::exception_ptr error;
  try {
    backend_->flush();
  } catch (...) {
    error = to_error_ptr(std::current_exception(), description_);
  }
  {
    MutexLock lock(sync_mu_);
    sync_stop_ = true;
  }
  sync_cv_.signal();
  sync_thread_.join();  // every group before the close is completed
  // Like a flush: what failed since the last flush, else its own failure,
  // else the failed sync that poisoned the map.
  const bool earlier_failures = item.last;
  std::exception_ptr result = error;
  if (earlier_failures) {
    MutexLock lock(round_mu_);
    if (latched_) result = latched_;
    if (!result) result = poison_;
  }
  {
    MutexLock lock(mu_);
    open_backend_ = nullptr;
  }
  backend_.reset();  // the backend's destructor releases its file and lock
  std::vector<std::shared_ptr<StateBase>> waiters;
  {
    MutexLock lock(mu_);
    closed_ = true;
    waiters.swap(close_waiters_);
  }
  item.done->complete(result);
  for (auto& waiter : waiters) waiter->complete(nullptr);
}

// ---------------------------------------------------------------- sync thread

void Writer::finish(Committed entry) {
  // The writer completes its group itself, without a hop to the sync thread,
  // when that costs no overlap: nothing else waits to be committed, and no
  // earlier group is still at the sync thread (so rounds stay in order).
  // Only the writer adds to outstanding_, so a zero it reads stays zero.
  const bool alone = entry.writes == 0 || pending_.load() == entry.writes;
  if (alone && outstanding_.load(std::memory_order_acquire) == 0) {
    std::vector<Committed> round;
    round.push_back(std::move(entry));
    finish_round(round);
    return;
  }
  outstanding_.fetch_add(1, std::memory_order_relaxed);
  {
    MutexLock lock(sync_mu_);
    handed_.push_back(std::move(entry));
  }
  sync_cv_.signal();
}

std::exception_ptr Writer::poison() const {
  MutexLock lock(round_mu_);
  return poison_;
}

void Writer::run_sync() noexcept {
  std::vector<Committed> round;
  for (;;) {
    {
      MutexLock lock(sync_mu_);
      while (handed_.empty() && !sync_stop_) sync_cv_.wait(sync_mu_);
      if (handed_.empty()) return;  // stopped, and everything is done
      round.swap(handed_);
    }
    const std::size_t entries = round.size();
    finish_round(round);
    // release: the writer that reads zero sees every effect of this round.
    outstanding_.fetch_sub(entries, std::memory_order_release);
  }
}

void Writer::finish_round(std::vector<Committed>& round) {
  // Rounds never overlap: the sync thread runs one at a time, and the writer
  // runs one only when nothing is outstanding at the sync thread.
  // One sync covers every group of the round: each was committed before it
  // got here.
  const bool needs_sync =
      std::any_of(round.begin(), round.end(), [](const Committed& e) { return e.needs_sync; });
  std::exception_ptr sync_error;
  if (needs_sync) {
    try {
      backend_->sync();
    } catch (...) {
      const Error e = to_error(std::current_exception(), description_);
      sync_error = std::make_exception_ptr(
          Error(Errc::io, std::string(e.what()) +
                              "; what the disk holds is now unknown, so this map refuses every "
                              "write until it is reopened (reads keep working)"));
    }
  }
  {
    MutexLock lock(round_mu_);
    if (sync_error && !poison_) {
      poison_ = sync_error;
      poisoned_.store(true, std::memory_order_release);
    }
    // One status per entry: the commit's own failure, else the failed sync
    // (this one or an earlier one: every later write fails too).
    for (Committed& entry : round) {
      if (entry.writes > 0) {
        if (!entry.error) entry.error = poison_;
        if (entry.error && !latched_) latched_ = entry.error;
      } else {  // a flush: what failed since the previous one, else its own failure
        if (latched_) entry.error = latched_;
        if (!entry.error) entry.error = poison_;
        latched_ = nullptr;
      }
    }
  }
  // ... fanned out in this one loop, with no lock held.
  std::size_t completed_writes = 0;
  for (Committed& entry : round) {
    for (auto& done : entry.done) done->complete(entry.error);
    completed_writes += entry.writes;
  }
  round.clear();
  pending_.fetch_sub(completed_writes);
  wake_room_waiters();
}

}  // namespace pmap::detail
