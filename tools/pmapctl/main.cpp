// pmapctl: look into and repair persistent-map stores from a shell, on any
// backend pmap::open_backend knows (sqlite:, csv:, memory:, postgres://,
// redis://, and any scheme registered later).
//
// One subcommand per run, defined in entries.cpp (get set del has list
// count), transfer.cpp (export import copy verify), admin.cpp (stats
// compact), watch.cpp (watch) and bench.cpp (bench); common.hpp
// has what they share, and the exit codes.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <pmap/pmap.hpp>

#include "common.hpp"

namespace {

const char* const kFooter = R"(Stores are named by URI, as in pmap::open_backend:
  sqlite:app.db?table=kv   csv:data.csv   memory:
  postgres://user:pw@host/db?table=kv   redis://host:6379/0?prefix=app:
Reading commands (get has list count export verify stats watch) open the store read-only
(read_only=true): no lock, nothing changed, and a store a running application
holds opens too. Writing commands open it as a map would: a store another
process holds exclusively fails with the holder named.

Exit codes:
  0  done
  1  a key is absent (get, has, del), or two stores differ (verify --against)
  2  the command line is wrong
  3  the store or the input could not be read or written

Run "pmapctl COMMAND --help" for a command's options and an example.)";

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"pmapctl: look into and repair persistent-map stores", "pmapctl"};
  app.require_subcommand(1);
  app.footer(kFooter);
  app.add_flag("-q,--quiet", pmapctl::globals.quiet,
               "no progress bar and no summary line on standard error");
  app.set_version_flag("--version", "pmapctl 0.1.0");
  pmapctl::add_entry_commands(app);
  pmapctl::add_transfer_commands(app);
  pmapctl::add_admin_commands(app);
  pmapctl::add_watch_commands(app);
  pmapctl::add_bench_commands(app);
  for (CLI::App* sub : app.get_subcommands({})) sub->fallthrough();  // --quiet after the command
  // CLI11 would say only "A subcommand is required" for a misspelt one.
  if (argc > 1 && argv[1][0] != '-') {
    std::string known;
    bool found = false;
    for (const CLI::App* sub : app.get_subcommands({})) {
      found = found || sub->get_name() == argv[1];
      known += (known.empty() ? "" : ", ") + sub->get_name();
    }
    if (!found) {
      std::fprintf(stderr,
                   "pmapctl: unknown command \"%s\"; the commands are %s (pmapctl --help)\n",
                   argv[1], known.c_str());
      return pmapctl::kUsage;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);  // prints help, a version, or the error
    return code == 0 ? pmapctl::kOk : pmapctl::kUsage;
  } catch (const pmapctl::Failure& f) {
    if (!f.message.empty()) std::fprintf(stderr, "pmapctl: %s\n", f.message.c_str());
    return f.code;
  } catch (const pmap::Error& e) {
    std::fprintf(stderr, "pmapctl: %s\n", e.what());
    return pmapctl::kFailed;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "pmapctl: %s\n", e.what());
    return pmapctl::kFailed;
  }
  if (std::fflush(stdout) != 0) {
    std::fprintf(stderr, "pmapctl: cannot write to standard output\n");
    return pmapctl::kFailed;
  }
  return pmapctl::kOk;
}
