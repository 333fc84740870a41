// What a reader session's wait_for_change() sleeps on beside its own
// source of news (a server connection, an inotify descriptor): an eventfd
// that interrupt() signals from any thread. Shared by the SQLite,
// PostgreSQL and Redis readers. Not API.
#pragma once

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <string>

#include "file_util.hpp"

namespace pmap::detail {

class WakeFd {
 public:
  // Errors: Errc::io naming `where` when no eventfd can be made.
  explicit WakeFd(const std::string& where) : fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    if (fd_ < 0) throw_errno(errno, where + ": cannot create an eventfd");
  }
  ~WakeFd() { ::close(fd_); }
  WakeFd(const WakeFd&) = delete;
  WakeFd& operator=(const WakeFd&) = delete;

  // Ends a wait in progress, or the next one. Thread-safe.
  void signal() noexcept {
    const std::uint64_t one = 1;
    (void)!::write(fd_, &one, sizeof one);
  }

  enum class Woke { signalled, input, broken, timeout };
  // Sleeps until signal(), input on fd (-1: none), fd's connection ending,
  // or timeout (EINTR counts as a timeout: the caller looks anyway). A
  // signal is consumed.
  Woke wait(int fd, std::chrono::milliseconds timeout) noexcept {
    pollfd fds[2] = {{fd_, POLLIN, 0}, {fd, POLLIN, 0}};
    const auto ms = static_cast<int>(std::clamp<std::int64_t>(timeout.count(), 0, 1 << 30));
    if (::poll(fds, fd >= 0 ? 2 : 1, ms) <= 0) return Woke::timeout;
    if (fds[0].revents & POLLIN) {
      std::uint64_t count;
      (void)!::read(fd_, &count, sizeof count);
      return Woke::signalled;
    }
    if (fds[1].revents & POLLIN) return Woke::input;
    return fds[1].revents & (POLLERR | POLLHUP | POLLNVAL) ? Woke::broken : Woke::timeout;
  }

 private:
  int fd_;
};

}  // namespace pmap::detail
