// pmap/detail/completion.hpp — where a map's user code runs. Not API (the
// future template needs to see it); the implementation is src/completion.cpp.
//
// One Completion per map, shared (by shared_ptr) with every future the map
// hands out, so a future may outlive its map. It owns the default completion
// thread, or forwards to Options::executor, and delivers unobserved errors to
// Options::on_error — always through the executor, never on the caller's
// (writer's) thread.
//
// Thread safety: every member may be called from any thread.
#pragma once

#include <exception>
#include <functional>
#include <memory>
#include <string_view>

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
  // The same for any exception: a pmap::Error as it is, anything else as
  // Errc `fallback` with "<context>: <its message>".
  void report(std::exception_ptr error, std::string_view context, Errc fallback) noexcept;

  // Runs every task already posted, then ends the default completion thread.
  // Called from that thread itself (a map destroyed by its own
  // continuation), it lets the thread end once the current task returns.
  void stop() noexcept;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace pmap::detail
