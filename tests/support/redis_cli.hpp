// A plain hiredis connection to the test server (PMAP_TEST_REDIS), for
// tests that look at it behind a backend's back. Needs hiredis (the
// pmap::redis tests link it).
#pragma once

#include <gtest/gtest.h>
#include <hiredis/hiredis.h>

#include <string>
#include <vector>

#include "servers.hpp"

namespace pmap_test {

class Cli {
 public:
  explicit Cli(int port = pmap_test::redis_host_port().second, int db = 0) {
    c_ = redisConnect(pmap_test::redis_host_port().first.c_str(), port);
    EXPECT_TRUE(c_ && !c_->err) << (c_ ? c_->errstr : "no context");
    if (db != 0) run({"SELECT", std::to_string(db)});
  }
  ~Cli() { redisFree(c_); }
  // The reply as text: a string or status as is, an integer in decimal,
  // nil as "(nil)", an error as "ERR: ...", an array's items joined by ",".
  std::string run(const std::vector<std::string>& args) {
    std::vector<const char*> argv;
    std::vector<std::size_t> lens;
    for (const auto& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    auto* r = static_cast<redisReply*>(
        redisCommandArgv(c_, static_cast<int>(args.size()), argv.data(), lens.data()));
    if (!r) return "(lost)";
    std::string out = show(r);
    freeReplyObject(r);
    return out;
  }

 private:
  static std::string show(const redisReply* r) {
    switch (r->type) {
      case REDIS_REPLY_INTEGER:
        return std::to_string(r->integer);
      case REDIS_REPLY_NIL:
        return "(nil)";
      case REDIS_REPLY_ERROR:
        return "ERR: " + std::string(r->str, r->len);
      case REDIS_REPLY_ARRAY: {
        std::string out;
        for (std::size_t i = 0; i < r->elements; ++i) out += (i ? "," : "") + show(r->element[i]);
        return out;
      }
      default:
        return std::string(r->str, r->len);
    }
  }
  redisContext* c_ = nullptr;
};

}  // namespace pmap_test
