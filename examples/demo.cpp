// The demo: a tiny app whose state survives restarts. Run it twice; the
// second run shows what the first stored.
//
//   ./pmap_demo [database-path]      (default: pmap-demo.db)
#include <pmap/pmap.hpp>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <iostream>
#include <string>
#include <vector>

int main(int argc, char** argv) try {
  const std::string path = argc > 1 ? argv[1] : "pmap-demo.db";
  pmap::PersistentMap<std::string, std::string> map{pmap::SqliteBackend(path)};
  std::cout << "opened " << map.backend().describe() << " with " << map.size() << " entries\n";

  // What earlier runs stored.
  auto entries = map.snapshot();
  std::sort(entries.begin(), entries.end());
  for (const auto& [key, value] : entries) std::cout << "  " << key << " = " << value << "\n";

  // This run: count it, and remember when it happened.
  auto runs = map.update("runs", [](std::optional<std::string>& v) {
    v = std::to_string(v ? std::stoll(*v) + 1 : 1);
  });
  const auto now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  char when[64];
  std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", std::gmtime(&now));
  map.insert("last_run", when);
  const std::string run = *runs.get();  // the new value, once committed

  // Many writers at once: 1000 inserts go to disk in a handful of transactions.
  std::vector<pmap::Future<std::optional<std::string>>> pending;
  for (int i = 0; i < 1000; ++i)
    pending.push_back(map.insert("item:" + std::to_string(i % 10), "written by run " + run));
  for (auto& f : pending) f.get();
  map.flush().get();

  std::cout << "this is run " << run << "; " << map.size()
            << " entries are on disk now. Run me again.\n";
  return 0;
} catch (const pmap::Error& e) {
  std::cerr << "error: " << e.what() << "\n";
  return 1;
}
