// The shard lock: writers exclude readers and each other; readers share.
#include "pmap/detail/read_mostly_mutex.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <shared_mutex>
#include <thread>
#include <vector>

namespace {

using pmap::detail::ReaderCounters;
using pmap::detail::ReadMostlyMutex;

struct Locks {
  explicit Locks(std::size_t n) : counters(n), mutexes(n) {
    for (std::size_t i = 0; i < n; ++i) mutexes[i].attach(counters, i);
  }
  ReaderCounters counters;
  std::vector<ReadMostlyMutex> mutexes;
};

// Writers keep two words equal, changing them one at a time with a pause
// between; readers must never see them differ. More threads than slots, so
// slots are shared too.
TEST(ReadMostlyMutex, ReadersNeverSeeAHalfDoneWrite) {
  constexpr std::size_t kLocks = 3;
  Locks locks(kLocks);
  struct Pair {
    std::uint64_t a = 0, b = 0;  // guarded by the lock of the same index
  };
  std::vector<Pair> data(kLocks);
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> torn{0}, reads{0}, writes{0};
  std::vector<std::thread> threads;
  const std::size_t readers = pmap::detail::kReaderSlots + 3;
  for (std::size_t t = 0; t < readers; ++t)
    threads.emplace_back([&, t] {
      std::uint64_t n = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        const std::size_t i = (t + n++) % kLocks;
        std::shared_lock lock(locks.mutexes[i]);
        if (data[i].a != data[i].b) torn.fetch_add(1);
      }
      reads.fetch_add(n);
    });
  for (std::size_t t = 0; t < 2; ++t)
    threads.emplace_back([&, t] {
      std::uint64_t n = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        const std::size_t i = (t + n++) % kLocks;
        std::unique_lock lock(locks.mutexes[i]);
        ++data[i].a;
        std::this_thread::yield();  // widen the window a broken lock would leave open
        ++data[i].b;
      }
      writes.fetch_add(n);
    });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  stop = true;
  for (auto& th : threads) th.join();
  EXPECT_EQ(torn.load(), 0u);
  std::uint64_t total = 0;
  for (const auto& p : data) {
    EXPECT_EQ(p.a, p.b);
    total += p.a;
  }
  EXPECT_EQ(total, writes.load());  // writers excluded each other: no increment lost
  EXPECT_GT(reads.load(), 0u);
  EXPECT_GT(writes.load(), 0u);
}

// A writer waits for a reader that holds the lock, and only that lock's.
TEST(ReadMostlyMutex, WriterWaitsForItsReadersOnly) {
  Locks locks(2);
  std::shared_lock held(locks.mutexes[0]);
  std::atomic<bool> wrote_other{false}, wrote_held{false};
  std::thread writer([&] {
    { std::unique_lock lock(locks.mutexes[1]); }
    wrote_other = true;
    std::unique_lock lock(locks.mutexes[0]);
    wrote_held = true;
  });
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!wrote_other && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
  EXPECT_TRUE(wrote_other.load());
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_FALSE(wrote_held.load());  // still held by this thread's shared lock
  held.unlock();
  writer.join();
  EXPECT_TRUE(wrote_held.load());
}

}  // namespace
