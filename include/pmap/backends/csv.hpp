// pmap/backends/csv.hpp — a human-readable CSV file.
//
// At rest (after open and close) the file is a plain RFC 4180 CSV with the
// header "key,value" and one row per key, sorted by key bytes, editable by
// hand or by any CSV tool. Between compactions each write() appends its batch
// as one framed record and fsyncs, so a write costs in proportion to the
// batch; when dead rows outweigh live ones the file is compacted (written to a
// temporary file, fsynced, renamed over). The grammar is in docs/formats.md.
//
// Loading accepts any two-column file with that header (the last row for a
// key wins), CRLF or LF line endings, and a UTF-8 byte-order mark. A crash at
// any instant leaves the last committed state loadable: an incomplete batch at
// the end of the file is ignored (and removed by the next compaction). A
// malformed file is rejected with Errc::corrupt naming the file and line, and
// is never modified.
//
// A failed append (disk full, a size limit) is cut back off the file, so the
// next one does not follow garbage; if even that fails, the next write cuts
// it first. A read-only file is refused at open, before a compaction could
// replace it. Before each append the backend checks that the path still
// names its file, at the length it left it: a file another program deleted,
// moved, replaced (Errc::io) or changed (Errc::corrupt) gets no more writes,
// and is not compacted over at close.
//
// Compaction is an optimisation and never makes the store unopenable: when
// it cannot run (no room for the copy, a size limit, a read-only directory),
// the store opens and works from the file as it is, and the skipped
// compaction is reported once through report_to() — a map's
// Options::on_error — until one runs again. clear() cuts the file back to
// its header in place, which needs no free space.
//
// The backend keeps a copy of the entries in memory (for get() and
// compaction): CSV is for data that comfortably fits twice in RAM.
//
// Locking: an exclusive advisory lock on "<file>.pmap-lock" (and on the
// file) for the backend's life; a second opener gets Errc::locked naming the
// holder's pid. Where no lock file can be created (a read-only directory),
// the file alone is locked, and it is not compacted. A read-only opener
// (CsvOptions::read_only) takes no lock and reads the file as it is.
//
// URI: csv:PATH[?read_only=true] (a '?' in PATH starts the query).
//
// Thread safety: one thread at a time (the map's writer).
#pragma once

#include <filesystem>
#include <memory>

#include "pmap/backend.hpp"

namespace pmap {

struct CsvOptions {
  // Open for reading only: no lock (a store a running map holds opens too),
  // nothing created, compacted or written; the entries are the file's as it
  // was at open. write() and commit() throw Errc::invalid_argument, and a
  // missing file is Errc::io. URI: csv:PATH?read_only=true.
  bool read_only = false;
};

class CsvBackend final : public Backend {
 public:
  explicit CsvBackend(std::filesystem::path path, CsvOptions options = {});
  CsvBackend(CsvBackend&&) noexcept;
  CsvBackend& operator=(CsvBackend&&) noexcept;
  ~CsvBackend() override;

  void scan(ScanSink sink) override;
  std::optional<std::string> get(std::string_view key) override;
  void write(std::span<const Write> batch) override;
  void flush() override;
  std::string describe() const override;
  void report_to(std::function<void(const Error&)> report) override;
  // For tools: the entries held, the file's bytes, its live rows and dead
  // lines; compact() rewrites the file (as after a write that left more
  // dead lines than live rows), throwing when it cannot; it reports no
  // progress (the file is one write of what memory holds).
  std::optional<std::uint64_t> count() override;
  std::optional<std::uint64_t> bytes() override;
  std::vector<std::pair<std::string, std::string>> details() override;
  bool compact(const CompactProgress& progress) override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace pmap
