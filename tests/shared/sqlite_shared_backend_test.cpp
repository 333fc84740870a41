// The SQLite backend's shared mode, at the Backend seam: modes exclude each
// other, every session's commits reach the change record with its origin,
// conditional writes, the record's trimming, waiting for a change, and the
// read-only opener.
#include <gtest/gtest.h>

#include <chrono>
#include <pmap/pmap.hpp>
#include <thread>

#include "../support/test_backend.hpp"

namespace {

using pmap::Backend;
using pmap::Write;
using Op = pmap::Write::Op;
using pmap_test::TempDir;

pmap::SqliteBackend shared_backend(const std::filesystem::path& path) {
  return pmap::SqliteBackend(path, {.mode = pmap::SqliteMode::shared});
}

template <class F>
std::string error_of(F f, pmap::Errc code) {
  try {
    f();
  } catch (const pmap::Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "expected pmap::Error " << pmap::to_string(code);
  return {};
}

TEST(SqliteShared, ModesExcludeEachOther) {
  TempDir dir;
  const auto path = dir / "m.db";
  {
    auto a = shared_backend(path);
    auto b = shared_backend(path);  // any number of shared openers
    const std::string why = error_of([&] { pmap::SqliteBackend c(path); }, pmap::Errc::locked);
    EXPECT_NE(why.find("shared mode"), std::string::npos) << why;
    EXPECT_NE(why.find("mode=shared"), std::string::npos) << why;
  }
  {
    pmap::SqliteBackend exclusive(path);
    const std::string why = error_of([&] { shared_backend(path); }, pmap::Errc::locked);
    EXPECT_NE(why.find("exclusively in"), std::string::npos) << why;
  }
  shared_backend(path);  // every holder gone: opens again
}

TEST(SqliteShared, EachCommitReachesTheRecordWithItsOriginAndTag) {
  TempDir dir;
  auto a = shared_backend(dir / "r.db");
  auto b = shared_backend(dir / "r.db");
  ASSERT_NE(a.origin(), b.origin());
  ASSERT_TRUE(a.shared());
  auto reader = b.open_reader();
  const std::uint64_t start = reader->scan_at([](auto, auto) {});

  std::vector<Backend::Conflict> conflicts;
  std::vector<Write> first = {{Op::put, "x", "1"}, {Op::put, "y", "2"}};
  a.commit_shared(first, {}, 7, conflicts);
  std::vector<Write> second = {{Op::erase, "y", ""}, {Op::put, "x", "3"}};
  b.commit_shared(second, {}, 9, conflicts);

  const Backend::ChangeRead read = reader->changes_since(start, 0);
  ASSERT_FALSE(read.gap);
  EXPECT_EQ(read.through, start + 2);
  ASSERT_EQ(read.changes.size(), 4u);
  // Transactions in commit order; a put carries the key's value at the end
  // of the read (x was put again later: "3").
  EXPECT_EQ(read.changes[0].origin, a.origin());
  EXPECT_EQ(read.changes[0].tag, 7u);
  EXPECT_EQ(read.changes[0].key, "x");
  EXPECT_EQ(read.changes[0].value, "3");
  EXPECT_EQ(read.changes[1].key, "y");
  EXPECT_EQ(read.changes[1].value, std::nullopt) << "y was erased later in the read";
  EXPECT_EQ(read.changes[2].origin, b.origin());
  EXPECT_EQ(read.changes[2].tag, 9u);
  // Within a transaction, writes to different keys come in any order.
  for (const auto& c : {read.changes[2], read.changes[3]})
    EXPECT_EQ(c.op, c.key == "y" ? Op::erase : Op::put) << c.key;
  EXPECT_EQ(reader->changes_since(read.through, 0).changes.size(), 0u);
}

TEST(SqliteShared, ConditionalWritesCommitOnlyWhereTheValueIsStillExpected) {
  TempDir dir;
  auto a = shared_backend(dir / "c.db");
  std::vector<Backend::Conflict> conflicts;
  std::vector<Write> setup = {{Op::put, "n", "1"}, {Op::put, "m", "1"}};
  a.commit_shared(setup, {}, 1, conflicts);

  std::vector<Write> batch = {
      {Op::put, "n", "2"}, {Op::put, "m", "2"}, {Op::put, "new", "x"}, {Op::put, "other", "o"}};
  std::vector<Backend::Expect> expect = {{0, "1"}, {1, "5"}, {2, std::nullopt}};
  a.commit_shared(batch, expect, 2, conflicts);
  ASSERT_EQ(conflicts.size(), 1u);
  EXPECT_EQ(conflicts[0].index, 1u);
  EXPECT_EQ(conflicts[0].stored, "1");
  EXPECT_EQ(a.get("n"), "2");
  EXPECT_EQ(a.get("m"), "1") << "the conflicting write was skipped";
  EXPECT_EQ(a.get("new"), "x");
  EXPECT_EQ(a.get("other"), "o") << "the rest of the batch commits";

  // The record holds only what was applied.
  auto reader = a.open_reader();
  const auto read = reader->changes_since(1, 0);
  std::vector<std::string> keys;
  for (const auto& c : read.changes) keys.push_back(c.key);
  std::sort(keys.begin(), keys.end());
  EXPECT_EQ(keys, (std::vector<std::string>{"n", "new", "other"}));
}

TEST(SqliteShared, ARecordTrimmedPastThePositionIsAGap) {
  TempDir dir;
  auto a = shared_backend(dir / "t.db");
  std::vector<Backend::Conflict> conflicts;
  // Over 16,384 transactions: the record keeps the last 16,384.
  for (int i = 0; i < 17500; ++i) {
    std::vector<Write> w = {{Op::put, "k" + std::to_string(i % 10), std::to_string(i)}};
    a.commit_shared(w, {}, 0, conflicts);
  }
  auto reader = a.open_reader();
  EXPECT_TRUE(reader->changes_since(0, 0).gap);
  EXPECT_TRUE(reader->changes_since(100, 0).gap);
  const auto recent = reader->changes_since(17490, 0);
  EXPECT_FALSE(recent.gap);
  EXPECT_EQ(recent.through, 17500u);
  EXPECT_EQ(recent.changes.size(), 10u);
}

TEST(SqliteShared, WaitReturnsOnAnotherSessionsCommitAndOnInterrupt) {
  TempDir dir;
  auto a = shared_backend(dir / "w.db");
  auto b = shared_backend(dir / "w.db");
  auto reader = a.open_reader();
  std::uint64_t at = reader->scan_at([](auto, auto) {});
  (void)reader->changes_since(at, 0);
  std::thread writer([&] {
    std::vector<Backend::Conflict> conflicts;
    std::vector<Write> w = {{Op::put, "k", "v"}};
    b.commit_shared(w, {}, 0, conflicts);
  });
  // Until the commit shows in the record, wait (a timeout of a minute: a
  // return means the wait saw the commit, or spuriously returned early).
  const auto begin = std::chrono::steady_clock::now();
  Backend::ChangeRead read;
  while ((read = reader->changes_since(at, 0)).changes.empty())
    reader->wait_for_change(at, std::chrono::minutes(1));
  writer.join();
  EXPECT_LT(std::chrono::steady_clock::now() - begin, std::chrono::seconds(30));
  EXPECT_EQ(read.changes.at(0).key, "k");
  at = read.through;

  std::thread interrupter([&] { reader->interrupt(); });
  reader->wait_for_change(at, std::chrono::minutes(1));  // returns: interrupted
  interrupter.join();
}

TEST(SqliteShared, ReadOnlyOpenerReadsAStoreHeldExclusivelyWithoutItsLock) {
  TempDir dir;
  const auto path = dir / "ro.db";
  pmap::PersistentMap<std::string, std::string> map{pmap::SqliteBackend(path)};
  map.insert("a", "1").get();
  pmap::PersistentMap<std::string, std::string> look{
      pmap::SqliteBackend(path, {.read_only = true})};
  EXPECT_EQ(look.get("a"), "1");
  const std::string why =
      error_of([&] { look.insert("b", "2").get(); }, pmap::Errc::invalid_argument);
  EXPECT_NE(why.find("read-only"), std::string::npos) << why;
  EXPECT_EQ(look.get("b"), std::nullopt) << "the refused write is undone in its cache";
  EXPECT_EQ(map.get("b"), std::nullopt);

  const std::string missing =
      error_of([&] { pmap::SqliteBackend(dir / "none.db", {.read_only = true}); }, pmap::Errc::io);
  EXPECT_FALSE(std::filesystem::exists(dir / "none.db")) << "a read-only opener creates nothing";
  error_of([&] { pmap::SqliteBackend(path, {.table = "other", .read_only = true}); },
           pmap::Errc::invalid_argument);
}

TEST(SqliteShared, UriTakesModeAndReadOnly) {
  TempDir dir;
  const std::string path = (dir / "u.db").string();
  auto b = pmap::open_backend("sqlite:" + path + "?mode=shared&table=t&synchronous=normal");
  EXPECT_TRUE(b->shared());
  auto r = pmap::open_backend("sqlite:" + path + "?table=t&read_only=true");
  EXPECT_FALSE(r->shared());
  const std::string why = error_of([&] { pmap::open_backend("sqlite:" + path + "?mode=both"); },
                                   pmap::Errc::invalid_argument);
  EXPECT_NE(why.find("exclusive, shared"), std::string::npos) << why;
}

}  // namespace
