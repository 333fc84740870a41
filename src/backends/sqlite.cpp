// The SQLite backend. See pmap/backends/sqlite.hpp and docs/formats.md.
//
// One connection per backend, used by one thread (the map's writer), opened
// with SQLITE_OPEN_NOMUTEX. Every statement is prepared once, with
// SQLITE_PREPARE_PERSISTENT, and reset after each use. commit() is one
// BEGIN IMMEDIATE ... COMMIT transaction that applies its writes in key order
// (sort_by_key); any failure rolls it back. With Synchronous::full the
// connection runs SQLite's NORMAL, commit() returns Durability::later and
// sync() fsyncs the WAL through a descriptor of its own (write() = commit()
// + sync(); a map's sync thread calls sync() while its writer commits the
// next group). A reader session (open_reader) is a second, read-only
// connection with its own Impl and no lock file.

#include "pmap/backends/sqlite.hpp"

#include <absl/container/flat_hash_map.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <exception>
#include <fstream>
#include <numeric>
#include <random>
#include <span>
#include <thread>
#include <vector>

#include "../errors.hpp"
#include "builtin.hpp"
#include "change_record.hpp"
#include "file_util.hpp"
#include "pmap/error.hpp"
#include "text_util.hpp"
#include "wake_fd.hpp"

namespace pmap {
namespace {

using detail::append_op;
using detail::parse_ops;
using detail::random_origin;

// A table name: change_record.hpp's rule, and not one of SQLite's own
// tables (sqlite_*).
bool valid_table_name(std::string_view name) {
  return detail::valid_table_name(name, 64) && name.substr(0, 7) != "sqlite_";
}

const char* synchronous_pragma(Synchronous s) {
  switch (s) {
    case Synchronous::full:
      return "PRAGMA synchronous=FULL";
    case Synchronous::normal:
      return "PRAGMA synchronous=NORMAL";
    case Synchronous::off:
      return "PRAGMA synchronous=OFF";
  }
  return "PRAGMA synchronous=FULL";
}

Errc errc_of(int rc) {
  switch (rc & 0xFF) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return Errc::locked;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return Errc::corrupt;
    case SQLITE_FULL:
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_NOLFS:
      return Errc::io;
    default:
      return Errc::backend;
  }
}

std::string advice_for(int rc) {
  switch (rc & 0xFF) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return " (another connection holds the database; raise SqliteOptions::busy_timeout or "
             "finish that transaction)";
    case SQLITE_FULL:
      return " (the disk is full: free some space, then retry)";
    case SQLITE_IOERR:
      return " (the operating system refused the I/O: check the disk, its free space and the "
             "file's size limit, then retry)";
    case SQLITE_READONLY:
    case SQLITE_PERM:
      return " (check the file's and directory's permissions)";
    case SQLITE_NOTADB:
      return " (the file is not a SQLite database; open another path)";
    case SQLITE_CORRUPT:
      return " (the database is damaged; restore it from a backup)";
    default:
      return "";
  }
}

// Which I/O failed, for SQLite's one "disk I/O error" message. (SQLite keeps
// the errno of a write that failed in the WAL to itself.)
const char* ioerr_detail(int rc) {
  switch (rc) {
    case SQLITE_IOERR_WRITE:
      return ": a write to the database or its WAL failed";
    case SQLITE_IOERR_FSYNC:
    case SQLITE_IOERR_DIR_FSYNC:
      return ": an fsync failed";
    case SQLITE_IOERR_READ:
    case SQLITE_IOERR_SHORT_READ:
      return ": a read failed";
    case SQLITE_IOERR_TRUNCATE:
      return ": truncating a file failed";
    case SQLITE_IOERR_SHMSIZE:
    case SQLITE_IOERR_SHMMAP:
      return ": growing the WAL index (-shm file) failed";
    default:
      return "";
  }
}

// The file path names once every symbolic link is followed (also a link to
// a file not created yet), as SQLite resolves it; path itself on error.
std::filesystem::path resolve_links(std::filesystem::path path) {
  std::error_code ec;
  for (int hops = 0; hops < 40 && std::filesystem::is_symlink(path, ec); ++hops) {
    const std::filesystem::path target = std::filesystem::read_symlink(path, ec);
    if (ec) return path;
    path = target.is_absolute() ? target : path.parent_path() / target;
  }
  std::filesystem::path real = std::filesystem::weakly_canonical(path, ec);
  return ec ? path : real;
}

// The order in which commit() applies a batch: by key within each run
// between clears, and the writes to one key in their batch order, so the
// result is the same. SQLite then visits B-tree pages in key order instead of
// jumping around the tree: random keys, or the interleaved keys of several
// inserting threads, cost much less sorted (bench/notes.md).
void sort_by_key(std::span<const Write> batch, std::vector<std::size_t>& order) {
  order.resize(batch.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  const auto less = [&](std::size_t a, std::size_t b) {
    const int c = batch[a].key.compare(batch[b].key);
    return c < 0 || (c == 0 && a < b);
  };
  std::size_t begin = 0;
  for (std::size_t i = 0; i <= batch.size(); ++i) {
    if (i < batch.size() && batch[i].op != Write::Op::clear) continue;
    const auto first = order.begin() + static_cast<std::ptrdiff_t>(begin);
    const auto last = order.begin() + static_cast<std::ptrdiff_t>(i);
    if (!std::is_sorted(first, last, less)) std::sort(first, last, less);
    begin = i + 1;
  }
}

// Keeps the WAL and its index (-shm) when this connection is the last to
// close (see the constructor), whichever connection that is.
void keep_wal(sqlite3* db) {
  int persist_wal = 1;
  sqlite3_file_control(db, "main", SQLITE_FCNTL_PERSIST_WAL, &persist_wal);
}

}  // namespace

struct SqliteBackend::Impl {
  std::filesystem::path path;
  SqliteOptions options;
  std::string where;                     // sqlite:/abs/path#table
  std::optional<detail::FileLock> lock;  // none for a reader session
  detail::FileWatch watch{path};
  sqlite3* db = nullptr;
  std::string wal_path;
  std::optional<detail::FileWatch> wal_watch;
  int wal_fd = -1;  // the WAL, opened by sync() (on the sync thread)
  sqlite3_stmt* begin = nullptr;
  sqlite3_stmt* commit = nullptr;
  sqlite3_stmt* rollback = nullptr;
  sqlite3_stmt* put = nullptr;
  sqlite3_stmt* erase = nullptr;
  sqlite3_stmt* clear = nullptr;
  sqlite3_stmt* get = nullptr;
  sqlite3_stmt* scan = nullptr;
  std::vector<std::size_t> order;  // commit()'s order of the batch (sort_by_key)

  // Shared mode: the change record (see append_op).
  bool shared = false;
  std::uint64_t origin = 0;
  std::string log_table;               // pmap_log_<table>, unquoted
  sqlite3_stmt* read_begin = nullptr;  // BEGIN (deferred): a read snapshot
  sqlite3_stmt* log_append = nullptr;
  sqlite3_stmt* log_trim = nullptr;
  sqlite3_stmt* log_read = nullptr;
  sqlite3_stmt* log_last = nullptr;
  std::string ops;                   // commit_shared()'s packed writes
  std::size_t bytes_since_trim = 0;  // logged by this session since it last trimmed
  std::size_t commits_since_trim = 0;

  Impl(std::filesystem::path p, SqliteOptions o, std::string w, std::optional<detail::FileLock> l)
      : path(std::move(p)), options(std::move(o)), where(std::move(w)), lock(std::move(l)) {}

  // The WAL's path (known once a writer opened it; else SQLite's default).
  std::string wal_file() const { return wal_path.empty() ? path.string() + "-wal" : wal_path; }

  ~Impl() {
    for (sqlite3_stmt* s : {begin, commit, rollback, put, erase, clear, get, scan, read_begin,
                            log_append, log_trim, log_read, log_last})
      sqlite3_finalize(s);
    sqlite3_close_v2(db);
    if (wal_fd >= 0) ::close(wal_fd);
  }

  void prepare_log_reads();
  void open_read_only();
  void connect_read_only(const char* doing);
  void prepare_reads();
  std::uint64_t scan_at(ScanSink& sink);

  std::string quoted_log() const { return "\"" + log_table + "\""; }

  // The change record's last position (0 when empty).
  std::uint64_t last_position() {
    const int rc = sqlite3_step(log_last);
    const std::uint64_t last =
        rc == SQLITE_ROW ? static_cast<std::uint64_t>(sqlite3_column_int64(log_last, 0)) : 0;
    sqlite3_reset(log_last);
    if (rc != SQLITE_ROW) fail(rc, "cannot read the change record " + log_table);
    return last;
  }

  // Runs body in a read transaction: one snapshot.
  template <class Body>
  auto in_snapshot(Body body) {
    run(read_begin, "cannot begin a read transaction");
    try {
      if constexpr (std::is_void_v<decltype(body())>) {
        body();
        run(commit, "cannot end a read transaction");
      } else {
        auto result = body();
        run(commit, "cannot end a read transaction");
        return result;
      }
    } catch (...) {
      if (!sqlite3_get_autocommit(db)) {
        sqlite3_step(rollback);
        sqlite3_reset(rollback);
      }
      throw;
    }
  }

  // Applies batch in key order (sort_by_key) inside the open transaction.
  // A write named in expect is applied only if its key holds the expected
  // value; otherwise it goes to conflicts. With `ops`, the applied writes
  // are also packed there for the change record.
  void apply(std::span<const Write> batch, std::span<const Backend::Expect> expect,
             std::vector<Backend::Conflict>* conflicts, std::string* packed) {
    sort_by_key(batch, order);
    // Which writes are conditional: expect is in batch order, so a cursor
    // over it needs the writes in batch order too.
    std::vector<const Backend::Expect*> condition;
    if (!expect.empty()) {
      condition.assign(batch.size(), nullptr);
      for (const auto& e : expect) condition.at(e.index) = &e;
    }
    for (const std::size_t i : order) {
      const Write& w = batch[i];
      if (!condition.empty() && condition[i]) {
        std::optional<std::string> stored = get_one(w.key);
        if (stored != condition[i]->value) {
          conflicts->push_back(Backend::Conflict{i, std::move(stored)});
          continue;
        }
      }
      switch (w.op) {
        case Write::Op::put:
          bind(put, 1, w.key);
          bind(put, 2, w.value);
          run(put, "cannot write key", &w.key);
          break;
        case Write::Op::erase:
          bind(erase, 1, w.key);
          run(erase, "cannot erase key", &w.key);
          break;
        case Write::Op::clear:
          run(clear, "cannot clear the table");
          break;
      }
      if (packed) append_op(*packed, w);
    }
  }

  // BEGIN IMMEDIATE: takes the database's write lock. SQLite's busy handler
  // waits up to busy_timeout for another connection's write transaction;
  // in shared mode, where other processes commit all the time, a longer
  // wait is contention, not failure, and is retried (kBusyRetries times).
  static constexpr int kBusyRetries = 5;
  void begin_write() {
    for (int attempt = 0;; ++attempt) {
      const int rc = sqlite3_step(begin);
      sqlite3_reset(begin);
      if (rc == SQLITE_DONE) return;
      if ((rc & 0xFF) != SQLITE_BUSY || !shared || attempt == kBusyRetries)
        fail(rc, "cannot begin a transaction");
    }
  }

  void bind_blob(sqlite3_stmt* stmt, int index, std::string_view bytes) {
    const int rc =
        sqlite3_bind_blob(stmt, index, bytes.data(), static_cast<int>(bytes.size()), SQLITE_STATIC);
    if (rc != SQLITE_OK) fail(rc, "binding a parameter");
  }

  // Drops the change record's oldest rows, keeping the last kKeepRows
  // transactions and about kKeepBytes of packed writes (always the newest
  // row, so positions keep counting up). A session trims after it has
  // logged kTrimEvery transactions or bytes since it last did: the cost of
  // a row is one insert and, later, its share of one range delete. A reader
  // that falls further behind reloads the table instead (ChangeRead::gap).
  static constexpr std::int64_t kKeepRows = 16384;
  static constexpr std::int64_t kKeepBytes = std::int64_t{64} << 20;
  void maybe_trim(std::size_t logged) {
    bytes_since_trim += logged;
    if (++commits_since_trim < 1024 && bytes_since_trim < (8u << 20)) return;
    commits_since_trim = 0;
    bytes_since_trim = 0;
    sqlite3_bind_int64(log_trim, 1, kKeepRows);
    sqlite3_bind_int64(log_trim, 2, kKeepBytes);
    run(log_trim, "cannot trim the change record");
  }

  // os_error: sqlite3_system_errno() read right after the failing call.
  [[noreturn]] void fail(int rc, const std::string& doing, int os_error = -1) const {
    std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    // "disk I/O error" alone does not say which: add the system's reason.
    const int primary = rc & 0xFF;
    if (os_error < 0) os_error = db ? sqlite3_system_errno(db) : 0;
    if (primary == SQLITE_IOERR) msg += ioerr_detail(rc);
    if (os_error != 0 && (primary == SQLITE_IOERR || primary == SQLITE_FULL ||
                          primary == SQLITE_CANTOPEN || primary == SQLITE_READONLY))
      msg += std::string(" (") + std::strerror(os_error) + ")";
    throw Error(errc_of(rc), where + ": " + doing + ": " + msg + advice_for(rc));
  }

  void exec(const char* sql, const std::string& doing) {
    char* err = nullptr;
    const int rc = sqlite3_exec(db, sql, nullptr, nullptr, &err);
    if (rc != SQLITE_OK) {
      std::string msg = err ? err : sqlite3_errstr(rc);
      sqlite3_free(err);
      throw Error(errc_of(rc), where + ": " + doing + ": " + msg + advice_for(rc));
    }
  }

  // The value of an integer pragma (0 if SQLite gives none).
  int pragma_int(const char* name) {
    const std::string sql = std::string("PRAGMA ") + name;
    sqlite3_stmt* stmt = nullptr;
    int value = 0;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW)
      value = sqlite3_column_int(stmt, 0);
    sqlite3_finalize(stmt);
    return value;
  }

  sqlite3_stmt* prepare(const std::string& sql) {
    sqlite3_stmt* stmt = nullptr;
    const int rc = sqlite3_prepare_v3(db, sql.c_str(), static_cast<int>(sql.size()),
                                      SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
    if (rc != SQLITE_OK)
      fail(rc, "table " + options.table +
                   " cannot be used as a persistent-map table (expected columns key, value)");
    return stmt;
  }

  void bind(sqlite3_stmt* stmt, int index, std::string_view bytes) {
    const int rc = detail::is_plain_text(bytes)
                       ? sqlite3_bind_text(stmt, index, bytes.data(),
                                           static_cast<int>(bytes.size()), SQLITE_STATIC)
                       : sqlite3_bind_blob(stmt, index, bytes.data(),
                                           static_cast<int>(bytes.size()), SQLITE_STATIC);
    if (rc != SQLITE_OK) fail(rc, "binding a parameter");
  }

  // Steps a statement that returns no rows, then resets it. The message
  // (naming key, when given) is built only on failure: this is the hot path.
  void run(sqlite3_stmt* stmt, const char* doing, const std::string* key = nullptr) {
    const int rc = sqlite3_step(stmt);
    const int os_error = rc == SQLITE_DONE ? 0 : sqlite3_system_errno(db);
    sqlite3_reset(stmt);
    if (rc != SQLITE_DONE)
      fail(rc, key ? std::string(doing) + " " + detail::shown_key(*key) : doing, os_error);
  }

  void scan_all(ScanSink& sink) {
    int rc;
    while ((rc = sqlite3_step(scan)) == SQLITE_ROW) {
      try {
        sink(column(scan, 0), column(scan, 1));
      } catch (...) {
        sqlite3_reset(scan);
        throw;
      }
    }
    sqlite3_reset(scan);
    if (rc != SQLITE_DONE) fail(rc, "cannot read the table");
  }

  std::optional<std::string> get_one(std::string_view key) {
    bind(get, 1, key);
    const int rc = sqlite3_step(get);
    std::optional<std::string> value;
    if (rc == SQLITE_ROW) value.emplace(column(get, 0));
    sqlite3_reset(get);
    sqlite3_clear_bindings(get);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
      fail(rc, "cannot read key " + detail::shown_key(key));
    return value;
  }

  // Whether a database file of `size` bytes, shorter than when last seen,
  // was shortened by SQLite itself — a VACUUM, or an auto_vacuum, by this
  // or another connection, copied into the file by a checkpoint — rather
  // than cut by another program. A checkpoint writes page 1, whose header
  // holds the database's page count, before it truncates the file to that
  // count; a file cut short by anyone else is shorter than its header says.
  bool shortened_by_sqlite(long long size) const {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    std::array<unsigned char, 100> h{};
    const bool read = ::pread(fd, h.data(), h.size(), 0) == static_cast<ssize_t>(h.size());
    ::close(fd);
    if (!read || std::memcmp(h.data(), "SQLite format 3", 16) != 0) return false;
    const auto be32 = [&](int at) {
      return std::uint32_t{h[at]} << 24 | std::uint32_t{h[at + 1]} << 16 |
             std::uint32_t{h[at + 2]} << 8 | std::uint32_t{h[at + 3]};
    };
    const std::uint32_t page_size = h[16] == 0 && h[17] == 1 ? 65536u : (h[16] << 8 | h[17]);
    const std::uint32_t pages = be32(28);
    // The page count is valid when the change counter matches the
    // "version-valid-for" number (SQLite's file format, section 1.3.7).
    if (pages == 0 || be32(24) != be32(92) || page_size < 512) return false;
    return static_cast<long long>(pages) * page_size <= size;
  }

  // Before a commit: the database file and its WAL are still the ones this
  // connection has open, and the database file no shorter than SQLite left
  // it. SQLite alone would go on committing into a deleted or truncated file.
  void check_files() {
    watch.check(where, detail::FileWatch::Size::at_least,
                [this](long long size) { return shortened_by_sqlite(size); });
    if (!wal_watch) return;
    const auto change = wal_watch->changed(where, detail::FileWatch::Size::any);
    if (change == detail::FileWatch::Change::none) return;
    // This connection still reads its WAL: copy what the WAL holds into the
    // database file, so that nothing committed depends on the lost file.
    const int rc = sqlite3_wal_checkpoint_v2(db, nullptr, SQLITE_CHECKPOINT_FULL, nullptr, nullptr);
    throw Error(
        Errc::io,
        where + ": its WAL " + wal_path + " was " +
            (change == detail::FileWatch::Change::gone ? "deleted or moved away" : "replaced") +
            " by another program while the map had it open; writes are refused, since "
            "they would go into a file nobody can open (SQLite deletes its WAL itself; "
            "never delete or replace it while a connection is open). " +
            (rc == SQLITE_OK ? "Every committed entry has been copied into the database file: "
                               "reopen the map to write again."
                             : "Every committed entry is still in the map's memory: snapshot() "
                               "copies it out."));
  }

  static std::string_view column(sqlite3_stmt* stmt, int i) {
    const void* p = sqlite3_column_blob(stmt, i);  // before column_bytes: no conversion
    const int n = sqlite3_column_bytes(stmt, i);
    return p ? std::string_view(static_cast<const char*>(p), static_cast<std::size_t>(n))
             : std::string_view();
  }
};

SqliteBackend::SqliteBackend(std::filesystem::path path, SqliteOptions options) {
  if (!valid_table_name(options.table))
    throw Error(Errc::invalid_argument,
                "SQLite table name \"" + options.table +
                    "\" is not allowed: use letters, digits and '_', starting with a letter or "
                    "'_', at most 64 characters, not starting with sqlite_ or pmap_");
  const int page = options.page_size;
  if (page < 512 || page > 65536 || (page & (page - 1)) != 0)
    throw Error(Errc::invalid_argument, "SqliteOptions::page_size " + std::to_string(page) +
                                            " is not allowed: use a power of two from 512 to "
                                            "65536 (default 8192)");
  if (options.cache_kib < 1)
    throw Error(Errc::invalid_argument, "SqliteOptions::cache_kib " +
                                            std::to_string(options.cache_kib) +
                                            " is not allowed: use at least 1 (KiB)");
  if (path.empty()) throw Error(Errc::invalid_argument, "SqliteBackend: the path is empty");
  path = std::filesystem::absolute(path).lexically_normal();
  detail::check_file_path(path, "SQLite database");
  const std::string where = "sqlite:" + path.string() + "#" + options.table;

  // Refuse a file that is not a database before SQLite (or our lock file)
  // could touch anything.
  std::error_code ec;
  if (std::filesystem::exists(path, ec) && std::filesystem::file_size(path, ec) > 0) {
    std::array<char, 16> header{};
    std::ifstream in(path, std::ios::binary);
    if (!in) detail::throw_errno(errno, where + ": cannot open");
    in.read(header.data(), header.size());
    if (in.gcount() != 16 || std::memcmp(header.data(), "SQLite format 3", 16) != 0)
      throw Error(Errc::corrupt, where +
                                     ": the file is not a SQLite database (it was left "
                                     "untouched); open another path");
  }

  const bool shared = options.mode == SqliteMode::shared;
  std::optional<detail::FileLock> lock;
  if (!options.read_only) {
    // The lock file goes beside the real file, so that opening it through a
    // symbolic link and by its own name take the same lock. Shared openers
    // hold it shared, an exclusive one exclusively: the kernel keeps the
    // two kinds apart, and releases a killed process's lock.
    const std::filesystem::path real = resolve_links(path);
    lock.emplace(real.string() + "-" + options.table + ".pmap-lock",
                 "SQLite table " + options.table + " of " + path.string(), nullptr,
                 shared ? detail::FileLock::Kind::shared : detail::FileLock::Kind::exclusive);
  }
  impl_ = std::make_unique<Impl>(path, std::move(options), where, std::move(lock));
  Impl& d = *impl_;
  d.shared = shared;
  d.log_table = "pmap_log_" + d.options.table;
  if (d.options.read_only) {
    d.open_read_only();
    return;
  }

  const int rc =
      sqlite3_open_v2(path.c_str(), &d.db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) d.fail(rc, "cannot open the database");
  // Keep the WAL and its index (-shm) after the last connection closes (the
  // WAL empty, as journal_size_limit cuts it to nothing then): SQLite needs
  // the index's pages to open the database at all, and a disk that filled
  // up meanwhile would otherwise keep the store from opening.
  keep_wal(d.db);
  // SQLite puts the WAL beside the real file when path is a symbolic link.
  const char* wal = sqlite3_filename_wal(sqlite3_db_filename(d.db, "main"));
  d.wal_path = wal && *wal ? std::string(wal) : path.string() + "-wal";
  // SQLite falls back to read-only when it cannot write the file; the map
  // would then fail on its first write. Say so now.
  if (sqlite3_db_readonly(d.db, "main") == 1) {
    const std::string why = ::access(path.c_str(), W_OK) != 0 ? std::strerror(errno) : "";
    throw Error(Errc::io, where + ": the database file is read-only for this process" +
                              (why.empty() ? "" : " (" + why + ")") +
                              ", and the map needs to write it (check the file's permissions "
                              "and owner, and whether its file system is mounted read-only; "
                              "SqliteOptions::read_only opens it for reading)");
  }
  sqlite3_extended_result_codes(d.db, 1);
  sqlite3_busy_timeout(d.db, static_cast<int>(d.options.busy_timeout.count()));

  // page_size changes only a file that has no pages yet (before WAL mode).
  d.exec(("PRAGMA page_size=" + std::to_string(page)).c_str(), "cannot set page_size");
  // Switching to WAL (nothing to do when the file is in WAL mode already)
  // reads the WAL. With several processes opening and closing one file, it
  // failed now and then (SharedStore.FourProcessesCountExactlyAndEndCoherent
  // /sqlite under load), and nothing was changed, so it is tried again:
  // - SQLITE_IOERR_SHORT_READ (2 to 7 in 100 runs): the WAL cut short under
  //   the read as another process's last connection closed;
  // - SQLITE_BUSY, "database is locked" (1 in 75): processes creating the
  //   file at once each hold a read lock and want the write lock, and SQLite
  //   refuses one at once, without its busy handler, to avoid a deadlock.
  //   Retried until busy_timeout has passed since the first attempt, so a
  //   real wait for the lock is not repeated.
  const auto busy_until = std::chrono::steady_clock::now() + d.options.busy_timeout;
  int wal_rc = SQLITE_OK;
  for (int attempt = 1;; ++attempt) {
    wal_rc = sqlite3_exec(d.db, "PRAGMA journal_mode=WAL", nullptr, nullptr, nullptr);
    const int code = sqlite3_extended_errcode(d.db);
    const bool again =
        wal_rc != SQLITE_OK &&
        ((code == SQLITE_IOERR_SHORT_READ && attempt < 10) ||
         ((code & 0xFF) == SQLITE_BUSY && std::chrono::steady_clock::now() < busy_until));
    if (!again) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min(attempt, 20)));
  }
  if (wal_rc != SQLITE_OK) d.fail(wal_rc, "cannot switch to WAL mode");
  // full: SQLite's NORMAL, plus our own fsync of the WAL after each commit
  // (sync()). In WAL mode SQLite's FULL is NORMAL plus that fsync (and
  // padding a commit's last frame to a sector, which it skips on Unix, where
  // overwrites are power-safe by default). A WAL restart needs no sync of
  // its own: it follows a checkpoint that synced the database file.
  d.exec(synchronous_pragma(d.options.synchronous == Synchronous::full ? Synchronous::normal
                                                                       : d.options.synchronous),
         "cannot set synchronous");
  const std::string cache = "PRAGMA cache_size=-" + std::to_string(d.options.cache_kib);
  d.exec(cache.c_str(), "cannot set cache_size");
  // Copy the WAL back into the database once it holds kWalBytes (SQLite's
  // default, 1000 pages, is 4 MiB at its 4 KiB pages): fewer, larger
  // checkpoints make bulk writes faster. A WAL that one huge transaction grew
  // beyond that is truncated back to it after the next checkpoint.
  constexpr int kWalBytes = 16 << 20;
  const int pages = kWalBytes / std::max(d.pragma_int("page_size"), 512);
  d.exec(("PRAGMA wal_autocheckpoint=" + std::to_string(pages)).c_str(),
         "cannot set wal_autocheckpoint");
  d.exec(("PRAGMA journal_size_limit=" + std::to_string(kWalBytes)).c_str(),
         "cannot set journal_size_limit");

  // The table name was validated above; it cannot be a bound parameter.
  const std::string t = "\"" + d.options.table + "\"";
  const std::string create = "CREATE TABLE IF NOT EXISTS " + t +
                             " (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) WITHOUT ROWID";
  d.exec(create.c_str(), "cannot create table " + d.options.table);
  if (shared) {
    const std::string log = "CREATE TABLE IF NOT EXISTS " + d.quoted_log() +
                            " (pos INTEGER PRIMARY KEY, origin INTEGER NOT NULL, tag INTEGER NOT "
                            "NULL, ops BLOB NOT NULL)";
    d.exec(log.c_str(), "cannot create the change record " + d.log_table);
    d.origin = random_origin();
  }

  d.watch.seen(where);
  std::error_code exists_error;
  if (std::filesystem::exists(d.wal_path, exists_error)) {
    d.wal_watch.emplace(d.wal_path);
    d.wal_watch->seen(where);
  }

  d.begin = d.prepare("BEGIN IMMEDIATE");
  d.commit = d.prepare("COMMIT");
  d.rollback = d.prepare("ROLLBACK");
  d.put = d.prepare("INSERT INTO " + t +
                    " (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET "
                    "value = excluded.value");
  d.erase = d.prepare("DELETE FROM " + t + " WHERE key = ?1");
  d.clear = d.prepare("DELETE FROM " + t);
  d.get = d.prepare("SELECT value FROM " + t + " WHERE key = ?1");
  d.scan = d.prepare("SELECT key, value FROM " + t);
  if (shared) {
    d.prepare_log_reads();
    const std::string log = d.quoted_log();
    d.log_append = d.prepare("INSERT INTO " + log +
                             " (pos, origin, tag, ops) VALUES ((SELECT coalesce(max(pos), 0) + 1 "
                             "FROM " +
                             log + "), ?1, ?2, ?3)");
    d.log_trim = d.prepare(
        "DELETE FROM " + log + " WHERE pos < (SELECT max(pos) FROM " + log +
        ") AND pos <= max((SELECT coalesce(max(pos), 0) FROM " + log +
        ") - ?1, coalesce((SELECT pos FROM (SELECT pos, sum(length(ops)) OVER (ORDER BY pos DESC) "
        "AS total FROM " +
        log + ") WHERE total > ?2 ORDER BY pos DESC LIMIT 1), 0))");
  }
}

// The statements that read the change record (a shared writer's, a reader
// session's, a read-only opener's).
void SqliteBackend::Impl::prepare_log_reads() {
  Impl& d = *this;
  const std::string log = d.quoted_log();
  d.read_begin = d.prepare("BEGIN");
  d.log_read =
      d.prepare("SELECT pos, origin, tag, ops FROM " + log + " WHERE pos > ?1 ORDER BY pos");
  d.log_last = d.prepare("SELECT coalesce(max(pos), 0) FROM " + log);
}

// A read-only connection (a reader session's, a read-only opener's).
void SqliteBackend::Impl::connect_read_only(const char* doing) {
  const int rc =
      sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) fail(rc, doing);
  keep_wal(db);
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, static_cast<int>(options.busy_timeout.count()));
}

// The statements a reading connection runs: get, scan, read snapshots, and
// on a shared table the change record's.
void SqliteBackend::Impl::prepare_reads() {
  const std::string t = "\"" + options.table + "\"";
  get = prepare("SELECT value FROM " + t + " WHERE key = ?1");
  scan = prepare("SELECT key, value FROM " + t);
  commit = prepare("COMMIT");
  rollback = prepare("ROLLBACK");
  if (shared) prepare_log_reads();
}

// scan_all(), and on a shared table the change record's position, in one
// snapshot.
std::uint64_t SqliteBackend::Impl::scan_at(ScanSink& sink) {
  if (!shared) {
    scan_all(sink);
    return 0;
  }
  return in_snapshot([&] {
    const std::uint64_t at = last_position();
    scan_all(sink);
    return at;
  });
}

// SqliteOptions::read_only: no lock, no write, nothing created.
void SqliteBackend::Impl::open_read_only() {
  Impl& d = *this;
  d.connect_read_only("cannot open the database for reading");
  const auto has_table = [&](const std::string& name) {
    sqlite3_stmt* stmt =
        d.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1");
    d.bind(stmt, 1, name);
    const int step = sqlite3_step(stmt);
    sqlite3_finalize(stmt);
    if (step != SQLITE_ROW && step != SQLITE_DONE) d.fail(step, "cannot read the schema");
    return step == SQLITE_ROW;
  };
  if (!has_table(d.options.table))
    throw Error(Errc::invalid_argument, d.where + ": the file has no table " + d.options.table +
                                            " (a read-only opener creates nothing; check the "
                                            "path and the table name)");
  if (d.shared && !has_table(d.log_table))
    throw Error(Errc::invalid_argument,
                d.where + ": the table has no change record (" + d.log_table +
                    "): no map has opened it with mode=shared; open it without mode=shared");
  d.prepare_reads();
}

SqliteBackend::SqliteBackend(SqliteBackend&&) noexcept = default;
SqliteBackend& SqliteBackend::operator=(SqliteBackend&&) noexcept = default;
SqliteBackend::~SqliteBackend() = default;

void SqliteBackend::scan(ScanSink sink) { impl_->scan_all(sink); }

std::optional<std::string> SqliteBackend::get(std::string_view key) { return impl_->get_one(key); }

void SqliteBackend::write(std::span<const Write> batch) {
  if (commit(batch) == Durability::later) sync();
}

void SqliteBackend::sync() {
  Impl& d = *impl_;
  // The WAL exists once a first transaction has been committed, and stays
  // (the same file) while this connection is open.
  if (d.wal_fd < 0) {
    d.wal_fd = ::open(d.wal_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (d.wal_fd < 0)
      detail::throw_errno(errno, d.where + ": cannot open the WAL " + d.wal_path + " to fsync it");
  }
  if (::fdatasync(d.wal_fd) != 0)
    detail::throw_errno(errno, d.where +
                                   ": fsync of the WAL failed, so the last commits may not "
                                   "survive a power loss");
}

Durability SqliteBackend::commit(std::span<const Write> batch) {
  std::vector<Conflict> none;
  return commit_shared(batch, {}, 0, none);
}

Durability SqliteBackend::commit_shared(std::span<const Write> batch,
                                        std::span<const Expect> expect, std::uint64_t tag,
                                        std::vector<Conflict>& conflicts) {
  Impl& d = *impl_;
  conflicts.clear();
  if (d.options.read_only)
    throw Error(Errc::invalid_argument,
                d.where + ": opened read-only (SqliteOptions::read_only); it cannot be written");
  if (!expect.empty() && !d.shared)
    throw Error(Errc::invalid_argument, d.where + ": conditional writes need mode=shared");
  d.check_files();
  d.begin_write();
  try {
    d.ops.clear();
    d.apply(batch, expect, &conflicts, d.shared ? &d.ops : nullptr);
    if (d.shared && !d.ops.empty()) {
      sqlite3_bind_int64(d.log_append, 1, static_cast<sqlite3_int64>(d.origin));
      sqlite3_bind_int64(d.log_append, 2, static_cast<sqlite3_int64>(tag));
      d.bind_blob(d.log_append, 3, d.ops);
      d.run(d.log_append, "cannot append to the change record");
      d.maybe_trim(d.ops.size());
    }
    d.run(d.commit, "cannot commit");
  } catch (...) {
    // After some errors (e.g. SQLITE_FULL) SQLite has already rolled back;
    // then there is no transaction left and ROLLBACK's error means nothing.
    if (!sqlite3_get_autocommit(d.db)) {
      sqlite3_step(d.rollback);
      sqlite3_reset(d.rollback);
    }
    conflicts.clear();
    throw;
  }
  return d.options.synchronous == Synchronous::full ? Durability::later : Durability::now;
}

bool SqliteBackend::shared() const { return impl_->shared; }
std::uint64_t SqliteBackend::origin() const { return impl_->origin; }

std::uint64_t SqliteBackend::scan_at(ScanSink sink) { return impl_->scan_at(sink); }

void SqliteBackend::flush() {
  Impl& d = *impl_;
  if (d.options.synchronous == Synchronous::full) return;  // every commit is already durable
  int log = 0, checkpointed = 0;
  const int rc =
      sqlite3_wal_checkpoint_v2(d.db, nullptr, SQLITE_CHECKPOINT_FULL, &log, &checkpointed);
  if (rc != SQLITE_OK) d.fail(rc, "cannot checkpoint the WAL");
}

std::string SqliteBackend::describe() const { return impl_ ? impl_->where : "sqlite:(moved-from)"; }

// A reader session: a read-only connection on the same file and table. On a
// shared table it also reads the change record, and waits for commits by
// watching the WAL with inotify (every commit, by any process, writes to
// it), woken early by interrupt() through an eventfd.
class SqliteBackend::Reader final : public Backend {
 public:
  explicit Reader(const Impl& parent)
      : impl_(std::make_unique<Impl>(parent.path, parent.options, parent.where, std::nullopt)) {
    Impl& d = *impl_;
    d.shared = parent.shared;
    d.log_table = parent.log_table;
    d.connect_read_only("cannot open a reader session");
    d.prepare_reads();
    if (!d.shared) return;
    data_version_ = d.prepare("PRAGMA data_version");
    wake_.emplace(d.where);
    notify_fd_ = ::inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    const std::string wal = parent.wal_path.empty() ? d.path.string() + "-wal" : parent.wal_path;
    // Without inotify (or a WAL to watch), wait_for_change() polls.
    if (notify_fd_ >= 0 && ::inotify_add_watch(notify_fd_, wal.c_str(), IN_MODIFY) < 0) {
      ::close(notify_fd_);
      notify_fd_ = -1;
    }
  }
  ~Reader() override {
    sqlite3_finalize(data_version_);
    if (notify_fd_ >= 0) ::close(notify_fd_);
  }

  void scan(ScanSink sink) override { impl_->scan_all(sink); }
  std::optional<std::string> get(std::string_view key) override { return impl_->get_one(key); }
  void write(std::span<const Write>) override {
    throw Error(Errc::invalid_argument, impl_->where + ": a reader session cannot write");
  }
  std::string describe() const override { return impl_->where; }
  bool shared() const override { return impl_->shared; }
  std::uint64_t scan_at(ScanSink sink) override { return impl_->scan_at(sink); }
  ChangeRead changes_since(std::uint64_t from, std::uint64_t no_values_for) override {
    if (!impl_->shared) return Backend::changes_since(from, no_values_for);
    ChangeRead read = impl_->in_snapshot([&] { return read_changes(from, no_values_for); });
    version_ = data_version();
    return read;
  }
  void wait_for_change(std::uint64_t from, std::chrono::milliseconds timeout) override;
  void interrupt() override;

 private:
  ChangeRead read_changes(std::uint64_t from, std::uint64_t no_values_for);
  long long data_version();

  std::unique_ptr<Impl> impl_;
  sqlite3_stmt* data_version_ = nullptr;
  long long version_ = -1;              // data_version after the last read
  int rechecks_ = 0;                    // short waits left after an inotify event
  int notify_fd_ = -1;                  // inotify on the WAL
  std::optional<detail::WakeFd> wake_;  // interrupt()'s (shared mode)
};

// In the read's snapshot: every transaction after `from`, then the value of
// every key put (looked up once per key), but for puts by no_values_for.
Backend::ChangeRead SqliteBackend::Reader::read_changes(std::uint64_t from,
                                                        std::uint64_t no_values_for) {
  Impl& d = *impl_;
  ChangeRead read;
  read.through = from;
  sqlite3_bind_int64(d.log_read, 1, static_cast<sqlite3_int64>(from));
  int rc;
  while ((rc = sqlite3_step(d.log_read)) == SQLITE_ROW) {
    const auto pos = static_cast<std::uint64_t>(sqlite3_column_int64(d.log_read, 0));
    if (pos != read.through + 1) break;  // trimmed past `from`
    const auto origin = static_cast<std::uint64_t>(sqlite3_column_int64(d.log_read, 1));
    const auto tag = static_cast<std::uint64_t>(sqlite3_column_int64(d.log_read, 2));
    const bool ok = parse_ops(Impl::column(d.log_read, 3), [&](Write::Op op, std::string_view key) {
      read.changes.push_back(RecordedChange{origin, tag, op, std::string(key), std::nullopt});
    });
    if (!ok) {
      sqlite3_reset(d.log_read);
      throw Error(Errc::corrupt, d.where + ": the change record " + d.log_table +
                                     " is damaged at position " + std::to_string(pos) +
                                     "; the table itself is unaffected: reopen every map on it "
                                     "(the record starts again from the table)");
    }
    read.through = pos;
  }
  sqlite3_reset(d.log_read);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) d.fail(rc, "cannot read the change record");
  // A first row after from + 1, or a record that ends before `from` (it was
  // dropped and created again): what happened in between is unknown.
  if (rc == SQLITE_ROW || (read.through == from && d.last_position() < from))
    return ChangeRead{true, from, {}};
  absl::flat_hash_map<std::string_view, std::optional<std::string>> values;
  for (RecordedChange& c : read.changes) {
    if (c.op != Write::Op::put || (no_values_for != 0 && c.origin == no_values_for)) continue;
    auto [it, fresh] = values.try_emplace(c.key);
    if (fresh) it->second = d.get_one(c.key);
    c.value = it->second;
  }
  return read;
}

long long SqliteBackend::Reader::data_version() {
  const int rc = sqlite3_step(data_version_);
  const long long v = rc == SQLITE_ROW ? sqlite3_column_int64(data_version_, 0) : -1;
  sqlite3_reset(data_version_);
  return v;
}

void SqliteBackend::Reader::wait_for_change(std::uint64_t from, std::chrono::milliseconds timeout) {
  if (!impl_->shared) return Backend::wait_for_change(from, timeout);
  // Something committed since the last read (by another connection).
  if (data_version() != version_) {
    rechecks_ = 0;
    return;
  }
  // A commit writes its frames to the WAL, then publishes them in the WAL
  // index (shared memory, which inotify does not see): a read woken by the
  // frames may come too early. So for a while after an event, wait in short
  // steps and look at data_version again; inotify keeps every later event
  // until it is read, so nothing after this point slips by. Without
  // inotify, poll data_version every few milliseconds.
  constexpr std::chrono::milliseconds kStep{2};
  const bool short_wait = notify_fd_ < 0 || rechecks_ > 0;
  if (rechecks_ > 0) --rechecks_;
  const auto wait = short_wait ? std::min(timeout, kStep) : timeout;
  if (wake_->wait(notify_fd_, wait) == detail::WakeFd::Woke::input) {
    char buf[4096];
    while (::read(notify_fd_, buf, sizeof buf) > 0) {
    }
    rechecks_ = 50;  // 100 ms of short waits
  }
}

void SqliteBackend::Reader::interrupt() {
  if (!impl_->shared) return Backend::interrupt();
  wake_->signal();
}

std::optional<std::uint64_t> SqliteBackend::count() {
  Impl& d = *impl_;
  sqlite3_stmt* stmt = d.prepare("SELECT count(*) FROM \"" + d.options.table + "\"");
  const int rc = sqlite3_step(stmt);
  const auto n = static_cast<std::uint64_t>(sqlite3_column_int64(stmt, 0));
  sqlite3_finalize(stmt);
  if (rc != SQLITE_ROW) d.fail(rc, "cannot count the table");
  return n;
}

namespace {
// The size of a file, 0 when it is not there.
std::uint64_t size_or_zero(const std::filesystem::path& p) {
  std::error_code ec;
  const auto n = std::filesystem::file_size(p, ec);
  return ec ? 0 : n;
}
}  // namespace

std::optional<std::uint64_t> SqliteBackend::bytes() {
  const Impl& d = *impl_;
  return size_or_zero(d.path) + size_or_zero(d.wal_file());
}

std::vector<std::pair<std::string, std::string>> SqliteBackend::details() {
  Impl& d = *impl_;
  return {{"file bytes", std::to_string(size_or_zero(d.path))},
          {"WAL bytes", std::to_string(size_or_zero(d.wal_file()))},
          {"page size", std::to_string(d.pragma_int("page_size"))},
          {"pages", std::to_string(d.pragma_int("page_count"))},
          {"free pages", std::to_string(d.pragma_int("freelist_count"))},
          {"mode", d.shared ? "shared (change record " + d.log_table + ")" : "exclusive"}};
}

std::vector<std::string> SqliteBackend::damage(std::size_t limit) {
  Impl& d = *impl_;
  std::vector<std::string> out;
  if (limit == 0) return out;
  // One row per problem ("Tree 4 page 7 cell 0: ..."), or the one row "ok".
  const std::string sql = "PRAGMA integrity_check(" + std::to_string(limit) + ")";
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v2(d.db, sql.c_str(), -1, &stmt, nullptr);
  if (rc != SQLITE_OK) {
    out.push_back(d.path.string() + ": cannot check it: " + sqlite3_errmsg(d.db));
    return out;
  }
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
    // A row may hold several problems, a line each, under a heading that
    // names the schema ("*** in database main ***").
    std::string_view rest = text ? text : "";
    while (!rest.empty() && out.size() < limit) {
      const std::string_view line = rest.substr(0, rest.find('\n'));
      rest.remove_prefix(std::min(rest.size(), line.size() + 1));
      if (line != "ok" && !line.starts_with("*** in database"))
        out.push_back(d.path.string() + ": " + std::string(line));
    }
  }
  sqlite3_finalize(stmt);
  // A file too damaged to check at all is one damaged place itself.
  if (rc != SQLITE_DONE)
    out.push_back(d.path.string() + ": integrity_check could not finish: " + sqlite3_errstr(rc));
  return out;
}

// Compaction in two steps that progress can follow, which VACUUM alone
// cannot (its copy is an unnamed temporary file): VACUUM INTO a copy beside
// the database (same file system), watched as it grows; then the copy
// copied back over the database with the backup API, a page range at a
// time, in one write transaction that SQLite holds from the first step to
// the last (a failure rolls it back: the database is the old one or the
// new one). The WAL is emptied afterwards.
bool SqliteBackend::compact(const CompactProgress& progress) {
  Impl& d = *impl_;
  if (d.options.read_only)
    throw Error(Errc::invalid_argument,
                d.where + ": opened read-only (SqliteOptions::read_only); it cannot be compacted");
  d.check_files();
  // The work: the copy's bytes, written, then copied back. Until the copy
  // is made, the file's pages less its free ones stand in for its size.
  const auto page_size = static_cast<std::uint64_t>(d.pragma_int("page_size"));
  const auto live_pages = static_cast<std::uint64_t>(
      std::max(0, d.pragma_int("page_count") - d.pragma_int("freelist_count")));
  const std::uint64_t live = live_pages * page_size;
  const std::string copy = d.path.string() + ".pmap-compact";
  const auto remove_copy = [&] {
    std::error_code ec;
    for (const char* suffix : {"", "-journal", "-wal", "-shm"})
      std::filesystem::remove(copy + suffix, ec);
  };
  remove_copy();  // a crash's leftover: only a copy

  // In shared mode another process may commit between the copy and the
  // copy back; the change record's last position tells (compared once the
  // copy back holds the write lock), and then nothing is replaced.
  const std::uint64_t position = d.shared ? d.last_position() : 0;

  // The copy keeps the file's page size (VACUUM INTO would apply the one
  // this connection asked for at open, which the copy back into a WAL
  // database refuses).
  d.exec(("PRAGMA page_size=" + std::to_string(page_size)).c_str(), "cannot set page_size");

  // progress() may throw; never through SQLite: the first throw is kept,
  // ends the compaction (nothing replaced), and is rethrown. report()
  // tells whether to go on.
  std::exception_ptr thrown;
  const auto report = [&](std::uint64_t done, std::uint64_t whole) {
    if (!progress || thrown) return !thrown;
    try {
      progress(done, whole);
    } catch (...) {
      thrown = std::current_exception();
    }
    return !thrown;
  };

  // 1. The copy, its size standing in for the work done. SQLite calls the
  // handler every 10,000 VM steps; a non-zero return interrupts VACUUM.
  struct Watch {
    const decltype(report)* tell;
    const std::string* copy;
    std::uint64_t live;
    std::chrono::steady_clock::time_point last{};
  } watch{&report, &copy, live};
  if (progress) {
    report(0, 2 * live);
    sqlite3_progress_handler(
        d.db, 10000,
        [](void* arg) -> int {
          auto& w = *static_cast<Watch*>(arg);
          const auto now = std::chrono::steady_clock::now();
          if (now - w.last < std::chrono::milliseconds(50)) return 0;
          w.last = now;
          std::error_code ec;
          const auto size = std::filesystem::file_size(*w.copy, ec);
          return (*w.tell)(ec ? 0 : std::min<std::uint64_t>(size, w.live), 2 * w.live) ? 0 : 1;
        },
        &watch);
  }
  sqlite3_stmt* into = nullptr;
  int rc = sqlite3_prepare_v2(d.db, "VACUUM INTO ?1", -1, &into, nullptr);
  if (rc == SQLITE_OK) {
    sqlite3_bind_text(into, 1, copy.c_str(), static_cast<int>(copy.size()), SQLITE_TRANSIENT);
    rc = sqlite3_step(into);
  }
  sqlite3_finalize(into);
  sqlite3_progress_handler(d.db, 0, nullptr, nullptr);
  if (rc != SQLITE_DONE) {
    remove_copy();
    if (thrown) std::rethrow_exception(thrown);
    d.fail(rc, "cannot compact the file (VACUUM INTO " + copy + ")");
  }

  // 2. The copy back, on a connection of its own (the backup API wants the
  // destination connection to itself).
  sqlite3* src = nullptr;
  sqlite3* dst = nullptr;
  const auto close_all = [&] {
    sqlite3_close_v2(src);
    sqlite3_close_v2(dst);
    remove_copy();
  };
  rc = sqlite3_open_v2(copy.c_str(), &src, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc == SQLITE_OK)
    rc =
        sqlite3_open_v2(d.path.c_str(), &dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    const std::string why = sqlite3_errstr(rc);
    close_all();
    throw Error(Errc::io, d.where + ": cannot compact the file: cannot open " + copy + ": " + why);
  }
  keep_wal(dst);
  sqlite3_busy_timeout(dst, static_cast<int>(d.options.busy_timeout.count()));
  sqlite3_backup* backup = sqlite3_backup_init(dst, "main", src, "main");
  if (!backup) {
    const std::string why = sqlite3_errmsg(dst);
    close_all();
    throw Error(Errc::io, d.where + ": cannot compact the file: " + why);
  }
  // A step of no pages takes the write lock (a write transaction on dst)
  // and copies nothing: from here on nobody else commits.
  rc = sqlite3_backup_step(backup, 0);
  const bool changed = rc == SQLITE_OK && d.shared && d.last_position() != position;
  while (rc == SQLITE_OK && !changed && !thrown) {
    rc = sqlite3_backup_step(backup, 1024);
    if (rc == SQLITE_OK || rc == SQLITE_DONE) {
      // Now the whole is known: the copy's size, twice.
      const auto pages = static_cast<std::uint64_t>(sqlite3_backup_pagecount(backup));
      const auto left = static_cast<std::uint64_t>(sqlite3_backup_remaining(backup));
      report((2 * pages - left) * page_size, 2 * pages * page_size);
    }
  }
  // Before the copy back completed, finish() rolls it back.
  const int finished = sqlite3_backup_finish(backup);
  const std::string why = sqlite3_errmsg(dst);
  close_all();
  if (thrown && rc != SQLITE_DONE) std::rethrow_exception(thrown);
  if (changed)
    throw Error(Errc::locked, d.where +
                                  ": not compacted: another process committed to the table "
                                  "meanwhile, so the copy was already old; nothing was "
                                  "replaced. Compact again (at a quieter time)");
  if (rc != SQLITE_DONE || finished != SQLITE_OK) {
    const int code = rc != SQLITE_DONE ? rc : finished;
    throw Error(errc_of(code),
                d.where + ": cannot compact the file (copying it back): " + why + advice_for(code));
  }
  d.exec("PRAGMA wal_checkpoint(TRUNCATE)", "cannot empty the WAL after compacting");
  return true;
}

std::unique_ptr<Backend> SqliteBackend::open_reader() { return std::make_unique<Reader>(*impl_); }

std::unique_ptr<Backend> detail::open_sqlite_uri(std::string_view rest) {
  const auto q = rest.find('?');
  const std::string path(rest.substr(0, q));
  if (path.empty())
    throw Error(Errc::invalid_argument, "URI sqlite: needs a path, e.g. sqlite:app.db");
  SqliteOptions options;
  if (q == std::string_view::npos) return std::make_unique<SqliteBackend>(path, options);
  const std::string uri = "URI " + redact_uri("sqlite:" + std::string(rest));
  for (const auto& [name, value] : parse_query(rest.substr(q + 1))) {
    if (name == "table") {
      options.table = std::string(value);
    } else if (name == "synchronous") {
      if (value == "full")
        options.synchronous = Synchronous::full;
      else if (value == "normal")
        options.synchronous = Synchronous::normal;
      else if (value == "off")
        options.synchronous = Synchronous::off;
      else
        throw Error(Errc::invalid_argument, uri + ": synchronous=" + std::string(value) +
                                                " is not one of full, normal, off");
    } else if (name == "mode") {
      if (value == "shared")
        options.mode = SqliteMode::shared;
      else if (value == "exclusive")
        options.mode = SqliteMode::exclusive;
      else
        throw Error(Errc::invalid_argument,
                    uri + ": mode=" + std::string(value) + " is not one of exclusive, shared");
    } else if (name == "read_only") {
      options.read_only = parse_bool(uri, name, value);
    } else {
      throw Error(Errc::invalid_argument,
                  uri + ": unknown parameter \"" + std::string(name) +
                      "\" (sqlite: takes table=NAME, synchronous=full|normal|off, "
                      "mode=exclusive|shared and read_only=true|false)");
    }
  }
  return std::make_unique<SqliteBackend>(path, std::move(options));
}

}  // namespace pmap
