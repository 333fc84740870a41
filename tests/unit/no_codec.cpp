// Must NOT compile: a value type with no codec. The test expects the
// static_assert's message, which tells the user what to write.
#include <pmap/pmap.hpp>

struct NoCodec {
  int x;
};

int main() {
  pmap::PersistentMap<std::string, NoCodec> map{pmap::MemoryBackend()};
  map.insert("k", NoCodec{1});
}
