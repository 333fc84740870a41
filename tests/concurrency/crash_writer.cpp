// Helper for the durability test: writes forever and reports each write it
// has seen complete, so the parent can kill -9 it at any moment and check
// that every reported write survived.
//
//   pmap_crash_writer URI awaited   insert(k, v).get(), then print k's index
//   pmap_crash_writer URI flushed   4 threads insert without waiting; every
//                                   64 writes flush().get(), then print the
//                                   highest index written before that flush
//   pmap_crash_writer URI batches   apply() batches of 10 (.get()), print the last index
#include <pmap/pmap.hpp>

#include <cstdio>
#include <cstring>
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

}  // namespace

int main(int argc, char** argv) try {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s URI awaited|flushed|batches\n", argv[0]);
    return 2;
  }
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
