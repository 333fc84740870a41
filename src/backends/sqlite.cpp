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

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <numeric>
#include <span>
#include <vector>

#include "../errors.hpp"
#include "builtin.hpp"
#include "file_util.hpp"
#include "pmap/error.hpp"

namespace pmap {
namespace {

bool valid_table_name(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  if (!(std::isalpha(static_cast<unsigned char>(name[0])) || name[0] == '_')) return false;
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_')) return false;
  // sqlite_* names are reserved for SQLite's own tables.
  return name.substr(0, 7) != "sqlite_";
}

// Valid UTF-8 without NUL bytes: stored as TEXT so the sqlite3 shell shows
// and matches it; anything else is a BLOB. The choice depends on the bytes
// only, so the same key always binds the same way.
bool is_plain_text(std::string_view s) {
  std::size_t i = 0;
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  // Fast path, 8 bytes at a time: no byte >= 0x80 and no zero byte.
  constexpr std::uint64_t kHigh = 0x8080808080808080ull, kOnes = 0x0101010101010101ull;
  for (; i + 8 <= s.size(); i += 8) {
    std::uint64_t w;
    std::memcpy(&w, p + i, 8);
    if ((w & kHigh) || ((w - kOnes) & ~w & kHigh)) break;
  }
  while (i < s.size()) {
    unsigned char c = p[i];
    if (c == 0) return false;
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t n;
    std::uint32_t cp;
    if ((c & 0xE0) == 0xC0) {
      n = 1;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;  // truncated sequence
    for (std::size_t k = 1; k <= n; ++k) {
      if ((p[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i + k] & 0x3F);
    }
    // Overlong forms, surrogates, beyond U+10FFFF.
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
        (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
      return false;
    i += n + 1;
  }
  return true;
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

  Impl(std::filesystem::path p, SqliteOptions o, std::string w, std::optional<detail::FileLock> l)
      : path(std::move(p)), options(std::move(o)), where(std::move(w)), lock(std::move(l)) {}

  ~Impl() {
    for (sqlite3_stmt* s : {begin, commit, rollback, put, erase, clear, get, scan})
      sqlite3_finalize(s);
    sqlite3_close_v2(db);
    if (wal_fd >= 0) ::close(wal_fd);
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
    const int rc = is_plain_text(bytes)
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
                    "'_', at most 64 characters, not starting with sqlite_");
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

  // The lock file goes beside the real file, so that opening it through a
  // symbolic link and by its own name take the same lock.
  const std::filesystem::path real = resolve_links(path);
  detail::FileLock lock(real.string() + "-" + options.table + ".pmap-lock",
                        "SQLite table " + options.table + " of " + path.string());
  impl_ = std::make_unique<Impl>(path, std::move(options), where, std::move(lock));
  Impl& d = *impl_;

  const int rc =
      sqlite3_open_v2(path.c_str(), &d.db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) d.fail(rc, "cannot open the database");
  // Keep the WAL and its index (-shm) after the last connection closes (the
  // WAL empty, as journal_size_limit cuts it to nothing then): SQLite needs
  // the index's pages to open the database at all, and a disk that filled
  // up meanwhile would otherwise keep the store from opening.
  int persist_wal = 1;
  sqlite3_file_control(d.db, "main", SQLITE_FCNTL_PERSIST_WAL, &persist_wal);
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
                              "and owner, and whether its file system is mounted read-only)");
  }
  sqlite3_extended_result_codes(d.db, 1);
  sqlite3_busy_timeout(d.db, static_cast<int>(d.options.busy_timeout.count()));

  // page_size changes only a file that has no pages yet (before WAL mode).
  d.exec(("PRAGMA page_size=" + std::to_string(page)).c_str(), "cannot set page_size");
  d.exec("PRAGMA journal_mode=WAL", "cannot switch to WAL mode");
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
  Impl& d = *impl_;
  d.check_files();
  sort_by_key(batch, d.order);
  d.run(d.begin, "cannot begin a transaction");
  try {
    for (const std::size_t i : d.order) {
      const Write& w = batch[i];
      switch (w.op) {
        case Write::Op::put:
          d.bind(d.put, 1, w.key);
          d.bind(d.put, 2, w.value);
          d.run(d.put, "cannot write key", &w.key);
          break;
        case Write::Op::erase:
          d.bind(d.erase, 1, w.key);
          d.run(d.erase, "cannot erase key", &w.key);
          break;
        case Write::Op::clear:
          d.run(d.clear, "cannot clear the table");
          break;
      }
    }
    d.run(d.commit, "cannot commit");
  } catch (...) {
    // After some errors (e.g. SQLITE_FULL) SQLite has already rolled back;
    // then there is no transaction left and ROLLBACK's error means nothing.
    if (!sqlite3_get_autocommit(d.db)) {
      sqlite3_step(d.rollback);
      sqlite3_reset(d.rollback);
    }
    throw;
  }
  return d.options.synchronous == Synchronous::full ? Durability::later : Durability::now;
}

void SqliteBackend::flush() {
  Impl& d = *impl_;
  if (d.options.synchronous == Synchronous::full) return;  // every commit is already durable
  int log = 0, checkpointed = 0;
  const int rc =
      sqlite3_wal_checkpoint_v2(d.db, nullptr, SQLITE_CHECKPOINT_FULL, &log, &checkpointed);
  if (rc != SQLITE_OK) d.fail(rc, "cannot checkpoint the WAL");
}

std::string SqliteBackend::describe() const { return impl_ ? impl_->where : "sqlite:(moved-from)"; }

// A reader session: a read-only connection on the same file and table.
class SqliteBackend::Reader final : public Backend {
 public:
  explicit Reader(const Impl& parent)
      : impl_(std::make_unique<Impl>(parent.path, parent.options, parent.where, std::nullopt)) {
    Impl& d = *impl_;
    const int rc =
        sqlite3_open_v2(d.path.c_str(), &d.db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc != SQLITE_OK) d.fail(rc, "cannot open a reader session");
    sqlite3_extended_result_codes(d.db, 1);
    sqlite3_busy_timeout(d.db, static_cast<int>(d.options.busy_timeout.count()));
    const std::string t = "\"" + d.options.table + "\"";
    d.get = d.prepare("SELECT value FROM " + t + " WHERE key = ?1");
    d.scan = d.prepare("SELECT key, value FROM " + t);
  }

  void scan(ScanSink sink) override { impl_->scan_all(sink); }
  std::optional<std::string> get(std::string_view key) override { return impl_->get_one(key); }
  void write(std::span<const Write>) override {
    throw Error(Errc::invalid_argument, impl_->where + ": a reader session cannot write");
  }
  std::string describe() const override { return impl_->where; }

 private:
  std::unique_ptr<Impl> impl_;
};

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
    } else {
      throw Error(Errc::invalid_argument,
                  uri + ": unknown parameter \"" + std::string(name) +
                      "\" (sqlite: takes table=NAME and synchronous=full|normal|off)");
    }
  }
  return std::make_unique<SqliteBackend>(path, std::move(options));
}

}  // namespace pmap
