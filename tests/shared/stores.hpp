// The shared backends a test written once runs on: SQLite with
// mode=shared, and PostgreSQL and Redis when their components are built
// (the tests skip without a server: PMAP_TEST_PG, PMAP_TEST_REDIS). Derive a fixture from StoreTest
// and instantiate it over shared_stores():
//
//   class MySuite : public pmap_test::StoreTest {};
//   INSTANTIATE_TEST_SUITE_P(Stores, MySuite, ::testing::ValuesIn(pmap_test::shared_stores()),
//                            pmap_test::store_name);
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "../support/servers.hpp"
#include "../support/test_backend.hpp"

namespace pmap_test {

struct Store {
  std::string name;
  bool postgres = false;
  bool redis = false;
};
inline void PrintTo(const Store& store, std::ostream* os) { *os << store.name; }

inline std::vector<Store> shared_stores() {
  std::vector<Store> all = {{"sqlite"}};
#ifdef PMAP_TEST_POSTGRES
  all.push_back({"postgres", true});
#endif
#ifdef PMAP_TEST_REDIS
  all.push_back({"redis", false, true});
#endif
  return all;
}

inline std::string store_name(const ::testing::TestParamInfo<Store>& info) {
  return info.param.name;
}

class StoreTest : public ::testing::TestWithParam<Store> {
 protected:
  void SetUp() override {
    if (GetParam().postgres) PMAP_NEED_POSTGRES();
    if (GetParam().redis) PMAP_NEED_REDIS();
  }
  // The URI of the store called `stem`: the same for every call in a test,
  // one no other test uses.
  std::string uri(const std::string& stem) {
    if (!GetParam().postgres && !GetParam().redis)
      return "sqlite:" + (dir_ / (stem + ".db")).string() + "?mode=shared";
    auto [it, fresh] = tables_.try_emplace(stem);
    if (fresh) it->second = unique_table(stem);
    return GetParam().postgres ? postgres_uri(it->second) : redis_uri(it->second + ":");
  }

 private:
  TempDir dir_;
  std::map<std::string, std::string> tables_;
};

}  // namespace pmap_test
