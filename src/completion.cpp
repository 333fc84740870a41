// Where user code runs. See pmap/detail/completion.hpp.

#include "pmap/detail/completion.hpp"

#include <absl/base/thread_annotations.h>

#include <cstdio>
#include <deque>
#include <thread>
#include <vector>

#include "errors.hpp"
#include "sync.hpp"

namespace pmap::detail {

namespace {

void print_error(const Error& error) noexcept { std::fprintf(stderr, "pmap: %s\n", error.what()); }

// Completion threads that had to end without being joined: a map destroyed
// by one of its own continuations cannot join the thread it runs on. The
// thread is parked here and joined by the next stop() elsewhere, or at exit.
class Orphans {
 public:
  void adopt(std::thread thread) {
    MutexLock lock(mu_);
    threads_.push_back(std::move(thread));
  }
  // Joins every parked thread but the caller's own.
  void join_others() {
    std::vector<std::thread> threads;
    {
      MutexLock lock(mu_);
      threads.swap(threads_);
    }
    for (auto& t : threads) {
      if (t.get_id() == std::this_thread::get_id())
        adopt(std::move(t));
      else
        t.join();
    }
  }
  ~Orphans() { join_others(); }

 private:
  Mutex mu_;
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
};

Orphans& orphans() {
  static Orphans o;
  return o;
}

}  // namespace

struct Completion::Impl {
  Executor executor;  // empty: use the default thread below
  std::function<void(const Error&)> on_error;

  Mutex mu;
  CondVar cv;
  std::deque<std::function<void()>> tasks ABSL_GUARDED_BY(mu);
  bool stopping ABSL_GUARDED_BY(mu) = false;
  bool stopped ABSL_GUARDED_BY(mu) = false;
  std::thread thread;  // set in the constructor, taken by stop()

  void run() {
    MutexLock lock(mu);
    for (;;) {
      while (!stopping && tasks.empty()) cv.wait(mu);
      if (tasks.empty()) {
        stopped = true;  // from now on post() runs tasks itself: none is left behind
        return;
      }
      auto task = std::move(tasks.front());
      tasks.pop_front();
      mu.unlock();
      try {
        task();
      } catch (...) {
        // Tasks are continuations and on_error calls, each of which catches
        // its own exceptions; this is a last resort.
        print_error(to_error(std::current_exception(), "a completion task threw"));
      }
      task = nullptr;  // destroy captured state outside the lock
      mu.lock();
    }
  }
};

Completion::Completion(Executor executor, std::function<void(const Error&)> on_error)
    : impl_(std::make_shared<Impl>()) {
  impl_->executor = std::move(executor);
  impl_->on_error = on_error ? std::move(on_error) : print_error;
  if (!impl_->executor) {
    // The thread keeps Impl alive: it may outlive this object (see stop()).
    impl_->thread = std::thread([impl = impl_] { impl->run(); });
  }
}

Completion::~Completion() { stop(); }

void Completion::post(std::function<void()> task) noexcept {
  Impl& d = *impl_;
  if (d.executor) {
    try {
      d.executor(std::move(task));
    } catch (...) {
      print_error(to_error(std::current_exception(),
                           "Options::executor threw, and a continuation was lost"));
    }
    return;
  }
  {
    MutexLock lock(d.mu);
    if (!d.stopped) {
      try {
        d.tasks.push_back(std::move(task));
      } catch (const std::bad_alloc&) {
        std::fprintf(stderr, "pmap: out of memory queueing a continuation; it was lost\n");
        return;
      }
      d.cv.signal();
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
    post([handler = impl_->on_error, code = error.code(), message = std::string(error.what())] {
      const Error error(code, message);
      try {
        handler(error);
      } catch (...) {
        print_error(error);  // on_error itself failed: stderr is what is left
      }
    });
  } catch (const std::bad_alloc&) {
    print_error(error);
  }
}

void Completion::report(std::exception_ptr error, std::string_view context,
                        Errc fallback) noexcept {
  try {
    report(to_error(std::move(error), context, fallback));
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "pmap: out of memory reporting an error\n");
  }
}

void Completion::stop() noexcept {
  Impl& d = *impl_;
  {
    MutexLock lock(d.mu);
    if (d.stopped && !d.thread.joinable()) return;
    d.stopping = true;
  }
  d.cv.signal();
  if (d.thread.joinable()) {
    if (d.thread.get_id() == std::this_thread::get_id()) {
      // The map is being destroyed by one of its own continuations; joining
      // would wait for ourselves. The thread ends once this task returns.
      std::fprintf(stderr, "pmap: a map was destroyed from its own continuation\n");
      orphans().adopt(std::move(d.thread));
    } else {
      d.thread.join();
    }
  }
  orphans().join_others();
  MutexLock lock(d.mu);
  d.stopped = true;
}

}  // namespace pmap::detail
