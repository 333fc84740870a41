// The crash loop: a helper writes a random mix of operations and reports what
// it saw committed; the test kills it with SIGKILL at a random moment, reopens
// the file, and checks every acknowledged write, that no batch is half
// applied, and that the file opens cleanly. Then again, on the same file.
// 200 kills per backend in the quick run; PMAP_LONG_TESTS=1 makes it 2,000.
#include <gtest/gtest.h>
#include <pmap/pmap.hpp>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>

#include "../support/test_backend.hpp"

namespace {

using Map = pmap::PersistentMap<std::string, std::string>;

struct Expected {
  std::map<std::string, std::optional<std::string>> keys;  // nullopt: acknowledged erase
  std::set<std::string> erasing;                            // erase begun, not acknowledged
  std::set<std::string> batches;                            // acknowledged batches, "round:bn"
  long counter = 0;
};

// Runs one helper until it has acknowledged `acks` lines (or died), kills it,
// and folds what it acknowledged into `expected`.
void one_round(const std::string& uri, int round, unsigned seed, int acks, int delay_us, Expected& expected) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const std::string r = std::to_string(round), s = std::to_string(seed);
  const pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], STDOUT_FILENO);
    close(fds[0]);
    close(fds[1]);
    execl(PMAP_CRASH_WRITER, PMAP_CRASH_WRITER, uri.c_str(), "mixed", r.c_str(), s.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  close(fds[1]);
  FILE* in = fdopen(fds[0], "r");
  char line[512];
  int seen = 0;
  bool killed = false;
  while (std::fgets(line, sizeof line, in)) {
    std::string text(line);
    if (!text.empty() && text.back() == '\n') text.pop_back();
    if (text.rfind("ready", 0) == 0) continue;
    const char kind = text[0];
    const std::string rest = text.substr(2);
    if (kind == 'I') {
      const auto sp = rest.find(' ');
      expected.keys[rest.substr(0, sp)] = rest.substr(sp + 1);
    } else if (kind == 'X') {
      expected.erasing.insert(rest);
      continue;  // not an acknowledgement
    } else if (kind == 'E') {
      expected.erasing.erase(rest);
      expected.keys[rest] = std::nullopt;
    } else if (kind == 'B') {
      expected.batches.insert(r + ":b" + rest);
    } else if (kind == 'C') {
      expected.counter = std::max(expected.counter, std::stol(rest));
    }
    if (!killed && ++seen >= acks) {
      if (delay_us > 0) usleep(static_cast<useconds_t>(delay_us));  // a random moment, not a sync
      kill(pid, SIGKILL);
      killed = true;
    }
  }
  std::fclose(in);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
      << "the helper ended on its own (exit " << (WIFEXITED(status) ? WEXITSTATUS(status) : -1) << ")";
}

void verify(const std::string& uri, const Expected& expected) {
  Map map{std::string_view(uri)};  // must open cleanly
  for (const auto& [key, value] : expected.keys) {
    if (value && expected.erasing.count(key)) continue;  // either outcome is right
    if (value)
      ASSERT_EQ(map.get(key), value) << "acknowledged insert of " << key << " lost";
    else
      ASSERT_FALSE(map.contains(key)) << "acknowledged erase of " << key << " undone";
  }
  // Every batch in the file is whole; every acknowledged batch is there.
  std::map<std::string, int> count;
  map.for_each([&](const std::string& k, const std::string&) {
    const auto slash = k.find('/');
    if (k.find(":b") != std::string::npos && slash != std::string::npos) ++count[k.substr(0, slash)];
  });
  for (const auto& [batch, n] : count) ASSERT_EQ(n, 10) << "batch " << batch << " is half applied";
  for (const auto& batch : expected.batches) ASSERT_EQ(count[batch], 10) << "acknowledged batch " << batch << " lost";
  if (expected.counter > 0) {
    ASSERT_TRUE(map.get("counter").has_value());
    ASSERT_GE(std::stol(*map.get("counter")), expected.counter) << "acknowledged update lost";
  }
}

class CrashLoop : public ::testing::TestWithParam<std::string> {};

TEST_P(CrashLoop, RandomKillsLoseNothingAcknowledgedAndNeverHalfABatch) {
  const bool long_run = std::getenv("PMAP_LONG_TESTS") && std::string(std::getenv("PMAP_LONG_TESTS")) == "1";
  const int kills = long_run ? 2000 : 200;
  pmap_test::TempDir dir;
  const std::string uri = GetParam() + ":" + (dir / ("loop." + GetParam())).string();
  Expected expected;
  std::mt19937 rng(12345);
  for (int round = 0; round < kills; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    one_round(uri, round, static_cast<unsigned>(rng()), 1 + static_cast<int>(rng() % 20),
              static_cast<int>(rng() % 3) * static_cast<int>(rng() % 1500), expected);
    if (HasFatalFailure()) return;
    // Checking after every kill is the point; a full check costs a load, so
    // every 10th round and the last check everything, the others reopen only.
    if (round % 10 == 9 || round + 1 == kills) {
      verify(uri, expected);
      if (HasFatalFailure()) return;
    } else {
      Map reopened{std::string_view(uri)};
    }
  }
  std::printf("[ crash loop ] %s: %d kills, %zu acknowledged keys, %zu acknowledged batches, counter %ld\n",
              GetParam().c_str(), kills, expected.keys.size(), expected.batches.size(), expected.counter);
}

INSTANTIATE_TEST_SUITE_P(Backends, CrashLoop, ::testing::Values("sqlite", "csv"),
                         [](const auto& info) { return info.param; });

}  // namespace
