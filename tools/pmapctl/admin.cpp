// pmapctl stats: what a store holds, in numbers.
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
  Progress progress("stats", std::nullopt);
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
}

}  // namespace

void add_admin_commands(CLI::App& app) {
  auto* cmd = app.add_subcommand("stats", "Print the number of entries and their sizes");
  auto uri = std::make_shared<std::string>();
  cmd->add_option("URI", *uri, kUriHelp)->required();
  cmd->footer("Example:\n  pmapctl stats sqlite:app.db");
  cmd->callback([uri] { stats(*uri); });
}

}  // namespace pmapctl
