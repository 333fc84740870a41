// Where user code runs. See pmap/detail/completion.hpp.

#include "pmap/detail/completion.hpp"

#include <cstdio>

namespace pmap::detail {
namespace {

void print_error(const Error& error) noexcept {
  std::fprintf(stderr, "pmap: %s\n", error.what());
}

}  // namespace

Completion::Completion(Executor executor, std::function<void(const Error&)> on_error)
    : executor_(std::move(executor)), on_error_(std::move(on_error)) {
  if (!on_error_) on_error_ = print_error;
  if (!executor_) thread_ = std::thread([this] { run(); });
}

Completion::~Completion() { stop(); }

void Completion::post(std::function<void()> task) noexcept {
  if (executor_) {
    try {
      executor_(std::move(task));
    } catch (const std::exception& e) {
      std::fprintf(stderr, "pmap: Options::executor threw (%s); a continuation was lost\n",
                   e.what());
    } catch (...) {
      std::fprintf(stderr, "pmap: Options::executor threw; a continuation was lost\n");
    }
    return;
  }
  {
    std::lock_guard lock(mu_);
    if (!stopped_) {
      try {
        tasks_.push_back(std::move(task));
      } catch (...) {
        std::fprintf(stderr, "pmap: out of memory queueing a continuation; it was lost\n");
        return;
      }
      cv_.notify_one();
      return;
    }
  }
  task();  // the completion thread is gone: the map was destroyed
}

void Completion::report(const Error& error) noexcept {
  try {
    // The Error is built again on the completion thread, not copied:
    // libstdc++'s exceptions share their message through a reference count
    // that ThreadSanitizer cannot see, so a copy freed on another thread
    // reads as a race.
    post([handler = on_error_, code = error.code(), message = std::string(error.what())] {
      const Error error(code, message);
      try {
        handler(error);
      } catch (...) {
        print_error(error);
      }
    });
  } catch (...) {
    print_error(error);
  }
}

void Completion::run() {
  std::unique_lock lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stopping_ || !tasks_.empty(); });
    if (tasks_.empty()) {
      stopped_ = true;  // from now on post() runs tasks itself: none is left behind
      return;
    }
    auto task = std::move(tasks_.front());
    tasks_.pop_front();
    lock.unlock();
    try {
      task();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "pmap: a continuation threw: %s\n", e.what());
    } catch (...) {
      std::fprintf(stderr, "pmap: a continuation threw a non-std exception\n");
    }
    task = nullptr;  // destroy captured state outside the lock
    lock.lock();
  }
}

void Completion::stop() noexcept {
  {
    std::lock_guard lock(mu_);
    if (stopped_) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) {
    if (on_completion_thread()) {
      // The map is being destroyed by one of its own continuations; joining
      // would wait for ourselves. Let this thread finish on its own.
      std::fprintf(stderr, "pmap: a map was destroyed from its own continuation\n");
      thread_.detach();
    } else {
      thread_.join();
    }
  }
  std::lock_guard lock(mu_);
  stopped_ = true;
}

bool Completion::on_completion_thread() const noexcept {
  return std::this_thread::get_id() == thread_.get_id();
}

}  // namespace pmap::detail
