// The entry formats pmapctl reads and writes:
//   csv    the CSV backend's own grammar (docs/formats.md): a "key,value"
//          header, RFC 4180 fields; any bytes, quoted as needed.
//   jsonl  JSON Lines, one {"key": ..., "value": ...} object per line; a key
//          or value that is not UTF-8 text (or holds a NUL byte) is written
//          base64 as "key_b64" / "value_b64" instead.
//   table  for people: key, padding, value, non-printable bytes escaped
//          (list only).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace pmapctl {

enum class Format { table, csv, jsonl };

// "table", "csv", "jsonl" (also "json", "ndjson"); nullopt otherwise.
std::optional<Format> format_named(std::string_view name);

// --format if given, else by path's extension (.csv; .jsonl, .ndjson,
// .json), else `fallback` for "-" (stdin, stdout). Errors: Failure kUsage
// for a file whose extension says nothing, naming it.
Format format_for(const std::string& path, const std::string& flag, Format fallback);

// One output line (with its line end); value nullopt: the key alone.
void append_csv_row(std::string& out, std::string_view key, std::optional<std::string_view> value);
void append_jsonl(std::string& out, std::string_view key, std::optional<std::string_view> value);

// Every entry of an input, validated whole before anything is written.
// `name` is what messages call it ("standard input" or the path). CSV: the
// last row for a key wins, as when the CSV backend loads a file; JSONL:
// one object per line, blank lines skipped, the last line for a key wins.
// Errors: Failure kFailed naming the input and line.
std::vector<std::pair<std::string, std::string>> parse_entries(const std::string& path,
                                                               Format format);

}  // namespace pmapctl
