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
#include <mutex>
#include <pmap/pmap.hpp>
#include <string>
#include <vector>

#include "../support/test_backend.hpp"

namespace {

std::mutex synced_mutex;
std::vector<std::string> synced;  // the path of each fsync'd file, in order

void record(int fd) {
  char buf[4096];
  const std::string link = "/proc/self/fd/" + std::to_string(fd);
  const ssize_t n = ::readlink(link.c_str(), buf, sizeof buf);
  std::lock_guard lock(synced_mutex);
  synced.emplace_back(n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "?");
}

template <class Fn>
Fn real(const char* name) {
  return reinterpret_cast<Fn>(::dlsym(RTLD_NEXT, name));
}

}  // namespace

extern "C" int fsync(int fd) {
  static const auto next = real<int (*)(int)>("fsync");
  record(fd);
  return next(fd);
}
extern "C" int fdatasync(int fd) {
  static const auto next = real<int (*)(int)>("fdatasync");
  record(fd);
  return next(fd);
}

namespace {

using Map = pmap::PersistentMap<std::string, std::string>;
using pmap_test::TempDir;

// Syncs so far of files whose path ends with suffix.
std::size_t syncs_of(const std::string& suffix) {
  std::lock_guard lock(synced_mutex);
  return static_cast<std::size_t>(
      std::count_if(synced.begin(), synced.end(), [&](const std::string& p) {
        return p.size() >= suffix.size() &&
               p.compare(p.size() - suffix.size(), suffix.size(), suffix) == 0;
      }));
}

TEST(Sync, SqliteFullSyncsTheWalBeforeEveryAcknowledgement) {
  TempDir dir;
  Map map{pmap::SqliteBackend(dir / "full.db")};  // the default: Synchronous::full
  for (int i = 0; i < 20; ++i) {
    const std::size_t before = syncs_of("full.db-wal");
    map.insert("k" + std::to_string(i), "v").get();
    EXPECT_GT(syncs_of("full.db-wal"), before)
        << "write " << i << " was acknowledged before an fsync";
  }
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
