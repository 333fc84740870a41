// The SQLite backend's own behaviour: bad paths and files, table names,
// locking, and a schema ordinary tools can read.
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <pmap/pmap.hpp>
#include <sstream>

#include "../support/test_backend.hpp"

namespace {

using Map = pmap::PersistentMap<std::string, std::string>;
using pmap_test::TempDir;

using pmap_test::slurp;

std::vector<std::string> files_in(const std::filesystem::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir))
    out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// Expects f() to throw pmap::Error with code, its message containing every
// one of needles.
template <class F>
void expect_error(F f, pmap::Errc code, std::initializer_list<std::string> needles) {
  try {
    f();
    ADD_FAILURE() << "expected pmap::Error " << pmap::to_string(code);
  } catch (const pmap::Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    for (const auto& n : needles)
      EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
  }
}

TEST(Sqlite, FileThatIsNotADatabaseIsRejectedAndLeftUntouched) {
  TempDir dir;
  const auto path = dir / "notes.txt";
  std::string content;
  for (int i = 0; i < 200; ++i) content += "line " + std::to_string(i) + ", not SQL\n";
  std::ofstream(path, std::ios::binary) << content;
  expect_error([&] { pmap::SqliteBackend b(path); }, pmap::Errc::corrupt,
               {"notes.txt", "not a SQLite database"});
  EXPECT_EQ(slurp(path), content);
  EXPECT_EQ(files_in(dir.path()), std::vector<std::string>{"notes.txt"})
      << "nothing may be created beside it";
}

TEST(Sqlite, DamagedDatabaseIsAClearErrorNotACrash) {
  TempDir dir;
  const auto path = dir / "damaged.db";
  std::string content("SQLite format 3\0", 16);
  content += std::string(4000, '\x5a');
  std::ofstream(path, std::ios::binary) << content;
  expect_error([&] { Map m{pmap::SqliteBackend(path)}; }, pmap::Errc::corrupt, {"damaged.db"});
  EXPECT_EQ(slurp(path), content);
}

// damage() runs integrity_check over the whole file: nothing on a sound
// one; on one with a page overwritten, the damaged places, each naming the
// file and the page, at most `limit` of them.
TEST(Sqlite, DamageNamesEachDamagedPageOfTheFile) {
  TempDir dir;
  const auto path = dir / "pages.db";
  {
    pmap::SqliteBackend b(path);
    std::vector<pmap::Write> batch;
    for (int i = 0; i < 5000; ++i)
      batch.push_back({pmap::Write::Op::put, "key " + std::to_string(i), std::string(60, 'v')});
    b.write(batch);
    EXPECT_TRUE(b.damage(10).empty());
    b.compact({});  // everything in the file, none in the WAL
  }
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(4096 * 20 + 100);
    const std::string garbage(300, '\xff');
    f.write(garbage.data(), static_cast<std::streamsize>(garbage.size()));
  }
  pmap::SqliteOptions read_only;
  read_only.read_only = true;
  pmap::SqliteBackend b(path, read_only);
  const auto places = b.damage(5);
  ASSERT_FALSE(places.empty());
  EXPECT_LE(places.size(), 5u);
  for (const std::string& place : places) {
    EXPECT_TRUE(place.starts_with(path.string() + ": ")) << place;
    EXPECT_NE(place.find("page"), std::string::npos) << place;
  }
}

// A store with most of its entries erased: 2,000 live of 20,000 written.
void fill_then_erase(pmap::SqliteBackend& b) {
  std::vector<pmap::Write> batch;
  for (int i = 0; i < 20000; ++i)
    batch.push_back({pmap::Write::Op::put, "key " + std::to_string(i), std::string(100, 'v')});
  b.write(batch);
  batch.clear();
  for (int i = 0; i < 20000; ++i)
    if (i % 10 != 0) batch.push_back({pmap::Write::Op::erase, "key " + std::to_string(i), {}});
  b.write(batch);
}

std::map<std::string, std::string> entries_of(pmap::Backend& b) {
  std::map<std::string, std::string> out;
  b.scan([&](std::string_view k, std::string_view v) { out.emplace(k, v); });
  return out;
}

// compact() gives the space back, entries unchanged, reporting progress in
// bytes up to the whole (the live pages, out and back), and leaves no copy.
TEST(Sqlite, CompactShrinksTheFileAndReportsItsProgress) {
  TempDir dir;
  const auto path = dir / "compact.db";
  pmap::SqliteBackend b(path);
  fill_then_erase(b);
  const auto entries = entries_of(b);
  const auto before = *b.bytes();
  std::vector<std::pair<std::uint64_t, std::uint64_t>> seen;
  ASSERT_TRUE(
      b.compact([&](std::uint64_t done, std::uint64_t total) { seen.emplace_back(done, total); }));
  EXPECT_LT(*b.bytes(), before / 4);
  EXPECT_EQ(entries_of(b), entries);
  ASSERT_GE(seen.size(), 2u);
  // The whole: an estimate at first, then the copy's bytes, twice.
  EXPECT_EQ(seen.back().first, seen.back().second);
  EXPECT_EQ(seen.back().second, 2 * *b.bytes());
  for (std::size_t i = 1; i < seen.size(); ++i) {
    EXPECT_LE(seen[i].second, seen[i - 1].second);
    EXPECT_GE(seen[i].first * seen[i - 1].second, seen[i - 1].first * seen[i].second)
        << "the part done never shrinks";
  }
  EXPECT_FALSE(std::filesystem::exists(path.string() + ".pmap-compact"));
  b.write(std::vector<pmap::Write>{{pmap::Write::Op::put, "after", "1"}});
  EXPECT_EQ(b.get("after"), "1");
}

// A file made elsewhere, with another page size than the backend's own,
// compacts and keeps its page size.
TEST(Sqlite, CompactKeepsTheFilesPageSize) {
  TempDir dir;
  const auto path = dir / "foreign.db";
  {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    for (const char* sql :
         {"PRAGMA page_size=4096", "PRAGMA journal_mode=WAL",
          "CREATE TABLE kv (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) WITHOUT ROWID",
          "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000) "
          "INSERT INTO kv SELECT 'k' || i, 'v' FROM n"})
      if (sqlite3_exec(db, sql, nullptr, nullptr, nullptr) != SQLITE_OK)
        ADD_FAILURE() << sql << ": " << sqlite3_errmsg(db);
    sqlite3_close(db);
  }
  pmap::SqliteBackend b(path);
  ASSERT_TRUE(b.compact({}));
  EXPECT_EQ(entries_of(b).size(), 3000u);
  const auto details = b.details();
  EXPECT_NE(std::find(details.begin(), details.end(),
                      std::pair<std::string, std::string>{"page size", "4096"}),
            details.end());
}

// A compaction that cannot finish leaves the file as it was: here its copy
// cannot be made (a directory holds the copy's name).
TEST(Sqlite, ACompactionThatFailsLeavesTheFileAsItWas) {
  TempDir dir;
  const auto path = dir / "keep.db";
  pmap::SqliteBackend b(path);
  fill_then_erase(b);
  b.flush();
  std::filesystem::create_directories(path.string() + ".pmap-compact/in-the-way");
  const auto entries = entries_of(b);
  const auto before = *b.bytes();
  expect_error([&] { b.compact({}); }, pmap::Errc::io, {"keep.db", "cannot compact"});
  EXPECT_EQ(*b.bytes(), before);
  EXPECT_EQ(entries_of(b), entries);
  // ... or a progress callback throws: the throw ends it, nothing replaced.
  std::filesystem::remove_all(path.string() + ".pmap-compact");
  for (int calls_before_the_throw : {0, 1, 2, 3}) {
    int calls = 0;
    bool threw = false;
    try {
      b.compact([&](std::uint64_t done, std::uint64_t total) {
        if (calls++ == calls_before_the_throw && done < total) throw std::runtime_error("stop");
      });
    } catch (const std::runtime_error& e) {
      threw = true;
      EXPECT_STREQ(e.what(), "stop");
    }
    if (!threw) {  // it had finished before the callback threw
      EXPECT_GT(calls_before_the_throw, 0) << "a throw from the first call must end it";
      break;
    }
    EXPECT_EQ(*b.bytes(), before);
    EXPECT_EQ(entries_of(b), entries);
    EXPECT_FALSE(std::filesystem::exists(path.string() + ".pmap-compact"));
  }
}

// In shared mode, a commit by another session while the copy is made:
// the copy is old, so nothing is replaced and the commit is kept.
TEST(Sqlite, ACommitDuringASharedCompactionIsKept) {
  TempDir dir;
  const auto path = dir / "shared.db";
  pmap::SqliteBackend b(path, {.mode = pmap::SqliteMode::shared});
  fill_then_erase(b);
  pmap::SqliteBackend other(path, {.mode = pmap::SqliteMode::shared});
  bool committed = false;
  expect_error(
      [&] {
        b.compact([&](std::uint64_t, std::uint64_t) {
          if (committed) return;
          committed = true;
          other.write(std::vector<pmap::Write>{{pmap::Write::Op::put, "meanwhile", "1"}});
        });
      },
      pmap::Errc::locked, {"shared.db", "another process committed"});
  EXPECT_TRUE(committed);
  EXPECT_EQ(b.get("meanwhile"), "1");
  EXPECT_EQ(entries_of(b).size(), 2001u);
  EXPECT_FALSE(std::filesystem::exists(path.string() + ".pmap-compact"));
}

TEST(Sqlite, BadPathsAreIoErrorsThatSayWhy) {
  TempDir dir;
  expect_error([&] { pmap::SqliteBackend b(dir.path()); }, pmap::Errc::io, {"is a directory"});
  expect_error([&] { pmap::SqliteBackend b(dir / "missing" / "x.db"); }, pmap::Errc::io,
               {"missing", "does not exist"});
  std::ofstream(dir / "plain") << "x";
  expect_error([&] { pmap::SqliteBackend b(dir / "plain" / "x.db"); }, pmap::Errc::io, {"plain"});
  EXPECT_EQ(slurp(dir / "plain"), "x");
}

TEST(Sqlite, TableNamesAreValidated) {
  TempDir dir;
  for (const char* bad : {"", "two words", "1st", "x;DROP TABLE kv", "sqlite_master", "quo\"te"}) {
    SCOPED_TRACE(bad);
    expect_error([&] { pmap::SqliteBackend b(dir / "t.db", {.table = bad}); },
                 pmap::Errc::invalid_argument, {"table name"});
  }
  EXPECT_FALSE(std::filesystem::exists(dir / "t.db"));
}

TEST(Sqlite, ForeignTableWithTheSameNameIsRefused) {
  TempDir dir;
  const auto path = dir / "app.db";
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "CREATE TABLE kv (id INTEGER PRIMARY KEY, name TEXT)", nullptr,
                         nullptr, nullptr),
            SQLITE_OK);
  sqlite3_close(db);
  try {
    pmap::SqliteBackend b(path);
    FAIL();
  } catch (const pmap::Error& e) {
    EXPECT_NE(std::string(e.what()).find("table kv"), std::string::npos) << e.what();
  }
}

TEST(Sqlite, SeveralMapsShareAFileOnDifferentTables) {
  TempDir dir;
  const auto path = dir / "shared.db";
  {
    Map users{pmap::SqliteBackend(path, {.table = "users"})};
    Map sessions{pmap::SqliteBackend(path, {.table = "sessions"})};
    for (int i = 0; i < 50; ++i) {
      users.insert("u" + std::to_string(i), "user");
      sessions.insert("s" + std::to_string(i), "session");
    }
  }
  Map users{pmap::SqliteBackend(path, {.table = "users"})};
  Map sessions{pmap::SqliteBackend(path, {.table = "sessions"})};
  EXPECT_EQ(users.size(), 50u);
  EXPECT_EQ(sessions.size(), 50u);
  EXPECT_FALSE(users.contains("s1"));
}

TEST(Sqlite, SecondOpenerInThisProcessIsLocked) {
  TempDir dir;
  const auto path = dir / "locked.db";
  Map first{pmap::SqliteBackend(path)};
  first.insert("k", "v").get();
  expect_error([&] { Map second{pmap::SqliteBackend(path)}; }, pmap::Errc::locked,
               {"locked.db", "kv", "this process"});
  Map other_table{pmap::SqliteBackend(path, {.table = "other"})};  // a different table is fine
  EXPECT_EQ(first.get("k"), "v");
}

TEST(Sqlite, SecondOpenerInAnotherProcessIsLockedAndToldThePid) {
  TempDir dir;
  const std::string uri = "sqlite:" + (dir / "proc.db").string();
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    execl(PMAP_CRASH_WRITER, PMAP_CRASH_WRITER, uri.c_str(), "awaited",
          static_cast<char*>(nullptr));
    _exit(127);
  }
  close(fds[1]);
  FILE* in = fdopen(fds[0], "r");
  char line[64];
  ASSERT_TRUE(std::fgets(line, sizeof line, in));  // "ready 0": it holds the map
  ASSERT_TRUE(std::fgets(line, sizeof line, in));  // "0": its first write is committed
  expect_error([&] { Map m{std::string_view(uri)}; }, pmap::Errc::locked,
               {"proc.db", "process " + std::to_string(pid)});
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  std::fclose(in);
  Map after{std::string_view(uri)};  // a killed holder's lock is gone with it
  EXPECT_TRUE(after.contains("key0"));
}

TEST(Sqlite, TextIsStoredAsTextAndBinaryAsBlob) {
  TempDir dir;
  const auto path = dir / "readable.db";
  {
    Map map{pmap::SqliteBackend(path)};
    map.insert("alice", "likes \"tea\", é");
    map.insert(std::string("bin\0ary", 7), std::string("\xff\x00", 2));
    const char nul_key[] = "a longer key, with a NUL \0 past the first words";
    map.insert(std::string(nul_key, sizeof nul_key - 1), "x");
    map.insert("a longer key, with a byte \xff past the first words", "x");
  }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT value, typeof(key) FROM kv WHERE key = 'alice'", -1,
                               &stmt, nullptr),
            SQLITE_OK);
  ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0))),
            "likes \"tea\", é");
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(sqlite3_column_text(stmt, 1))), "text");
  sqlite3_finalize(stmt);
  ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT count(*) FROM kv WHERE typeof(key) = 'blob'", -1, &stmt,
                               nullptr),
            SQLITE_OK);
  ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(stmt, 0), 3);
  sqlite3_finalize(stmt);
  ASSERT_EQ(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &stmt, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0))), "wal");
  sqlite3_finalize(stmt);
  sqlite3_close(db);
}

TEST(Sqlite, SynchronousNormalFlushCheckpoints) {
  TempDir dir;
  const auto path = dir / "normal.db";
  Map map{pmap::SqliteBackend(path, {.synchronous = pmap::Synchronous::normal})};
  for (int i = 0; i < 100; ++i) map.insert(std::to_string(i), "v");
  map.flush().get();
  // After a checkpoint the main database file holds the rows, not only the WAL.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT count(*) FROM kv", -1, &stmt, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int(stmt, 0), 100);
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  EXPECT_GT(std::filesystem::file_size(path), 4096u);
}

// One integer from a pragma, read by a separate connection.
int pragma_of(const std::filesystem::path& path, const char* pragma) {
  sqlite3* db = nullptr;
  EXPECT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  EXPECT_EQ(sqlite3_prepare_v2(db, pragma, -1, &stmt, nullptr), SQLITE_OK);
  EXPECT_EQ(sqlite3_step(stmt), SQLITE_ROW);
  const int value = sqlite3_column_int(stmt, 0);
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return value;
}

// Through a symbolic link: SQLite keeps its WAL beside the real file, and
// that is the WAL the map fsyncs; the link and the real name take one lock.
TEST(Sqlite, ASymlinkToTheDatabaseWorksAndSharesItsLock) {
  TempDir dir;
  std::filesystem::create_directory(dir / "data");
  std::filesystem::create_symlink(dir / "data" / "real.db", dir / "link.db");
  {
    Map map{pmap::SqliteBackend(dir / "link.db")};
    map.insert("k", "v").get();
    expect_error([&] { pmap::SqliteBackend b(dir / "data" / "real.db"); }, pmap::Errc::locked,
                 {"kv"});
  }
  Map map{pmap::SqliteBackend(dir / "data" / "real.db")};
  EXPECT_EQ(map.get("k"), "v");
}

TEST(Sqlite, NewFilesGetThePageSizeAskedForExistingFilesKeepTheirs) {
  TempDir dir;
  {
    Map map{pmap::SqliteBackend(dir / "default.db")};
    map.insert("k", "v");
  }
  EXPECT_EQ(pragma_of(dir / "default.db", "PRAGMA page_size"), 8192);
  {
    Map map{pmap::SqliteBackend(dir / "small.db", {.page_size = 1024})};
    map.insert("k", "v");
  }
  EXPECT_EQ(pragma_of(dir / "small.db", "PRAGMA page_size"), 1024);
  // A file made by someone else, with SQLite's 4 KiB pages, keeps them.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open((dir / "theirs.db").c_str(), &db), SQLITE_OK);
  ASSERT_EQ(
      sqlite3_exec(db, "PRAGMA page_size=4096; CREATE TABLE other (x)", nullptr, nullptr, nullptr),
      SQLITE_OK);
  sqlite3_close(db);
  {
    Map map{pmap::SqliteBackend(dir / "theirs.db", {.page_size = 16384})};
    map.insert("k", "v");
  }
  EXPECT_EQ(pragma_of(dir / "theirs.db", "PRAGMA page_size"), 4096);
  Map map{pmap::SqliteBackend(dir / "theirs.db")};
  EXPECT_EQ(map.get("k"), "v");
}

TEST(Sqlite, PageSizeAndCacheSizeAreValidated) {
  TempDir dir;
  for (int bad : {0, 256, 1000, 131072, -4096}) {
    SCOPED_TRACE(bad);
    expect_error([&] { pmap::SqliteBackend b(dir / "p.db", {.page_size = bad}); },
                 pmap::Errc::invalid_argument, {"page_size", std::to_string(bad), "power of two"});
  }
  expect_error([&] { pmap::SqliteBackend b(dir / "p.db", {.cache_kib = 0}); },
               pmap::Errc::invalid_argument, {"cache_kib"});
  EXPECT_FALSE(std::filesystem::exists(dir / "p.db"));
}

// The WAL is checkpointed at 16 MiB and cut back to that size afterwards, so
// it neither grows without bound nor stays as large as the largest commit.
TEST(Sqlite, TheWalStaysBounded) {
  TempDir dir;
  const auto path = dir / "wal.db";
  Map map{pmap::SqliteBackend(path)};
  const std::string value(64 * 1024, 'v');
  pmap::Batch<std::string, std::string> big;  // one 32 MiB transaction
  for (int i = 0; i < 512; ++i) big.insert("big" + std::to_string(i), value);
  map.apply(big).get();
  const auto wal = std::filesystem::path(path.string() + "-wal");
  EXPECT_GT(std::filesystem::file_size(wal), 32u << 20);
  // Small commits afterwards: the next checkpoint resets and truncates it.
  for (int round = 0; round < 20; ++round) {
    pmap::Batch<std::string, std::string> b;
    for (int i = 0; i < 16; ++i) b.insert("k" + std::to_string(round * 16 + i), value);
    map.apply(b).get();
  }
  EXPECT_LE(std::filesystem::file_size(wal), (16u << 20) + (2u << 20));
}

}  // namespace
