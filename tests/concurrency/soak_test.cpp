// Soak: 8 threads mix every operation on 100k keys of one SQLite map for a
// while (8 s quick; PMAP_LONG_TESTS=1: 5 minutes, or PMAP_SOAK_SECONDS), in 4
// phases, then a clear() and a short last phase; a watchdog stops a hang.
//
// Each thread owns the keys k with k % 8 == thread and keeps a model of
// them, so every read of an own key is checked exactly (read your writes),
// every value read anywhere must belong to its key's owner, every future must
// complete without error, and after the run a reopened map must equal the
// models. Memory: the heap in use before the clear may not exceed the heap
// after the first phase (plus the cost of any entries more than then) by more
// than 8 MiB — a leak per operation would, after the long run's millions.
#include <gtest/gtest.h>
#include <malloc.h>

#include <atomic>
#include <barrier>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "../support/test_backend.hpp"
#include "pmap/pmap.hpp"

namespace {

using Map = pmap::PersistentMap<std::string, std::string>;
using Clock = std::chrono::steady_clock;

constexpr int kThreads = 8;
constexpr int kKeys = 100000;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kSanitized = true;  // their allocators make mallinfo2 meaningless
#else
constexpr bool kSanitized = false;
#endif

std::string key_name(int k) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "k%06d", k);
  return buf;
}
int owner_of(const std::string& key) { return std::atoi(key.c_str() + 1) % kThreads; }

// "<owner>:<what>:<n>" padded to about 100 bytes.
std::string make_value(int owner, char what, std::uint64_t n) {
  std::string v = std::to_string(owner) + ":" + what + ":" + std::to_string(n) + ":";
  v.resize(100, '.');
  return v;
}
int owner_in(const std::string& value) { return value.empty() ? -1 : value[0] - '0'; }

std::size_t heap_in_use() {
  malloc_trim(0);
  return mallinfo2().uordblks;
}

// Fails the run (the whole process: a deadlock cannot be unwound) when no
// thread makes progress for `stall`, or the run outlasts `limit`.
class Watchdog {
 public:
  Watchdog(const std::atomic<std::uint64_t>& progress, std::chrono::seconds stall,
           std::chrono::seconds limit)
      : thread_([&progress, stall, limit, this] {
          const auto start = Clock::now();
          std::uint64_t last = progress.load();
          auto last_change = start;
          while (!stop_.load()) {
            std::this_thread::sleep_for(std::chrono::milliseconds(200));
            const std::uint64_t now_progress = progress.load();
            const auto now = Clock::now();
            if (now_progress != last) {
              last = now_progress;
              last_change = now;
            }
            if (now - last_change > stall || now - start > limit) {
              std::fprintf(
                  stderr,
                  "soak watchdog: no progress for %lld s (or over the %lld s limit) "
                  "after %llu operations: deadlock or hang\n",
                  static_cast<long long>(
                      std::chrono::duration_cast<std::chrono::seconds>(now - last_change).count()),
                  static_cast<long long>(limit.count()),
                  static_cast<unsigned long long>(now_progress));
              std::_Exit(1);
            }
          }
        }) {}
  ~Watchdog() {
    stop_ = true;
    thread_.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

struct Counts {
  std::uint64_t ops = 0, gets = 0, inserts = 0, awaited = 0, erases = 0, updates = 0, batches = 0,
                flushes = 0, scans = 0;
};

TEST(Soak, EightThreadsMixEveryOperationWithoutLossLeakOrDeadlock) {
  const char* long_env = std::getenv("PMAP_LONG_TESTS");
  const char* seconds_env = std::getenv("PMAP_SOAK_SECONDS");
  const bool long_run = long_env && std::string(long_env) == "1";
  const int total_seconds = seconds_env ? std::atoi(seconds_env) : long_run ? 300 : 8;
  constexpr int kPhases = 4;  // then a clear() and a short last phase
  const auto phase_time = std::chrono::milliseconds(total_seconds * 1000 / kPhases);

  pmap_test::TempDir dir;
  const auto file = dir / "soak.db";
  std::vector<std::unordered_map<std::string, std::string>> models(kThreads);
  std::atomic<std::uint64_t> progress{0};
  std::atomic<std::uint64_t> failures{0};
  std::vector<Counts> counts(kThreads);
  std::size_t start_bytes = 0, start_entries = 0, end_bytes = 0, end_entries = 0, final_entries = 0;
  {
    Map map{pmap::SqliteBackend(file)};
    for (int k = 0; k < kKeys; ++k) {
      const std::string key = key_name(k);
      models[k % kThreads][key] = make_value(k % kThreads, 'i', 0);
      map.insert(key, models[k % kThreads][key]);
    }
    map.flush().get();

    Watchdog watchdog(progress, std::chrono::seconds(60),
                      std::chrono::seconds(total_seconds + 600));
    std::barrier phase_end(kThreads, [&]() noexcept { progress.fetch_add(1); });
    auto fail = [&](const std::string& why) {
      if (failures.fetch_add(1) < 10) ADD_FAILURE() << why;
    };

    auto worker = [&](int t) {
      auto& model = models[t];
      Counts& c = counts[t];
      std::mt19937_64 rng(1234 + t);
      std::vector<pmap::Future<std::optional<std::string>>> pending;
      std::vector<pmap::Future<void>> pending_batches;
      auto own_key = [&] {
        return key_name(static_cast<int>(rng() % (kKeys / kThreads)) * kThreads + t);
      };
      // Every future completes, without error, within a minute.
      auto check_all = [&](auto& futures, const std::string& what) {
        for (auto& f : futures) {
          if (!f.wait_for(std::chrono::seconds(60)))
            fail(what + " future did not complete in 60 s");
          try {
            f.get();
          } catch (const std::exception& e) {
            fail(what + " failed: " + e.what());
          }
        }
        futures.clear();
      };
      auto settle = [&] {
        check_all(pending, "a write");
        check_all(pending_batches, "a batch");
      };
      for (int phase = 0; phase <= kPhases; ++phase) {
        if (phase == kPhases) {  // everyone stops; thread 0 clears the map
          settle();
          phase_end.arrive_and_wait();
          if (t == 0) map.clear().get();
          phase_end.arrive_and_wait();
          model.clear();
        }
        const auto until = Clock::now() + (phase == kPhases ? phase_time / 4 : phase_time);
        while (Clock::now() < until) {
          for (int burst = 0; burst < 64; ++burst) {
            ++c.ops;
            const unsigned dice = static_cast<unsigned>(rng() % 1000);
            if (dice < 300) {  // get: own keys exactly, others well-formed
              ++c.gets;
              const bool own = rng() % 2;
              const std::string k = own ? own_key() : key_name(static_cast<int>(rng() % kKeys));
              const auto v = map.get(k);
              if (own) {
                auto it = model.find(k);
                const std::optional<std::string> want =
                    it == model.end() ? std::nullopt : std::optional<std::string>(it->second);
                if (v != want) fail("read-your-writes broken for " + k);
              } else if (v && owner_in(*v) != owner_of(k)) {
                fail("key " + k + " holds another thread's value " + *v);
              }
            } else if (dice < 350) {
              const std::string k = own_key();
              if (map.contains(k) != (model.count(k) > 0)) fail("contains() wrong for " + k);
            } else if (dice < 600) {  // insert, not awaited
              ++c.inserts;
              const std::string k = own_key();
              model[k] = make_value(t, 'i', c.ops);
              pending.push_back(map.insert(k, model[k]));
            } else if (dice < 650) {  // insert, awaited
              ++c.awaited;
              const std::string k = own_key();
              model[k] = make_value(t, 'a', c.ops);
              auto prev = map.insert(k, model[k]).get();
              if (prev && owner_in(*prev) != t) fail("insert returned a foreign previous value");
            } else if (dice < 750) {
              ++c.erases;
              const std::string k = own_key();
              model.erase(k);
              pending.push_back(map.erase(k));
            } else if (dice < 850) {  // update: a counter in the value
              ++c.updates;
              const std::string k = own_key();
              pending.push_back(map.update(k, [&](std::optional<std::string>& v) {
                const std::uint64_t n =
                    v && (*v)[2] == 'c' ? std::strtoull(v->c_str() + 4, nullptr, 10) + 1 : 1;
                v = make_value(t, 'c', n);
              }));
              const auto& old = model[k];
              const std::uint64_t n = old.size() > 2 && old[2] == 'c'
                                          ? std::strtoull(old.c_str() + 4, nullptr, 10) + 1
                                          : 1;
              model[k] = make_value(t, 'c', n);
            } else if (dice < 950) {  // a batch of 1-8 own keys
              ++c.batches;
              pmap::Batch<std::string, std::string> batch;
              const int n = 1 + static_cast<int>(rng() % 8);
              for (int i = 0; i < n; ++i) {
                const std::string k = own_key();
                if (rng() % 4 == 0) {
                  batch.erase(k);
                  model.erase(k);
                } else {
                  model[k] = make_value(t, 'b', c.ops);
                  batch.insert(k, model[k]);
                }
              }
              pending_batches.push_back(map.apply(batch));
            } else if (dice < 990) {
              (void)map.size();
            } else if (dice < 998) {
              ++c.flushes;
              try {
                map.flush().get();
              } catch (const std::exception& e) {
                fail(std::string("flush failed: ") + e.what());
              }
            } else {  // a full scan, checking every value's owner
              ++c.scans;
              std::size_t seen = 0;
              map.for_each([&](const std::string& k, const std::string& v) {
                ++seen;
                if (owner_in(v) != owner_of(k)) fail("for_each: " + k + " holds " + v);
              });
              if (seen > static_cast<std::size_t>(kKeys))
                fail("for_each saw more entries than keys");
            }
          }
          progress.fetch_add(64, std::memory_order_relaxed);
          if (pending.size() + pending_batches.size() > 4096) settle();
        }
        settle();
        phase_end.arrive_and_wait();
        if (t == 0 && (phase == 0 || phase == kPhases - 1)) {  // warmed up / before the clear
          map.flush().get();
          (phase == 0 ? start_entries : end_entries) = map.size();
          (phase == 0 ? start_bytes : end_bytes) = heap_in_use();
        }
        phase_end.arrive_and_wait();
      }
    };
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) threads.emplace_back(worker, t);
    for (auto& th : threads) th.join();
    map.flush().get();
    final_entries = map.size();
  }

  Counts sum;
  for (const auto& c : counts) {
    sum.ops += c.ops;
    sum.gets += c.gets;
    sum.inserts += c.inserts;
    sum.awaited += c.awaited;
    sum.erases += c.erases;
    sum.updates += c.updates;
    sum.batches += c.batches;
    sum.flushes += c.flushes;
    sum.scans += c.scans;
  }
  std::printf(
      "  soak: %d s, %llu operations (%llu gets, %llu inserts, %llu awaited, %llu erases, "
      "%llu updates, %llu batches, %llu flushes, %llu scans)\n",
      total_seconds, static_cast<unsigned long long>(sum.ops),
      static_cast<unsigned long long>(sum.gets), static_cast<unsigned long long>(sum.inserts),
      static_cast<unsigned long long>(sum.awaited), static_cast<unsigned long long>(sum.erases),
      static_cast<unsigned long long>(sum.updates), static_cast<unsigned long long>(sum.batches),
      static_cast<unsigned long long>(sum.flushes), static_cast<unsigned long long>(sum.scans));
  EXPECT_EQ(failures.load(), 0u);
  for (const auto& c : counts) EXPECT_GT(c.ops, 1000u) << "a thread barely ran";

  // Durable: a reopened map is exactly the union of the models.
  std::unordered_map<std::string, std::string> expected;
  for (const auto& m : models) expected.insert(m.begin(), m.end());
  Map reopened{pmap::SqliteBackend(file)};
  EXPECT_EQ(reopened.size(), expected.size());
  std::size_t wrong = 0;
  for (const auto& [k, v] : expected)
    if (reopened.get(k) != v && ++wrong <= 5)
      ADD_FAILURE() << "after reopening, " << k << " differs";
  EXPECT_EQ(wrong, 0u);
  EXPECT_EQ(final_entries, expected.size());

  if (!kSanitized) {
    const double start_per_entry =
        static_cast<double>(start_bytes) / static_cast<double>(start_entries);
    const double end_per_entry = static_cast<double>(end_bytes) / static_cast<double>(end_entries);
    std::printf(
        "  heap in use: %.1f MiB for %zu entries after warm-up, %.1f MiB for %zu at the end "
        "(%.0f / %.0f bytes per entry)\n",
        start_bytes / 1048576.0, start_entries, end_bytes / 1048576.0, end_entries, start_per_entry,
        end_per_entry);
    // Allowed: the heap after warm-up, plus the start's cost per entry for
    // any entries more than then, + 8 MiB (SQLite's page cache may still be
    // filling). mallinfo2 counts bytes handed out, not fragmentation, so a
    // leak shows as soon as it passes the slack: a few bytes per operation
    // over the long run's millions.
    const double extra = end_entries > start_entries
                             ? static_cast<double>(end_entries - start_entries) * start_per_entry
                             : 0.0;
    const double allowed = static_cast<double>(start_bytes) + extra + 8.0 * 1048576;
    EXPECT_LT(static_cast<double>(end_bytes), allowed) << "memory grew beyond the data";
  }
}

}  // namespace
