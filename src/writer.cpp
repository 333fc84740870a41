// The writer: group commit and fan-out. See pmap/detail/writer.hpp.
//
// The loop, in one sentence: wait for the queue to be non-empty, take the
// longest run of writes at its front that fits a group (never splitting an
// apply() batch), commit them in one Backend::write, repair the cache if that
// failed, complete the group's futures, then give the room back to producers.
// flush and close markers are handled alone, in queue order.

#include "pmap/detail/writer.hpp"

#include <algorithm>
#include <unordered_set>

namespace pmap::detail {

std::exception_ptr as_pmap_error(std::exception_ptr error, const std::string& where) {
  try {
    std::rethrow_exception(error);
  } catch (const Error&) {
    return error;
  } catch (const std::exception& e) {
    return std::make_exception_ptr(Error(Errc::backend, where + ": " + e.what()));
  } catch (...) {
    return std::make_exception_ptr(
        Error(Errc::backend, where + ": the backend threw a non-std exception"));
  }
}

Writer::Writer(std::unique_ptr<Backend> backend, std::shared_ptr<Completion> completion,
               const Options& options, CacheRepair& repair)
    : backend_(std::move(backend)),
      description_(backend_->describe()),
      completion_(std::move(completion)),
      repair_(repair),
      max_pending_(std::max<std::size_t>(options.max_pending_writes, 1)),
      max_group_writes_(std::max<std::size_t>(options.max_group_writes, 1)),
      max_group_bytes_(std::max<std::size_t>(options.max_group_bytes, 1)) {
  // Capacity up front, so that a push never grows the queue under its mutex
  // (copying it, and touching fresh pages there) in steady state.
  const std::size_t items = std::min(max_pending_, kReservedItems);
  queue_.reserve(items);
  taken_.reserve(items);
  writes_.reserve(std::min(max_group_writes_, items));
  deferred_ = dynamic_cast<DeferredSync*>(backend_.get());
  if (deferred_ && !deferred_->defers_sync()) deferred_ = nullptr;
  if (deferred_) sync_thread_ = std::thread([this] { run_sync(); });
  thread_ = std::thread([this] { run(); });
}

Writer::~Writer() {
  auto done = std::make_shared<State<void>>(completion_);
  close(done, /*like_flush=*/false);
  join();
  done->release();  // an unobserved failure of the final commit goes to on_error
}

Writer::Ticket Writer::reserve(std::size_t n) {
  // An operation larger than the whole queue is admitted alone, once the
  // queue has drained: memory stays bounded, and nothing waits forever.
  auto fits = [&](std::size_t pending) { return pending + n <= max_pending_ || pending == 0; };
  for (;;) {
    if (closing_.load())
      throw Error(Errc::closed, "cannot write to " + description_ + ": the map is closed");
    std::size_t pending = pending_.load(std::memory_order_relaxed);
    while (fits(pending)) {
      // relaxed: pending_ is a counter; the ticket handshake below is seq_cst.
      if (pending_.compare_exchange_weak(pending, pending + n, std::memory_order_relaxed)) {
        tickets_.fetch_add(n);
        if (closing_.load()) {  // close() began: it may not have seen our ticket
          unreserve(n);
          throw Error(Errc::closed, "cannot write to " + description_ + ": the map is closed");
        }
        return Ticket(this, n);
      }
    }
    // Back-pressure: wait for the writer to commit something.
    std::unique_lock lock(mu_);
    ++room_waiters_;
    room_cv_.wait(lock, [&] { return closing_.load() || fits(pending_.load()); });
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
    std::lock_guard lock(mu_);  // a waiter between its check and its sleep holds mu_
  }
  room_cv_.notify_all();
}

void Writer::push(Ticket& ticket, Write write, std::shared_ptr<StateBase> done) {
  enqueue(ticket, 1, [&] {
    queue_.push_back(Item{Item::Kind::write, true, std::move(write), std::move(done)});
  });
}

void Writer::push(Ticket& ticket, std::vector<Write> writes, std::shared_ptr<StateBase> done) {
  enqueue(ticket, writes.size(), [&] {
    for (std::size_t i = 0; i < writes.size(); ++i) {
      const bool last = i + 1 == writes.size();
      queue_.push_back(
          Item{Item::Kind::write, last, std::move(writes[i]), last ? std::move(done) : nullptr});
    }
  });
}

template <class Append>
void Writer::enqueue(Ticket& ticket, std::size_t used, Append append) {
  bool wake, closing;
  {
    std::lock_guard lock(mu_);
    wake = queue_.empty();
    append();
    tickets_.fetch_sub(ticket.count_);
    if (ticket.count_ > used) pending_.fetch_sub(ticket.count_ - used);  // unused room goes back
    ticket.writer_ = nullptr;
    closing = closing_.load();
  }
  if (wake) work_cv_.notify_one();
  if (closing) room_cv_.notify_all();  // close() waits for outstanding tickets
}

void Writer::push_flush(std::shared_ptr<StateBase> done) {
  {
    std::lock_guard lock(mu_);
    if (!closing_) {
      const bool wake = queue_.empty();
      queue_.push_back(Item{Item::Kind::flush, true, {}, std::move(done)});
      if (wake) work_cv_.notify_one();
      return;
    }
  }
  done->complete(std::make_exception_ptr(
      Error(Errc::closed, "cannot flush " + description_ + ": the map is closed")));
}

void Writer::close(std::shared_ptr<StateBase> done, bool like_flush) {
  std::unique_lock lock(mu_);
  if (closed_) {
    lock.unlock();
    done->complete(nullptr);
    return;
  }
  if (closing_) {
    close_waiters_.push_back(std::move(done));
    return;
  }
  closing_.store(true);
  room_cv_.notify_all();  // writers waiting for room now fail with Errc::closed
  // A write that holds a ticket has already changed the cache: let it queue.
  room_cv_.wait(lock, [&] { return tickets_.load() == 0; });
  const bool wake = queue_.empty();
  queue_.push_back(Item{Item::Kind::close, like_flush, {}, std::move(done)});
  if (wake) work_cv_.notify_one();
}

void Writer::join() {
  if (thread_.joinable()) thread_.join();
  stop_sync();  // already stopped by the writer thread's close, unless that never ran
}

void Writer::for_each_queued(const std::function<void(const Write&)>& fn) const {
  // taken_ beyond next_ is the writer thread's own (this runs on it).
  for (std::size_t i = next_; i < taken_.size(); ++i)
    if (taken_[i].kind == Item::Kind::write) fn(taken_[i].write);
  std::lock_guard lock(mu_);
  for (const Item& item : queue_)
    if (item.kind == Item::Kind::write) fn(item.write);
}

void Writer::take_queue() {
  std::unique_lock lock(mu_);
  work_cv_.wait(lock, [&] { return !queue_.empty() || next_ < taken_.size(); });
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
      finish_flush(first.done, false, true);
      continue;
    }
    if (first.kind == Item::Kind::close) {
      ++next_;
      finish_flush(first.done, true, first.last);
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
    next_ = end;  // from here on, for_each_queued sees only what follows the group
    commit_group(group);
  }
}

void Writer::commit_group(std::span<Item> group) {
  writes_.clear();
  for (Item& item : group) writes_.push_back(std::move(item.write));
  std::exception_ptr error;
  try {
    if (deferred_)
      deferred_->commit(writes_);
    else
      backend_->write(writes_);
  } catch (...) {
    error = as_pmap_error(std::current_exception(), description_);
  }
  if (error) {
    // Before any future of the group completes, the cache must show what
    // the backend holds.
    repair_after(writes_);
    if (!latched_) latched_ = error;
  } else if (deferred_) {
    if (sync_here(group)) return;
    Synced entry;
    entry.writes = group.size();
    for (Item& item : group)
      if (item.done) entry.done.push_back(std::move(item.done));
    enqueue_sync(std::move(entry));
    return;
  }
  finish_group(group, error);
}

void Writer::finish_group(std::span<Item> group, const std::exception_ptr& error) {
  for (Item& item : group)
    if (item.done) item.done->complete(error);
  pending_.fetch_sub(group.size());
  wake_room_waiters();
}

bool Writer::sync_here(std::span<Item> group) {
  // Nothing else to commit: a hop to the sync thread would only add a
  // thread wake-up to this group's latency.
  if (pending_.load() != group.size()) return false;
  {
    std::lock_guard lock(sync_mu_);
    // Only this thread queues entries: an idle sync thread stays idle.
    if (!sync_queue_.empty() || sync_busy_) return false;
  }
  finish_group(group, sync_backend());
  return true;
}

std::exception_ptr Writer::sync_backend() noexcept {
  try {
    deferred_->sync();
    return nullptr;
  } catch (...) {
    auto error = as_pmap_error(std::current_exception(), description_);
    if (!sync_latched_) sync_latched_ = error;
    return error;
  }
}

void Writer::enqueue_sync(Synced entry) {
  {
    std::lock_guard lock(sync_mu_);
    sync_queue_.push_back(std::move(entry));
  }
  sync_cv_.notify_one();
}

void Writer::run_sync() noexcept {
  std::vector<Synced> batch;
  for (;;) {
    {
      std::unique_lock lock(sync_mu_);
      sync_busy_ = false;  // idle while it waits: the writer may sync a lone group itself
      sync_cv_.wait(lock, [&] { return !sync_queue_.empty() || sync_stop_; });
      if (sync_queue_.empty()) return;  // stopped, and everything is done
      batch.swap(sync_queue_);
      sync_busy_ = true;
    }
    // One fsync covers every group in the batch: each was committed before
    // it was queued. A flush alone needs none: what came before it was
    // synced in an earlier round.
    const bool writes =
        std::any_of(batch.begin(), batch.end(), [](const Synced& e) { return e.writes > 0; });
    const std::exception_ptr error = writes ? sync_backend() : nullptr;
    std::size_t done_writes = 0;
    for (Synced& entry : batch) {
      if (entry.flush) {
        std::exception_ptr result = entry.flush_error ? entry.flush_error : sync_latched_;
        sync_latched_ = nullptr;
        entry.done.front()->complete(result);
      } else {
        for (auto& state : entry.done) state->complete(error);
        done_writes += entry.writes;
      }
    }
    batch.clear();
    pending_.fetch_sub(done_writes);
    wake_room_waiters();
  }
}

void Writer::stop_sync() noexcept {
  if (!sync_thread_.joinable()) return;
  {
    std::lock_guard lock(sync_mu_);
    sync_stop_ = true;
  }
  sync_cv_.notify_one();
  sync_thread_.join();
}

void Writer::repair_after(std::span<const Write> writes) noexcept {
  const bool all = std::any_of(writes.begin(), writes.end(),
                               [](const Write& w) { return w.op == Write::Op::clear; });
  std::vector<StoredEntry> entries;
  try {
    if (all) {
      backend_->scan([&](std::string_view key, std::string_view value) {
        entries.push_back(StoredEntry{std::string(key), std::string(value)});
      });
    } else {
      std::unordered_set<std::string_view> seen;
      for (const Write& w : writes)
        if (seen.insert(w.key).second) entries.push_back(StoredEntry{w.key, backend_->get(w.key)});
    }
  } catch (const std::exception& e) {
    completion_->report(Error(
        Errc::backend, "after a failed commit, " + description_ + " could not be read back (" +
                           e.what() + "); the map's cache may now differ from it: reopen the map"));
    return;
  } catch (...) {
    completion_->report(Error(Errc::backend, "after a failed commit, " + description_ +
                                                 " could not be read back; reopen the map"));
    return;
  }
  repair_.restore(*this, entries, all);
}

void Writer::finish_flush(std::shared_ptr<StateBase>& done, bool release_backend,
                          bool report_latched) noexcept {
  // Closing: every commit synced and its future completed first.
  if (release_backend) stop_sync();
  std::exception_ptr error;
  try {
    backend_->flush();
  } catch (...) {
    error = as_pmap_error(std::current_exception(), description_);
  }
  std::exception_ptr latched = latched_;
  latched_ = nullptr;
  if (release_backend && !latched) latched = sync_latched_;  // the sync thread has ended
  std::exception_ptr result = latched && report_latched ? latched : error;
  if (!release_backend) {
    if (deferred_) {
      // Completes once what was committed before it is synced (failing if
      // one of those syncs failed since the previous flush).
      Synced entry;
      entry.flush = true;
      entry.flush_error = result;
      entry.done.push_back(std::move(done));
      enqueue_sync(std::move(entry));
      return;
    }
    done->complete(result);
    return;
  }
  backend_.reset();  // the backend's destructor releases its file and lock
  std::vector<std::shared_ptr<StateBase>> waiters;
  {
    std::lock_guard lock(mu_);
    closed_ = true;
    waiters.swap(close_waiters_);
  }
  done->complete(result);
  for (auto& waiter : waiters) waiter->complete(nullptr);
}

}  // namespace pmap::detail
