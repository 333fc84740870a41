// Fuzz target: the CSV loader. Any bytes either load, or fail with a
// pmap::Error and leave the file exactly as it was. Nothing else may happen:
// no other exception, crash, hang or sanitizer report.
#include <pmap/pmap.hpp>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

namespace {

const std::filesystem::path& work_dir() {
  static const std::filesystem::path dir = [] {
    auto d = std::filesystem::temp_directory_path() / ("pmap-fuzz-csv-" + std::to_string(getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

}  // namespace

static std::string dump(pmap::Backend& backend) {
  std::string out;
  backend.scan([&](std::string_view k, std::string_view v) {
    out.append(k).append("\x1f").append(v).append("\x1e");
  });
  return out;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto path = work_dir() / "input.csv";
  const std::string input(reinterpret_cast<const char*>(data), size);
  std::ofstream(path, std::ios::binary | std::ios::trunc) << input;
  std::string first;
  try {
    pmap::CsvBackend backend(path);
    first = dump(backend);
  } catch (const pmap::Error& e) {
    if (e.code() != pmap::Errc::corrupt) std::abort();
    if (read_file(path) != input) std::abort();  // a rejected file is left untouched
    return 0;
  }
  // What loaded must load again, identically, from the file as left at close.
  try {
    pmap::CsvBackend again(path);
    if (dump(again) != first) std::abort();
  } catch (...) {
    std::abort();
  }
  return 0;
}
