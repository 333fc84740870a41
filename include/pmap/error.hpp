// pmap/error.hpp — the one exception type of persistent-map.
//
// Every failure the library reports is a pmap::Error: a std::runtime_error
// with a machine-readable code() and a message that names the file, key or
// line involved and, where there is one, what to do about it. A missing key
// is never an error (it is std::nullopt).
//
// Thread safety: Error is an immutable value; copy it freely.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace pmap {

// What kind of failure an Error reports.
enum class Errc {
  io,                // the operating system refused: open, read, write, fsync, rename, disk full
  corrupt,           // stored data does not follow its format (message names the line)
  locked,            // another map (this process or another) holds the file or table
  codec,             // a stored value or key does not decode as the map's type (names the key)
  backend,           // a backend threw something that was not a pmap::Error
  invalid_argument,  // the caller passed something unusable: bad URI, bad table name, ...
  closed,            // the map was closed (or is closing); the write was not accepted
};

// The name of a code, e.g. "locked".
constexpr std::string_view to_string(Errc code) noexcept {
  switch (code) {
    case Errc::io: return "io";
    case Errc::corrupt: return "corrupt";
    case Errc::locked: return "locked";
    case Errc::codec: return "codec";
    case Errc::backend: return "backend";
    case Errc::invalid_argument: return "invalid_argument";
    case Errc::closed: return "closed";
  }
  return "unknown";
}

class Error : public std::runtime_error {
 public:
  Error(Errc code, const std::string& message) : std::runtime_error(message), code_(code) {}

  Errc code() const noexcept { return code_; }

 private:
  Errc code_;
};

}  // namespace pmap
