// See common.hpp.
#include "common.hpp"

#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>

namespace pmapctl {

Globals globals;

std::unique_ptr<pmap::Backend> open_for_reading(const std::string& uri) {
  if (uri.find("read_only=") != std::string::npos) return pmap::open_backend(uri);
  const std::string read_only =
      uri + (uri.find('?') == std::string::npos ? "?" : "&") + "read_only=true";
  try {
    return pmap::open_backend(read_only);
  } catch (const pmap::Error& e) {
    // A scheme of someone else's that has no read-only mode, and says so.
    if (e.code() != pmap::Errc::invalid_argument ||
        std::string_view(e.what()).find("\"read_only\"") == std::string_view::npos)
      throw;
  }
  return pmap::open_backend(uri);
}

std::unique_ptr<pmap::Backend> open_for_writing(const std::string& uri) {
  return pmap::open_backend(uri);
}

namespace {
struct StopScan {};
}  // namespace

void scan_until(pmap::Backend& backend,
                const std::function<bool(std::string_view, std::string_view)>& f) {
  try {
    backend.scan([&](std::string_view key, std::string_view value) {
      if (!f(key, value)) throw StopScan{};
    });
  } catch (const StopScan&) {
  }
}

std::uint64_t count_entries(pmap::Backend& backend) {
  if (const auto n = backend.count()) return *n;
  std::uint64_t n = 0;
  backend.scan([&](std::string_view, std::string_view) { ++n; });
  return n;
}

std::string read_input(const std::string& path) {
  if (path == "-") {
    std::ostringstream all;
    all << std::cin.rdbuf();
    if (std::cin.bad()) throw Failure{kFailed, "cannot read standard input"};
    return std::move(all).str();
  }
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw Failure{kFailed, "cannot open " + path + " for reading: no such file, or no permission"};
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw Failure{kFailed, "cannot read " + path};
  return content;
}

std::string escaped(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\\':
        out += "\\\\";
        break;
      default:
        if (c >= 0x20 && c < 0x7f) {
          out.push_back(ch);
        } else {
          char hex[5];
          std::snprintf(hex, sizeof hex, "\\x%02x", c);
          out += hex;
        }
    }
  }
  return out;
}

// ---- Progress

Progress::Progress(std::string what, std::optional<std::uint64_t> total, Unit unit)
    : what_(std::move(what)),
      total_(total),
      unit_(unit),
      enabled_(!globals.quiet && ::isatty(STDERR_FILENO) == 1),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_),
      delay_(1000) {
  if (const char* d = std::getenv("PMAPCTL_PROGRESS_DELAY_MS"); d && *d)
    delay_ = std::chrono::milliseconds(std::strtol(d, nullptr, 10));
}

Progress::~Progress() { finish(); }

void Progress::add(std::uint64_t n) {
  done_ += n;
  maybe_draw();
}

void Progress::at(std::uint64_t done, std::uint64_t total) {
  done_ = done;
  total_ = total;
  maybe_draw();
}

void Progress::maybe_draw() {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  if (now - start_ < delay_) return;
  if (drawn_ && now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  draw(false);
}

void Progress::finish() {
  if (!drawn_) return;
  draw(true);
  std::fputc('\n', stderr);
  drawn_ = false;
  enabled_ = false;
}

void Progress::draw(bool last) {
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double rate = seconds > 0 ? static_cast<double>(done_) / seconds : 0;
  std::string line = "\r" + what_ + " ";
  char buf[128];
  // Entries as they are; bytes in MB, one decimal.
  const auto amount = [&](std::uint64_t n) {
    char out[32];
    if (unit_ == Unit::bytes)
      std::snprintf(out, sizeof out, "%.1f", static_cast<double>(n) / 1e6);
    else
      std::snprintf(out, sizeof out, "%" PRIu64, n);
    return std::string(out);
  };
  const char* unit = unit_ == Unit::bytes ? " MB" : "";
  if (total_ && *total_ > 0) {
    constexpr int kWidth = 30;
    const double part = std::min(1.0, static_cast<double>(done_) / static_cast<double>(*total_));
    const int filled = static_cast<int>(part * kWidth);
    line += "[" + std::string(static_cast<std::size_t>(filled), '#') +
            std::string(static_cast<std::size_t>(kWidth - filled), '.') + "] ";
    std::snprintf(buf, sizeof buf, "%3.0f%% ", part * 100);
    line += buf + amount(done_) + "/" + amount(*total_) + unit;
  } else {
    line += amount(done_) + unit;
  }
  std::snprintf(buf, sizeof buf, "  %s%s/s", amount(static_cast<std::uint64_t>(rate)).c_str(),
                unit);
  line += buf;
  if (total_ && !last && rate > 0 && *total_ > done_) {
    std::snprintf(buf, sizeof buf, "  ETA %.0fs",
                  static_cast<double>(*total_ - done_) / rate + 0.5);
    line += buf;
  } else if (last) {
    std::snprintf(buf, sizeof buf, "  in %.1fs", seconds);
    line += buf;
  }
  line += "\x1b[K";  // clear what a longer earlier line left
  std::fputs(line.c_str(), stderr);
  std::fflush(stderr);
  drawn_ = true;
}

}  // namespace pmapctl
