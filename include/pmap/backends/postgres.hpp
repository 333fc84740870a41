// pmap/backends/postgres.hpp — a shared store on a PostgreSQL server
// (CMake component pmap::postgres, built when libpq is found).
//
//   pmap::PersistentMap<std::string, int> m{"postgres://app:pw@db.internal:5432/app?table=kv"};
//   pmap::PersistentMap<std::string, int> n{pmap::PostgresBackend("host=db dbname=app", {.table =
//   "kv"})};
//
// Any number of maps, in any processes on any hosts, open one table; each
// map's cache stays coherent (see "Scaling out: PostgreSQL" in the README).
//
// Connection: `conninfo` is anything libpq takes — "host=h port=p dbname=d
// user=u password=pw sslmode=require" or a "postgres://" / "postgresql://"
// URI — with every libpq keyword passed through (sslmode, application_name,
// target_session_attrs, ...) and libpq's environment variables (PGHOST,
// PGPASSWORD, ...) and ~/.pgpass honoured. connect_timeout defaults to 10 s.
// In a URI given to pmap::open_backend, "table=NAME" selects the table and
// is not passed to libpq.
//
// Schema (see docs/formats.md), created when absent, checked when present
// (a table of another shape is Errc::invalid_argument, never altered):
//   "<table>"          (key bytea PRIMARY KEY, value bytea NOT NULL)
//   "pmap_log_<table>" (pos bigint PRIMARY KEY, origin bigint, seq bigint,
//                       tag bigint, ops bytea): the change record, one row per
//                       transaction, positions in commit order
// Table names are [A-Za-z_][A-Za-z0-9_]*, at most 54 characters, and do not
// start with "pmap_"; they are always quoted, so case matters.
//
// Writes: each commit is one transaction sent in one round trip (libpq
// pipeline mode): the puts as one INSERT ... ON CONFLICT over arrays, the
// erases as one DELETE over an array, the change record's row, and a NOTIFY
// on channel "pmap_<table>" carrying the committer's origin. Commits on one
// table take turns (a transaction-scoped advisory lock), which is what makes
// positions follow commit order. A batch with conditional writes (update()
// as compare-and-set) reads their keys first, under that lock: two round
// trips. Durability is the server's: a commit returns once PostgreSQL
// acknowledged COMMIT, durable as its synchronous_commit says.
//
// Reader sessions (open_reader(), the map's watcher) have a connection of
// their own that LISTENs on the channel; they read the change record from a
// position in one REPEATABLE READ snapshot, and read again after every
// notification and every reconnect, so a lost notification delays a change,
// never loses it. Notifications of this session's own commits wake the
// reader at most every 10 ms, others' at once.
//
// Faults: a connection that breaks is reconnected on the next call. When it
// breaks during a commit, the backend reconnects (retrying with back-off for
// up to PostgresOptions::resolve_timeout), makes sure the old server
// session has ended, and looks the transaction up in the change record:
// commit() returns when it committed and throws Errc::io when it did not,
// so a batch is never applied twice. When the server stays unreachable for
// that long, the outcome is unknown and commit() throws Errc::io saying so.
//
// Errors at construction: Errc::invalid_argument (a conninfo libpq cannot
// parse, a bad table name, a table of another shape); Errc::io (the server
// cannot be reached or refuses the login: the message names host and port,
// after at most connect_timeout). Messages and describe() never contain the
// password.
//
// Thread safety: like every backend, one thread at a time; a reader session
// on a thread of its own, its interrupt() from any thread.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "pmap/backend.hpp"

namespace pmap {

struct PostgresOptions {
  // The table that holds this map. Default: "kv".
  std::string table = "kv";
  // How long a commit whose connection broke keeps trying to reach the
  // server to find out whether it committed. Default: 60 s.
  std::chrono::milliseconds resolve_timeout{60000};
  // Open for reading only: nothing is created (a missing table is
  // Errc::invalid_argument), and write() and commit() throw
  // Errc::invalid_argument. URI: read_only=true. Default: false.
  bool read_only = false;
};

class PostgresBackend final : public Backend {
 public:
  explicit PostgresBackend(std::string conninfo, PostgresOptions options = {});
  PostgresBackend(PostgresBackend&&) noexcept;
  PostgresBackend& operator=(PostgresBackend&&) noexcept;
  ~PostgresBackend() override;

  void scan(ScanSink sink) override;
  std::optional<std::string> get(std::string_view key) override;
  void write(std::span<const Write> batch) override;
  std::string describe() const override;
  Durability commit(std::span<const Write> batch) override;
  std::unique_ptr<Backend> open_reader() override;
  bool shared() const override { return true; }
  // For tools: count(*) of the table; pg_total_relation_size of the table
  // and its change record.
  std::optional<std::uint64_t> count() override;
  std::optional<std::uint64_t> bytes() override;
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
