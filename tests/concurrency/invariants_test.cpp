// One test (at least) per invariant of DESIGN.md. Races are arranged with
// gates (a backend that pauses inside write()), not sleeps.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <future>
#include <map>
#include <pmap/pmap.hpp>
#include <random>
#include <thread>
#include <vector>

#include "../support/test_backend.hpp"

namespace {

using Map = pmap::PersistentMap<std::string, std::string>;
using pmap_test::Control;
using pmap_test::Gate;
using pmap_test::TempDir;
using pmap_test::TestBackend;

using pmap_test::backend_contents;
std::map<std::string, std::string> cache_contents(const Map& m) {
  auto s = m.snapshot();
  return {s.begin(), s.end()};
}

// Runs f on a thread; fails the test (instead of hanging) if it takes > 60 s.
template <class F>
void within_deadline(F f, const char* what) {
  auto task = std::async(std::launch::async, std::move(f));
  ASSERT_EQ(task.wait_for(std::chrono::seconds(60)), std::future_status::ready)
      << what << ": deadlock";
  task.get();
}

// --- 1. Read your writes -----------------------------------------------------

TEST(Invariant1_ReadYourWrites, VisibleToOtherThreadsBeforeTheCommit) {
  auto control = std::make_shared<Control>();
  Gate gate;
  control->pause_in_write = &gate;
  Map map{std::make_unique<TestBackend>(control)};
  auto f = map.insert("k", "v");
  ASSERT_TRUE(gate.wait_arrivals(1));
  std::optional<std::string> seen;
  std::thread([&] { seen = map.get("k"); }).join();
  EXPECT_FALSE(f.ready()) << "the write is still inside the backend";
  EXPECT_EQ(seen, "v");
  gate.open();
  f.get();
}

TEST(Invariant1_ReadYourWrites, EveryAcceptedWriteIsVisibleToAReader) {
  Map map{pmap::MemoryBackend()};
  constexpr int kWriters = 4, kPerWriter = 3000;
  std::array<std::atomic<int>, kWriters> latest{};
  for (auto& l : latest) l = -1;
  std::atomic<bool> done{false};
  std::atomic<int> misses{0};
  std::thread reader([&] {
    std::mt19937 rng(1);
    while (!done.load()) {
      const int t = static_cast<int>(rng() % kWriters);
      const int i = latest[static_cast<std::size_t>(t)].load(std::memory_order_acquire);
      if (i < 0) continue;
      if (map.get(std::to_string(t) + ":" + std::to_string(i)) != std::to_string(i)) ++misses;
    }
  });
  std::vector<std::thread> writers;
  for (int t = 0; t < kWriters; ++t)
    writers.emplace_back([&, t] {
      for (int i = 0; i < kPerWriter; ++i) {
        map.insert(std::to_string(t) + ":" + std::to_string(i), std::to_string(i));
        latest[static_cast<std::size_t>(t)].store(i, std::memory_order_release);
      }
    });
  for (auto& w : writers) w.join();
  done = true;
  reader.join();
  EXPECT_EQ(misses.load(), 0);
  EXPECT_EQ(map.size(), static_cast<std::size_t>(kWriters * kPerWriter));
}

// --- 2. Per-key order ----------------------------------------------------------

TEST(Invariant2_PerKeyOrder, ConcurrentWritesToFewKeysLeaveBackendEqualToCache) {
  TempDir dir;
  const auto path = dir / "order.db";
  std::map<std::string, std::string> shown;
  {
    Map map{pmap::SqliteBackend(path)};
    constexpr int kThreads = 8, kOps = 1500;
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t)
      threads.emplace_back([&, t] {
        std::mt19937 rng(static_cast<unsigned>(t));
        for (int i = 0; i < kOps; ++i) {
          const std::string key = "k" + std::to_string(rng() % 4);
          const std::string value = std::to_string(t) + ":" + std::to_string(i);
          switch (rng() % 8) {
            case 0:
              map.erase(key);
              break;
            case 1:
              map.insert(key, value).get();
              break;
            case 2: {
              pmap::Batch<std::string, std::string> batch;
              batch.insert(key, value).insert("k" + std::to_string(rng() % 4), value + "b");
              map.apply(batch);
              break;
            }
            default:
              map.insert(key, value);
          }
        }
      });
    for (auto& th : threads) th.join();
    map.flush().get();
    shown = cache_contents(map);
    EXPECT_EQ(backend_contents(map.backend()), shown) << "backend differs from the cache";
  }
  Map reopened{pmap::SqliteBackend(path)};
  EXPECT_EQ(cache_contents(reopened), shown) << "after reopen, the map differs from before closing";
}

TEST(Invariant2_PerKeyOrder, ConcurrentUpdatesAreAtomicReadModifyWrites) {
  pmap::PersistentMap<std::string, long> map{pmap::MemoryBackend()};
  constexpr int kThreads = 8, kOps = 2000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < kOps; ++i)
        map.update("counter", [](std::optional<long>& v) { v = v.value_or(0) + 1; });
    });
  for (auto& th : threads) th.join();
  map.flush().get();
  EXPECT_EQ(map.get("counter"), kThreads * kOps);
  EXPECT_EQ(map.backend().get("counter"), std::to_string(kThreads * kOps));
}

// --- 3. Durability: kill -9 loses no completed write -------------------------

struct CrashRun {
  long acked = -1;
  std::size_t loaded_at_start = 0;
};

// Starts the helper, reads its acknowledgements until it has acked at least
// `min_acks` writes, kills it with SIGKILL, and returns the last ack.
CrashRun run_and_kill(const std::string& uri, const std::string& mode, long min_acks) {
  int fds[2];
  EXPECT_EQ(pipe(fds), 0);
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    close(fds[1]);
    execl(PMAP_CRASH_WRITER, PMAP_CRASH_WRITER, uri.c_str(), mode.c_str(),
          static_cast<char*>(nullptr));
    _exit(127);
  }
  close(fds[1]);
  FILE* in = fdopen(fds[0], "r");
  CrashRun run;
  char line[128];
  bool killed = false;
  while (std::fgets(line, sizeof line, in)) {
    if (std::strncmp(line, "ready ", 6) == 0) {
      run.loaded_at_start = std::strtoul(line + 6, nullptr, 10);
      continue;
    }
    run.acked = std::strtol(line, nullptr, 10);
    if (!killed && run.acked >= min_acks) {
      kill(pid, SIGKILL);  // acks already in the pipe are still read below
      killed = true;
    }
  }
  std::fclose(in);
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "the helper ended on its own";
  return run;
}

void expect_all_acked_present(const std::string& uri, long acked) {
  Map map{uri};
  for (long i = 0; i <= acked; ++i) {
    const auto v = map.get("key" + std::to_string(i));
    ASSERT_TRUE(v.has_value()) << "acknowledged write " << i << " of " << acked << " lost in "
                               << uri;
    ASSERT_EQ(*v,
              "value " + std::to_string(i) + std::string(static_cast<std::size_t>(i % 50), '.'));
  }
}

class Invariant3_Durability : public ::testing::TestWithParam<std::pair<std::string, std::string>> {
};

// sqlite, sqlite_normal, sqlite_off (the durability settings) or csv.
std::string crash_uri(const std::string& backend, const TempDir& dir) {
  if (backend == "csv") return "csv:" + (dir / "crash.csv").string();
  const std::string uri = "sqlite:" + (dir / "crash.db").string();
  if (backend == "sqlite_normal") return uri + "?synchronous=normal";
  if (backend == "sqlite_off") return uri + "?synchronous=off";
  return uri;
}

// A process crash loses no acknowledged write under every durability
// setting: the commit is in the operating system's hands when the future
// completes (power loss is another matter: see the Sync tests).
TEST_P(Invariant3_Durability, KillNineLosesNoAcknowledgedWrite) {
  TempDir dir;
  const auto& [backend, mode] = GetParam();
  const std::string uri = crash_uri(backend, dir);
  // Twice: the second run starts from the file the first one was killed over.
  for (int round = 0; round < 2; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    const CrashRun run = run_and_kill(uri, mode, 150);
    ASSERT_GE(run.acked, 150);
    expect_all_acked_present(uri, run.acked);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Backends, Invariant3_Durability,
    ::testing::Values(std::pair{"sqlite", "awaited"}, std::pair{"sqlite", "flushed"},
                      std::pair{"sqlite", "batches"}, std::pair{"sqlite_normal", "awaited"},
                      std::pair{"sqlite_normal", "batches"}, std::pair{"sqlite_off", "awaited"},
                      std::pair{"sqlite_off", "flushed"}, std::pair{"csv", "awaited"},
                      std::pair{"csv", "flushed"}, std::pair{"csv", "batches"}),
    [](const auto& info) { return info.param.first + "_" + info.param.second; });

// --- 4. No divergence on failure ----------------------------------------------

TEST(Invariant4_NoDivergence, FailedInsertFailsItsFutureAndRestoresTheCache) {
  auto control = std::make_shared<Control>();
  Map map{std::make_unique<TestBackend>(control)};
  map.insert("k", "old").get();
  control->fail_next = 1;
  auto failed = map.insert("k", "new");
  auto fresh = [&] {
    control->fail_next = 1;
    return map.insert("fresh", "x");
  };
  try {
    failed.get();
    FAIL() << "the write must fail";
  } catch (const pmap::Error& e) {
    EXPECT_EQ(e.code(), pmap::Errc::backend);
    EXPECT_NE(std::string(e.what()).find("injected write failure"), std::string::npos) << e.what();
  }
  EXPECT_EQ(map.get("k"), "old") << "the cache must show what the backend holds";
  EXPECT_THROW(fresh().get(), pmap::Error);
  EXPECT_FALSE(map.contains("fresh")) << "a key the backend never got must vanish from the cache";
  EXPECT_EQ(map.size(), 1u);
  EXPECT_EQ(map.insert("k", "later").get(), "old") << "later writes still work";
  EXPECT_EQ(map.backend().get("k"), "later");
}

TEST(Invariant4_NoDivergence, CacheIsRestoredBeforeTheFailedFutureCompletes) {
  auto control = std::make_shared<Control>();
  Map map{std::make_unique<TestBackend>(control)};
  map.insert("k", "old").get();
  control->fail_next = 1;
  std::promise<std::optional<std::string>> seen_in_continuation;
  map.insert("k", "new").then([&](auto&& f) {
    EXPECT_THROW(f.get(), pmap::Error);
    seen_in_continuation.set_value(map.get("k"));
  });
  EXPECT_EQ(seen_in_continuation.get_future().get(), "old");
}

TEST(Invariant4_NoDivergence, NewerQueuedWriteKeepsItsValue) {
  auto control = std::make_shared<Control>();
  Gate gate;
  Map map{std::make_unique<TestBackend>(control)};
  map.insert("k", "committed").get();
  control->pause_in_write = &gate;
  auto doomed = map.insert("k", "doomed");  // its group waits inside write()
  ASSERT_TRUE(gate.wait_arrivals(1));
  auto newer = map.insert("k", "newer");  // queued behind it
  map.insert("other", "x");               // also queued
  control->fail_next = 1;                 // the paused write will fail
  gate.open();
  EXPECT_THROW(doomed.get(), pmap::Error);
  EXPECT_EQ(newer.get(), "doomed") << "the cache showed 'doomed' when 'newer' was accepted";
  EXPECT_THROW(map.flush().get(), pmap::Error) << "a write failed since the last flush";
  EXPECT_EQ(map.get("k"), "newer");
  EXPECT_EQ(map.backend().get("k"), "newer");
}

// A failed commit stored none of its writes: the cache undoes them from its
// own records, without reading the store — which may be damaged (a truncated
// file) or out of reach.
TEST(Invariant4_NoDivergence, FailedWritesAreUndoneWithoutReadingTheStore) {
  auto control = std::make_shared<Control>();
  auto reports = std::make_shared<std::vector<std::string>>();
  auto reports_mu = std::make_shared<std::mutex>();
  pmap::Options options;
  options.on_error = [reports, reports_mu](const pmap::Error& e) {
    std::lock_guard lock(*reports_mu);
    reports->push_back(e.what());
  };
  {
    Map map{std::make_unique<TestBackend>(control), options};
    map.insert("a", "1").get();
    map.insert("b", "2").get();
    control->unreadable = true;
    const auto fail = [&](auto&& future) {
      control->fail_next = 1;
      EXPECT_THROW(future().get(), pmap::Error);
    };
    fail([&] { return map.insert("a", "changed"); });
    fail([&] { return map.insert("fresh", "x"); });
    fail([&] { return map.erase("b"); });
    fail([&] { return map.update("a", [](std::optional<std::string>& v) { v.reset(); }); });
    fail([&] {
      pmap::Batch<std::string, std::string> batch;
      batch.insert("a", "x").insert("a", "y").erase("b").insert("c", "new");
      return map.apply(batch);
    });
    EXPECT_EQ(cache_contents(map), (std::map<std::string, std::string>{{"a", "1"}, {"b", "2"}}));
    control->unreadable = false;
    EXPECT_EQ(cache_contents(map), backend_contents(map.backend()));
    EXPECT_THROW(map.flush().get(), pmap::Error);
  }
  for (const auto& r : *reports) ADD_FAILURE() << "reported: " << r;
}

// Two groups writing one key both fail, the second queued while the first
// was being committed: the key goes back to its stored value, not to the
// first group's refused one (the second write's record learns it).
TEST(Invariant4_NoDivergence, ANewerWriteThatFailsTooGoesBackToTheStoredValue) {
  auto control = std::make_shared<Control>();
  Gate gate;
  Map map{std::make_unique<TestBackend>(control)};
  map.insert("k", "stored").get();
  map.insert("gone", "stored").get();
  control->pause_in_write = &gate;
  auto doomed = map.insert("k", "doomed");  // its group waits inside write()
  ASSERT_TRUE(gate.wait_arrivals(1));
  auto erased = map.erase("gone");
  auto newer = map.insert("k", "newer");  // queued behind it
  pmap::Batch<std::string, std::string> batch;
  batch.insert("gone", "back").insert("k", "batched");
  auto batched = map.apply(batch);
  control->fail_next = 3;  // every group from here fails
  gate.open();
  EXPECT_THROW(doomed.get(), pmap::Error);
  EXPECT_THROW(erased.get(), pmap::Error);
  EXPECT_THROW(newer.get(), pmap::Error);
  EXPECT_THROW(batched.get(), pmap::Error);
  EXPECT_EQ(map.get("k"), "stored");
  EXPECT_EQ(map.get("gone"), "stored");
  EXPECT_EQ(cache_contents(map), backend_contents(map.backend()));
}

// The same after a failed clear, whose repair reads the store back: a newer
// write that fails too restores the stored value, not "absent".
TEST(Invariant4_NoDivergence, AWriteAfterAFailedClearThatFailsTooGoesBackToTheStoredValue) {
  auto control = std::make_shared<Control>();
  Gate first_gate, clear_gate;
  Map map{std::make_unique<TestBackend>(control)};
  map.insert("k", "stored").get();
  map.insert("other", "stored").get();
  control->pause_in_write = &first_gate;
  auto before = map.insert("k", "refused");  // a group paused inside write()
  ASSERT_TRUE(first_gate.wait_arrivals(1));
  control->pause_in_write = &clear_gate;  // the next group: the clear alone
  auto cleared = map.clear();
  control->fail_next = 3;
  first_gate.open();
  ASSERT_TRUE(clear_gate.wait_arrivals(1));
  auto after = map.insert("k", "after the clear");  // a group of its own
  clear_gate.open();
  EXPECT_THROW(before.get(), pmap::Error);
  EXPECT_THROW(cleared.get(), pmap::Error);
  EXPECT_THROW(after.get(), pmap::Error);
  EXPECT_EQ(map.get("k"), "stored");
  EXPECT_EQ(cache_contents(map), backend_contents(map.backend()));
}

// A failed clear, then a clear that commits, then a write that fails, all
// queued before the first failed (one write per group): the key stays
// absent, as the second clear left the store — the write's record learns
// nothing from what the first clear's repair read back.
TEST(Invariant4_NoDivergence, AFailedWriteAfterAClearThatCommittedStaysCleared) {
  auto control = std::make_shared<Control>();
  Gate failing_clear, clear, write;
  pmap::Options one_per_group;
  one_per_group.max_group_writes = 1;
  Map map{std::make_unique<TestBackend>(control), one_per_group};
  map.insert("k", "stored").get();
  control->pause_in_write = &failing_clear;
  auto first = map.clear();
  ASSERT_TRUE(failing_clear.wait_arrivals(1));
  control->pause_in_write = &clear;
  auto second = map.clear();
  auto written = map.insert("k", "refused");
  control->fail_next = 1;
  failing_clear.open();
  ASSERT_TRUE(clear.wait_arrivals(1));  // the first clear is repaired; the second waits
  control->pause_in_write = &write;
  clear.open();
  ASSERT_TRUE(write.wait_arrivals(1));
  control->fail_next = 1;
  write.open();
  EXPECT_THROW(first.get(), pmap::Error);
  second.get();
  EXPECT_THROW(written.get(), pmap::Error);
  EXPECT_FALSE(map.get("k").has_value());
  EXPECT_EQ(cache_contents(map), backend_contents(map.backend()));
}

TEST(Invariant4_NoDivergence, FailedEraseBatchAndClearAreRolledBack) {
  auto control = std::make_shared<Control>();
  Map map{std::make_unique<TestBackend>(control)};
  map.insert("a", "1").get();
  map.insert("b", "2").get();

  control->fail_next = 1;
  EXPECT_THROW(map.erase("a").get(), pmap::Error);
  EXPECT_EQ(map.get("a"), "1");

  pmap::Batch<std::string, std::string> batch;
  batch.insert("a", "changed").erase("b").insert("c", "new");
  control->fail_next = 1;
  EXPECT_THROW(map.apply(batch).get(), pmap::Error);
  EXPECT_EQ(cache_contents(map), (std::map<std::string, std::string>{{"a", "1"}, {"b", "2"}}));

  control->fail_next = 1;
  EXPECT_THROW(map.clear().get(), pmap::Error);
  EXPECT_EQ(cache_contents(map), (std::map<std::string, std::string>{{"a", "1"}, {"b", "2"}}));
  EXPECT_EQ(map.size(), 2u);

  map.clear().get();
  EXPECT_TRUE(map.empty());
  EXPECT_TRUE(backend_contents(map.backend()).empty());
}

TEST(Invariant4_NoDivergence, FailuresUnderConcurrencyLeaveCacheEqualToBackend) {
  auto control = std::make_shared<Control>();
  Map map{std::make_unique<TestBackend>(control)};
  std::atomic<int> failures{0}, successes{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(t) + 100);
      for (int i = 0; i < 400; ++i) {
        if (rng() % 10 == 0) control->fail_next = 1;
        const std::string key = "k" + std::to_string(rng() % 8);
        try {
          if (rng() % 3 == 0)
            map.erase(key).get();
          else
            map.insert(key, std::to_string(t * 1000 + i)).get();
          ++successes;
        } catch (const pmap::Error&) {
          ++failures;
        }
      }
    });
  for (auto& th : threads) th.join();
  control->fail_next = 0;
  try {
    map.flush().get();
  } catch (const pmap::Error&) {
    // expected: writes failed since the last flush
  }
  EXPECT_GT(failures.load(), 0);
  EXPECT_GT(successes.load(), 0);
  EXPECT_EQ(cache_contents(map), backend_contents(map.backend()));
}

// --- 5. Group commit ------------------------------------------------------------

TEST(Invariant5_GroupCommit, WritesWaitingTogetherCommitTogether) {
  auto control = std::make_shared<Control>();
  Gate gate;
  control->pause_in_write = &gate;
  Map map{std::make_unique<TestBackend>(control)};
  auto first = map.insert("first", "x");
  ASSERT_TRUE(gate.wait_arrivals(1));  // the writer is busy with a commit
  std::vector<std::thread> threads;
  std::vector<std::vector<pmap::Future<std::optional<std::string>>>> futures(8);
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 125; ++i)
        futures[static_cast<std::size_t>(t)].push_back(
            map.insert(std::to_string(t) + "/" + std::to_string(i), "v"));
    });
  for (auto& th : threads) th.join();
  gate.open();
  first.get();
  for (auto& fs : futures)
    for (auto& f : fs) f.get();
  EXPECT_EQ(control->written_ops.load(), 1001);
  EXPECT_EQ(control->writes.load(), 2) << "1000 waiting writers should share one commit";
}

// Commits of a burst held up behind a first write: 95 single inserts, then
// an apply() of 25, with these group limits (0: the backend sets none).
int commits_of_a_burst(std::size_t option_limit, std::size_t backend_limit) {
  auto control = std::make_shared<Control>();
  control->max_commit_writes = backend_limit;
  Gate gate;
  control->pause_in_write = &gate;
  pmap::Options options;
  options.max_group_writes = option_limit;
  Map map{std::make_unique<TestBackend>(control), options};
  auto first = map.insert("first", "x");
  EXPECT_TRUE(gate.wait_arrivals(1));
  for (int i = 0; i < 95; ++i) map.insert(std::to_string(i), "v");
  pmap::Batch<std::string, std::string> batch;
  for (int i = 0; i < 25; ++i) batch.insert("b" + std::to_string(i), "v");
  auto applied = map.apply(batch);
  gate.open();
  applied.get();
  EXPECT_EQ(control->written_ops.load(), 121);
  return control->writes.load();
}

TEST(Invariant5_GroupCommit, GroupsRespectTheConfiguredLimitAndNeverSplitABatch) {
  // 1 + ceil(95/10)=10 groups of singles (the last takes 5 and then the
  // whole batch of 25, never split).
  EXPECT_EQ(commits_of_a_burst(10, 0), 11);
}

// A backend's own limit ends a group too; of it and Options::max_group_writes
// the smaller wins, and a batch is still never split.
TEST(Invariant5_GroupCommit, TheBackendsCommitLimitEndsAGroupAndTheSmallerLimitWins) {
  EXPECT_EQ(commits_of_a_burst(16384, 10), 11);
  EXPECT_EQ(commits_of_a_burst(20, 10), 11);
  EXPECT_EQ(commits_of_a_burst(10, 20), 11);
  // 1, then 50, then 45 and the batch of 25 (a group ends only between
  // operations).
  EXPECT_EQ(commits_of_a_burst(16384, 50), 3);
}

// --- 6. Bounded memory: back-pressure -------------------------------------------

TEST(Invariant6_BackPressure, WritersWaitWhenTheQueueIsFull) {
  auto control = std::make_shared<Control>();
  Gate gate;
  control->pause_in_write = &gate;
  pmap::Options options;
  options.max_pending_writes = 8;
  Map map{std::make_unique<TestBackend>(control), options};
  std::atomic<int> accepted{0};
  auto producer = std::async(std::launch::async, [&] {
    for (int i = 0; i < 100; ++i) {
      map.insert("k" + std::to_string(i), "v");
      ++accepted;
    }
  });
  ASSERT_TRUE(gate.wait_arrivals(1));  // the first write is stuck in the backend
  // Without back-pressure the producer would finish all 100 at once; with it,
  // it cannot get past 8 while the disk is stuck, however long we wait.
  EXPECT_EQ(producer.wait_for(std::chrono::milliseconds(300)), std::future_status::timeout);
  EXPECT_LE(accepted.load(), 8);
  // Reads are not held up by the full queue.
  EXPECT_EQ(map.get("k0"), "v");
  gate.open();
  ASSERT_EQ(producer.wait_for(std::chrono::seconds(60)), std::future_status::ready);
  map.flush().get();
  EXPECT_EQ(accepted.load(), 100);
  EXPECT_EQ(control->written_ops.load(), 100);
}

TEST(Invariant6_BackPressure, ABatchLargerThanTheQueueIsStillAccepted) {
  pmap::Options options;
  options.max_pending_writes = 4;
  Map map{pmap::MemoryBackend(), options};
  pmap::Batch<std::string, std::string> batch;
  for (int i = 0; i < 50; ++i) batch.insert(std::to_string(i), "v");
  within_deadline([&] { map.apply(batch).get(); }, "oversized batch");
  EXPECT_EQ(map.size(), 50u);
}

// --- 7. Nothing blocks readers ---------------------------------------------------

TEST(Invariant7_ReadersNeverBlock, ReadsProceedWhileTheWriterIsStuckInIo) {
  auto control = std::make_shared<Control>();
  Gate gate;
  Map map{std::make_unique<TestBackend>(control)};
  for (int i = 0; i < 100; ++i) map.insert("k" + std::to_string(i), "v");
  map.flush().get();
  control->pause_in_write = &gate;
  auto stuck = map.insert("stuck", "x");
  ASSERT_TRUE(gate.wait_arrivals(1));
  within_deadline(
      [&] {
        for (int round = 0; round < 100; ++round)
          for (int i = 0; i < 100; ++i) ASSERT_TRUE(map.contains("k" + std::to_string(i)));
        EXPECT_EQ(map.get("stuck"), "x");
        EXPECT_EQ(map.size(), 101u);
        EXPECT_EQ(map.snapshot().size(), 101u);
        int n = 0;
        map.for_each([&](const std::string&, const std::string&) { ++n; });
        EXPECT_EQ(n, 101);
      },
      "reading while the writer is stuck");
  gate.open();
  stuck.get();
}

}  // namespace

// A value type whose decoding can be held at a gate: what a slow codec does
// to the repair after a failed commit.
struct Held {
  std::string text;
};
std::atomic<pmap_test::Gate*> hold_decoding{nullptr};

template <>
struct pmap::Codec<Held> {
  static void encode(const Held& h, std::string& out) { out += h.text; }
  static Held decode(std::string_view bytes) {
    if (auto* gate = hold_decoding.exchange(nullptr)) gate->wait();
    return Held{std::string(bytes)};
  }
};

namespace {

// The repair of a failed clear decodes what the store holds with no lock
// held: readers of every shard go on while it decodes.
TEST(Invariant7_ReadersNeverBlock, ReadsProceedWhileAFailedCommitIsRepaired) {
  auto control = std::make_shared<Control>();
  pmap::PersistentMap<std::string, Held> map{std::make_unique<TestBackend>(control)};
  for (int i = 0; i < 100; ++i) map.insert("k" + std::to_string(i), Held{"v"});
  map.flush().get();
  Gate gate;
  control->fail_next = 1;
  hold_decoding = &gate;
  auto failed = map.clear();
  ASSERT_TRUE(gate.wait_arrivals(1));  // the repair is decoding a stored value
  within_deadline(
      [&] {  // the clear shows until its repair has decoded every stored value
        for (int i = 0; i < 100; ++i) ASSERT_FALSE(map.contains("k" + std::to_string(i)));
        EXPECT_EQ(map.size(), 0u);
      },
      "reading while a failed commit is repaired");
  EXPECT_FALSE(failed.ready()) << "the future completed before its repair";
  gate.open();
  EXPECT_THROW(failed.get(), pmap::Error);
  EXPECT_EQ(map.size(), 100u);
  EXPECT_EQ(map.get("k0")->text, "v");
}

}  // namespace
