// Fuzz target: the backend URI parser. Any string either opens a backend or
// throws pmap::Error; nothing else. Runs in a private temporary directory and
// skips strings with '/' so that it can only create files there.
#include <pmap/pmap.hpp>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const bool in_temp_dir = [] {
    const auto dir = std::filesystem::temp_directory_path() / ("pmap-fuzz-uri-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir);
    std::filesystem::current_path(dir);
    return true;
  }();
  (void)in_temp_dir;
  const std::string uri(reinterpret_cast<const char*>(data), size);
  // Redaction takes any string, and redacting twice changes nothing more.
  const std::string redacted = pmap::redact_uri(uri);
  if (pmap::redact_uri(redacted) != redacted) std::abort();
  if (uri.find('/') != std::string::npos || uri.find('\0') != std::string::npos || uri.size() > 200) return 0;
  try {
    auto backend = pmap::open_backend(uri);
    if (!backend) std::abort();
    (void)backend->describe();
  } catch (const pmap::Error&) {
    // the expected outcome for most strings
  }
  // Leave no files behind for the next input to trip over.
  for (const auto& e : std::filesystem::directory_iterator(std::filesystem::current_path()))
    std::filesystem::remove_all(e.path());
  return 0;
}
