// The Rust crate's README example, in C++: open, insert, get, erase, flush.
#include <pmap/pmap.hpp>

#include <iostream>
#include <string>

int main() {
  pmap::PersistentMap<std::string, std::string> map{pmap::SqliteBackend("my_database.db")};

  map.insert("key1", "value1").get();  // get(): wait until it is on disk
  if (auto value = map.get("key1")) std::cout << "key1 = " << *value << "\n";

  map.erase("key1").get();
  map.flush().get();
  std::cout << "entries left: " << map.size() << "\n";
}
