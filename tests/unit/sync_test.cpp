// What survives a power loss depends on fsync: a commit survives one only if
// its bytes were synced before its future completed. A power cut cannot be
// staged here, so these tests watch the syncs themselves — under each
// durability setting, which files are fsynced, and whether that happens
// before the write is acknowledged.
//
// (A separate executable: it replaces libc's fsync and fdatasync, for
// SQLite's calls too, with versions that record the file, then sync it.)
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <mutex>
#include <pmap/pmap.hpp>
#include <string>
#include <thread>
#include <vector>

#include "../support/test_backend.hpp"

namespace {

// Every fsync/fdatasync of any file, and every write to a WAL, in order.
struct Event {
  bool sync;  // else a write
  std::string path;
  pid_t thread;
  bool failed = false;  // a sync made to fail (fail_wal_syncs)
};
std::mutex events_mutex;
std::vector<Event> events;

// When positive, that many fdatasyncs of a WAL fail with EIO; the second
// counter fails only syncs made on another thread than the WAL's writer
// (the map's sync thread) after that thread has written the WAL.
std::atomic<int> fail_wal_syncs{0};
std::atomic<int> fail_wal_syncs_off_writer{0};

std::string path_of(int fd) {
  char buf[4096];
  const std::string link = "/proc/self/fd/" + std::to_string(fd);
  const ssize_t n = ::readlink(link.c_str(), buf, sizeof buf);
  return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "?";
}

// Records a sync of fd; true when it is to fail.
bool record_sync(int fd) {
  std::string path = path_of(fd);
  const pid_t thread = ::gettid();
  std::lock_guard lock(events_mutex);
  bool fail = false;
  if (path.ends_with("-wal")) {
    pid_t writer = 0;
    for (const Event& e : events)
      if (!e.sync && e.path == path) writer = e.thread;
    if (fail_wal_syncs.load() > 0) {
      fail = true;
      fail_wal_syncs.fetch_sub(1);
    } else if (fail_wal_syncs_off_writer.load() > 0 && writer != 0 && writer != thread) {
      fail = true;
      fail_wal_syncs_off_writer.fetch_sub(1);
    }
  }
  events.push_back(Event{true, std::move(path), thread, fail});
  return fail;
}

void record_write(int fd) {
  std::string path = path_of(fd);
  if (!path.ends_with("-wal")) return;
  std::lock_guard lock(events_mutex);
  events.push_back(Event{false, std::move(path), ::gettid()});
}

template <class Fn>
Fn real(const char* name) {
  return reinterpret_cast<Fn>(::dlsym(RTLD_NEXT, name));
}

}  // namespace

extern "C" int fsync(int fd) {
  static const auto next = real<int (*)(int)>("fsync");
  record_sync(fd);
  return next(fd);
}
extern "C" int fdatasync(int fd) {
  static const auto next = real<int (*)(int)>("fdatasync");
  if (record_sync(fd)) {
    errno = EIO;
    return -1;
  }
  return next(fd);
}
// SQLite writes its WAL with pwrite64 (or pwrite).
extern "C" ssize_t pwrite64(int fd, const void* buf, size_t n, off64_t offset) {
  static const auto next = real<ssize_t (*)(int, const void*, size_t, off64_t)>("pwrite64");
  record_write(fd);
  return next(fd, buf, n, offset);
}
extern "C" ssize_t pwrite(int fd, const void* buf, size_t n, off_t offset) {
  static const auto next = real<ssize_t (*)(int, const void*, size_t, off_t)>("pwrite");
  record_write(fd);
  return next(fd, buf, n, offset);
}

namespace {

using Map = pmap::PersistentMap<std::string, std::string>;
using pmap_test::TempDir;

// Syncs so far of files whose path ends with suffix.
std::size_t syncs_of(const std::string& suffix) {
  std::lock_guard lock(events_mutex);
  return static_cast<std::size_t>(std::count_if(events.begin(), events.end(), [&](const Event& e) {
    return e.sync && e.path.ends_with(suffix);
  }));
}

// Whether the last write to a file whose path ends with suffix is followed
// by a sync of that file (and there was a write at all).
bool last_write_synced(const std::string& suffix) {
  std::lock_guard lock(events_mutex);
  bool written = false, synced_since = false;
  for (const Event& e : events) {
    if (!e.path.ends_with(suffix)) continue;
    written = written || !e.sync;
    synced_since = e.sync;
  }
  return written && synced_since;
}

TEST(Sync, SqliteFullSyncsTheWalBeforeEveryAcknowledgement) {
  TempDir dir;
  Map map{pmap::SqliteBackend(dir / "full.db")};  // the default: Synchronous::full
  for (int i = 0; i < 20; ++i) {
    const std::size_t before = syncs_of("full.db-wal");
    map.insert("k" + std::to_string(i), "v").get();
    EXPECT_GT(syncs_of("full.db-wal"), before)
        << "write " << i << " was acknowledged before an fsync";
    EXPECT_TRUE(last_write_synced("full.db-wal"))
        << "write " << i << " was acknowledged before the WAL was synced after its commit";
  }
}

// Many writes in flight: the map's writer commits group after group while a
// second thread fsyncs the WAL. Once every write of a round is acknowledged
// (nothing else is being written), the WAL must have been synced after its
// last write.
TEST(Sync, SqliteFullSyncsBeforeAcknowledgingConcurrentWrites) {
  TempDir dir;
  Map map{pmap::SqliteBackend(dir / "many.db")};
  for (int round = 0; round < 20; ++round) {
    std::vector<pmap::Future<std::optional<std::string>>> futures;
    for (int i = 0; i < 200; ++i)
      futures.push_back(map.insert("k" + std::to_string(round * 200 + i), "v"));
    for (auto& f : futures) f.get();  // every write of the round acknowledged...
    EXPECT_TRUE(last_write_synced("many.db-wal"))
        << "round " << round << ": ...with its commit not yet synced";
  }
}

// One writer waits for one fsync: a write on its own, after a burst that
// kept the sync thread busy, costs exactly one fsync of the WAL, made after
// its commit and before its acknowledgement.
TEST(Sync, SqliteLoneWriteIsSyncedOnceAfterItsCommit) {
  TempDir dir;
  Map map{pmap::SqliteBackend(dir / "lone.db")};
  std::vector<pmap::Future<std::optional<std::string>>> burst;
  for (int i = 0; i < 2000; ++i) burst.push_back(map.insert("b" + std::to_string(i), "v"));
  for (auto& f : burst) f.get();
  for (int i = 0; i < 5; ++i) {
    map.flush().get();  // every sync of what came before is done
    const std::size_t before = syncs_of("lone.db-wal");
    map.insert("lone" + std::to_string(i), "v").get();
    EXPECT_EQ(syncs_of("lone.db-wal") - before, 1u) << "lone write " << i;
    EXPECT_TRUE(last_write_synced("lone.db-wal")) << "lone write " << i;
  }
}

// A failed fsync of the WAL fails the write it covered (Errc::io, saying
// so). What the disk holds is then unknown (the kernel may have dropped the
// pages that failed), so every later write and flush fails too, with
// Errc::io saying to reopen, while reads keep serving. Reopened, the map
// works again and shows what was committed.
TEST(Sync, SqliteFailedWalSyncFailsEveryLaterWriteUntilReopened) {
  TempDir dir;
  {
    Map map{pmap::SqliteBackend(dir / "eio.db")};
    map.insert("before", "1").get();
    fail_wal_syncs = 1;
    try {
      map.insert("during", "2").get();
      ADD_FAILURE() << "the write was acknowledged although its fsync failed";
    } catch (const pmap::Error& e) {
      EXPECT_EQ(e.code(), pmap::Errc::io) << e.what();
      EXPECT_NE(std::string(e.what()).find("fsync of the WAL failed"), std::string::npos)
          << e.what();
    }
    EXPECT_EQ(fail_wal_syncs.load(), 0);
    for (int i = 0; i < 3; ++i) {
      try {
        map.insert("after", "3").get();
        ADD_FAILURE() << "a write after a failed fsync was acknowledged";
      } catch (const pmap::Error& e) {
        EXPECT_EQ(e.code(), pmap::Errc::io) << e.what();
        EXPECT_NE(std::string(e.what()).find("until it is reopened"), std::string::npos)
            << e.what();
      }
      EXPECT_EQ(map.get("after"), std::nullopt) << "a refused write leaves the cache as it was";
      EXPECT_THROW(map.flush().get(), pmap::Error) << "flush " << i;
    }
    EXPECT_EQ(map.get("before"), "1") << "reads keep serving";
    EXPECT_EQ(map.get("during"), "2") << "committed, so the cache keeps it";
    EXPECT_THROW(map.close().get(), pmap::Error);
  }
  Map map{pmap::SqliteBackend(dir / "eio.db")};
  EXPECT_EQ(map.get("before"), "1");
  EXPECT_EQ(map.get("during"), "2");
  EXPECT_EQ(map.get("after"), std::nullopt);
  map.insert("after", "3").get();  // reopened: writes work again
  EXPECT_EQ(map.get("after"), "3");
}

// The same with many writes in flight: once a WAL fsync fails, the writes it
// covered and every later one fail, and none of those is acknowledged; the
// cache stays equal to what the file holds.
TEST(Sync, SqliteFailedWalSyncUnderLoadFailsEveryLaterWrite) {
  TempDir dir;
  std::size_t cached = 0;
  std::vector<std::string> acknowledged;
  {
    Map map{pmap::SqliteBackend(dir / "eio2.db")};
    for (int i = 0; i < 100; ++i) map.insert("warm" + std::to_string(i), "v");
    fail_wal_syncs_off_writer = 1;
    std::vector<std::pair<std::string, pmap::Future<std::optional<std::string>>>> futures;
    std::size_t written = 0;
    while (fail_wal_syncs_off_writer.load() > 0 && written < 200000) {
      std::string key = "k" + std::to_string(written++);
      auto f = map.insert(key, "v");
      futures.emplace_back(std::move(key), std::move(f));
    }
    ASSERT_EQ(fail_wal_syncs_off_writer.load(), 0) << "no WAL fsync failed";
    for (int i = 0; i < 100; ++i) {
      std::string key = "late" + std::to_string(i);
      auto f = map.insert(key, "v");
      futures.emplace_back(std::move(key), std::move(f));
    }
    bool failed = false;
    for (auto& [key, f] : futures) {
      try {
        f.get();
        EXPECT_FALSE(failed) << key << " was acknowledged after an earlier write failed its fsync";
        acknowledged.push_back(key);
      } catch (const pmap::Error& e) {
        EXPECT_EQ(e.code(), pmap::Errc::io) << e.what();
        failed = true;
      }
    }
    EXPECT_TRUE(failed);
    EXPECT_THROW(map.flush().get(), pmap::Error);
    EXPECT_THROW(map.flush().get(), pmap::Error) << "every flush fails until reopened";
    cached = map.size();
  }
  Map map{pmap::SqliteBackend(dir / "eio2.db")};
  EXPECT_EQ(map.size(), cached) << "the cache differed from the file";
  for (const auto& key : acknowledged) EXPECT_TRUE(map.contains(key)) << key;
}

TEST(Sync, SqliteNormalSyncsOnlyOnFlush) {
  TempDir dir;
  Map map{pmap::SqliteBackend(dir / "normal.db", {.synchronous = pmap::Synchronous::normal})};
  const std::size_t before = syncs_of("normal.db-wal") + syncs_of("normal.db");
  for (int i = 0; i < 20; ++i) map.insert("k" + std::to_string(i), "v").get();
  EXPECT_EQ(syncs_of("normal.db-wal") + syncs_of("normal.db"), before)
      << "normal: commits are not fsynced one by one (a power loss may take the last ones)";
  map.flush().get();
  EXPECT_GT(syncs_of("normal.db-wal"), 0u) << "flush() must make the commits durable";
  EXPECT_GT(syncs_of("normal.db"), 0u) << "flush() checkpoints into the database file";
}

TEST(Sync, SqliteOffNeverSyncs) {
  TempDir dir;
  Map map{pmap::SqliteBackend(dir / "off.db", {.synchronous = pmap::Synchronous::off})};
  const std::size_t before = syncs_of("off.db-wal") + syncs_of("off.db");  // opening may sync
  for (int i = 0; i < 20; ++i) map.insert("k" + std::to_string(i), "v").get();
  map.flush().get();
  EXPECT_EQ(syncs_of("off.db-wal") + syncs_of("off.db"), before);
}

TEST(Sync, CsvSyncsEveryCommitBeforeItsAcknowledgement) {
  TempDir dir;
  Map map{pmap::CsvBackend(dir / "data.csv")};
  for (int i = 0; i < 20; ++i) {
    const std::size_t before = syncs_of("data.csv");
    map.insert("k" + std::to_string(i), "v").get();
    EXPECT_GT(syncs_of("data.csv"), before) << "write " << i << " was acknowledged before an fsync";
  }
}

// A compaction is a new file renamed over the old one: both the new file and
// the directory (for the rename) are synced before the old file is gone.
TEST(Sync, CsvCompactionSyncsTheNewFileAndTheDirectory) {
  TempDir dir;
  {
    Map map{pmap::CsvBackend(dir / "data.csv")};
    for (int i = 0; i < 10; ++i) map.insert("k", std::to_string(i)).get();  // dead rows
  }                                                                         // closing compacts
  EXPECT_GT(syncs_of("data.csv.pmap-tmp"), 0u);
  EXPECT_GT(syncs_of(dir.path().filename().string()), 0u) << "the directory was not synced";
}

}  // namespace
