// I/O faults under the SQLite and CSV backends: a full disk (a real,
// size-limited tmpfs), a file size limit (RLIMIT_FSIZE), read-only and
// unreadable files, a read-only file system, and a file deleted, moved,
// truncated or replaced by another program while the map has it open.
//
// Each must give a pmap::Error that names the file and says what to do, keep
// every acknowledged write, and let the map write again once the fault is
// gone — or say clearly that it cannot.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>

#include "../support/test_backend.hpp"
#include "pmap/pmap.hpp"

namespace {

using Map = pmap::PersistentMap<std::string, std::string>;
using pmap_test::slurp;
using pmap_test::TempDir;
namespace fs = std::filesystem;

// ---- fault makers ------------------------------------------------------------

// A tmpfs of a few MiB mounted on a temp dir (needs root, as CI runs): a real
// "No space left on device". fill() takes all its space with a ballast file;
// free_space() deletes it. ballast() takes some, under a name, for
// free_space(name) to give back.
class SmallFs {
 public:
  explicit SmallFs(std::size_t bytes, std::size_t inodes = 0) {
    std::string options = "size=" + std::to_string(bytes) + ",mode=0777";
    if (inodes > 0) options += ",nr_inodes=" + std::to_string(inodes);
    if (::mount("pmap-test", dir_.path().c_str(), "tmpfs", 0, options.c_str()) == 0)
      mounted_ = true;
    else
      why_ = std::strerror(errno);
  }
  ~SmallFs() {
    if (mounted_) ::umount2(dir_.path().c_str(), MNT_DETACH);
  }
  bool mounted() const { return mounted_; }
  const std::string& why_not() const { return why_; }
  fs::path operator/(const std::string& name) const { return dir_ / name; }

  void fill() {
    std::ofstream ballast(dir_ / "ballast", std::ios::binary);
    const std::string chunk(1 << 16, 'b');
    while (ballast.write(chunk.data(), static_cast<std::streamsize>(chunk.size()))) {
    }
    ballast.close();
    // What a 64 KiB write could not place, a byte at a time.
    std::ofstream tail(dir_ / "ballast", std::ios::binary | std::ios::app);
    while (tail.put('b') && tail.flush()) {
    }
  }
  std::size_t free_bytes() const {
    struct statvfs st {};
    ::statvfs(dir_.path().c_str(), &st);
    return static_cast<std::size_t>(st.f_bavail) * st.f_frsize;
  }
  void free_space(const std::string& name = "ballast") { fs::remove(dir_ / name); }
  // Creates empty files until no inode is left (for a tmpfs with nr_inodes).
  void use_up_inodes() {
    for (int i = 0; i < 100000; ++i) {
      const fs::path f = dir_ / ("inode-" + std::to_string(i));
      const int fd = ::open(f.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
      if (fd < 0) {
        ASSERT_EQ(errno, ENOSPC) << std::strerror(errno);
        return;
      }
      ::close(fd);
      inode_files_.push_back(f);
    }
    FAIL() << "the inodes never ran out";
  }
  void free_inodes() {
    for (const auto& f : inode_files_) fs::remove(f);
    inode_files_.clear();
  }
  void ballast(const std::string& name, std::size_t bytes) {
    std::ofstream(dir_ / name, std::ios::binary) << std::string(bytes, 'b');
    ASSERT_EQ(fs::file_size(dir_ / name), bytes) << "no room for the ballast " << name;
  }
  // Remounts read-only (no file may be open for writing).
  bool remount_read_only() {
    return ::mount("pmap-test", dir_.path().c_str(), "tmpfs", MS_REMOUNT | MS_RDONLY, nullptr) == 0;
  }

 private:
  TempDir dir_;
  std::vector<fs::path> inode_files_;
  bool mounted_ = false;
  std::string why_;
};

// RLIMIT_FSIZE for this process: writes past `bytes` fail with EFBIG (the
// signal that would kill the process is ignored meanwhile).
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    ::getrlimit(RLIMIT_FSIZE, &old_);
    old_handler_ = ::signal(SIGXFSZ, SIG_IGN);
    rlimit limit = old_;
    limit.rlim_cur = bytes;
    ::setrlimit(RLIMIT_FSIZE, &limit);
  }
  ~FileSizeLimit() { lift(); }
  void lift() {
    if (lifted_) return;
    ::setrlimit(RLIMIT_FSIZE, &old_);
    ::signal(SIGXFSZ, old_handler_);
    lifted_ = true;
  }

 private:
  rlimit old_{};
  sighandler_t old_handler_ = SIG_DFL;
  bool lifted_ = false;
};

// What happened when f ran as a user without root's override of file
// permissions: as "nobody" in a child process when we are root (CI), else
// right here.
struct Outcome {
  bool threw = false;
  pmap::Errc code = pmap::Errc::backend;
  std::string message;
};
Outcome run_unprivileged(const std::function<void()>& f) {
  auto attempt = [&] {
    Outcome o;
    try {
      f();
    } catch (const pmap::Error& e) {
      o = {true, e.code(), e.what()};
    } catch (const std::exception& e) {
      o = {true, pmap::Errc::backend, std::string("not a pmap::Error: ") + e.what()};
    }
    return o;
  };
  if (::geteuid() != 0) return attempt();
  int pipe_fds[2];
  if (::pipe(pipe_fds) != 0) return {true, pmap::Errc::backend, "pipe failed"};
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(pipe_fds[0]);
    constexpr uid_t kNobody = 65534;
    if (::setgid(kNobody) != 0 || ::setuid(kNobody) != 0) ::_exit(3);
    const Outcome o = attempt();
    const std::string out = std::string(o.threw ? "1" : "0") +
                            static_cast<char>('0' + static_cast<int>(o.code)) + o.message;
    (void)!::write(pipe_fds[1], out.data(), out.size());
    ::_exit(0);
  }
  ::close(pipe_fds[1]);
  std::string in;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(pipe_fds[0], buf, sizeof buf)) > 0)
    in.append(buf, static_cast<std::size_t>(n));
  ::close(pipe_fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || in.size() < 2)
    return {true, pmap::Errc::backend,
            "the unprivileged child failed, status " + std::to_string(status)};
  return {in[0] == '1', static_cast<pmap::Errc>(in[1] - '0'), in.substr(2)};
}

// ---- the maps under test ---------------------------------------------------------

class IoFaults : public ::testing::TestWithParam<std::string> {
 protected:
  bool csv() const { return GetParam() == "csv"; }
  fs::path file_in(const fs::path& dir) const { return dir / (csv() ? "data.csv" : "data.db"); }
  std::unique_ptr<Map> open(const fs::path& file, pmap::Options options = {}) const {
    if (csv()) return std::make_unique<Map>(pmap::CsvBackend(file), std::move(options));
    return std::make_unique<Map>(pmap::SqliteBackend(file), std::move(options));
  }
  // The files the backend keeps beside its data file.
  std::vector<fs::path> companions(const fs::path& file) const {
    if (csv()) return {file.string() + ".pmap-lock"};
    return {file.string() + "-wal", file.string() + "-shm", file.string() + "-kv.pmap-lock"};
  }
  // A file with some entries, in a directory anyone may write; its lock
  // file (kept between opens) open to anyone too.
  fs::path shared_file(const TempDir& dir) const {
    const fs::path sub = dir / "shared";
    fs::create_directories(sub);
    fs::permissions(dir.path(), fs::perms::all);
    fs::permissions(sub, fs::perms::all);
    const fs::path file = file_in(sub);
    {
      auto map = open(file);
      for (int i = 0; i < 10; ++i) map->insert("key-" + std::to_string(i), "v").get();
    }
    for (const auto& f : companions(file))
      if (fs::exists(f)) fs::permissions(f, fs::perms::all);
    return file;
  }
  // Every entry of the file, read by a fresh map.
  std::map<std::string, std::string> contents(const fs::path& file) const {
    auto map = open(file);
    std::map<std::string, std::string> out;
    for (auto& [k, v] : map->snapshot()) out.emplace(std::move(k), std::move(v));
    return out;
  }
};

using pmap_test::Reports;

std::string key(int i) { return "key-" + std::to_string(i); }
std::string value(int i) { return "value " + std::to_string(i) + std::string(100, '.'); }

// Each of parts appears in the message what.
void expect_mentions(const std::string& what, std::initializer_list<std::string> parts) {
  for (const auto& part : parts)
    EXPECT_NE(what.find(part), std::string::npos) << "no \"" << part << "\" in: " << what;
}

// f must throw a pmap::Error of code whose message mentions each of parts
// (if_not: what it means when f does not throw). Returns the message.
std::string expect_error(const std::function<void()>& f, pmap::Errc code,
                         std::initializer_list<std::string> parts, const std::string& if_not) {
  try {
    f();
  } catch (const pmap::Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    expect_mentions(e.what(), parts);
    return e.what();
  }
  ADD_FAILURE() << if_not;
  return "";
}

// Inserts key(i) = value(i) for i < n, each awaited, and records it.
void insert_acked(Map& map, std::map<std::string, std::string>& acked, int n) {
  for (int i = 0; i < n; ++i) {
    map.insert(key(i), value(i)).get();
    acked[key(i)] = value(i);
  }
}

// Writes until the fault makes a write fail; returns the failure and its key.
// Every write before it was acknowledged and is added to `acked`.
std::pair<std::optional<pmap::Error>, std::string> write_until_refused(
    Map& map, std::map<std::string, std::string>& acked, std::size_t value_size) {
  for (int i = 0; i < 5000; ++i) {
    const std::string k = "big-" + std::to_string(i);
    const std::string v(value_size, static_cast<char>('a' + i % 26));
    try {
      map.insert(k, v).get();
      acked[k] = v;
    } catch (const pmap::Error& e) {
      return {e, k};
    }
  }
  return {std::nullopt, ""};
}

// After a write failed on a full disk or a size limit: the map shows what
// the backend holds, reports the failure once more from flush(), writes again
// when the fault is gone, and a reopened map holds every acknowledged write.
void expect_recovery(Map& map, std::map<std::string, std::string>& acked,
                     const std::string& failed_key, const std::function<void()>& clear_fault) {
  EXPECT_FALSE(map.get(failed_key).has_value()) << "the failed write must leave the cache";
  for (const auto& [k, v] : acked) ASSERT_EQ(map.get(k), v) << k;
  EXPECT_THROW(map.flush().get(), pmap::Error)
      << "flush() reports the failure since the last flush";
  clear_fault();
  map.insert(failed_key, "written once there was room").get();
  acked[failed_key] = "written once there was room";
  map.erase("key-0").get();
  acked.erase("key-0");
  map.flush().get();
  map.close().get();
}

// ---- disk full ---------------------------------------------------------------

TEST_P(IoFaults, DiskFullFailsTheWriteClearlyKeepsAcknowledgedDataAndRecovers) {
  SmallFs disk(4 << 20);
  if (!disk.mounted())
    GTEST_SKIP() << "cannot mount a tmpfs here (" << disk.why_not()
                 << "; needs root): FileSizeLimit covers the same path";
  const fs::path file = file_in(disk / "");
  std::map<std::string, std::string> acked;
  {
    auto map = open(file);
    insert_acked(*map, acked, 50);
    disk.fill();
    ASSERT_LT(disk.free_bytes(), 8192u);
    auto [failure, failed_key] = write_until_refused(*map, acked, 4000);
    ASSERT_TRUE(failure.has_value()) << "5000 writes of 4 KB fitted on a full 4 MiB disk";
    EXPECT_EQ(failure->code(), pmap::Errc::io) << failure->what();
    expect_mentions(failure->what(), {file.string(), "free some"});
    // SQLite says "database or disk is full" and keeps errno to itself.
    const std::string what = failure->what();
    EXPECT_TRUE(what.find("No space left on device") != std::string::npos ||
                what.find("disk is full") != std::string::npos)
        << what;
    std::printf("  disk full after %zu acknowledged writes: %s\n", acked.size(), failure->what());
    expect_recovery(*map, acked, failed_key, [&] { disk.free_space(); });
  }
  EXPECT_EQ(contents(file), acked);
}

// The map is closed (the destructor runs) while the disk is still full:
// nothing acknowledged is lost, and the file still opens.
TEST_P(IoFaults, ClosingOnAFullDiskLosesNothing) {
  SmallFs disk(4 << 20);
  if (!disk.mounted()) GTEST_SKIP() << "cannot mount a tmpfs here (" << disk.why_not() << ")";
  const fs::path file = file_in(disk / "");
  std::map<std::string, std::string> acked;
  Reports reports;
  {
    auto map = open(file, reports.options());
    for (int i = 0; i < 200; ++i) {  // updates: the CSV file wants compacting at close
      map->insert(key(i % 20), value(i)).get();
      acked[key(i % 20)] = value(i);
    }
    disk.fill();
    auto [failure, failed_key] = write_until_refused(*map, acked, 4000);
    ASSERT_TRUE(failure.has_value());
    EXPECT_THROW(map->close().get(), pmap::Error);  // reports the failed write
  }
  // The compaction at close could not run: told once, and no copy left.
  EXPECT_EQ(reports.mentioning("not compacted at close").size(), csv() ? 1u : 0u);
  EXPECT_FALSE(fs::exists(file.string() + ".pmap-tmp"));
  disk.free_space();
  EXPECT_EQ(contents(file), acked);
}

// Updates 500 keys of 4 KB (2 MB live), each awaited, until the disk is
// full: a CSV file of mostly dead rows, which compaction would shrink.
// Returns the failure.
std::optional<pmap::Error> update_until_refused(Map& map,
                                                std::map<std::string, std::string>& acked) {
  for (int i = 0; i < 5000; ++i) {
    const std::string k = key(i % 500), v(4000, static_cast<char>('a' + i % 26));
    try {
      map.insert(k, v).get();
      acked[k] = v;
    } catch (const pmap::Error& e) {
      return e;
    }
  }
  return std::nullopt;
}

std::map<std::string, std::string> entries_of(const Map& map) {
  std::map<std::string, std::string> out;
  for (auto& [k, v] : map.snapshot()) out.emplace(std::move(k), std::move(v));
  return out;
}

// Issue 13's scenario: a store written until its disk was full; a little
// space freed (less than the file's size); the application restarts. It
// opens from the file as it is, serves reads, writes what fits and refuses,
// changing nothing, what does not; the CSV backend reports the compaction
// it skipped once; with room again, the next compaction runs.
TEST_P(IoFaults, FullDiskOpensAsItIsServesReadsAndWritesWhatFits) {
  SmallFs disk(8 << 20);
  if (!disk.mounted()) GTEST_SKIP() << "cannot mount a tmpfs here (" << disk.why_not() << ")";
  const fs::path file = file_in(disk / ""), tmp = file.string() + ".pmap-tmp";
  disk.ballast("spare", 256 << 10);  // freed before the restart
  disk.ballast("room", 3 << 20);     // freed at the end
  std::map<std::string, std::string> acked;
  {
    auto map = open(file);
    const auto failure = update_until_refused(*map, acked);
    ASSERT_TRUE(failure.has_value()) << "the disk never filled";
    EXPECT_EQ(failure->code(), pmap::Errc::io) << failure->what();
    disk.fill();  // what the refused write left
    EXPECT_THROW(map->flush().get(), pmap::Error);
  }
  disk.free_space("spare");
  std::uintmax_t stored = fs::file_size(file);  // SQLite: the database and its WAL
  for (const auto& f : companions(file))
    if (f.string().ends_with("-wal")) stored += fs::file_size(f);
  ASSERT_LT(disk.free_bytes(), stored) << "freed more than the store's size";
  Reports reports;
  {
    auto map = open(file, reports.options());
    EXPECT_EQ(entries_of(*map), acked);
    EXPECT_FALSE(fs::exists(tmp)) << "a failed compaction left its copy behind";
    map->insert("fits", "a small value").get();
    acked["fits"] = "a small value";
    const std::string huge(disk.free_bytes() + (64 << 10), 'h');
    expect_error([&] { map->insert("huge", huge).get(); }, pmap::Errc::io, {file.string()},
                 "a write larger than the free space succeeded");
    EXPECT_FALSE(map->get("huge").has_value());
    EXPECT_THROW(map->flush().get(), pmap::Error);
  }
  EXPECT_FALSE(fs::exists(tmp)) << "a failed compaction at close left its copy behind";
  const auto skipped = reports.mentioning("not compacted");
  if (csv()) {
    // At open, and again at close: reported once.
    ASSERT_EQ(skipped.size(), 1u) << "reports: " << reports.count();
    expect_mentions(skipped[0], {file.string(), "at open", "free some disk space", "data is safe"});
    std::printf("  %s\n", skipped[0].c_str());
  } else {
    EXPECT_TRUE(skipped.empty()) << skipped[0];
  }
  EXPECT_EQ(reports.count(), skipped.size()) << "on_error heard of something else";
  EXPECT_EQ(contents(file), acked) << "the refused write changed the file";

  disk.free_space("room");
  disk.free_space();
  Reports after;
  {
    auto map = open(file, after.options());
    EXPECT_EQ(entries_of(*map), acked);
  }
  EXPECT_EQ(after.count(), 0u) << after.mentioning("")[0];
  if (csv()) {
    const std::string text = slurp(file);
    EXPECT_EQ(text.find("#pmap-batch"), std::string::npos) << "not compacted with room again";
    EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1 + static_cast<long>(acked.size()));
  }
  EXPECT_EQ(contents(file), acked);
}

// The file system is full at open, to the last byte: the store still opens
// and serves reads; writes fail with Errc::io and change nothing.
TEST_P(IoFaults, FullDiskToTheLastByteStillOpensForReading) {
  SmallFs disk(4 << 20);
  if (!disk.mounted()) GTEST_SKIP() << "cannot mount a tmpfs here (" << disk.why_not() << ")";
  const fs::path file = file_in(disk / "");
  std::map<std::string, std::string> acked;
  {
    auto map = open(file);
    for (int i = 0; i < 300; ++i) {  // dead rows: the CSV file wants compacting
      map->insert(key(i % 30), value(i)).get();
      acked[key(i % 30)] = value(i);
    }
  }
  if (csv()) {  // rows that repeat the last ones: the same data, not compact
    std::ofstream out(file, std::ios::app);
    for (const auto& [k, v] : acked) out << k << ',' << v << '\n';
  }
  const std::string before = slurp(file);
  disk.fill();
  ASSERT_EQ(disk.free_bytes(), 0u);
  Reports reports;
  {
    auto map = open(file, reports.options());
    EXPECT_EQ(entries_of(*map), acked);
    expect_error([&] { map->insert("new", std::string(8192, 'n')).get(); }, pmap::Errc::io,
                 {file.string()}, "a write succeeded on a full disk");
    EXPECT_FALSE(map->get("new").has_value());
    EXPECT_THROW(map->close().get(), pmap::Error);
  }
  EXPECT_EQ(reports.mentioning("not compacted").size(), csv() ? 1u : 0u);
  EXPECT_FALSE(fs::exists(file.string() + ".pmap-tmp"));
  if (csv()) {
    EXPECT_EQ(slurp(file), before) << "the refused write changed the file";
  }
  disk.free_space();
  EXPECT_EQ(contents(file), acked);
}

// ---- a file size limit ----------------------------------------------------------

TEST_P(IoFaults, FileSizeLimitFailsTheWriteClearlyKeepsAcknowledgedDataAndRecovers) {
  TempDir dir;
  const fs::path file = file_in(dir.path());
  std::map<std::string, std::string> acked;
  {
    auto map = open(file);
    insert_acked(*map, acked, 50);
    std::uintmax_t largest = fs::file_size(file);
    for (const auto& f : companions(file))
      if (fs::exists(f)) largest = std::max(largest, fs::file_size(f));
    FileSizeLimit limit(largest + (64 << 10));
    auto [failure, failed_key] = write_until_refused(*map, acked, 4000);
    ASSERT_TRUE(failure.has_value()) << "the size limit never stopped a write";
    EXPECT_EQ(failure->code(), pmap::Errc::io) << failure->what();
    expect_mentions(failure->what(), {file.string()});
    // SQLite reports "disk I/O error" and keeps the errno of a WAL write to
    // itself; the backend says which I/O failed and what to check.
    const std::string what = failure->what();
    EXPECT_TRUE(what.find("File too large") != std::string::npos ||
                (what.find("a write to the database or its WAL failed") != std::string::npos &&
                 what.find("size limit") != std::string::npos))
        << what;
    std::printf("  size limit hit after %zu acknowledged writes: %s\n", acked.size(),
                failure->what());
    expect_recovery(*map, acked, failed_key, [&] { limit.lift(); });
  }
  EXPECT_EQ(contents(file), acked);
}

// ---- permissions -------------------------------------------------------------

TEST_P(IoFaults, ReadOnlyFileIsRefusedAndLeftUntouched) {
  TempDir dir;
  const fs::path file = shared_file(dir);
  fs::permissions(file, fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read);
  const std::string before = slurp(file);
  const Outcome o = run_unprivileged([&] {
    auto map = open(file);
    map->insert("new", "value").get();
  });
  ASSERT_TRUE(o.threw) << "a read-only file was opened and written";
  EXPECT_EQ(o.code, pmap::Errc::io) << o.message;
  expect_mentions(o.message, {file.string(), "permissions"});
  EXPECT_EQ(slurp(file), before) << "the read-only file was changed";
  std::printf("  %s\n", o.message.c_str());
}

TEST_P(IoFaults, UnreadableFileIsPermissionDeniedAndLeftUntouched) {
  TempDir dir;
  const fs::path file = shared_file(dir);
  const std::string before = slurp(file);
  // Root (CI) owns the file and runs the map as nobody; anyone else takes
  // their own permission away.
  fs::permissions(
      file, ::geteuid() == 0 ? fs::perms::owner_read | fs::perms::owner_write : fs::perms::none);
  const Outcome o = run_unprivileged([&] { auto map = open(file); });
  fs::permissions(file, fs::perms::owner_read | fs::perms::owner_write);
  ASSERT_TRUE(o.threw) << "an unreadable file was opened";
  EXPECT_EQ(o.code, pmap::Errc::io) << o.message;
  expect_mentions(o.message, {file.string(), "Permission denied", "permissions"});
  EXPECT_EQ(slurp(file), before);
  std::printf("  %s\n", o.message.c_str());
}

TEST_P(IoFaults, ReadOnlyFileSystemIsRefusedClearly) {
  SmallFs disk(4 << 20);
  if (!disk.mounted()) GTEST_SKIP() << "cannot mount a tmpfs here (" << disk.why_not() << ")";
  const fs::path file = file_in(disk / "");
  {
    auto map = open(file);
    map->insert("a", "1").get();
  }
  ASSERT_TRUE(disk.remount_read_only()) << std::strerror(errno);
  const std::string message =
      expect_error([&] { open(file); }, pmap::Errc::io, {"Read-only file system", file.string()},
                   "opened a map on a read-only file system");
  std::printf("  %s\n", message.c_str());
}

// ---- the file changed underneath ---------------------------------------------------

// Moved away: writes are refused (not lost into the moved file's old name);
// moved back: writes go on, and nothing acknowledged is missing.
TEST_P(IoFaults, FileMovedAwayRefusesWritesUntilPutBack) {
  TempDir dir;
  const fs::path file = file_in(dir.path()), away = dir / "moved";
  std::map<std::string, std::string> acked;
  {
    auto map = open(file);
    insert_acked(*map, acked, 20);
    fs::rename(file, away);
    expect_error([&] { map->insert("while-away", "x").get(); }, pmap::Errc::io,
                 {"deleted or moved away", "Put the file back"},
                 "a write went into a file moved away");
    EXPECT_FALSE(map->get("while-away").has_value());
    EXPECT_FALSE(fs::exists(file)) << "the map recreated the file";
    fs::rename(away, file);
    EXPECT_THROW(map->flush().get(), pmap::Error);  // reports the refused write once
    map->insert("after", "y").get();
    acked["after"] = "y";
  }
  EXPECT_EQ(contents(file), acked);
}

TEST_P(IoFaults, FileDeletedRefusesWritesKeepsMemoryAndIsNotRecreated) {
  TempDir dir;
  const fs::path file = file_in(dir.path());
  std::map<std::string, std::string> acked;
  {
    auto map = open(file);
    insert_acked(*map, acked, 20);
    fs::remove(file);
    for (int attempt = 0; attempt < 2; ++attempt) {  // and it stays refused
      expect_error([&] { map->insert("after-delete", "x").get(); }, pmap::Errc::io, {"snapshot()"},
                   "a write went into a deleted file");
    }
    std::map<std::string, std::string> in_memory;
    for (auto& [k, v] : map->snapshot()) in_memory.emplace(k, v);
    EXPECT_EQ(in_memory, acked) << "every acknowledged entry is still in memory";
    EXPECT_THROW(map->close().get(), pmap::Error);
  }
  EXPECT_FALSE(fs::exists(file)) << "closing recreated a file someone deleted";
}

TEST_P(IoFaults, FileTruncatedRefusesWritesWithACorruptError) {
  TempDir dir;
  const fs::path file = file_in(dir.path());
  for (int i = 0; i < 200; ++i)
    open(file)->insert(key(i), value(i)).get();  // closed: all in the file
  auto map = open(file);
  ASSERT_GT(fs::file_size(file), 4096u);
  fs::resize_file(file, csv() ? 100 : 4096);
  const std::string truncated = slurp(file);
  expect_error([&] { map->insert("after-truncate", "x").get(); }, pmap::Errc::corrupt,
               {"truncated by another program", file.string()},
               "a write went on after the file was truncated");
  EXPECT_EQ(map->get(key(7)), value(7));  // reads go on from memory
  EXPECT_THROW(map->close().get(), pmap::Error);
  map.reset();
  EXPECT_EQ(slurp(file), truncated) << "closing rewrote a file another program truncated";
}

// After a write refused on a truncated file, the cache is repaired from the
// refused writes' own undo records, not by reading the damaged file back: it
// holds every committed entry, as the error message promises
// ("snapshot() copies it out").
TEST_P(IoFaults, TruncatedFileRepairsTheCacheWithoutReadingIt) {
  TempDir dir;
  const fs::path file = file_in(dir.path());
  std::map<std::string, std::string> committed;
  {
    auto map = open(file);
    insert_acked(*map, committed, 200);
  }
  Reports reports;
  {
    auto map = open(file, reports.options());
    fs::resize_file(file, csv() ? 100 : 4096);
    for (auto refused : {std::function<void()>([&] { map->insert(key(7), "changed").get(); }),
                         std::function<void()>([&] { map->erase(key(8)).get(); }),
                         std::function<void()>([&] { map->insert("new", "x").get(); })})
      EXPECT_THROW(refused(), pmap::Error);
    EXPECT_EQ(map->get(key(7)), value(7));
    EXPECT_EQ(map->get(key(8)), value(8));
    EXPECT_FALSE(map->contains("new"));
    EXPECT_EQ(entries_of(*map), committed);
    EXPECT_THROW(map->close().get(), pmap::Error);
  }
  EXPECT_TRUE(reports.mentioning("read back").empty()) << reports.mentioning("read back")[0];
}

// Replaced (as an editor saves: write a new file, rename it over): writes
// are refused, and closing does not overwrite the other program's file.
TEST_P(IoFaults, FileReplacedByAnotherProgramIsNeverOverwritten) {
  TempDir dir;
  const fs::path file = file_in(dir.path());
  auto map = open(file);
  for (int i = 0; i < 100; ++i) map->insert(key(i % 10), value(i)).get();
  const fs::path other = dir / "other";
  {
    auto other_map = open(other);
    other_map->insert("edited", "by hand").get();
  }
  fs::rename(other, file);
  const std::string replacement = slurp(file);
  expect_error([&] { map->insert("after-replace", "x").get(); }, pmap::Errc::io,
               {"replaced by another program"}, "a write went on after the file was replaced");
  EXPECT_THROW(map->close().get(), pmap::Error);
  map.reset();
  EXPECT_EQ(slurp(file), replacement) << "the map overwrote another program's file";
}

// ---- CSV: a directory the process may not write -----------------------------------

// No lock file can be created, and no compacted copy: the store still opens
// (locking the file itself), serves reads, appends, keeps a second opener
// out, and says once why it did not compact. The hand-written file ends
// without a line end: the first append starts a new line.
TEST(CsvFiles, ReadOnlyDirectoryOpensLocksTheFileItselfAndAppends) {
  TempDir dir;
  const fs::path sub = dir / "read-only", file = sub / "data.csv";
  fs::create_directories(sub);
  std::ofstream(file) << "key,value\na,1\na,2\nb,3";  // not compact; no final line end
  fs::permissions(file, fs::perms::all & ~fs::perms::owner_exec & ~fs::perms::group_exec &
                            ~fs::perms::others_exec);
  fs::permissions(dir.path(), fs::perms::all);
  fs::permissions(sub, fs::perms::owner_read | fs::perms::owner_exec | fs::perms::group_read |
                           fs::perms::group_exec | fs::perms::others_read | fs::perms::others_exec);
  const Outcome o = run_unprivileged([&] {
    const auto check = [](bool ok, const std::string& what) {
      if (!ok) throw std::runtime_error(what);
    };
    Reports reports;
    {
      Map map{pmap::CsvBackend(file), reports.options()};
      check(map.get("a") == "2" && map.get("b") == "3", "the file did not load");
      map.insert("c", "4").get();
      try {
        Map second{pmap::CsvBackend(file)};
        check(false, "a second opener got in");
      } catch (const pmap::Error& e) {
        check(e.code() == pmap::Errc::locked, std::string("second opener: ") + e.what());
      }
    }
    const auto skipped = reports.mentioning("not compacted at open");
    check(skipped.size() == 1 && skipped[0].find("could not be created") != std::string::npos,
          "the skipped compaction was not reported once, with its reason");
    Map reopened{pmap::CsvBackend(file)};
    check(reopened.get("c") == "4" && reopened.get("b") == "3" && reopened.size() == 3,
          "the append did not survive a reopen");
  });
  EXPECT_FALSE(o.threw) << o.message;
  EXPECT_FALSE(fs::exists(file.string() + ".pmap-lock"));
  EXPECT_FALSE(fs::exists(file.string() + ".pmap-tmp"));
  EXPECT_NE(slurp(file).find("b,3\n#pmap-batch"), std::string::npos) << slurp(file);
}

// An opener that could create its lock file and one that could not (no free
// inode: ENOSPC, even for root) and locked the data file instead keep each
// other out, whichever came first.
TEST(CsvFiles, LockFileAndDataFileLocksExcludeEachOther) {
  SmallFs disk(1 << 20, /*inodes=*/64);
  if (!disk.mounted()) GTEST_SKIP() << "cannot mount a tmpfs here (" << disk.why_not() << ")";
  const fs::path file = disk / "data.csv", lock_file = file.string() + ".pmap-lock";
  std::ofstream(file) << "key,value\na,1\n";
  const auto expect_locked_out = [&] {
    expect_error([&] { Map other{pmap::CsvBackend(file)}; }, pmap::Errc::locked,
                 {file.string(), "itself locked"}, "a second opener got in");
  };
  {
    Map holder{pmap::CsvBackend(file)};  // with its lock file
    fs::remove(lock_file);               // as if the newcomer could not see it ...
    disk.use_up_inodes();                // ... nor create one
    expect_locked_out();
    disk.free_inodes();
  }
  fs::remove(lock_file);
  disk.use_up_inodes();
  Map holder{pmap::CsvBackend(file)};  // no lock file: the data file is locked
  EXPECT_FALSE(fs::exists(lock_file));
  holder.insert("b", "2").get();
  disk.free_inodes();
  expect_locked_out();  // it creates the lock file, but not the data file's lock
}

// A file size limit (EFBIG) below the compacted copy's size: the open
// compacts nothing, reports it once, and serves every entry.
TEST(CsvFiles, FileSizeLimitSkipsCompactionAtOpen) {
  TempDir dir;
  const fs::path file = dir / "data.csv";
  std::map<std::string, std::string> acked;
  {
    std::ofstream out(file);
    out << "key,value\n";
    for (int round = 0; round < 3; ++round)  // dead rows: worth compacting
      for (int i = 0; i < 100; ++i) {
        acked[key(i)] = value(i) + std::to_string(round);
        out << key(i) << ',' << acked[key(i)] << '\n';
      }
  }
  const std::string before = slurp(file);
  Reports reports;
  {
    FileSizeLimit limit(4096);  // the compacted copy is about 12 KB
    Map map{pmap::CsvBackend(file), reports.options()};
    EXPECT_EQ(entries_of(map), acked);
    limit.lift();
  }
  const auto skipped = reports.mentioning("not compacted at open");
  ASSERT_EQ(skipped.size(), 1u);
  expect_mentions(skipped[0], {"File too large", file.string()});
  EXPECT_FALSE(fs::exists(file.string() + ".pmap-tmp"));
  EXPECT_NE(slurp(file), before) << "closing (with the limit lifted) compacts it";
  Map reopened{pmap::CsvBackend(file)};
  EXPECT_EQ(entries_of(reopened), acked);
}

// A batch torn by a crash ends the file, and the disk is full so the open
// cannot compact it away: it is cut off before the first append, which
// would otherwise land inside the torn batch's announced length.
TEST(CsvFiles, TornBatchIsCutOffWhenTheFileCannotBeCompacted) {
  SmallFs disk(1 << 20);
  if (!disk.mounted()) GTEST_SKIP() << "cannot mount a tmpfs here (" << disk.why_not() << ")";
  const fs::path file = disk / "data.csv";
  std::ofstream(file) << "key,value\na,1\na,2\n#pmap-batch 40\nb,";  // 40 bytes announced
  disk.fill();  // an append still fits in the file's last page; a copy does not
  {
    Map map{pmap::CsvBackend(file), Reports().options()};
    EXPECT_EQ(map.get("a"), "2");
    map.insert("c", "3").get();
  }
  disk.free_space();
  EXPECT_EQ(slurp(file).find("b,"), std::string::npos);
  Map reopened{pmap::CsvBackend(file)};
  EXPECT_EQ(reopened.size(), 2u);
  EXPECT_EQ(reopened.get("c"), "3");
}

// clear() on a full disk: the file is cut back to its header in place,
// which needs no free space.
TEST(CsvFiles, ClearNeedsNoFreeSpace) {
  SmallFs disk(1 << 20);
  if (!disk.mounted()) GTEST_SKIP() << "cannot mount a tmpfs here (" << disk.why_not() << ")";
  const fs::path file = disk / "data.csv";
  {
    Map map{pmap::CsvBackend(file)};
    for (int i = 0; i < 100; ++i) map.insert(key(i), value(i)).get();
  }
  disk.fill();
  {
    Map map{pmap::CsvBackend(file)};
    map.clear().get();
    EXPECT_EQ(map.size(), 0u);
    map.insert("after", "clear").get();
  }
  EXPECT_EQ(slurp(file).substr(0, 10), "key,value\n");
  Map reopened{pmap::CsvBackend(file)};
  EXPECT_EQ(reopened.size(), 1u);
  EXPECT_EQ(reopened.get("after"), "clear");
}

// ---- SQLite's other files, and SQLite's own changes -------------------------------

using SqliteMap = pmap::PersistentMap<std::string, std::string>;

// Runs sql on a connection of its own, as the sqlite3 shell would.
void run_sql(const fs::path& db_path, const char* sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(db_path.c_str(), &db), SQLITE_OK);
  char* err = nullptr;
  const int rc = sqlite3_exec(db, sql, nullptr, nullptr, &err);
  EXPECT_EQ(rc, SQLITE_OK) << sql << ": " << (err ? err : "");
  sqlite3_free(err);
  sqlite3_close(db);
}

// The WAL deleted underneath (while the map has it open): writes are refused,
// as for the database file; and what the lost WAL held is copied into the
// database file at once, so that even a crash right after loses nothing that
// was committed. The child process dies without closing anything.
TEST(SqliteFiles, DeletedWalRefusesWritesAndLosesNothingCommitted) {
  TempDir dir;
  const fs::path file = dir / "data.db", wal = dir / "data.db-wal";
  { SqliteMap map{pmap::SqliteBackend(file)}; }  // the file exists, all in it
  const pid_t child = ::fork();
  if (child == 0) {
    int code = 0;
    try {
      SqliteMap map{pmap::SqliteBackend(file)};
      for (int i = 0; i < 50; ++i) map.insert(key(i), value(i)).get();  // in the WAL only
      fs::remove(wal);
      try {
        map.insert("after-delete", "x").get();
        code = 10;  // a write went into the deleted WAL
      } catch (const pmap::Error& e) {
        const std::string what = e.what();
        if (e.code() != pmap::Errc::io || what.find("its WAL") == std::string::npos ||
            what.find("deleted") == std::string::npos ||
            what.find("copied into the database file") == std::string::npos) {
          std::fprintf(stderr, "unexpected error: %s\n", what.c_str());
          code = 11;
        }
      }
      ::_exit(code);  // a crash: the map is not closed, nothing checkpoints at close
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child: %s\n", e.what());
      code = 12;
    }
    ::_exit(code);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0) << "10: the write went on; 11: wrong error; 12: failed";
  SqliteMap reopened{pmap::SqliteBackend(file)};
  EXPECT_EQ(reopened.size(), 50u) << "committed entries were lost with the deleted WAL";
  EXPECT_EQ(reopened.get(key(49)), value(49));
  EXPECT_FALSE(reopened.get("after-delete").has_value());
}

TEST(SqliteFiles, ReplacedWalRefusesWrites) {
  TempDir dir;
  const fs::path file = dir / "data.db", wal = dir / "data.db-wal";
  SqliteMap map{pmap::SqliteBackend(file)};
  map.insert("a", "1").get();
  std::ofstream(dir / "other") << "not this database's WAL";
  fs::rename(dir / "other", wal);
  expect_error([&] { map.insert("b", "2").get(); }, pmap::Errc::io, {"its WAL", "replaced"},
               "a write went on after the WAL was replaced");
  EXPECT_FALSE(map.get("b").has_value());
}

// `sqlite3 app.db VACUUM` while the application runs, on a store that shrank
// from megabytes of live data to a few entries: SQLite shortens the file
// itself, which is not the truncation by another program that the map
// refuses to write after.
TEST(SqliteFiles, VacuumByAnotherConnectionIsNotATruncation) {
  TempDir dir;
  const fs::path file = dir / "app.db";
  {
    SqliteMap map{pmap::SqliteBackend(file)};
    for (int i = 0; i < 1200; ++i) map.insert(key(i), std::string(4000, 'v')).get();
  }  // closing checkpoints: the database file holds it all
  SqliteMap map{pmap::SqliteBackend(file)};
  const auto big = fs::file_size(file);
  ASSERT_GT(big, 4000000u);
  for (int i = 10; i < 1200; ++i) map.erase(key(i)).get();
  run_sql(file, "VACUUM; PRAGMA wal_checkpoint(TRUNCATE);");
  ASSERT_LT(fs::file_size(file), big / 20) << "the VACUUM did not shrink the file";
  map.insert("after-vacuum", "written").get();
  map.close().get();
  SqliteMap reopened{pmap::SqliteBackend(file)};
  EXPECT_EQ(reopened.size(), 11u);
  EXPECT_EQ(reopened.get("after-vacuum"), "written");
  EXPECT_EQ(reopened.get(key(3)), std::string(4000, 'v'));
}

// A truncation after a VACUUM is still a truncation.
TEST(SqliteFiles, TruncationAfterAVacuumIsStillRefused) {
  TempDir dir;
  const fs::path file = dir / "app.db";
  {
    SqliteMap map{pmap::SqliteBackend(file)};
    for (int i = 0; i < 300; ++i) map.insert(key(i), value(i)).get();
  }
  SqliteMap map{pmap::SqliteBackend(file)};
  for (int i = 100; i < 300; ++i) map.erase(key(i)).get();
  run_sql(file, "VACUUM; PRAGMA wal_checkpoint(TRUNCATE);");
  map.insert("after-vacuum", "written").get();
  fs::resize_file(file, fs::file_size(file) / 2);
  expect_error([&] { map.insert("after-truncate", "x").get(); }, pmap::Errc::corrupt,
               {"truncated by another program"}, "a write went on after a truncation");
}

INSTANTIATE_TEST_SUITE_P(Backends, IoFaults, ::testing::Values("sqlite", "csv"),
                         [](const auto& info) { return info.param; });

}  // namespace
