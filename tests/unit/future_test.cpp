// pmap::Future: blocking use, then(), co_await, where continuations run, and
// errors nobody observed reaching Options::on_error.
#include <gtest/gtest.h>
#include <pmap/pmap.hpp>

#include <atomic>
#include <coroutine>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <thread>

#include "../support/test_backend.hpp"

namespace {

using Map = pmap::PersistentMap<std::string, std::string>;
using pmap_test::Control;
using pmap_test::Gate;
using pmap_test::TestBackend;

// The smallest coroutine type: starts at once, runs to the end on its own.
struct Task {
  struct promise_type {
    Task get_return_object() { return {}; }
    std::suspend_never initial_suspend() noexcept { return {}; }
    std::suspend_never final_suspend() noexcept { return {}; }
    void return_void() {}
    void unhandled_exception() { std::terminate(); }
  };
};

TEST(Future, BlockingApiReportsReadiness) {
  auto control = std::make_shared<Control>();
  Gate gate;
  control->pause_in_write = &gate;
  Map map{std::make_unique<TestBackend>(control)};
  auto f = map.insert("k", "v");
  ASSERT_TRUE(gate.wait_arrivals(1));
  EXPECT_TRUE(f.valid());
  EXPECT_FALSE(f.ready()) << "the write is held inside the backend";
  EXPECT_FALSE(f.wait_for(std::chrono::milliseconds(1)));
  gate.open();
  f.wait();
  EXPECT_TRUE(f.ready());
  EXPECT_TRUE(f.wait_for(std::chrono::milliseconds(0)));
  EXPECT_EQ(f.get(), std::nullopt);
  EXPECT_FALSE(f.valid()) << "get() consumes the future";
  try {
    f.get();
    FAIL();
  } catch (const pmap::Error& e) {
    EXPECT_EQ(e.code(), pmap::Errc::invalid_argument);
  }
}

// Blocked threads park on mutex/condvar pairs shared between states. Many
// threads blocking at once (in get(), wait() and wait_for()) must all be
// woken; a lost wake-up hangs a thread, and the watchdog then fails the test.
TEST(Future, EveryBlockedThreadIsWoken) {
  Map map{pmap::MemoryBackend()};
  constexpr int kThreads = 16, kWrites = 300;
  std::atomic<int> done{0};
  std::atomic<bool> finished{false};
  std::thread watchdog([&] {
    int last = -1;
    for (int idle = 0; !finished.load(); std::this_thread::sleep_for(std::chrono::milliseconds(100))) {
      const int now = done.load();
      idle = now == last ? idle + 1 : 0;
      last = now;
      if (idle > 300) {  // 30 s without one write completing
        std::fprintf(stderr, "FAILED: a thread blocked on a completed future was never woken\n");
        std::_Exit(1);
      }
    }
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < kWrites; ++i) {
        auto f = map.insert(std::to_string(t) + ":" + std::to_string(i), "v");
        switch (i % 3) {
          case 0:
            EXPECT_EQ(f.get(), std::nullopt);
            break;
          case 1:
            f.wait();
            EXPECT_TRUE(f.ready());
            break;
          default:
            while (!f.wait_for(std::chrono::seconds(60))) {
            }
            EXPECT_TRUE(f.ready());
        }
        done.fetch_add(1);
      }
    });
  for (auto& th : threads) th.join();
  finished = true;
  watchdog.join();
  EXPECT_EQ(done.load(), kThreads * kWrites);
  EXPECT_EQ(map.size(), static_cast<std::size_t>(kThreads * kWrites));
}

TEST(Future, ThenRunsOnTheCompletionThreadNeverInline) {
  Map map{pmap::MemoryBackend()};
  auto ready = map.insert("k", "v");
  ready.wait();
  std::promise<std::thread::id> ran_on;
  ready.then([&](pmap::Future<std::optional<std::string>>&& f) {
    EXPECT_EQ(f.get(), std::nullopt);
    ran_on.set_value(std::this_thread::get_id());
  });
  const auto id = ran_on.get_future().get();
  EXPECT_NE(id, std::this_thread::get_id()) << "then() on a ready future must not run inline";

  std::promise<std::thread::id> second;
  map.insert("k", "w").then([&](auto&& f) {
    EXPECT_EQ(f.get(), "v");
    second.set_value(std::this_thread::get_id());
  });
  EXPECT_EQ(second.get_future().get(), id) << "one completion thread per map";
}

// Destroying a map from one of its own continuations is a misuse the header
// warns about; it still commits what was accepted, releases the file, and
// leaves no thread running (ASan and TSan runs check the rest).
TEST(Future, AMapDestroyedFromItsOwnContinuationLosesNothing) {
  pmap_test::TempDir dir;
  auto* map = new Map{pmap::SqliteBackend(dir / "self.db")};
  map->insert("before", "1");
  std::promise<void> done;
  map->insert("k", "v").then([&](pmap::Future<std::optional<std::string>>&& f) {
    f.get();
    delete map;
    done.set_value();
  });
  done.get_future().wait();
  Map again{pmap::SqliteBackend(dir / "self.db")};  // the lock was released
  EXPECT_EQ(again.get("before"), "1");
  EXPECT_EQ(again.get("k"), "v");
}

TEST(Future, ContinuationMayBlockOnAnotherWriteOfTheSameMap) {
  Map map{pmap::MemoryBackend()};
  std::promise<std::optional<std::string>> done;
  map.insert("a", "1").then([&](auto&&) {
    // get() is woken by the writer, not by this (busy) completion thread.
    done.set_value(map.insert("b", "2").get());
  });
  auto fut = done.get_future();
  ASSERT_EQ(fut.wait_for(std::chrono::seconds(30)), std::future_status::ready) << "deadlock";
  EXPECT_EQ(fut.get(), std::nullopt);
  EXPECT_EQ(map.get("b"), "2");
}

Task insert_twice(Map& map, std::promise<std::string>& out) {
  auto first = co_await map.insert("c", "1");
  auto second = co_await map.insert("c", "2");
  out.set_value((first ? *first : "none") + "," + *second);
}

TEST(Future, CoAwaitResumesWithTheResult) {
  Map map{pmap::MemoryBackend()};
  std::promise<std::string> out;
  insert_twice(map, out);
  auto f = out.get_future();
  ASSERT_EQ(f.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  EXPECT_EQ(f.get(), "none,1");
}

Task await_failure(Map& map, std::promise<pmap::Errc>& out) {
  try {
    co_await map.insert("x", "y");
    out.set_value(pmap::Errc::closed);  // not expected
  } catch (const pmap::Error& e) {
    out.set_value(e.code());
  }
}

TEST(Future, CoAwaitThrowsTheWriteError) {
  auto control = std::make_shared<Control>();
  control->fail_next = 1;
  Map map{std::make_unique<TestBackend>(control)};
  std::promise<pmap::Errc> out;
  await_failure(map, out);
  auto f = out.get_future();
  ASSERT_EQ(f.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  EXPECT_EQ(f.get(), pmap::Errc::backend);
}

TEST(Future, ContinuationsUseTheGivenExecutor) {
  std::atomic<int> posted{0};
  pmap::Options options;
  options.executor = [&](std::function<void()> task) {
    ++posted;
    std::thread(std::move(task)).join();  // a trivially simple "executor"
  };
  Map map{pmap::MemoryBackend(), options};
  std::promise<void> ran;
  map.insert("k", "v").then([&](auto&&) { ran.set_value(); });
  ran.get_future().get();
  EXPECT_EQ(posted.load(), 1);
}

TEST(Future, DroppedFailedWriteGoesToOnError) {
  auto control = std::make_shared<Control>();
  std::promise<std::string> reported;
  pmap::Options options;
  options.on_error = [&](const pmap::Error& e) { reported.set_value(e.what()); };
  Map map{std::make_unique<TestBackend>(control), options};
  control->fail_next = 1;
  map.insert("k", "v");  // dropped at once
  auto f = reported.get_future();
  ASSERT_EQ(f.wait_for(std::chrono::seconds(30)), std::future_status::ready);
  EXPECT_NE(f.get().find("injected write failure"), std::string::npos);
}

TEST(Future, ObservedFailureIsNotReportedAgain) {
  auto control = std::make_shared<Control>();
  std::atomic<int> reports{0};
  pmap::Options options;
  options.on_error = [&](const pmap::Error&) { ++reports; };
  {
    Map map{std::make_unique<TestBackend>(control), options};
    control->fail_next = 1;
    EXPECT_THROW(map.insert("k", "v").get(), pmap::Error);
    map.insert("k2", "v2").get();
  }  // the destructor drains the completion thread
  EXPECT_EQ(reports.load(), 0);
}

TEST(Future, FlushFailsAfterAnEarlierWriteFailedThenRecovers) {
  auto control = std::make_shared<Control>();
  Map map{std::make_unique<TestBackend>(control)};
  control->fail_next = 1;
  EXPECT_THROW(map.insert("a", "1").get(), pmap::Error);
  map.insert("b", "2").get();
  EXPECT_THROW(map.flush().get(), pmap::Error) << "a write since the last flush failed";
  map.flush().get();  // nothing failed since
  control->fail_flushes = 1;
  try {
    map.flush().get();
    FAIL();
  } catch (const pmap::Error& e) {
    EXPECT_EQ(e.code(), pmap::Errc::io);
  }
}

}  // namespace
