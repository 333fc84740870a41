#include <gtest/gtest.h>
#include <pmap/pmap.hpp>
TEST(Codec, IntRoundTrip) {
  std::string out;
  pmap::Codec<int>::encode(-42, out);
  EXPECT_EQ(out, "-42");
  EXPECT_EQ(pmap::Codec<int>::decode("-42"), -42);
}
