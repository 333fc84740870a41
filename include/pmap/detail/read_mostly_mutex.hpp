// pmap/detail/read_mostly_mutex.hpp — a reader-writer lock whose readers do
// not write a cache line that other threads' readers write.
//
// std::shared_mutex makes every reader modify the lock word, so two threads
// reading different keys of one shard pass that cache line back and forth.
// Here a reader only increments a counter of its own *slot* (threads are
// dealt slots round robin); a writer raises the shard's `writing` flag and
// waits until every slot's counter for the shard is zero. Reads cost two
// uncontended atomic increments; writes cost a mutex, a flag and a look at
// kSlots counters. Slots are laid out slot-major (ReaderCounters), so one
// thread's counters for all shards share its cache lines and no other slot's.
//
// The handshake is Dekker's: a reader increments, then reads the flag; a
// writer sets the flag, then reads the counters (all seq_cst), so at least
// one of them sees the other. A reader that sees the flag backs out and
// waits on the writer's mutex.
#pragma once

#include <absl/base/thread_annotations.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>

namespace pmap::detail {

inline constexpr std::size_t kReaderSlots = 8;

// This thread's slot. Threads beyond kReaderSlots share slots: correct, only
// their counters' cache line is shared again.
inline std::size_t reader_slot() noexcept {
  static std::atomic<std::size_t> next{0};
  thread_local std::size_t slot = kReaderSlots;  // constant-initialised: no TLS guard
  if (slot == kReaderSlots) slot = next.fetch_add(1, std::memory_order_relaxed) % kReaderSlots;
  return slot;
}

// The reader counters of `count` locks: kSlots rows, each on its own cache lines.
class ReaderCounters {
 public:
  explicit ReaderCounters(std::size_t count)
      : stride_((count + kPerLine - 1) / kPerLine * kPerLine),
        counters_(new Line[kReaderSlots * stride_ / kPerLine]) {}
  std::atomic<std::uint32_t>& at(std::size_t slot, std::size_t lock) const noexcept {
    const std::size_t i = slot * stride_ + lock;
    return counters_[i / kPerLine].word[i % kPerLine];
  }

 private:
  static constexpr std::size_t kPerLine = 16;
  struct alignas(64) Line {
    std::atomic<std::uint32_t> word[kPerLine] = {};
  };
  std::size_t stride_;
  std::unique_ptr<Line[]> counters_;
};

// SharedLockable (std::unique_lock and std::shared_lock work), annotated for
// clang's -Wthread-safety; WriterLock and ReaderLock below are the scoped
// guards the analysis understands. A shared lock must be released by the
// thread that took it.
class ABSL_LOCKABLE ReadMostlyMutex {
 public:
  void attach(const ReaderCounters& counters, std::size_t index) noexcept {
    counters_ = &counters;
    index_ = index;
  }

  void lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() {
    mutex_.lock();
    writing_.store(true, std::memory_order_seq_cst);
    for (std::size_t s = 0; s < kReaderSlots; ++s) {
      const auto& readers = counters_->at(s, index_);
      for (int spins = 0; readers.load(std::memory_order_seq_cst) != 0; ++spins)
        if (spins > 64) std::this_thread::yield();  // a reader was preempted
    }
  }
  void unlock() noexcept ABSL_UNLOCK_FUNCTION() {
    writing_.store(false, std::memory_order_release);
    mutex_.unlock();
  }

  void lock_shared() ABSL_SHARED_LOCK_FUNCTION() {
    auto& readers = counters_->at(reader_slot(), index_);
    readers.fetch_add(1, std::memory_order_seq_cst);
    if (!writing_.load(std::memory_order_seq_cst)) [[likely]]
      return;
    readers.fetch_sub(1, std::memory_order_release);
    std::lock_guard wait_for_writer(mutex_);
    // No writer holds the lock now, and the next one takes mutex_ after this
    // and so sees the count.
    readers.fetch_add(1, std::memory_order_relaxed);
  }
  void unlock_shared() noexcept ABSL_UNLOCK_FUNCTION() {
    counters_->at(reader_slot(), index_).fetch_sub(1, std::memory_order_release);
  }

 private:
  std::mutex mutex_;  // serialises writers, and readers that met one
  std::atomic<bool> writing_{false};
  const ReaderCounters* counters_ = nullptr;
  std::size_t index_ = 0;
};

// Holds a ReadMostlyMutex exclusively for its scope.
class ABSL_SCOPED_LOCKABLE WriterLock {
 public:
  explicit WriterLock(ReadMostlyMutex& mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) {
    mu_.lock();
  }
  ~WriterLock() ABSL_UNLOCK_FUNCTION() { mu_.unlock(); }
  WriterLock(const WriterLock&) = delete;
  WriterLock& operator=(const WriterLock&) = delete;

 private:
  ReadMostlyMutex& mu_;
};

// Holds a ReadMostlyMutex shared for its scope.
class ABSL_SCOPED_LOCKABLE ReaderLock {
 public:
  explicit ReaderLock(ReadMostlyMutex& mu) ABSL_SHARED_LOCK_FUNCTION(mu) : mu_(mu) {
    mu_.lock_shared();
  }
  ~ReaderLock() ABSL_UNLOCK_FUNCTION() { mu_.unlock_shared(); }
  ReaderLock(const ReaderLock&) = delete;
  ReaderLock& operator=(const ReaderLock&) = delete;

 private:
  ReadMostlyMutex& mu_;
};

}  // namespace pmap::detail
