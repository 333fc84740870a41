// What pmapctl's commands share: exit codes, opening a store for reading
// or writing, reading input, output escaping, the progress bar.
//
// Every command is one function run by main() on the main thread; they
// talk to the store through pmap::Backend directly (not a PersistentMap),
// so that `get`, `has`, `count` and `list --limit` read only what they need.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <pmap/pmap.hpp>
#include <string>
#include <string_view>

namespace CLI {
class App;
}

namespace pmapctl {

// Exit codes, as `pmapctl --help` documents them.
enum Exit : int {
  kOk = 0,
  kNotFound = 1,  // a key is absent, or two stores differ
  kUsage = 2,     // the command line is wrong
  kFailed = 3,    // the store or the input could not be read or written
};

// Ends the command: main() prints message (if any) as "pmapctl: <message>"
// on stderr and exits with code.
struct Failure {
  int code;
  std::string message;
};

// The help text of every command's URI argument.
inline constexpr const char* kUriHelp =
    "the store: sqlite:FILE[?table=T], csv:FILE, postgres://..., redis://..., memory:";

// Options every command has.
struct Globals {
  bool quiet = false;  // --quiet: no progress bar
};
extern Globals globals;

// Opens the store at uri without a lock and without changing anything, by
// adding read_only=true to the URI: every built-in scheme takes it, and a
// store a running application holds opens too. A scheme registered by
// someone else that refuses the parameter (naming it) is opened as given.
std::unique_ptr<pmap::Backend> open_for_reading(const std::string& uri);

// Opens the store at uri to write it, as a map would (a store another
// process holds exclusively: Errc::locked naming the holder).
std::unique_ptr<pmap::Backend> open_for_writing(const std::string& uri);

// Calls f for every entry, in the backend's order, until f returns false:
// the rest of the store is not read.
void scan_until(pmap::Backend& backend,
                const std::function<bool(std::string_view key, std::string_view value)>& f);

// The number of entries: Backend::count() when the backend can tell, else
// counted with a scan.
std::uint64_t count_entries(pmap::Backend& backend);

// The whole content of path, or of stdin for "-", byte for byte.
std::string read_input(const std::string& path);

// s with every byte that is not printable ASCII written as an escape
// (\n, \t, \\, \xNN), for the table format and messages.
std::string escaped(std::string_view s);

// A progress bar on stderr for work that runs over a second: count, rate
// and, with a total, percentage and ETA. Shown only on a terminal and
// without --quiet; the delay is PMAPCTL_PROGRESS_DELAY_MS if set (tests).
class Progress {
 public:
  // What is counted: entries, or bytes (shown in MB).
  enum class Unit { entries, bytes };
  Progress(std::string what, std::optional<std::uint64_t> total, Unit unit = Unit::entries);
  ~Progress();
  void add(std::uint64_t n);
  // The work done so far, and the whole, as a backend reports them.
  void at(std::uint64_t done, std::uint64_t total);
  // Ends the bar's line (a no-op when none was drawn).
  void finish();

 private:
  // Draws when due: after the delay, then every 100 ms.
  void maybe_draw();
  void draw(bool last);

  std::string what_;
  std::optional<std::uint64_t> total_;
  Unit unit_;
  std::uint64_t done_ = 0;
  bool enabled_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
  std::chrono::milliseconds delay_;
};

// The command groups, one file each: each adds its subcommands to app.
void add_entry_commands(CLI::App& app);     // entries.cpp: get set del has list count
void add_transfer_commands(CLI::App& app);  // transfer.cpp: export import copy verify
void add_admin_commands(CLI::App& app);     // admin.cpp: stats compact
void add_watch_commands(CLI::App& app);     // watch.cpp: watch
void add_bench_commands(CLI::App& app);     // bench.cpp: bench

}  // namespace pmapctl
