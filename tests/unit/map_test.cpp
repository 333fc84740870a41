// PersistentMap's API, one behaviour per test, on real backends.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <pmap/pmap.hpp>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "../support/test_backend.hpp"

namespace {

using Map = pmap::PersistentMap<std::string, std::string>;
using pmap_test::TempDir;

std::vector<std::pair<std::string, std::string>> sorted(
    std::vector<std::pair<std::string, std::string>> v) {
  std::sort(v.begin(), v.end());
  return v;
}

TEST(Map, InsertReturnsPreviousValueAndGetSeesIt) {
  Map map{pmap::MemoryBackend()};
  EXPECT_EQ(map.insert("k", "1").get(), std::nullopt);
  EXPECT_EQ(map.insert("k", "2").get(), "1");
  EXPECT_EQ(map.get("k"), "2");
  EXPECT_TRUE(map.contains("k"));
  EXPECT_FALSE(map.contains("other"));
  EXPECT_EQ(map.get("other"), std::nullopt);
  EXPECT_EQ(map.size(), 1u);
  EXPECT_FALSE(map.empty());
}

TEST(Map, HeterogeneousLookupTakesLiteralsAndViews) {
  Map map{pmap::MemoryBackend()};
  map.insert("apple", "red").get();
  const std::string_view view = "apple";
  const char* cstr = "apple";
  EXPECT_EQ(map.get(view), "red");
  EXPECT_EQ(map.get(cstr), "red");
  EXPECT_TRUE(map.contains(view));
  EXPECT_EQ(map.update(view, [](std::optional<std::string>& v) { *v += "!"; }).get(), "red!");
  EXPECT_EQ(map.erase(view).get(), "red!");
  EXPECT_TRUE(map.empty());
}

TEST(Map, EraseReturnsRemovedValueOrNulloptAtOnce) {
  auto control = std::make_shared<pmap_test::Control>();
  Map map{std::make_unique<pmap_test::TestBackend>(control)};
  map.insert("k", "v").get();
  const int writes = control->writes.load();
  auto absent = map.erase("nope");
  EXPECT_TRUE(absent.ready()) << "erasing an absent key has nothing to commit";
  EXPECT_EQ(absent.get(), std::nullopt);
  EXPECT_EQ(map.erase("k").get(), "v");
  EXPECT_EQ(control->writes.load(), writes + 1);
  EXPECT_FALSE(map.contains("k"));
  EXPECT_EQ(map.backend().get("k"), std::nullopt);
}

TEST(Map, UpdateInsertsModifiesAndErases) {
  pmap::PersistentMap<std::string, int> map{pmap::MemoryBackend()};
  auto bump = [](std::optional<int>& v) { v = v.value_or(0) + 1; };
  EXPECT_EQ(map.update("n", bump).get(), 1);
  EXPECT_EQ(map.update("n", bump).get(), 2);
  EXPECT_EQ(map.get("n"), 2);
  EXPECT_EQ(map.backend().get("n"), "2");
  EXPECT_EQ(map.update("n", [](std::optional<int>& v) { v.reset(); }).get(), std::nullopt);
  EXPECT_FALSE(map.contains("n"));
  EXPECT_EQ(map.backend().get("n"), std::nullopt);
  // Leaving an absent key absent writes nothing and completes at once.
  auto nothing = map.update("m", [](std::optional<int>&) {});
  EXPECT_TRUE(nothing.ready());
  EXPECT_EQ(nothing.get(), std::nullopt);
}

TEST(Map, UpdateThatThrowsChangesNothing) {
  pmap::PersistentMap<std::string, int> map{pmap::MemoryBackend()};
  map.insert("n", 5).get();
  EXPECT_THROW(map.update("n",
                          [](std::optional<int>& v) {
                            *v = 99;
                            throw std::runtime_error("no");
                          }),
               std::runtime_error);
  EXPECT_EQ(map.get("n"), 5);
  map.flush().get();
  EXPECT_EQ(map.backend().get("n"), "5");
  EXPECT_EQ(map.insert("n", 6).get(), 5) << "a later write still works";
}

TEST(Map, ApplyCommitsABatchInOneTransaction) {
  auto control = std::make_shared<pmap_test::Control>();
  Map map{std::make_unique<pmap_test::TestBackend>(control)};
  map.insert("old", "x").get();
  const int before = control->writes.load();
  pmap::Batch<std::string, std::string> batch;
  batch.insert("a", "1").insert("b", "2").erase("old").insert("a", "3");
  map.apply(batch).get();
  EXPECT_EQ(control->writes.load(), before + 1);
  EXPECT_EQ(sorted(map.snapshot()),
            (std::vector<std::pair<std::string, std::string>>{{"a", "3"}, {"b", "2"}}));
  EXPECT_EQ(map.size(), 2u);
  EXPECT_EQ(map.backend().get("a"), "3");
  EXPECT_EQ(map.backend().get("old"), std::nullopt);
}

TEST(Map, ClearEmptiesTheMapAndTheBackend) {
  TempDir dir;
  const auto path = dir / "clear.db";
  {
    Map map{pmap::SqliteBackend(path)};
    for (int i = 0; i < 50; ++i) map.insert("k" + std::to_string(i), "v");
    map.clear().get();
    EXPECT_TRUE(map.empty());
    EXPECT_EQ(map.get("k1"), std::nullopt);
    map.insert("after", "clear").get();
  }
  Map reopened{pmap::SqliteBackend(path)};
  EXPECT_EQ(sorted(reopened.snapshot()),
            (std::vector<std::pair<std::string, std::string>>{{"after", "clear"}}));
}

TEST(Map, ForEachSeesEveryEntryOnceAndMayWriteToTheMap) {
  pmap::PersistentMap<int, int> map{pmap::MemoryBackend()};
  for (int i = 0; i < 1000; ++i) map.insert(i, i * 2);
  std::vector<int> seen;
  map.for_each([&](const int& k, const int& v) {
    if (k >= 100000) return;  // written during the walk: may or may not be seen
    EXPECT_EQ(v, k * 2);
    seen.push_back(k);
    map.insert(k + 100000, 0);  // no lock is held while f runs: no deadlock
  });
  std::sort(seen.begin(), seen.end());
  ASSERT_EQ(seen.size(), 1000u);
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(seen[static_cast<std::size_t>(i)], i);
  EXPECT_EQ(map.size(), 2000u);
}

TEST(Map, ReopenLoadsWhatWasWrittenForEveryFileBackend) {
  TempDir dir;
  for (const std::string& uri :
       {"sqlite:" + (dir / "r.db").string(), "csv:" + (dir / "r.csv").string(),
        "sqlite:" + (dir / "r.db").string() + "?table=second"}) {
    SCOPED_TRACE(uri);
    std::vector<std::pair<std::string, std::string>> before;
    {
      Map map{uri};
      map.insert("a", "1");
      map.insert("b", "two, with comma");
      map.insert("c", "three\nlines");
      map.erase("b");
      map.update("a", [](std::optional<std::string>& v) { *v += "+"; });
      before = sorted(map.snapshot());
    }  // the destructor commits everything accepted
    Map map{uri};
    EXPECT_EQ(sorted(map.snapshot()), before);
    EXPECT_EQ(map.get("a"), "1+");
  }
}

TEST(Map, CloseCommitsThenRejectsWritesButKeepsReads) {
  TempDir dir;
  Map map{pmap::SqliteBackend(dir / "close.db")};
  map.insert("k", "v");
  map.close().get();
  EXPECT_EQ(map.get("k"), "v");
  try {
    map.insert("k2", "v2");
    FAIL() << "insert after close must throw";
  } catch (const pmap::Error& e) {
    EXPECT_EQ(e.code(), pmap::Errc::closed);
    EXPECT_NE(std::string(e.what()).find("close.db"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(map.contains("k2"));
  try {
    map.flush().get();
    FAIL() << "flush after close must fail";
  } catch (const pmap::Error& e) {
    EXPECT_EQ(e.code(), pmap::Errc::closed);
  }
  EXPECT_THROW(map.backend(), pmap::Error);
  // The file and lock are released: another map opens it and sees the write.
  Map again{pmap::SqliteBackend(dir / "close.db")};
  EXPECT_EQ(again.get("k"), "v");
}

TEST(Map, UndecodableStoredValueNamesTheKey) {
  TempDir dir;
  const auto path = dir / "codec.db";
  {
    Map map{pmap::SqliteBackend(path)};
    map.insert("good", "12");
    map.insert("bad key", "twelve");
  }
  try {
    pmap::PersistentMap<std::string, int> map{pmap::SqliteBackend(path)};
    FAIL() << "loading a non-integer as int must fail";
  } catch (const pmap::Error& e) {
    EXPECT_EQ(e.code(), pmap::Errc::codec);
    const std::string what = e.what();
    EXPECT_NE(what.find("bad key"), std::string::npos) << what;
    EXPECT_NE(what.find("twelve"), std::string::npos) << what;
    EXPECT_NE(what.find("codec.db"), std::string::npos) << what;
  }
}

TEST(Map, UnknownSchemeListsTheKnownOnes) {
  try {
    Map map{"redis-cluster://x"};
    FAIL();
  } catch (const pmap::Error& e) {
    EXPECT_EQ(e.code(), pmap::Errc::invalid_argument);
    const std::string what = e.what();
    for (const char* s : {"sqlite:", "csv:", "memory:", "redis-cluster"})
      EXPECT_NE(what.find(s), std::string::npos) << what;
  }
  try {
    Map map{"data.db"};
    FAIL();
  } catch (const pmap::Error& e) {
    EXPECT_EQ(e.code(), pmap::Errc::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("sqlite:data.db"), std::string::npos) << e.what();
  }
  for (const char* bad :
       {"sqlite:", "sqlite:x.db?tabel=t", "sqlite:x.db?synchronous=fast", "memory:x", "csv:"}) {
    SCOPED_TRACE(bad);
    try {
      pmap::open_backend(bad);
      FAIL();
    } catch (const pmap::Error& e) {
      EXPECT_EQ(e.code(), pmap::Errc::invalid_argument) << e.what();
    }
  }
}

// A password in a URI never reaches a message: open_backend's errors show
// the URI through redact_uri.
TEST(Map, UriPasswordsNeverAppearInErrors) {
  const std::string secret = "s3cret-pw";
  for (const std::string& uri :
       {"postgres://alice:" + secret + "@db.example:5432/app?table=kv",
        "redis://:" + secret + "@localhost:6379/0?prefix=app:",
        "sqlite:x.db?password=" + secret + "&table=t", "nosuch://bob:" + secret + "@host/db",
        "memory:?password=" + secret}) {
    SCOPED_TRACE(uri);
    try {
      pmap::open_backend(uri);
      ADD_FAILURE() << "opened";
    } catch (const pmap::Error& e) {
      const std::string what = e.what();
      EXPECT_EQ(what.find(secret), std::string::npos) << what;
      // Shown redacted, or (a backend that parsed it) without the password.
      EXPECT_TRUE(what.find("***") != std::string::npos ||
                  what.find("postgres://alice@db.example:5432/app") != std::string::npos ||
                  what.find("redis://localhost:6379/0?prefix=app:") != std::string::npos)
          << what;
    }
  }
  EXPECT_EQ(pmap::redact_uri("postgres://alice:" + secret + "@h:5432/db?sslmode=require"),
            "postgres://alice:***@h:5432/db?sslmode=require");
  EXPECT_EQ(pmap::redact_uri("redis://:" + secret + "@h:6379/0"), "redis://:***@h:6379/0");
  EXPECT_EQ(pmap::redact_uri("postgresql://h/db?user=a&password=" + secret + "&x"),
            "postgresql://h/db?user=a&password=***&x");
  EXPECT_EQ(pmap::redact_uri("postgres://alice@h/db"), "postgres://alice@h/db");
  EXPECT_EQ(pmap::redact_uri("sqlite:/data/a@b:c.db?table=t"), "sqlite:/data/a@b:c.db?table=t");
  for (const char* same : {"sqlite:x.db?&&table=t&&", "memory:?", "x:?a&b=&=c&&"})
    EXPECT_EQ(pmap::redact_uri(same), std::string(same)) << "nothing to redact, nothing changed";
}

// backend() may be called from any thread while another closes the map: it
// returns the backend until close() releases it, then throws Errc::closed
// (run under ThreadSanitizer by the tsan preset).
TEST(Map, BackendAccessorRacingCloseIsSafe) {
  Map map{pmap::MemoryBackend()};
  map.insert("k", "v").get();
  std::atomic<bool> started{false};
  std::thread reader([&] {
    for (;;) {
      try {
        (void)map.backend();
        started.store(true);
      } catch (const pmap::Error& e) {
        EXPECT_EQ(e.code(), pmap::Errc::closed) << e.what();
        return;
      }
    }
  });
  while (!started.load()) std::this_thread::yield();
  map.close().get();
  reader.join();
  EXPECT_EQ(map.get("k"), "v");
}

TEST(Map, RegisterBackendAddsAScheme) {
  auto control = std::make_shared<pmap_test::Control>();
  pmap::register_backend("test-scheme",
                         [control](std::string_view rest) -> std::unique_ptr<pmap::Backend> {
                           EXPECT_EQ(rest, "anything?x=1");
                           return std::make_unique<pmap_test::TestBackend>(control);
                         });
  auto schemes = pmap::registered_backends();
  EXPECT_NE(std::find(schemes.begin(), schemes.end(), "test-scheme"), schemes.end());
  Map map{"test-scheme:anything?x=1"};
  map.insert("k", "v").get();
  EXPECT_EQ(control->writes.load(), 1);
  EXPECT_THROW(pmap::register_backend("bad scheme", [](std::string_view) { return nullptr; }),
               pmap::Error);
}

TEST(Map, ValuesOfEveryBuiltInCodecSurviveReopen) {
  TempDir dir;
  const auto path = dir / "types.db";
  {
    pmap::PersistentMap<std::int64_t, double> a{pmap::SqliteBackend(path, {.table = "a"})};
    a.insert(-5, 0.1);
    a.insert(7, -1e300);
    pmap::PersistentMap<std::string, std::vector<std::uint8_t>> b{
        pmap::SqliteBackend(path, {.table = "b"})};
    b.insert("bytes", {0, 1, 255, 0});
    pmap::PersistentMap<std::string, bool> c{pmap::SqliteBackend(path, {.table = "c"})};
    c.insert("yes", true);
  }
  pmap::PersistentMap<std::int64_t, double> a{pmap::SqliteBackend(path, {.table = "a"})};
  EXPECT_EQ(a.get(std::int64_t{-5}), 0.1);
  EXPECT_EQ(a.get(std::int64_t{7}), -1e300);
  pmap::PersistentMap<std::string, std::vector<std::uint8_t>> b{
      pmap::SqliteBackend(path, {.table = "b"})};
  EXPECT_EQ(b.get("bytes"), (std::vector<std::uint8_t>{0, 1, 255, 0}));
  pmap::PersistentMap<std::string, bool> c{pmap::SqliteBackend(path, {.table = "c"})};
  EXPECT_EQ(c.get("yes"), true);
}

}  // namespace

namespace {

struct Note {
  std::string text;
};
void to_json(nlohmann::json& j, const Note& n) { j = nlohmann::json{{"text", n.text}}; }
void from_json(const nlohmann::json& j, Note& n) { j.at("text").get_to(n.text); }

TEST(Map, ValueThatCannotEncodeThrowsAndChangesNothing) {
  auto control = std::make_shared<pmap_test::Control>();
  pmap::PersistentMap<std::string, Note> map{std::make_unique<pmap_test::TestBackend>(control)};
  map.insert("ok", Note{"fine"}).get();
  try {
    map.insert("bad", Note{"\xff\xfe not UTF-8"});
    FAIL() << "JSON cannot hold invalid UTF-8";
  } catch (const pmap::Error& e) {
    EXPECT_EQ(e.code(), pmap::Errc::codec);
  }
  EXPECT_FALSE(map.contains("bad"));
  map.flush().get();
  EXPECT_EQ(control->written_ops.load(), 1);
}

TEST(Map, DestructorReportsAFailedFinalFlushToOnError) {
  auto control = std::make_shared<pmap_test::Control>();
  std::vector<std::string> reports;
  pmap::Options options;
  options.on_error = [&](const pmap::Error& e) { reports.emplace_back(e.what()); };
  {
    Map map{std::make_unique<pmap_test::TestBackend>(control), options};
    map.insert("k", "v");
    control->fail_flushes = 1;
  }  // on_error ran on the completion thread, which the destructor joined
  ASSERT_EQ(reports.size(), 1u);
  EXPECT_NE(reports[0].find("injected flush failure"), std::string::npos) << reports[0];
  EXPECT_EQ(control->written_ops.load(), 1) << "the accepted write was committed first";
}

TEST(Map, CloseWhileWritingCommitsEveryAcceptedWriteAndRejectsTheRest) {
  TempDir dir;
  const auto path = dir / "closing.db";
  std::vector<std::vector<std::string>> accepted(4);
  {
    Map map{pmap::SqliteBackend(path)};
    std::atomic<int> started{0};
    std::vector<std::thread> writers;
    for (int t = 0; t < 4; ++t)
      writers.emplace_back([&, t] {
        for (int i = 0;; ++i) {
          const std::string key = std::to_string(t) + "/" + std::to_string(i);
          try {
            map.insert(key, "v");
          } catch (const pmap::Error& e) {
            EXPECT_EQ(e.code(), pmap::Errc::closed);
            return;
          }
          accepted[static_cast<std::size_t>(t)].push_back(key);
          if (i == 100) ++started;
        }
      });
    while (started.load() < 4) std::this_thread::yield();
    map.close().get();
    for (auto& w : writers) w.join();
  }
  Map reopened{pmap::SqliteBackend(path)};
  std::size_t total = 0;
  for (const auto& keys : accepted) {
    total += keys.size();
    for (const auto& k : keys)
      ASSERT_TRUE(reopened.contains(k)) << "accepted write " << k << " lost";
  }
  EXPECT_EQ(reopened.size(), total);
}

}  // namespace
