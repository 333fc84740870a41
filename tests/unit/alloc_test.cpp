// map.get("literal") and map.contains(string_view) build no std::string: no
// allocation at all on a lookup whose value fits the small-string buffer.
// (A separate executable: it replaces the global operator new.)
#include <gtest/gtest.h>
#include <pmap/pmap.hpp>

#include <atomic>
#include <cstdlib>
#include <new>

namespace {
thread_local bool counting = false;
thread_local int allocations = 0;
}  // namespace

void* operator new(std::size_t n) {
  if (counting) ++allocations;
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

TEST(HeterogeneousLookup, LiteralAndViewLookupsDoNotAllocate) {
  pmap::PersistentMap<std::string, std::string> map{pmap::MemoryBackend()};
  const std::string key = "a key far too long for the small string buffer";
  map.insert(key, "short").get();

  counting = true;
  allocations = 0;
  const auto value = map.get("a key far too long for the small string buffer");
  const bool found = map.contains(std::string_view(key));
  const bool missing = map.contains("another key far too long for the small string buffer");
  counting = false;

  EXPECT_EQ(value, "short");
  EXPECT_TRUE(found);
  EXPECT_FALSE(missing);
  EXPECT_EQ(allocations, 0);

  // The counter works: building the key does allocate.
  counting = true;
  allocations = 0;
  const std::string built(key.c_str());
  counting = false;
  EXPECT_GT(allocations, 0);
}

TEST(HeterogeneousLookup, ConvertibleKeysWorkForNonStringMaps) {
  pmap::PersistentMap<std::int64_t, std::string> map{pmap::MemoryBackend()};
  map.insert(5, "five").get();
  EXPECT_EQ(map.get(5), "five");  // int, not std::int64_t
  EXPECT_TRUE(map.contains(5u));
  EXPECT_EQ(map.update(5, [](std::optional<std::string>& v) { *v += "!"; }).get(), "five!");
  EXPECT_EQ(map.erase(5).get(), "five!");
}
