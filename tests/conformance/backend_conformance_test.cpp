// One suite every backend passes: byte-exact keys and values (NUL bytes,
// empty strings, newlines, quotes, non-UTF-8), atomic batches in order,
// clear, and persistence across reopen for the file backends.
#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <pmap/pmap.hpp>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "../support/servers.hpp"
#include "../support/test_backend.hpp"
#ifdef PMAP_TEST_POSTGRES
#include <pmap/backends/postgres.hpp>
#endif
#ifdef PMAP_TEST_REDIS
#include <pmap/backends/redis.hpp>
#endif

namespace {

using pmap::Write;
using Op = pmap::Write::Op;

struct Flavor {
  std::string name;
  // Opens the backend stored under dir (the same data when called again).
  std::function<std::unique_ptr<pmap::Backend>(const std::filesystem::path& dir)> open;
  bool persistent;
  bool readers = true;    // open_reader() gives a session
  bool postgres = false;  // needs the PostgreSQL server (PMAP_TEST_PG)
  bool redis = false;     // needs the Redis server (PMAP_TEST_REDIS)
};

void PrintTo(const Flavor& flavor, std::ostream* os) { *os << flavor.name; }

std::map<std::string, std::string> contents(pmap::Backend& backend) {
  std::map<std::string, std::string> out;
  backend.scan([&](std::string_view k, std::string_view v) {
    EXPECT_TRUE(out.emplace(std::string(k), std::string(v)).second) << "scan repeated a key";
  });
  return out;
}

class Conformance : public ::testing::TestWithParam<Flavor> {
 protected:
  void SetUp() override {
    if (GetParam().postgres) PMAP_NEED_POSTGRES();
    if (GetParam().redis) PMAP_NEED_REDIS();
  }
  std::unique_ptr<pmap::Backend> open() { return GetParam().open(dir_.path()); }
  pmap_test::TempDir dir_;
};

const std::string kNul("a\0b", 3);
const std::string kBinary("\xff\xfe\x00\x01\x80", 5);

TEST_P(Conformance, PutGetEraseRoundTripBytesExactly) {
  auto b = open();
  std::vector<Write> batch = {
      {Op::put, "plain", "value"},
      {Op::put, kNul, "nul key"},
      {Op::put, "nul value", kNul},
      {Op::put, "", "empty key"},
      {Op::put, "empty value", ""},
      {Op::put, "binary", kBinary},
      {Op::put, "line\nbreak,comma \"quote\"\r\n", "multi\nline\r\nvalue, with \"quotes\""},
      {Op::put, "#pmap-batch 12", "looks like a marker"},
      {Op::put, "utf8 \xc3\xa9\xe2\x82\xac", "\xf0\x9f\x98\x80"},
  };
  b->write(batch);
  for (const auto& w : batch) {
    auto got = b->get(w.key);
    ASSERT_TRUE(got.has_value()) << "key " << w.key;
    EXPECT_EQ(*got, w.value) << "key " << w.key;
  }
  EXPECT_FALSE(b->get("absent").has_value());
  EXPECT_FALSE(b->get(std::string("a\0", 2)).has_value()) << "a NUL key must not match its prefix";

  b->write(std::vector<Write>{{Op::erase, kNul, ""}, {Op::erase, "never there", ""}});
  EXPECT_FALSE(b->get(kNul).has_value());
  EXPECT_EQ(contents(*b).size(), batch.size() - 1);

  if (!GetParam().persistent) return;
  b.reset();
  auto reopened = open();
  auto all = contents(*reopened);
  EXPECT_EQ(all.size(), batch.size() - 1);
  for (const auto& w : batch) {
    if (w.key == kNul) {
      EXPECT_FALSE(all.count(w.key));
      continue;
    }
    ASSERT_TRUE(all.count(w.key)) << "lost across reopen: " << w.key;
    EXPECT_EQ(all[w.key], w.value);
  }
}

TEST_P(Conformance, BatchAppliesInOrderLaterWriteWins) {
  auto b = open();
  b->write(std::vector<Write>{{Op::put, "k", "1"},
                              {Op::put, "k", "2"},
                              {Op::erase, "j", ""},
                              {Op::put, "j", "3"},
                              {Op::put, "gone", "x"},
                              {Op::erase, "gone", ""}});
  EXPECT_EQ(b->get("k"), "2");
  EXPECT_EQ(b->get("j"), "3");
  EXPECT_FALSE(b->get("gone"));
  if (!GetParam().persistent) return;
  b.reset();
  auto r = open();
  EXPECT_EQ(contents(*r), (std::map<std::string, std::string>{{"j", "3"}, {"k", "2"}}));
}

TEST_P(Conformance, ClearRemovesEverythingIncludingEarlierInTheBatch) {
  auto b = open();
  b->write(std::vector<Write>{{Op::put, "a", "1"}, {Op::put, "b", "2"}});
  b->write(std::vector<Write>{{Op::put, "c", "3"}, {Op::clear, "", ""}, {Op::put, "d", "4"}});
  EXPECT_EQ(contents(*b), (std::map<std::string, std::string>{{"d", "4"}}));
  if (!GetParam().persistent) return;
  b.reset();
  auto r = open();
  EXPECT_EQ(contents(*r), (std::map<std::string, std::string>{{"d", "4"}}));
}

// Backends may reorder a batch (SQLite applies it in key order), but not
// across a clear, and never two writes of one key: big shuffled batches of
// few keys, each written many times, with clears, against an in-order model.
TEST_P(Conformance, ABatchEndsAsIfAppliedInOrder) {
  auto b = open();
  std::map<std::string, std::string> expected;
  std::mt19937 rng(7);
  for (int round = 0; round < 20; ++round) {
    std::vector<Write> batch;
    for (int i = 0; i < 400; ++i) {
      const std::string key = "k" + std::to_string(rng() % 23);
      const unsigned dice = rng() % 100;
      if (dice == 0) {
        batch.push_back({Op::clear, "", ""});
        expected.clear();
      } else if (dice < 20) {
        batch.push_back({Op::erase, key, ""});
        expected.erase(key);
      } else {
        const std::string value = std::to_string(round) + "." + std::to_string(i);
        batch.push_back({Op::put, key, value});
        expected[key] = value;
      }
    }
    b->write(batch);
    ASSERT_EQ(contents(*b), expected) << "after batch " << round;
  }
  if (!GetParam().persistent) return;
  b.reset();
  EXPECT_EQ(contents(*open()), expected);
}

TEST_P(Conformance, ManyBatchesThenReopen) {
  auto b = open();
  std::map<std::string, std::string> expected;
  for (int i = 0; i < 300; ++i) {
    std::vector<Write> batch;
    for (int j = 0; j < 5; ++j) {
      const std::string key = "key" + std::to_string((i * 7 + j) % 101);
      if ((i + j) % 4 == 0) {
        batch.push_back({Op::erase, key, ""});
        expected.erase(key);
      } else {
        const std::string value =
            std::string(static_cast<std::size_t>(i % 13), 'v') + std::to_string(i);
        batch.push_back({Op::put, key, value});
        expected[key] = value;
      }
    }
    b->write(batch);
  }
  b->flush();
  EXPECT_EQ(contents(*b), expected);
  if (!GetParam().persistent) return;
  b.reset();
  auto r = open();
  EXPECT_EQ(contents(*r), expected);
}

TEST_P(Conformance, LargeValue) {
  auto b = open();
  std::string big(1 << 20, 'x');
  for (std::size_t i = 0; i < big.size(); i += 1000) big[i] = static_cast<char>('a' + i % 26);
  b->write(std::vector<Write>{{Op::put, "big", big}});
  EXPECT_EQ(b->get("big"), big);
  if (!GetParam().persistent) return;
  b.reset();
  EXPECT_EQ(open()->get("big"), big);
}

// What tools ask (pmapctl count, stats): a backend that can count counts
// what scan() hands over, and one that can measure gives a size that grows
// with what it holds.
TEST_P(Conformance, CountAndBytesAgreeWithWhatItHolds) {
  auto b = open();
  b->write(std::vector<Write>{{Op::put, "a", "1"}});
  const auto small = b->bytes();
  std::vector<Write> batch;
  for (int i = 0; i < 500; ++i)
    batch.push_back({Op::put, "k" + std::to_string(i), std::string(300, 'v')});
  batch.push_back({Op::erase, "a", ""});
  b->write(batch);
  if (const auto n = b->count()) {
    EXPECT_EQ(*n, contents(*b).size());
  }
  if (const auto big = b->bytes()) {
    ASSERT_TRUE(small.has_value());
    EXPECT_GT(*big, *small + 500 * 300 / 2) << "500 values of 300 bytes";
  }
  b->write(std::vector<Write>{{Op::clear, "", ""}});
  if (const auto n = b->count()) {
    EXPECT_EQ(*n, 0u);
  }
}

TEST_P(Conformance, DescribeNamesTheStore) {
  auto b = open();
  const std::string d = b->describe();
  const std::string scheme = GetParam().name.substr(0, GetParam().name.find('_'));
  EXPECT_EQ(d.substr(0, scheme.size() + 1), scheme + ":") << d;
  if (GetParam().postgres) {
    EXPECT_NE(d.find("#c_"), std::string::npos) << "names the table: " << d;
  } else if (GetParam().redis) {
    EXPECT_NE(d.find("prefix=c_"), std::string::npos) << "names the prefix: " << d;
  } else if (GetParam().persistent) {
    EXPECT_NE(d.find(dir_.path().string()), std::string::npos) << d;
  }
}

// A reader session (Backend::open_reader) reads beside the writer, on
// another thread: it sees every batch committed before it reads, each one
// whole, and cannot write.
TEST_P(Conformance, AReaderSessionSeesWholeCommitsBesideTheWriter) {
  auto b = open();
  b->write(std::vector<Write>{{Op::put, "x", "0"}, {Op::put, "y", "0"}});
  auto reader = b->open_reader();
  if (!GetParam().readers) {
    EXPECT_EQ(reader, nullptr) << "the suite expects no reader sessions here";
    return;
  }
  ASSERT_NE(reader, nullptr);
  EXPECT_EQ(reader->get("x"), "0");
  EXPECT_EQ(reader->describe(), b->describe());
  try {
    reader->write(std::vector<Write>{{Op::put, "z", "1"}});
    ADD_FAILURE() << "a reader session wrote";
  } catch (const pmap::Error& e) {
    EXPECT_EQ(e.code(), pmap::Errc::invalid_argument) << e.what();
  }
  constexpr int kBatches = 300;
  std::atomic<int> committed{0};
  std::thread writer([&] {
    for (int i = 1; i <= kBatches; ++i) {
      const std::string v = std::to_string(i);
      b->write(std::vector<Write>{{Op::put, "x", v}, {Op::put, "y", v}});
      committed.store(i);
    }
  });
  int reads = 0;
  while (committed.load() < kBatches || reads == 0) {
    const int before = committed.load();
    const auto seen = contents(*reader);
    ASSERT_EQ(seen.at("x"), seen.at("y")) << "a reader saw half a batch";
    EXPECT_GE(std::stoi(seen.at("x")), before) << "a reader missed a committed batch";
    ++reads;
  }
  writer.join();
  EXPECT_EQ(reader->get("y"), std::to_string(kBatches));
  EXPECT_EQ(b->get("z"), std::nullopt);
}

std::vector<Flavor> flavors() {
  std::vector<Flavor> all = {
      Flavor{"sqlite",
             [](const std::filesystem::path& dir) {
               return std::make_unique<pmap::SqliteBackend>(dir / "c.db");
             },
             true},
      Flavor{"csv",
             [](const std::filesystem::path& dir) {
               return std::make_unique<pmap::CsvBackend>(dir / "c.csv");
             },
             true, false},
      Flavor{"memory", [](const std::filesystem::path&) { return pmap::open_backend("memory:"); },
             false},
      Flavor{"sqlite_uri",
             [](const std::filesystem::path& dir) {
               return pmap::open_backend("sqlite:" + (dir / "u.db").string() +
                                         "?table=other&synchronous=normal");
             },
             true},
      Flavor{"sqlite_shared",
             [](const std::filesystem::path& dir) {
               return pmap::open_backend("sqlite:" + (dir / "s.db").string() + "?mode=shared");
             },
             true}};
#ifdef PMAP_TEST_POSTGRES
  // A table per test, named after its directory.
  all.push_back(Flavor{
      "postgres",
      [](const std::filesystem::path& dir) {
        return std::make_unique<pmap::PostgresBackend>(
            pmap_test::postgres_conninfo(),
            pmap::PostgresOptions{.table =
                                      "c_" + std::to_string(std::hash<std::string>{}(dir.string()) %
                                                            1000000000000ull)});
      },
      true, true, true});
#endif
#ifdef PMAP_TEST_REDIS
  // A prefix per test, named after its directory.
  all.push_back(Flavor{
      "redis",
      [](const std::filesystem::path& dir) {
        const auto [host, port] = pmap_test::redis_host_port();
        pmap::RedisOptions options{.host = host, .port = port};
        options.prefix =
            "c_" + std::to_string(std::hash<std::string>{}(dir.string()) % 1000000000000ull) + ":";
        return std::make_unique<pmap::RedisBackend>(options);
      },
      true, true, false, true});
#endif
  return all;
}

INSTANTIATE_TEST_SUITE_P(Backends, Conformance, ::testing::ValuesIn(flavors()),
                         [](const ::testing::TestParamInfo<Flavor>& info) {
                           return info.param.name;
                         });

}  // namespace
