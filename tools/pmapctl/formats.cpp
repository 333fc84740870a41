// See formats.hpp.
#include "formats.hpp"

#include <absl/strings/escaping.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <pmap/backends/csv.hpp>

#include "backends/text_util.hpp"
#include "common.hpp"

namespace pmapctl {

std::optional<Format> format_named(std::string_view name) {
  if (name == "table") return Format::table;
  if (name == "csv") return Format::csv;
  if (name == "jsonl" || name == "json" || name == "ndjson") return Format::jsonl;
  return std::nullopt;
}

Format format_for(const std::string& path, const std::string& flag, Format fallback) {
  if (!flag.empty()) {
    if (auto f = format_named(flag)) return *f;
    throw Failure{kUsage, "--format " + flag + ": expected csv or jsonl"};
  }
  if (path == "-") return fallback;
  const std::string ext = std::filesystem::path(path).extension().string();
  if (ext == ".csv") return Format::csv;
  if (ext == ".jsonl" || ext == ".ndjson" || ext == ".json") return Format::jsonl;
  throw Failure{
      kUsage, path + ": cannot tell the format from the name; add --format csv or --format jsonl"};
}

void append_csv_row(std::string& out, std::string_view key, std::optional<std::string_view> value) {
  pmap::detail::append_csv_field(out, key, /*quote_empty=*/!value.has_value());
  if (value) {
    out.push_back(',');
    pmap::detail::append_csv_field(out, *value);
  }
  out.push_back('\n');
}

namespace {

void add_field(nlohmann::ordered_json& line, const char* name, std::string_view bytes) {
  if (pmap::detail::is_plain_text(bytes))
    line[name] = std::string(bytes);
  else
    line[std::string(name) + "_b64"] =
        absl::Base64Escape(absl::string_view(bytes.data(), bytes.size()));
}

// The bytes of `name` or `name`_b64 in one JSONL object.
std::string take_field(const nlohmann::json& line, const std::string& name,
                       const std::string& where) {
  const auto plain = line.find(name);
  const auto b64 = line.find(name + "_b64");
  if ((plain == line.end()) == (b64 == line.end()))
    throw Failure{kFailed, where + ": expected one of \"" + name + "\" and \"" + name + "_b64\""};
  const auto& field = plain != line.end() ? *plain : *b64;
  if (!field.is_string())
    throw Failure{kFailed, where + ": \"" + (plain != line.end() ? name : name + "_b64") +
                               "\" must be a string"};
  if (plain != line.end()) return field.get<std::string>();
  std::string bytes;
  if (!absl::Base64Unescape(field.get<std::string>(), &bytes))
    throw Failure{kFailed, where + ": \"" + name + "_b64\" is not valid base64"};
  return bytes;
}

std::vector<std::pair<std::string, std::string>> parse_jsonl(const std::string& content,
                                                             const std::string& name) {
  std::map<std::string, std::string> entries;
  std::size_t line_no = 0;
  for (std::size_t at = 0; at < content.size();) {
    const std::size_t eol = content.find('\n', at);
    std::string_view text(content.data() + at,
                          (eol == std::string::npos ? content.size() : eol) - at);
    at = eol == std::string::npos ? content.size() : eol + 1;
    ++line_no;
    if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
    if (text.find_first_not_of(" \t") == std::string_view::npos) continue;
    const std::string where = name + " line " + std::to_string(line_no);
    nlohmann::json line;
    try {
      line = nlohmann::json::parse(text);
    } catch (const nlohmann::json::parse_error& e) {
      throw Failure{kFailed, where + ": not JSON (" + e.what() + ")"};
    }
    if (!line.is_object())
      throw Failure{kFailed, where + ": expected an object {\"key\": ..., \"value\": ...}"};
    for (const auto& [field, _] : line.items())
      if (field != "key" && field != "key_b64" && field != "value" && field != "value_b64")
        throw Failure{kFailed, where + ": unknown field \"" + field +
                                   "\" (expected key or key_b64, value or value_b64)"};
    std::string key = take_field(line, "key", where);
    entries[std::move(key)] = take_field(line, "value", where);
  }
  return {std::make_move_iterator(entries.begin()), std::make_move_iterator(entries.end())};
}

// CSV is read by the CSV backend itself (read-only), so that import takes
// exactly the grammar the backend writes; standard input goes through a
// temporary file.
std::vector<std::pair<std::string, std::string>> parse_csv(const std::string& path) {
  std::filesystem::path file = path;
  std::string temp;
  if (path == "-") {
    const std::string content = read_input("-");
    std::string name =
        (std::filesystem::temp_directory_path() / "pmapctl-stdin-XXXXXX").string();  // TMPDIR
    const int fd = ::mkstemp(name.data());
    if (fd < 0)
      throw Failure{kFailed, "cannot create a temporary file for standard input in " +
                                 std::filesystem::temp_directory_path().string()};
    temp = name;
    const bool written =
        ::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size());
    ::close(fd);
    if (!written) {
      std::filesystem::remove(temp);
      throw Failure{kFailed, "cannot copy standard input to " + temp + " (is its disk full?)"};
    }
    file = temp;
  }
  std::vector<std::pair<std::string, std::string>> entries;
  try {
    pmap::CsvBackend csv(file, pmap::CsvOptions{.read_only = true});
    csv.scan([&](std::string_view k, std::string_view v) { entries.emplace_back(k, v); });
  } catch (const pmap::Error& e) {
    if (!temp.empty()) std::filesystem::remove(temp);
    std::string message = e.what();
    // The temporary file's name means nothing to the user.
    if (!temp.empty())
      if (auto at = message.find("csv:" + temp); at != std::string::npos)
        message.replace(at, 4 + temp.size(), "standard input");
    throw Failure{kFailed, message};
  }
  if (!temp.empty()) std::filesystem::remove(temp);
  return entries;
}

}  // namespace

void append_jsonl(std::string& out, std::string_view key, std::optional<std::string_view> value) {
  nlohmann::ordered_json line = nlohmann::ordered_json::object();
  add_field(line, "key", key);
  if (value) add_field(line, "value", *value);
  out += line.dump();
  out.push_back('\n');
}

std::vector<std::pair<std::string, std::string>> parse_entries(const std::string& path,
                                                               Format format) {
  if (format == Format::csv) return parse_csv(path);
  return parse_jsonl(read_input(path), path == "-" ? "standard input" : path);
}

}  // namespace pmapctl
