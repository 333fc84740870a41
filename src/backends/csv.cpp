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
#include <functional>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include "builtin.hpp"
#include "file_util.hpp"
#include "pmap/error.hpp"
#include "text_util.hpp"

namespace pmap {
namespace {

constexpr std::string_view kHeader = "key,value\n";
constexpr std::string_view kMarker = "#pmap-batch ";
constexpr std::string_view kBom = "\xEF\xBB\xBF";
// Below this many lines a file is never compacted after a write: rewriting
// a tiny file on every other write would cost more fsyncs than it saves.
constexpr std::size_t kMinLinesToCompact = 64;

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
  std::optional<detail::FileLock> lock;  // none for a read-only opener
  detail::FileWatch watch{path};
  std::map<std::string, std::string, std::less<>> entries;  // the committed state
  std::size_t live_bytes = 0;                               // the bytes of entries' keys and values
  std::size_t lines = 0;       // data lines in the file: rows, batch markers, batch lines
  int fd = -1;                 // the file, open for appending (-1: to be reopened)
  off_t size = 0;              // bytes in the file (all committed)
  off_t header_end = 0;        // where the rows begin: a clear cuts the file back to it
  bool header_has_eol = true;  // whether the header line ends with a line end
  // Written before the next append: the header (the file is empty) or a line
  // end (its last line has none, as a hand-written file may end).
  std::string lead;
  bool directory_unsynced = false;  // a rename or create is not durable yet
  bool untidy = false;              // not compact, though every line is live
  bool opened = false;              // the constructor completed: closing may compact
  bool read_only = false;           // CsvOptions::read_only: never written

  // Compaction: an optimisation that may fail (see compact()).
  std::function<void(const Error&)> report;  // Backend::report_to's; until then:
  std::vector<Error> unreported;
  bool compaction_reported = false;  // since the last compaction that ran
  std::size_t retry_at = 0;          // after a failed attempt: lines before the next

  Impl(std::filesystem::path p, std::string w, std::optional<detail::FileLock> l)
      : path(std::move(p)), where(std::move(w)), lock(std::move(l)) {}
  ~Impl() {
    // At rest the file is compact; but never recreate or overwrite a file
    // another program deleted, replaced or changed.
    if (opened && fd >= 0 && (lines != entries.size() || untidy)) {
      try {
        watch.check(where, detail::FileWatch::Size::exact);
        compact("at close");
      } catch (const Error& e) {
        tell(Error(e.code(), std::string(e.what()) + " (not compacted at close)"));
      }
    }
    if (fd >= 0) ::close(fd);
    // Nobody to tell (the backend was used without a map): stderr it is.
    for (const Error& e : unreported) std::fprintf(stderr, "pmap: %s\n", e.what());
  }

  // A problem that fails no write, for Options::on_error.
  void tell(const Error& e) noexcept {
    try {
      if (report)
        report(e);
      else
        unreported.push_back(e);
    } catch (...) {
      std::fprintf(stderr, "pmap: %s\n", e.what());
    }
  }

  // A damaged place that load() found: its line, what is wrong, and where
  // reading can go on after it (an offset in the data parsed; npos: the
  // line after the parser's position).
  struct Damaged {
    std::size_t line;
    std::string why;
    std::size_t resume = std::string_view::npos;
  };
  // How many damaged lines one error names; the rest are counted.
  static constexpr std::size_t kDamageShown = 20;

  [[noreturn]] static void corrupt(std::size_t line, std::string why,
                                   std::size_t resume = std::string_view::npos) {
    throw Damaged{line, std::move(why), resume};
  }

  void put(std::string key, std::string value) {
    live_bytes += key.size() + value.size();
    auto [it, added] = entries.try_emplace(std::move(key));
    if (!added) live_bytes -= it->first.size() + it->second.size();
    it->second = std::move(value);
  }
  void remove(std::string_view key) {
    auto it = entries.find(key);
    if (it == entries.end()) return;
    live_bytes -= it->first.size() + it->second.size();
    entries.erase(it);
  }
  void remove_all() {
    entries.clear();
    live_bytes = 0;
  }

  // Parses the whole file into entries, counts its lines, and notes where
  // appends may go: after the last complete record (an incomplete batch at
  // the end, torn by a crash, is cut off before the first append).
  // Returns that length. A damaged file is Errc::corrupt naming every
  // damaged line (the first kDamageShown), read on past each; this Impl is
  // then half-loaded, and only to be destroyed (the constructor throws it
  // away before `opened` is set, so its destructor writes nothing).
  std::size_t load(const std::string& content) {
    std::string_view data = content;
    const std::size_t bom = data.substr(0, kBom.size()) == kBom ? kBom.size() : 0;
    data.remove_prefix(bom);
    try {
      return bom + parse(data, bom);
    } catch (const Damaged& first) {
      throw Error(Errc::corrupt, where + damage_report(data, first) +
                                     " (the file was left untouched; fix it by hand or restore "
                                     "a backup)");
    }
  }

  // The header, then the rest; data follows a BOM of `bom` bytes. Returns
  // the length that load() returns, less the BOM.
  std::size_t parse(std::string_view data, std::size_t bom) {
    Parser parser(data, 1);
    std::vector<Field> fields;
    bool terminated = false;
    const auto status = parser.next(fields, terminated);
    if (status == Parser::Status::end) {  // an empty file: an empty map
      lead = std::string(kHeader);
      return data.size();
    }
    if (status != Parser::Status::record) corrupt(1, describe_status(status));
    if (fields.size() != 2 || fields[0].text != "key" || fields[1].text != "value")
      corrupt(1, "expected the header key,value");
    header_end = static_cast<off_t>(bom + parser.pos());
    header_has_eol = terminated;
    return parse_rows(data, parser);
  }

  // Rows and batches from the parser's position to the end of data.
  std::size_t parse_rows(std::string_view data, Parser& parser) {
    std::vector<Field> fields;
    bool terminated = false;
    try {
      for (;;) {
        const std::size_t at = parser.pos();
        const std::string_view rest = data.substr(at);
        if (rest.substr(0, kMarker.size()) == kMarker ||
            (rest.find('\n') == std::string_view::npos && kMarker.substr(0, rest.size()) == rest &&
             !rest.empty())) {
          if (!load_batch(data, parser)) return at;  // an incomplete batch at the end
          continue;
        }
        const auto status = parser.next(fields, terminated);
        if (status == Parser::Status::end) return data.size();
        if (status != Parser::Status::record)
          corrupt(parser.record_line(), describe_status(status));
        if (!terminated) lead = "\n";  // the last line: the next append starts a new one
        if (fields.size() == 1 && fields[0].text.empty() && !fields[0].quoted) continue;  // blank
        if (fields.size() != 2)
          corrupt(parser.record_line(),
                  "expected 2 fields (key,value), found " + std::to_string(fields.size()));
        ++lines;
        put(std::move(fields[0].text), std::move(fields[1].text));
      }
    } catch (Damaged& d) {
      if (d.resume == std::string_view::npos) {  // the start of the next line
        const std::size_t pos = parser.pos();
        const std::size_t eol = data.find('\n', pos == 0 ? 0 : pos - 1);
        d.resume = eol == std::string_view::npos ? data.size() : eol + 1;
      }
      throw;
    }
  }

  // " line 5: why" for the first damaged place, and on past it the others:
  // " has 3 damaged lines: line 5: why; line 9: why; line 12: why". It
  // parses the rest into this Impl, which load()'s throw then discards.
  std::string damage_report(std::string_view data, Damaged damaged) {
    std::vector<std::string> shown{"line " + std::to_string(damaged.line) + ": " + damaged.why};
    std::size_t count = 1, offset = 0, line = 1;
    while (damaged.resume != std::string_view::npos && damaged.resume > 0 &&
           offset + damaged.resume < data.size()) {
      const std::string_view from = data.substr(offset, damaged.resume);
      line += static_cast<std::size_t>(std::count(from.begin(), from.end(), '\n'));
      offset += damaged.resume;
      const std::string_view rest = data.substr(offset);
      Parser parser(rest, line);
      try {
        parse_rows(rest, parser);
        break;
      } catch (Damaged& next) {
        damaged = std::move(next);
        if (++count <= kDamageShown)
          shown.push_back("line " + std::to_string(damaged.line) + ": " + damaged.why);
      }
    }
    if (count == 1) return " " + shown.front();
    std::string out = " has " + std::to_string(count) + " damaged lines: ";
    for (std::size_t i = 0; i < shown.size(); ++i) out += (i ? "; " : "") + shown[i];
    if (count > shown.size()) out += "; and " + std::to_string(count - shown.size()) + " more";
    return out;
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
        if (tail[i] < '0' || tail[i] > '9') corrupt(line, "a malformed batch marker", data.size());
      return false;
    }
    const std::string_view digits = data.substr(at + kMarker.size(), eol - at - kMarker.size());
    std::size_t length = 0;
    if (digits.empty() || digits.size() > 15) corrupt(line, "a malformed batch marker", eol + 1);
    for (char c : digits) {
      if (c < '0' || c > '9') corrupt(line, "a malformed batch marker", eol + 1);
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
      if (status != Parser::Status::record)
        corrupt(inner.record_line(), describe_status(status), body_start + length);
      if (!terminated)
        corrupt(inner.record_line(), "a batch line without its line end", body_start + length);
      if (fields.size() == 2)
        ops.emplace_back(std::move(fields[0].text), std::move(fields[1].text));
      else if (fields.size() == 1 && !(fields[0].text.empty() && !fields[0].quoted))
        ops.emplace_back(std::move(fields[0].text), std::nullopt);
      else
        corrupt(inner.record_line(), "a batch line must be key,value (put) or key (erase)",
                body_start + length);
    }
    for (auto& [key, value] : ops) {
      if (value)
        put(std::move(key), std::move(*value));
      else
        remove(key);
    }
    lines += 1 + ops.size();
    parser.seek(body_start + length, inner.line());
    lead.clear();  // a batch ends with its line end
    return true;
  }

  std::string compact_form() const {
    std::string out(kHeader);
    for (const auto& [key, value] : entries) {
      detail::append_csv_field(out, key);
      out.push_back(',');
      detail::append_csv_field(out, value);
      out.push_back('\n');
    }
    return out;
  }

  // Opens the file for appending and locks it beside the lock file (see
  // detail::lock_data_file), unless the lock is on the file itself.
  void open_for_append() {
    if (fd >= 0) ::close(std::exchange(fd, -1));
    const int f = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    if (f < 0) detail::throw_errno(errno, where + ": cannot open for writing");
    try {
      if (!lock->on_data_file()) detail::lock_data_file(f, "CSV file " + path.string());
      size = ::lseek(f, 0, SEEK_END);
      if (size < 0) detail::throw_errno(errno, where + ": cannot seek");
      watch.seen(where);
    } catch (...) {
      ::close(f);
      throw;
    }
    fd = f;
  }

  // Cuts the file back to `length` bytes and makes that durable; needs no
  // free space. Errors: Errc::io, the file as it was when the truncation
  // failed, cut but perhaps not durably when the fsync did.
  void cut_back(off_t length) {
    if (::ftruncate(fd, length) != 0) detail::throw_errno(errno, where + ": cannot truncate");
    size = length;
    watch.expect_size(size);
    if (::fdatasync(fd) != 0) detail::throw_errno(errno, where + ": cannot fsync");
  }

  // Replaces the file with its compact form. Errors: when the copy cannot
  // be written or renamed, with the file and this object as they were.
  void rewrite() {
    const std::string content = compact_form();
    detail::replace_file(path, content);
    adopt(content.size());
  }

  // After the compact form (of `length` bytes) was renamed over the file:
  // appends go to the new file. Errors: as open_for_append(), with fd -1
  // (prepare_write() opens it again).
  void adopt(std::size_t length) {
    lines = entries.size();
    header_end = static_cast<off_t>(kHeader.size());
    header_has_eol = true;
    lead.clear();
    untidy = false;
    size = static_cast<off_t>(length);
    directory_unsynced = true;
    if (fd >= 0) ::close(std::exchange(fd, -1));
    watch.seen(where);
    open_for_append();
    // Until the rename is durable, appends could go into a file that a
    // crash would take away with them: prepare_write() retries the sync.
    try {
      sync_directory();
    } catch (const Error&) {
    }
  }

  void sync_directory() {
    detail::sync_directory(path.parent_path());
    directory_unsynced = false;
  }

  // Compaction is an optimisation: the file is valid as it is. When it cannot
  // run — no room for the compacted copy, a size limit, a directory this
  // process may not write, a lock on the file itself — the store goes on as
  // it is (reads, and appends while they fit), the first failure is told
  // through report_to() (once, until a compaction runs), and the next chance
  // tries again: the next write that finds the file worth compacting, close,
  // the next open. An attempt that failed although the space seemed to be
  // there waits for the file to grow by a quarter first.
  // Returns whether it ran.
  bool compact(const char* when) noexcept {
    const auto skipped = [&](const std::string& why) {
      if (compaction_reported) return;
      compaction_reported = true;
      tell(Error(Errc::io, where + ": not compacted " + when + ": " + why +
                               ". The data is safe and the store works as it is (reads, and "
                               "writes while they fit); the file is only longer than it needs "
                               "to be. Compaction is tried again after writes, at close and at "
                               "the next open."));
    };
    if (lock->on_data_file()) {
      skipped("the lock file " + path.string() +
              ".pmap-lock could not be created, so the file itself is locked, and "
              "compaction would replace it; give the directory room and write permission");
      return false;
    }
    // The compacted copy is written beside the file before it replaces it.
    const unsigned long long needed = kHeader.size() + live_bytes + 3 * entries.size();
    const unsigned long long free = fd >= 0 ? detail::free_bytes(fd) : needed;
    if (free < needed) {
      skipped("its compacted copy needs about " + std::to_string(needed) + " bytes and " +
              std::to_string(free) + " are free; free some disk space");
      return false;
    }
    std::string content;
    try {
      content = compact_form();
      detail::replace_file(path, content);
    } catch (const std::exception& e) {  // pmap::Error, or std::bad_alloc building the copy
      retry_at = lines + std::max(kMinLinesToCompact, lines / 4);
      skipped(e.what());
      return false;
    }
    compaction_reported = false;
    retry_at = 0;
    adopt_or_tell(content.size());
    return true;
  }

  // adopt(), after a rename that cannot be taken back: a failure to reopen
  // the file fails no write (the next one opens it again), so it is told.
  void adopt_or_tell(std::size_t length) noexcept {
    try {
      adopt(length);
    } catch (const Error& e) {
      tell(e);
    } catch (const std::exception& e) {
      tell(Error(Errc::io, where + ": " + e.what()));
    }
  }

  void compact_if_needed() noexcept {
    const std::size_t dead = lines - std::min(lines, entries.size());
    if (lines >= kMinLinesToCompact && dead > entries.size() && lines >= retry_at)
      compact("after a write");
  }

  // Before a write: the file must still be the one the backend wrote, at
  // the length it left it (appending to a file another program deleted,
  // replaced or changed would lose the batch or land it after garbage), and
  // the last rename durable.
  void prepare_write() {
    if (fd < 0) {
      // A failed append could not be cut back off (or the file not reopened
      // after a compaction): our file, at least as long as we left it?
      watch.check(where, detail::FileWatch::Size::at_least);
      const off_t committed = size;
      open_for_append();
      cut_back(committed);
    }
    watch.check(where, detail::FileWatch::Size::exact);
    if (directory_unsynced) sync_directory();
  }

  void append(std::span<const Write> batch) {
    std::string body;
    for (const Write& w : batch) {
      detail::append_csv_field(body, w.key, /*quote_empty=*/w.op == Write::Op::erase);
      if (w.op == Write::Op::put) {
        body.push_back(',');
        detail::append_csv_field(body, w.value);
      }
      body.push_back('\n');
    }
    std::string record = lead;
    record += kMarker;
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
      // garbage. If even that fails, the next write cuts it (prepare_write).
      if (::ftruncate(fd, before) != 0) ::close(std::exchange(fd, -1));
      throw;
    }
    if (lead == kHeader) {
      header_end = static_cast<off_t>(kHeader.size());
      header_has_eol = true;
    }
    lead.clear();
    size = before + static_cast<off_t>(record.size());
    watch.expect_size(size);
    lines += 1 + batch.size();
  }
};

CsvBackend::CsvBackend(std::filesystem::path path, CsvOptions options) {
  if (path.empty()) throw Error(Errc::invalid_argument, "CsvBackend: the path is empty");
  path = std::filesystem::absolute(path).lexically_normal();
  detail::check_file_path(path, "CSV file");
  const std::string where = "csv:" + path.string();
  const std::filesystem::path tmp = path.string() + ".pmap-tmp";
  std::error_code ec;
  const bool exists = std::filesystem::exists(path, ec);
  if (options.read_only) {
    // No lock, nothing created or rewritten: the file as it is now (a
    // holder's batch torn mid-append is not there yet).
    if (!exists)
      throw Error(Errc::io, where + ": no such file (a read-only opener creates nothing)");
    impl_ = std::make_unique<Impl>(path, where, std::nullopt);
    impl_->read_only = true;
    impl_->load(detail::read_file(path));
    return;
  }
  detail::FileLock lock(path.string() + ".pmap-lock", "CSV file " + path.string(),
                        exists ? &path : nullptr);
  impl_ = std::make_unique<Impl>(path, where, std::move(lock));
  Impl& d = *impl_;
  // A compaction's copy that a crash left behind (we hold the lock: nobody
  // else is compacting): it only takes space.
  std::filesystem::remove(tmp, ec);

  if (!exists) {
    d.rewrite();  // a new file: just the header
    d.opened = true;
    return;
  }
  const std::string content = detail::read_file(path);
  const std::size_t valid = d.load(content);
  // Appends go here; a read-only file is refused before a compaction could
  // replace it.
  d.open_for_append();
  if (content != d.compact_form() && !d.compact("at open")) {
    d.untidy = true;
    if (static_cast<std::size_t>(d.size) > valid) d.cut_back(static_cast<off_t>(valid));
  }
  d.opened = true;
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
  if (d.read_only)
    throw Error(Errc::invalid_argument,
                d.where + ": opened read-only (CsvOptions::read_only); it cannot be written");
  d.prepare_write();
  const auto last_clear = std::find_if(batch.rbegin(), batch.rend(),
                                       [](const Write& w) { return w.op == Write::Op::clear; });
  if (last_clear == batch.rbegin()) {
    // Ends with a clear: the file goes back to its header, in place (a
    // truncation needs no free space, and is one step).
    if (::ftruncate(d.fd, d.header_end) != 0)
      detail::throw_errno(errno, d.where + ": cannot truncate");
    d.lead = d.header_end == 0 ? std::string(kHeader) : d.header_has_eol ? "" : "\n";
    d.remove_all();
    d.lines = 0;
    d.size = d.header_end;
    d.watch.expect_size(d.size);
    if (::fdatasync(d.fd) != 0) detail::throw_errno(errno, d.where + ": cannot fsync");
    return;
  }
  if (last_clear != batch.rend()) {
    // A clear and then more: the file is rewritten with the new state,
    // staged and swapped in on success.
    std::map<std::string, std::string, std::less<>> staged;
    staged.swap(d.entries);
    const std::size_t live_bytes = std::exchange(d.live_bytes, 0);
    for (auto w = last_clear.base(); w != batch.end(); ++w) {
      if (w->op == Write::Op::put)
        d.put(w->key, w->value);
      else
        d.remove(w->key);
    }
    std::string content;
    try {
      content = d.compact_form();
      detail::replace_file(d.path, content);
    } catch (...) {  // nothing changed
      staged.swap(d.entries);
      d.live_bytes = live_bytes;
      throw;
    }
    d.adopt_or_tell(content.size());  // committed, whatever happens now
    return;
  }
  d.append(batch);
  for (const Write& w : batch) {
    if (w.op == Write::Op::put)
      d.put(w.key, w.value);
    else
      d.remove(w.key);
  }
  d.compact_if_needed();
}

void CsvBackend::flush() {}  // every append is already fsynced

void CsvBackend::report_to(std::function<void(const Error&)> report) {
  Impl& d = *impl_;
  d.report = std::move(report);
  for (const Error& e : std::exchange(d.unreported, {})) d.tell(e);
}

std::optional<std::uint64_t> CsvBackend::count() { return impl_->entries.size(); }

std::optional<std::uint64_t> CsvBackend::bytes() {
  std::error_code ec;
  const auto n = std::filesystem::file_size(impl_->path, ec);
  return ec ? std::nullopt : std::optional<std::uint64_t>(n);
}

std::vector<std::pair<std::string, std::string>> CsvBackend::details() {
  const Impl& d = *impl_;
  std::error_code ec;
  const auto file = std::filesystem::file_size(d.path, ec);
  return {{"file bytes", ec ? "?" : std::to_string(file)},
          {"live rows", std::to_string(d.entries.size())},
          {"dead lines", std::to_string(d.lines - std::min(d.lines, d.entries.size()))}};
}

bool CsvBackend::compact(const CompactProgress& /*progress*/) {
  Impl& d = *impl_;
  if (d.read_only)
    throw Error(Errc::invalid_argument,
                d.where + ": opened read-only (CsvOptions::read_only); it cannot be compacted");
  d.prepare_write();  // still the file this backend wrote
  // compact() tells why it did not run (once); here that is the error.
  std::optional<Error> why;
  auto report = std::exchange(d.report, [&](const Error& e) { why = e; });
  d.compaction_reported = false;
  const bool ran = d.compact("on request");
  d.report = std::move(report);
  if (!ran) throw why ? *why : Error(Errc::io, d.where + ": not compacted");
  d.untidy = false;
  return true;
}

std::string CsvBackend::describe() const { return impl_ ? impl_->where : "csv:(moved-from)"; }

std::unique_ptr<Backend> detail::open_csv_uri(std::string_view rest) {
  const auto q = rest.find('?');
  const std::string path(rest.substr(0, q));
  if (path.empty()) throw Error(Errc::invalid_argument, "URI csv: needs a path, e.g. csv:data.csv");
  CsvOptions options;
  if (q != std::string_view::npos) {
    const std::string uri = "URI " + redact_uri("csv:" + std::string(rest));
    for (const auto& [name, value] : parse_query(rest.substr(q + 1))) {
      if (name != "read_only")
        throw Error(Errc::invalid_argument, uri + ": unknown parameter \"" + std::string(name) +
                                                "\" (csv: takes read_only=true|false)");
      options.read_only = parse_bool(uri, name, value);
    }
  }
  return std::make_unique<CsvBackend>(path, options);
}

}  // namespace pmap
