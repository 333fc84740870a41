// pmap/detail/completion.hpp — where a map's user code runs. Not API.
//
// One Completion per map, shared (by shared_ptr) with every future the map
// hands out, so a future may outlive its map. It owns the default completion
// thread, or forwards to Options::executor, and delivers unobserved errors to
// Options::on_error — always through the executor, never on the caller's
// (writer's) thread.
//
// Thread safety: every member may be called from any thread.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "pmap/options.hpp"

namespace pmap::detail {

class Completion {
 public:
  Completion(Executor executor, std::function<void(const Error&)> on_error);
  ~Completion();
  Completion(const Completion&) = delete;
  Completion& operator=(const Completion&) = delete;

  // Runs task on the executor. After stop(), the default executor is gone and
  // the task runs on the calling thread (only a future outliving its map, or a
  // then() attached after the map closed, gets there).
  void post(std::function<void()> task) noexcept;

  // Hands error to on_error, through post().
  void report(const Error& error) noexcept;

  // Runs every task already posted, then ends the default completion thread.
  // Must not be called from that thread.
  void stop() noexcept;

  // True on the default completion thread.
  bool on_completion_thread() const noexcept;

 private:
  void run();

  Executor executor_;  // empty: use the default thread below
  std::function<void(const Error&)> on_error_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;  // guarded by mu_
  bool stopping_ = false;                    // guarded by mu_
  bool stopped_ = false;                     // guarded by mu_
  std::thread thread_;
};

}  // namespace pmap::detail
