// A process on a shared store, for the multi-process tests. It talks to the
// test over stdin/stdout, one line at a time:
//
//   pmap_shared_worker URI count N KEYS
//       N update() increments of the counters c0..c{KEYS-1} (round robin),
//       then prints "done"; on a line "check" from stdin: refresh(), then
//       prints "equal N" if its cache equals the store (read through a
//       second backend on the URI) or "differs: ..." otherwise.
//   pmap_shared_worker URI batches N
//       N apply() batches, each setting b0..b9 to the same value i; "done".
//   pmap_shared_worker URI observe
//       until stdin closes: reads b0..b9 from its cache in a loop and counts
//       the reads where they differ (a half-applied batch); then prints
//       "half N seen M" (M: the distinct values seen).
//   pmap_shared_worker URI acked
//       inserts a0, a1, ... forever, printing each index once its future
//       completed (the test kill -9s it).
//   pmap_shared_worker URI follow
//       prints "ready"; on a line "check" from stdin: as count's, then
//       "watched M" (M: the remote puts its watch callback received).
//   pmap_shared_worker URI put KEY VALUE
//       insert(KEY, VALUE).get(), then "done".
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <iostream>
#include <mutex>
#include <pmap/pmap.hpp>
#include <set>
#include <string>
#include <thread>

namespace {

using Map = pmap::PersistentMap<std::string, std::string>;

void say(const std::string& line) {
  std::cout << line << std::endl;  // flushed: the test reads it now
}

// Waits for a line "check" on stdin (false at end of input), then
// refresh()es and compares the cache with the store, scanned through a
// second backend opened on the same URI: "equal N", or "differs: ..."
// showing both.
bool check(Map& map, const std::string& uri) {
  std::string line;
  while (std::getline(std::cin, line) && line != "check") {
  }
  if (line != "check") return false;
  map.refresh().get();
  auto mine = map.snapshot();
  std::vector<std::pair<std::string, std::string>> stored;
  pmap::open_backend(uri)->scan([&](std::string_view k, std::string_view v) {
    stored.emplace_back(std::string(k), std::string(v));  // the codec of strings is the identity
  });
  std::sort(mine.begin(), mine.end());
  std::sort(stored.begin(), stored.end());
  if (mine == stored) {
    say("equal " + std::to_string(mine.size()));
    return true;
  }
  std::string diff;
  for (const auto& [k, v] : mine) diff += " " + k + "=" + v;
  diff += " | store:";
  for (const auto& [k, v] : stored) diff += " " + k + "=" + v;
  say("differs:" + diff);
  return true;
}

int count(Map& map, const std::string& uri, long n, long keys) {
  // Not awaited one by one: many are queued together, and conflict.
  std::vector<pmap::Future<std::optional<std::string>>> updates;
  for (long i = 0; i < n; ++i)
    updates.push_back(map.update("c" + std::to_string(i % keys), [](std::optional<std::string>& v) {
      v = std::to_string(v ? std::stol(*v) + 1 : 1);
    }));
  for (auto& u : updates) u.get();  // each after its winning attempt
  say("done");
  check(map, uri);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: pmap_shared_worker URI count|batches|observe|acked|put ...\n");
    return 2;
  }
  const std::string uri = argv[1], mode = argv[2];
  try {
    Map map{std::string_view(uri)};
    if (mode == "count" && argc == 5)
      return count(map, uri, std::stol(argv[3]), std::stol(argv[4]));
    if (mode == "batches" && argc == 4) {
      const long n = std::stol(argv[3]);
      for (long i = 1; i <= n; ++i) {
        pmap::Batch<std::string, std::string> batch;
        for (int k = 0; k < 10; ++k) batch.insert("b" + std::to_string(k), std::to_string(i));
        map.apply(batch).get();
      }
      say("done");
      return 0;
    }
    if (mode == "observe") {
      say("ready");
      long half = 0;
      std::set<std::string> seen;
      // The test closes stdin when the writer is done; a reader thread
      // notices, this one keeps reading the cache meanwhile.
      std::atomic<bool> stop{false};
      std::thread eof([&] {
        std::string line;
        while (std::getline(std::cin, line)) {
        }
        stop = true;
      });
      // Each batch sets every key to a higher value: when b0 is the same
      // before and after reading b1..b9, no batch was applied in between,
      // and they must all equal it.
      while (!stop) {
        const auto first = map.get("b0");
        bool differs = false;
        for (int k = 1; k < 10; ++k) differs |= map.get("b" + std::to_string(k)) != first;
        if (map.get("b0") != first) continue;
        if (differs) ++half;
        if (first) seen.insert(*first);
      }
      eof.join();
      say("half " + std::to_string(half) + " seen " + std::to_string(seen.size()));
      return 0;
    }
    if (mode == "acked") {
      for (long i = 0;; ++i) {
        map.insert("a" + std::to_string(i), std::to_string(i)).get();
        say(std::to_string(i));
      }
    }
    if (mode == "follow") {
      std::mutex mutex;
      std::condition_variable changed;
      long watched = 0;
      auto sub = map.watch([&](const pmap::Change<std::string, std::string>& c) {
        if (c.origin != pmap::Origin::remote || c.kind != pmap::ChangeKind::put) return;
        std::lock_guard lock(mutex);
        ++watched;
        changed.notify_all();
      });
      say("ready");
      if (!check(map, uri)) return 0;
      // The calls run on the completion executor, not before refresh()
      // completes: wait for one per entry (or give up after 30 s, and the
      // count printed tells what arrived).
      const auto entries = static_cast<long>(map.snapshot().size());
      {
        std::unique_lock lock(mutex);
        changed.wait_for(lock, std::chrono::seconds(30), [&] { return watched >= entries; });
      }
      sub.reset();  // every call made so far has returned
      std::lock_guard lock(mutex);
      say("watched " + std::to_string(watched));
      return 0;
    }
    if (mode == "put" && argc == 5) {
      map.insert(argv[3], argv[4]).get();
      say("done");
      return 0;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pmap_shared_worker: %s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "pmap_shared_worker: bad arguments\n");
  return 2;
}
