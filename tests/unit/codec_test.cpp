// Built-in codecs: exact round trips, readable text, and Errc::codec on bad input.
#include <gtest/gtest.h>
#include <pmap/pmap.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace {

template <class T>
std::string encode(const T& value) {
  std::string out;
  pmap::Codec<T>::encode(value, out);
  return out;
}

template <class T>
void expect_codec_error(std::string_view bytes) {
  try {
    (void)pmap::Codec<T>::decode(bytes);
    ADD_FAILURE() << "decoding \"" << bytes << "\" should fail";
  } catch (const pmap::Error& e) {
    EXPECT_EQ(e.code(), pmap::Errc::codec);
    EXPECT_NE(std::string(e.what()).find(std::string(bytes.substr(0, 20))), std::string::npos)
        << "the message should show the bad bytes: " << e.what();
  }
}

TEST(Codec, IntegersAreDecimalText) {
  EXPECT_EQ(encode(-42), "-42");
  EXPECT_EQ(encode(std::numeric_limits<std::int64_t>::min()), "-9223372036854775808");
  EXPECT_EQ(encode(std::numeric_limits<std::uint64_t>::max()), "18446744073709551615");
  EXPECT_EQ(pmap::Codec<int>::decode("-42"), -42);
  EXPECT_EQ(pmap::Codec<std::uint64_t>::decode("18446744073709551615"),
            std::numeric_limits<std::uint64_t>::max());
  expect_codec_error<int>("");
  expect_codec_error<int>("12x");
  expect_codec_error<int>(" 12");
  expect_codec_error<std::uint8_t>("256");
  expect_codec_error<unsigned>("-1");
}

TEST(Codec, FloatsRoundTripExactly) {
  for (double d : {0.1, -0.0, 1e300, -1e-300, 3.141592653589793, 123456789.125}) {
    const std::string text = encode(d);
    EXPECT_EQ(pmap::Codec<double>::decode(text), d) << text;
  }
  EXPECT_EQ(encode(0.1), "0.1");
  EXPECT_TRUE(std::isinf(pmap::Codec<double>::decode(encode(std::numeric_limits<double>::infinity()))));
  EXPECT_TRUE(std::isnan(pmap::Codec<double>::decode(encode(std::nan("")))));
  EXPECT_EQ(pmap::Codec<float>::decode(encode(1.1f)), 1.1f);
  expect_codec_error<double>("1.5.2");
  expect_codec_error<double>("abc");
}

TEST(Codec, BoolIsTrueOrFalse) {
  EXPECT_EQ(encode(true), "true");
  EXPECT_EQ(encode(false), "false");
  EXPECT_TRUE(pmap::Codec<bool>::decode("true"));
  EXPECT_FALSE(pmap::Codec<bool>::decode("false"));
  expect_codec_error<bool>("1");
  expect_codec_error<bool>("TRUE");
}

TEST(Codec, ByteVectorsAreRaw) {
  const std::vector<std::uint8_t> u = {0, 255, 10, 0};
  EXPECT_EQ(encode(u), std::string("\0\xff\n\0", 4));
  EXPECT_EQ(pmap::Codec<std::vector<std::uint8_t>>::decode(encode(u)), u);
  const std::vector<std::byte> b = {std::byte{0}, std::byte{0x80}};
  EXPECT_EQ(pmap::Codec<std::vector<std::byte>>::decode(encode(b)), b);
}

TEST(Codec, StringsAreTheirBytes) {
  const std::string s("with\0nul", 8);
  EXPECT_EQ(encode(s), s);
  EXPECT_EQ(pmap::Codec<std::string>::decode(s), s);
}

struct Point {
  int x = 0;
  int y = 0;
  std::string label;
  bool operator==(const Point&) const = default;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Point, x, y, label)

TEST(Codec, JsonTypesAreJsonText) {
  const Point p{1, -2, "a \"b\""};
  const std::string text = encode(p);
  EXPECT_EQ(text, R"({"label":"a \"b\"","x":1,"y":-2})");
  EXPECT_EQ(pmap::Codec<Point>::decode(text), p);
  EXPECT_EQ((pmap::Codec<std::vector<int>>::decode(encode(std::vector<int>{1, 2}))), (std::vector<int>{1, 2}));
  expect_codec_error<Point>("{\"x\":1");
  expect_codec_error<Point>("{\"x\":\"one\",\"y\":2,\"label\":\"\"}");
}

}  // namespace

// A user codec, the documented way.
struct Celsius {
  double degrees;
};
template <>
struct pmap::Codec<Celsius> {
  static void encode(const Celsius& c, std::string& out) {
    pmap::Codec<double>::encode(c.degrees, out);
    out += "C";
  }
  static Celsius decode(std::string_view bytes) {
    if (bytes.empty() || bytes.back() != 'C') throw pmap::Error(pmap::Errc::codec, "expected a trailing C");
    return Celsius{pmap::Codec<double>::decode(bytes.substr(0, bytes.size() - 1))};
  }
};

TEST(Codec, UserSpecialisationIsUsedByTheMap) {
  pmap::PersistentMap<std::string, Celsius> map{pmap::MemoryBackend()};
  map.insert("oven", Celsius{180.5}).get();
  EXPECT_EQ(map.backend().get("oven"), "180.5C");
  EXPECT_EQ(map.get("oven")->degrees, 180.5);
}
