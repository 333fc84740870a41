// pmap/options.hpp — how a map runs: where user code runs, where unobserved
// errors go, and how much may wait for the disk.
//
// Thread safety: an Options value is copied into the map at construction.
// `executor` is then called from several threads at once — the map's writer
// and sync threads, and yours (then() on a completed future) — so it must be
// thread-safe. on_error runs only through the executor.
#pragma once

#include <cstddef>
#include <functional>

#include "pmap/error.hpp"

namespace pmap {

// Runs a task, now or later, on some thread of the application's choosing.
using Executor = std::function<void(std::function<void()> task)>;

struct Options {
  // Runs continuations (Future::then), resumed coroutines and on_error.
  // It must run every task it is given exactly once, on a thread of its own
  // (not inline: it is called from the map's writer and sync threads, and a
  // task run there would hold up every write of the map).
  // Default: one completion thread owned by the map.
  Executor executor;

  // Receives write failures nobody else will see: a failed write whose future
  // was dropped without get(), and a failure of the final commit in close()
  // or the destructor. Runs through `executor`.
  // Default: print the message to stderr, prefixed "pmap: ".
  std::function<void(const Error&)> on_error;

  // Back-pressure: at most this many writes are queued or being committed;
  // a writer beyond it waits in insert/erase/update/apply/clear until the
  // disk catches up. A single apply() larger than this is still accepted,
  // alone. Default: 65536.
  std::size_t max_pending_writes = 65536;

  // Upper bound of one group commit (one backend transaction), in writes and
  // in encoded bytes. A bigger group amortises fsync better; a smaller one
  // lets the first futures complete sooner. A backend may ask for fewer
  // writes (Backend::max_commit_writes(); Redis: 1,000), and then the
  // smaller limit holds. One apply() is never split, whatever its size.
  // Default: 16384 writes, 16 MiB.
  std::size_t max_group_writes = 16384;
  std::size_t max_group_bytes = 16u << 20;

  // Number of cache shards (rounded up to a power of two), each a hash map
  // under its own reader-writer lock. Default: 32.
  std::size_t shards = 32;
};

}  // namespace pmap
