// The change record's packed writes and session origins, shared by the
// backends that keep a change record (sqlite.cpp, postgres.cpp). Not API.
#pragma once

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <random>
#include <string>
#include <string_view>

#include "pmap/backend.hpp"

namespace pmap::detail {

// A shared table's change record holds one row per transaction: its
// position, origin, tag, and its writes packed into one blob (`ops`), each
// as an op byte ('p' put, 'e' erase, 'c' clear) then, but for a clear, the
// key's length as a LEB128 varint and the key. One row per transaction
// costs a commit one small insert, however many writes it holds; values are
// not copied (a reader looks them up in the table, in the same snapshot).
inline void append_op(std::string& ops, const Write& w) {
  ops.push_back(w.op == Write::Op::put ? 'p' : w.op == Write::Op::erase ? 'e' : 'c');
  if (w.op == Write::Op::clear) return;
  for (std::size_t n = w.key.size();; n >>= 7) {
    ops.push_back(static_cast<char>((n & 0x7F) | (n > 0x7F ? 0x80 : 0)));
    if (n <= 0x7F) break;
  }
  ops.append(w.key);
}

// Calls f(op, key) for each write of a packed blob; false if it is malformed.
template <class F>
bool parse_ops(std::string_view ops, F f) {
  std::size_t i = 0;
  while (i < ops.size()) {
    const char c = ops[i++];
    if (c == 'c') {
      f(Write::Op::clear, std::string_view());
      continue;
    }
    if (c != 'p' && c != 'e') return false;
    std::size_t n = 0;
    for (int shift = 0;; shift += 7) {
      if (i >= ops.size() || shift > 56) return false;
      const auto b = static_cast<unsigned char>(ops[i++]);
      n |= static_cast<std::size_t>(b & 0x7F) << shift;
      if (!(b & 0x80)) break;
    }
    if (n > ops.size() - i) return false;
    f(c == 'p' ? Write::Op::put : Write::Op::erase, ops.substr(i, n));
    i += n;
  }
  return true;
}

// A random origin for a shared session: two live sessions never draw the
// same one in practice (63 bits).
inline std::uint64_t random_origin() {
  std::random_device rd;
  const std::uint64_t r = (std::uint64_t{rd()} << 32) ^ rd();
  return (r & 0x7FFFFFFFFFFFFFFFull) | 1;
}

// A table name a backend with a change record accepts: [A-Za-z_][A-Za-z0-9_]*,
// at most max_size bytes, not starting with "pmap_" (reserved for the
// change record, pmap_log_<table>).
inline bool valid_table_name(std::string_view name, std::size_t max_size) {
  if (name.empty() || name.size() > max_size) return false;
  if (!(std::isalpha(static_cast<unsigned char>(name[0])) || name[0] == '_')) return false;
  return std::all_of(
             name.begin(), name.end(),
             [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }) &&
         name.substr(0, 5) != "pmap_";
}

}  // namespace pmap::detail
