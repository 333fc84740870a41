// Links pmap::postgres: the postgres:// scheme is registered by linking it
// (nothing to call), and the backend's header is there. Needs no server:
// a port nobody listens on gives Errc::io.
#include <pmap/backends/postgres.hpp>
#include <pmap/pmap.hpp>

#include <algorithm>
#include <iostream>

int main() {
  const auto schemes = pmap::registered_backends();
  for (const char* s : {"postgres", "postgresql"})
    if (std::find(schemes.begin(), schemes.end(), s) == schemes.end()) {
      std::cout << s << " is not registered\n";
      return 1;
    }
  try {
    pmap::PersistentMap<std::string, int> map{"postgres://u:pw@127.0.0.1:1/db?connect_timeout=2"};
  } catch (const pmap::Error& e) {
    if (e.code() == pmap::Errc::io) {
      std::cout << "postgres=registered\n";
      return 0;
    }
    std::cout << e.what() << "\n";
  }
  return 1;
}
