// A plain libpq connection, for tests that look at a PostgreSQL server
// behind a backend's back. Needs libpq (the pmap::postgres tests link it).
#pragma once

#include <gtest/gtest.h>
#include <libpq-fe.h>

#include <string>

namespace pmap_test {

class Psql {
 public:
  explicit Psql(const std::string& conninfo) : c_(PQconnectdb(conninfo.c_str())) {
    EXPECT_EQ(PQstatus(c_), CONNECTION_OK) << PQerrorMessage(c_);
  }
  ~Psql() { PQfinish(c_); }
  // The first column of the first row ("" when none); fails the test on an error.
  std::string one(const std::string& sql) {
    PGresult* r = PQexec(c_, sql.c_str());
    const auto status = PQresultStatus(r);
    EXPECT_TRUE(status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK)
        << sql << ": " << PQresultErrorMessage(r);
    std::string out = status == PGRES_TUPLES_OK && PQntuples(r) > 0 ? PQgetvalue(r, 0, 0) : "";
    PQclear(r);
    return out;
  }

 private:
  PGconn* c_;
};

}  // namespace pmap_test
