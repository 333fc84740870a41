// The built-in backends' URI factories, each defined beside its backend
// (sqlite.cpp, csv.cpp, memory.cpp) and registered by src/backend.cpp.
// Not API.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "pmap/backend.hpp"

namespace pmap::detail {

// rest: the URI after "scheme:". Errors: Errc::invalid_argument naming the
// URI (its password redacted) and what the scheme takes.
std::unique_ptr<Backend> open_sqlite_uri(std::string_view rest);
std::unique_ptr<Backend> open_csv_uri(std::string_view rest);
std::unique_ptr<Backend> open_memory_uri(std::string_view rest);

// One "name=value" of a URI query.
struct QueryParam {
  std::string_view name;
  std::string_view value;
};
// "a=1&b=2" -> {a: 1, b: 2}, in order; an empty query gives none.
std::vector<QueryParam> parse_query(std::string_view query);
// "true"/"1" or "false"/"0"; anything else is Errc::invalid_argument naming
// uri (already redacted) and the parameter.
bool parse_bool(std::string_view uri, std::string_view name, std::string_view value);

}  // namespace pmap::detail
