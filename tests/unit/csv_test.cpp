// The CSV backend: RFC 4180 files at rest, hand-written input, malformed
// input rejected by line and left untouched, appends that cost the batch,
// and a torn append at every byte offset.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <pmap/pmap.hpp>
#include <sstream>

#include "../support/test_backend.hpp"

namespace {

using Map = pmap::PersistentMap<std::string, std::string>;
using pmap::Write;
using Op = pmap::Write::Op;
using pmap_test::TempDir;

using pmap_test::backend_contents;
using pmap_test::slurp;
void spit(const std::filesystem::path& p, const std::string& content) {
  std::ofstream(p, std::ios::binary | std::ios::trunc) << content;
}

TEST(Csv, FileAtRestIsPlainRfc4180) {
  TempDir dir;
  const auto path = dir / "data.csv";
  {
    Map map{pmap::CsvBackend(path)};
    map.insert("plain", "value");
    map.insert("comma", "a,b");
    map.insert("quote", "say \"hi\"");
    map.insert("newline", "two\nlines");
    map.insert("crlf", "x\r\ny");
    map.insert("empty", "");
    map.insert("utf8", "h\xc3\xa9llo");
    map.insert("#hash", "starts with #");
    map.insert("gone", "soon");
    map.erase("gone");
  }
  EXPECT_EQ(slurp(path),
            "key,value\n"
            "\"#hash\",starts with #\n"
            "comma,\"a,b\"\n"
            "crlf,\"x\r\ny\"\n"
            "empty,\n"
            "newline,\"two\nlines\"\n"
            "plain,value\n"
            "quote,\"say \"\"hi\"\"\"\n"
            "utf8,h\xc3\xa9llo\n");
  Map again{pmap::CsvBackend(path)};
  EXPECT_EQ(again.get("crlf"), "x\r\ny");
  EXPECT_EQ(again.get("quote"), "say \"hi\"");
  EXPECT_EQ(again.get("empty"), "");
  EXPECT_EQ(again.get("#hash"), "starts with #");
  EXPECT_EQ(again.size(), 8u);
}

// A read-only opener (what pmapctl's reading commands use) takes no lock,
// so it opens beside a map that holds the file, and reads the file as it
// is: nothing created, compacted or written.
TEST(Csv, AReadOnlyOpenerReadsAHeldFileAsItIsAndRefusesWrites) {
  TempDir dir;
  const auto path = dir / "held.csv";
  Map held{pmap::CsvBackend(path)};
  held.insert("a", "1").get();
  held.insert("b", "2").get();  // appended: the file is not compact now
  const std::string before = slurp(path);
  pmap::CsvBackend reader(path, pmap::CsvOptions{.read_only = true});
  EXPECT_EQ(backend_contents(reader), (std::map<std::string, std::string>{{"a", "1"}, {"b", "2"}}));
  try {
    reader.write(std::vector<Write>{{Op::put, "c", "3"}});
    ADD_FAILURE() << "a read-only opener wrote";
  } catch (const pmap::Error& e) {
    EXPECT_EQ(e.code(), pmap::Errc::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("read-only"), std::string::npos) << e.what();
  }
  EXPECT_EQ(slurp(path), before);
  auto by_uri = pmap::open_backend("csv:" + path.string() + "?read_only=true");
  EXPECT_EQ(by_uri->get("b"), "2");
  EXPECT_THROW(pmap::CsvBackend(dir / "absent.csv", pmap::CsvOptions{.read_only = true}),
               pmap::Error);
  EXPECT_FALSE(std::filesystem::exists(dir / "absent.csv"));
  EXPECT_THROW(pmap::open_backend("csv:" + path.string() + "?read_only=maybe"), pmap::Error);
  EXPECT_THROW(pmap::open_backend("csv:" + path.string() + "?tabel=x"), pmap::Error);
  // memory: takes the parameter too (an empty store that refuses writes).
  auto memory = pmap::open_backend("memory:?read_only=true");
  EXPECT_THROW(memory->write(std::vector<Write>{{Op::put, "k", "v"}}), pmap::Error);
}

TEST(Csv, PythonsCsvModuleReadsTheSameRows) {
  if (std::system("python3 -c 'import csv' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "python3 is not installed";
  TempDir dir;
  const auto path = dir / "py.csv";
  {
    Map map{pmap::CsvBackend(path)};
    map.insert("a,b", "1\n2");
    map.insert("q\"", "");
  }
  const auto out = dir / "out.txt";
  const std::string cmd =
      "python3 -c 'import csv,sys; rows=list(csv.reader(open(sys.argv[1], newline=\"\")));"
      " open(sys.argv[2],\"w\").write(repr(rows))' " +
      path.string() + " " + out.string();
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  EXPECT_EQ(slurp(out), "[['key', 'value'], ['a,b', '1\\n2'], ['q\"', '']]");
}

TEST(Csv, HandWrittenFileLoads) {
  TempDir dir;
  const auto path = dir / "hand.csv";
  spit(path,
       "\xEF\xBB\xBFkey,value\r\n"
       "b,first\r\n"
       "a,\"quoted, with comma\"\r\n"
       "\r\n"
       "b,second wins\r\n"
       "c,bare \"quotes\" kept\r\n"
       "\"multi\nline key\",\"\"\r\n"
       "last,no newline at the end");
  Map map{pmap::CsvBackend(path)};
  EXPECT_EQ(map.size(), 5u);
  EXPECT_EQ(map.get("a"), "quoted, with comma");
  EXPECT_EQ(map.get("b"), "second wins");
  EXPECT_EQ(map.get("c"), "bare \"quotes\" kept");
  EXPECT_EQ(map.get("multi\nline key"), "");
  EXPECT_EQ(map.get("last"), "no newline at the end");
}

struct Malformed {
  std::string content;
  int line;
  std::string why;
};

TEST(Csv, MalformedFileIsRejectedWithItsLineAndLeftUntouched) {
  const std::vector<Malformed> cases = {
      {"name,value\na,1\n", 1, "header"},
      {"key,value\na,1\nb,2,3\n", 3, "found 3"},
      {"key,value\na,1\nonly-one-field\n", 3, "found 1"},
      {"key,value\na,\"never closed\nb,2\n", 2, "never closed"},
      {"key,value\na,\"x\"y\n", 2, "closing quote"},
      {"key,value\n\"two\nline\",1\nbad\n", 4, "found 1"},
      {"key,value\na,1\rb,2\n", 2, "carriage return"},
      {"key,value\n#pmap-batch x\na,1\n", 2, "marker"},
      {"key,value\n#pmap-batch 6\na,b,c\n", 3, "batch line"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.content);
    TempDir dir;
    const auto path = dir / "bad.csv";
    spit(path, c.content);
    try {
      Map map{pmap::CsvBackend(path)};
      ADD_FAILURE() << "loaded a malformed file";
    } catch (const pmap::Error& e) {
      EXPECT_EQ(e.code(), pmap::Errc::corrupt);
      const std::string what = e.what();
      EXPECT_NE(what.find("bad.csv line " + std::to_string(c.line) + ":"), std::string::npos)
          << what;
      EXPECT_NE(what.find(c.why), std::string::npos) << what;
    }
    EXPECT_EQ(slurp(path), c.content) << "the file must be left untouched";
    EXPECT_FALSE(std::filesystem::exists(dir / "bad.csv.pmap-tmp"));
  }
}

// A file damaged in several places names each one, read on past each: a
// damaged batch is skipped whole (its erase lines are no damage), a
// damaged row or marker to the next line; past 20 they are counted.
TEST(Csv, EveryDamagedLineIsNamedInOneError) {
  TempDir dir;
  const auto path = dir / "bad.csv";
  const std::string content =
      "key,value\n"
      "a,1\n"
      "b,2,3\n"              // line 3: three fields
      "#pmap-batch 9\n"      // line 4
      "a,b,c\n"              // line 5: a batch line of three fields
      "kk\n"                 // line 6: an erase, inside the damaged batch
      "c,3\n"                // line 7
      "#pmap-batch zz\n"     // line 8: a malformed marker
      "\"d\"x,4\n"           // line 9: text after a closing quote
      "e,5\n"                // line 10
      "\"never closed,6\n";  // line 11
  spit(path, content);
  try {
    pmap::CsvBackend b(path);
    ADD_FAILURE() << "loaded a damaged file";
  } catch (const pmap::Error& e) {
    EXPECT_EQ(e.code(), pmap::Errc::corrupt);
    const std::string what = e.what();
    EXPECT_NE(what.find("bad.csv has 5 damaged lines: line 3: expected 2 fields (key,value), "
                        "found 3; line 5: a batch line must be"),
              std::string::npos)
        << what;
    for (const char* place : {"; line 8: a malformed batch marker", "; line 9: a closing quote",
                              "; line 11: a quoted field is never closed"})
      EXPECT_NE(what.find(place), std::string::npos) << place << " in " << what;
    EXPECT_EQ(what.find("line 6"), std::string::npos) << what;
  }
  EXPECT_EQ(slurp(path), content);

  std::string many = "key,value\n";
  for (int i = 0; i < 25; ++i) many += "x\n";
  spit(path, many);
  try {
    pmap::CsvBackend b(path);
    ADD_FAILURE() << "loaded a damaged file";
  } catch (const pmap::Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("has 25 damaged lines: line 2: "), std::string::npos) << what;
    EXPECT_NE(what.find("; line 21: "), std::string::npos) << what;
    EXPECT_EQ(what.find("; line 22: "), std::string::npos) << what;
    EXPECT_NE(what.find("; and 5 more"), std::string::npos) << what;
  }
}

TEST(Csv, AWriteAppendsTheBatchNotTheFile) {
  TempDir dir;
  const auto path = dir / "append.csv";
  pmap::CsvBackend b(path);
  std::vector<Write> bulk;
  for (int i = 0; i < 2000; ++i)
    bulk.push_back({Op::put, "key" + std::to_string(i), std::string(40, 'v')});
  b.write(bulk);
  struct stat before {};
  ASSERT_EQ(stat(path.c_str(), &before), 0);
  b.write(std::vector<Write>{{Op::put, "key7", "new"}});
  struct stat after {};
  ASSERT_EQ(stat(path.c_str(), &after), 0);
  const std::string appended = "#pmap-batch 9\nkey7,new\n";
  EXPECT_EQ(after.st_size - before.st_size, static_cast<off_t>(appended.size()));
  EXPECT_EQ(after.st_ino, before.st_ino) << "the file was rewritten, not appended to";
  const std::string content = slurp(path);
  EXPECT_EQ(content.substr(content.size() - appended.size()), appended);
}

TEST(Csv, CompactsWhenDeadRowsOutweighLiveOnes) {
  TempDir dir;
  const auto path = dir / "compact.csv";
  pmap::CsvBackend b(path);
  b.write(std::vector<Write>{{Op::put, "a", "1"}, {Op::put, "b", "2"}});
  std::uintmax_t largest = 0;
  for (int i = 0; i < 500; ++i) {
    b.write(std::vector<Write>{{Op::put, "a", std::to_string(i)}});
    largest = std::max(largest, std::filesystem::file_size(path));
  }
  // Without compaction the file would hold ~500 batches (~10 KB).
  EXPECT_LT(largest, 2000u);
  EXPECT_EQ(backend_contents(b), (std::map<std::string, std::string>{{"a", "499"}, {"b", "2"}}));
}

TEST(Csv, CloseLeavesTheCompactForm) {
  TempDir dir;
  const auto path = dir / "close.csv";
  {
    pmap::CsvBackend b(path);
    b.write(std::vector<Write>{{Op::put, "b", "2"}, {Op::put, "a", "1"}});
    b.write(std::vector<Write>{{Op::erase, "b", ""}});
    EXPECT_NE(slurp(path).find("#pmap-batch"), std::string::npos);
  }
  EXPECT_EQ(slurp(path), "key,value\na,1\n");
}

TEST(Csv, TornAppendAtEveryByteLoadsTheLastCommittedState) {
  TempDir dir;
  const auto path = dir / "full.csv";
  std::vector<std::pair<std::size_t, std::map<std::string, std::string>>> committed;
  std::string full;
  {
    pmap::CsvBackend b(path);
    b.write(std::vector<Write>{{Op::put, "base", "0"}});
  }  // compacted: the batches below are appended to a clean file
  {
    pmap::CsvBackend b(path);
    committed.emplace_back(slurp(path).size(), backend_contents(b));
    const std::vector<std::vector<Write>> batches = {
        {{Op::put, "a", "1"}, {Op::put, "b", "x,y"}},
        {{Op::erase, "base", ""}, {Op::put, "", "empty key"}},
        {{Op::put, "c", "multi\nline \"q\""}},
        {{Op::erase, "", ""}, {Op::put, "a", "2"}, {Op::put, "#k", "#v"}},
    };
    for (const auto& batch : batches) {
      b.write(batch);
      committed.emplace_back(slurp(path).size(), backend_contents(b));
    }
    full = slurp(path);
  }
  ASSERT_EQ(full.size(), committed.back().first);
  for (std::size_t cut = committed.front().first; cut <= full.size(); ++cut) {
    SCOPED_TRACE("cut at byte " + std::to_string(cut));
    const auto torn = dir / "torn.csv";
    spit(torn, full.substr(0, cut));
    std::size_t k = 0;
    while (k + 1 < committed.size() && committed[k + 1].first <= cut) ++k;
    pmap::CsvBackend b(torn);
    ASSERT_EQ(backend_contents(b), committed[k].second);
  }
}

TEST(Csv, SecondOpenerIsLockedAndDirectoriesAreRefused) {
  TempDir dir;
  const auto path = dir / "lock.csv";
  pmap::CsvBackend first(path);
  try {
    pmap::CsvBackend second(path);
    FAIL();
  } catch (const pmap::Error& e) {
    EXPECT_EQ(e.code(), pmap::Errc::locked);
    EXPECT_NE(std::string(e.what()).find("lock.csv"), std::string::npos) << e.what();
  }
  try {
    pmap::CsvBackend d(dir.path());
    FAIL();
  } catch (const pmap::Error& e) {
    EXPECT_EQ(e.code(), pmap::Errc::io);
    EXPECT_NE(std::string(e.what()).find("is a directory"), std::string::npos) << e.what();
  }
}

}  // namespace
