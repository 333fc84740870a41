// The cache's rule for others' writes (Cache::observe), driven directly so
// that every interleaving is chosen, not hoped for: a key with a local write
// still on its way keeps showing it, and converges to the store once that
// write commits — or fails.
#include <gtest/gtest.h>

#include <atomic>
#include <pmap/pmap.hpp>
#include <string>

namespace {

using Cache = pmap::detail::Cache<std::string, std::string>;
using Seq = pmap::detail::Seq;

struct Fixture {
  std::atomic<Seq> settled{0};
  Cache cache{4, [this] { return settled.load(); }};
  Seq next = 0;
  std::optional<std::string> replaced;  // the insert's future value, as the map keeps it

  Fixture() { cache.follow_store(); }
  // A local insert, queued as write number ++next (not committed yet).
  Seq insert(const std::string& k, const std::string& v) {
    cache.insert(k, v, replaced, [&] { return ++next; });
    return next;
  }
  // The store committed (key, value) after this map's writes up to `after`.
  void remote(const std::string& k, std::optional<std::string> v, Seq after) {
    std::vector<Cache::Observed> c{{k, std::move(v), after}};
    cache.observe(std::nullopt, c);
  }
};

TEST(Coherence, ALocalWriteOnItsWayWinsOverAnEarlierRemoteOne) {
  Fixture f;
  const Seq mine = f.insert("k", "local");
  f.remote("k", "remote", mine - 1);  // committed before my write
  EXPECT_EQ(f.cache.get("k"), "local") << "read your writes";
  f.settled = mine;  // my write commits after theirs: the store holds mine
  EXPECT_EQ(f.cache.get("k"), "local");
}

TEST(Coherence, AFailedLocalWriteFallsBackToTheRemoteValue) {
  Fixture f;
  const Seq mine = f.insert("k", "local");
  f.remote("k", "remote", mine - 1);
  f.cache.undo(mine, mine);  // my write failed: the store holds theirs
  f.settled = mine;
  EXPECT_EQ(f.cache.get("k"), "remote") << "the record learned the remote value";
}

TEST(Coherence, AFailedLocalWriteNoLongerHoldsBackLaterRemoteWrites) {
  Fixture f;
  const Seq mine = f.insert("k", "local");
  f.cache.undo(mine, mine);  // failed: it never reaches the record
  f.settled = mine;
  f.remote("k", "remote", mine - 1);  // the last of my writes in the record is before it
  EXPECT_EQ(f.cache.get("k"), "remote");
}

TEST(Coherence, ARemoteWriteAfterMyCommitWins) {
  Fixture f;
  const Seq mine = f.insert("k", "local");
  f.settled = mine;
  f.remote("k", "remote", mine);  // committed after my write
  EXPECT_EQ(f.cache.get("k"), "remote");
  f.remote("k", std::nullopt, mine);  // then erased by another map
  EXPECT_FALSE(f.cache.contains("k"));
}

TEST(Coherence, ARemoteClearKeepsOnlyKeysWithLocalWritesOnTheirWay) {
  Fixture f;
  f.insert("old", "1");
  f.settled = f.next;
  const Seq pending = f.insert("new", "2");
  std::vector<Cache::Observed> none;
  f.cache.observe(pending - 1, none);  // a clear committed before my pending write
  EXPECT_FALSE(f.cache.contains("old"));
  EXPECT_EQ(f.cache.get("new"), "2");
  EXPECT_EQ(f.cache.size(), 1u);
}

TEST(Coherence, ALocalClearOnItsWayHidesEarlierRemoteWrites) {
  Fixture f;
  f.cache.clear([&] { return ++f.next; });
  f.remote("k", "remote", f.next - 1);  // committed before my clear
  EXPECT_FALSE(f.cache.contains("k")) << "my clear, committed after it, removes it";
}

}  // namespace
