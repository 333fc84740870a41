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
// (the map's sync thread).
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

// A write on its own is synced by the thread that committed it (a hop to the
// sync thread would only add a wake-up to its latency) — also after a burst
// that the sync thread handled.
TEST(Sync, SqliteLoneWriteIsSyncedByTheThreadThatCommittedIt) {
  TempDir dir;
  Map map{pmap::SqliteBackend(dir / "lone.db")};
  std::vector<pmap::Future<std::optional<std::string>>> burst;
  for (int i = 0; i < 2000; ++i) burst.push_back(map.insert("b" + std::to_string(i), "v"));
  for (auto& f : burst) f.get();
  for (int i = 0; i < 5; ++i) {
    // The sync thread completes a round's futures before it goes idle: let
    // it get there.
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    map.insert("lone" + std::to_string(i), "v").get();
    std::lock_guard lock(events_mutex);
    pid_t writer = 0, syncer = 0;
    for (const Event& e : events)
      if (e.path.ends_with("lone.db-wal")) (e.sync ? syncer : writer) = e.thread;
    EXPECT_NE(writer, 0);
    EXPECT_EQ(syncer, writer) << "lone write " << i << " was synced on another thread";
  }
}

// A failed fsync of the WAL fails the writes it covered (Errc::io, saying
// so), and the next flush; those writes stay committed — the cache and the
// file show them — and later writes work.
TEST(Sync, SqliteFailedWalSyncFailsTheWritesItCovered) {
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
    EXPECT_THROW(map.flush().get(), pmap::Error) << "flush reports the failure once";
    map.flush().get();
    EXPECT_EQ(map.get("during"), "2") << "committed, so the cache keeps it";
    map.insert("after", "3").get();
  }
  Map map{pmap::SqliteBackend(dir / "eio.db")};
  EXPECT_EQ(map.get("before"), "1");
  EXPECT_EQ(map.get("during"), "2");
  EXPECT_EQ(map.get("after"), "3");
}

// The same when the sync thread's fsync fails: writes keep arriving while
// groups commit (a group with nothing behind it is synced by the writer
// itself), until a WAL fsync on the sync thread has failed.
TEST(Sync, SqliteFailedWalSyncOnTheSyncThreadFailsItsGroups) {
  TempDir dir;
  std::size_t written = 0;
  {
    Map map{pmap::SqliteBackend(dir / "eio2.db")};
    fail_wal_syncs_off_writer = 1;
    std::vector<pmap::Future<std::optional<std::string>>> futures;
    while (fail_wal_syncs_off_writer.load() > 0 && written < 200000)
      futures.push_back(map.insert("k" + std::to_string(written++), "v"));
    ASSERT_EQ(fail_wal_syncs_off_writer.load(), 0) << "no WAL fsync was made on the sync thread";
    int failed = 0;
    for (auto& f : futures) {
      try {
        f.get();
      } catch (const pmap::Error& e) {
        EXPECT_EQ(e.code(), pmap::Errc::io) << e.what();
        ++failed;
      }
    }
    EXPECT_GT(failed, 0);
    EXPECT_THROW(map.flush().get(), pmap::Error);
    map.flush().get();
    EXPECT_EQ(map.size(), written);
  }
  Map map{pmap::SqliteBackend(dir / "eio2.db")};
  EXPECT_EQ(map.size(), written);
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
