// pmap/backend.hpp — the storage interface, over bytes.
//
// A Backend stores byte strings under byte strings. It is compiled once (not a
// template per key and value type), so writing one is an afternoon's work:
// implement scan, get, write and describe; flush if "durable" needs an extra
// step. The map encodes keys and values with pmap::Codec before they get here.
//
// Thread safety: a map calls its backend from one thread at a time (loading on
// the constructing thread, then only from its writer thread), so a backend
// needs no locking of its own unless it is shared outside the map. Backends
// may throw anything; the map reports a pmap::Error unchanged and wraps any
// other exception as Errc::backend, keeping its message.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace pmap {

// One change in a batch. `value` is used only by put.
struct Write {
  enum class Op { put, erase, clear };
  Op op = Op::put;
  std::string key;
  std::string value;
};

// Receives every stored entry while a map loads. The views are valid only
// during the call.
using ScanSink = std::function<void(std::string_view key, std::string_view value)>;

class Backend {
 public:
  virtual ~Backend();

  // Calls sink once per stored entry, in any order.
  // Errors: throws (typically pmap::Error: io, corrupt) when the store cannot be read.
  virtual void scan(ScanSink sink) = 0;

  // The stored value of key, or std::nullopt when absent.
  virtual std::optional<std::string> get(std::string_view key) = 0;

  // Applies the batch as if in order (writes to different keys may go in any
  // order; a later write to a key wins), atomically: after a return every
  // change is committed; after a throw none is. A crash midway leaves none
  // of it. clear removes every entry, including those put earlier in the
  // batch, and none put after it.
  virtual void write(std::span<const Write> batch) = 0;

  // Makes every committed batch durable now, for backends whose write() alone
  // does not (e.g. SQLite with synchronous=normal). Default: nothing to do.
  virtual void flush() {}

  // Where the data lives, as a URI: "sqlite:/abs/path.db#table", "csv:/abs/f.csv".
  virtual std::string describe() const = 0;
};

// Makes a backend from the part of a URI after "scheme:".
using BackendFactory = std::function<std::unique_ptr<Backend>(std::string_view rest)>;

// Opens a backend from a URI:
//   sqlite:PATH[?table=T&synchronous=full|normal|off]   (the default backend)
//   csv:PATH
//   memory:
// plus any scheme added with register_backend.
// Errors: Errc::invalid_argument for a malformed URI or unknown scheme (the
// message lists the known ones); whatever the backend's constructor throws.
std::unique_ptr<Backend> open_backend(std::string_view uri);

// Adds (or replaces) the factory for a scheme, e.g. "redis". Scheme names are
// letters, digits, '+', '-', '.'; anything else is Errc::invalid_argument.
// Thread safety: may be called from any thread, concurrently with open_backend.
void register_backend(std::string scheme, BackendFactory factory);

// The schemes open_backend knows, sorted.
std::vector<std::string> registered_backends();

}  // namespace pmap
