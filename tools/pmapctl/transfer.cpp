// pmapctl export, import, copy and verify: whole stores, to and from files
// (CSV or JSON Lines) or one another.
#include <absl/container/flat_hash_map.h>
#include <fcntl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>

#include "common.hpp"
#include "formats.hpp"

namespace pmapctl {
namespace {

struct TransferOptions {
  std::string uri, file, format;
  std::size_t batch = 10000;
};

// Output that appears whole or not at all: a file is written beside its
// final name, fsynced and renamed over it at commit(); stdout streams.
class Output {
 public:
  explicit Output(const std::string& path) : path_(path) {
    if (path == "-") return;
    temp_ = path + ".pmapctl-tmp";
    fd_ = ::open(temp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) fail("cannot create " + temp_);
  }
  ~Output() {
    if (fd_ >= 0) {
      ::close(fd_);
      ::unlink(temp_.c_str());
    }
  }
  void write(std::string_view bytes) {
    const int fd = fd_ >= 0 ? fd_ : STDOUT_FILENO;
    while (!bytes.empty()) {
      const ssize_t n = ::write(fd, bytes.data(), bytes.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) fail("cannot write " + (fd_ >= 0 ? temp_ : std::string("standard output")));
      bytes.remove_prefix(static_cast<std::size_t>(n));
    }
  }
  void commit() {
    if (fd_ < 0) return;
    if (::fsync(fd_) != 0) fail("cannot fsync " + temp_);
    ::close(std::exchange(fd_, -1));
    if (::rename(temp_.c_str(), path_.c_str()) != 0) {
      const int err = errno;
      ::unlink(temp_.c_str());
      throw Failure{kFailed, "cannot rename " + temp_ + " to " + path_ + ": " + std::strerror(err)};
    }
  }

 private:
  [[noreturn]] static void fail(const std::string& what) {
    throw Failure{kFailed, what + ": " + std::strerror(errno)};
  }
  std::string path_, temp_;
  int fd_ = -1;
};

void export_store(const TransferOptions& o) {
  const Format format = format_for(o.file, o.format, Format::csv);
  const auto store = open_for_reading(o.uri);
  Output out(o.file);
  Progress progress("export", store->count());
  std::string buffer = format == Format::csv ? "key,value\n" : "";
  std::uint64_t n = 0;
  store->scan([&](std::string_view key, std::string_view value) {
    if (format == Format::csv)
      append_csv_row(buffer, key, value);
    else
      append_jsonl(buffer, key, value);
    ++n;
    if (buffer.size() >= (1u << 20)) {
      out.write(buffer);
      buffer.clear();
    }
    progress.add(1);
  });
  out.write(buffer);
  out.commit();
  progress.finish();
  if (o.file != "-" && !globals.quiet)
    std::fprintf(stderr, "exported %llu entries to %s\n", static_cast<unsigned long long>(n),
                 o.file.c_str());
}

void import_store(const TransferOptions& o) {
  if (o.batch == 0) throw Failure{kUsage, "--batch must be at least 1"};
  const Format format = format_for(o.file, o.format, Format::csv);
  // All of the input is read and checked before the store is touched: a bad
  // line leaves the store exactly as it was.
  const auto entries = parse_entries(o.file, format);
  const auto store = open_for_writing(o.uri);
  Progress progress("import", entries.size());
  std::vector<pmap::Write> batch;
  std::size_t written = 0;
  try {
    for (std::size_t i = 0; i < entries.size(); i += o.batch) {
      batch.clear();
      for (std::size_t j = i; j < std::min(entries.size(), i + o.batch); ++j)
        batch.push_back({pmap::Write::Op::put, entries[j].first, entries[j].second});
      store->write(batch);  // one atomic batch
      written += batch.size();
      progress.add(batch.size());
    }
  } catch (const pmap::Error& e) {
    progress.finish();
    throw Failure{kFailed, std::string(e.what()) + "\n" + std::to_string(written) + " of " +
                               std::to_string(entries.size()) +
                               " entries were imported before this, in whole batches; importing "
                               "the same input again is safe (it writes the same values)"};
  }
  progress.finish();
  if (!globals.quiet)
    std::fprintf(stderr, "imported %zu entries into %s\n", entries.size(),
                 store->describe().c_str());
}

struct CopyOptions {
  std::string src, dst;
  bool force = false;
  std::size_t batch = 0;  // 0: everything in one atomic write
};

void copy_store(const CopyOptions& o) {
  const auto src = open_for_reading(o.src);
  const auto dst = open_for_writing(o.dst);
  if (!o.force) {
    bool empty = true;
    scan_until(*dst, [&](std::string_view, std::string_view) { return empty = false; });
    if (!empty)
      throw Failure{kFailed, dst->describe() +
                                 " is not empty: copy into an empty store, or add --force to "
                                 "replace what it holds"};
  }
  // --force: what DST holds is replaced, in the same atomic write as the
  // first batch, so that DST ends up a copy of SRC.
  std::vector<pmap::Write> batch;
  if (o.force) batch.push_back({pmap::Write::Op::clear, {}, {}});
  std::uint64_t copied = 0;
  bool changed = false;  // a batch was written: DST is no longer as it was
  Progress progress("copy", src->count());
  const auto write = [&] {
    dst->write(batch);  // atomic: all of the batch or none of it
    changed = true;
    const std::size_t puts = batch.size() - (batch.front().op == pmap::Write::Op::clear ? 1 : 0);
    copied += puts;
    progress.add(puts);
    batch.clear();
  };
  try {
    src->scan([&](std::string_view key, std::string_view value) {
      batch.push_back({pmap::Write::Op::put, std::string(key), std::string(value)});
      if (o.batch != 0 && batch.size() >= o.batch) write();
    });
    if (!batch.empty()) write();  // the last batch (with --force, maybe only the clear)
  } catch (const pmap::Error& e) {
    progress.finish();
    if (!changed)
      throw Failure{kFailed, std::string(e.what()) + "\nnothing was copied: " + dst->describe() +
                                 " is as it was"};
    throw Failure{kFailed, std::string(e.what()) + "\n" + dst->describe() +
                               " holds a partial copy (" + std::to_string(copied) +
                               " entries, in whole batches); finish it with: pmapctl copy " +
                               pmap::redact_uri(o.src) + " " + pmap::redact_uri(o.dst) +
                               " --force --batch " + std::to_string(o.batch)};
  }
  progress.finish();
  if (!globals.quiet)
    std::fprintf(stderr, "copied %llu entries from %s to %s\n",
                 static_cast<unsigned long long>(copied), src->describe().c_str(),
                 dst->describe().c_str());
}

// The damaged places verify prints, at most, from each backend's own check.
constexpr std::size_t kDamageShown = 20;

// What verify found damaged: each place printed as found ("damaged:
// <where>: <what>"), and at the end, if there was any, a Failure (exit 3).
class Damage {
 public:
  void add(const std::string& where_and_what) {
    std::printf("damaged: %s\n", where_and_what.c_str());
    ++count_;
  }
  // Runs f (opening or reading a store); an Errc::corrupt it throws is one
  // more damaged place (any other error ends the command, as it would
  // elsewhere). Returns whether f completed.
  template <class F>
  bool read(F f) {
    try {
      f();
      return true;
    } catch (const pmap::Error& e) {
      if (e.code() != pmap::Errc::corrupt) throw;
      add(e.what());
      return false;
    }
  }
  // Ends the command if anything was damaged.
  void end() const {
    if (count_ == 0) return;
    throw Failure{kFailed, "the store is damaged (above): restore it from a backup"};
  }

 private:
  std::size_t count_ = 0;
};

// Looks for damage as the backend can (SQLite: integrity_check; a CSV
// file's damaged lines fail its opener, all named), then reads every entry
// of uri; with against, compares the two stores entry by entry.
void verify(const std::string& uri, const std::string& against) {
  Damage damage;
  std::unique_ptr<pmap::Backend> store, other;
  damage.read([&] { store = open_for_reading(uri); });
  if (!against.empty()) damage.read([&] { other = open_for_reading(against); });
  if (!store || (!against.empty() && !other)) damage.end();
  std::optional<std::uint64_t> total = std::uint64_t{0};
  for (pmap::Backend* b : {store.get(), other.get()}) {
    if (!b) continue;
    for (const std::string& place : b->damage(kDamageShown)) damage.add(place);
    std::optional<std::uint64_t> entries;
    if (!damage.read([&] { entries = b->count(); }) || !entries || !total)
      total = std::nullopt;
    else
      *total += *entries;
  }
  Progress progress("verify", total);
  absl::flat_hash_map<std::string, std::string> entries;
  std::uint64_t n = 0;
  const bool read_whole = damage.read([&] {
    store->scan([&](std::string_view key, std::string_view value) {
      ++n;
      if (!against.empty()) entries.emplace(std::string(key), std::string(value));
      progress.add(1);
    });
  });
  if (against.empty() || !read_whole) {
    progress.finish();
    damage.end();
    std::printf("%s: %llu entries, all readable\n", store->describe().c_str(),
                static_cast<unsigned long long>(n));
    return;
  }
  std::uint64_t differ = 0, only_other = 0, shown = 0;
  const auto report = [&](const std::string& line) {
    if (++shown <= 20) std::printf("%s\n", line.c_str());
  };
  damage.read([&] {
    other->scan([&](std::string_view key, std::string_view value) {
      progress.add(1);
      const auto it = entries.find(absl::string_view(key.data(), key.size()));
      if (it == entries.end()) {
        ++only_other;
        report("only in " + other->describe() + ": \"" + escaped(key) + "\"");
        return;
      }
      if (it->second != value) {
        ++differ;
        report("differs: \"" + escaped(key) + "\"");
      }
      entries.erase(it);
    });
  });
  progress.finish();
  damage.end();  // damage in either store: a comparison would mislead
  for (const auto& [key, value] : entries)
    report("only in " + store->describe() + ": \"" + escaped(key) + "\"");
  const std::uint64_t only_this = entries.size();
  if (shown > 20) std::printf("... and %llu more\n", static_cast<unsigned long long>(shown - 20));
  if (differ + only_other + only_this == 0) {
    std::printf("%s and %s hold the same %llu entries\n", store->describe().c_str(),
                other->describe().c_str(), static_cast<unsigned long long>(n));
    return;
  }
  throw Failure{kNotFound, "the stores differ: " + std::to_string(differ) +
                               " keys with other values, " + std::to_string(only_this) +
                               " only in " + store->describe() + ", " + std::to_string(only_other) +
                               " only in " + other->describe()};
}

}  // namespace

void add_transfer_commands(CLI::App& app) {
  {
    auto* cmd =
        app.add_subcommand("export", "Write every entry to FILE (or - for standard output)");
    auto o = std::make_shared<TransferOptions>();
    cmd->add_option("URI", o->uri, kUriHelp)->required();
    cmd->add_option("FILE", o->file, "where to write; - is standard output")->required();
    cmd->add_option("--format", o->format,
                    "csv or jsonl; default: from FILE's extension (.csv, .jsonl), csv for -")
        ->option_text("csv|jsonl");
    cmd->footer(
        "A file appears whole or not at all (written beside, then renamed).\n"
        "Examples:\n  pmapctl export sqlite:app.db backup.jsonl\n"
        "  pmapctl export sqlite:app.db - --format csv | head");
    cmd->callback([o] { export_store(*o); });
  }
  {
    auto* cmd = app.add_subcommand(
        "import", "Store every entry of FILE (or - for standard input), replacing equal keys");
    auto o = std::make_shared<TransferOptions>();
    cmd->add_option("URI", o->uri, kUriHelp)->required();
    cmd->add_option("FILE", o->file, "what to read; - is standard input")->required();
    cmd->add_option("--format", o->format,
                    "csv or jsonl; default: from FILE's extension (.csv, .jsonl), csv for -")
        ->option_text("csv|jsonl");
    cmd->add_option("--batch", o->batch, "entries per atomic write (default 10000)")
        ->option_text("N");
    cmd->footer(
        "The whole input is checked first: a malformed line stops the import, named as\n"
        "\"line N\", before anything is written.\n"
        "Example:\n  pmapctl import sqlite:app.db backup.jsonl");
    cmd->callback([o] { import_store(*o); });
  }
  {
    auto* cmd =
        app.add_subcommand("copy", "Copy every entry of SRC_URI into DST_URI (another backend)");
    auto o = std::make_shared<CopyOptions>();
    cmd->add_option("SRC_URI", o->src, "the store to copy (opened read-only)")->required();
    cmd->add_option("DST_URI", o->dst, "where to: an empty store, unless --force")->required();
    cmd->add_flag("--force", o->force,
                  "copy into a store that is not empty, replacing all it holds (in the same "
                  "atomic write as the first batch)");
    cmd->add_option("--batch", o->batch,
                    "entries per atomic write; default: all in one, so that a failure leaves "
                    "DST_URI as it was (give N for a store larger than memory)")
        ->option_text("N");
    cmd->footer(
        "Then prove both hold the same entries with pmapctl verify SRC_URI --against DST_URI.\n"
        "Example:\n  pmapctl copy csv:data.csv sqlite:app.db\n"
        "  pmapctl copy sqlite:app.db 'postgres://app@db.example/app?table=kv'");
    cmd->callback([o] { copy_store(*o); });
  }
  {
    auto* cmd = app.add_subcommand(
        "verify",
        "Look for damage and read every entry (exit 3 naming each damaged place); with "
        "--against, compare");
    auto uri = std::make_shared<std::string>();
    auto against = std::make_shared<std::string>();
    cmd->add_option("URI", *uri, kUriHelp)->required();
    cmd->add_option("--against", *against,
                    "a second store that must hold the same entries (exit 1 naming those that "
                    "differ); URI's entries are held in memory meanwhile")
        ->option_text("URI2");
    cmd->footer(
        "Each damaged place is a line \"damaged: WHERE: WHAT\": for SQLite, what\n"
        "PRAGMA integrity_check finds in the whole file (the first 20); for CSV, every\n"
        "damaged line; and where reading the entries stopped.\n"
        "Example:\n  pmapctl verify sqlite:app.db\n"
        "  pmapctl verify csv:data.csv --against sqlite:app.db");
    cmd->callback([uri, against] { verify(*uri, *against); });
  }
}

}  // namespace pmapctl
