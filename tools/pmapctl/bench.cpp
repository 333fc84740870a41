// pmapctl bench: a quick write and read throughput check on a store, beside
// baselines, for sizing hardware. The full suite is bench/pmap_bench.
#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <thread>
#include <unordered_map>

#include "common.hpp"

namespace pmapctl {
namespace {

struct BenchOptions {
  std::string uri;
  std::size_t n = 100000;
  std::size_t threads = 4;
};

using Clock = std::chrono::steady_clock;

double per_second(std::size_t ops, Clock::time_point start) {
  const double s = std::chrono::duration<double>(Clock::now() - start).count();
  return s > 0 ? static_cast<double>(ops) / s : 0;
}

void line(const char* what, double ours, const char* baseline_name, double baseline) {
  std::printf("%-34s %12.0f ops/s   %-40s %12.0f ops/s   %.2fx\n", what, ours, baseline_name,
              baseline, baseline > 0 ? ours / baseline : 0);
}

// Keys of its own (pmapctl-bench:N), erased again at the end.
void bench(const BenchOptions& o) {
  if (o.n == 0 || o.threads == 0) throw Failure{kUsage, "--n and --threads must be at least 1"};
  const std::string prefix = "pmapctl-bench:";
  std::vector<std::string> keys;
  for (std::size_t i = 0; i < o.n; ++i) keys.push_back(prefix + std::to_string(i));
  const std::string value(100, 'v');

  // Baseline for writes: the backend itself, batches of 1,000, no map.
  double raw_writes = 0;
  {
    const auto backend = open_for_writing(o.uri);
    std::vector<pmap::Write> batch;
    const auto start = Clock::now();
    for (std::size_t i = 0; i < o.n; ++i) {
      batch.push_back({pmap::Write::Op::put, keys[i], value});
      if (batch.size() == 1000 || i + 1 == o.n) {
        backend->write(batch);
        batch.clear();
      }
    }
    raw_writes = per_second(o.n, start);
    for (std::size_t i = 0; i < o.n; ++i) batch.push_back({pmap::Write::Op::erase, keys[i], {}});
    backend->write(batch);
  }

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
  line("writes (insert, then one flush)", writes, "the backend alone, batches of 1,000",
       raw_writes);
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
      "It writes keys of its own (pmapctl-bench:N) and erases them at the end; the full\n"
      "benchmark suite is bench/pmap_bench (./scripts/bench.sh).\n"
      "Example:\n  pmapctl bench sqlite:/mnt/ssd/try.db --n 200000 --threads 8");
  cmd->callback([o] { bench(*o); });
}

}  // namespace pmapctl
