// The watcher. See watcher.hpp.

#include "watcher.hpp"

#include <algorithm>
#include <chrono>

#include "errors.hpp"

namespace pmap::detail {

Watcher::Watcher(std::unique_ptr<Backend> reader, std::uint64_t position,
                 std::function<Seq()> settled, Store::Shared shared,
                 std::shared_ptr<Completion> completion)
    : reader_(std::move(reader)),
      description_(reader_->describe()),
      position_(position),
      settled_(std::move(settled)),
      shared_(std::move(shared)),
      completion_(std::move(completion)) {
  thread_ = std::thread([this] { run(); });
}

Watcher::~Watcher() { stop(); }

void Watcher::refresh(std::shared_ptr<StateBase> done) {
  {
    MutexLock lock(mu_);
    if (!stop_) {
      refreshes_.push_back(std::move(done));
      // Under mu_: stop() releases the reader only after it has set stop_.
      reader_->interrupt();
      return;
    }
  }
  done->complete(std::make_exception_ptr(
      Error(Errc::closed, "cannot refresh " + description_ + ": the map is closed")));
}

void Watcher::stop() noexcept {
  if (!thread_.joinable()) return;
  {
    MutexLock lock(mu_);
    stop_ = true;
  }
  cv_.signal_all();
  reader_->interrupt();
  thread_.join();
  reader_.reset();
}

bool Watcher::back_off(std::chrono::milliseconds delay) {
  const auto deadline = std::chrono::steady_clock::now() + delay;
  MutexLock lock(mu_);
  while (!stop_ && cv_.wait_until(mu_, deadline)) {
  }
  return !stop_;
}

void Watcher::run() noexcept {
  // A wait's timeout: a safety net for a wake-up the backend missed.
  constexpr std::chrono::seconds kWait{1};
  constexpr std::chrono::milliseconds kFirstDelay{100}, kMaxDelay{5000};
  std::chrono::milliseconds delay = kFirstDelay;
  bool failing = false;
  std::vector<std::shared_ptr<StateBase>> waiting;
  for (;;) {
    bool idle;
    {
      MutexLock lock(mu_);
      if (stop_) break;
      idle = refreshes_.empty();
    }
    if (idle && !failing) reader_->wait_for_change(position_, kWait);
    {
      // Every refresh asked for before this read begins is answered by it.
      MutexLock lock(mu_);
      if (stop_) break;
      waiting.insert(waiting.end(), std::make_move_iterator(refreshes_.begin()),
                     std::make_move_iterator(refreshes_.end()));
      refreshes_.clear();
    }
    // Every local write up to here is committed (so in the record this read
    // reaches) or failed.
    const Seq settled = settled_();
    Backend::ChangeRead read;
    std::vector<std::pair<std::string, std::string>> entries;
    try {
      // The values of its own puts only for watchers; and if a watch began
      // while a read went without them, once more with them: that watch
      // may be owed a change the read saw.
      const bool watched = shared_.watched();
      read = reader_->changes_since(position_, watched ? 0 : shared_.origin);
      if (!watched && shared_.watched()) read = reader_->changes_since(position_, 0);
      if (read.gap) {
        position_ = reader_->scan_at([&](std::string_view k, std::string_view v) {
          entries.emplace_back(std::string(k), std::string(v));
        });
      } else {
        position_ = read.through;
      }
    } catch (...) {
      const Error e = to_error(std::current_exception(), description_);
      if (!failing)
        completion_->report(Error(e.code(), std::string(e.what()) +
                                                "; the map keeps serving its cache, and retries "
                                                "reading what other maps wrote"));
      // A refresh waits for a read that succeeded; this one failed.
      for (auto& done : waiting) done->complete(std::make_exception_ptr(e));
      waiting.clear();
      failing = true;
      if (!back_off(delay)) break;
      delay = std::min(delay * 2, kMaxDelay);
      continue;
    }
    // What the map could not apply (an entry that does not decode) is
    // reported; the read is done either way.
    try {
      if (read.gap)
        shared_.reload(std::move(entries), settled);
      else
        shared_.observe(std::move(read), settled);
    } catch (...) {
      completion_->report(to_error(std::current_exception(), description_));
    }
    failing = false;
    delay = kFirstDelay;
    for (auto& done : waiting) done->complete(nullptr);
    waiting.clear();
  }
  {
    MutexLock lock(mu_);
    waiting.insert(waiting.end(), std::make_move_iterator(refreshes_.begin()),
                   std::make_move_iterator(refreshes_.end()));
    refreshes_.clear();
  }
  for (auto& done : waiting)
    done->complete(std::make_exception_ptr(
        Error(Errc::closed, "cannot refresh " + description_ + ": the map was closed")));
}

}  // namespace pmap::detail
