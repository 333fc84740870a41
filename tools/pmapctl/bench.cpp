// pmapctl bench: a quick write and read throughput check on a store, beside
// baselines, for sizing hardware. The full suite is bench/pmap_bench.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <thread>
#include <unordered_map>

#include "common.hpp"
#include "raw.hpp"
#if defined(PMAP_RAW_POSTGRES) || defined(PMAP_RAW_REDIS)
#include "backends/server_uri.hpp"
#endif

namespace pmapctl {
namespace {

struct BenchOptions {
  std::string uri;
  std::size_t n = 100000;
  std::size_t threads = 4;
};

using Clock = std::chrono::steady_clock;
using pmap::raw::per_second;

// run()'s result, with tidy() run after it whether it threw or not.
template <class Run, class Tidy>
double then_tidy(Run run, Tidy tidy) {
  double result = 0;
  try {
    result = run();
  } catch (...) {
    tidy();
    throw;
  }
  tidy();
  return result;
}

void line(const char* what, double ours, const char* baseline_name, double baseline) {
  std::printf("%-32s %12.0f ops/s   %-42s %12.0f ops/s   %.2fx\n", what, ours, baseline_name,
              baseline, baseline > 0 ? ours / baseline : 0);
}

struct Baseline {
  std::string name;
  double writes = 0;  // per second
};

// A scratch file beside `store` (same file system), removed with its
// SQLite companions when this goes.
class ScratchFile {
 public:
  explicit ScratchFile(const std::string& store)
      : path_(store + ".pmapctl-bench-" + std::to_string(::getpid())) {
    remove();
  }
  ~ScratchFile() { remove(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  void remove() {
    std::error_code ec;
    for (const char* suffix : {"", "-wal", "-shm", "-journal"})
      std::filesystem::remove(path_.string() + suffix, ec);
  }
  std::filesystem::path path_;
};

// The same writes done raw, the way bench/pmap_bench's baselines do them,
// on the store's own medium: for sqlite: and csv: a scratch file beside
// the store; for PostgreSQL and Redis a scratch table or hash on the same
// server, dropped afterwards. A scheme without a raw client here (memory:,
// or one registered later) is measured against its own backend's write(),
// batches of 1,000, no map.
Baseline raw_writes(const std::string& uri, const pmap::raw::Entries& e) {
  const auto colon = uri.find(':');
  const std::string scheme = uri.substr(0, colon);
  const std::string rest = uri.substr(colon + 1);
  const std::string path = rest.substr(0, rest.find('?'));
  const std::string scratch = "pmapctl_bench_" + std::to_string(::getpid());
  if (scheme == "sqlite") {
    ScratchFile file(path);
    pmap::raw::Sqlite db(file.path(), "WAL");
    return {"raw SQLite, 1,000 upserts a transaction", db.put_batched(e, e.keys.size(), 1000)};
  }
  if (scheme == "csv") {
    ScratchFile file(path);
    return {"raw append, fdatasync per 1,000 lines", pmap::raw::append_csv(file.path(), e, 1000)};
  }
  if (scheme == "memory") {
    std::unordered_map<std::string, std::string> plain;
    const auto start = Clock::now();
    for (std::size_t i = 0; i < e.keys.size(); ++i) plain.insert_or_assign(e.keys[i], e.values[i]);
    return {"a std::unordered_map, 1 thread", per_second(e.keys.size(), start)};
  }
#ifdef PMAP_RAW_POSTGRES
  if (scheme == "postgres" || scheme == "postgresql") {
    pmap::raw::Postgres pg(pmap::detail::parse_postgres_uri(scheme, rest).first, scratch);
    return {"raw libpq, pipelined, 1,000 upserts a txn",
            then_tidy([&] { return pg.put_batched(e, 1000); }, [&] { pg.drop(); })};
  }
#endif
#ifdef PMAP_RAW_REDIS
  if (scheme == "redis" || scheme == "redis+unix" || scheme == "unix") {
    const pmap::RedisOptions o = pmap::detail::parse_redis_uri(scheme, rest);
    const pmap::raw::RedisServer server{o.host, o.port, o.socket, o.user, o.password, o.db};
    const std::string hash = "{" + scratch + "}";
    pmap::raw::Redis redis(server, hash);
    return {"raw hiredis, MULTI/EXEC of 1,000 HSETs",
            then_tidy([&] { return redis.put_batched(e, 1000); }, [&] { redis.drop(hash); })};
  }
#endif
  const auto backend = open_for_writing(uri);
  std::vector<pmap::Write> batch;
  const auto start = Clock::now();
  for (std::size_t i = 0; i < e.keys.size(); ++i) {
    batch.push_back({pmap::Write::Op::put, e.keys[i], e.values[i]});
    if (batch.size() == 1000 || i + 1 == e.keys.size()) {
      backend->write(batch);
      batch.clear();
    }
  }
  const double rate = per_second(e.keys.size(), start);
  for (const auto& k : e.keys) batch.push_back({pmap::Write::Op::erase, k, {}});
  backend->write(batch);
  return {"the backend alone, batches of 1,000", rate};
}

// Keys of its own (pmapctl-bench:N), erased again at the end.
void bench(const BenchOptions& o) {
  if (o.n == 0 || o.threads == 0) throw Failure{kUsage, "--n and --threads must be at least 1"};
  const std::string prefix = "pmapctl-bench:";
  pmap::raw::Entries e;
  for (std::size_t i = 0; i < o.n; ++i) e.keys.push_back(prefix + std::to_string(i));
  e.values.assign(o.n, std::string(100, 'v'));
  const auto& keys = e.keys;
  const std::string& value = e.values.front();

  const Baseline raw = raw_writes(o.uri, e);
  pmap::PersistentMap<std::string, std::string> map{open_for_writing(o.uri)};
  // Writes: T threads inserting, one flush at the end (every write durable).
  auto start = Clock::now();
  std::vector<std::thread> pool;
  for (std::size_t t = 0; t < o.threads; ++t)
    pool.emplace_back([&, t] {
      for (std::size_t i = t; i < o.n; i += o.threads) map.insert(keys[i], value);
    });
  for (auto& th : pool) th.join();
  map.flush().get();
  const double writes = per_second(o.n, start);

  // Reads: T threads getting every key, from the map's cache and from a
  // plain std::unordered_map holding the same entries.
  const auto read_all = [&](auto&& get) {
    std::vector<std::thread> readers;
    std::atomic<std::size_t> found{0};
    const auto begin = Clock::now();
    for (std::size_t t = 0; t < o.threads; ++t)
      readers.emplace_back([&, t] {
        std::size_t mine = 0;
        for (std::size_t i = t; i < o.n; i += o.threads) mine += get(keys[i]);
        found += mine;
      });
    for (auto& th : readers) th.join();
    const double rate = per_second(o.n, begin);
    if (found != o.n)
      throw Failure{kFailed, "a read missed a key it had just written: " +
                                 std::to_string(found.load()) + " of " + std::to_string(o.n)};
    return rate;
  };
  const double reads = read_all([&](const std::string& k) { return map.get(k).has_value(); });
  std::unordered_map<std::string, std::string> plain;
  for (const auto& k : keys) plain.emplace(k, value);
  const double plain_reads = read_all([&](const std::string& k) { return plain.count(k) > 0; });

  pmap::Batch<std::string, std::string> erase;
  for (const auto& k : keys) erase.erase(k);
  map.apply(erase).get();

  std::printf("%s, %zu entries of 100 bytes, %zu threads\n", map.backend().describe().c_str(), o.n,
              o.threads);
  line("writes (insert, then one flush)", writes, raw.name.c_str(), raw.writes);
  line("reads (get, from the cache)", reads, "a std::unordered_map, same keys", plain_reads);
}

}  // namespace

void add_bench_commands(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "bench", "A quick write and read throughput check on a store, beside baselines");
  auto o = std::make_shared<BenchOptions>();
  cmd->add_option("URI", o->uri, kUriHelp)->required();
  cmd->add_option("--n", o->n, "entries written and read (default 100000)")->option_text("N");
  cmd->add_option("--threads", o->threads, "writing and reading threads (default 4)")
      ->option_text("T");
  cmd->footer(
      "The write baseline is what the benchmark suite (bench/pmap_bench) measures the map\n"
      "against, on the same medium: raw SQLite in a scratch file beside an sqlite: store,\n"
      "raw appends beside a csv: one, raw libpq or hiredis on a scratch table or hash of\n"
      "the same server; any other scheme, its backend's own batched writes. The scratch\n"
      "is removed, and the map's keys (pmapctl-bench:N) erased, at the end.\n"
      "Example:\n  pmapctl bench sqlite:/mnt/ssd/try.db --n 200000 --threads 8");
  cmd->callback([o] { bench(*o); });
}

}  // namespace pmapctl
