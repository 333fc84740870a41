// pmapctl, the real binary, driven as a user would: every command, the
// formats and a round trip through them, exit codes, a malformed import,
// stores held by a running map, and the progress bar on a terminal.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <pmap/pmap.hpp>

#include "../support/servers.hpp"
#ifdef PMAP_TEST_POSTGRES
#include "../support/psql.hpp"
#endif
#ifdef PMAP_TEST_REDIS
#include "../support/redis_cli.hpp"
#endif
#include "../support/test_backend.hpp"
#include "run.hpp"

namespace {

using pmapctl_test::run;
using pmapctl_test::run_script;
using Entries = std::map<std::string, std::string>;
using Map = pmap::PersistentMap<std::string, std::string>;

Entries entries_of(const std::string& uri) {
  Entries out;
  pmap::open_backend(uri)->scan(
      [&](std::string_view k, std::string_view v) { out.emplace(std::string(k), std::string(v)); });
  return out;
}

void fill(const std::string& uri, const Entries& entries) {
  std::vector<pmap::Write> batch;
  for (const auto& [k, v] : entries) batch.push_back({pmap::Write::Op::put, k, v});
  pmap::open_backend(uri)->write(batch);
}

std::string file_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Keys and values a CSV or JSON file could get wrong: separators, quotes,
// line ends, a leading '#', bytes that are not UTF-8, NUL, empty strings.
const Entries kAwkward = {
    {"plain", "value"},
    {"comma,key", "a,b"},
    {"quote\"key", "say \"hi\""},
    {"lines", "one\ntwo\r\nthree"},
    {"#hash", "#pmap-batch 5"},
    {"utf8 \xc3\xa9", "\xe2\x82\xac 5"},
    {std::string("nul\0key", 7), std::string("\0\xff\xfe\x01", 4)},
    {"latin1 \xe9", "\x80\x81"},
    {"empty", ""},
    {"", "empty key"},
};

class Pmapctl : public ::testing::Test {
 protected:
  pmap_test::TempDir dir;
  std::string sqlite(const std::string& name = "s.db") { return "sqlite:" + (dir / name).string(); }
  std::string csv(const std::string& name = "s.csv") { return "csv:" + (dir / name).string(); }
};

TEST_F(Pmapctl, HelpListsEveryCommandAndTheExitCodesAndEachCommandHasAnExample) {
  const auto help = run({"--help"});
  EXPECT_EQ(help.code, 0);
  for (const char* cmd :
       {"get", "set", "del", "has", "list", "count", "export", "import", "stats"}) {
    EXPECT_NE(help.out.find(std::string("  ") + cmd + " "), std::string::npos) << cmd;
    const auto sub = run({cmd, "--help"});
    EXPECT_EQ(sub.code, 0) << cmd;
    EXPECT_NE(sub.out.find("Example"), std::string::npos) << cmd << ":\n" << sub.out;
    EXPECT_NE(sub.out.find(std::string("pmapctl ") + cmd + " "), std::string::npos) << cmd;
  }
  for (const char* line : {"0  done", "1  a key is absent", "2  the command line is wrong",
                           "3  the store or the input"})
    EXPECT_NE(help.out.find(line), std::string::npos) << line;
}

TEST_F(Pmapctl, SetGetHasDelKeepEveryByteAndAnswerWithExitCodes) {
  const std::string uri = sqlite();
  const std::string binary("\0\xff\n\r,\"x", 7);
  EXPECT_EQ(run({"set", uri, "k", "-"}, binary).code, 0);
  EXPECT_EQ(run({"set", uri, "text", "hello world"}).code, 0);
  auto got = run({"get", uri, "k"});
  EXPECT_EQ(got.code, 0);
  EXPECT_EQ(got.out, binary) << "exact bytes, no line end added in a pipe";
  EXPECT_EQ(run({"get", uri, "text"}).out, "hello world");
  EXPECT_EQ(run({"has", uri, "k"}).code, 0);
  const auto absent = run({"has", uri, "nope"});
  EXPECT_EQ(absent.code, 1);
  EXPECT_EQ(absent.out + absent.err, "");
  const auto missing = run({"get", uri, "nope"});
  EXPECT_EQ(missing.code, 1);
  EXPECT_NE(missing.err.find("no key \"nope\" in sqlite:"), std::string::npos) << missing.err;

  // del: the present keys go, in one write; an absent one is exit 1, named.
  const auto del = run({"del", uri, "k", "nope"});
  EXPECT_EQ(del.code, 1);
  EXPECT_NE(del.err.find("no key \"nope\""), std::string::npos) << del.err;
  EXPECT_EQ(entries_of(uri), (Entries{{"text", "hello world"}}));
  EXPECT_EQ(run({"del", uri, "text"}).code, 0);
  EXPECT_EQ(entries_of(uri), Entries{});
}

TEST_F(Pmapctl, ListShowsEntriesInEachFormatWithPrefixLimitAndKeysOnly) {
  const std::string uri = csv();
  fill(uri, {{"user:1", "ada"}, {"user:2", "bob"}, {"user:10", "x\ty"}, {"job:1", "done"}});
  // The CSV backend keeps its entries sorted by key bytes.
  EXPECT_EQ(run({"list", uri}).out, "job:1    done\nuser:1   ada\nuser:10  x\\ty\nuser:2   bob\n");
  EXPECT_EQ(run({"list", uri, "--prefix", "user:", "--limit", "2", "--keys-only"}).out,
            "user:1\nuser:10\n");
  EXPECT_EQ(run({"list", uri, "--prefix", "job", "--format", "csv"}).out,
            "key,value\njob:1,done\n");
  EXPECT_EQ(run({"list", uri, "--limit", "1", "--format", "jsonl"}).out,
            "{\"key\":\"job:1\",\"value\":\"done\"}\n");
  EXPECT_EQ(run({"count", uri}).out, "4\n");
  const auto bad = run({"list", uri, "--format", "xml"});
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.err.find("--format xml"), std::string::npos) << bad.err;
}

// CSV -> SQLite -> JSON Lines -> CSV: every entry comes back identical,
// whatever its bytes.
TEST_F(Pmapctl, ARoundTripThroughEveryFormatKeepsEveryEntry) {
  const std::string first = csv("first.csv"), last = csv("last.csv"), db = sqlite();
  fill(first, kAwkward);
  const std::string csv_file = (dir / "first.csv").string(),
                    jsonl_file = (dir / "dump.jsonl").string();
  const auto imported = run({"import", db, csv_file});
  ASSERT_EQ(imported.code, 0) << imported.err;
  EXPECT_NE(imported.err.find("imported 10 entries"), std::string::npos) << imported.err;
  const auto exported = run({"export", db, jsonl_file});
  ASSERT_EQ(exported.code, 0) << exported.err;
  const std::string jsonl = file_bytes(jsonl_file);
  EXPECT_NE(jsonl.find("{\"key\":\"plain\",\"value\":\"value\"}\n"), std::string::npos) << jsonl;
  EXPECT_NE(jsonl.find("{\"key_b64\":\"bGF0aW4xIOk=\",\"value_b64\":\"gIE=\"}\n"),
            std::string::npos)
      << "bytes that are not UTF-8 go as base64: " << jsonl;
  const auto again = run({"import", last, jsonl_file});
  ASSERT_EQ(again.code, 0) << again.err;
  EXPECT_EQ(entries_of(last), kAwkward);
  EXPECT_EQ(entries_of(db), kAwkward);
  // And through standard input and output, in both formats.
  for (const char* format : {"csv", "jsonl"}) {
    const std::string through = csv(std::string("through-") + format + ".csv");
    const auto out = run({"export", db, "-", "--format", format});
    ASSERT_EQ(out.code, 0) << out.err;
    const auto in = run({"import", through, "-", "--format", format}, out.out);
    ASSERT_EQ(in.code, 0) << in.err;
    EXPECT_EQ(entries_of(through), kAwkward) << format;
  }
}

// copy migrates a whole store to another backend; verify --against proves it.
TEST_F(Pmapctl, CopyMigratesAStoreAndVerifyProvesBothHoldTheSameEntries) {
  const std::string src = csv(), dst = sqlite();
  fill(src, kAwkward);
  const auto copied = run({"copy", src, dst});
  ASSERT_EQ(copied.code, 0) << copied.err;
  EXPECT_EQ(entries_of(dst), kAwkward);
  const auto same = run({"verify", src, "--against", dst});
  EXPECT_EQ(same.code, 0) << same.err;
  EXPECT_NE(same.out.find("hold the same 10 entries"), std::string::npos) << same.out;

  // Into a store that is not empty: refused, the store unchanged...
  fill(dst, {{"plain", "changed"}, {"extra", "1"}});
  const auto refused = run({"copy", src, dst});
  EXPECT_EQ(refused.code, 3);
  EXPECT_NE(refused.err.find("--force"), std::string::npos) << refused.err;
  EXPECT_EQ(entries_of(dst).at("plain"), "changed");
  // ... and verify names what differs.
  const auto differs = run({"verify", dst, "--against", src});
  EXPECT_EQ(differs.code, 1);
  EXPECT_NE(differs.out.find("differs: \"plain\""), std::string::npos) << differs.out;
  EXPECT_NE(differs.out.find("only in sqlite:"), std::string::npos) << differs.out;
  EXPECT_NE(differs.err.find("1 keys with other values, 1 only in sqlite:"), std::string::npos)
      << differs.err;
  // --force replaces all it holds, in batches too.
  const auto forced = run({"copy", src, dst, "--force", "--batch", "3"});
  ASSERT_EQ(forced.code, 0) << forced.err;
  EXPECT_EQ(entries_of(dst), kAwkward);
  // A damaged store is exit 3, naming every damaged place: each line of a
  // CSV file...
  const auto broken = dir / "broken.csv";
  std::ofstream(broken) << "key,value\na,1,x\nb,2\nc,\"3\n";
  const auto unreadable = run({"verify", "csv:" + broken.string()});
  EXPECT_EQ(unreadable.code, 3);
  EXPECT_NE(unreadable.out.find("damaged: csv:" + broken.string() +
                                " has 2 damaged lines: line 2: expected 2 fields"),
            std::string::npos)
      << unreadable.out;
  EXPECT_NE(unreadable.out.find("; line 4: a quoted field is never closed"), std::string::npos)
      << unreadable.out;
  EXPECT_NE(unreadable.err.find("the store is damaged (above): restore it from a backup"),
            std::string::npos)
      << unreadable.err;
  // ... each page of an SQLite file, from its integrity check.
  const auto pages = dir / "pages.db";
  fill("sqlite:" + pages.string(), [] {
    Entries many;
    for (int i = 0; i < 5000; ++i) many["key " + std::to_string(i)] = std::string(60, 'v');
    return many;
  }());
  EXPECT_EQ(run({"compact", "sqlite:" + pages.string()}).code, 0);
  {
    std::fstream f(pages, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(4096 * 20 + 100);
    f << std::string(300, '\xff');
  }
  const auto damaged_pages = run({"verify", "sqlite:" + pages.string()});
  EXPECT_EQ(damaged_pages.code, 3);
  EXPECT_NE(damaged_pages.out.find("damaged: " + pages.string() + ": On tree page "),
            std::string::npos)
      << damaged_pages.out;
  EXPECT_GT(std::count(damaged_pages.out.begin(), damaged_pages.out.end(), '\n'), 1)
      << damaged_pages.out;
  EXPECT_EQ(run({"verify", dst}).out,
            "sqlite:" + (dir / "s.db").string() + "#kv: 10 entries, all readable\n");
}

// A copy that fails while writing (here: a file size limit) leaves the
// destination as it was.
TEST_F(Pmapctl, ACopyThatFailsLeavesTheDestinationAsItWas) {
  Entries big;
  for (int i = 0; i < 5000; ++i) big["key" + std::to_string(i)] = std::string(200, 'v');
  const std::string src = sqlite("src.db"), dst = sqlite("dst.db");
  fill(src, big);
  fill(dst, {{"old", "1"}});
  // The limit is inherited by the tool; SIGXFSZ ignored, so a write past it
  // fails with EFBIG instead of killing the process.
  const auto r = pmapctl_test::run_program(
      {"/bin/sh", "-c", "trap '' XFSZ; ulimit -f 200; exec \"$0\" copy \"$1\" \"$2\" --force",
       PMAPCTL, src, dst});
  EXPECT_EQ(r.code, 3) << r.err;
  EXPECT_NE(r.err.find("is as it was"), std::string::npos) << r.err;
  EXPECT_EQ(entries_of(dst), (Entries{{"old", "1"}}));
}

// stats: the entries' sizes and what the store takes; compact gives space
// back, saying how much.
TEST_F(Pmapctl, StatsShowsSizesAndStorageAndCompactGivesSpaceBack) {
  const std::string uri = sqlite();
  Entries many;
  for (int i = 0; i < 2000; ++i) many["key" + std::to_string(i)] = std::string(500, 'v');
  fill(uri, many);
  std::vector<pmap::Write> erase;
  for (int i = 1; i < 2000; ++i)
    erase.push_back({pmap::Write::Op::erase, "key" + std::to_string(i), {}});
  pmap::open_backend(uri)->write(erase);
  const auto stats = run({"stats", uri});
  ASSERT_EQ(stats.code, 0) << stats.err;
  for (const char* line : {"entries      1\n", "key bytes    4 total, min 4, mean 4.0, max 4\n",
                           "value bytes  500 total, min 500, mean 500.0, max 500\n", "page size ",
                           "free pages ", "WAL bytes "})
    EXPECT_NE(stats.out.find(line), std::string::npos) << line << " in\n" << stats.out;
  const auto compacted = run({"compact", uri});
  ASSERT_EQ(compacted.code, 0) << compacted.err;
  unsigned long long before = 0, after = 0;
  ASSERT_EQ(std::sscanf(compacted.out.c_str() + compacted.out.find(": ") + 2,
                        "%llu bytes before, %llu after", &before, &after),
            2)
      << compacted.out;
  EXPECT_GT(before, 2000u * 500u) << "2,000 values of 500 bytes were written";
  EXPECT_LT(after, before / 10) << compacted.out;
  EXPECT_EQ(entries_of(uri), (Entries{{"key0", std::string(500, 'v')}}));

  // A CSV file as a person left it: a key written twice is a dead line.
  const auto path = dir / "hand.csv";
  std::ofstream(path) << "key,value\na,1\nb,2\na,3\n";
  const auto csv_stats = run({"stats", "csv:" + path.string()});
  EXPECT_NE(csv_stats.out.find("live rows    2\n"), std::string::npos) << csv_stats.out;
  EXPECT_NE(csv_stats.out.find("dead lines   1\n"), std::string::npos) << csv_stats.out;
  EXPECT_EQ(file_bytes(path), "key,value\na,1\nb,2\na,3\n") << "stats reads only";
  EXPECT_EQ(run({"compact", "csv:" + path.string()}).code, 0);
  EXPECT_EQ(file_bytes(path), "key,value\na,3\nb,2\n");
  const auto memory = run({"compact", "memory:"});
  EXPECT_EQ(memory.code, 3);
  EXPECT_NE(memory.err.find("nothing to compact"), std::string::npos) << memory.err;
}

// A bad line stops the import before anything is written, named by number.
TEST_F(Pmapctl, AMalformedImportNamesTheLineAndLeavesTheStoreByteIdentical) {
  const std::string uri = sqlite();
  fill(uri, {{"kept", "1"}});
  const auto db = dir / "s.db";
  const std::string before = file_bytes(db);
  ASSERT_FALSE(before.empty());
  struct Case {
    const char* name;
    std::string content;
    const char* expect;
  };
  for (const Case& c : {
           Case{"bad.jsonl", "{\"key\":\"a\",\"value\":\"1\"}\n\n{\"key\":\"b\",\"value\":2}\n",
                "line 3: \"value\" must be a string"},
           Case{"bad2.jsonl", "{\"key\":\"a\",\"value\":\"1\"}\n{\"key\":\"b\"\n",
                "line 2: not JSON"},
           Case{"bad3.jsonl", "{\"key_b64\":\"!!\",\"value\":\"1\"}\n",
                "line 1: \"key_b64\" is not valid base64"},
           Case{"bad.csv", "key,value\na,1\nb,\"2\nc,3\n",
                "line 3: a quoted field is never closed"},
           Case{"bad2.csv", "key,value\na,1\nb,2,3\n", "line 3: expected 2 fields"},
       }) {
    const auto path = dir / c.name;
    std::ofstream(path, std::ios::binary) << c.content;
    const auto r = run({"import", uri, path.string(), "--batch", "1"});
    EXPECT_EQ(r.code, 3) << c.name;
    EXPECT_NE(r.err.find(c.expect), std::string::npos) << c.name << ": " << r.err;
    EXPECT_NE(r.err.find(c.name), std::string::npos) << "names the input: " << r.err;
    EXPECT_EQ(file_bytes(db), before) << c.name;
  }
  EXPECT_EQ(entries_of(uri), (Entries{{"kept", "1"}}));
  const auto unknown = run({"import", uri, (dir / "data.txt").string()});
  EXPECT_EQ(unknown.code, 2) << "no format from the name: a usage error";
  EXPECT_NE(unknown.err.find("--format"), std::string::npos) << unknown.err;
}

// Reading commands open read-only: a store a running map holds answers them,
// and is not changed; writing commands fail naming the holder.
TEST_F(Pmapctl, ReadingCommandsWorkBesideARunningMapAndWritingOnesNameItsHolder) {
  const std::string uri = sqlite(), csv_uri = csv();
  Map held{uri};
  held.insert("k", "v").get();
  Map held_csv{csv_uri};
  held_csv.insert("c", "1").get();
  for (const std::string& u : {uri, csv_uri}) {
    EXPECT_EQ(run({"count", u}).out, "1\n") << u;
    EXPECT_EQ(run({"list", u, "--keys-only"}).code, 0) << u;
    EXPECT_EQ(run({"export", u, "-"}).code, 0) << u;
    EXPECT_EQ(run({"stats", u}).code, 0) << u;
    const auto set = run({"set", u, "k", "x"});
    EXPECT_EQ(set.code, 3) << u;
    EXPECT_NE(set.err.find("process " + std::to_string(getpid())), std::string::npos) << set.err;
  }
  EXPECT_EQ(run({"get", uri, "k"}).out, "v");
  EXPECT_EQ(held.get("k"), "v");
}

TEST_F(Pmapctl, ReadingNeverCreatesOrChangesAStore) {
  const auto missing = run({"count", sqlite("missing.db")});
  EXPECT_EQ(missing.code, 3);
  EXPECT_FALSE(std::filesystem::exists(dir / "missing.db"));
  EXPECT_EQ(run({"list", csv("missing.csv")}).code, 3);
  EXPECT_FALSE(std::filesystem::exists(dir / "missing.csv"));
  // A CSV file that is not compact (a torn batch at its end, rows out of
  // order) is read as it is, and left so.
  const auto path = dir / "loose.csv";
  const std::string loose = "key,value\nb,2\na,1\n#pmap-batch 99\nc,";
  std::ofstream(path, std::ios::binary) << loose;
  EXPECT_EQ(run({"list", "csv:" + path.string(), "--format", "csv"}).out, "key,value\na,1\nb,2\n");
  EXPECT_EQ(file_bytes(path), loose);
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), {}), 1)
      << "no lock file, no copy";
}

TEST_F(Pmapctl, BadCommandLinesAreExit2AndBrokenStoresExit3) {
  EXPECT_EQ(run({}).code, 2);
  const auto unknown = run({"frobnicate"});
  EXPECT_EQ(unknown.code, 2);
  EXPECT_NE(unknown.err.find("unknown command \"frobnicate\"; the commands are get, set"),
            std::string::npos)
      << unknown.err;
  EXPECT_EQ(run({"get", sqlite()}).code, 2) << "KEY missing";
  EXPECT_EQ(run({"list", sqlite(), "--limit", "many"}).code, 2);
  const auto scheme = run({"count", "nosuch:thing"});
  EXPECT_EQ(scheme.code, 3);
  EXPECT_NE(scheme.err.find("known schemes"), std::string::npos) << scheme.err;
  const auto not_db = dir / "not.db";
  std::ofstream(not_db) << "this is not a database, it is text long enough to have a header";
  const auto corrupt = run({"count", "sqlite:" + not_db.string()});
  EXPECT_EQ(corrupt.code, 3);
  EXPECT_NE(corrupt.err.find(not_db.string()), std::string::npos) << corrupt.err;
  // An export that cannot be written leaves nothing behind.
  fill(sqlite(), {{"a", "1"}});
  const auto nowhere = run({"export", sqlite(), (dir / "no/such/dir/out.csv").string()});
  EXPECT_EQ(nowhere.code, 3);
  EXPECT_FALSE(std::filesystem::exists(dir / "no"));
}

// watch prints every change another process commits to a shared store,
// until interrupted; an exclusive store has no changes to follow.
TEST_F(Pmapctl, WatchPrintsEveryChangeToASharedStoreUntilInterrupted) {
  const std::string uri = sqlite() + "?mode=shared";
  Map writer{uri};
  writer.insert("before", "1").get();
  pmapctl_test::Running watch({PMAPCTL, "watch", uri, "--prefix", "user:"});
  ASSERT_TRUE(watch.wait_for(2, "Ctrl-C stops")) << watch.err;
  EXPECT_NE(watch.err.find("(1 entries now)"), std::string::npos) << watch.err;
  // Each change is awaited before the next: a watcher may coalesce
  // changes it reads together (a clear, say, makes what came before moot).
  writer.insert("user:1", "ada\nlovelace").get();
  ASSERT_TRUE(watch.wait_for(1, "+ user:1 ada\\nlovelace\n")) << watch.out;
  writer.insert("job:1", "not shown: another prefix").get();
  pmap::Batch<std::string, std::string> batch;
  batch.insert("user:2", "bob");
  batch.erase("user:1");
  writer.apply(batch).get();
  ASSERT_TRUE(watch.wait_for(1, "- user:1\n")) << watch.out;
  ASSERT_TRUE(watch.wait_for(1, "+ user:2 bob\n")) << watch.out;
  writer.clear().get();
  ASSERT_TRUE(watch.wait_for(1, "clear\n")) << watch.out;
  EXPECT_EQ(watch.out.find("job:1"), std::string::npos) << watch.out;
  EXPECT_EQ(std::count(watch.out.begin(), watch.out.end(), '\n'), 4) << watch.out;
  EXPECT_EQ(watch.stop(SIGINT), 0);

  fill(sqlite("other.db"), {{"k", "v"}});
  const auto exclusive = run({"watch", sqlite("other.db")});
  EXPECT_EQ(exclusive.code, 3);
  EXPECT_NE(exclusive.err.find("is not a shared store"), std::string::npos) << exclusive.err;
  EXPECT_NE(exclusive.err.find("mode=shared"), std::string::npos) << exclusive.err;
  EXPECT_EQ(run({"watch", csv()}).code, 3);
}

// bench measures beside the benchmark suite's raw baseline for the scheme,
// on the same file system, and leaves the store and the directory as it
// found them.
TEST_F(Pmapctl, BenchReportsRatesBesideRawBaselinesAndLeavesTheStoreAsItWas) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {sqlite(), "raw SQLite, 1,000 upserts a transaction"},
      {csv(), "raw append, fdatasync per 1,000 lines"},
      {"memory:", "a std::unordered_map, 1 thread"}};
  for (const auto& [uri, baseline] : cases) {
    SCOPED_TRACE(uri);
    if (uri != "memory:") fill(uri, {{"mine", "1"}});
    std::vector<std::filesystem::path> files_before;
    for (const auto& f : std::filesystem::directory_iterator(dir.path()))
      files_before.push_back(f.path());
    const auto r = run({"bench", uri, "--n", "2000", "--threads", "2"});
    ASSERT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find("2000 entries of 100 bytes, 2 threads"), std::string::npos) << r.out;
    for (const std::string& row : {std::string("writes (insert, then one flush)"), baseline,
                                   std::string("reads (get, from the cache)"),
                                   std::string("a std::unordered_map, same keys")})
      EXPECT_NE(r.out.find(row), std::string::npos) << row << " in\n" << r.out;
    if (uri != "memory:") {
      EXPECT_EQ(entries_of(uri), (Entries{{"mine", "1"}}));
    }
    std::vector<std::filesystem::path> files_after;
    for (const auto& f : std::filesystem::directory_iterator(dir.path()))
      files_after.push_back(f.path());
    std::sort(files_before.begin(), files_before.end());
    std::sort(files_after.begin(), files_after.end());
    EXPECT_EQ(files_after, files_before) << "the scratch file is removed";
  }
  EXPECT_EQ(run({"bench", sqlite(), "--n", "0"}).code, 2);
}

// The progress bar: on a terminal (script(1) gives the tool a pseudo-
// terminal), not in a pipe, not with --quiet.
TEST_F(Pmapctl, TheProgressBarShowsOnATerminalOnly) {
  Entries many;
  for (int i = 0; i < 2000; ++i) many["k" + std::to_string(i)] = "v";
  fill(csv("many.csv"), many);
  const std::string input = (dir / "many.csv").string();
  const std::vector<std::string> env = {"PMAPCTL_PROGRESS_DELAY_MS=0"};
  const std::string command = std::string(PMAPCTL) + " import " + sqlite("tty.db") + " " + input;
  const auto tty = run_script(command, env);
  EXPECT_NE(tty.find("import ["), std::string::npos) << tty;
  EXPECT_NE(tty.find("2000/2000"), std::string::npos) << tty;
  const auto piped = run({"import", sqlite("pipe.db"), input}, "", env);
  EXPECT_EQ(piped.code, 0);
  EXPECT_EQ(piped.err.find("import ["), std::string::npos) << piped.err;
  const auto quiet =
      run_script(std::string(PMAPCTL) + " --quiet import " + sqlite("q.db") + " " + input, env);
  EXPECT_EQ(quiet.find("import ["), std::string::npos) << quiet;
  // compact counts bytes: the live pages copied out and back.
  const auto compacting = run_script(std::string(PMAPCTL) + " compact " + sqlite("tty.db"), env);
  EXPECT_NE(compacting.find("compact ["), std::string::npos) << compacting;
  EXPECT_NE(compacting.find("100% "), std::string::npos) << compacting;
  EXPECT_NE(compacting.find(" MB/s"), std::string::npos) << compacting;
}

#ifdef PMAP_TEST_POSTGRES
// The tables of the test server whose name begins with `stem`.
std::string pg_tables_named(const std::string& stem) {
  return pmap_test::Psql(pmap_test::postgres_conninfo())
      .one("SELECT count(*) FROM pg_tables WHERE starts_with(tablename, '" + stem + "')");
}
#endif

#ifdef PMAP_TEST_REDIS
// The keys of the test server that match `pattern`.
std::string redis_keys_matching(const std::string& pattern) {
  return pmap_test::Cli().run({"EVAL", "return #redis.call('KEYS', ARGV[1])", "0", pattern});
}
#endif

// The servers' schemes need nothing of the tool's own: the same commands,
// and reading still changes nothing (no table is created).
TEST(PmapctlServers, TheServersSchemesWorkLikeAnyOther) {
  std::vector<std::string> uris;
#ifdef PMAP_TEST_POSTGRES
  if (!pmap_test::postgres_conninfo().empty())
    uris.push_back(pmap_test::postgres_uri(pmap_test::unique_table("ctl")));
  else if (pmap_test::server_required("pg"))
    ADD_FAILURE() << "PMAP_TEST_PG is unset";
#endif
#ifdef PMAP_TEST_REDIS
  if (!pmap_test::redis_url().empty())
    uris.push_back(pmap_test::redis_uri(pmap_test::unique_table("ctl") + ":"));
  else if (pmap_test::server_required("redis"))
    ADD_FAILURE() << "PMAP_TEST_REDIS is unset";
#endif
  if (uris.empty()) GTEST_SKIP() << "no server: set PMAP_TEST_PG or PMAP_TEST_REDIS";
  for (const std::string& uri : uris) {
    SCOPED_TRACE(pmap::redact_uri(uri));
    EXPECT_EQ(run({"set", uri, "k", "-"}, std::string("\0bin\xff", 5)).code, 0);
    EXPECT_EQ(run({"get", uri, "k"}).out, std::string("\0bin\xff", 5));
    EXPECT_EQ(
        run({"import", uri, "-", "--format", "jsonl"}, "{\"key\":\"j\",\"value\":\"1\"}\n").code,
        0);
    EXPECT_EQ(run({"count", uri}).out, "2\n");
    EXPECT_EQ(run({"list", uri, "--prefix", "j", "--format", "csv"}).out, "key,value\nj,1\n");
    EXPECT_EQ(run({"del", uri, "k", "j"}).code, 0);
    EXPECT_EQ(run({"has", uri, "k"}).code, 1);
  }
  // bench beside the raw client on a scratch table or hash of the same
  // server, which it removes again (`scratch` counts them).
  const auto bench_tidies = [](const std::string& uri, const std::string& baseline,
                               const std::function<std::string()>& scratch) {
    SCOPED_TRACE(pmap::redact_uri(uri));
    const std::string before = scratch();
    const auto r = run({"bench", uri, "--n", "2000"});
    EXPECT_EQ(r.code, 0) << r.err;
    EXPECT_NE(r.out.find(baseline), std::string::npos) << r.out;
    EXPECT_EQ(scratch(), before) << "the scratch is removed";
    EXPECT_EQ(run({"count", uri}).out, "0\n");
  };
  (void)bench_tidies;  // unused with neither server built
#ifdef PMAP_TEST_POSTGRES
  if (!pmap_test::postgres_conninfo().empty())
    bench_tidies(pmap_test::postgres_uri(pmap_test::unique_table("ctl_bench")),
                 "raw libpq, pipelined, 1,000 upserts a txn",
                 [] { return pg_tables_named("pmapctl_bench_"); });
#endif
#ifdef PMAP_TEST_REDIS
  if (!pmap_test::redis_url().empty())
    bench_tidies(pmap_test::redis_uri(pmap_test::unique_table("ctl_bench") + ":"),
                 "raw hiredis, MULTI/EXEC of 1,000 HSETs",
                 [] { return redis_keys_matching("{pmapctl_bench_*"); });
#endif
#ifdef PMAP_TEST_POSTGRES
  if (!pmap_test::postgres_conninfo().empty()) {
    const std::string table = pmap_test::unique_table("ctl_absent");
    const auto r = run({"count", pmap_test::postgres_uri(table)});
    EXPECT_EQ(r.code, 3);
    EXPECT_NE(r.err.find("there is no table \"" + table + "\""), std::string::npos) << r.err;
    EXPECT_EQ(run({"set", pmap_test::postgres_uri(table), "a", "1"}).code, 0)
        << "a writer creates it";
    EXPECT_EQ(run({"count", pmap_test::postgres_uri(table)}).out, "1\n");
  }
#endif
}

}  // namespace
