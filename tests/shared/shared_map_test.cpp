// Maps on one shared store: in one process, and in real processes
// (fork/exec of pmap_shared_worker). Coherent caches, refresh(), update()
// as compare-and-set, batches seen whole, kill -9 of a writer — written
// once (SharedStore), run on every shared backend: SQLite with mode=shared
// and PostgreSQL (PMAP_TEST_PG). SharedMap: what only SQLite has.
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <pmap/pmap.hpp>
#include <string>
#include <thread>
#include <vector>

#include "../support/servers.hpp"
#include "../support/test_backend.hpp"
#include "stores.hpp"

namespace {

using Map = pmap::PersistentMap<std::string, std::string>;
using pmap_test::TempDir;
using namespace std::chrono_literals;

std::string shared_uri(const std::filesystem::path& path) {
  return "sqlite:" + path.string() + "?mode=shared";
}

// A pmap_shared_worker process, with a pipe each way.
class Worker {
 public:
  explicit Worker(std::vector<std::string> args) {
    int to[2], from[2];
    EXPECT_EQ(pipe(to), 0);
    EXPECT_EQ(pipe(from), 0);
    pid_ = fork();
    if (pid_ == 0) {
      dup2(to[0], STDIN_FILENO);
      dup2(from[1], STDOUT_FILENO);
      for (int fd : {to[0], to[1], from[0], from[1]}) close(fd);
      std::vector<char*> argv{const_cast<char*>(PMAP_SHARED_WORKER)};
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(PMAP_SHARED_WORKER, argv.data());
      _exit(127);
    }
    close(to[0]);
    close(from[1]);
    in_ = fdopen(from[0], "r");
    out_ = fdopen(to[1], "w");
  }
  ~Worker() {
    close_input();
    if (in_) std::fclose(in_);
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  // The next line it printed ("" at end of file).
  std::string line() {
    char buf[65536];
    if (!std::fgets(buf, sizeof buf, in_)) return "";
    std::string s(buf);
    if (!s.empty() && s.back() == '\n') s.pop_back();
    return s;
  }
  void send(const std::string& text) {
    std::fputs((text + "\n").c_str(), out_);
    std::fflush(out_);
  }
  void close_input() {
    if (out_) std::fclose(std::exchange(out_, nullptr));
  }
  // Waits for it to exit; its exit status.
  int wait() {
    int status = 0;
    waitpid(std::exchange(pid_, -1), &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  void kill9() { kill(pid_, SIGKILL); }
  // SIGSTOP, returning once it has stopped.
  void stop() {
    kill(pid_, SIGSTOP);
    int status = 0;
    waitpid(pid_, &status, WUNTRACED);
  }
  void resume() { kill(pid_, SIGCONT); }

 private:
  pid_t pid_ = -1;
  FILE* in_ = nullptr;
  FILE* out_ = nullptr;
};

// Polls cond until it holds or the deadline passes (a generous one: this
// checks that a change arrives, not how fast).
template <class Cond>
bool eventually(Cond cond, std::chrono::seconds deadline = 30s) {
  const auto end = std::chrono::steady_clock::now() + deadline;
  while (std::chrono::steady_clock::now() < end) {
    if (cond()) return true;
    std::this_thread::yield();
  }
  return cond();
}

class SharedStore : public pmap_test::StoreTest {};

INSTANTIATE_TEST_SUITE_P(Stores, SharedStore, ::testing::ValuesIn(pmap_test::shared_stores()),
                         pmap_test::store_name);

TEST_P(SharedStore, TwoMapsInOneProcessSeeEachOthersWrites) {
  Map a{uri("s")};
  Map b{uri("s")};
  a.insert("k", "from a").get();
  b.refresh().get();
  EXPECT_EQ(b.get("k"), "from a") << "refresh() shows everything committed before it";
  b.erase("k").get();
  EXPECT_TRUE(eventually([&] { return !a.contains("k"); })) << "without a call";
  a.clear().get();
  b.insert("x", "1").get();
  b.refresh().get();
  a.refresh().get();
  EXPECT_EQ(a.get("x"), "1");
  EXPECT_EQ(a.size(), 1u);
}

// The map's watcher reads its own puts without their values while nobody
// watches it (its cache has them): the backend must leave out exactly the
// origin it is told, and nothing when told 0.
TEST_P(SharedStore, AReadLeavesOutTheValuesOfTheOriginItIsToldOnly) {
  auto a = pmap::open_backend(uri("v"));
  auto b = pmap::open_backend(uri("v"));
  ASSERT_NE(a->origin(), b->origin());
  auto reader = b->open_reader();
  const std::uint64_t start = reader->scan_at([](auto, auto) {});
  std::vector<pmap::Backend::Conflict> conflicts;
  std::vector<pmap::Write> mine = {{pmap::Write::Op::put, "a1", "x"},
                                   {pmap::Write::Op::put, "a2", "y"}};
  a->commit_shared(mine, {}, 1, conflicts);
  std::vector<pmap::Write> theirs = {{pmap::Write::Op::put, "b1", "z"}};
  b->commit_shared(theirs, {}, 1, conflicts);

  const auto values = [](const pmap::Backend::ChangeRead& read) {
    std::map<std::string, std::string> out;
    for (const auto& c : read.changes) out[c.key] = c.value.value_or("(none)");
    return out;
  };
  const auto without_a = reader->changes_since(start, a->origin());
  EXPECT_EQ(values(without_a),
            (std::map<std::string, std::string>{{"a1", "(none)"}, {"a2", "(none)"}, {"b1", "z"}}));
  const auto all = reader->changes_since(start, 0);
  EXPECT_EQ(values(all),
            (std::map<std::string, std::string>{{"a1", "x"}, {"a2", "y"}, {"b1", "z"}}));
  EXPECT_EQ(all.through, without_a.through);
}

TEST_P(SharedStore, UpdateIsACompareAndSetAcrossMaps) {
  Map a{uri("u")};
  Map b{uri("u")};
  const auto increment = [](std::optional<std::string>& v) {
    v = std::to_string(v ? std::stol(*v) + 1 : 1);
  };
  const auto count = [&](Map& m) {
    std::vector<pmap::Future<std::optional<std::string>>> updates;
    for (int i = 0; i < 500; ++i) updates.push_back(m.update("n", increment));
    for (auto& u : updates) u.get();  // completes after the attempt that won
  };
  std::thread ta([&] { count(a); });
  std::thread tb([&] { count(b); });
  ta.join();
  tb.join();
  a.refresh().get();
  b.refresh().get();
  EXPECT_EQ(a.get("n"), "1000");
  EXPECT_EQ(b.get("n"), "1000");
  EXPECT_EQ(pmap::open_backend(uri("u"))->get("n"), "1000");
}

TEST_P(SharedStore, FourProcessesCountExactlyAndEndCoherent) {
  const std::string u = uri("count");
  std::vector<std::unique_ptr<Worker>> workers;
  for (int i = 0; i < 4; ++i)
    workers.push_back(std::make_unique<Worker>(std::vector<std::string>{u, "count", "1000", "10"}));
  for (auto& w : workers) ASSERT_EQ(w->line(), "done");
  for (auto& w : workers) w->send("check");
  for (auto& w : workers) EXPECT_EQ(w->line(), "equal 10");
  for (auto& w : workers) EXPECT_EQ(w->wait(), 0);
  auto look = pmap::open_backend(u);
  long total = 0;
  for (int k = 0; k < 10; ++k) total += std::stol(look->get("c" + std::to_string(k)).value_or("0"));
  EXPECT_EQ(total, 4000) << "no increment lost, none applied twice";
}

TEST_P(SharedStore, AnotherProcessesWriteArrivesWithoutACall) {
  const std::string u = uri("p");
  Map b{u};
  Worker a({u, "put", "greeting", "hello from another process"});
  ASSERT_EQ(a.line(), "done");
  EXPECT_TRUE(eventually([&] { return b.get("greeting").has_value(); }));
  EXPECT_EQ(b.get("greeting"), "hello from another process");
  EXPECT_EQ(a.wait(), 0);
  Worker again({u, "put", "greeting", "second"});
  ASSERT_EQ(again.line(), "done");
  b.refresh().get();
  EXPECT_EQ(b.get("greeting"), "second") << "after refresh(), always";
}

TEST_P(SharedStore, ABatchIsNeverSeenHalfApplied) {
  const std::string u = uri("b");
  Worker observer({u, "observe"});
  ASSERT_EQ(observer.line(), "ready");
  Worker writer({u, "batches", "2000"});
  ASSERT_EQ(writer.line(), "done");
  EXPECT_EQ(writer.wait(), 0);
  observer.close_input();
  const std::string result = observer.line();
  EXPECT_EQ(result.rfind("half 0 seen ", 0), 0u) << result;
  EXPECT_GT(std::stol(result.substr(result.rfind(' ') + 1)), 1) << "it saw batches arrive";
}

TEST_P(SharedStore, AWriterKilledMidCommitBlocksNobodyAndLosesNothingAcked) {
  const std::string u = uri("k");
  Map survivor{u};
  long acked = -1;
  for (int round = 0; round < 3; ++round) {
    Worker victim({u, "acked"});
    for (int i = 0; i < 200 + round * 150; ++i) {
      const std::string line = victim.line();
      ASSERT_FALSE(line.empty());
      acked = std::max(acked, std::stol(line));
    }
    victim.kill9();
    EXPECT_EQ(victim.wait(), 128 + SIGKILL);
    // The others carry on: a write commits, the record stays readable.
    survivor.insert("after round " + std::to_string(round), "ok").get();
    survivor.refresh().get();
  }
  for (long i = 0; i <= acked; ++i)
    ASSERT_TRUE(survivor.contains("a" + std::to_string(i))) << "acked a" << i << " missing";
  Map fresh{u};
  EXPECT_EQ(fresh.size(), survivor.size());
}

TEST(SharedMap, ADamagedChangeRecordIsReportedOnceAndTheCacheKeepsServing) {
  TempDir dir;
  const auto path = dir / "d.db";
  pmap_test::Reports reports;
  auto owner = std::make_unique<Map>(shared_uri(path), reports.options());
  Map& map = *owner;
  map.insert("k", "v").get();
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(db,
                           "INSERT INTO pmap_log_kv (pos, origin, tag, ops) VALUES "
                           "((SELECT max(pos) + 1 FROM pmap_log_kv), 7, 0, x'7a7a')",
                           nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(db);
  }
  try {
    map.refresh().get();
    ADD_FAILURE() << "refresh() must fail while the record cannot be read";
  } catch (const pmap::Error& e) {
    EXPECT_EQ(e.code(), pmap::Errc::corrupt) << e.what();
    EXPECT_NE(std::string(e.what()).find("pmap_log_kv"), std::string::npos) << e.what();
  }
  EXPECT_EQ(map.get("k"), "v") << "reads keep serving the cache";
  map.insert("k2", "v2").get();  // and writes still commit
  EXPECT_THROW(map.refresh().get(), pmap::Error);
  owner.reset();  // destroyed: every report is delivered
  EXPECT_EQ(reports.count(), 1u) << "reported once, not at every retry";
  EXPECT_EQ(reports.mentioning("damaged at position").size(), 1u);
}

TEST(SharedMap, AMapThatFellBehindTheTrimmedRecordReloadsAndReportsTheDifferences) {
  TempDir dir;
  const auto path = dir / "g.db";
  const std::string uri = shared_uri(path);
  { Map create{uri}; }
  Worker follower({uri, "follow"});
  ASSERT_EQ(follower.line(), "ready");
  follower.stop();  // SIGSTOP: it cannot read while the record moves on
  {
    // Another map's session commits more transactions than the record keeps.
    pmap::SqliteBackend writer(path, {.mode = pmap::SqliteMode::shared});
    std::vector<pmap::Backend::Conflict> conflicts;
    for (int i = 0; i < 17000; ++i) {
      std::vector<pmap::Write> w = {
          {pmap::Write::Op::put, "g" + std::to_string(i % 50), std::to_string(i)}};
      writer.commit_shared(w, {}, 0, conflicts);
    }
  }
  follower.resume();
  follower.send("check");
  EXPECT_EQ(follower.line(), "equal 50") << "it reloaded the table";
  EXPECT_EQ(follower.line(), "watched 50") << "and reported each difference as a remote put";
  EXPECT_EQ(follower.wait(), 0);
}

TEST(SharedMap, ExclusiveModeIsUnchanged) {
  TempDir dir;
  Map a{pmap::SqliteBackend(dir / "e.db")};
  try {
    Map b{pmap::SqliteBackend(dir / "e.db")};
    ADD_FAILURE() << "a second exclusive opener must be refused";
  } catch (const pmap::Error& e) {
    EXPECT_EQ(e.code(), pmap::Errc::locked) << e.what();
  }
  a.refresh().get();  // completes at once: only this map writes
}

}  // namespace
