// The watcher: on a shared store, the thread that follows the store's change
// record and hands every read of it to the map, so that the cache learns
// what other maps (in this process or others) committed. One per map with a
// shared backend, owned by detail::Store.
//
// Its loop: wait on a reader session until something may have changed
// (Backend::wait_for_change; refresh() and stop() interrupt the wait), read
// the record from the last position (changes_since), and hand the read to
// Observe — or, when the record no longer reaches back that far, read the
// whole store (scan_at) and hand it to Reload. refresh() futures complete
// once a read that began after their call has been handed over, or fail
// with its error. When the store cannot be read, the failure goes to
// on_error once, and the watcher retries with back-off (100 ms doubling to
// 5 s); the cache keeps serving.
//
// Thread safety: refresh() and stop() may be called from any thread.
// Observe and Reload run on the watcher thread, one at a time.
#pragma once

#include <absl/base/thread_annotations.h>

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "pmap/detail/store.hpp"
#include "sync.hpp"

namespace pmap::detail {

class Watcher {
 public:
  Watcher(std::unique_ptr<Backend> reader, std::uint64_t position, std::function<Seq()> settled,
          Store::Shared shared, std::shared_ptr<Completion> completion);
  // stop().
  ~Watcher();
  Watcher(const Watcher&) = delete;
  Watcher& operator=(const Watcher&) = delete;

  void refresh(std::shared_ptr<StateBase> done);
  // Ends the thread (refreshes still waiting fail with Errc::closed) and
  // releases the reader session. Idempotent.
  void stop() noexcept;

 private:
  void run() noexcept;
  // Sleeps for `delay` or until stop(): false once stopped.
  bool back_off(std::chrono::milliseconds delay);

  std::unique_ptr<Backend> reader_;
  const std::string description_;
  std::uint64_t position_;  // watcher thread only, after construction
  const std::function<Seq()> settled_;
  const Store::Shared shared_;
  const std::shared_ptr<Completion> completion_;

  Mutex mu_;
  CondVar cv_;  // back_off() sleeps on it
  std::vector<std::shared_ptr<StateBase>> refreshes_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace pmap::detail
