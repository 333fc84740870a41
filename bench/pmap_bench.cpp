// persistent-map's benchmark harness: every workload runs beside its baseline
// in the same process, on the same file system, and is reported as a ratio.
// Absolute times on a shared machine are noise; ratios are the result.
//
//   pmap_bench [--n N] [--reps R] [--quick] [--dir DIR] [--tsv FILE]
//              [--only NAME] [--threads T]
//
// --n      entries per workload (default 100000)
// --quick  a smoke run: small N, one repetition (CI runs this)
// --dir    where the database files go (default: a temp dir; use the file
//          system you care about)
// --tsv    also write the rows as tab-separated values (for BENCHMARKS.md
//          and the plots)
// --only   run only the workloads whose name contains NAME (bulk-sequential,
//          bulk-random, awaited, reads-mixed, load, memory, csv, shared,
//          pmapctl: the tool's reading commands on a 1M-entry store beside
//          the sqlite3 shell, postgres: needs a server, PMAP_BENCH_PG or
//          PMAP_TEST_PG)
// --threads  inserting threads of the bulk workload (default 8)
//
// Each workload runs in a child process of its own, after a sync().
//
// Data: 16-byte keys (sequential "k000000000000042" or random hex), 100-byte
// values. Each figure is the best of --reps runs (default 3), ours and the
// baseline alternating so that drift hits both.
#include <fcntl.h>
#include <malloc.h>
#include <sqlite3.h>
#ifdef PMAP_BENCH_POSTGRES
#include <libpq-fe.h>

#include <pmap/backends/postgres.hpp>
#endif
#ifdef PMAP_BENCH_REDIS
#include <pmap/backends/redis.hpp>
#endif
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <mutex>
#include <pmap/backends/memory.hpp>
#include <pmap/pmap.hpp>
#include <random>
#include <shared_mutex>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "raw.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using Map = pmap::PersistentMap<std::string, std::string>;

struct Config {
  std::size_t n = 100000;
  int reps = 3;
  bool quick = false;
  std::filesystem::path dir;
  std::string tsv;
  std::string only;              // run just the workloads whose name contains this
  std::size_t bulk_threads = 8;  // inserting threads of the bulk workload
};
Config cfg;

// ---- data -------------------------------------------------------------------

std::uint64_t mix(std::uint64_t x) {  // splitmix64
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

std::string make_key(std::size_t i, bool random) {
  char buf[32];
  if (random)
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(mix(i)));
  else
    std::snprintf(buf, sizeof buf, "k%015llu",
                  static_cast<unsigned long long>(i % 1000000000000000ull));
  return std::string(buf, 16);
}

std::string make_value(std::size_t i) {
  std::string v(100, 'v');
  const std::string id = std::to_string(i);
  std::memcpy(v.data(), id.data(), id.size());
  return v;
}

using Data = pmap::raw::Entries;
Data make_data(std::size_t n, bool random) {
  Data d;
  d.keys.reserve(n);
  d.values.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    d.keys.push_back(make_key(i, random));
    d.values.push_back(make_value(i));
  }
  return d;
}

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// A fresh path for one run's database (removing the previous run's files).
std::filesystem::path fresh(const std::string& name) {
  for (const char* suffix : {"", "-wal", "-shm", "-journal", "-kv.pmap-lock", ".pmap-lock"})
    std::filesystem::remove(cfg.dir / (name + suffix));
  return cfg.dir / name;
}

// ---- results ------------------------------------------------------------------

struct Row {
  std::string workload, variant, unit;
  double ours, baseline;
  std::string baseline_name, target, extra;
};
std::vector<Row> rows;

void report(Row row) {
  const double ratio = row.baseline > 0 ? row.ours / row.baseline : 0;
  std::printf("%-28s %-22s ours %12.1f %-6s baseline %12.1f  ratio %7.2fx  (target %s)%s%s\n",
              row.workload.c_str(), row.variant.c_str(), row.ours, row.unit.c_str(), row.baseline,
              ratio, row.target.c_str(), row.extra.empty() ? "" : "  ", row.extra.c_str());
  std::fflush(stdout);
  rows.push_back(std::move(row));
}

template <class F>
double best_of(F run, bool higher_is_better = true) {
  double best = higher_is_better ? 0 : 1e300;
  for (int r = 0; r < cfg.reps; ++r) {
    const double v = run();
    best = higher_is_better ? std::max(best, v) : std::min(best, v);
  }
  return best;
}

// Inserts every entry of d from `threads` threads (thread t the entries
// t, t + threads, ...), then flushes: writes per second.
double insert_all(Map& map, const Data& d, std::size_t threads) {
  const auto start = Clock::now();
  std::vector<std::thread> pool;
  for (std::size_t t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      for (std::size_t i = t; i < d.keys.size(); i += threads) map.insert(d.keys[i], d.values[i]);
    });
  for (auto& th : pool) th.join();
  map.flush().get();
  return static_cast<double>(d.keys.size()) / seconds_since(start);
}

// ---- 1. bulk durable writes -------------------------------------------------------

void bulk_writes(bool random) {
  const Data d = make_data(cfg.n, random);
  double ours = 0, raw = 0;
  for (int r = 0; r < cfg.reps; ++r) {
    {
      Map map{pmap::SqliteBackend(fresh("bulk.db"))};
      ours = std::max(ours, insert_all(map, d, cfg.bulk_threads));
    }
    pmap::raw::Sqlite db(fresh("raw.db"), "WAL");
    raw = std::max(raw, db.put_batched(d, cfg.n, 1000));
  }
  report({"bulk durable writes",
          std::to_string(cfg.bulk_threads) + " threads, " + (random ? "random" : "sequential"),
          "ops/s", ours, raw, "raw SQLite, 1000 upserts/txn", ">= 0.8x", ""});
}

// ---- 2. awaited durable writes ------------------------------------------------------

double percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())))];
}

void awaited_writes() {
  const std::size_t base_ops = cfg.quick ? 50 : 500;
  const Data d = make_data(std::max<std::size_t>(cfg.n, 64 * 100), true);
  double autocommit_wal = 0, autocommit_rollback = 0;
  for (int r = 0; r < cfg.reps; ++r) {
    for (const char* journal : {"WAL", "DELETE"}) {
      pmap::raw::Sqlite db(fresh("autocommit.db"), journal);
      const auto start = Clock::now();
      for (std::size_t i = 0; i < base_ops; ++i) db.put(d.keys[i], d.values[i]);
      double& best = std::strcmp(journal, "WAL") == 0 ? autocommit_wal : autocommit_rollback;
      best = std::max(best, static_cast<double>(base_ops) / seconds_since(start));
    }
  }
  // What 64 awaited writers could reach at best here: raw SQLite committing
  // the same keys in transactions of 64 (a group commit with nothing else to
  // do), with its fsync (FULL) and without any (OFF).
  double ceiling_full = 0, ceiling_off = 0;
  const std::size_t ceiling_ops = 64 * std::max<std::size_t>(base_ops / 4, 20);
  for (int r = 0; r < cfg.reps; ++r) {
    for (const char* sync : {"FULL", "OFF"}) {
      pmap::raw::Sqlite db(fresh("ceiling.db"), "WAL");
      db.exec((std::string("PRAGMA synchronous=") + sync).c_str());
      double& best = std::strcmp(sync, "FULL") == 0 ? ceiling_full : ceiling_off;
      best = std::max(best, db.put_batched(d, ceiling_ops, 64));
    }
  }
  for (std::size_t threads : {1, 8, 64}) {
    const std::size_t per_thread = std::max<std::size_t>(base_ops / (threads == 1 ? 1 : 4), 20);
    double best = 0;
    std::vector<double> best_lat;
    for (int r = 0; r < cfg.reps; ++r) {
      Map map{pmap::SqliteBackend(fresh("awaited.db"))};
      std::vector<std::vector<double>> lat(threads);
      const auto start = Clock::now();
      std::vector<std::thread> pool;
      for (std::size_t t = 0; t < threads; ++t)
        pool.emplace_back([&, t] {
          for (std::size_t i = 0; i < per_thread; ++i) {
            const std::size_t k = (t * per_thread + i) % d.keys.size();
            const auto s = Clock::now();
            map.insert(d.keys[k], d.values[k]).get();
            lat[t].push_back(seconds_since(s) * 1e6);
          }
        });
      for (auto& th : pool) th.join();
      const double rate = static_cast<double>(threads * per_thread) / seconds_since(start);
      if (rate > best) {
        best = rate;
        best_lat.clear();
        for (auto& l : lat) best_lat.insert(best_lat.end(), l.begin(), l.end());
      }
    }
    char extra[320];
    const double p50 = percentile(best_lat, 0.5), p99 = percentile(best_lat, 0.99);
    int n =
        std::snprintf(extra, sizeof extra, "p50 %.0f us, p99 %.0f us; vs rollback journal %.1fx",
                      p50, p99, best / autocommit_rollback);
    if (threads == 64)
      std::snprintf(
          extra + n, sizeof extra - static_cast<std::size_t>(n),
          "; ceiling here: raw SQLite transactions of 64 reach %.1fx with fsync, %.1fx with none",
          ceiling_full / autocommit_wal, ceiling_off / autocommit_wal);
    report({"awaited durable writes",
            std::to_string(threads) + (threads == 1 ? " thread" : " threads"), "ops/s", best,
            autocommit_wal, "Rust crate's path: autocommit upsert, WAL+FULL",
            threads == 64 ? ">= 50x" : "report", extra});
  }
}

// ---- 3. reads, 4. mixed ----------------------------------------------------------------

std::vector<std::size_t> random_indices(std::size_t count, std::size_t n, unsigned seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::size_t> out(count);
  for (auto& i : out) i = rng() % n;
  return out;
}

template <class F>
double threaded_ops(std::size_t threads, std::size_t ops_per_thread, F op) {
  std::atomic<bool> go{false};
  std::vector<std::thread> pool;
  std::atomic<std::size_t> ready{0};
  Clock::time_point start;
  for (std::size_t t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      ++ready;
      while (!go.load()) std::this_thread::yield();
      op(t, ops_per_thread);
    });
  while (ready.load() < threads) std::this_thread::yield();
  start = Clock::now();
  go = true;
  for (auto& th : pool) th.join();
  return static_cast<double>(threads * ops_per_thread) / seconds_since(start);
}

// 64 threads, per_thread inserts each, every one awaited: writes per second.
double awaited_inserts(Map& map, const Data& d, std::size_t per_thread) {
  return threaded_ops(64, per_thread, [&](std::size_t t, std::size_t ops) {
    for (std::size_t i = 0; i < ops; ++i) {
      const std::size_t k = (t * ops + i) % d.keys.size();
      map.insert(d.keys[k], d.values[k]).get();
    }
  });
}

// 4 threads get() the keys idx names (all present): reads per second.
double cached_gets(const Map& map, const Data& d, const std::vector<std::size_t>& idx) {
  return threaded_ops(4, idx.size() / 4, [&](std::size_t t, std::size_t ops) {
    std::size_t found = 0;
    for (std::size_t i = 0; i < ops; ++i) found += map.get(d.keys[idx[t * ops + i]]).has_value();
    if (found != ops) std::abort();
  });
}

void reads_and_mixed() {
  const Data d = make_data(cfg.n, true);
  const std::size_t ops = cfg.quick ? 20000 : 2000000;
  const auto idx = random_indices(ops, cfg.n, 7);

  Map map{pmap::SqliteBackend(fresh("reads.db"), {.synchronous = pmap::Synchronous::normal})};
  for (std::size_t i = 0; i < cfg.n; ++i) map.insert(d.keys[i], d.values[i]);
  map.flush().get();
  std::unordered_map<std::string, std::string> plain(d.keys.size());
  for (std::size_t i = 0; i < cfg.n; ++i) plain.emplace(d.keys[i], d.values[i]);

  std::atomic<std::size_t> sink{0};
  auto plain_reads = [&] {
    return threaded_ops(1, ops, [&](std::size_t, std::size_t n) {
      std::size_t s = 0;
      for (std::size_t i = 0; i < n; ++i) {
        auto it = plain.find(d.keys[idx[i]]);
        std::optional<std::string> v;
        if (it != plain.end()) v = it->second;
        s += v->size();
      }
      sink += s;
    });
  };
  auto our_reads = [&](std::size_t threads) {
    return threaded_ops(threads, ops, [&](std::size_t t, std::size_t n) {
      std::size_t s = 0;
      for (std::size_t i = 0; i < n; ++i) s += map.get(d.keys[idx[(i + t * 7919) % n]])->size();
      sink += s;
    });
  };
  // Interleaved, so that a busy neighbour on the machine slows both sides.
  double baseline = 0, ours1 = 0, ours2 = 0;
  for (int r = 0; r < cfg.reps; ++r) {
    baseline = std::max(baseline, plain_reads());
    ours1 = std::max(ours1, our_reads(1));
    ours2 = std::max(ours2, our_reads(2));
  }
  report({"reads (get, random keys)", "1 thread", "ops/s", ours1, baseline,
          "unordered_map find+copy, 1 thread", "report", ""});
  report({"reads (get, random keys)", "2 threads", "ops/s", ours2, baseline,
          "unordered_map find+copy, 1 thread", ">= 1.5x", ""});

  // Mixed: 90% get, 10% insert (not awaited; made durable in the background).
  std::shared_mutex mu;
  auto plain_mixed = [&] {
    return threaded_ops(2, ops / 2, [&](std::size_t t, std::size_t n) {
      std::size_t s = 0;
      for (std::size_t i = 0; i < n; ++i) {
        const std::size_t k = idx[(i + t * 7919) % ops];
        if (k % 10 == 0) {
          std::unique_lock lock(mu);
          plain[d.keys[k]] = d.values[(k + 1) % cfg.n];
        } else {
          std::shared_lock lock(mu);
          auto it = plain.find(d.keys[k]);
          std::optional<std::string> v;
          if (it != plain.end()) v = it->second;
          s += v->size();
        }
      }
      sink += s;
    });
  };
  auto our_mixed = [&] {
    const double rate = threaded_ops(2, ops / 2, [&](std::size_t t, std::size_t n) {
      std::size_t s = 0;
      for (std::size_t i = 0; i < n; ++i) {
        const std::size_t k = idx[(i + t * 7919) % ops];
        if (k % 10 == 0)
          map.insert(d.keys[k], d.values[(k + 1) % cfg.n]);
        else
          s += map.get(d.keys[k])->size();
      }
      sink += s;
    });
    map.flush().get();
    return rate;
  };
  double locked = 0, ours = 0;
  for (int r = 0; r < cfg.reps; ++r) {
    locked = std::max(locked, plain_mixed());
    ours = std::max(ours, our_mixed());
  }
  report({"mixed 90% get / 10% insert", "2 threads", "ops/s", ours, locked,
          "unordered_map + one shared_mutex", ">= 2x",
          "SQLite synchronous=normal, writes not awaited"});
}

// ---- 5. open/load ------------------------------------------------------------------------

void open_load() {
  const Data d = make_data(cfg.n, true);
  const auto path = fresh("load.db");
  {
    Map map{pmap::SqliteBackend(path)};
    pmap::Batch<std::string, std::string> batch;
    for (std::size_t i = 0; i < cfg.n; ++i) batch.insert(d.keys[i], d.values[i]);
    map.apply(batch).get();
  }
  const double ours = best_of(
      [&] {
        const auto start = Clock::now();
        Map map{pmap::SqliteBackend(path)};
        if (map.size() != cfg.n) throw std::runtime_error("load lost entries");
        return seconds_since(start);
      },
      false);
  const double raw = best_of(
      [&] {
        const auto start = Clock::now();
        sqlite3* db = nullptr;
        sqlite3_open(path.c_str(), &db);
        sqlite3_stmt* stmt = nullptr;
        sqlite3_prepare_v2(db, "SELECT key, value FROM kv", -1, &stmt, nullptr);
        std::unordered_map<std::string, std::string> out;
        while (sqlite3_step(stmt) == SQLITE_ROW)
          out.emplace(std::string(static_cast<const char*>(sqlite3_column_blob(stmt, 0)),
                                  static_cast<std::size_t>(sqlite3_column_bytes(stmt, 0))),
                      std::string(static_cast<const char*>(sqlite3_column_blob(stmt, 1)),
                                  static_cast<std::size_t>(sqlite3_column_bytes(stmt, 1))));
        sqlite3_finalize(stmt);
        sqlite3_close(db);
        if (out.size() != cfg.n) throw std::runtime_error("raw load lost entries");
        return seconds_since(start);
      },
      false);
  report({"open/load", std::to_string(cfg.n) + " entries", "s", ours, raw,
          "raw SELECT into unordered_map", "<= 1.2x", ""});
}

// ---- 6. memory per entry --------------------------------------------------------------------

long rss_bytes() {
  std::ifstream statm("/proc/self/statm");
  long pages_total = 0, pages_resident = 0;
  statm >> pages_total >> pages_resident;
  return pages_resident * sysconf(_SC_PAGESIZE);
}

// Runs f in a child process; returns what f returned there, and whether the
// child exited cleanly. A child starts from this process's heap as it is, so
// run workloads from a process that has not run others.
std::pair<std::string, bool> in_child(const std::function<std::string()>& f) {
  int fds[2];
  if (pipe(fds) != 0) throw std::runtime_error("pipe failed");
  std::fflush(stdout);
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    close(fds[0]);
    std::string out;
    try {
      out = f();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "pmap_bench: %s\n", e.what());
      _exit(1);
    }
    for (std::size_t done = 0; done < out.size();) {
      const ssize_t n = write(fds[1], out.data() + done, out.size() - done);
      if (n <= 0) _exit(1);
      done += static_cast<std::size_t>(n);
    }
    _exit(0);
  }
  close(fds[1]);
  std::string in;
  char buf[4096];
  for (ssize_t n; (n = read(fds[0], buf, sizeof buf)) > 0;)
    in.append(buf, static_cast<std::size_t>(n));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  return {in, WIFEXITED(status) && WEXITSTATUS(status) == 0};
}

// Runs f in a child process and returns its RSS growth per entry.
double rss_per_entry_in_child(const std::function<void()>& f) {
  const auto [out, ok] = in_child([&] {
    malloc_trim(0);
    const long before = rss_bytes();
    f();
    malloc_trim(0);
    return std::to_string(static_cast<double>(rss_bytes() - before) / static_cast<double>(cfg.n));
  });
  return ok ? std::stod(out) : 0;
}

// Stores nothing: the map's own memory is all that grows.
class NullBackend final : public pmap::Backend {
 public:
  void scan(pmap::ScanSink) override {}
  std::optional<std::string> get(std::string_view) override { return std::nullopt; }
  void write(std::span<const pmap::Write>) override {}
  std::string describe() const override { return "null:"; }
};

void memory_per_entry() {
  const Data d = make_data(cfg.n, true);
  const double ours = rss_per_entry_in_child([&] {
    auto* map = new Map{std::make_unique<NullBackend>()};  // kept: measured while alive
    for (std::size_t i = 0; i < cfg.n; ++i) map->insert(d.keys[i], d.values[i]);
    map->flush().get();
  });
  const double plain = rss_per_entry_in_child([&] {
    auto* m = new std::unordered_map<std::string, std::string>();
    for (std::size_t i = 0; i < cfg.n; ++i) m->emplace(d.keys[i], d.values[i]);
  });
  report({"cache memory per entry", "16 B key, 100 B value", "B", ours, plain,
          "unordered_map<string,string>", "<= 1.2x", "RSS growth / N"});
}

// ---- 7. CSV ---------------------------------------------------------------------------------

void csv_writes_and_load() {
  const Data d = make_data(cfg.n, true);
  const std::size_t batch = 1000;
  double ours = 0, raw = 0;
  for (int r = 0; r < cfg.reps; ++r) {
    {
      Map map{pmap::CsvBackend(fresh("bulk.csv"))};
      const auto start = Clock::now();
      for (std::size_t i = 0; i < cfg.n; i += batch) {
        pmap::Batch<std::string, std::string> b;
        for (std::size_t j = i; j < std::min(cfg.n, i + batch); ++j)
          b.insert(d.keys[j], d.values[j]);
        map.apply(b);
      }
      map.flush().get();
      ours = std::max(ours, static_cast<double>(cfg.n) / seconds_since(start));
    }
    raw = std::max(raw, pmap::raw::append_csv(fresh("raw.csv"), d, batch));
  }
  report({"CSV bulk writes", "batches of 1000", "ops/s", ours, raw, "raw append + fsync per batch",
          "report", ""});
  const double load = best_of(
      [&] {
        const auto start = Clock::now();
        Map map{pmap::CsvBackend(cfg.dir / "bulk.csv")};
        return seconds_since(start);
      },
      false);
  const double raw_read = best_of(
      [&] {
        const auto start = Clock::now();
        std::ifstream in(cfg.dir / "raw.csv");
        std::unordered_map<std::string, std::string> m;
        std::string line;
        while (std::getline(in, line)) {
          const auto comma = line.find(',');
          m.emplace(line.substr(0, comma), line.substr(comma + 1));
        }
        return seconds_since(start);
      },
      false);
  report({"CSV load", std::to_string(cfg.n) + " entries", "s", load, raw_read,
          "getline + split into unordered_map", "report", ""});
}

}  // namespace

// ---- 7. shared stores ------------------------------------------------------------------

// Forks a child that runs f(write_fd) and exits; returns its pid.
template <class F>
pid_t fork_child(int write_fd, F f) {
  std::fflush(stdout);
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    try {
      f(write_fd);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "pmap_bench: %s\n", e.what());
      _exit(1);
    }
    _exit(0);
  }
  return pid;
}

std::string read_all(int fd) {
  std::string in;
  char buf[4096];
  for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) in.append(buf, static_cast<std::size_t>(n));
  close(fd);
  return in;
}

void write_all(int fd, const std::string& s) {
  for (std::size_t done = 0; done < s.size();) {
    const ssize_t n = write(fd, s.data() + done, s.size() - done);
    if (n <= 0) throw std::runtime_error("write to the parent failed");
    done += static_cast<std::size_t>(n);
  }
}

long long now_ns() {  // CLOCK_MONOTONIC: one clock for every process of the machine
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

std::string shared_uri(const std::filesystem::path& path) {
  return "sqlite:" + path.string() + "?mode=shared";
}

// Propagation: a child process watches; this one writes, each write
// awaited, its value the time it was issued.
void propagation(const std::string& workload, const std::string& uri) {
  {
    { Map create{uri}; }
    const std::size_t writes = cfg.quick ? 50 : 500;
    int ready[2], out[2];
    if (pipe(ready) != 0 || pipe(out) != 0) throw std::runtime_error("pipe failed");
    const pid_t child = fork_child(out[1], [&](int fd) {
      close(ready[0]);
      close(out[0]);
      Map map{uri};
      std::mutex mu;
      std::condition_variable cv;
      std::vector<double> delays;
      bool stop = false;
      auto sub = map.watch([&](const pmap::Change<std::string, std::string>& c) {
        if (c.origin != pmap::Origin::remote || c.kind != pmap::ChangeKind::put) return;
        std::lock_guard lock(mu);
        if (c.key == "stop")
          stop = true;
        else
          delays.push_back(static_cast<double>(now_ns() - std::stoll(*c.value)) / 1e6);
        cv.notify_all();
      });
      write_all(ready[1], "r");
      close(ready[1]);
      std::unique_lock lock(mu);
      cv.wait_for(lock, std::chrono::seconds(120), [&] { return stop; });
      char line[128];
      std::snprintf(line, sizeof line, "%.3f %.3f %zu", percentile(delays, 0.5),
                    percentile(delays, 0.99), delays.size());
      write_all(fd, line);
    });
    close(ready[1]);
    close(out[1]);
    read_all(ready[0]);  // the child's map is open and watching
    std::vector<double> commit_ms;
    {
      Map map{uri};
      for (std::size_t i = 0; i < writes; ++i) {
        const auto s = Clock::now();
        map.insert("p" + std::to_string(i), std::to_string(now_ns())).get();
        commit_ms.push_back(seconds_since(s) * 1e3);
      }
      map.insert("stop", "0").get();
    }
    std::istringstream result(read_all(out[0]));
    waitpid(child, nullptr, 0);
    double p50 = 0, p99 = 0;
    std::size_t seen = 0;
    result >> p50 >> p99 >> seen;
    char extra[160];
    std::snprintf(extra, sizeof extra,
                  "p50 %.2f ms; %zu of %zu writes seen; baseline: p99 of the awaited write itself",
                  p50, seen, writes);
    report({workload, "propagation p99, 2 procs", "ms", p99, percentile(commit_ms, 0.99),
            "awaited local commit p99", "p99 < 50 ms", extra});
  }
}

// Counters: 4 processes x M update() increments of 10 keys on fresh_uri(),
// against one process doing all of them on single_uri.
void counters(const std::string& workload, const std::function<std::string()>& fresh_uri,
              const std::string& single_uri, const std::string& single_name) {
  {
    const long m = cfg.quick ? 200 : 2500;
    const auto run = [&](const std::string& uri, int procs, long per_proc) {
      std::vector<pid_t> pids;
      std::vector<int> fds;
      const auto start = Clock::now();
      for (int p = 0; p < procs; ++p) {
        int fd[2];
        if (pipe(fd) != 0) throw std::runtime_error("pipe failed");
        pids.push_back(fork_child(fd[1], [&](int out) {
          close(fd[0]);
          Map map{uri};
          std::atomic<long> attempts{0};
          std::vector<pmap::Future<std::optional<std::string>>> futures;
          for (long i = 0; i < per_proc; ++i)
            futures.push_back(
                map.update("c" + std::to_string(i % 10), [&](std::optional<std::string>& v) {
                  ++attempts;
                  v = std::to_string(v ? std::stol(*v) + 1 : 1);
                }));
          for (auto& f : futures) f.get();
          write_all(out, std::to_string(attempts.load()));
        }));
        close(fd[1]);
        fds.push_back(fd[0]);
      }
      long attempts = 0;
      for (int fd : fds) attempts += std::stol("0" + read_all(fd));
      for (pid_t pid : pids) waitpid(pid, nullptr, 0);
      const double rate = static_cast<double>(procs * per_proc) / seconds_since(start);
      return std::pair{rate, static_cast<double>(attempts) / static_cast<double>(procs * per_proc)};
    };
    double shared = 0, single = 0, attempts = 0;
    for (int r = 0; r < cfg.reps; ++r) {
      const auto [rate, per_update] = run(fresh_uri(), 4, m);
      if (rate > shared) {
        shared = rate;
        attempts = per_update;
      }
      single = std::max(single, run(single_uri, 1, 4 * m).first);
    }
    char extra[160];
    std::snprintf(extra, sizeof extra, "%.2f conflicts retried per update", attempts - 1);
    report({workload, "4 procs x update counters", "ops/s", shared, single, single_name, "report",
            extra});
  }
}

// Shared mode against exclusive mode, in the same run: bulk and awaited
// writes, cached reads; then what only shared mode does: propagation
// between two processes, and four processes updating counters.
void shared_store() {
  const Data d = make_data(cfg.n, true);
  const auto open = [&](const char* name, bool shared) {
    return shared ? Map{shared_uri(fresh(name))} : Map{pmap::SqliteBackend(fresh(name))};
  };
  // Bulk: 8 threads, one flush.
  double bulk[2] = {0, 0};
  for (int r = 0; r < cfg.reps; ++r)
    for (int shared : {1, 0}) {
      Map map = open("bulk.db", shared);
      bulk[shared] = std::max(bulk[shared], insert_all(map, d, 8));
    }
  report({"shared mode", "bulk, 8 threads", "ops/s", bulk[1], bulk[0], "exclusive mode", ">= 0.8x",
          ""});
  // Awaited: 64 threads, each write awaited.
  const std::size_t per_thread = cfg.quick ? 10 : 60;
  double awaited[2] = {0, 0};
  for (int r = 0; r < cfg.reps; ++r)
    for (int shared : {1, 0}) {
      Map map = open("awaited.db", shared);
      awaited[shared] = std::max(awaited[shared], awaited_inserts(map, d, per_thread));
    }
  report({"shared mode", "awaited, 64 threads", "ops/s", awaited[1], awaited[0], "exclusive mode",
          ">= 0.8x", ""});
  // get() from the cache, 4 threads, while the watcher waits.
  const std::size_t gets = cfg.quick ? 20000 : 1000000;
  const auto idx = random_indices(gets, cfg.n, 11);
  double reads[2] = {0, 0};
  for (int shared : {1, 0}) {
    Map map = open("reads.db", shared);
    insert_all(map, d, 1);
    for (int r = 0; r < cfg.reps; ++r)
      reads[shared] = std::max(reads[shared], cached_gets(map, d, idx));
  }
  report({"shared mode", "get, 4 threads", "ops/s", reads[1], reads[0], "exclusive mode",
          ">= 0.95x", ""});

  propagation("shared mode", shared_uri(fresh("propagation.db")));
  counters(
      "shared mode", [] { return shared_uri(fresh("counters.db")); },
      "sqlite:" + fresh("counters1.db").string(), "1 process, exclusive, same updates");
}

#ifdef PMAP_BENCH_POSTGRES
// ---- 8. PostgreSQL ------------------------------------------------------------------

// The server: PMAP_BENCH_PG, else PMAP_TEST_PG (./scripts/bench.sh and
// ./scripts/test.sh start a throwaway one), as "host=H port=P dbname=D
// user=U password=W".
std::string pg_conninfo() {
  for (const char* name : {"PMAP_BENCH_PG", "PMAP_TEST_PG"})
    if (const char* v = std::getenv(name); v && *v) return v;
  return "";
}

// The same as a URI, for the processes that open a map by URI.
std::string pg_uri(const std::string& table) {
  std::map<std::string, std::string> kv;
  std::istringstream in(pg_conninfo());
  for (std::string pair; in >> pair;)
    kv[pair.substr(0, pair.find('='))] = pair.substr(pair.find('=') + 1);
  return "postgresql://" + kv["user"] + ":" + kv["password"] + "@" + kv["host"] + ":" + kv["port"] +
         "/" + kv["dbname"] + "?table=" + table;
}

// The PostgreSQL backend beside raw libpq doing the same work on the same
// server: bulk writes, awaited writes, reads; then propagation and counters
// between processes. Its tables are dropped at the end.
void postgres_store() {
  const std::string conninfo = pg_conninfo();
  if (conninfo.empty()) {
    std::printf(
        "postgres: skipped (no server: set PMAP_BENCH_PG or PMAP_TEST_PG to a libpq conninfo)\n");
    return;
  }
  std::vector<std::string> tables;
  const auto fresh_table = [&] {
    tables.push_back("bench_" + std::to_string(getpid()) + "_" + std::to_string(tables.size()));
    return tables.back();
  };
  const auto open = [&] { return Map{pmap::PostgresBackend(conninfo, {.table = fresh_table()})}; };
  const Data d = make_data(cfg.n, true);
  // Bulk: 8 threads, one flush; raw: pipelined upserts, a transaction per 1,000.
  double bulk = 0, raw_bulk = 0;
  for (int r = 0; r < cfg.reps; ++r) {
    {
      Map map = open();
      bulk = std::max(bulk, insert_all(map, d, 8));
    }
    raw_bulk =
        std::max(raw_bulk, pmap::raw::Postgres(conninfo, fresh_table()).put_batched(d, 1000));
  }
  report({"postgres", "bulk, 8 threads", "ops/s", bulk, raw_bulk,
          "raw libpq, pipelined upserts, 1 txn per 1,000", ">= 0.8x", ""});
  // Awaited: 64 threads, each write awaited; raw: one upsert per commit.
  // Long enough for a steady state (~25k writes); the raw loop, one commit
  // at a time, reaches its steady rate within a few thousand.
  const std::size_t per_thread = cfg.quick ? 10 : 400;
  double awaited = 0, raw_awaited = 0;
  for (int r = 0; r < cfg.reps; ++r) {
    Map map = open();
    awaited = std::max(awaited, awaited_inserts(map, d, per_thread));
    pmap::raw::Postgres raw(conninfo, fresh_table());
    const auto start = Clock::now();
    const std::size_t ops = std::min<std::size_t>({64 * per_thread, 5000, d.keys.size()});
    for (std::size_t i = 0; i < ops; ++i) raw.put(d.keys[i], d.values[i]);
    raw_awaited = std::max(raw_awaited, static_cast<double>(ops) / seconds_since(start));
  }
  report({"postgres", "awaited, 64 threads", "ops/s", awaited, raw_awaited,
          "raw libpq, one upsert per commit", ">= 10x", ""});
  // get(): 4 threads from the cache; raw: a SELECT round trip each.
  {
    const std::size_t gets = cfg.quick ? 20000 : 1000000;
    const auto idx = random_indices(gets, cfg.n, 11);
    Map map = open();
    insert_all(map, d, 1);
    pmap::raw::Postgres raw(conninfo, fresh_table());
    raw.put_batched(d, 1000);
    double reads = 0, raw_reads = 0;
    for (int r = 0; r < cfg.reps; ++r) {
      reads = std::max(reads, cached_gets(map, d, idx));
      const std::size_t raw_ops = cfg.quick ? 200 : 5000;
      const auto start = Clock::now();
      for (std::size_t i = 0; i < raw_ops; ++i)
        if (!raw.get(d.keys[idx[i]])) std::abort();
      raw_reads = std::max(raw_reads, static_cast<double>(raw_ops) / seconds_since(start));
    }
    report({"postgres", "get, 4 threads", "ops/s", reads, raw_reads,
            "raw libpq SELECT round trip, 1 connection", "report", ""});
  }
  propagation("postgres", pg_uri(fresh_table()));
  counters(
      "postgres", [&] { return pg_uri(fresh_table()); }, pg_uri(fresh_table()),
      "1 process, same updates, same server");
  // Tidy up the tables this run made.
  PGconn* c = PQconnectdb(conninfo.c_str());
  PQclear(PQexec(c, "SET client_min_messages = warning"));
  for (const auto& t : tables) {
    PQclear(PQexec(c, ("DROP TABLE IF EXISTS \"" + t + "\", \"pmap_log_" + t + "\"").c_str()));
  }
  PQfinish(c);
}
#endif

#ifdef PMAP_BENCH_REDIS
// ---- Redis ------------------------------------------------------------------------

// The server: PMAP_BENCH_REDIS, else PMAP_TEST_REDIS (./scripts/bench.sh and
// ./scripts/test.sh start a throwaway one), as redis://host:port.
std::string redis_url() {
  for (const char* name : {"PMAP_BENCH_REDIS", "PMAP_TEST_REDIS"})
    if (const char* v = std::getenv(name); v && *v) return v;
  return "";
}

// The server of redis_url() for raw hiredis.
pmap::raw::RedisServer redis_server() {
  std::string rest = redis_url().substr(std::string("redis://").size());
  rest = rest.substr(0, rest.find('/'));
  const auto colon = rest.rfind(':');
  pmap::raw::RedisServer server;
  server.host = rest.substr(0, colon);
  server.port = std::stoi(rest.substr(colon + 1));
  return server;
}

// The Redis backend beside raw hiredis doing the same work on the same
// server: the layout chosen (one hash per map) against a key per entry,
// bulk writes, awaited writes, reads; then propagation and counters between
// processes. Its keys are deleted at the end.
void redis_store() {
  if (redis_url().empty()) {
    std::printf("redis: skipped (no server: set PMAP_BENCH_REDIS or PMAP_TEST_REDIS)\n");
    return;
  }
  std::vector<std::string> prefixes;
  const auto fresh_prefix = [&] {
    prefixes.push_back("bench" + std::to_string(getpid()) + "_" + std::to_string(prefixes.size()) +
                       ":");
    return prefixes.back();
  };
  const auto uri = [&](const std::string& prefix) { return redis_url() + "?prefix=" + prefix; };
  const Data d = make_data(cfg.n, true);
  // Layout: one hash against a key per entry, raw, the same entries.
  {
    double hash_rate = 0, keys_rate = 0, hash_bytes = 0, keys_bytes = 0;
    for (int r = 0; r < cfg.reps; ++r) {
      for (const bool keys : {false, true}) {
        const std::string prefix = fresh_prefix();
        pmap::raw::Redis raw(redis_server(), "{" + prefix + "}data");
        const long long before = raw.dataset_bytes();
        const double rate = raw.put_batched(d, 1000, keys);
        const double bytes =
            static_cast<double>(raw.dataset_bytes() - before) / static_cast<double>(d.keys.size());
        (keys ? keys_rate : hash_rate) = std::max(keys ? keys_rate : hash_rate, rate);
        (keys ? keys_bytes : hash_bytes) = bytes;
        raw.drop("{" + prefix + "}");
      }
    }
    report({"redis", "layout: one hash, bulk", "ops/s", hash_rate, keys_rate,
            "a key per entry (SET), same MULTI/EXEC of 1,000", "report", ""});
    report({"redis", "layout: one hash, memory", "bytes/entry", hash_bytes, keys_bytes,
            "a key per entry (dataset.bytes)", "report", ""});
  }
  // Bulk: 8 threads, one flush; raw: pipelined MULTI/EXEC of 1,000 HSETs.
  double bulk = 0, raw_bulk = 0;
  for (int r = 0; r < cfg.reps; ++r) {
    {
      Map map{uri(fresh_prefix())};
      bulk = std::max(bulk, insert_all(map, d, 8));
    }
    raw_bulk = std::max(
        raw_bulk,
        pmap::raw::Redis(redis_server(), "{" + fresh_prefix() + "}data").put_batched(d, 1000));
  }
  // What the map reaches with nothing behind it (the memory backend): its
  // own ceiling on this machine, beside which the raw figures are read.
  double ceiling_bulk = 0;
  for (int r = 0; r < cfg.reps; ++r) {
    Map map{pmap::MemoryBackend()};
    ceiling_bulk = std::max(ceiling_bulk, insert_all(map, d, 8));
  }
  char extra[200];
  std::snprintf(extra, sizeof extra, "the map on the memory backend here: %.0f ops/s (%.2fx raw)",
                ceiling_bulk, ceiling_bulk / raw_bulk);
  report({"redis", "bulk, 8 threads", "ops/s", bulk, raw_bulk,
          "raw hiredis, pipelined MULTI/EXEC of 1,000", ">= 0.8x", extra});
  // Awaited: 64 threads, each write awaited; raw: one HSET per round trip.
  const std::size_t per_thread = cfg.quick ? 10 : 400;
  double awaited = 0, raw_awaited = 0;
  for (int r = 0; r < cfg.reps; ++r) {
    Map map{uri(fresh_prefix())};
    awaited = std::max(awaited, awaited_inserts(map, d, per_thread));
    pmap::raw::Redis raw(redis_server(), "{" + fresh_prefix() + "}data");
    const auto start = Clock::now();
    const std::size_t ops = std::min<std::size_t>({64 * per_thread, 20000, d.keys.size()});
    for (std::size_t i = 0; i < ops; ++i) raw.put(d.keys[i], d.values[i]);
    raw_awaited = std::max(raw_awaited, static_cast<double>(ops) / seconds_since(start));
  }
  double ceiling_awaited = 0;
  for (int r = 0; r < cfg.reps; ++r) {
    Map map{pmap::MemoryBackend()};
    ceiling_awaited = std::max(ceiling_awaited, awaited_inserts(map, d, per_thread));
  }
  std::snprintf(extra, sizeof extra, "the map on the memory backend here: %.0f ops/s (%.2fx raw)",
                ceiling_awaited, ceiling_awaited / raw_awaited);
  report({"redis", "awaited, 64 threads", "ops/s", awaited, raw_awaited,
          "raw hiredis, one HSET per round trip", ">= 5x", extra});
  // get(): 4 threads from the cache; raw: an HGET round trip each.
  {
    const std::size_t gets = cfg.quick ? 20000 : 1000000;
    const auto idx = random_indices(gets, cfg.n, 11);
    const std::string prefix = fresh_prefix();
    Map map{uri(prefix)};
    insert_all(map, d, 1);
    pmap::raw::Redis raw(redis_server(), "{" + prefix + "}data");
    double reads = 0, raw_reads = 0;
    for (int r = 0; r < cfg.reps; ++r) {
      reads = std::max(reads, cached_gets(map, d, idx));
      const std::size_t raw_ops = cfg.quick ? 200 : 20000;
      const auto start = Clock::now();
      for (std::size_t i = 0; i < raw_ops; ++i)
        if (!raw.get(d.keys[idx[i]])) std::abort();
      raw_reads = std::max(raw_reads, static_cast<double>(raw_ops) / seconds_since(start));
    }
    report({"redis", "get, 4 threads", "ops/s", reads, raw_reads,
            "raw hiredis HGET round trip, 1 connection", "report", ""});
  }
  propagation("redis", uri(fresh_prefix()));
  counters(
      "redis", [&] { return uri(fresh_prefix()); }, uri(fresh_prefix()),
      "1 process, same updates, same server");
  // Tidy up the keys this run made.
  pmap::raw::Redis tidy(redis_server(), "unused");
  for (const auto& p : prefixes) tidy.drop("{" + p + "}");
}
#endif

// Runs a workload in a child process, so that each starts from a fresh heap
// rather than from what the previous workloads left (in one process, gets
// after the write workloads ran at 0.65-1.3x a plain map instead of
// 1.1-1.35x). Its rows come back one line each.
// ---- pmapctl on a big store ---------------------------------------------------

// Milliseconds for one run of a program (its output thrown away); -1 when it
// could not run or failed.
double run_ms(const std::vector<std::string>& args) {
  const auto start = Clock::now();
  const pid_t pid = fork();
  if (pid == 0) {
    const int null = ::open("/dev/null", O_WRONLY);
    dup2(null, 1);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execvp(argv[0], argv.data());
    _exit(127);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return -1;
  return seconds_since(start) * 1000;
}

// pmapctl's reading commands on a 1,000,000-entry SQLite store, beside the
// sqlite3 shell doing the same query on the same file: both are a process
// started, the file opened, the answer printed.
void pmapctl_on_a_big_store() {
#ifndef PMAP_BENCH_PMAPCTL
  std::printf("pmapctl: skipped (not built: needs libcli11-dev)\n");
#else
  if (run_ms({"sqlite3", "-version"}) < 0) {
    std::printf("pmapctl: skipped (no sqlite3 shell: apt-get install sqlite3)\n");
    return;
  }
  const std::size_t n = cfg.quick ? 1000 : 1000000;
  const auto file = cfg.dir / "big.db";
  {
    pmap::SqliteBackend b(file);
    std::vector<pmap::Write> batch;
    for (std::size_t i = 0; i < n; ++i) {
      batch.push_back({pmap::Write::Op::put, "key" + std::to_string(i), std::string(100, 'v')});
      if (batch.size() == 100000 || i + 1 == n) {
        b.write(batch);
        batch.clear();
      }
    }
  }
  const std::string uri = "sqlite:" + file.string(), db = file.string();
  const std::string key = "key" + std::to_string(n / 2);
  struct Query {
    const char* name;
    std::vector<std::string> ours, raw;
  };
  const Query queries[] = {
      {"count", {PMAP_BENCH_PMAPCTL, "count", uri}, {"sqlite3", db, "SELECT count(*) FROM kv"}},
      {"get",
       {PMAP_BENCH_PMAPCTL, "get", uri, key},
       {"sqlite3", db, "SELECT value FROM kv WHERE key = '" + key + "'"}},
      {"has",
       {PMAP_BENCH_PMAPCTL, "has", uri, key},
       {"sqlite3", db, "SELECT 1 FROM kv WHERE key = '" + key + "'"}},
      {"list --limit 10",
       {PMAP_BENCH_PMAPCTL, "list", uri, "--limit", "10"},
       {"sqlite3", db, "SELECT key, value FROM kv LIMIT 10"}},
  };
  for (const Query& q : queries) {
    double ours = 1e300, raw = 1e300;
    for (int r = 0; r < std::max(cfg.reps, 5); ++r) {
      ours = std::min(ours, run_ms(q.ours));
      raw = std::min(raw, run_ms(q.raw));
    }
    report({"pmapctl, " + std::to_string(n) + " entries", q.name, "ms", ours, raw,
            "the sqlite3 shell, same query", "report", ""});
  }
#endif
}

bool run_in_child(void (*run)()) {
  const auto [out, ok] = in_child([run] {
    rows.clear();
    run();
    std::string text;
    char num[64];
    for (const Row& r : rows) {
      text += r.workload + '\t' + r.variant + '\t' + r.unit + '\t';
      std::snprintf(num, sizeof num, "%.17g\t%.17g\t", r.ours, r.baseline);
      text += num + r.baseline_name + '\t' + r.target + '\t' + r.extra + '\n';
    }
    return text;
  });
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    std::vector<std::string> f;
    std::istringstream fields(line);
    for (std::string x; std::getline(fields, x, '\t');) f.push_back(x);
    f.resize(8);
    rows.push_back({f[0], f[1], f[2], std::stod(f[3]), std::stod(f[4]), f[5], f[6], f[7]});
  }
  return ok;
}

int main(int argc, char** argv) try {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--n" && i + 1 < argc)
      cfg.n = std::stoul(argv[++i]);
    else if (a == "--quick")
      cfg.quick = true;
    else if (a == "--reps" && i + 1 < argc)
      cfg.reps = std::stoi(argv[++i]);
    else if (a == "--dir" && i + 1 < argc)
      cfg.dir = argv[++i];
    else if (a == "--tsv" && i + 1 < argc)
      cfg.tsv = argv[++i];
    else if (a == "--only" && i + 1 < argc)
      cfg.only = argv[++i];
    else if (a == "--threads" && i + 1 < argc)
      cfg.bulk_threads = std::max<std::size_t>(std::stoul(argv[++i]), 1);
    else {
      std::fprintf(stderr,
                   "usage: %s [--n N] [--reps R] [--quick] [--dir DIR] [--tsv FILE] [--only NAME]"
                   " [--threads T]\n"
                   "  NAME: part of bulk, awaited, reads, load, memory, csv, shared, pmapctl, "
                   "postgres, redis\n"
                   "  T: inserting threads of the bulk workload (default 8)\n",
                   argv[0]);
      return 2;
    }
  }
  if (cfg.quick) {
    cfg.n = std::min<std::size_t>(cfg.n, 2000);
    cfg.reps = 1;
  }
  bool own_dir = false;
  if (cfg.dir.empty()) {
    cfg.dir = std::filesystem::temp_directory_path() / ("pmap-bench-" + std::to_string(getpid()));
    own_dir = true;
  }
  std::filesystem::create_directories(cfg.dir);
  std::printf("persistent-map benchmarks: N=%zu, best of %d, files in %s\n", cfg.n, cfg.reps,
              cfg.dir.c_str());

  const std::pair<const char*, void (*)()> workloads[] = {
      {"bulk-sequential", [] { bulk_writes(false); }},
      {"bulk-random", [] { bulk_writes(true); }},
      {"awaited", awaited_writes},
      {"reads-mixed", reads_and_mixed},
      {"load", open_load},
      {"memory", memory_per_entry},
      {"csv", csv_writes_and_load},
      {"shared", shared_store},
      {"pmapctl", pmapctl_on_a_big_store},
#ifdef PMAP_BENCH_POSTGRES
      {"postgres", postgres_store},
#endif
#ifdef PMAP_BENCH_REDIS
      {"redis", redis_store},
#endif
  };
  for (const auto& [name, run] : workloads) {
    if (std::string_view(name).find(cfg.only) == std::string_view::npos) continue;
    // The previous workload's files are still being written back by the
    // kernel; its threads would take a core from this one's measurements.
    ::sync();
    if (!run_in_child(run)) return 1;
  }

  if (!cfg.tsv.empty()) {
    std::ofstream out(cfg.tsv);
    out << "workload\tvariant\tunit\tours\tbaseline\tratio\tbaseline_name\ttarget\tnote\n";
    for (const auto& r : rows)
      out << r.workload << '\t' << r.variant << '\t' << r.unit << '\t' << r.ours << '\t'
          << r.baseline << '\t' << (r.baseline > 0 ? r.ours / r.baseline : 0) << '\t'
          << r.baseline_name << '\t' << r.target << '\t' << r.extra << '\n';
  }
  if (own_dir) std::filesystem::remove_all(cfg.dir);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "pmap_bench: %s\n", e.what());
  return 1;
}
