// pmap/codec.hpp — how keys and values become bytes, and back.
//
// pmap::Codec<T> is the customisation point, in the manner of
// fmt::formatter<T>: specialise it for your type with two static functions,
//
//   template <> struct pmap::Codec<Point> {
//     static void encode(const Point& p, std::string& out);   // append bytes to out
//     static Point decode(std::string_view bytes);             // throw pmap::Error on bad input
//   };
//
// Built in:
//   std::string                        the bytes themselves
//   integral types                     decimal text ("42", "-7")
//   floating-point types               shortest text that round-trips ("0.1", "1e+300", "nan")
//   bool                               "true" / "false"
//   std::vector<std::byte>,
//   std::vector<std::uint8_t>          the raw bytes
//   anything nlohmann::json can        JSON text (to_json/from_json found by ADL, or
//   convert both ways                  NLOHMANN_DEFINE_TYPE_*)
//
// Text encodings keep SQLite and CSV files readable with ordinary tools.
//
// Known limit of the JSON codec: nlohmann::json converts a JSON float to an
// integer member with a plain static_cast, so a hand-edited value such as
// 1e30 in an `int` field is undefined behaviour inside nlohmann rather than an
// Errc::codec error. Keep integer fields' values in range, or write a
// from_json that checks `j.is_number_integer()`.
// decode() rejects input it cannot read completely with Errc::codec; the map
// adds the key to the message.
//
// Thread safety: codecs are stateless functions; they run on the calling
// thread (encode) and while loading (decode).
#pragma once

#include <charconv>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <vector>

#include "pmap/error.hpp"

namespace pmap {

namespace detail {
template <class>
inline constexpr bool kAlwaysFalse = false;

// A type nlohmann::json converts to and from (not the arithmetic types, which
// have their own, plainer, text form).
template <class T>
concept JsonConvertible = !std::is_arithmetic_v<T> && requires(const T& value, const nlohmann::json& j) {
  nlohmann::json(value);
  j.template get<T>();
};

// Throws Errc::codec: "cannot decode "<bytes, shortened>" as <type>: <why>".
[[noreturn]] void throw_decode_error(std::string_view type, std::string_view bytes,
                                     std::string_view why);
}  // namespace detail

// The primary template: a type with no codec. The static_assert says what to do.
template <class T, class Enable = void>
struct Codec {
  static_assert(detail::kAlwaysFalse<T>,
                "pmap::Codec<T> is not defined for this key or value type. Either give the type "
                "nlohmann::json conversions (to_json/from_json, or NLOHMANN_DEFINE_TYPE_INTRUSIVE), "
                "or specialise: template <> struct pmap::Codec<T> { static void encode(const T&, "
                "std::string& out); static T decode(std::string_view bytes); };");
};

template <>
struct Codec<std::string> {
  static void encode(const std::string& value, std::string& out) { out.append(value); }
  static std::string decode(std::string_view bytes) { return std::string(bytes); }
};

template <>
struct Codec<bool> {
  static void encode(bool value, std::string& out) { out.append(value ? "true" : "false"); }
  static bool decode(std::string_view bytes) {
    if (bytes == "true") return true;
    if (bytes == "false") return false;
    detail::throw_decode_error("bool", bytes, "expected true or false");
  }
};

// Integers and floating point: the shortest decimal text that reads back
// exactly (std::to_chars / std::from_chars).
template <class T>
  requires(std::is_arithmetic_v<T> && !std::is_same_v<T, bool>)
struct Codec<T> {
  static void encode(T value, std::string& out) {
    char buf[64];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value);
    out.append(buf, end);
  }
  static T decode(std::string_view bytes) {
    constexpr const char* kWhat = std::is_integral_v<T> ? "an integer" : "a floating-point number";
    T value{};
    auto [end, ec] = std::from_chars(bytes.data(), bytes.data() + bytes.size(), value);
    if (ec == std::errc::result_out_of_range)
      detail::throw_decode_error(kWhat, bytes, "out of range for the map's type");
    if (ec != std::errc{} || end != bytes.data() + bytes.size() || bytes.empty())
      detail::throw_decode_error(kWhat, bytes,
                                 std::is_integral_v<T> ? "expected decimal digits" : "expected a number");
    return value;
  }
};

template <>
struct Codec<std::vector<std::byte>> {
  static void encode(const std::vector<std::byte>& value, std::string& out) {
    out.append(reinterpret_cast<const char*>(value.data()), value.size());
  }
  static std::vector<std::byte> decode(std::string_view bytes) {
    const auto* p = reinterpret_cast<const std::byte*>(bytes.data());
    return std::vector<std::byte>(p, p + bytes.size());
  }
};

template <>
struct Codec<std::vector<std::uint8_t>> {
  static void encode(const std::vector<std::uint8_t>& value, std::string& out) {
    out.append(reinterpret_cast<const char*>(value.data()), value.size());
  }
  static std::vector<std::uint8_t> decode(std::string_view bytes) {
    const auto* p = reinterpret_cast<const std::uint8_t*>(bytes.data());
    return std::vector<std::uint8_t>(p, p + bytes.size());
  }
};

template <detail::JsonConvertible T>
struct Codec<T> {
  static void encode(const T& value, std::string& out) {
    try {
      out.append(nlohmann::json(value).dump());
    } catch (const nlohmann::json::exception& e) {
      throw Error(Errc::codec, std::string("cannot encode value as JSON: ") + e.what());
    }
  }
  static T decode(std::string_view bytes) {
    try {
      return nlohmann::json::parse(bytes).template get<T>();
    } catch (const nlohmann::json::exception& e) {
      detail::throw_decode_error("JSON", bytes, e.what());
    }
  }
};

}  // namespace pmap
