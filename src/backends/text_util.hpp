// Text helpers the backends and pmapctl share: what counts as plain text,
// and how the CSV grammar writes a field. Not API.
#pragma once

#include <string>
#include <string_view>

namespace pmap::detail {

// Valid UTF-8 without NUL bytes. SQLite stores such keys and values as TEXT
// (the sqlite3 shell shows and matches them), anything else as a BLOB;
// pmapctl's JSON Lines write them as JSON strings, anything else in base64.
bool is_plain_text(std::string_view s);

// Appends field as the CSV grammar writes it (docs/formats.md): bare, or
// quoted with '"' doubled when it holds a comma, quote, CR or LF, or starts
// with '#' (so that no row looks like a batch marker); an empty field is
// written "" when quote_empty (an erase line), else as nothing.
void append_csv_field(std::string& out, std::string_view field, bool quote_empty = false);

}  // namespace pmap::detail
