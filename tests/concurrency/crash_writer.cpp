// Helper for the durability test: writes forever and reports each write it
// has seen complete, so the parent can kill -9 it at any moment and check
// that every reported write survived.
//
//   pmap_crash_writer URI awaited   insert(k, v).get(), then print k's index
//   pmap_crash_writer URI flushed   4 threads insert without waiting; every
//                                   64 writes flush().get(), then print the
//                                   highest index written before that flush
//   pmap_crash_writer URI batches   apply() batches of 10 (.get()), print the last index
//   pmap_crash_writer URI mixed ROUND SEED
//                                   a random mix of awaited and unawaited inserts,
//                                   erases, updates and batches; prints what it
//                                   saw committed: "I key value", "E key"
//                                   (after "X key": an erase is under way),
//                                   "B n" (batch n: keys ROUND:bn/0..9), "C n"
//                                   (the counter reached n)
#include <pmap/pmap.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

std::string key(long i) { return "key" + std::to_string(i); }
std::string value(long i) { return "value " + std::to_string(i) + std::string(static_cast<std::size_t>(i % 50), '.'); }

void ack(long i) {
  std::printf("%ld\n", i);
  std::fflush(stdout);
}

int run_mixed(const char* uri, const std::string& round, unsigned long seed) {
  pmap::PersistentMap<std::string, std::string> map{std::string_view(uri)};
  std::printf("ready %zu\n", map.size());
  std::fflush(stdout);
  std::mt19937 rng(static_cast<unsigned>(seed));
  std::vector<std::string> live;  // keys this run inserted and saw committed
  for (long n = 0;; ++n) {
    const std::string key = round + ":" + std::to_string(n);
    const std::string val = "v" + std::to_string(n) + std::string(rng() % 40, '.');
    switch (rng() % 6) {
      case 0:
      case 1:
        map.insert(key, val).get();
        std::printf("I %s %s\n", key.c_str(), val.c_str());
        live.push_back(key);
        break;
      case 2: {  // unawaited, then one flush covers them
        for (int j = 0; j < 5; ++j) map.insert(key + "u" + std::to_string(j), val);
        map.flush().get();
        for (int j = 0; j < 5; ++j) std::printf("I %su%d %s\n", key.c_str(), j, val.c_str());
        break;
      }
      case 3:
        if (!live.empty()) {
          const std::size_t i = rng() % live.size();
          std::printf("X %s\n", live[i].c_str());  // may be erased from here on
          std::fflush(stdout);
          map.erase(live[i]).get();
          std::printf("E %s\n", live[i].c_str());
          live.erase(live.begin() + static_cast<std::ptrdiff_t>(i));
        }
        break;
      case 4: {
        pmap::Batch<std::string, std::string> batch;
        for (int j = 0; j < 10; ++j) batch.insert(round + ":b" + std::to_string(n) + "/" + std::to_string(j), val);
        map.apply(batch).get();
        std::printf("B %ld\n", n);
        break;
      }
      case 5: {
        auto c = map.update("counter", [](std::optional<std::string>& v) {
          v = std::to_string(v ? std::stol(*v) + 1 : 1);
        }).get();
        std::printf("C %s\n", c->c_str());
        break;
      }
    }
    std::fflush(stdout);
  }
}

}  // namespace

int main(int argc, char** argv) try {
  if (argc != 3 && argc != 5) {
    std::fprintf(stderr, "usage: %s URI awaited|flushed|batches\n", argv[0]);
    return 2;
  }
  if (argc == 5 && std::string(argv[2]) == "mixed") return run_mixed(argv[1], argv[3], std::strtoul(argv[4], nullptr, 10));
  pmap::PersistentMap<std::string, std::string> map{std::string_view(argv[1])};
  const std::string mode = argv[2];
  std::printf("ready %zu\n", map.size());
  std::fflush(stdout);
  if (mode == "awaited") {
    for (long i = 0;; ++i) {
      map.insert(key(i), value(i)).get();
      ack(i);
    }
  } else if (mode == "flushed") {
    for (long base = 0;; base += 64) {
      std::vector<std::thread> threads;
      for (int t = 0; t < 4; ++t)
        threads.emplace_back([&, t] {
          for (long i = base + t; i < base + 64; i += 4) map.insert(key(i), value(i));
        });
      for (auto& th : threads) th.join();
      map.flush().get();
      ack(base + 63);
    }
  } else if (mode == "batches") {
    for (long i = 0;; i += 10) {
      pmap::Batch<std::string, std::string> batch;
      for (long j = i; j < i + 10; ++j) batch.insert(key(j), value(j));
      map.apply(batch).get();
      ack(i + 9);
    }
  }
  return 2;
} catch (const std::exception& e) {
  std::fprintf(stderr, "crash_writer: %s\n", e.what());
  return 1;
}
