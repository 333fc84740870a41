// The raw baselines (raw.hpp).
#include "raw.hpp"

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <string_view>
#ifdef PMAP_RAW_POSTGRES
#include <libpq-fe.h>
#endif
#ifdef PMAP_RAW_REDIS
#include <hiredis/hiredis.h>
#endif

namespace pmap::raw {
using Clock = std::chrono::steady_clock;

double per_second(std::size_t ops, Clock::time_point start) {
  const double s = std::chrono::duration<double>(Clock::now() - start).count();
  return s > 0 ? static_cast<double>(ops) / s : 0;
}

// ---- SQLite ------------------------------------------------------------------------

Sqlite::Sqlite(const std::filesystem::path& path, const char* journal_mode) {
  if (sqlite3_open(path.c_str(), &db_) != SQLITE_OK) {
    const std::string why = sqlite3_errmsg(db_);
    sqlite3_close(db_);
    throw std::runtime_error(path.string() + ": " + why);
  }
  try {
    exec((std::string("PRAGMA journal_mode=") + journal_mode).c_str());
    exec("PRAGMA synchronous=FULL");
    exec(
        "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) "
        "WITHOUT ROWID");
    if (sqlite3_prepare_v2(db_,
                           "INSERT INTO kv (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE "
                           "SET value = excluded.value",
                           -1, &upsert_, nullptr) != SQLITE_OK)
      throw std::runtime_error(sqlite3_errmsg(db_));
  } catch (...) {
    sqlite3_close(db_);
    throw;
  }
}

Sqlite::~Sqlite() {
  sqlite3_finalize(upsert_);
  sqlite3_close(db_);
}

void Sqlite::exec(const char* sql) {
  if (sqlite3_exec(db_, sql, nullptr, nullptr, nullptr) != SQLITE_OK)
    throw std::runtime_error(std::string(sql) + ": " + sqlite3_errmsg(db_));
}

void Sqlite::put(const std::string& key, const std::string& value) {
  sqlite3_bind_text(upsert_, 1, key.data(), static_cast<int>(key.size()), SQLITE_STATIC);
  sqlite3_bind_text(upsert_, 2, value.data(), static_cast<int>(value.size()), SQLITE_STATIC);
  const int rc = sqlite3_step(upsert_);
  sqlite3_reset(upsert_);
  if (rc != SQLITE_DONE) throw std::runtime_error(sqlite3_errmsg(db_));
}

double Sqlite::put_batched(const Entries& e, std::size_t ops, std::size_t per_txn) {
  const auto start = Clock::now();
  for (std::size_t i = 0; i < ops; ++i) {
    if (i % per_txn == 0) exec("BEGIN");
    put(e.keys[i % e.keys.size()], e.values[i % e.keys.size()]);
    if (i % per_txn == per_txn - 1 || i + 1 == ops) exec("COMMIT");
  }
  return per_second(ops, start);
}

// ---- CSV ---------------------------------------------------------------------------

double append_csv(const std::filesystem::path& path, const Entries& e, std::size_t per_batch) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("cannot create " + path.string());
  const std::size_t n = e.keys.size();
  const auto start = Clock::now();
  for (std::size_t i = 0; i < n; i += per_batch) {
    std::string chunk;
    for (std::size_t j = i; j < std::min(n, i + per_batch); ++j)
      chunk += e.keys[j] + "," + e.values[j] + "\n";
    if (::write(fd, chunk.data(), chunk.size()) != static_cast<ssize_t>(chunk.size()) ||
        ::fdatasync(fd) != 0) {
      ::close(fd);
      throw std::runtime_error("cannot write " + path.string());
    }
  }
  const double rate = per_second(n, start);
  ::close(fd);
  return rate;
}

#ifdef PMAP_RAW_POSTGRES
// ---- PostgreSQL --------------------------------------------------------------------

namespace {
constexpr int kBinary[2] = {1, 1};

struct Params {
  const char* values[2];
  int lengths[2];
  Params(const std::string& a, const std::string& b)
      : values{a.data(), b.data()},
        lengths{static_cast<int>(a.size()), static_cast<int>(b.size())} {}
};
}  // namespace

Postgres::Postgres(const std::string& conninfo, const std::string& table)
    : c_(PQconnectdb(conninfo.c_str())), table_(table) {
  if (PQstatus(c_) != CONNECTION_OK) {
    const std::string why = PQerrorMessage(c_);
    PQfinish(c_);
    throw std::runtime_error("raw libpq: " + why);
  }
  try {
    exec("CREATE TABLE \"" + table + "\" (key bytea PRIMARY KEY, value bytea NOT NULL)");
    prepare("up", "INSERT INTO \"" + table +
                      "\" VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value");
    prepare("get", "SELECT value FROM \"" + table + "\" WHERE key = $1");
  } catch (...) {
    PQfinish(c_);
    throw;
  }
}

Postgres::~Postgres() { PQfinish(c_); }

void Postgres::exec(const std::string& sql) {
  PGresult* r = PQexec(c_, sql.c_str());
  const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
  PQclear(r);
  if (!ok) throw std::runtime_error(sql + ": " + PQerrorMessage(c_));
}

void Postgres::put(const std::string& key, const std::string& value) {
  const Params p(key, value);
  finish(PQexecPrepared(c_, "up", 2, p.values, p.lengths, kBinary, 1));
}

bool Postgres::get(const std::string& key) {
  const Params p(key, key);
  PGresult* r = PQexecPrepared(c_, "get", 1, p.values, p.lengths, kBinary, 1);
  const bool found = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
  PQclear(r);
  return found;
}

double Postgres::put_batched(const Entries& e, std::size_t per_txn) {
  const std::size_t n = e.keys.size();
  const auto start = Clock::now();
  for (std::size_t i = 0; i < n; i += per_txn) {
    PQenterPipelineMode(c_);
    PQsendQueryParams(c_, "BEGIN", 0, nullptr, nullptr, nullptr, nullptr, 0);
    const std::size_t end = std::min(n, i + per_txn);
    for (std::size_t j = i; j < end; ++j) {
      const Params p(e.keys[j], e.values[j]);
      PQsendQueryPrepared(c_, "up", 2, p.values, p.lengths, kBinary, 1);
    }
    PQsendQueryParams(c_, "COMMIT", 0, nullptr, nullptr, nullptr, nullptr, 0);
    PQpipelineSync(c_);
    for (std::size_t r = 0; r < end - i + 2; ++r) {
      finish(PQgetResult(c_));
      while (PGresult* rest = PQgetResult(c_)) PQclear(rest);
    }
    PQclear(PQgetResult(c_));  // the sync
    PQexitPipelineMode(c_);
  }
  return per_second(n, start);
}

void Postgres::drop() { exec("DROP TABLE IF EXISTS \"" + table_ + "\""); }

void Postgres::prepare(const char* name, const std::string& sql) {
  finish(PQprepare(c_, name, sql.c_str(), 0, nullptr));
}

void Postgres::finish(PGresult* r) {
  const auto st = PQresultStatus(r);
  PQclear(r);
  if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
    throw std::runtime_error(std::string("raw libpq: ") + PQerrorMessage(c_));
}
#endif

#ifdef PMAP_RAW_REDIS
// ---- Redis -------------------------------------------------------------------------

Redis::Redis(const RedisServer& server, std::string hash) : hash_(std::move(hash)) {
  c_ = server.socket.empty() ? redisConnect(server.host.c_str(), server.port)
                             : redisConnectUnix(server.socket.c_str());
  const std::string where =
      server.socket.empty() ? server.host + ":" + std::to_string(server.port) : server.socket;
  if (!c_ || c_->err) {
    const std::string why = c_ ? c_->errstr : "out of memory";
    redisFree(c_);
    throw std::runtime_error("raw hiredis: cannot connect to " + where + ": " + why);
  }
  const auto must = [&](void* r, const char* what) {
    auto* rep = static_cast<redisReply*>(r);
    const bool ok = rep && rep->type != REDIS_REPLY_ERROR;
    freeReplyObject(rep);
    if (!ok) {
      redisFree(c_);
      throw std::runtime_error(std::string("raw hiredis: ") + what + " failed on " + where);
    }
  };
  if (!server.password.empty()) {
    if (server.user.empty())
      must(redisCommand(c_, "AUTH %b", server.password.data(), server.password.size()), "AUTH");
    else
      must(redisCommand(c_, "AUTH %b %b", server.user.data(), server.user.size(),
                        server.password.data(), server.password.size()),
           "AUTH");
  }
  if (server.db != 0) must(redisCommand(c_, "SELECT %d", server.db), "SELECT");
}

Redis::~Redis() { redisFree(c_); }

void Redis::put(const std::string& key, const std::string& value) {
  reply(redisCommand(c_, "HSET %b %b %b", hash_.data(), hash_.size(), key.data(), key.size(),
                     value.data(), value.size()));
}

bool Redis::get(const std::string& key) {
  auto* r = static_cast<redisReply*>(
      redisCommand(c_, "HGET %b %b", hash_.data(), hash_.size(), key.data(), key.size()));
  const bool found = r && r->type == REDIS_REPLY_STRING;
  freeReplyObject(r);
  return found;
}

double Redis::put_batched(const Entries& e, std::size_t per_txn, bool keys) {
  const std::size_t n = e.keys.size();
  const auto start = Clock::now();
  for (std::size_t i = 0; i < n; i += per_txn) {
    const std::size_t end = std::min(n, i + per_txn);
    redisAppendCommand(c_, "MULTI");
    for (std::size_t j = i; j < end; ++j) {
      const std::string& k = e.keys[j];
      const std::string& v = e.values[j];
      if (keys) {
        const std::string key = hash_ + ":" + k;
        redisAppendCommand(c_, "SET %b %b", key.data(), key.size(), v.data(), v.size());
      } else {
        redisAppendCommand(c_, "HSET %b %b %b", hash_.data(), hash_.size(), k.data(), k.size(),
                           v.data(), v.size());
      }
    }
    redisAppendCommand(c_, "EXEC");
    for (std::size_t r = 0; r < end - i + 2; ++r) {
      void* out = nullptr;
      if (redisGetReply(c_, &out) != REDIS_OK)
        throw std::runtime_error("raw hiredis: connection lost");
      freeReplyObject(out);
    }
  }
  return per_second(n, start);
}

long long Redis::dataset_bytes() {
  auto* r = static_cast<redisReply*>(redisCommand(c_, "MEMORY STATS"));
  long long bytes = 0;
  for (std::size_t i = 0; r && i + 1 < r->elements; i += 2)
    if (std::string_view(r->element[i]->str, r->element[i]->len) == "dataset.bytes")
      bytes = r->element[i + 1]->integer;
  freeReplyObject(r);
  return bytes;
}

void Redis::drop(const std::string& prefix) {
  std::string cursor = "0";
  const std::string match = prefix + "*";
  do {
    auto* r = static_cast<redisReply*>(redisCommand(c_, "SCAN %s MATCH %b COUNT 1000",
                                                    cursor.c_str(), match.data(), match.size()));
    if (!r || r->type != REDIS_REPLY_ARRAY) {
      freeReplyObject(r);
      throw std::runtime_error("raw hiredis: SCAN failed");
    }
    cursor = r->element[0]->str;
    for (std::size_t i = 0; i < r->element[1]->elements; ++i) {
      const redisReply* k = r->element[1]->element[i];
      reply(redisCommand(c_, "DEL %b", k->str, k->len));  // freed now, not lazily
    }
    freeReplyObject(r);
  } while (cursor != "0");
}

void Redis::reply(void* r) {
  auto* rep = static_cast<redisReply*>(r);
  if (!rep) throw std::runtime_error("raw hiredis: connection lost");
  const bool error = rep->type == REDIS_REPLY_ERROR;
  const std::string why = error ? std::string(rep->str, rep->len) : "";
  freeReplyObject(rep);
  if (error) throw std::runtime_error("raw hiredis: " + why);
}
#endif

}  // namespace pmap::raw
