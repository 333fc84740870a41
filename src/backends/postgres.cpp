// The PostgreSQL backend. See pmap/backends/postgres.hpp and docs/formats.md.
//
// Raw libpq behind a thin layer of our own (Conn, Result, Params, Pipeline
// below). Every statement is prepared once per connection and takes and
// returns binary values: keys and values are bytea, numbers int8, so NUL
// bytes and any other byte round-trip.
//
// A commit is one transaction sent in one round trip in pipeline mode:
//   BEGIN; advisory lock; [DELETE all]; [DELETE keys]; [INSERT ... ON CONFLICT];
//   INSERT into the change record; pg_notify; COMMIT
// The transaction-scoped advisory lock (one per table) makes commits on a
// table take turns, so the change record's positions (max + 1, read after
// the lock) are contiguous and in commit order: a reader that sees position
// n sees every position before it. A batch with conditional writes first
// reads their keys under the lock (its own round trip), decides here which
// apply, and sends the rest.
//
// The session that commits also knows each of its commits by (origin, seq),
// stored in the record's row: after a connection broke mid-commit, it
// reconnects, ends the old server session if it still runs, and looks that
// row up to learn whether the commit happened.

#include "pmap/backends/postgres.hpp"

#include <absl/container/flat_hash_map.h>
#include <libpq-fe.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <deque>
#include <thread>
#include <utility>
#include <vector>

#include "../errors.hpp"
#include "builtin.hpp"
#include "change_record.hpp"
#include "file_util.hpp"
#include "pmap/error.hpp"
#include "server_uri.hpp"
#include "wake_fd.hpp"

namespace pmap {

namespace {

constexpr std::size_t kMaxTableName = 54;    // "pmap_log_" + name fits in 63 bytes
constexpr std::uint64_t kTrimEvery = 1024;   // commits between two trims of the record
constexpr std::int64_t kKeepRecord = 16384;  // transactions the record keeps
constexpr std::chrono::milliseconds kOwnWakeDelay{10};

// One line of libpq's message (it ends its messages with "\n", and puts a
// hint on a second line).
std::string one_line(const char* message) {
  std::string out(message ? message : "");
  while (!out.empty() && std::isspace(static_cast<unsigned char>(out.back()))) out.pop_back();
  for (char& c : out)
    if (c == '\n' || c == '\t') c = ' ';
  std::string squeezed;
  for (char c : out)
    if (!(c == ' ' && !squeezed.empty() && squeezed.back() == ' ')) squeezed += c;
  return squeezed;
}

// FNV-1a: the advisory lock's key for a table, the same in every process.
std::int64_t lock_key(std::string_view table) {
  std::uint64_t h = 14695981039346656037ull;
  for (const char c : std::string("pmap:") + std::string(table)) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  return static_cast<std::int64_t>(h);
}

void put_be(std::string& out, std::uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
}

std::string int8(std::int64_t v) {
  std::string out;
  put_be(out, static_cast<std::uint64_t>(v), 8);
  return out;
}

std::int64_t get_int8(const char* p) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return static_cast<std::int64_t>(v);
}

// A one-dimensional bytea[] in PostgreSQL's binary array format.
template <class Range>
std::string bytea_array(const Range& items) {
  constexpr std::uint32_t kByteaOid = 17;
  std::string out;
  const std::size_t n = std::size(items);
  put_be(out, 1, 4);  // dimensions
  put_be(out, 0, 4);  // no NULLs
  put_be(out, kByteaOid, 4);
  put_be(out, n, 4);  // length of the dimension
  put_be(out, 1, 4);  // lower bound
  for (const auto& item : items) {
    const std::string_view bytes(item);
    put_be(out, bytes.size(), 4);
    out.append(bytes);
  }
  return out;
}

struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};
using Result = std::unique_ptr<PGresult, ResultDeleter>;

struct ConnDeleter {
  void operator()(PGconn* c) const { PQfinish(c); }
};
using Conn = std::unique_ptr<PGconn, ConnDeleter>;

// The parameters of one statement, all binary (or text where asked).
class Params {
 public:
  Params& bytes(std::string value, int format = 1) {
    owned_.push_back(std::move(value));  // a deque: earlier elements stay put
    values_.push_back(owned_.back().data());
    lengths_.push_back(static_cast<int>(owned_.back().size()));
    formats_.push_back(format);
    return *this;
  }
  Params& integer(std::int64_t v) { return bytes(int8(v)); }
  int size() const { return static_cast<int>(owned_.size()); }
  const char* const* values() const { return values_.data(); }
  const int* lengths() const { return lengths_.data(); }
  const int* formats() const { return formats_.data(); }

 private:
  std::deque<std::string> owned_;
  std::vector<const char*> values_;
  std::vector<int> lengths_;
  std::vector<int> formats_;
};

bool ok(const PGresult* r) {
  const auto s = PQresultStatus(r);
  return s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK || s == PGRES_SINGLE_TUPLE;
}

std::string_view cell(const PGresult* r, int row, int col) {
  return {PQgetvalue(r, row, col), static_cast<std::size_t>(PQgetlength(r, row, col))};
}

// The connection broke (as opposed to a statement the server refused).
bool connection_lost(PGconn* c, const PGresult* r) {
  if (!c || PQstatus(c) == CONNECTION_BAD) return true;
  const char* state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
  if (!state) return false;
  const std::string_view s(state);
  // Class 08: connection exception; 57P01-57P03: the server is shutting down.
  return s.substr(0, 2) == "08" || s == "57P01" || s == "57P02" || s == "57P03";
}

// Thrown inside the backend when the connection broke: the caller decides
// whether the work may have happened.
struct Lost {
  std::string message;
};

}  // namespace

struct PostgresBackend::Impl {
  // The parsed conninfo with our defaults added. The password stays in
  // here: messages and describe() use `where`.
  std::vector<std::pair<std::string, std::string>> params;
  PostgresOptions options;
  std::string where;                // postgres://user@host:port/db#table
  std::string table, log, channel;  // quoted table names; the NOTIFY channel
  std::int64_t lock = 0;            // the table's advisory lock
  std::uint64_t origin = 0;
  bool listen = false;           // a reader session: LISTEN on every connection
  std::uint64_t seq = 0;         // this session's commits (the record's seq column)
  std::uint64_t since_trim = 0;  // commits since the record was last trimmed
  Conn conn;
  std::string server_pid, server_started;  // of conn's server session, as text

  Impl(const std::string& conninfo, PostgresOptions opts);
  Impl(const Impl& parent, bool listen);  // a reader session's
  // table, log, channel and lock, from options.table.
  void name_objects();

  // Connects (again) and prepares the statements; a reader also LISTENs.
  // Errc::io when the server cannot be reached or refuses.
  void open_session();
  void connect();
  void prepare_all();
  // Reconnects when the connection broke.
  void live() {
    if (!conn || PQstatus(conn.get()) != CONNECTION_OK) open_session();
  }

  [[noreturn]] void fail(const PGresult* r, const std::string& doing);
  Result exec(const std::string& sql, const std::string& doing);
  // The one number a query returns (count(*), a size); Errc::io when the
  // connection is lost.
  std::uint64_t number(const std::string& sql, const char* doing);
  Result run(const char* statement, Params& p, const std::string& doing);
  struct Step {
    // A prepared statement's name (with params, maybe empty), or SQL
    // without parameters (params nullptr).
    const char* statement;
    Params* params = nullptr;
  };
  std::vector<Result> pipeline(const std::vector<Step>& steps, const std::string& doing);
  // After a failed statement inside BEGIN: back to no transaction.
  void rollback();

  void create_or_check();
  std::uint64_t head();
  void scan_rows(ScanSink& sink);
  std::uint64_t scan_at(ScanSink& sink);
  std::optional<std::string> get_one(std::string_view key);
  // key -> value for the keys that exist (one statement).
  absl::flat_hash_map<std::string, std::string> values_of(std::vector<std::string_view> keys);
  Durability commit(std::span<const Write> batch, std::span<const Expect> expect, std::uint64_t tag,
                    std::vector<Conflict>& conflicts);
  bool resolve(std::uint64_t seq_no, const std::string& why);
};

PostgresBackend::Impl::Impl(const std::string& conninfo, PostgresOptions opts)
    : options(std::move(opts)) {
  if (!detail::valid_table_name(options.table, kMaxTableName))
    throw Error(Errc::invalid_argument,
                "PostgreSQL table name \"" + options.table +
                    "\" is not allowed: use letters, digits and _ (not starting with a digit "
                    "or with pmap_), at most 54 characters");
  char* error = nullptr;
  PQconninfoOption* parsed = PQconninfoParse(conninfo.c_str(), &error);
  if (!parsed) {
    const std::string message = one_line(error);
    PQfreemem(error);
    throw Error(Errc::invalid_argument,
                "PostgreSQL connection string " + redact_uri(conninfo) + ": " + message);
  }
  bool timeout = false, app = false;
  std::string user, host, port, db;
  for (PQconninfoOption* o = parsed; o->keyword; ++o) {
    if (!o->val) continue;
    const std::string k = o->keyword;
    params.emplace_back(k, o->val);
    if (k == "connect_timeout") timeout = true;
    if (k == "application_name" || k == "fallback_application_name") app = true;
    if (k == "user") user = o->val;
    if (k == "host" || (k == "hostaddr" && host.empty())) host = o->val;
    if (k == "port") port = o->val;
    if (k == "dbname") db = o->val;
  }
  PQconninfoFree(parsed);
  if (!timeout) params.emplace_back("connect_timeout", "10");
  if (!app) params.emplace_back("fallback_application_name", "persistent-map");
  const auto env = [](const char* name, std::string& into) {
    const char* v = std::getenv(name);
    if (into.empty() && v) into = v;
  };
  env("PGUSER", user);
  env("PGHOST", host);
  env("PGPORT", port);
  env("PGDATABASE", db);
  where = "postgres://" + (user.empty() ? "" : user + "@") + (host.empty() ? "localhost" : host) +
          ":" + (port.empty() ? "5432" : port) + "/" + db + "#" + options.table;
  origin = detail::random_origin();
  name_objects();
}

PostgresBackend::Impl::Impl(const Impl& parent, bool listen_)
    : params(parent.params),
      options(parent.options),
      where(parent.where),
      origin(parent.origin),
      listen(listen_) {
  name_objects();
}

void PostgresBackend::Impl::name_objects() {
  table = "\"" + options.table + "\"";
  log = "\"pmap_log_" + options.table + "\"";
  channel = "pmap_" + options.table;
  lock = lock_key(options.table);
}

void PostgresBackend::Impl::connect() {
  std::vector<const char*> keys, values;
  for (const auto& [k, v] : params) {
    keys.push_back(k.c_str());
    values.push_back(v.c_str());
  }
  keys.push_back(nullptr);
  values.push_back(nullptr);
  conn.reset(PQconnectdbParams(keys.data(), values.data(), 0));
  if (!conn) throw Error(Errc::io, where + ": cannot connect: out of memory");
  if (PQstatus(conn.get()) != CONNECTION_OK) {
    const std::string message = one_line(PQerrorMessage(conn.get()));
    conn.reset();
    throw Error(Errc::io, where + ": cannot connect: " + message +
                              " (check that the server runs, and the host, port, user and "
                              "password)");
  }
  const Result who = exec(
      "SELECT pg_backend_pid()::text, backend_start::text FROM pg_stat_activity "
      "WHERE pid = pg_backend_pid()",
      "cannot start a session");
  const bool found = PQntuples(who.get()) == 1;
  server_pid = found ? PQgetvalue(who.get(), 0, 0) : "";
  server_started = found ? PQgetvalue(who.get(), 0, 1) : "";
}

void PostgresBackend::Impl::open_session() {
  connect();
  prepare_all();
  if (listen) exec("LISTEN \"" + channel + "\"", "cannot listen for changes");
}

void PostgresBackend::Impl::prepare_all() {
  const std::pair<const char*, std::string> statements[] = {
      {"lock", "SELECT pg_advisory_xact_lock($1::int8)"},
      {"get", "SELECT value FROM " + table + " WHERE key = $1::bytea"},
      // Keys given as an array are joined, never matched with = ANY: a plan
      // that filters a scan by = ANY compares every row with every key.
      {"values", "SELECT t.key, t.value FROM " + table +
                     " t JOIN unnest($1::bytea[]) AS k(key) ON t.key = k.key"},
      {"scan", "SELECT key, value FROM " + table},
      {"put", "INSERT INTO " + table +
                  " (key, value) SELECT * FROM unnest($1::bytea[], $2::bytea[]) "
                  "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"},
      {"erase",
       "DELETE FROM " + table + " t USING unnest($1::bytea[]) AS k(key) WHERE t.key = k.key"},
      {"clear", "DELETE FROM " + table},
      {"record", "INSERT INTO " + log +
                     " (pos, origin, seq, tag, ops) SELECT coalesce(max(pos), 0) + 1, $1::int8, "
                     "$2::int8, $3::int8, $4::bytea FROM " +
                     log + " RETURNING pos"},
      {"notify", "SELECT pg_notify($1::text, $2::text)"},
      {"trim",
       "DELETE FROM " + log + " WHERE pos <= (SELECT max(pos) FROM " + log + ") - $1::int8"},
      {"head", "SELECT coalesce(max(pos), 0) FROM " + log},
      {"changes",
       "SELECT pos, origin, tag, ops FROM " + log + " WHERE pos > $1::int8 ORDER BY pos"},
      {"committed", "SELECT 1 FROM " + log + " WHERE origin = $1::int8 AND seq = $2::int8"},
  };
  for (const auto& [name, sql] : statements) {
    const Result r(PQprepare(conn.get(), name, sql.c_str(), 0, nullptr));
    if (!ok(r.get())) fail(r.get(), "cannot prepare a statement");
  }
}

void PostgresBackend::Impl::fail(const PGresult* r, const std::string& doing) {
  PGconn* c = conn.get();
  // No result at all (a send, a sync or a read that failed in libpq) is
  // taken for a broken connection too: a commit then looks itself up
  // rather than guess.
  const bool lost = !r || connection_lost(c, r);
  std::string message = one_line(r ? PQresultErrorMessage(r) : "");
  if (message.empty() && c) message = one_line(PQerrorMessage(c));
  if (message.empty()) message = "the connection to the server broke";
  if (lost) {
    conn.reset();  // the next call reconnects
    throw Lost{message};
  }
  const char* state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
  if (state) message += std::string(" (SQLSTATE ") + state + ")";
  rollback();
  throw Error(Errc::io, where + ": " + doing + ": " + message);
}

void PostgresBackend::Impl::rollback() {
  if (!conn) return;
  const auto status = PQtransactionStatus(conn.get());
  if (status == PQTRANS_INTRANS || status == PQTRANS_INERROR)
    Result(PQexec(conn.get(), "ROLLBACK"));
}

Result PostgresBackend::Impl::exec(const std::string& sql, const std::string& doing) {
  Result r(PQexec(conn.get(), sql.c_str()));
  if (!ok(r.get())) fail(r.get(), doing);
  return r;
}

Result PostgresBackend::Impl::run(const char* statement, Params& p, const std::string& doing) {
  Result r(
      PQexecPrepared(conn.get(), statement, p.size(), p.values(), p.lengths(), p.formats(), 1));
  if (!ok(r.get())) fail(r.get(), doing);
  return r;
}

// The steps in one round trip (pipeline mode); their results, in order.
// A step the server refuses fails the whole pipeline (and the transaction
// it is in).
std::vector<Result> PostgresBackend::Impl::pipeline(const std::vector<Step>& steps,
                                                    const std::string& doing) {
  PGconn* c = conn.get();
  if (PQenterPipelineMode(c) != 1) fail(nullptr, doing);
  bool sent = true;
  for (const Step& s : steps) {
    const int rc =
        s.params ? PQsendQueryPrepared(c, s.statement, s.params->size(), s.params->values(),
                                       s.params->lengths(), s.params->formats(), 1)
                 : PQsendQueryParams(c, s.statement, 0, nullptr, nullptr, nullptr, nullptr, 1);
    if (rc != 1) {
      sent = false;
      break;
    }
  }
  if (!sent || PQpipelineSync(c) != 1) fail(nullptr, doing);
  std::vector<Result> results;
  Result first_error;
  for (std::size_t i = 0; i < steps.size(); ++i) {
    Result r(PQgetResult(c));
    if (!r) fail(nullptr, doing);
    while (PGresult* rest = PQgetResult(c)) PQclear(rest);  // each step's results end with NULL
    if (!ok(r.get()) && !first_error && PQresultStatus(r.get()) != PGRES_PIPELINE_ABORTED)
      first_error = std::move(r);
    results.push_back(std::move(r));
  }
  for (;;) {
    Result r(PQgetResult(c));
    if (!r) fail(nullptr, doing);
    if (PQresultStatus(r.get()) == PGRES_PIPELINE_SYNC) break;
  }
  if (PQexitPipelineMode(c) != 1) fail(nullptr, doing);
  if (first_error) fail(first_error.get(), doing);
  return results;
}

void PostgresBackend::Impl::create_or_check() {
  const std::string doing = "cannot create or check the table";
  const auto exists = [&](const std::string& quoted) {
    const Result r = exec("SELECT to_regclass('" + quoted + "') IS NOT NULL", doing);
    return std::string_view(PQgetvalue(r.get(), 0, 0)) == "t";
  };
  if (options.read_only) {
    for (const std::string* t : {&table, &log})
      if (!exists(*t))
        throw Error(Errc::invalid_argument,
                    where + ": there is no table " + *t +
                        " (a read-only opener creates nothing; is the table name right?)");
  } else {
    // Under the table's lock: two processes opening a new table at once.
    exec("BEGIN", doing);
    exec("SELECT pg_advisory_xact_lock(" + std::to_string(lock) + ")", doing);
    if (!exists(table))
      exec("CREATE TABLE " + table + " (key bytea PRIMARY KEY, value bytea NOT NULL)", doing);
    if (!exists(log))
      exec("CREATE TABLE " + log +
               " (pos bigint PRIMARY KEY, origin bigint NOT NULL, seq bigint NOT NULL, "
               "tag bigint NOT NULL, ops bytea NOT NULL)",
           doing);
    exec("COMMIT", doing);
  }
  // Its columns and primary key, as "name type, ... | primary key columns".
  const auto shape = [&](const std::string& quoted) {
    const Result r = exec(
        "SELECT (SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' "
        "ORDER BY attnum) FROM pg_attribute WHERE attrelid = '" +
            quoted +
            "'::regclass AND attnum > 0 AND NOT attisdropped), "
            "(SELECT string_agg(a.attname, ', ') FROM pg_index i JOIN pg_attribute a "
            "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) WHERE i.indrelid = '" +
            quoted + "'::regclass AND i.indisprimary)",
        doing);
    return std::pair<std::string, std::string>(PQgetvalue(r.get(), 0, 0),
                                               PQgetvalue(r.get(), 0, 1));
  };
  const auto check = [&](const std::string& quoted, const std::string& columns,
                         const std::string& key) {
    const auto [has, pk] = shape(quoted);
    if (has == columns && pk == key) return;
    throw Error(Errc::invalid_argument,
                where + ": table " + quoted + " has columns (" + has + ") with primary key (" + pk +
                    "), not (" + columns + ") with primary key (" + key +
                    "): it was left unchanged; choose another table (table=NAME)");
  };
  check(table, "key bytea, value bytea", "key");
  check(log, "pos bigint, origin bigint, seq bigint, tag bigint, ops bytea", "pos");
}

std::uint64_t PostgresBackend::Impl::head() {
  Params none;
  const Result r = run("head", none, "cannot read the change record");
  return static_cast<std::uint64_t>(get_int8(PQgetvalue(r.get(), 0, 0)));
}

void PostgresBackend::Impl::scan_rows(ScanSink& sink) {
  PGconn* c = conn.get();
  if (PQsendQueryPrepared(c, "scan", 0, nullptr, nullptr, nullptr, 1) != 1)
    fail(nullptr, "cannot read the table");
  PQsetSingleRowMode(c);  // rows as they come: a big table is never held whole
  Result error;
  std::exception_ptr thrown;
  while (Result r{PQgetResult(c)}) {
    const auto status = PQresultStatus(r.get());
    if (status == PGRES_SINGLE_TUPLE && !thrown) {
      try {
        sink(cell(r.get(), 0, 0), cell(r.get(), 0, 1));
      } catch (...) {
        thrown = std::current_exception();  // read on to the end, then throw it
      }
    } else if (!ok(r.get()) && !error) {
      error = std::move(r);
    }
  }
  if (error) fail(error.get(), "cannot read the table");
  if (thrown) std::rethrow_exception(thrown);
}

std::uint64_t PostgresBackend::Impl::scan_at(ScanSink& sink) {
  const std::string doing = "cannot read the table";
  try {
    live();
    exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", doing);
    const std::uint64_t at = head();
    scan_rows(sink);
    exec("COMMIT", doing);
    return at;
  } catch (const Lost& lost) {
    throw Error(Errc::io, where + ": " + doing + ": " + lost.message);
  } catch (...) {
    rollback();
    throw;
  }
}

std::optional<std::string> PostgresBackend::Impl::get_one(std::string_view key) {
  try {
    live();
    Params p;
    p.bytes(std::string(key));
    const Result r = run("get", p, "cannot read key " + detail::shown_key(key));
    if (PQntuples(r.get()) == 0) return std::nullopt;
    return std::string(cell(r.get(), 0, 0));
  } catch (const Lost& lost) {
    throw Error(Errc::io,
                where + ": cannot read key " + detail::shown_key(key) + ": " + lost.message);
  }
}

absl::flat_hash_map<std::string, std::string> PostgresBackend::Impl::values_of(
    std::vector<std::string_view> keys) {
  absl::flat_hash_map<std::string, std::string> out;
  if (keys.empty()) return out;
  Params p;
  p.bytes(bytea_array(keys));
  const Result r = run("values", p, "cannot read values");
  for (int i = 0; i < PQntuples(r.get()); ++i)
    out.emplace(std::string(cell(r.get(), i, 0)), std::string(cell(r.get(), i, 1)));
  return out;
}

Durability PostgresBackend::Impl::commit(std::span<const Write> batch,
                                         std::span<const Expect> expect, std::uint64_t tag,
                                         std::vector<Conflict>& conflicts) {
  conflicts.clear();
  if (options.read_only)
    throw Error(Errc::invalid_argument,
                where + ": opened read-only (PostgresOptions::read_only); it cannot be written");
  if (batch.empty()) return Durability::now;
  try {
    live();
  } catch (const Lost& lost) {
    throw Error(Errc::io, where + ": cannot commit, nothing was written: " + lost.message);
  }
  const std::string doing = "cannot commit";
  Params lock_params;
  lock_params.integer(lock);
  bool begun = false;  // BEGIN and the lock sent (a conditional batch's first round trip)
  bool sent = false;   // the COMMIT sent: a broken connection leaves the outcome in doubt
  const std::uint64_t seq_no = ++seq;
  try {
    // What each conditional write compares with: its key's stored value,
    // read under the lock (nothing else commits on the table meanwhile).
    absl::flat_hash_map<std::size_t, const std::optional<std::string>*> expected;
    absl::flat_hash_map<std::string, std::string> stored;
    if (!expect.empty()) {
      std::vector<std::string_view> keys;
      for (const Expect& e : expect) {
        expected[e.index] = &e.value;
        keys.push_back(batch[e.index].key);
      }
      Params key_params;
      key_params.bytes(bytea_array(keys));
      begun = true;
      auto results = pipeline({{"BEGIN"}, {"lock", &lock_params}, {"values", &key_params}}, doing);
      const PGresult* r = results[2].get();
      for (int i = 0; i < PQntuples(r); ++i)
        stored.emplace(std::string(cell(r, i, 0)), std::string(cell(r, i, 1)));
    }
    // The batch applied in order to what it changes: per key, the last
    // state, after the last clear.
    absl::flat_hash_map<std::string_view, const std::string*> state;  // nullptr: erased
    bool cleared = false;
    std::string ops;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const Write& w = batch[i];
      if (const auto e = expected.find(i); e != expected.end()) {
        std::optional<std::string> now;
        if (const auto s = state.find(w.key); s != state.end()) {
          if (s->second) now = *s->second;
        } else if (!cleared) {
          if (const auto st = stored.find(w.key); st != stored.end()) now = st->second;
        }
        if (now != *e->second) {
          conflicts.push_back({i, std::move(now)});
          continue;
        }
      }
      detail::append_op(ops, w);
      switch (w.op) {
        case Write::Op::put:
          state[w.key] = &w.value;
          break;
        case Write::Op::erase:
          state[w.key] = nullptr;
          break;
        case Write::Op::clear:
          state.clear();
          cleared = true;
          break;
      }
    }
    if (ops.empty()) {  // every write was a conditional one that lost
      rollback();
      return Durability::now;
    }
    std::vector<std::string_view> put_keys, put_values, erased;
    for (const auto& [key, value] : state) {
      if (value) {
        put_keys.push_back(key);
        put_values.push_back(*value);
      } else {
        erased.push_back(key);
      }
    }
    Params erase_params, put_params, record_params, notify_params, trim_params;
    std::vector<Step> steps;
    if (!begun) {
      steps.push_back({"BEGIN"});
      steps.push_back({"lock", &lock_params});
    }
    Params none;
    if (cleared) steps.push_back({"clear", &none});
    if (!erased.empty()) {
      erase_params.bytes(bytea_array(erased));
      steps.push_back({"erase", &erase_params});
    }
    if (!put_keys.empty()) {
      put_params.bytes(bytea_array(put_keys)).bytes(bytea_array(put_values));
      steps.push_back({"put", &put_params});
    }
    record_params.integer(static_cast<std::int64_t>(origin))
        .integer(static_cast<std::int64_t>(seq_no))
        .integer(static_cast<std::int64_t>(tag))
        .bytes(std::move(ops));
    steps.push_back({"record", &record_params});
    notify_params.bytes(channel, 0).bytes(std::to_string(origin), 0);
    steps.push_back({"notify", &notify_params});
    if (++since_trim >= kTrimEvery) {
      since_trim = 0;
      trim_params.integer(kKeepRecord);
      steps.push_back({"trim", &trim_params});
    }
    steps.push_back({"COMMIT"});
    sent = true;
    pipeline(steps, doing);
    return Durability::now;
  } catch (const Lost& lost) {
    if (!sent)
      throw Error(Errc::io, where + ": the connection to the server broke before the commit (" +
                                lost.message + "); nothing was written");
    if (resolve(seq_no, lost.message)) return Durability::now;
    conflicts.clear();
    throw Error(Errc::io, where + ": the connection to the server broke during the commit (" +
                              lost.message + "); it did not commit");
  } catch (...) {
    conflicts.clear();
    rollback();
    throw;
  }
}

// After the connection broke with a COMMIT sent: whether that commit
// happened. Reconnects (with back-off, for up to options.resolve_timeout),
// ends the old server session if it still runs (it may still hold the
// transaction), then looks for the commit's row in the change record.
bool PostgresBackend::Impl::resolve(std::uint64_t seq_no, const std::string& why) {
  const std::string old_pid = server_pid, old_started = server_started;
  const auto deadline = std::chrono::steady_clock::now() + options.resolve_timeout;
  std::chrono::milliseconds delay{50};
  // Throws once the next attempt would come after the deadline.
  const auto give_up = [&](const std::string& last) {
    if (std::chrono::steady_clock::now() + delay <= deadline) return;
    throw Error(Errc::io, where + ": the connection to the server broke during a commit (" + why +
                              ") and the server could not be asked whether it committed (" + last +
                              "): the outcome is unknown; reopen the map to see the store");
  };
  for (;;) {
    try {
      open_session();
      if (!old_pid.empty()) {
        Params p;
        p.bytes(old_pid, 0).bytes(old_started, 0);
        const std::string doing = "cannot end the broken session";
        const std::string match =
            " FROM pg_stat_activity WHERE pid = $1::int AND backend_start::text = $2";
        const Result end(PQexecParams(conn.get(),
                                      ("SELECT pg_terminate_backend(pid)" + match).c_str(), 2,
                                      nullptr, p.values(), p.lengths(), p.formats(), 0));
        if (!ok(end.get())) fail(end.get(), doing);
        for (int i = 0;; ++i) {
          const Result still(PQexecParams(conn.get(), ("SELECT 1" + match).c_str(), 2, nullptr,
                                          p.values(), p.lengths(), p.formats(), 0));
          if (!ok(still.get())) fail(still.get(), doing);
          if (PQntuples(still.get()) == 0) break;
          if (i == 1000) throw Error(Errc::io, where + ": the broken session did not end");
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
      }
      Params p;
      p.integer(static_cast<std::int64_t>(origin)).integer(static_cast<std::int64_t>(seq_no));
      const Result r = run("committed", p, "cannot look up the commit");
      return PQntuples(r.get()) == 1;
    } catch (const Lost& lost) {
      give_up(lost.message);
    } catch (const Error& e) {
      give_up(e.what());
    }
    std::this_thread::sleep_for(delay);
    delay = std::min<std::chrono::milliseconds>(delay * 2, std::chrono::seconds(2));
  }
}

// ---- The backend.

PostgresBackend::PostgresBackend(std::string conninfo, PostgresOptions options)
    : impl_(std::make_unique<Impl>(conninfo, std::move(options))) {
  Impl& d = *impl_;
  try {
    d.connect();
    d.create_or_check();
    d.prepare_all();
  } catch (const Lost& lost) {
    throw Error(Errc::io, d.where + ": the connection to the server broke while opening (" +
                              lost.message + ")");
  }
}

PostgresBackend::PostgresBackend(PostgresBackend&&) noexcept = default;
PostgresBackend& PostgresBackend::operator=(PostgresBackend&&) noexcept = default;
PostgresBackend::~PostgresBackend() = default;

void PostgresBackend::scan(ScanSink sink) { impl_->scan_at(sink); }

std::uint64_t PostgresBackend::scan_at(ScanSink sink) { return impl_->scan_at(sink); }

std::optional<std::string> PostgresBackend::get(std::string_view key) {
  return impl_->get_one(key);
}

void PostgresBackend::write(std::span<const Write> batch) { commit(batch); }

std::uint64_t PostgresBackend::Impl::number(const std::string& sql, const char* doing) {
  try {
    live();
    const Result r = exec(sql, doing);
    return std::stoull(PQgetvalue(r.get(), 0, 0));
  } catch (const Lost& lost) {
    throw Error(Errc::io, where + ": " + doing + ": " + lost.message);
  }
}

std::optional<std::uint64_t> PostgresBackend::count() {
  return impl_->number("SELECT count(*) FROM " + impl_->table, "cannot count the entries");
}

std::optional<std::uint64_t> PostgresBackend::bytes() {
  Impl& d = *impl_;
  // The names are quoted identifiers, here as text literals for regclass.
  return d.number(
      "SELECT pg_total_relation_size('" + d.table + "') + pg_total_relation_size('" + d.log + "')",
      "cannot measure the table");
}

Durability PostgresBackend::commit(std::span<const Write> batch) {
  std::vector<Conflict> conflicts;
  return impl_->commit(batch, {}, 0, conflicts);
}

Durability PostgresBackend::commit_shared(std::span<const Write> batch,
                                          std::span<const Expect> expect, std::uint64_t tag,
                                          std::vector<Conflict>& conflicts) {
  return impl_->commit(batch, expect, tag, conflicts);
}

std::string PostgresBackend::describe() const {
  return impl_ ? impl_->where : "postgres:(moved-from)";
}

std::uint64_t PostgresBackend::origin() const { return impl_->origin; }

// A reader session: a connection of its own that LISTENs on the table's
// channel; interrupt() wakes its wait through an eventfd.
class PostgresBackend::Reader final : public Backend {
 public:
  explicit Reader(const Impl& parent) : impl_(parent, true), wake_(impl_.where) {
    try {
      impl_.open_session();
    } catch (const Lost& lost) {
      throw Error(Errc::io, impl_.where + ": cannot open a reader session: " + lost.message);
    }
  }

  void scan(ScanSink sink) override { impl_.scan_at(sink); }
  std::uint64_t scan_at(ScanSink sink) override { return impl_.scan_at(sink); }
  std::optional<std::string> get(std::string_view key) override { return impl_.get_one(key); }
  void write(std::span<const Write>) override {
    throw Error(Errc::invalid_argument, impl_.where + ": a reader session cannot write");
  }
  std::string describe() const override { return impl_.where; }
  bool shared() const override { return true; }
  std::uint64_t origin() const override { return impl_.origin; }
  ChangeRead changes_since(std::uint64_t from, std::uint64_t no_values_for) override;
  void wait_for_change(std::uint64_t from, std::chrono::milliseconds timeout) override;
  void interrupt() override { wake_.signal(); }

 private:
  Impl impl_;
  detail::WakeFd wake_;
};

// In one snapshot: the record after `from`, then the value of every key put
// (but those put by no_values_for).
Backend::ChangeRead PostgresBackend::Reader::changes_since(std::uint64_t from,
                                                           std::uint64_t no_values_for) {
  Impl& d = impl_;
  const std::string doing = "cannot read the change record";
  try {
    d.live();
    Params none, from_params;
    from_params.integer(static_cast<std::int64_t>(from));
    auto results = d.pipeline({{"BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"},
                               {"head", &none},
                               {"changes", &from_params}},
                              doing);
    const std::uint64_t last =
        static_cast<std::uint64_t>(get_int8(PQgetvalue(results[1].get(), 0, 0)));
    const PGresult* rows = results[2].get();
    ChangeRead read;
    read.through = from;
    for (int i = 0; i < PQntuples(rows); ++i) {
      const auto pos = static_cast<std::uint64_t>(get_int8(PQgetvalue(rows, i, 0)));
      if (pos != read.through + 1) {  // trimmed past `from`
        d.exec("COMMIT", doing);
        return ChangeRead{true, from, {}};
      }
      const auto origin = static_cast<std::uint64_t>(get_int8(PQgetvalue(rows, i, 1)));
      const auto tag = static_cast<std::uint64_t>(get_int8(PQgetvalue(rows, i, 2)));
      const bool ok_ops =
          detail::parse_ops(cell(rows, i, 3), [&](Write::Op op, std::string_view key) {
            read.changes.push_back(RecordedChange{origin, tag, op, std::string(key), std::nullopt});
          });
      if (!ok_ops) {
        d.rollback();
        throw Error(Errc::corrupt, d.where + ": the change record " + d.log +
                                       " is damaged at position " + std::to_string(pos) +
                                       "; the table itself is unaffected: reopen every map on "
                                       "it (the record starts again from the table)");
      }
      read.through = pos;
    }
    // A record that ends before `from`: it was dropped and created again.
    if (read.through == from && last < from) {
      d.exec("COMMIT", doing);
      return ChangeRead{true, from, {}};
    }
    std::vector<std::string_view> keys;
    for (const RecordedChange& c : read.changes)
      if (c.op == Write::Op::put && (no_values_for == 0 || c.origin != no_values_for))
        keys.push_back(c.key);
    const auto values = d.values_of(std::move(keys));
    d.exec("COMMIT", doing);
    for (RecordedChange& c : read.changes) {
      if (c.op != Write::Op::put) continue;
      if (const auto v = values.find(c.key); v != values.end()) c.value = v->second;
    }
    return read;
  } catch (const Lost& lost) {
    throw Error(Errc::io, d.where + ": " + doing + ": " + lost.message);
  }
}

// Returns on a notification from another session at once, on one of this
// session's own commits within kOwnWakeDelay (several of them make one
// read), on interrupt(), on timeout, or when the connection broke (the next
// changes_since() reconnects, then reads whatever was missed).
void PostgresBackend::Reader::wait_for_change(std::uint64_t, std::chrono::milliseconds timeout) {
  using Clock = std::chrono::steady_clock;
  PGconn* c = impl_.conn.get();
  if (!c || PQstatus(c) != CONNECTION_OK) return;
  const std::string own = std::to_string(impl_.origin);
  auto until = Clock::now() + timeout;
  bool own_seen = false;
  for (;;) {
    if (PQconsumeInput(c) != 1) return;
    while (PGnotify* n = PQnotifies(c)) {
      const bool mine = own == n->extra;
      PQfreemem(n);
      if (!mine) return;
      if (!own_seen) {
        own_seen = true;
        until = std::min(until, Clock::now() + kOwnWakeDelay);
      }
    }
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now()).count();
    if (left <= 0) return;
    const auto woke = wake_.wait(PQsocket(c), std::chrono::milliseconds(left + 1));
    if (woke == detail::WakeFd::Woke::signalled || woke == detail::WakeFd::Woke::broken) return;
  }
}

std::unique_ptr<Backend> PostgresBackend::open_reader() { return std::make_unique<Reader>(*impl_); }

// ---- URIs: postgres://user:password@host:port/db?table=T&sslmode=... (and
// postgresql://), handed to libpq without "table".

std::pair<std::string, PostgresOptions> detail::parse_postgres_uri(std::string_view scheme,
                                                                   std::string_view rest) {
  const std::string uri = std::string(scheme) + ":" + std::string(rest);
  PostgresOptions options;
  const auto q = uri.find('?');
  std::string conninfo = uri.substr(0, q);
  if (q != std::string::npos) {
    std::string query;
    for (const auto& [name, value] : detail::parse_query(std::string_view(uri).substr(q + 1))) {
      if (name == "table") {
        options.table = std::string(value);
        continue;
      }
      if (name == "read_only") {
        options.read_only = detail::parse_bool("URI " + redact_uri(uri), name, value);
        continue;
      }
      query += (query.empty() ? "" : "&") + std::string(name) + "=" + std::string(value);
    }
    if (!query.empty()) conninfo += "?" + query;
  }
  return {conninfo, options};
}

namespace {

std::unique_ptr<Backend> open_uri(std::string_view scheme, std::string_view rest) {
  auto [conninfo, options] = detail::parse_postgres_uri(scheme, rest);
  return std::make_unique<PostgresBackend>(conninfo, std::move(options));
}

}  // namespace

}  // namespace pmap

// Registers the postgres: and postgresql: schemes when this file is linked
// in. The pmap::postgres target makes its consumers reference this symbol
// (-Wl,--undefined), so a static library keeps it.
extern "C" {
extern const int pmap_postgres_schemes;
const int pmap_postgres_schemes = [] {
  pmap::register_backend("postgres",
                         [](std::string_view rest) { return pmap::open_uri("postgres", rest); });
  pmap::register_backend("postgresql",
                         [](std::string_view rest) { return pmap::open_uri("postgresql", rest); });
  return 2;
}();
}
