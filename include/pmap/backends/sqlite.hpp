// pmap/backends/sqlite.hpp — the default backend: one table in a SQLite file.
//
// Schema (see docs/formats.md): CREATE TABLE "<table>" (key PRIMARY KEY NOT
// NULL, value NOT NULL) WITHOUT ROWID. Keys and values that are valid UTF-8
// without NUL bytes are stored as TEXT (readable with the sqlite3 shell),
// others as BLOB. The file runs in WAL mode; each write() is one transaction
// on statements prepared once per connection. Several maps may share a file,
// each on its own table.
//
// Locking: the backend holds an exclusive advisory lock on the pair
// (file, table) — the lock file "<file>-<table>.pmap-lock" beside the
// database — for its whole life. A second opener, in this process or another,
// gets Errc::locked naming the file, table and holder's pid.
//
// Shared mode (SqliteOptions::mode = SqliteMode::shared, "?mode=shared"):
// any number of shared openers hold the lock at once (a shared flock), and
// exclude exclusive ones both ways round. Every commit is also recorded, in
// the same transaction, in the change record "pmap_log_<table>" (see
// docs/formats.md), which reader sessions read from a position
// (changes_since) and wait on (wait_for_change: inotify on the WAL, which
// every commit writes). A write transaction that finds another process's
// in progress waits busy_timeout, and in shared mode retries up to 5 more
// times before failing with Errc::locked. Table names starting with pmap_
// are reserved. A read-only opener (SqliteOptions::read_only) takes no lock.
//
// Errors at construction: Errc::io (a directory, a missing parent directory,
// no permission, a read-only file or file system), Errc::corrupt (the file is
// not a SQLite database; it is left byte-for-byte untouched), Errc::locked,
// Errc::invalid_argument (a table name that is not [A-Za-z_][A-Za-z0-9_]*).
//
// Errors from write(): the failed I/O named ("database or disk is full",
// "a write to the database or its WAL failed", with the system's reason when
// SQLite gives it). Before each transaction the backend checks that the path
// still names the file it opened and that the file has not shrunk: when
// another program deleted, moved, replaced (Errc::io) or truncated
// (Errc::corrupt) it, the write is refused rather than committed into a file
// nobody can open — SQLite alone would carry on. Moving the file back lets
// writes resume. A file SQLite shortened itself (a VACUUM or auto_vacuum, by
// any connection) is told apart by its header's page count, and accepted.
// The WAL is watched the same way: deleted or replaced, writes are refused,
// and what it held is first checkpointed into the database file.
//
// Durability: with Synchronous::full (the default), commit() commits with
// SQLite's synchronous=NORMAL and returns Durability::later, and sync()
// fsyncs the WAL: a map's sync thread syncs one group while its writer
// commits the next, and no future completes before its write is durable.
// write() is commit() then sync().
//
// Reader sessions: open_reader() opens a read-only connection on the same
// file and table (no lock file; WAL readers do not block the writer).
//
// Thread safety: one thread at a time, except that sync() may run on a
// second thread beside any other member (it only fsyncs a descriptor of its
// own), and a reader session is used on a thread of its own.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <string>

#include "pmap/backend.hpp"

namespace pmap {

// How hard SQLite works to make a commit durable (PRAGMA synchronous).
enum class Synchronous {
  full,    // every commit survives power loss (fsync per commit). Default.
  normal,  // survives a process crash; a power loss may lose the last commits
           // (a map's flush() checkpoints to make them durable).
  off,     // survives a process crash; a power loss may lose recent commits
           // or, per SQLite's documentation, corrupt the database.
};

// Who may open a store at once (see "Locking" above).
enum class SqliteMode {
  exclusive,  // one map, in one process, holds the table. Default.
  shared,     // any number of maps, in any processes, each with a coherent cache
};

struct SqliteOptions {
  // The table that holds this map. Default: "kv".
  std::string table = "kv";
  // Default: full.
  Synchronous synchronous = Synchronous::full;
  // How long a write waits for another connection's transaction on the same
  // file (another map's table) before failing with Errc::locked. Default: 5 s.
  std::chrono::milliseconds busy_timeout{5000};
  // SQLite page cache per connection, in KiB (at least 1). Default: 16 MiB.
  int cache_kib = 16 * 1024;
  // Page size of a database file this backend creates, in bytes: a power of
  // two from 512 to 65536. A file that exists keeps its own. Default: 8 KiB
  // (SQLite's own is 4 KiB; 8 KiB writes small rows in bulk faster, see
  // BENCHMARKS.md).
  int page_size = 8192;
  // exclusive (default) or shared: many processes on one table, each map's
  // cache kept coherent through the table's change record.
  SqliteMode mode = SqliteMode::exclusive;
  // Opens without any lock and without writing anything (the file must
  // exist, with the table): for looking into a store that an application
  // holds open. It sees the table as committed when it opens — and, with
  // mode = shared, follows the writers' change record from there. Every
  // write fails with Errc::invalid_argument.
  bool read_only = false;
};

class SqliteBackend final : public Backend {
 public:
  explicit SqliteBackend(std::filesystem::path path, SqliteOptions options = {});
  SqliteBackend(SqliteBackend&&) noexcept;
  SqliteBackend& operator=(SqliteBackend&&) noexcept;
  ~SqliteBackend() override;

  void scan(ScanSink sink) override;
  std::optional<std::string> get(std::string_view key) override;
  void write(std::span<const Write> batch) override;
  void flush() override;
  std::string describe() const override;
  Durability commit(std::span<const Write> batch) override;
  void sync() override;
  std::unique_ptr<Backend> open_reader() override;
  // For tools: count(*) of the table; the file's and its WAL's bytes; page
  // size and counts; damage() is PRAGMA integrity_check of the whole file;
  // compact() vacuums the whole file (every table in it): VACUUM INTO a
  // copy beside it (FILE.pmap-compact, removed again), copied back in one
  // write transaction, progress in bytes; then the WAL is emptied. It needs
  // free space for the copy. In shared mode a commit by another process
  // meanwhile makes it Errc::locked, with nothing replaced.
  std::optional<std::uint64_t> count() override;
  std::optional<std::uint64_t> bytes() override;
  std::vector<std::pair<std::string, std::string>> details() override;
  std::vector<std::string> damage(std::size_t limit) override;
  bool compact(const CompactProgress& progress) override;
  bool shared() const override;
  std::uint64_t origin() const override;
  std::uint64_t scan_at(ScanSink sink) override;
  Durability commit_shared(std::span<const Write> batch, std::span<const Expect> expect,
                           std::uint64_t tag, std::vector<Conflict>& conflicts) override;

 private:
  struct Impl;
  class Reader;  // open_reader()'s sessions
  std::unique_ptr<Impl> impl_;
};

}  // namespace pmap
