// Writing a backend: five members over bytes. This one logs every batch and
// keeps the data in a std::map; register it to open it by URI.
#include <pmap/pmap.hpp>

#include <iostream>
#include <map>
#include <string>

class LoggingBackend final : public pmap::Backend {
 public:
  void scan(pmap::ScanSink sink) override {
    for (const auto& [key, value] : data_) sink(key, value);
  }
  std::optional<std::string> get(std::string_view key) override {
    auto it = data_.find(std::string(key));
    if (it == data_.end()) return std::nullopt;
    return it->second;
  }
  void write(std::span<const pmap::Write> batch) override {
    std::cout << "commit of " << batch.size() << " write(s)\n";
    auto next = data_;  // all or nothing: apply to a copy, then swap
    for (const pmap::Write& w : batch) {
      if (w.op == pmap::Write::Op::put) next[w.key] = w.value;
      if (w.op == pmap::Write::Op::erase) next.erase(w.key);
      if (w.op == pmap::Write::Op::clear) next.clear();
    }
    data_.swap(next);
  }
  std::string describe() const override { return "logging:"; }

 private:
  std::map<std::string, std::string> data_;
};

int main() {
  pmap::register_backend("logging", [](std::string_view) { return std::make_unique<LoggingBackend>(); });

  pmap::PersistentMap<std::string, int> map{"logging:"};
  map.insert("a", 1);
  map.insert("b", 2);
  map.flush().get();
  std::cout << "a + b = " << *map.get("a") + *map.get("b") << "\n";
}
