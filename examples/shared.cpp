// Many processes on one store: run it several times at once, e.g.
//
//   for i in 1 2 3 4; do build/release/examples/pmap_shared shared.db 1000 & done; wait
//
// on a SQLite file in shared mode, or on a PostgreSQL table or a Redis
// server (processes on any machines that reach the server):
//
//   build/release/examples/pmap_shared 'postgres://app:pw@db:5432/app?table=counters' 1000
//   build/release/examples/pmap_shared 'redis://:pw@cache:6379/0?prefix=counters:' 1000
//
// Each process adds 1000 to one counter with update() and watches what the
// others do; the counter ends at exactly 1000 times the number of processes.
#include <atomic>
#include <iostream>
#include <pmap/pmap.hpp>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  const std::string store = argc > 1 ? argv[1] : "shared.db";  // a file, or a server's URI
  const long n = argc > 2 ? std::stol(argv[2]) : 1000;
  const bool server = store.find("://") != std::string::npos;

  pmap::PersistentMap<std::string, long> map{server ? store : "sqlite:" + store + "?mode=shared"};

  std::atomic<long> remote{0};
  auto sub = map.watch([&](const pmap::Change<std::string, long>& c) {
    if (c.origin == pmap::Origin::remote) ++remote;  // another process wrote
  });

  std::vector<pmap::Future<std::optional<long>>> done;
  for (long i = 0; i < n; ++i)
    done.push_back(map.update("counter", [](std::optional<long>& v) { v = v.value_or(0) + 1; }));
  for (auto& f : done) f.get();  // each after the attempt that won: f may run more than once

  map.refresh().get();  // everything committed by anyone before this line is in the cache
  std::cout << "counter = " << map.get("counter").value_or(0) << " (" << remote.load()
            << " changes seen from other processes)\n";
}
