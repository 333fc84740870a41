// Test helpers: a backend that counts, pauses and fails on command (built on
// the real MemoryBackend, the same seam production uses), a gate to hold a
// thread at a point, and temporary directories.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <pmap/pmap.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace pmap_test {

// A latch that can be waited for and opened once; also tells whether a
// thread has arrived at it.
class Gate {
 public:
  void open() {
    {
      std::lock_guard lock(mu_);
      open_ = true;
    }
    cv_.notify_all();
  }
  void wait() {
    std::unique_lock lock(mu_);
    ++arrived_;
    cv_.notify_all();
    cv_.wait(lock, [&] { return open_; });
  }
  // Blocks until n threads have arrived (or 30 s: then false).
  bool wait_arrivals(int n) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(30), [&] { return arrived_ >= n; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
  int arrived_ = 0;
};

// Shared between a test and its backend (the map owns the backend).
struct Control {
  std::atomic<int> writes{0};       // write() calls that committed
  std::atomic<int> written_ops{0};  // Write entries committed
  std::atomic<int> fail_next{0};    // fail this many upcoming write() calls
  std::atomic<int> fail_flushes{0};
  std::atomic<bool> unreadable{false};  // get() and scan() throw, as a damaged store's would
  Gate* pause_in_write = nullptr;       // if set, the next write() waits at it (once)
  std::size_t max_commit_writes = 0;    // what max_commit_writes() answers
  std::mutex mu;
};

class TestBackend final : public pmap::Backend {
 public:
  explicit TestBackend(std::shared_ptr<Control> control) : control_(std::move(control)) {}

  void scan(pmap::ScanSink sink) override {
    readable();
    inner_.scan(std::move(sink));
  }
  std::optional<std::string> get(std::string_view key) override {
    readable();
    return inner_.get(key);
  }
  void write(std::span<const pmap::Write> batch) override {
    Gate* gate = nullptr;
    {
      std::lock_guard lock(control_->mu);
      gate = std::exchange(control_->pause_in_write, nullptr);
    }
    if (gate) gate->wait();
    if (control_->fail_next.load() > 0) {
      control_->fail_next.fetch_sub(1);
      throw std::runtime_error("injected write failure");
    }
    inner_.write(batch);
    control_->writes.fetch_add(1);
    control_->written_ops.fetch_add(static_cast<int>(batch.size()));
  }
  void flush() override {
    if (control_->fail_flushes.load() > 0) {
      control_->fail_flushes.fetch_sub(1);
      throw pmap::Error(pmap::Errc::io, "injected flush failure");
    }
  }
  std::string describe() const override { return "test:"; }
  std::size_t max_commit_writes() const override { return control_->max_commit_writes; }

  pmap::MemoryBackend& inner() { return inner_; }

 private:
  void readable() const {
    if (control_->unreadable.load())
      throw pmap::Error(pmap::Errc::corrupt, "test: injected read failure (a damaged store)");
  }

  std::shared_ptr<Control> control_;
  pmap::MemoryBackend inner_;
};

// What maps told Options::on_error. Read it once the maps are destroyed:
// a map's completion thread has then delivered every report.
class Reports {
 public:
  pmap::Options options() const {
    pmap::Options o;
    o.on_error = [state = state_](const pmap::Error& e) {
      std::lock_guard lock(state->mu);
      state->seen.emplace_back(e.what());
    };
    return o;
  }
  // The reports that mention part.
  std::vector<std::string> mentioning(const std::string& part) const {
    std::lock_guard lock(state_->mu);
    std::vector<std::string> out;
    for (const auto& r : state_->seen)
      if (r.find(part) != std::string::npos) out.push_back(r);
    return out;
  }
  std::size_t count() const {
    std::lock_guard lock(state_->mu);
    return state_->seen.size();
  }

 private:
  struct State {
    std::mutex mu;
    std::vector<std::string> seen;
  };
  std::shared_ptr<State> state_ = std::make_shared<State>();
};

// A fresh directory under the system temp dir, removed at the end.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() /
            ("pmap-test-" + std::to_string(rd()) + "-" + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// A file's bytes.
inline std::string slurp(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Everything a backend stores, sorted.
inline std::map<std::string, std::string> backend_contents(pmap::Backend& b) {
  std::map<std::string, std::string> out;
  b.scan([&](std::string_view k, std::string_view v) { out.emplace(k, v); });
  return out;
}

}  // namespace pmap_test
