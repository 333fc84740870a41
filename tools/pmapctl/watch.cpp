// pmapctl watch: every change to a shared store, a line each, as it happens.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <cstdio>
#include <memory>

#include "common.hpp"

namespace pmapctl {
namespace {

struct WatchOptions {
  std::string uri, prefix;
};

void watch(const WatchOptions& o) {
  // SIGINT, SIGTERM and SIGHUP end the watch: blocked here, before the map
  // starts its threads (which inherit the mask), and taken by sigwait below.
  sigset_t stop;
  sigemptyset(&stop);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&stop, sig);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  auto backend = open_for_reading(o.uri);
  if (!backend->shared())
    throw Failure{kFailed,
                  backend->describe() +
                      " is not a shared store, so it keeps no record of changes to follow (only "
                      "the one map that holds it changes it): watch a shared one — "
                      "sqlite:FILE?mode=shared, postgres://..., redis://..."};
  const std::string where = backend->describe();
  pmap::PersistentMap<std::string, std::string> map{std::move(backend)};
  // Calls for one subscription never overlap: the lines need no lock.
  auto subscription = map.watch([&](const pmap::Change<std::string, std::string>& c) {
    std::string line;
    if (c.kind == pmap::ChangeKind::clear) {
      line = "clear\n";
    } else if (c.key.compare(0, o.prefix.size(), o.prefix) != 0) {
      return;
    } else if (c.kind == pmap::ChangeKind::put) {
      line = "+ " + escaped(c.key) + " " + escaped(*c.value) + "\n";
    } else {
      line = "- " + escaped(c.key) + "\n";
    }
    std::fwrite(line.data(), 1, line.size(), stdout);
    std::fflush(stdout);
  });
  if (!globals.quiet)
    std::fprintf(stderr, "watching %s (%zu entries now); Ctrl-C stops\n", where.c_str(),
                 map.size());
  int sig = 0;
  sigwait(&stop, &sig);
}

}  // namespace

void add_watch_commands(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "watch", "Print every change to a shared store as it happens, until interrupted");
  auto o = std::make_shared<WatchOptions>();
  cmd->add_option("URI", o->uri, kUriHelp)->required();
  cmd->add_option("--prefix", o->prefix, "only keys that start with P (a clear is always shown)")
      ->option_text("P");
  cmd->footer(
      "Lines: \"+ KEY VALUE\" (a put), \"- KEY\" (an erase), \"clear\"; bytes that are not\n"
      "printable are escaped (\\n, \\xNN). Needs a shared store: sqlite:FILE?mode=shared,\n"
      "postgres://..., redis://...\n"
      "Example:\n  pmapctl watch 'sqlite:app.db?mode=shared' --prefix session:");
  cmd->callback([o] { watch(*o); });
}

}  // namespace pmapctl
