// The one conversion of a thrown exception into a pmap::Error, and keys as
// messages show them. See errors.hpp.

#include "errors.hpp"

#include "pmap/codec.hpp"
#include "pmap/detail/store.hpp"

namespace pmap::detail {

Error to_error(std::exception_ptr error, std::string_view context, Errc fallback) {
  try {
    std::rethrow_exception(error);
  } catch (const Error& e) {
    return Error(e.code(), e.what());
  } catch (const std::exception& e) {
    return Error(fallback, std::string(context) + ": " + e.what());
  } catch (...) {
    return Error(fallback, std::string(context) + ": an exception that is not a std::exception");
  }
}

std::exception_ptr to_error_ptr(std::exception_ptr error, std::string_view context, Errc fallback) {
  try {
    std::rethrow_exception(error);
  } catch (const Error&) {
    return error;
  } catch (...) {
    return std::make_exception_ptr(to_error(std::current_exception(), context, fallback));
  }
}

std::string shown_key(std::string_view key) {
  constexpr std::size_t kShown = 80;
  std::string s(key.substr(0, kShown));
  if (key.size() > kShown) s += "...";
  return "\"" + s + "\"";
}

void throw_decode_error(std::string_view type, std::string_view bytes, std::string_view why) {
  throw Error(Errc::codec, "cannot decode " + shown_key(bytes) + " as " + std::string(type) +
                               ": " + std::string(why));
}

void rethrow_with_key(const Error& error, std::string_view key, std::string_view where) {
  throw Error(error.code(), std::string(error.what()) + " (key " + shown_key(key) + " in " +
                                std::string(where) + ")");
}

}  // namespace pmap::detail
