// The Redis backend against a real server (PMAP_TEST_REDIS): its layout, URIs (TCP,
// db, Unix socket), messages without the password (an ACL user made here),
// a server that is down, keys of another type, conditional writes, the
// change record's gaps, WAIT with and without a replica, and the connection
// broken (clients killed, the server restarted or stopped) while maps write.
// The conformance suite and the SharedStore tests run on it too.
#include <gtest/gtest.h>
#include <hiredis/hiredis.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <pmap/backends/redis.hpp>
#include <pmap/pmap.hpp>
#include <thread>

#include "../support/fault_run.hpp"
#include "../support/redis_cli.hpp"
#include "../support/servers.hpp"
#include "../support/test_backend.hpp"

namespace {

using pmap::Write;
using pmap_test::Cli;
using Op = pmap::Write::Op;
using Map = pmap::PersistentMap<std::string, std::string>;
using namespace std::chrono_literals;

class Redis : public ::testing::Test {
 protected:
  void SetUp() override { PMAP_NEED_REDIS(); }
  // Options for the test server and a prefix of this test's own.
  static pmap::RedisOptions options(const std::string& stem) {
    const auto [host, port] = pmap_test::redis_host_port();
    pmap::RedisOptions o{.host = host, .port = port};
    o.prefix = pmap_test::unique_table(stem) + ":";
    return o;
  }
};

template <class F>
pmap::Error error_of(F f) {
  try {
    f();
  } catch (const pmap::Error& e) {
    return e;
  }
  ADD_FAILURE() << "no pmap::Error thrown";
  return pmap::Error(pmap::Errc::backend, "none");
}

// One hash per map, under "{prefix}": what docs/formats.md promises.
TEST_F(Redis, TheMapIsOneHashUnderItsPrefixWithItsRecordBeside) {
  const auto o = options("layout");
  pmap::RedisBackend b(o);
  b.write(std::vector<Write>{{Op::put, "a", "1"}, {Op::put, "b", "2"}});
  b.write(std::vector<Write>{{Op::erase, "a", ""}});
  Cli cli;
  const std::string base = "{" + o.prefix + "}";
  EXPECT_EQ(cli.run({"TYPE", base + "data"}), "hash");
  EXPECT_EQ(cli.run({"HGETALL", base + "data"}), "b,2");
  EXPECT_EQ(cli.run({"GET", base + "head"}), "2");
  EXPECT_EQ(cli.run({"XLEN", base + "log"}), "2");
  const std::string origin = std::to_string(b.origin());
  EXPECT_EQ(cli.run({"XRANGE", base + "log", "2-1", "2-1"}),
            "2-1,o," + origin + ",s,2,t,0,ops,e" + std::string(1, '\x01') + "a");
  EXPECT_EQ(cli.run({"GET", base + "done:" + origin}), "2");
  // A clear is one UNLINK of the hash.
  b.write(std::vector<Write>{{Op::clear, "", ""}});
  EXPECT_EQ(cli.run({"EXISTS", base + "data"}), "0");
}

TEST_F(Redis, AReadOnlyOpenerRefusesWrites) {
  auto o = options("ro");
  pmap::RedisBackend(o).write(std::vector<Write>{{Op::put, "k", "v"}});
  auto reader = pmap::open_backend(pmap_test::redis_uri(o.prefix) + "&read_only=true");
  EXPECT_EQ(reader->get("k"), "v");
  const pmap::Error e = error_of([&] { reader->write(std::vector<Write>{{Op::put, "k", "w"}}); });
  EXPECT_EQ(e.code(), pmap::Errc::invalid_argument) << e.what();
  EXPECT_EQ(reader->get("k"), "v");
}

TEST_F(Redis, UrisOpenTheirDbAndPrefixOverTcpAndTheUnixSocket) {
  const std::string prefix = pmap_test::unique_table("uri") + ":";
  {
    auto b = pmap::open_backend(pmap_test::redis_url() + "/3?prefix=" + prefix);
    b->write(std::vector<Write>{{Op::put, "k", "v"}});
    EXPECT_EQ(b->describe(), pmap_test::redis_url() + "/3?prefix=" + prefix);
  }
  EXPECT_EQ(Cli(pmap_test::redis_host_port().second, 3).run({"HGET", "{" + prefix + "}data", "k"}),
            "v");
  EXPECT_EQ(Cli().run({"EXISTS", "{" + prefix + "}data"}), "0") << "db 0 untouched";
  const std::string socket = pmap_test::env_or_empty("PMAP_TEST_REDIS_SOCKET");
  if (socket.empty()) {
    if (pmap_test::server_required("redis")) FAIL() << "PMAP_TEST_REDIS_SOCKET is unset";
    GTEST_SKIP() << "PMAP_TEST_REDIS_SOCKET (the server's Unix socket) is unset";
  }
  for (const std::string& uri : {"redis+unix://" + socket + "?db=3&prefix=" + prefix,
                                 "unix:" + socket + "?db=3&prefix=" + prefix}) {
    Map m{uri};
    EXPECT_EQ(m.get("k"), "v") << uri;
  }
  // What the URI cannot be.
  for (const std::string& bad :
       {pmap_test::redis_url() + "?prefix=" + prefix + "&no_such=1",
        pmap_test::redis_url() + "/x?prefix=" + prefix, std::string("rediss://h:6379"),
        std::string("redis://h:99999"), std::string("redis://h:1/99999999999"),
        std::string("redis://h:1?prefix=%zz"), pmap_test::redis_url() + "?prefix=has%20space",
        std::string("redis+unix:relative/path")}) {
    const pmap::Error e = error_of([&] { pmap::open_backend(bad); });
    EXPECT_EQ(e.code(), pmap::Errc::invalid_argument) << bad << ": " << e.what();
  }
  EXPECT_NE(std::string(error_of([] { pmap::open_backend("rediss://h:1"); }).what()).find("TLS"),
            std::string::npos);
}

TEST_F(Redis, MessagesAndDescribeNeverShowThePassword) {
  const std::string user = pmap_test::unique_table("user");
  const std::string secret = "s3cret-" + pmap_test::unique_table("pw");
  Cli cli;
  ASSERT_EQ(cli.run({"ACL", "SETUSER", user, "on", ">" + secret, "~*", "&*", "+@all"}), "OK");
  const auto [host, port] = pmap_test::redis_host_port();
  const std::string hostport = host + ":" + std::to_string(port);
  const std::string prefix = pmap_test::unique_table("pw") + ":";
  {
    Map m{"redis://" + user + ":" + secret + "@" + hostport + "?prefix=" + prefix};
    m.insert("k", "v").get();
    const std::string d = m.backend().describe();
    EXPECT_EQ(d, "redis://" + user + "@" + hostport + "/0?prefix=" + prefix);
  }
  const pmap::Error wrong = error_of(
      [&] { pmap::open_backend("redis://" + user + ":wrong-" + secret + "@" + hostport); });
  EXPECT_EQ(wrong.code(), pmap::Errc::io) << wrong.what();
  EXPECT_EQ(std::string(wrong.what()).find(secret), std::string::npos) << wrong.what();
  EXPECT_NE(std::string(wrong.what()).find("check the user and password"), std::string::npos)
      << wrong.what();
  const pmap::Error bad = error_of(
      [&] { pmap::open_backend("redis://" + user + ":" + secret + "@" + hostport + "?x=1"); });
  EXPECT_EQ(bad.code(), pmap::Errc::invalid_argument) << bad.what();
  EXPECT_EQ(std::string(bad.what()).find(secret), std::string::npos) << bad.what();
  EXPECT_NE(std::string(bad.what()).find(user + ":***@"), std::string::npos) << bad.what();
  cli.run({"ACL", "DELUSER", user});
}

TEST_F(Redis, AServerThatIsDownIsAnIoErrorNamingHostAndPort) {
  const auto start = std::chrono::steady_clock::now();
  // Port 1 on loopback: nothing listens there.
  const pmap::Error e = error_of([] {
    pmap::RedisBackend b({.host = "127.0.0.1", .port = 1, .password = "hidden-pw", .db = 0});
  });
  const std::string what = e.what();
  EXPECT_EQ(e.code(), pmap::Errc::io) << what;
  EXPECT_NE(what.find("127.0.0.1:1/"), std::string::npos) << what;
  EXPECT_NE(what.find("check that the server runs"), std::string::npos) << what;
  EXPECT_EQ(what.find("hidden-pw"), std::string::npos) << what;
  EXPECT_LT(std::chrono::steady_clock::now() - start, 10s);
}

TEST_F(Redis, AKeyOfAnotherTypeIsRefusedAndLeftUnchanged) {
  const auto o = options("type");
  Cli cli;
  cli.run({"SET", "{" + o.prefix + "}data", "not a hash"});
  const pmap::Error e = error_of([&] { pmap::RedisBackend b(o); });
  EXPECT_EQ(e.code(), pmap::Errc::invalid_argument) << e.what();
  EXPECT_NE(std::string(e.what()).find("holds a string, not a hash"), std::string::npos)
      << e.what();
  EXPECT_EQ(cli.run({"GET", "{" + o.prefix + "}data"}), "not a hash");
  EXPECT_EQ(cli.run({"EXISTS", "{" + o.prefix + "}log"}), "0");
}

TEST_F(Redis, AConditionalWriteAppliesOnlyOnTheValueItExpects) {
  pmap::RedisBackend b(options("cas"));
  b.write(std::vector<Write>{{Op::put, "a", "1"}, {Op::put, "b", "1"}});
  std::vector<Write> batch = {{Op::put, "a", "2"},   // expects 1: applies
                              {Op::put, "b", "2"},   // expects 0: conflicts (b holds 1)
                              {Op::put, "c", "2"},   // expects absent: applies
                              {Op::put, "a", "3"},   // expects 2 (the batch's own put): applies
                              {Op::put, "e", "x"}};  // no condition: applies
  std::vector<pmap::Backend::Expect> expect = {{0, "1"}, {1, "0"}, {2, std::nullopt}, {3, "2"}};
  std::vector<pmap::Backend::Conflict> conflicts;
  b.commit_shared(batch, expect, 7, conflicts);
  ASSERT_EQ(conflicts.size(), 1u);
  EXPECT_EQ(conflicts[0].index, 1u);
  EXPECT_EQ(conflicts[0].stored, "1");
  EXPECT_EQ(b.get("a"), "3");
  EXPECT_EQ(b.get("b"), "1");
  EXPECT_EQ(b.get("c"), "2");
  EXPECT_EQ(b.get("e"), "x");
  // A conflict on an absent key reports it absent.
  std::vector<Write> again = {{Op::put, "nope", "1"}};
  std::vector<pmap::Backend::Expect> present = {{0, "something"}};
  b.commit_shared(again, present, 8, conflicts);
  ASSERT_EQ(conflicts.size(), 1u);
  EXPECT_EQ(conflicts[0].stored, std::nullopt);
  EXPECT_EQ(b.get("nope"), std::nullopt);
}

// A commit is one script the whole server waits behind, so a burst is
// committed in scripts of at most 1,000 writes (max_commit_writes()), never
// as one of 5,000.
TEST_F(Redis, ABurstIsCommittedInScriptsOfAtMostAThousandWrites) {
  const auto o = options("burst");
  Map map{pmap::RedisBackend(o)};
  Cli cli;
  {
    // The server holds every write back until UNPAUSE: the burst queues up
    // in the map behind its first commit, all of it taken at once after.
    ASSERT_EQ(cli.run({"CLIENT", "PAUSE", "60000", "WRITE"}), "OK");
    struct Unpause {
      Cli& cli;
      ~Unpause() { EXPECT_EQ(cli.run({"CLIENT", "UNPAUSE"}), "OK"); }
    } unpause{cli};
    for (int i = 0; i < 5000; ++i) map.insert("k" + std::to_string(i), "v");
  }
  map.flush().get();
  const std::string base = "{" + o.prefix + "}";
  EXPECT_EQ(cli.run({"HLEN", base + "data"}), "5000");
  EXPECT_GE(std::stoi(cli.run({"XLEN", base + "log"})), 5) << "one record entry per commit";
}

// A reader that fell behind the trimmed stream, or finds the record
// deleted, is told to reload (a gap), never handed a partial history.
TEST_F(Redis, AReadBehindTheTrimmedOrDeletedRecordIsAGap) {
  const auto o = options("gap");
  pmap::RedisBackend b(o);
  auto reader = b.open_reader();
  const std::uint64_t start = reader->scan_at([](auto, auto) {});
  for (int i = 0; i < 17000; ++i)
    b.write(std::vector<Write>{{Op::put, "k" + std::to_string(i % 100), std::to_string(i)}});
  EXPECT_TRUE(reader->changes_since(start, 0).gap) << "the stream keeps about 16,384 entries";
  const auto recent = reader->changes_since(16990, 0);
  EXPECT_FALSE(recent.gap);
  EXPECT_EQ(recent.through, 17000u);
  ASSERT_EQ(recent.changes.size(), 10u);
  EXPECT_EQ(recent.changes.back().value, "16999");
  Cli().run({"DEL", "{" + o.prefix + "}log"});
  EXPECT_TRUE(reader->changes_since(16990, 0).gap) << "the record is gone";
}

// An entry of the record that is not the map's (written by hand) is a
// corrupt record, named as such — never a crash, never skipped in silence.
TEST_F(Redis, ADamagedRecordIsACorruptErrorNamingIt) {
  const auto o = options("damaged");
  pmap::RedisBackend b(o);
  auto reader = b.open_reader();
  b.write(std::vector<Write>{{Op::put, "a", "1"}});
  Cli cli;
  const std::string base = "{" + o.prefix + "}";
  ASSERT_EQ(cli.run({"INCR", base + "head"}), "2");
  ASSERT_EQ(cli.run({"XADD", base + "log", "2-1", "hand", "written"}), "2-1");
  const pmap::Error e = error_of([&] { reader->changes_since(0, 0); });
  EXPECT_EQ(e.code(), pmap::Errc::corrupt) << e.what();
  EXPECT_NE(std::string(e.what()).find("damaged at position 2"), std::string::npos) << e.what();
  // Past it (where a map reopened on the store starts), reads go on.
  b.write(std::vector<Write>{{Op::put, "b", "2"}});
  const auto after = reader->changes_since(2, 0);
  EXPECT_FALSE(after.gap);
  ASSERT_EQ(after.changes.size(), 1u);
  EXPECT_EQ(after.changes[0].value, "2");
}

// WAIT: a commit that reaches fewer replicas than asked for is reported,
// and still done; with a real replica attached, nothing is reported.
TEST_F(Redis, ACommitThatReachesTooFewReplicasIsReportedAndKept) {
  pmap_test::Reports reports;
  auto o = options("wait");
  o.replicas = 1;
  o.replica_timeout = 100ms;
  {
    Map m{std::make_unique<pmap::RedisBackend>(o), reports.options()};
    m.insert("k", "v").get();
  }
  EXPECT_EQ(reports.mentioning("reached 0 of 1 replicas within 100 ms").size(), 1u);
  EXPECT_EQ(pmap::RedisBackend(o).get("k"), "v") << "it is on the primary";

  // A replica of the test server, as a child process of this test, keeping
  // the copy it syncs in a directory of its own.
  const int port = pmap_test::redis_host_port().second + 1000 + getpid() % 1000;
  const pmap_test::TempDir dir;
  const std::string p = std::to_string(port),
                    master = std::to_string(pmap_test::redis_host_port().second),
                    dir_path = dir.path().string();
  const pid_t replica = fork();
  if (replica == 0) {
    execlp("redis-server", "redis-server", "--port", p.c_str(), "--bind", "127.0.0.1", "--dir",
           dir_path.c_str(), "--save", "", "--appendonly", "no", "--replicaof", "127.0.0.1",
           master.c_str(), "--loglevel", "warning", static_cast<char*>(nullptr));
    _exit(127);
  }
  ASSERT_GT(replica, 0);
  bool up = false;
  for (int i = 0; i < 3000 && !up; ++i) {  // a full sync: up to a minute on a busy machine
    std::this_thread::sleep_for(20ms);
    redisContext* c = redisConnect("127.0.0.1", port);
    if (c && !c->err) {
      auto* r = static_cast<redisReply*>(redisCommand(c, "INFO replication"));
      up = r && r->type == REDIS_REPLY_STRING &&
           std::string(r->str, r->len).find("master_link_status:up") != std::string::npos;
      if (r) freeReplyObject(r);
    }
    redisFree(c);
  }
  pmap_test::Reports quiet;
  if (up) {
    o.replica_timeout = 5000ms;
    Map m{std::make_unique<pmap::RedisBackend>(o), quiet.options()};
    m.insert("k2", "v2").get();
  }
  kill(replica, SIGKILL);
  waitpid(replica, nullptr, 0);
  ASSERT_TRUE(up) << "the replica on port " << port << " did not attach";
  EXPECT_EQ(quiet.count(), 0u) << "a commit that reached its replica was reported";
}

TEST_F(Redis, KillingTheConnectionsMidRunLosesNothingAndAppliesNothingTwice) {
  const auto o = options("kill");
  const std::string uri = pmap_test::redis_uri(o.prefix);
  pmap_test::write_through_faults(uri, [&] {
    Cli cli;
    long killed = 0;
    for (int i = 0; i < 5; ++i) {
      // Every connection of the map (writer, watcher's reader and
      // subscriber), at a random point of its work: they carry its name.
      const std::string list = cli.run({"CLIENT", "LIST"});
      std::size_t at = 0;
      while ((at = list.find("id=", at)) != std::string::npos) {
        const std::string line = list.substr(at, list.find('\n', at) - at);
        at += 3;
        if (line.find(" name=pmap/" + o.prefix + " ") == std::string::npos) continue;
        killed += cli.run({"CLIENT", "KILL", "ID", line.substr(3, line.find(' ') - 3)}) == "1";
      }
      std::this_thread::sleep_for(20ms);
    }
    EXPECT_GE(killed, 2) << "the writer's and the subscriber's connections, at least once";
  });
}

TEST_F(Redis, RestartingTheServerMidRunLosesNothingAndAppliesNothingTwice) {
  const std::string restart = pmap_test::env_or_empty("PMAP_TEST_REDIS_RESTART");
  if (restart.empty()) {
    if (pmap_test::server_required("redis")) FAIL() << "PMAP_TEST_REDIS_RESTART is unset";
    GTEST_SKIP() << "PMAP_TEST_REDIS_RESTART (a command restarting the server) is unset";
  }
  const std::string uri = pmap_test::redis_uri(pmap_test::unique_table("restart") + ":");
  pmap_test::write_through_faults(uri,
                                  [&] { ASSERT_EQ(std::system(restart.c_str()), 0) << restart; });
}

// A commit whose reply never comes while the server answers nothing for
// longer than resolve_timeout: the backend cannot learn whether the script
// ran, and says so (it never guesses "failed"). Runs alone (RUN_SERIAL):
// the server is stopped (SIGSTOP) meanwhile.
TEST_F(Redis, UnreachableAfterABrokenCommitIsAnErrorSayingTheOutcomeIsUnknown) {
  auto o = options("doubt");
  o.timeout = 500ms;
  o.resolve_timeout = 1s;
  pmap::RedisBackend b(o);
  b.write(std::vector<Write>{{Op::put, "first", "1"}});  // its script is loaded
  Cli cli;
  const std::string info = cli.run({"INFO", "server"});
  const auto at = info.find("process_id:");
  ASSERT_NE(at, std::string::npos);
  const pid_t server = static_cast<pid_t>(std::stol(info.substr(at + 11)));
  if (kill(server, 0) != 0) {
    const std::string why = "cannot signal the Redis server (pid " + std::to_string(server) +
                            "): run as root or as the server's user";
    if (pmap_test::server_required("redis")) FAIL() << why;
    GTEST_SKIP() << why;
  }
  ASSERT_EQ(kill(server, SIGSTOP), 0);
  const pmap::Error e = error_of([&] { b.write(std::vector<Write>{{Op::put, "k", "v"}}); });
  kill(server, SIGCONT);
  const std::string what = e.what();
  EXPECT_EQ(e.code(), pmap::Errc::io) << what;
  EXPECT_NE(what.find("the outcome is unknown"), std::string::npos) << what;
  EXPECT_NE(what.find("reopen the map"), std::string::npos) << what;
}

}  // namespace
