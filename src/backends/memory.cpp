// The memory backend: a hash map under a mutex. See pmap/backends/memory.hpp.

#include "pmap/backends/memory.hpp"

#include <absl/base/thread_annotations.h>

#include <optional>
#include <unordered_map>
#include <vector>

#include "../sync.hpp"
#include "builtin.hpp"
#include "pmap/error.hpp"

namespace pmap {

using detail::Mutex;
using detail::MutexLock;

struct MemoryBackend::Impl {
  Mutex mutex;
  std::unordered_map<std::string, std::string> entries ABSL_GUARDED_BY(mutex);
};

// A reader session: the same entries, no writes.
class MemoryBackend::Reader final : public Backend {
 public:
  explicit Reader(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
  void scan(ScanSink sink) override {
    MutexLock lock(impl_->mutex);
    for (const auto& [key, value] : impl_->entries) sink(key, value);
  }
  std::optional<std::string> get(std::string_view key) override {
    MutexLock lock(impl_->mutex);
    auto it = impl_->entries.find(std::string(key));
    if (it == impl_->entries.end()) return std::nullopt;
    return it->second;
  }
  void write(std::span<const Write>) override {
    throw Error(Errc::invalid_argument, "memory: a reader session cannot write");
  }
  std::string describe() const override { return "memory:"; }

 private:
  std::shared_ptr<Impl> impl_;
};

MemoryBackend::MemoryBackend() : impl_(std::make_shared<Impl>()) {}
MemoryBackend::MemoryBackend(MemoryBackend&&) noexcept = default;
MemoryBackend& MemoryBackend::operator=(MemoryBackend&&) noexcept = default;
MemoryBackend::~MemoryBackend() = default;

void MemoryBackend::scan(ScanSink sink) { Reader(impl_).scan(std::move(sink)); }

std::optional<std::string> MemoryBackend::get(std::string_view key) {
  return Reader(impl_).get(key);
}

void MemoryBackend::write(std::span<const Write> batch) {
  MutexLock lock(impl_->mutex);
  auto& entries = impl_->entries;
  // All or nothing even if an allocation fails midway: an undo log of the
  // previous value of every key touched (and the whole map before the first
  // clear).
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
      undo.emplace_back(
          w.key, it == entries.end() ? std::nullopt : std::optional<std::string>(it->second));
      if (w.op == Write::Op::put)
        entries.insert_or_assign(w.key, w.value);
      else if (it != entries.end())
        entries.erase(it);
    }
  } catch (const std::bad_alloc&) {
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

std::optional<std::uint64_t> MemoryBackend::count() {
  MutexLock lock(impl_->mutex);
  return impl_->entries.size();
}

std::unique_ptr<Backend> MemoryBackend::open_reader() { return std::make_unique<Reader>(impl_); }

std::unique_ptr<Backend> detail::open_memory_uri(std::string_view rest) {
  // "memory:?read_only=true": an empty store that cannot be written (the
  // parameter every built-in scheme takes, so tools may always add it).
  bool read_only = false;
  const std::string uri = "URI " + redact_uri("memory:" + std::string(rest));
  if (!rest.empty() && rest.front() != '?')
    throw Error(Errc::invalid_argument, uri + ": memory: takes no path, only ?read_only=true");
  for (const auto& [name, value] : parse_query(rest.empty() ? rest : rest.substr(1))) {
    if (name != "read_only")
      throw Error(Errc::invalid_argument, uri + ": unknown parameter \"" + std::string(name) +
                                              "\" (memory: takes read_only=true|false)");
    read_only = parse_bool(uri, name, value);
  }
  if (read_only) return MemoryBackend().open_reader();  // it keeps the entries alive
  return std::make_unique<MemoryBackend>();
}

}  // namespace pmap
