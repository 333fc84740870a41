// pmap/future.hpp — the result of a write.
//
// A pmap::Future<T> completes when its write is committed in the backend (or
// has failed). It can be consumed in three ways:
//   - blocking:   get() (returns the value or throws pmap::Error), wait(),
//                 wait_for(d), ready();
//   - coroutine:  co_await future   (in any C++20 coroutine);
//   - callback:   future.then(f)    (f(Future<T>&&) runs once done).
//
// Where code runs: get()/wait() are woken directly by the map's thread that
// finishes the write (its writer or sync thread), never through the
// completion thread, so a continuation may block on another future of the
// same map.
// Continuations and resumed coroutines run on the map's completion executor
// (Options::executor; by default one completion thread per map) — never
// inline in the caller of then(), never on the map's writer or sync thread.
// A coroutine that awaits an already-completed future just continues.
//
// Dropping a future does not cancel its write. If that write fails, the error
// goes to Options::on_error instead.
//
// Thread safety: a Future is a single-consumer handle: move it between
// threads freely, but do not use one Future object from two threads at once.
// The state it refers to is safely shared with the map's threads: the
// completion is one atomic state word (pending / ready / the waiting
// continuation), and attaching a continuation is a single compare-and-swap
// (after cppcoro).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <type_traits>
#include <utility>

#include "pmap/detail/completion.hpp"
#include "pmap/error.hpp"

namespace pmap {

template <class T>
class Future;

namespace detail {

// A continuation waiting for a state. run() is called exactly once, on the
// completion executor.
class Waiter {
 public:
  virtual void run() noexcept = 0;

 protected:
  ~Waiter() = default;
};

// Blocking waits (get, wait, wait_for) park on one of a few mutex and
// condition-variable pairs shared by all states, chosen by the state's
// address, rather than on a pair of their own: a state stays small (one is
// allocated per write), and complete() touches a mutex only when a thread is
// parked on that state. A shared pair may wake a waiter of another state;
// it checks its own state and sleeps again.
struct ParkingLot {
  std::mutex mu;
  std::condition_variable cv;
};
inline ParkingLot& parking_lot(const void* state) noexcept {
  static constexpr std::size_t kLots = 256;  // few collisions among many blocked threads
  static ParkingLot lots[kLots];
  return lots[(reinterpret_cast<std::uintptr_t>(state) >> 6) % kLots];
}

// The shared, type-independent part of a future's state.
class StateBase {
 public:
  explicit StateBase(std::shared_ptr<Completion> completion) noexcept
      : completion_(std::move(completion)) {}
  StateBase(const StateBase&) = delete;
  StateBase& operator=(const StateBase&) = delete;

  // Called once, by whoever finishes the operation (the map's writer or
  // sync thread). error is null on success; the value (if any) was set
  // before the state was shared.
  void complete(std::exception_ptr error) noexcept {
    error_ = own_copy(std::move(error));
    if (error_) {
      // Whoever of complete() and the Future's destructor comes second sees
      // both bits and reports an error nobody observed.
      unsigned prev = flags_.fetch_or(kFailed, std::memory_order_acq_rel);
      if ((prev & kGone) && !(prev & kObserved)) report();
    }
    // acq_rel: publishes error_/value to whoever sees kReady, and acquires
    // the waiter published by try_attach. seq_cst, with the load of flags_
    // below and park()'s flag-then-check, so that either the parked thread
    // sees kReady or this sees kParked (Dekker): no lost wake-up.
    std::uintptr_t old = word_.exchange(kReady, std::memory_order_seq_cst);
    if (flags_.load(std::memory_order_seq_cst) & kParked) {
      ParkingLot& lot = parking_lot(this);
      {
        std::lock_guard lock(lot.mu);  // the parked thread is asleep or not yet checking
      }
      lot.cv.notify_all();
    }
    if (old != kPending) {
      auto* waiter = reinterpret_cast<Waiter*>(old);
      completion_->post([waiter] { waiter->run(); });
    }
  }

  bool ready() const noexcept { return word_.load(std::memory_order_acquire) == kReady; }

  void wait() const {
    if (ready()) return;
    ParkingLot& lot = parking_lot(this);
    std::unique_lock lock(lot.mu);
    park();
    lot.cv.wait(lock, [&] { return ready_sc(); });
  }

  template <class Clock, class Duration>
  bool wait_until(std::chrono::time_point<Clock, Duration> deadline) const {
    if (ready()) return true;
    ParkingLot& lot = parking_lot(this);
    std::unique_lock lock(lot.mu);
    park();
    return lot.cv.wait_until(lock, deadline, [&] { return ready_sc(); });
  }

  // Publishes waiter to run when the state completes. Returns false (and
  // keeps nothing) when the state is already complete. This is the last
  // access to *this the caller's side makes before the waiter may run.
  bool try_attach(Waiter* waiter) noexcept {
    std::uintptr_t expected = kPending;
    // release: the waiter's fields are visible to complete(); acquire on
    // failure: the caller then reads the completed result.
    return word_.compare_exchange_strong(expected, reinterpret_cast<std::uintptr_t>(waiter),
                                         std::memory_order_acq_rel, std::memory_order_acquire);
  }

  // The error of a completed state (null on success); marks it observed.
  std::exception_ptr take_error() noexcept {
    flags_.fetch_or(kObserved, std::memory_order_relaxed);
    return error_;
  }

  // The Future handle is gone: an error nobody took is reported.
  void release() noexcept {
    unsigned prev = flags_.fetch_or(kGone, std::memory_order_acq_rel);
    if ((prev & kFailed) && !(prev & kObserved)) report();
  }

  Completion& completion() const noexcept { return *completion_; }
  const std::shared_ptr<Completion>& completion_ptr() const noexcept { return completion_; }

 private:
  // The error in an exception object of this future's own. One failed
  // group completes many futures, often awaited on different threads; an
  // object they shared would be freed by whichever thread let go of it
  // last, through reference counting inside libstdc++ that
  // ThreadSanitizer cannot see. A pmap::Error is copied (on the completing
  // thread); anything else, or a copy that cannot be made, is kept as is.
  static std::exception_ptr own_copy(std::exception_ptr error) noexcept {
    if (!error) return error;
    try {
      std::rethrow_exception(error);
    } catch (const Error& e) {
      try {
        return std::make_exception_ptr(e);
      } catch (...) {
      }
    } catch (...) {
    }
    return error;
  }

  void report() noexcept { completion_->report(error_, "a write failed", Errc::backend); }

  // A thread is about to sleep on this state's parking lot (lot.mu held).
  void park() const noexcept { flags_.fetch_or(kParked, std::memory_order_seq_cst); }
  bool ready_sc() const noexcept { return word_.load(std::memory_order_seq_cst) == kReady; }

  static constexpr std::uintptr_t kPending = 0;
  static constexpr std::uintptr_t kReady = 1;
  static constexpr unsigned kFailed = 1, kGone = 2, kObserved = 4, kParked = 8;

  std::atomic<std::uintptr_t> word_{kPending};  // kPending, kReady, or a Waiter*
  mutable std::atomic<unsigned> flags_{0};
  std::exception_ptr error_;  // written before word_ becomes kReady
  std::shared_ptr<Completion> completion_;
};

template <class T>
class State final : public StateBase {
 public:
  using StateBase::StateBase;
  std::optional<T> value;  // set before the state is queued for the writer
};

template <>
class State<void> final : public StateBase {
 public:
  using StateBase::StateBase;
};

template <class T>
Future<T> make_future(std::shared_ptr<State<T>> state) {
  return Future<T>(std::move(state));
}

}  // namespace detail

template <class T>
class Future {
 public:
  // An empty future (valid() is false), as left by a move.
  Future() = default;
  Future(Future&& other) noexcept : state_(std::move(other.state_)) {}
  Future& operator=(Future&& other) noexcept {
    if (this != &other) {
      reset();
      state_ = std::move(other.state_);
    }
    return *this;
  }
  Future(const Future&) = delete;
  Future& operator=(const Future&) = delete;
  ~Future() { reset(); }

  bool valid() const noexcept { return state_ != nullptr; }

  // True once the write is committed or has failed; never blocks.
  bool ready() const noexcept { return state_ && state_->ready(); }

  // Blocks until ready.
  void wait() const { checked().wait(); }

  // Blocks until ready or d has passed; true when ready.
  template <class Rep, class Period>
  bool wait_for(std::chrono::duration<Rep, Period> d) const {
    return checked().wait_until(std::chrono::steady_clock::now() + d);
  }

  // Blocks until ready, then returns the result (once: the future is empty
  // afterwards) or throws the write's pmap::Error.
  // Errors: whatever failed the write; Errc::invalid_argument on an empty future.
  T get() {
    checked().wait();
    auto state = std::move(state_);
    if (auto error = state->take_error()) std::rethrow_exception(error);
    if constexpr (!std::is_void_v<T>) return std::move(*state->value);
  }

  // Runs f(Future<T>&&) once ready, on the completion executor (also when it
  // is ready already). Consumes this future.
  template <class F>
    requires std::is_invocable_v<F&, Future<T>&&>
  void then(F f) {
    struct Node final : detail::Waiter {
      Node(F fn, std::shared_ptr<detail::State<T>> s) : fn(std::move(fn)), state(std::move(s)) {}
      void run() noexcept override {
        std::unique_ptr<Node> self(this);
        std::shared_ptr<detail::Completion> completion = state->completion_ptr();
        try {
          fn(Future<T>(std::move(state)));
        } catch (...) {
          // A continuation that throws has nobody to throw to; say so rather
          // than lose it.
          completion->report(std::current_exception(), "a Future::then continuation threw",
                             Errc::invalid_argument);
        }
      }
      F fn;
      std::shared_ptr<detail::State<T>> state;
    };
    auto state = std::shared_ptr<detail::State<T>>(checked_ptr());
    state_.reset();
    auto* node = new Node(std::move(f), state);
    if (!state->try_attach(node)) state->completion().post([node] { node->run(); });
  }

  // co_await future: suspends until ready (resuming on the completion
  // executor) and yields get().
  auto operator co_await() && noexcept {
    struct Awaiter final : detail::Waiter {
      Future& future;
      std::coroutine_handle<> handle;
      explicit Awaiter(Future& f) : future(f) {}
      // An empty future does not suspend; await_resume() then throws.
      bool await_ready() const noexcept { return !future.valid() || future.ready(); }
      bool await_suspend(std::coroutine_handle<> h) noexcept {
        handle = h;
        return future.state_->try_attach(this);  // false: ready, resume now
      }
      T await_resume() { return future.get(); }
      void run() noexcept override { handle.resume(); }
    };
    return Awaiter(*this);
  }
  auto operator co_await() & noexcept { return std::move(*this).operator co_await(); }

 private:
  template <class U>
  friend Future<U> detail::make_future(std::shared_ptr<detail::State<U>>);
  explicit Future(std::shared_ptr<detail::State<T>> state) : state_(std::move(state)) {}

  detail::State<T>& checked() const { return *checked_ptr(); }
  const std::shared_ptr<detail::State<T>>& checked_ptr() const {
    if (!state_)
      throw Error(Errc::invalid_argument,
                  "pmap::Future is empty (moved from, or get() or then() already called)");
    return state_;
  }
  void reset() noexcept {
    if (state_) {
      state_->release();
      state_.reset();
    }
  }

  std::shared_ptr<detail::State<T>> state_;
};

}  // namespace pmap
