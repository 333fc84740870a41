// pmapctl stats and compact: what a store holds and takes, and giving back
// the space it no longer needs.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <limits>
#include <memory>

#include "common.hpp"

namespace pmapctl {
namespace {

// min/mean/max of a series of sizes.
struct Sizes {
  std::uint64_t min = std::numeric_limits<std::uint64_t>::max(), max = 0, total = 0;
  void add(std::uint64_t n) {
    min = std::min(min, n);
    max = std::max(max, n);
    total += n;
  }
  std::string show(std::uint64_t count) const {
    if (count == 0) return "-";
    char buf[128];
    std::snprintf(buf, sizeof buf, "%llu total, min %llu, mean %.1f, max %llu",
                  static_cast<unsigned long long>(total), static_cast<unsigned long long>(min),
                  static_cast<double>(total) / static_cast<double>(count),
                  static_cast<unsigned long long>(max));
    return buf;
  }
};

void stats(const std::string& uri) {
  const auto store = open_for_reading(uri);
  Progress progress("stats", store->count());
  std::uint64_t entries = 0;
  Sizes keys, values;
  store->scan([&](std::string_view key, std::string_view value) {
    ++entries;
    keys.add(key.size());
    values.add(value.size());
    progress.add(1);
  });
  progress.finish();
  std::printf("store        %s\nentries      %llu\nkey bytes    %s\nvalue bytes  %s\n",
              store->describe().c_str(), static_cast<unsigned long long>(entries),
              keys.show(entries).c_str(), values.show(entries).c_str());
  if (const auto bytes = store->bytes())
    std::printf("store bytes  %llu\n", static_cast<unsigned long long>(*bytes));
  for (const auto& [name, value] : store->details())
    std::printf("%-12s %s\n", name.c_str(), value.c_str());
}

void compact(const std::string& uri) {
  // The size before, read without a lock: opening for writing may already
  // tidy the store (a CSV file is compacted at open).
  const auto before = open_for_reading(uri)->bytes();
  const auto store = open_for_writing(uri);
  Progress progress("compact", std::nullopt, Progress::Unit::bytes);
  const bool compacted =
      store->compact([&](std::uint64_t done, std::uint64_t total) { progress.at(done, total); });
  progress.finish();
  if (!compacted)
    throw Failure{kFailed, store->describe() + ": this backend has nothing to compact"};
  const auto after = store->bytes();
  if (before && after)
    std::printf("%s: %llu bytes before, %llu after\n", store->describe().c_str(),
                static_cast<unsigned long long>(*before), static_cast<unsigned long long>(*after));
  else
    std::printf("%s: compacted\n", store->describe().c_str());
}

}  // namespace

void add_admin_commands(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "stats", "Print the entries' number and sizes, and what the store takes (file, pages, WAL)");
  auto uri = std::make_shared<std::string>();
  cmd->add_option("URI", *uri, kUriHelp)->required();
  cmd->footer("Example:\n  pmapctl stats sqlite:app.db");
  cmd->callback([uri] { stats(*uri); });

  auto* compact_cmd = app.add_subcommand(
      "compact", "Give back the space erased entries left (SQLite VACUUM, a CSV rewrite)");
  auto compact_uri = std::make_shared<std::string>();
  compact_cmd->add_option("URI", *compact_uri, kUriHelp)->required();
  compact_cmd->footer(
      "Atomic: a failure leaves the store as it was. SQLite: VACUUM INTO a copy beside the\n"
      "file (FILE.pmap-compact: it needs room for one), copied back in one transaction.\n"
      "It writes, so a store another process holds exclusively fails with the holder named.\n"
      "Example:\n  pmapctl compact sqlite:app.db");
  compact_cmd->callback([compact_uri] { compact(*compact_uri); });
}

}  // namespace pmapctl
