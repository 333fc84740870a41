// The database servers the tests run against: PostgreSQL when PMAP_TEST_PG
// holds a libpq conninfo, Redis when PMAP_TEST_REDIS holds a
// redis://host:port URI (scripts/test.sh starts throwaway servers and sets
// both). Without one, its tests skip, saying so — unless
// PMAP_REQUIRE_SERVERS names the server ("pg", "redis"), as scripts/test.sh
// sets it: then they fail, so a suite that did not run is never taken for
// one that passed.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <random>
#include <sstream>
#include <string>
#include <utility>

namespace pmap_test {

inline std::string env_or_empty(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

// PMAP_TEST_PG, or "" when unset.
inline std::string postgres_conninfo() { return env_or_empty("PMAP_TEST_PG"); }

inline bool server_required(const std::string& which) {
  return ("," + env_or_empty("PMAP_REQUIRE_SERVERS") + ",").find("," + which + ",") !=
         std::string::npos;
}

// PMAP_TEST_PG ("host=H port=P dbname=D user=U password=W ...") as a URI
// for open_backend: postgresql://U:W@H:P/D?table=TABLE&<the other keywords>.
inline std::string postgres_uri(const std::string& table) {
  std::string user, password, host = "localhost", port = "5432", db, rest;
  std::istringstream in(postgres_conninfo());
  std::string pair;
  while (in >> pair) {
    const auto eq = pair.find('=');
    const std::string k = pair.substr(0, eq), v = pair.substr(eq + 1);
    if (k == "user")
      user = v;
    else if (k == "password")
      password = v;
    else if (k == "host")
      host = v;
    else if (k == "port")
      port = v;
    else if (k == "dbname")
      db = v;
    else
      rest += "&" + k + "=" + v;
  }
  return "postgresql://" + user + (password.empty() ? "" : ":" + password) + "@" + host + ":" +
         port + "/" + db + "?table=" + table + rest;
}

// PMAP_TEST_REDIS ("redis://host:port", no path or query), or "" when unset.
inline std::string redis_url() { return env_or_empty("PMAP_TEST_REDIS"); }

// A URI for open_backend: the test server, the map named by `prefix`.
inline std::string redis_uri(const std::string& prefix) {
  return redis_url() + "?prefix=" + prefix;
}

// The host and port of PMAP_TEST_REDIS.
inline std::pair<std::string, int> redis_host_port() {
  std::string rest = redis_url();
  if (rest.rfind("redis://", 0) == 0) rest = rest.substr(8);
  rest = rest.substr(0, rest.find('/'));
  const auto colon = rest.rfind(':');
  if (colon == std::string::npos) return {rest, 6379};
  return {rest.substr(0, colon), std::stoi(rest.substr(colon + 1))};
}

// A table name (or Redis prefix) no other test (in this run or an earlier one on the same
// server) uses.
inline std::string unique_table(const std::string& stem) {
  static std::atomic<int> counter{0};
  static const unsigned salt = std::random_device{}();
  return stem + "_" + std::to_string(::getpid()) + "_" + std::to_string(salt % 100000) + "_" +
         std::to_string(counter++);
}

}  // namespace pmap_test

// In a test body or SetUp(): skips (or fails, when required) without a
// PostgreSQL server.
#define PMAP_NEED_POSTGRES()                                                           \
  do {                                                                                 \
    if (pmap_test::postgres_conninfo().empty()) {                                      \
      if (pmap_test::server_required("pg"))                                            \
        FAIL() << "PMAP_REQUIRE_SERVERS names pg but PMAP_TEST_PG is unset";           \
      GTEST_SKIP() << "PMAP_TEST_PG is unset: no PostgreSQL server to test against "   \
                      "(./scripts/test.sh starts one; or set it to a libpq conninfo)"; \
    }                                                                                  \
  } while (0)

// The same for Redis.
#define PMAP_NEED_REDIS()                                                               \
  do {                                                                                  \
    if (pmap_test::redis_url().empty()) {                                               \
      if (pmap_test::server_required("redis"))                                          \
        FAIL() << "PMAP_REQUIRE_SERVERS names redis but PMAP_TEST_REDIS is unset";      \
      GTEST_SKIP() << "PMAP_TEST_REDIS is unset: no Redis server to test against "      \
                      "(./scripts/test.sh starts one; or set it to redis://host:port)"; \
    }                                                                                   \
  } while (0)
