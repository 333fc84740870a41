// The Backend base and the URI registry: open_backend / register_backend.
//
// Thread safety: the registry is a map under a mutex; a factory runs without
// the mutex held, so a factory may itself call open_backend.

#include "pmap/backend.hpp"

#include <algorithm>
#include <map>
#include <mutex>

#include "pmap/backends/csv.hpp"
#include "pmap/backends/memory.hpp"
#include "pmap/backends/sqlite.hpp"
#include "pmap/error.hpp"

namespace pmap {

Backend::~Backend() = default;

namespace {

struct Registry {
  std::mutex mutex;
  std::map<std::string, BackendFactory, std::less<>> factories;  // guarded by mutex
};

// "table=t&synchronous=normal" -> SqliteOptions; unknown parameters are errors.
SqliteOptions parse_sqlite_query(std::string_view query, std::string_view uri) {
  SqliteOptions options;
  while (!query.empty()) {
    const auto amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    const auto eq = pair.find('=');
    const std::string_view name = pair.substr(0, eq);
    const std::string_view value =
        eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
    if (name == "table") {
      options.table = std::string(value);
    } else if (name == "synchronous") {
      if (value == "full") options.synchronous = Synchronous::full;
      else if (value == "normal") options.synchronous = Synchronous::normal;
      else if (value == "off") options.synchronous = Synchronous::off;
      else
        throw Error(Errc::invalid_argument, "URI " + std::string(uri) + ": synchronous=" +
                                                std::string(value) +
                                                " is not one of full, normal, off");
    } else {
      throw Error(Errc::invalid_argument,
                  "URI " + std::string(uri) + ": unknown parameter \"" + std::string(name) +
                      "\" (sqlite: takes table=NAME and synchronous=full|normal|off)");
    }
  }
  return options;
}

Registry& registry() {
  static Registry* r = [] {
    auto* reg = new Registry;  // never destroyed: usable from static destructors
    reg->factories["sqlite"] = [](std::string_view rest) -> std::unique_ptr<Backend> {
      const auto q = rest.find('?');
      const std::string path(rest.substr(0, q));
      if (path.empty())
        throw Error(Errc::invalid_argument, "URI sqlite: needs a path, e.g. sqlite:app.db");
      SqliteOptions options = q == std::string_view::npos
                                  ? SqliteOptions{}
                                  : parse_sqlite_query(rest.substr(q + 1),
                                                       "sqlite:" + std::string(rest));
      return std::make_unique<SqliteBackend>(path, std::move(options));
    };
    reg->factories["csv"] = [](std::string_view rest) -> std::unique_ptr<Backend> {
      if (rest.empty())
        throw Error(Errc::invalid_argument, "URI csv: needs a path, e.g. csv:data.csv");
      return std::make_unique<CsvBackend>(std::string(rest));
    };
    reg->factories["memory"] = [](std::string_view rest) -> std::unique_ptr<Backend> {
      if (!rest.empty())
        throw Error(Errc::invalid_argument,
                    "URI memory:" + std::string(rest) + ": memory: takes nothing after the colon");
      return std::make_unique<MemoryBackend>();
    };
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

}  // namespace

std::unique_ptr<Backend> open_backend(std::string_view uri) {
  const auto colon = uri.find(':');
  if (colon == std::string_view::npos || !valid_scheme(uri.substr(0, colon)))
    throw Error(Errc::invalid_argument,
                "\"" + std::string(uri) + "\" is not a backend URI (scheme:rest); known schemes: " +
                    known_schemes() + " — e.g. sqlite:" + std::string(uri));
  const std::string_view scheme = uri.substr(0, colon);
  BackendFactory factory;
  {
    Registry& r = registry();
    std::lock_guard lock(r.mutex);
    auto it = r.factories.find(scheme);
    if (it != r.factories.end()) factory = it->second;
  }
  if (!factory)
    throw Error(Errc::invalid_argument, "unknown backend scheme \"" + std::string(scheme) +
                                            "\" in URI \"" + std::string(uri) +
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
    throw Error(Errc::invalid_argument, "register_backend(\"" + scheme + "\"): the factory is empty");
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  r.factories[std::move(scheme)] = std::move(factory);
}

std::vector<std::string> registered_backends() {
  Registry& r = registry();
  std::lock_guard lock(r.mutex);
  std::vector<std::string> out;
  for (const auto& [scheme, factory] : r.factories) out.push_back(scheme);
  return out;
}

}  // namespace pmap
