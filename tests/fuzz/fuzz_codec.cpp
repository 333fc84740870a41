// Fuzz target: every built-in codec's decode. Any bytes either decode or
// throw pmap::Error (Errc::codec); a decoded value encodes to bytes that
// decode to the same value.
#include <pmap/pmap.hpp>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

namespace {

template <class T>
void check(std::string_view bytes) {
  T value;
  try {
    value = pmap::Codec<T>::decode(bytes);
  } catch (const pmap::Error& e) {
    if (e.code() != pmap::Errc::codec) std::abort();
    return;
  }
  std::string again;
  pmap::Codec<T>::encode(value, again);
  const T back = pmap::Codec<T>::decode(again);
  if constexpr (std::is_floating_point_v<T>) {
    if (!(back == value || (std::isnan(back) && std::isnan(value)))) std::abort();
  } else {
    if (!(back == value)) std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  check<int>(bytes);
  check<std::int64_t>(bytes);
  check<std::uint8_t>(bytes);
  check<std::uint64_t>(bytes);
  check<double>(bytes);
  check<float>(bytes);
  check<bool>(bytes);
  check<std::string>(bytes);
  check<std::vector<std::byte>>(bytes);
  check<std::vector<std::uint8_t>>(bytes);
  // JSON. Not std::vector<int>: nlohmann::json turns a JSON float into an
  // integer with a plain static_cast, undefined when out of range (upstream
  // behaviour, found by this fuzzer; see the note in pmap/codec.hpp).
  check<std::vector<double>>(bytes);
  check<std::map<std::string, std::string>>(bytes);
  check<std::vector<std::string>>(bytes);
  check<std::map<std::string, bool>>(bytes);
  return 0;
}
