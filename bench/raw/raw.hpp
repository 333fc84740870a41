// The raw baselines: SQLite, libpq and hiredis doing a map's writes and
// reads by hand, nothing of ours in between. bench/pmap_bench and
// `pmapctl bench` report their figures beside these, as ratios.
//
// Each throws std::runtime_error naming what failed. Not thread-safe: one
// object, one thread.
#pragma once

#include <chrono>
#include <cstddef>
#include <filesystem>
#include <string>
#include <vector>

#ifdef PMAP_RAW_POSTGRES
struct pg_conn;
struct pg_result;
#endif
#ifdef PMAP_RAW_REDIS
struct redisContext;
#endif
struct sqlite3;
struct sqlite3_stmt;

namespace pmap::raw {

// ops divided by the seconds since start.
double per_second(std::size_t ops, std::chrono::steady_clock::time_point start);

// What a workload writes: keys[i] gets values[i].
struct Entries {
  std::vector<std::string> keys, values;
};

// One SQLite file, one WITHOUT ROWID table `kv` of text keys and values,
// synchronous=FULL, the given journal mode ("WAL", "DELETE", ...).
class Sqlite {
 public:
  Sqlite(const std::filesystem::path& path, const char* journal_mode);
  ~Sqlite();
  Sqlite(const Sqlite&) = delete;
  Sqlite& operator=(const Sqlite&) = delete;

  void exec(const char* sql);
  // One upsert in its own transaction (unless one is open).
  void put(const std::string& key, const std::string& value);
  // `ops` upserts (cycling through e), `per_txn` to a transaction: writes
  // per second.
  double put_batched(const Entries& e, std::size_t ops, std::size_t per_txn);

 private:
  sqlite3* db_ = nullptr;
  sqlite3_stmt* upsert_ = nullptr;
};

// Appends "key,value\n" lines to `path` (created or truncated), `per_batch`
// lines to a write() and an fdatasync(): writes per second.
double append_csv(const std::filesystem::path& path, const Entries& e, std::size_t per_batch);

#ifdef PMAP_RAW_POSTGRES
// Raw libpq on a table of its own (bytea key and value), created here.
class Postgres {
 public:
  // conninfo: anything PQconnectdb takes.
  Postgres(const std::string& conninfo, const std::string& table);
  ~Postgres();
  Postgres(const Postgres&) = delete;
  Postgres& operator=(const Postgres&) = delete;

  void exec(const std::string& sql);
  // One upsert, one round trip, its own transaction.
  void put(const std::string& key, const std::string& value);
  bool get(const std::string& key);
  // Every entry, per_txn to a transaction, each transaction's statements
  // pipelined (one round trip): writes per second.
  double put_batched(const Entries& e, std::size_t per_txn);
  // DROP TABLE.
  void drop();

 private:
  void prepare(const char* name, const std::string& sql);
  void finish(pg_result* r);
  pg_conn* c_;
  std::string table_;
};
#endif

#ifdef PMAP_RAW_REDIS
// Where a Redis server is: host and port, or a Unix socket.
struct RedisServer {
  std::string host = "127.0.0.1";
  int port = 6379;
  std::string socket{};
  std::string user{}, password{};
  int db = 0;
};

// Raw hiredis writing one hash.
class Redis {
 public:
  Redis(const RedisServer& server, std::string hash);
  ~Redis();
  Redis(const Redis&) = delete;
  Redis& operator=(const Redis&) = delete;

  // One HSET, one round trip.
  void put(const std::string& key, const std::string& value);
  bool get(const std::string& key);
  // Every entry, per_txn to a MULTI/EXEC, each transaction pipelined (one
  // round trip); with `keys`, one key per entry (SET) instead of one hash.
  // Writes per second.
  double put_batched(const Entries& e, std::size_t per_txn, bool keys = false);
  // The server's dataset.bytes (MEMORY STATS).
  long long dataset_bytes();
  // Deletes every key that starts with `prefix`.
  void drop(const std::string& prefix);

 private:
  void reply(void* r);
  std::string hash_;
  redisContext* c_;
};
#endif

}  // namespace pmap::raw
