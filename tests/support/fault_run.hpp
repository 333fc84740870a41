// A map that writes through a fault on its server (connections killed, the
// server restarted), then the check that nothing acked was lost and nothing
// applied twice. Shared by the PostgreSQL and Redis suites.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <functional>
#include <pmap/pmap.hpp>
#include <string>
#include <thread>
#include <vector>

#include "test_backend.hpp"

namespace pmap_test {

// Counts, across server sessions ended under it, and checks the store holds
// exactly what the futures said: every acked insert, and each counter equal
// to the updates whose futures succeeded (none applied twice, none that
// committed reported failed).
inline void write_through_faults(const std::string& uri, const std::function<void()>& fault) {
  Reports reports;
  pmap::PersistentMap<std::string, std::string> map{uri, reports.options()};
  std::atomic<bool> stop{false};
  std::atomic<long> acked{0}, failed{0}, counted{0};
  std::vector<std::thread> writers;
  for (int t = 0; t < 4; ++t) {
    writers.emplace_back([&, t] {
      for (long i = 0; !stop; ++i) {
        auto insert = map.insert("k" + std::to_string(t) + "_" + std::to_string(i), "v");
        auto update = map.update("n", [](std::optional<std::string>& v) {
          v = std::to_string(v ? std::stol(*v) + 1 : 1);
        });
        try {
          insert.get();
          ++acked;
        } catch (const pmap::Error& e) {
          EXPECT_EQ(e.code(), pmap::Errc::io) << e.what();
          ++failed;
          map.erase("k" + std::to_string(t) + "_" + std::to_string(i));  // not acked: forget it
        }
        try {
          update.get();
          ++counted;
        } catch (const pmap::Error& e) {
          EXPECT_EQ(e.code(), pmap::Errc::io) << e.what();
        }
      }
    });
  }
  while (acked < 300) std::this_thread::yield();
  fault();
  const long after_fault = acked;
  while (acked < after_fault + 300) std::this_thread::yield();  // the map carries on
  stop = true;
  for (auto& w : writers) w.join();
  auto store = pmap::open_backend(uri);
  EXPECT_EQ(store->get("n"), std::to_string(counted.load()))
      << "each counted update applied once, and none that applied reported failed";
  long present = 0;
  store->scan([&](std::string_view k, std::string_view) { present += k[0] == 'k'; });
  EXPECT_EQ(present, acked.load()) << "every acked insert is there (failed ones were erased)";
  // The cache converges to the store once the watcher reconnected.
  bool refreshed = false;
  for (int i = 0; i < 100 && !refreshed; ++i) {
    try {
      map.refresh().get();
      refreshed = true;
    } catch (const pmap::Error&) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  ASSERT_TRUE(refreshed);
  EXPECT_EQ(map.get("n"), store->get("n"));
  std::printf("acked %ld, failed %ld, counted %ld, %zu reports\n", acked.load(), failed.load(),
              counted.load(), reports.count());
}

}  // namespace pmap_test
