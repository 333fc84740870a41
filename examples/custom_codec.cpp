// Storing your own types: via nlohmann::json, or a pmap::Codec specialisation.
#include <pmap/pmap.hpp>

#include <iostream>
#include <string>
#include <vector>

// 1. Any type nlohmann::json can convert is stored as JSON text.
struct Session {
  std::string user;
  std::vector<std::string> roles;
  long expires_at = 0;
};
NLOHMANN_DEFINE_TYPE_NON_INTRUSIVE(Session, user, roles, expires_at)

// 2. Or choose the bytes yourself: specialise pmap::Codec<T>.
struct Rgb {
  unsigned char r, g, b;
};
template <>
struct pmap::Codec<Rgb> {
  static void encode(const Rgb& c, std::string& out) {
    constexpr char kHex[] = "0123456789abcdef";
    out += '#';
    for (unsigned char v : {c.r, c.g, c.b}) {
      out += kHex[v >> 4];
      out += kHex[v & 15];
    }
  }
  static Rgb decode(std::string_view s) {
    if (s.size() != 7 || s[0] != '#') throw pmap::Error(pmap::Errc::codec, "expected #rrggbb");
    auto byte = [&](std::size_t i) {
      return static_cast<unsigned char>(std::stoi(std::string(s.substr(i, 2)), nullptr, 16));
    };
    return Rgb{byte(1), byte(3), byte(5)};
  }
};

int main() {
  pmap::PersistentMap<std::string, Session> sessions{"sqlite:codecs.db?table=sessions"};
  sessions.insert("s-1", Session{"ada", {"admin"}, 1767225600}).get();

  pmap::PersistentMap<std::string, Rgb> colours{"csv:colours.csv"};
  colours.insert("sky", Rgb{0x87, 0xce, 0xeb}).get();

  std::cout << "s-1 belongs to " << sessions.get("s-1")->user << "\n";
  std::cout << "sky is stored as " << *colours.backend().get("sky") << "\n";
}
