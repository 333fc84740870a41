// map.watch(): local changes once committed (never a failed one), remote
// changes with their origin, per key in commit order, Subscription::reset()
// semantics, and a throwing callback.
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <pmap/pmap.hpp>
#include <string>
#include <thread>
#include <vector>

#include "../support/test_backend.hpp"
#include "stores.hpp"

namespace {

using Map = pmap::PersistentMap<std::string, std::string>;
using pmap::ChangeKind;
using pmap::Origin;
using pmap_test::TempDir;
using namespace std::chrono_literals;

// What a watch callback received, as text: "+k=v L", "-k R", "clear L".
class Recorder {
 public:
  void operator()(const pmap::Change<std::string, std::string>& c) {
    std::string line = c.kind == ChangeKind::put     ? "+" + c.key + "=" + c.value.value()
                       : c.kind == ChangeKind::erase ? "-" + c.key
                                                     : "clear";
    line += c.origin == Origin::local ? " L" : " R";
    {
      std::lock_guard lock(mu_);
      lines_.push_back(line);
    }
    cv_.notify_all();
  }
  // Waits until at least n lines arrived (30 s at most); all of them.
  std::vector<std::string> wait_for(std::size_t n) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, 30s, [&] { return lines_.size() >= n; });
    return lines_;
  }
  std::vector<std::string> lines() {
    std::lock_guard lock(mu_);
    return lines_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> lines_;
};

TEST(Watch, LocalChangesArriveOnceCommittedInCommitOrder) {
  TempDir dir;
  Map map{pmap::SqliteBackend(dir / "w.db")};
  Recorder rec;
  auto sub = map.watch(std::ref(rec));
  map.insert("a", "1");
  map.insert("a", "2");
  map.erase("a");
  map.clear();
  map.insert("b", "3").get();
  EXPECT_EQ(rec.wait_for(5),
            (std::vector<std::string>{"+a=1 L", "+a=2 L", "-a L", "clear L", "+b=3 L"}));
}

TEST(Watch, AFailedWriteIsNeverReported) {
  auto control = std::make_shared<pmap_test::Control>();
  Map map{std::make_unique<pmap_test::TestBackend>(control)};
  Recorder rec;
  auto sub = map.watch(std::ref(rec));
  control->fail_next = 1;
  EXPECT_THROW(map.insert("lost", "x").get(), pmap::Error);
  map.insert("kept", "y").get();
  EXPECT_EQ(rec.wait_for(1), (std::vector<std::string>{"+kept=y L"}));
  EXPECT_THROW(map.flush().get(), pmap::Error);  // it reports the failure since the last flush
  EXPECT_EQ(rec.lines().size(), 1u);
}

// Two maps on one shared store; a's watch records into rec.
struct SharedPair {
  explicit SharedPair(const std::string& uri) : a{uri}, b{uri} {}
  Map a;
  Map b;
  Recorder rec;
  pmap::Subscription sub = a.watch(std::ref(rec));
};

// The watch tests that need another writer, on every shared backend.
class WatchShared : public pmap_test::StoreTest {};
INSTANTIATE_TEST_SUITE_P(Stores, WatchShared, ::testing::ValuesIn(pmap_test::shared_stores()),
                         pmap_test::store_name);

TEST_P(WatchShared, ASharedStoreReportsOthersWritesAsRemote) {
  SharedPair p(uri("s"));
  Map& a = p.a;
  Map& b = p.b;
  Recorder& rec = p.rec;
  a.insert("mine", "1").get();
  a.refresh().get();
  b.insert("theirs", "2").get();
  a.refresh().get();
  b.refresh().get();  // b erases "mine" only once it knows of it
  b.erase("mine").get();
  a.refresh().get();
  EXPECT_EQ(rec.wait_for(3), (std::vector<std::string>{"+mine=1 L", "+theirs=2 R", "-mine R"}));
}

TEST_P(WatchShared, RemoteWritesToAKeyArriveInCommitOrder) {
  SharedPair p(uri("s"));
  Map& a = p.a;
  Map& b = p.b;
  Recorder& rec = p.rec;
  for (int i = 1; i <= 300; ++i) b.insert("k", std::to_string(i));
  b.insert("k", "last").get();
  a.refresh().get();
  std::vector<std::string> lines;
  for (int tries = 0; tries < 100; ++tries) {  // the last call may still be on its way
    lines = rec.lines();
    if (!lines.empty() && lines.back() == "+k=last R") break;
    rec.wait_for(lines.size() + 1);
  }
  ASSERT_FALSE(lines.empty());
  EXPECT_EQ(lines.back(), "+k=last R");
  // Coalescing may drop some, never reorder: the numbers only go up.
  int previous = 0;
  for (std::size_t i = 0; i + 1 < lines.size(); ++i) {
    const int n = std::stoi(lines[i].substr(3));
    EXPECT_GT(n, previous) << lines[i];
    previous = n;
  }
}

TEST(Watch, ResetStopsTheCallsAndWaitsForARunningOne) {
  TempDir dir;
  Map map{pmap::SqliteBackend(dir / "r.db")};
  pmap_test::Gate inside, release;
  std::atomic<int> calls{0};
  std::atomic<bool> returned{false};
  auto sub = map.watch([&](const auto&) {
    if (calls.fetch_add(1) == 0) {
      inside.open();
      release.wait();
    }
  });
  map.insert("a", "1").get();
  inside.wait();  // the call is running on the completion thread
  std::thread resetter([&] {
    sub.reset();
    returned = true;
  });
  EXPECT_TRUE(release.wait_arrivals(1));
  EXPECT_FALSE(returned.load()) << "reset() returned while a call was running";
  release.open();
  resetter.join();
  EXPECT_TRUE(returned.load());
  map.insert("b", "2").get();
  map.flush().get();
  EXPECT_EQ(calls.load(), 1) << "no call after reset()";
  EXPECT_FALSE(sub);
}

TEST(Watch, ResetFromInsideTheCallbackStopsAtOnce) {
  TempDir dir;
  Map map{pmap::SqliteBackend(dir / "i.db")};
  std::atomic<int> calls{0};
  pmap::Subscription sub;
  pmap_test::Gate done;
  sub = map.watch([&](const auto&) {
    ++calls;
    sub.reset();  // returns at once; no later call comes
    done.open();
  });
  pmap::Batch<std::string, std::string> batch;
  batch.insert("a", "1").insert("b", "2").insert("c", "3");
  map.apply(batch).get();
  done.wait();
  map.insert("d", "4").get();
  map.flush().get();
  EXPECT_EQ(calls.load(), 1);
}

TEST(Watch, AThrowingCallbackGoesToOnErrorAndTheFeedGoesOn) {
  TempDir dir;
  pmap_test::Reports reports;
  auto owner = std::make_unique<Map>(pmap::SqliteBackend(dir / "t.db"), reports.options());
  Map& map = *owner;
  Recorder rec;
  auto sub = map.watch([&](const pmap::Change<std::string, std::string>& c) {
    if (c.key == "bad") throw std::runtime_error("callback refused bad");
    rec(c);
  });
  map.insert("bad", "1").get();
  map.insert("good", "2").get();
  EXPECT_EQ(rec.wait_for(1), (std::vector<std::string>{"+good=2 L"}));
  owner.reset();  // destroyed: every report is delivered
  EXPECT_EQ(reports.count(), 1u);
  EXPECT_EQ(reports.mentioning("callback refused bad").size(), 1u);
}

TEST(Watch, ASubscriptionThatOutlivesItsMapIsInert) {
  TempDir dir;
  pmap::Subscription sub;
  {
    Map map{pmap::SqliteBackend(dir / "o.db")};
    sub = map.watch([](const auto&) {});
    EXPECT_TRUE(sub);
  }
  sub.reset();  // no crash, no hang
  EXPECT_FALSE(sub);
}

}  // namespace
