// Every C++ sample in the README is taken from a compiled example, verbatim.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(Readme, EveryCppSampleComesFromACompiledExample) {
  const std::filesystem::path root = PMAP_SOURCE_DIR;
  const std::string readme = slurp(root / "README.md");
  ASSERT_FALSE(readme.empty());
  std::string examples;
  for (const auto& e : std::filesystem::directory_iterator(root / "examples"))
    if (e.path().extension() == ".cpp") examples += slurp(e.path()) + "\n";
  int samples = 0;
  for (std::size_t pos = 0; (pos = readme.find("```cpp\n", pos)) != std::string::npos;) {
    const std::size_t start = pos + 7;
    const std::size_t end = readme.find("```", start);
    ASSERT_NE(end, std::string::npos);
    const std::string sample = readme.substr(start, end - start);
    EXPECT_NE(examples.find(sample), std::string::npos) << "README sample not found in examples/:\n" << sample;
    ++samples;
    pos = end + 3;
  }
  EXPECT_GE(samples, 5);
}

}  // namespace
