// The memory backend: a hash map under a mutex. See pmap/backends/memory.hpp.

#include "pmap/backends/memory.hpp"

#include <mutex>
#include <optional>
#include <unordered_map>
#include <vector>

namespace pmap {

struct MemoryBackend::Impl {
  mutable std::mutex mutex;
  std::unordered_map<std::string, std::string> entries;  // guarded by mutex
};

MemoryBackend::MemoryBackend() : impl_(std::make_unique<Impl>()) {}
MemoryBackend::MemoryBackend(MemoryBackend&&) noexcept = default;
MemoryBackend& MemoryBackend::operator=(MemoryBackend&&) noexcept = default;
MemoryBackend::~MemoryBackend() = default;

void MemoryBackend::scan(ScanSink sink) {
  std::lock_guard lock(impl_->mutex);
  for (const auto& [key, value] : impl_->entries) sink(key, value);
}

std::optional<std::string> MemoryBackend::get(std::string_view key) {
  std::lock_guard lock(impl_->mutex);
  auto it = impl_->entries.find(std::string(key));
  if (it == impl_->entries.end()) return std::nullopt;
  return it->second;
}

void MemoryBackend::write(std::span<const Write> batch) {
  std::lock_guard lock(impl_->mutex);
  auto& entries = impl_->entries;
  // All or nothing even if an allocation fails midway: an undo log of the
  // previous value of every key touched (and the whole map before a clear).
  std::vector<std::pair<std::string, std::optional<std::string>>> undo;
  std::optional<std::unordered_map<std::string, std::string>> before_clear;
  std::size_t undo_before_clear = 0;  // undo entries that predate the first clear
  try {
    for (const Write& w : batch) {
      if (w.op == Write::Op::clear) {
        if (!before_clear) {
          before_clear.emplace();
          before_clear->swap(entries);
          undo_before_clear = undo.size();
        } else {
          entries.clear();
        }
        continue;
      }
      auto it = entries.find(w.key);
      undo.emplace_back(w.key, it == entries.end() ? std::nullopt
                                                   : std::optional<std::string>(it->second));
      if (w.op == Write::Op::put)
        entries.insert_or_assign(w.key, w.value);
      else if (it != entries.end())
        entries.erase(it);
    }
  } catch (...) {
    std::size_t n = undo.size();
    if (before_clear) {
      entries.swap(*before_clear);  // everything after the clear is void
      n = undo_before_clear;
    }
    while (n > 0) {
      auto& [key, value] = undo[--n];
      if (value)
        entries.insert_or_assign(key, *value);
      else
        entries.erase(key);
    }
    throw;
  }
}

std::string MemoryBackend::describe() const { return "memory:"; }

std::size_t MemoryBackend::size() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->entries.size();
}

}  // namespace pmap
