// pmap/backends/memory.hpp — entries in RAM, nothing persisted.
//
// For tests and caches. Batches are atomic. describe() is "memory:".
// open_reader() gives a session on the same entries (it keeps them alive).
// URI: memory: (memory:?read_only=true: an empty store that refuses writes).
//
// Thread safety: every member may be called from any thread.
#pragma once

#include <memory>

#include "pmap/backend.hpp"

namespace pmap {

class MemoryBackend final : public Backend {
 public:
  MemoryBackend();
  MemoryBackend(MemoryBackend&&) noexcept;
  MemoryBackend& operator=(MemoryBackend&&) noexcept;
  ~MemoryBackend() override;

  void scan(ScanSink sink) override;
  std::optional<std::string> get(std::string_view key) override;
  void write(std::span<const Write> batch) override;
  std::string describe() const override;
  std::unique_ptr<Backend> open_reader() override;
  std::optional<std::uint64_t> count() override;

 private:
  struct Impl;
  class Reader;  // open_reader()'s sessions
  std::shared_ptr<Impl> impl_;
};

}  // namespace pmap
