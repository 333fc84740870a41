// What a postgres: or redis: URI names, read exactly as open_backend reads
// it, for tools that point a raw client at the same server (pmapctl bench).
// Each is defined beside its backend (postgres.cpp, redis.cpp), so only
// when that backend is built. Not API.
#pragma once

#include <string>
#include <string_view>
#include <utility>

#include "pmap/backends/postgres.hpp"
#include "pmap/backends/redis.hpp"

namespace pmap::detail {

// scheme: "postgres" or "postgresql"; rest: the URI after "scheme:".
// Returns the libpq connection string (the URI without our parameters) and
// the options. Errors: Errc::invalid_argument naming the URI, its password
// redacted.
std::pair<std::string, PostgresOptions> parse_postgres_uri(std::string_view scheme,
                                                           std::string_view rest);

// scheme: "redis", "redis+unix", "unix" (or "rediss", refused); rest: the
// URI after "scheme:". Errors: as above, with the forms Redis URIs take.
RedisOptions parse_redis_uri(std::string_view scheme, std::string_view rest);

}  // namespace pmap::detail
