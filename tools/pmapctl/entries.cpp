// pmapctl get, set, del, has, list, count: one entry, or a look at many.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <array>
#include <cstdio>
#include <memory>

#include "common.hpp"
#include "formats.hpp"

namespace pmapctl {
namespace {

// Writes bytes to stdout. Errors: Failure kFailed (a closed pipe, a full disk).
void put_out(std::string_view bytes) {
  if (std::fwrite(bytes.data(), 1, bytes.size(), stdout) != bytes.size())
    throw Failure{kFailed, "cannot write to standard output"};
}

void get(const std::string& uri, const std::string& key) {
  const auto store = open_for_reading(uri);
  const auto value = store->get(key);
  if (!value) throw Failure{kNotFound, "no key \"" + escaped(key) + "\" in " + store->describe()};
  put_out(*value);
  // The exact bytes, so that `pmapctl get ... > file` is binary-safe; a
  // line end only for a person at a terminal.
  if (::isatty(STDOUT_FILENO) == 1) put_out("\n");
}

void set(const std::string& uri, const std::string& key, const std::string& value) {
  const std::string bytes = value == "-" ? read_input("-") : value;
  const auto store = open_for_writing(uri);
  store->write(std::vector<pmap::Write>{{pmap::Write::Op::put, key, bytes}});
}

void del(const std::string& uri, const std::vector<std::string>& keys) {
  const auto store = open_for_writing(uri);
  std::vector<pmap::Write> batch;
  std::string missing;
  for (const std::string& key : keys) {
    if (store->get(key))
      batch.push_back({pmap::Write::Op::erase, key, {}});
    else
      missing += (missing.empty() ? "\"" : ", \"") + escaped(key) + "\"";
  }
  if (!batch.empty()) store->write(batch);  // all of them at once, or none
  if (!missing.empty())
    throw Failure{kNotFound, "no key " + missing + " in " + store->describe() +
                                 (batch.empty() ? "" : " (the others were deleted)")};
}

void has(const std::string& uri, const std::string& key) {
  if (!open_for_reading(uri)->get(key)) throw Failure{kNotFound, ""};
}

struct ListOptions {
  std::string uri, prefix, format = "table";
  std::uint64_t limit = 0;
  bool keys_only = false;
};

// The table format: keys padded to the widest of every 1,000 rows.
class Table {
 public:
  explicit Table(bool keys_only) : keys_only_(keys_only) {}
  void add(std::string_view key, std::string_view value) {
    rows_.emplace_back(escaped(key), keys_only_ ? std::string() : escaped(value));
    if (rows_.size() == 1000) flush();
  }
  void flush() {
    std::size_t width = 0;
    for (const auto& row : rows_) width = std::max(width, row.first.size());
    std::string out;
    for (const auto& [key, value] : rows_) {
      out += key;
      if (!keys_only_) out += std::string(width - key.size() + 2, ' ') + value;
      out.push_back('\n');
    }
    rows_.clear();
    put_out(out);
  }

 private:
  bool keys_only_;
  std::vector<std::pair<std::string, std::string>> rows_;
};

void list(const ListOptions& o) {
  const auto format = format_named(o.format);
  if (!format) throw Failure{kUsage, "--format " + o.format + ": expected table, csv or jsonl"};
  const auto store = open_for_reading(o.uri);
  std::optional<Table> table;
  if (format == Format::table) table.emplace(o.keys_only);
  if (format == Format::csv) put_out(o.keys_only ? "key\n" : "key,value\n");
  std::uint64_t shown = 0;
  std::string out;
  scan_until(*store, [&](std::string_view key, std::string_view value) {
    if (key.substr(0, o.prefix.size()) != o.prefix) return true;
    const auto v = o.keys_only ? std::nullopt : std::optional<std::string_view>(value);
    if (table)
      table->add(key, value);
    else if (format == Format::csv)
      append_csv_row(out, key, v);
    else
      append_jsonl(out, key, v);
    if (out.size() > (1u << 16)) put_out(std::exchange(out, {}));
    return o.limit == 0 || ++shown < o.limit;
  });
  if (table) table->flush();
  put_out(out);
}

void count(const std::string& uri) {
  put_out(std::to_string(count_entries(*open_for_reading(uri))) + "\n");
}

}  // namespace

void add_entry_commands(CLI::App& app) {
  {
    auto* cmd = app.add_subcommand("get", "Print the value stored under KEY (exit 1 if absent)");
    auto args = std::make_shared<std::pair<std::string, std::string>>();
    cmd->add_option("URI", args->first, kUriHelp)->required();
    cmd->add_option("KEY", args->second, "the key")->required();
    cmd->footer(
        "The value's bytes are printed as they are (a line end follows only on a terminal).\n"
        "Example:\n  pmapctl get sqlite:app.db user:42");
    cmd->callback([args] { get(args->first, args->second); });
  }
  {
    auto* cmd = app.add_subcommand("set", "Store VALUE under KEY");
    auto args = std::make_shared<std::array<std::string, 3>>();
    cmd->add_option("URI", (*args)[0], kUriHelp)->required();
    cmd->add_option("KEY", (*args)[1], "the key")->required();
    cmd->add_option("VALUE", (*args)[2], "the value; - reads it from standard input, byte for byte")
        ->required();
    cmd->footer(
        "Examples:\n  pmapctl set sqlite:app.db user:42 '{\"name\":\"Ada\"}'\n"
        "  pmapctl set sqlite:app.db avatar:42 - < avatar.png");
    cmd->callback([args] { set((*args)[0], (*args)[1], (*args)[2]); });
  }
  {
    auto* cmd = app.add_subcommand(
        "del", "Delete the KEYs, all in one atomic write (exit 1 if one was absent)");
    auto uri = std::make_shared<std::string>();
    auto keys = std::make_shared<std::vector<std::string>>();
    cmd->add_option("URI", *uri, kUriHelp)->required();
    cmd->add_option("KEY", *keys, "the keys")->required();
    cmd->footer("Example:\n  pmapctl del sqlite:app.db session:1 session:2");
    cmd->callback([uri, keys] { del(*uri, *keys); });
  }
  {
    auto* cmd = app.add_subcommand("has", "Exit 0 if KEY is present, 1 if absent; print nothing");
    auto args = std::make_shared<std::pair<std::string, std::string>>();
    cmd->add_option("URI", args->first, kUriHelp)->required();
    cmd->add_option("KEY", args->second, "the key")->required();
    cmd->footer("Example:\n  pmapctl has sqlite:app.db user:42 && echo present");
    cmd->callback([args] { has(args->first, args->second); });
  }
  {
    auto* cmd = app.add_subcommand("list", "Print the entries (in the store's order)");
    auto o = std::make_shared<ListOptions>();
    cmd->add_option("URI", o->uri, kUriHelp)->required();
    cmd->add_option("--prefix", o->prefix, "only keys that start with P")->option_text("P");
    cmd->add_option("--limit", o->limit, "at most N entries (the rest is not read)")
        ->option_text("N");
    cmd->add_flag("--keys-only", o->keys_only, "print the keys alone");
    cmd->add_option("--format", o->format, "table (default: escaped, for people), csv or jsonl")
        ->option_text("table|csv|jsonl");
    cmd->footer("Example:\n  pmapctl list sqlite:app.db --prefix user: --limit 10");
    cmd->callback([o] { list(*o); });
  }
  {
    auto* cmd = app.add_subcommand("count", "Print the number of entries");
    auto uri = std::make_shared<std::string>();
    cmd->add_option("URI", *uri, kUriHelp)->required();
    cmd->footer("Example:\n  pmapctl count csv:data.csv");
    cmd->callback([uri] { count(*uri); });
  }
}

}  // namespace pmapctl
