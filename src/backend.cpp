// The Backend base, the URI registry (open_backend / register_backend) and
// redact_uri. Each built-in backend parses its own URI (builtin.hpp).
//
// Thread safety: the registry is a map under a mutex; a factory runs without
// the mutex held, so a factory may itself call open_backend.

#include "pmap/backend.hpp"

#include <absl/base/thread_annotations.h>

#include <algorithm>
#include <cctype>
#include <map>

#include "backends/builtin.hpp"
#include "pmap/error.hpp"
#include "sync.hpp"

namespace pmap {

using detail::Mutex;
using detail::MutexLock;

struct Backend::Wake {
  Mutex mutex;
  detail::CondVar cv;
  bool interrupted ABSL_GUARDED_BY(mutex) = false;
};

Backend::Backend() : wake_(std::make_shared<Wake>()) {}
Backend::~Backend() = default;

Durability Backend::commit_shared(std::span<const Write>, std::span<const Expect>, std::uint64_t,
                                  std::vector<Conflict>&) {
  throw Error(Errc::invalid_argument,
              describe() + ": commit_shared() called on a backend that is not shared");
}

void Backend::wait_for_change(std::uint64_t, std::chrono::milliseconds timeout) {
  Wake& w = *wake_;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  MutexLock lock(w.mutex);
  while (!w.interrupted && w.cv.wait_until(w.mutex, deadline)) {
  }
  w.interrupted = false;
}

void Backend::interrupt() {
  Wake& w = *wake_;
  {
    MutexLock lock(w.mutex);
    w.interrupted = true;
  }
  w.cv.signal_all();
}

namespace {

struct Registry {
  Mutex mutex;
  std::map<std::string, BackendFactory, std::less<>> factories ABSL_GUARDED_BY(mutex);
};

Registry& registry() {
  static Registry* r = [] {
    auto* reg = new Registry;  // never destroyed: usable from static destructors
    MutexLock lock(reg->mutex);
    reg->factories["sqlite"] = detail::open_sqlite_uri;
    reg->factories["csv"] = detail::open_csv_uri;
    reg->factories["memory"] = detail::open_memory_uri;
    return reg;
  }();
  return *r;
}

bool valid_scheme(std::string_view scheme) {
  if (scheme.empty() || !std::isalpha(static_cast<unsigned char>(scheme[0]))) return false;
  return std::all_of(scheme.begin(), scheme.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '-' || c == '.';
  });
}

std::string known_schemes() {
  std::string out;
  for (const auto& s : registered_backends()) out += (out.empty() ? "" : ", ") + s + ":";
  return out;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

}  // namespace

namespace detail {

std::vector<QueryParam> parse_query(std::string_view query) {
  std::vector<QueryParam> out;
  while (!query.empty()) {
    const auto amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    const auto eq = pair.find('=');
    out.push_back({pair.substr(0, eq),
                   eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1)});
  }
  return out;
}

bool parse_bool(std::string_view uri, std::string_view name, std::string_view value) {
  if (value == "true" || value == "1") return true;
  if (value == "false" || value == "0") return false;
  throw Error(Errc::invalid_argument, std::string(uri) + ": " + std::string(name) + "=" +
                                          std::string(value) + " is not one of true, false");
}

}  // namespace detail

std::string redact_uri(std::string_view uri) {
  constexpr std::string_view kHidden = "***";
  std::string out(uri);
  // The password of "scheme://user:password@host...": the user-info part
  // ends at the last '@' before the path, query or fragment.
  const auto scheme_end = out.find(':');
  if (scheme_end != std::string::npos &&
      valid_scheme(std::string_view(out).substr(0, scheme_end)) &&
      out.compare(scheme_end, 3, "://") == 0) {
    const std::size_t start = scheme_end + 3;
    const std::size_t end = std::min(out.find_first_of("/?#", start), out.size());
    const std::size_t at = out.rfind('@', end == 0 ? 0 : end - 1);
    if (at != std::string::npos && at >= start) {
      const std::size_t colon = out.find(':', start);
      if (colon != std::string::npos && colon < at) out.replace(colon + 1, at - colon - 1, kHidden);
    }
  }
  // "password=..." in the query (libpq takes it there too): each value
  // replaced in place, everything else left byte for byte.
  const auto query = out.find('?');
  if (query != std::string::npos) {
    std::string rebuilt = out.substr(0, query + 1);
    for (std::size_t start = query + 1;;) {
      const std::size_t end = std::min(out.find('&', start), out.size());
      const std::string_view param = std::string_view(out).substr(start, end - start);
      const auto eq = param.find('=');
      if (eq != std::string_view::npos && iequals(param.substr(0, eq), "password"))
        rebuilt.append(param.substr(0, eq + 1)).append(kHidden);
      else
        rebuilt.append(param);
      if (end == out.size()) break;
      rebuilt += '&';
      start = end + 1;
    }
    out = std::move(rebuilt);
  }
  return out;
}

std::unique_ptr<Backend> open_backend(std::string_view uri) {
  const auto colon = uri.find(':');
  if (colon == std::string_view::npos || !valid_scheme(uri.substr(0, colon)))
    throw Error(Errc::invalid_argument,
                "\"" + redact_uri(uri) + "\" is not a backend URI (scheme:rest); known schemes: " +
                    known_schemes() + " — e.g. sqlite:" + redact_uri(uri));
  const std::string_view scheme = uri.substr(0, colon);
  BackendFactory factory;
  {
    Registry& r = registry();
    MutexLock lock(r.mutex);
    auto it = r.factories.find(scheme);
    if (it != r.factories.end()) factory = it->second;
  }
  if (!factory)
    throw Error(Errc::invalid_argument, "unknown backend scheme \"" + std::string(scheme) +
                                            "\" in URI \"" + redact_uri(uri) +
                                            "\"; known schemes: " + known_schemes());
  auto backend = factory(uri.substr(colon + 1));
  if (!backend)
    throw Error(Errc::invalid_argument,
                "the factory for scheme \"" + std::string(scheme) + "\" returned no backend");
  return backend;
}

void register_backend(std::string scheme, BackendFactory factory) {
  if (!valid_scheme(scheme))
    throw Error(Errc::invalid_argument,
                "backend scheme \"" + scheme +
                    "\" is not allowed: use a letter, then letters, digits, '+', '-', '.'");
  if (!factory)
    throw Error(Errc::invalid_argument,
                "register_backend(\"" + scheme + "\"): the factory is empty");
  Registry& r = registry();
  MutexLock lock(r.mutex);
  r.factories[std::move(scheme)] = std::move(factory);
}

std::vector<std::string> registered_backends() {
  Registry& r = registry();
  MutexLock lock(r.mutex);
  std::vector<std::string> out;
  for (const auto& [scheme, factory] : r.factories) out.push_back(scheme);
  return out;
}

}  // namespace pmap
