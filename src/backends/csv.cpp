// The CSV backend. See pmap/backends/csv.hpp; the grammar is below and in
// docs/formats.md.
//
//   file    = [BOM] header *( row / blank / batch )
//   header  = "key" "," "value" EOL
//   row     = field "," field EOL            ; a put: the last row for a key wins
//   blank   = EOL                            ; ignored
//   batch   = marker body                    ; appended by write(), one per commit
//   marker  = "#pmap-batch " 1*DIGIT LF      ; the byte length of body
//   body    = *( field "," field EOL         ; put
//              / field EOL )                 ; erase (an empty key is written "")
//   field   = quoted / bare                  ; RFC 4180
//   quoted  = DQUOTE *( any byte but DQUOTE / 2DQUOTE ) DQUOTE
//   bare    = *( any byte but "," CR LF )    ; a DQUOTE inside a bare field is kept
//   EOL     = LF / CRLF
//
// A batch counts only when its marker line is complete and all its bytes are
// there: a write torn by a crash is an incomplete batch at the end of the
// file, which loading ignores. Anything else that does not parse is
// corruption, reported with its line and never rewritten. Fields that
// start with '#' are quoted when written, so no row can look like a marker.
//
// A compacted file is the header and one row per key, sorted by key bytes,
// LF line endings; it is written to a temporary file, fsynced and renamed
// over the old one. Compaction runs at open (when the file is not already
// compact), at close, and after a write when dead lines (overwritten rows,
// erases, markers) outnumber live rows.

#include "pmap/backends/csv.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <map>
#include <vector>

#include "builtin.hpp"
#include "file_util.hpp"
#include "pmap/error.hpp"

namespace pmap {
namespace {

constexpr std::string_view kHeader = "key,value\n";
constexpr std::string_view kMarker = "#pmap-batch ";
constexpr std::string_view kBom = "\xEF\xBB\xBF";
// Below this many lines a file is never compacted after a write: rewriting
// a tiny file on every other write would cost more fsyncs than it saves.
constexpr std::size_t kMinLinesToCompact = 64;

bool needs_quotes(std::string_view field) {
  if (!field.empty() && field.front() == '#') return true;
  return field.find_first_of(",\"\r\n") != std::string_view::npos;
}

void append_field(std::string& out, std::string_view field, bool quote_empty = false) {
  if (!needs_quotes(field) && !(quote_empty && field.empty())) {
    out.append(field);
    return;
  }
  out.push_back('"');
  for (char c : field) {
    if (c == '"') out.push_back('"');
    out.push_back(c);
  }
  out.push_back('"');
}

struct Field {
  std::string text;
  bool quoted = false;
};

// Reads RFC 4180 records from a buffer, counting physical lines.
class Parser {
 public:
  enum class Status { record, end, unterminated_quote, bad_after_quote, bare_cr };

  Parser(std::string_view data, std::size_t first_line) : data_(data), line_(first_line) {}

  // Parses the record at the cursor. `terminated` tells whether it ended
  // with an EOL (false: at the end of the data).
  Status next(std::vector<Field>& fields, bool& terminated) {
    fields.clear();
    terminated = false;
    if (pos_ >= data_.size()) return Status::end;
    record_line_ = line_;
    for (;;) {
      Field field;
      if (pos_ < data_.size() && data_[pos_] == '"') {
        field.quoted = true;
        ++pos_;
        for (;;) {
          if (pos_ >= data_.size()) return Status::unterminated_quote;
          const char c = data_[pos_++];
          if (c == '"') {
            if (pos_ < data_.size() && data_[pos_] == '"') {
              field.text.push_back('"');
              ++pos_;
              continue;
            }
            break;
          }
          if (c == '\n') ++line_;
          field.text.push_back(c);
        }
        if (pos_ < data_.size() && data_[pos_] != ',' && data_[pos_] != '\n' && data_[pos_] != '\r')
          return Status::bad_after_quote;
      } else {
        const std::size_t start = pos_;
        while (pos_ < data_.size() && data_[pos_] != ',' && data_[pos_] != '\n' &&
               data_[pos_] != '\r')
          ++pos_;
        field.text.assign(data_.substr(start, pos_ - start));
      }
      fields.push_back(std::move(field));
      if (pos_ >= data_.size()) return Status::record;
      const char c = data_[pos_];
      if (c == ',') {
        ++pos_;
        continue;
      }
      if (c == '\r') {
        if (pos_ + 1 >= data_.size() || data_[pos_ + 1] != '\n') return Status::bare_cr;
        ++pos_;
      }
      ++pos_;  // the LF
      ++line_;
      terminated = true;
      return Status::record;
    }
  }

  std::size_t pos() const noexcept { return pos_; }
  void seek(std::size_t pos, std::size_t line) noexcept {
    pos_ = pos;
    line_ = line;
  }
  std::size_t line() const noexcept { return line_; }
  std::size_t record_line() const noexcept { return record_line_; }

 private:
  std::string_view data_;
  std::size_t pos_ = 0;
  std::size_t line_;
  std::size_t record_line_ = 0;
};

const char* describe_status(Parser::Status s) {
  switch (s) {
    case Parser::Status::unterminated_quote:
      return "a quoted field is never closed";
    case Parser::Status::bad_after_quote:
      return "a closing quote must be followed by a comma or the end of the line (write a quote "
             "inside a quoted field as \"\")";
    case Parser::Status::bare_cr:
      return "a carriage return outside quotes that is not before a "
             "line feed";
    default:
      return "malformed";
  }
}

}  // namespace

struct CsvBackend::Impl {
  std::filesystem::path path;
  std::string where;
  detail::FileLock lock;
  detail::FileWatch watch{path};
  std::map<std::string, std::string, std::less<>> entries;  // the committed state
  std::size_t lines = 0;      // data lines in the file: rows, batch markers, batch lines
  int fd = -1;                // the file, open for appending
  off_t size = 0;             // bytes in the file (all committed)
  std::string pending_error;  // a compaction after a committed write failed: told by flush()

  Impl(std::filesystem::path p, std::string w, detail::FileLock l)
      : path(std::move(p)), where(std::move(w)), lock(std::move(l)) {}
  ~Impl() {
    if (fd >= 0) {
      try {
        // At rest the file is compact; but never recreate or overwrite a
        // file another program deleted, replaced or changed.
        if (lines != entries.size()) {
          watch.check(where, detail::FileWatch::Size::exact);
          rewrite();
        }
      } catch (const std::exception& e) {
        // Closing must not throw, and a destructor has nobody to tell but
        // stderr; the file is valid (committed batches) as it is.
        std::fprintf(stderr, "pmap: %s: not compacted at close (%s); the data is safe\n",
                     where.c_str(), e.what());
      }
      ::close(fd);
    }
  }

  [[noreturn]] void corrupt(std::size_t line, const std::string& why) const {
    throw Error(Errc::corrupt, where + " line " + std::to_string(line) + ": " + why +
                                   " (the file was left untouched; fix it by hand or restore "
                                   "a backup)");
  }

  // Parses the whole file into entries and counts its lines.
  void load(const std::string& content) {
    std::string_view data = content;
    if (data.substr(0, kBom.size()) == kBom) data.remove_prefix(kBom.size());
    Parser parser(data, 1);
    std::vector<Field> fields;
    bool terminated = false;
    auto status = parser.next(fields, terminated);
    if (status == Parser::Status::end) return;  // an empty file: an empty map
    if (status != Parser::Status::record) corrupt(1, describe_status(status));
    if (fields.size() != 2 || fields[0].text != "key" || fields[1].text != "value")
      corrupt(1, "expected the header key,value");

    for (;;) {
      const std::size_t at = parser.pos();
      const std::string_view rest = data.substr(at);
      if (rest.substr(0, kMarker.size()) == kMarker ||
          (rest.find('\n') == std::string_view::npos && kMarker.substr(0, rest.size()) == rest &&
           !rest.empty())) {
        if (!load_batch(data, parser)) return;  // an incomplete batch at the end: ignored
        continue;
      }
      status = parser.next(fields, terminated);
      if (status == Parser::Status::end) return;
      if (status != Parser::Status::record) corrupt(parser.record_line(), describe_status(status));
      if (fields.size() == 1 && fields[0].text.empty() && !fields[0].quoted) continue;  // blank
      if (fields.size() != 2)
        corrupt(parser.record_line(),
                "expected 2 fields (key,value), found " + std::to_string(fields.size()));
      ++lines;
      entries.insert_or_assign(std::move(fields[0].text), std::move(fields[1].text));
    }
  }

  // At a marker: applies the batch and moves past it. Returns false when
  // the batch is incomplete and ends the file (a torn append).
  bool load_batch(std::string_view data, Parser& parser) {
    const std::size_t at = parser.pos();
    const std::size_t line = parser.line();
    const std::size_t eol = data.find('\n', at);
    if (eol == std::string_view::npos) {
      // A marker line cut short: only digits may follow the marker text.
      const std::string_view tail = data.substr(at);
      for (std::size_t i = std::min(tail.size(), kMarker.size()); i < tail.size(); ++i)
        if (tail[i] < '0' || tail[i] > '9') corrupt(line, "a malformed batch marker");
      return false;
    }
    const std::string_view digits = data.substr(at + kMarker.size(), eol - at - kMarker.size());
    std::size_t length = 0;
    if (digits.empty() || digits.size() > 15) corrupt(line, "a malformed batch marker");
    for (char c : digits) {
      if (c < '0' || c > '9') corrupt(line, "a malformed batch marker");
      length = length * 10 + static_cast<std::size_t>(c - '0');
    }
    const std::size_t body_start = eol + 1;
    if (data.size() - body_start < length) return false;  // torn: the body is cut short
    const std::string_view body = data.substr(body_start, length);

    // Parse the whole body before applying any of it: a batch is all or nothing.
    Parser inner(body, line + 1);
    std::vector<Field> fields;
    bool terminated = false;
    std::vector<std::pair<std::string, std::optional<std::string>>> ops;
    for (;;) {
      const auto status = inner.next(fields, terminated);
      if (status == Parser::Status::end) break;
      if (status != Parser::Status::record) corrupt(inner.record_line(), describe_status(status));
      if (!terminated) corrupt(inner.record_line(), "a batch line without its line end");
      if (fields.size() == 2)
        ops.emplace_back(std::move(fields[0].text), std::move(fields[1].text));
      else if (fields.size() == 1 && !(fields[0].text.empty() && !fields[0].quoted))
        ops.emplace_back(std::move(fields[0].text), std::nullopt);
      else
        corrupt(inner.record_line(), "a batch line must be key,value (put) or key (erase)");
    }
    for (auto& [key, value] : ops) {
      if (value)
        entries.insert_or_assign(std::move(key), std::move(*value));
      else
        entries.erase(key);
    }
    lines += 1 + ops.size();
    parser.seek(body_start + length, inner.line());
    return true;
  }

  std::string compact_form() const {
    std::string out(kHeader);
    for (const auto& [key, value] : entries) {
      append_field(out, key);
      out.push_back(',');
      append_field(out, value);
      out.push_back('\n');
    }
    return out;
  }

  void open_for_append() {
    if (fd >= 0) ::close(fd);
    fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0) detail::throw_errno(errno, where + ": cannot open for writing");
    size = ::lseek(fd, 0, SEEK_END);
    if (size < 0) detail::throw_errno(errno, where + ": cannot seek");
    watch.seen(where);
  }

  void rewrite() {
    const std::string content = compact_form();
    detail::replace_file(path, content);
    lines = entries.size();
    open_for_append();
  }

  void compact_if_needed() {
    const std::size_t dead = lines - std::min(lines, entries.size());
    if (lines >= kMinLinesToCompact && dead > entries.size()) rewrite();
  }

  void append(std::span<const Write> batch) {
    std::string body;
    for (const Write& w : batch) {
      append_field(body, w.key, /*quote_empty=*/w.op == Write::Op::erase);
      if (w.op == Write::Op::put) {
        body.push_back(',');
        append_field(body, w.value);
      }
      body.push_back('\n');
    }
    std::string record(kMarker);
    record += std::to_string(body.size());
    record.push_back('\n');
    record += body;

    const off_t before = size;
    std::string_view rest = record;
    try {
      while (!rest.empty()) {
        const ssize_t n = ::write(fd, rest.data(), rest.size());
        if (n < 0) {
          if (errno == EINTR) continue;
          detail::throw_errno(errno, where + ": cannot append a batch");
        }
        rest.remove_prefix(static_cast<std::size_t>(n));
      }
      if (::fdatasync(fd) != 0) detail::throw_errno(errno, where + ": cannot fsync");
    } catch (...) {
      // Take the partial batch back out, so the next append does not follow
      // garbage. If even that fails, the next open ignores or rejects it.
      if (::ftruncate(fd, before) != 0) {
        ::close(fd);
        fd = -1;
      }
      throw;
    }
    size = before + static_cast<off_t>(record.size());
    watch.expect_size(size);
    lines += 1 + batch.size();
  }
};

CsvBackend::CsvBackend(std::filesystem::path path) {
  if (path.empty()) throw Error(Errc::invalid_argument, "CsvBackend: the path is empty");
  path = std::filesystem::absolute(path).lexically_normal();
  detail::check_file_path(path, "CSV file");
  const std::string where = "csv:" + path.string();
  detail::FileLock lock(path.string() + ".pmap-lock", "CSV file " + path.string());
  impl_ = std::make_unique<Impl>(path, where, std::move(lock));
  Impl& d = *impl_;

  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    d.rewrite();  // a new file: just the header
    return;
  }
  // A read-only file is refused before a compaction could replace it.
  const int probe = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (probe < 0) detail::throw_errno(errno, where + ": cannot open for writing");
  ::close(probe);
  const std::string content = detail::read_file(path);
  d.load(content);
  if (content != d.compact_form())
    d.rewrite();
  else
    d.open_for_append();
}

CsvBackend::CsvBackend(CsvBackend&&) noexcept = default;
CsvBackend& CsvBackend::operator=(CsvBackend&&) noexcept = default;
CsvBackend::~CsvBackend() = default;

void CsvBackend::scan(ScanSink sink) {
  for (const auto& [key, value] : impl_->entries) sink(key, value);
}

std::optional<std::string> CsvBackend::get(std::string_view key) {
  auto it = impl_->entries.find(key);
  if (it == impl_->entries.end()) return std::nullopt;
  return it->second;
}

void CsvBackend::write(std::span<const Write> batch) {
  Impl& d = *impl_;
  // Appending to a file another program deleted, replaced or changed would
  // lose the batch or land it after garbage.
  if (d.fd < 0)
    d.rewrite();  // an earlier failed append could not be cut off: rewrite the file
  else
    d.watch.check(d.where, detail::FileWatch::Size::exact);
  const bool clears = std::any_of(batch.begin(), batch.end(),
                                  [](const Write& w) { return w.op == Write::Op::clear; });
  if (clears) {
    // A clear rewrites the file: stage the new state, swap it in on success.
    auto staged = d.entries;
    for (const Write& w : batch) {
      switch (w.op) {
        case Write::Op::put:
          staged.insert_or_assign(w.key, w.value);
          break;
        case Write::Op::erase:
          staged.erase(w.key);
          break;
        case Write::Op::clear:
          staged.clear();
          break;
      }
    }
    staged.swap(d.entries);
    try {
      d.rewrite();
    } catch (...) {
      staged.swap(d.entries);
      throw;
    }
    return;
  }
  d.append(batch);
  for (const Write& w : batch) {
    if (w.op == Write::Op::put)
      d.entries.insert_or_assign(w.key, w.value);
    else
      d.entries.erase(w.key);
  }
  try {
    d.compact_if_needed();
  } catch (const Error& e) {
    // The batch is committed; the file is valid, only longer than it needs to be.
    d.pending_error = e.what();
  }
}

void CsvBackend::flush() {
  // Every append is already fsynced; report a compaction failure that no
  // write could (its batch had succeeded).
  Impl& d = *impl_;
  if (!d.pending_error.empty()) {
    std::string message = std::move(d.pending_error);
    d.pending_error.clear();
    throw Error(Errc::io, message + " (while compacting; the data is safe)");
  }
}

std::string CsvBackend::describe() const { return impl_ ? impl_->where : "csv:(moved-from)"; }

std::unique_ptr<Backend> detail::open_csv_uri(std::string_view rest) {
  if (rest.empty())
    throw Error(Errc::invalid_argument, "URI csv: needs a path, e.g. csv:data.csv");
  return std::make_unique<CsvBackend>(std::string(rest));
}

}  // namespace pmap
