// The PostgreSQL backend against a real server (PMAP_TEST_PG): URIs and
// libpq keywords, messages without the password, a server that is down,
// the schema check, conditional writes, and the connection broken (server
// sessions terminated, the server restarted) while maps write.
// The conformance suite and the SharedStore tests run on it too.
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <pmap/backends/postgres.hpp>
#include <pmap/pmap.hpp>
#include <thread>

#include "../support/fault_run.hpp"
#include "../support/psql.hpp"
#include "../support/servers.hpp"
#include "../support/test_backend.hpp"

namespace {

using pmap::Write;
using pmap_test::Psql;
using Op = pmap::Write::Op;
using Map = pmap::PersistentMap<std::string, std::string>;
using namespace std::chrono_literals;

class Postgres : public ::testing::Test {
 protected:
  void SetUp() override { PMAP_NEED_POSTGRES(); }
  std::string conninfo() const { return pmap_test::postgres_conninfo(); }
};

TEST_F(Postgres, KeysAndValuesAreBinarySafe) {
  pmap::PostgresBackend b(conninfo(), {.table = pmap_test::unique_table("t")});
  const std::string nul("n\0ul", 4), high("\xff\x00\x80", 3);
  std::vector<Write> batch = {{Op::put, nul, high}, {Op::put, high, nul}, {Op::put, "", ""}};
  b.write(batch);
  EXPECT_EQ(b.get(nul), high);
  EXPECT_EQ(b.get(high), nul);
  EXPECT_EQ(b.get(""), "");
  EXPECT_EQ(b.get("absent"), std::nullopt);
}

// A read-only opener creates nothing: a table that is not there is an
// error naming it; and it never writes.
TEST_F(Postgres, AReadOnlyOpenerCreatesNothingAndRefusesWrites) {
  const std::string table = pmap_test::unique_table("ro");
  const pmap::PostgresOptions read_only{.table = table, .read_only = true};
  try {
    pmap::PostgresBackend absent(conninfo(), read_only);
    ADD_FAILURE() << "opened a table that is not there";
  } catch (const pmap::Error& e) {
    EXPECT_EQ(e.code(), pmap::Errc::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("there is no table \"" + table + "\""), std::string::npos)
        << e.what();
  }
  pmap::PostgresBackend(conninfo(), {.table = table})
      .write(std::vector<Write>{{Op::put, "k", "v"}});
  auto reader = pmap::open_backend(pmap_test::postgres_uri(table) + "&read_only=true");
  EXPECT_EQ(reader->get("k"), "v");
  EXPECT_THROW(reader->write(std::vector<Write>{{Op::put, "k", "w"}}), pmap::Error);
  EXPECT_EQ(reader->get("k"), "v");
}

TEST_F(Postgres, UrisOpenTheTableAndPassLibpqKeywordsThrough) {
  const std::string table = pmap_test::unique_table("uri");
  // postgresql:// as the test helper builds it, then postgres:// with a
  // keyword libpq must receive (application_name).
  std::string uri = pmap_test::postgres_uri(table) + "&application_name=pmap-uri-test";
  {
    Map m{uri};
    m.insert("k", "v").get();
    Psql psql(conninfo());
    EXPECT_EQ(psql.one("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                       "'pmap-uri-test'"),
              "2")
        << "the writer's and the watcher's connections";
    EXPECT_EQ(psql.one("SELECT encode(value, 'escape') FROM \"" + table + "\""), "v");
  }
  uri.replace(0, std::string("postgresql").size(), "postgres");
  Map again{uri};
  EXPECT_EQ(again.get("k"), "v");
}

TEST_F(Postgres, MessagesAndDescribeNeverShowThePassword) {
  const std::string secret = "s3cret-Pa55word";
  const std::string table = pmap_test::unique_table("pw");
  std::string uri = pmap_test::postgres_uri(table);
  // The right password: describe() names user, host, port, database and table.
  {
    auto b = pmap::open_backend(uri);
    const std::string d = b->describe();
    EXPECT_EQ(d.rfind("postgres://pmap@", 0), 0u) << d;
    EXPECT_NE(d.find("#" + table), std::string::npos) << d;
    EXPECT_EQ(d.find(":pmap@"), std::string::npos) << d;
  }
  // A wrong one, in the URI and in a conninfo.
  const auto at = uri.find('@');
  uri.replace(uri.rfind(':', at) + 1, at - uri.rfind(':', at) - 1, secret);
  try {
    pmap::open_backend(uri);
    ADD_FAILURE() << "a wrong password must be refused";
  } catch (const pmap::Error& e) {
    EXPECT_EQ(e.code(), pmap::Errc::io) << e.what();
    EXPECT_EQ(std::string(e.what()).find(secret), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("password"), std::string::npos)
        << "says what failed: " << e.what();
  }
  try {
    pmap::open_backend(uri + "&no_such_keyword=1");
    ADD_FAILURE() << "an unknown keyword must be refused";
  } catch (const pmap::Error& e) {
    EXPECT_EQ(e.code(), pmap::Errc::invalid_argument) << e.what();
    EXPECT_NE(std::string(e.what()).find("no_such_keyword"), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find(secret), std::string::npos) << e.what();
  }
}

TEST_F(Postgres, AServerThatIsDownIsAnIoErrorNamingHostAndPortWithinTheTimeout) {
  // Port 1 on loopback: nothing listens there.
  const auto start = std::chrono::steady_clock::now();
  try {
    pmap::PostgresBackend b("host=127.0.0.1 port=1 dbname=x user=u password=hidden-pw");
    ADD_FAILURE() << "no server there";
  } catch (const pmap::Error& e) {
    const std::string what = e.what();
    EXPECT_EQ(e.code(), pmap::Errc::io) << what;
    EXPECT_NE(what.find("127.0.0.1"), std::string::npos) << what;
    EXPECT_NE(what.find("port 1"), std::string::npos) << what;
    EXPECT_EQ(what.find("hidden-pw"), std::string::npos) << what;
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
}

TEST_F(Postgres, ATableOfAnotherShapeIsRefusedAndLeftUnchanged) {
  const std::string table = pmap_test::unique_table("shape");
  Psql psql(conninfo());
  psql.one("CREATE TABLE \"" + table + "\" (name text PRIMARY KEY, n integer)");
  psql.one("INSERT INTO \"" + table + "\" VALUES ('a', 1)");
  try {
    pmap::PostgresBackend b(conninfo(), {.table = table});
    ADD_FAILURE() << "a table of another shape must be refused";
  } catch (const pmap::Error& e) {
    EXPECT_EQ(e.code(), pmap::Errc::invalid_argument) << e.what();
    EXPECT_NE(std::string(e.what()).find("name text, n integer"), std::string::npos) << e.what();
  }
  EXPECT_EQ(psql.one("SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute WHERE "
                     "attrelid = '\"" +
                     table + "\"'::regclass AND attnum > 0"),
            "name,n");
  EXPECT_EQ(psql.one("SELECT n FROM \"" + table + "\""), "1");
  for (const std::string& bad :
       std::vector<std::string>{"pmap_log_x", "1abc", "a-b", "a\"b", std::string(60, 'a')}) {
    try {
      pmap::PostgresBackend b(conninfo(), {.table = bad});
      ADD_FAILURE() << bad << " must be refused";
    } catch (const pmap::Error& e) {
      EXPECT_EQ(e.code(), pmap::Errc::invalid_argument) << e.what();
    }
  }
}

TEST_F(Postgres, AConditionalWriteAppliesOnlyOnTheValueItExpects) {
  pmap::PostgresBackend b(conninfo(), {.table = pmap_test::unique_table("cas")});
  std::vector<Write> setup = {{Op::put, "a", "1"}, {Op::put, "b", "1"}};
  b.write(setup);
  std::vector<Write> batch = {{Op::put, "a", "2"},  // expects 1: applies
                              {Op::put, "b", "2"},  // expects 0: conflicts (b holds 1)
                              {Op::put, "c", "2"},  // expects absent: applies
                              {Op::put, "d", "x"}};
  std::vector<pmap::Backend::Expect> expect = {{0, "1"}, {1, "0"}, {2, std::nullopt}};
  std::vector<pmap::Backend::Conflict> conflicts;
  b.commit_shared(batch, expect, 7, conflicts);
  ASSERT_EQ(conflicts.size(), 1u);
  EXPECT_EQ(conflicts[0].index, 1u);
  EXPECT_EQ(conflicts[0].stored, "1");
  EXPECT_EQ(b.get("a"), "2");
  EXPECT_EQ(b.get("b"), "1");
  EXPECT_EQ(b.get("c"), "2");
  EXPECT_EQ(b.get("d"), "x");
}

TEST_F(Postgres, EndingTheServerSessionsMidRunLosesNothingAndAppliesNothingTwice) {
  // Its sessions carry a name of their own: other tests' run beside it.
  const std::string table = pmap_test::unique_table("term");
  const std::string uri = pmap_test::postgres_uri(table) + "&application_name=" + table;
  pmap_test::write_through_faults(uri, [&] {
    Psql psql(conninfo());
    long ended = 0;
    for (int i = 0; i < 5; ++i) {
      // Every session of the map (writer and watcher), at a random point of its work.
      ended +=
          std::stol(psql.one("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
                             "datname = current_database() AND pid <> pg_backend_pid() AND "
                             "application_name = '" +
                             table + "'"));
      std::this_thread::sleep_for(20ms);
    }
    EXPECT_GE(ended, 2) << "the writer's and the watcher's sessions, at least once";
  });
}

TEST_F(Postgres, RestartingTheServerMidRunLosesNothingAndAppliesNothingTwice) {
  const std::string restart = pmap_test::env_or_empty("PMAP_TEST_PG_RESTART");
  if (restart.empty()) {
    if (pmap_test::server_required("pg")) FAIL() << "PMAP_TEST_PG_RESTART is unset";
    GTEST_SKIP() << "PMAP_TEST_PG_RESTART (a shell command restarting the server) is unset";
  }
  const std::string uri = pmap_test::postgres_uri(pmap_test::unique_table("restart"));
  pmap_test::write_through_faults(uri,
                                  [&] { ASSERT_EQ(std::system(restart.c_str()), 0) << restart; });
}

// A commit whose connection breaks after its COMMIT was sent, while no new
// connection can reach the server for longer than resolve_timeout: the
// backend cannot learn whether it committed, and says so (it never
// guesses "failed"). Runs alone (RUN_SERIAL): the server accepts no
// connection while its postmaster is stopped.
TEST_F(Postgres, UnreachableAfterABrokenCommitIsAnErrorSayingTheOutcomeIsUnknown) {
  const std::string admin = pmap_test::env_or_empty("PMAP_TEST_PG_ADMIN");
  if (admin.empty()) {
    if (pmap_test::server_required("pg")) FAIL() << "PMAP_TEST_PG_ADMIN is unset";
    GTEST_SKIP() << "PMAP_TEST_PG_ADMIN (a superuser conninfo) is unset";
  }
  const std::string table = pmap_test::unique_table("doubt");
  // connect_timeout: libpq's minimum, so the reconnection gives up soon.
  pmap::PostgresBackend b(conninfo() + " connect_timeout=2 application_name=" + table,
                          {.table = table, .resolve_timeout = 1s});
  Psql psql(admin);
  const long postmaster =
      std::stol(psql.one("SELECT split_part(pg_read_file('postmaster.pid'), "
                         "E'\\n', 1)"));
  if (kill(static_cast<pid_t>(postmaster), 0) != 0) {
    const std::string why = "cannot signal the server's postmaster (pid " +
                            std::to_string(postmaster) + "): run as root or as the server's user";
    if (pmap_test::server_required("pg")) FAIL() << why;
    GTEST_SKIP() << why;
  }
  // The commit waits for this lock, with its whole pipeline (COMMIT too) sent.
  psql.one("BEGIN");
  psql.one("LOCK TABLE " + table + " IN ACCESS EXCLUSIVE MODE");
  std::string error;
  pmap::Errc code{};
  std::thread writer([&] {
    try {
      std::vector<Write> batch = {{Op::put, "k", "v"}};
      b.write(batch);
    } catch (const pmap::Error& e) {
      code = e.code();
      error = e.what();
    }
  });
  std::string session;
  for (int i = 0; i < 3000 && session.empty(); ++i) {
    session = psql.one(
        "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND "
        "application_name = '" +
        table + "'");
    if (session.empty()) std::this_thread::sleep_for(10ms);
  }
  ASSERT_FALSE(session.empty()) << "the commit never waited for the lock";
  // No new connection gets an answer; the commit's session ends.
  ASSERT_EQ(kill(static_cast<pid_t>(postmaster), SIGSTOP), 0);
  ASSERT_EQ(kill(static_cast<pid_t>(std::stol(session)), SIGTERM), 0);
  writer.join();
  kill(static_cast<pid_t>(postmaster), SIGCONT);
  psql.one("ROLLBACK");
  EXPECT_EQ(code, pmap::Errc::io) << error;
  EXPECT_NE(error.find("the outcome is unknown"), std::string::npos) << error;
  EXPECT_NE(error.find("reopen the map"), std::string::npos) << error;
  EXPECT_EQ(error.find("password="), std::string::npos) << error;
  EXPECT_EQ(b.get("k"), std::nullopt) << "it never got the lock, so it did not commit";
}

}  // namespace
