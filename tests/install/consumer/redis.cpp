// Links pmap::redis: the redis:// scheme is registered by linking it
// (nothing to call), and the backend's header is there. Needs no server:
// a port nobody listens on gives Errc::io.
#include <algorithm>
#include <iostream>
#include <pmap/backends/redis.hpp>
#include <pmap/pmap.hpp>

int main() {
  const auto schemes = pmap::registered_backends();
  for (const char* s : {"redis", "redis+unix"})
    if (std::find(schemes.begin(), schemes.end(), s) == schemes.end()) {
      std::cout << s << " is not registered\n";
      return 1;
    }
  try {
    pmap::PersistentMap<std::string, int> map{"redis://127.0.0.1:1?timeout=2000"};
  } catch (const pmap::Error& e) {
    if (e.code() == pmap::Errc::io) {
      std::cout << "redis=registered\n";
      return 0;
    }
    std::cout << e.what() << "\n";
  }
  return 1;
}
