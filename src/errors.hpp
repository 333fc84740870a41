// Turning whatever a backend or a callback threw into a pmap::Error, in one
// place. Not API.
//
// Thread safety: pure functions.
#pragma once

#include <exception>
#include <string>
#include <string_view>

#include "pmap/error.hpp"

namespace pmap::detail {

// error as a pmap::Error: unchanged if it is one; otherwise `fallback` with
// "<context>: <its message>".
Error to_error(std::exception_ptr error, std::string_view context, Errc fallback = Errc::backend);

// The same, as an exception_ptr (a pmap::Error is passed through as is).
std::exception_ptr to_error_ptr(std::exception_ptr error, std::string_view context,
                                Errc fallback = Errc::backend);

// Bytes (a key, a stored value) for a message: at most 80 of them, quoted
// ("..." when cut).
std::string shown_key(std::string_view key);

}  // namespace pmap::detail
