#include <pmap/pmap.hpp>

#include <iostream>

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  {
    pmap::PersistentMap<std::string, int> map{pmap::SqliteBackend(argv[1])};
    map.insert("answer", 42).get();
  }
  pmap::PersistentMap<std::string, int> map{pmap::SqliteBackend(argv[1])};
  std::cout << "answer=" << map.get("answer").value_or(-1) << "\n";
  return map.get("answer") == 42 ? 0 : 1;
}
