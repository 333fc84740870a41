#include "file_util.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <limits>
#include <string_view>
#include <utility>

namespace pmap::detail {

void throw_errno(int err, const std::string& what) {
  std::string message = what + ": " + std::strerror(err);
  switch (err) {
    case ENOSPC:
    case EDQUOT:
      message += " (free some disk space, then retry)";
      break;
    case EACCES:
    case EPERM:
    case EROFS:
      message += " (check the file's and directory's permissions)";
      break;
    case EFBIG:
      message += " (the file reached a size limit: see `ulimit -f` and the file system's maximum)";
      break;
    case EIO:
      message += " (the device reported an error: check the disk and the system log)";
      break;
    default:
      break;
  }
  throw Error(Errc::io, message);
}

void check_file_path(const std::filesystem::path& path, std::string_view kind) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw Error(Errc::io, std::string(kind) + " " + path.string() +
                              " is a directory; give the path of a file");
  const auto parent = path.parent_path();
  if (!parent.empty() && !std::filesystem::is_directory(parent, ec))
    throw Error(Errc::io, std::string(kind) + " " + path.string() + ": the directory " +
                              parent.string() + " does not exist; create it first");
}

namespace {

// Who holds a lock, as far as the pid recorded in its lock file (fd, open
// for reading; -1: none) tells.
std::string holder_of(int fd) {
  char buf[32] = {};
  const ssize_t n = fd >= 0 ? ::pread(fd, buf, sizeof buf - 1, 0) : 0;
  if (n <= 0) return "another process";
  if (std::string_view(buf).starts_with("shared")) return "shared mode by other maps";
  const long pid = std::strtol(buf, nullptr, 10);
  return pid == static_cast<long>(::getpid()) ? "another map in this process"
                                              : "process " + std::to_string(pid);
}

[[noreturn]] void throw_locked(const std::string& what, const std::string& holder,
                               const std::string& how) {
  throw Error(Errc::locked, what + " is already open in " + holder + " (" + how +
                                "); close that map first, or open a different file or table");
}

// Lock files are expendable: these mean "cannot have one here", not "cannot open".
bool no_room_or_no_right(int err) {
  return err == EACCES || err == EPERM || err == EROFS || err == ENOSPC || err == EDQUOT;
}

}  // namespace

FileLock::FileLock(const std::filesystem::path& lock_path, const std::string& what,
                   const std::filesystem::path* fallback, Kind kind) {
  bool writable = true;
  fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0 && no_room_or_no_right(errno)) {
    const int create_error = errno;
    writable = false;
    fd_ = ::open(lock_path.c_str(), O_RDONLY | O_CLOEXEC);  // another user's lock file
    if (fd_ < 0 && errno == ENOENT && fallback) {
      fd_ = ::open(fallback->c_str(), O_RDONLY | O_CLOEXEC);
      if (fd_ < 0) throw_errno(create_error, "cannot create the lock file " + lock_path.string());
      on_data_file_ = true;
    } else if (fd_ < 0) {
      throw_errno(create_error, "cannot create the lock file " + lock_path.string());
    }
  }
  if (fd_ < 0) throw_errno(errno, "cannot create the lock file " + lock_path.string());
  if (::flock(fd_, (kind == Kind::shared ? LOCK_SH : LOCK_EX) | LOCK_NB) != 0) {
    const int err = errno;
    const std::string holder = holder_of(on_data_file_ ? -1 : fd_);
    if (err == EWOULDBLOCK && holder.starts_with("shared")) {
      ::close(std::exchange(fd_, -1));
      throw Error(Errc::locked, what + " is open in " + holder + " (lock file " +
                                    lock_path.string() +
                                    "); open it in shared mode too (mode=shared), or close them");
    }
    if (err == EWOULDBLOCK && kind == Kind::shared) {
      ::close(std::exchange(fd_, -1));
      throw Error(Errc::locked, what + " is open exclusively in " + holder + " (lock file " +
                                    lock_path.string() +
                                    "); shared openers need every map on it shared: close that "
                                    "map, or have it open the table with mode=shared too");
    }
    ::close(std::exchange(fd_, -1));
    if (err != EWOULDBLOCK) throw_errno(err, "cannot lock " + lock_path.string());
    throw_locked(what, holder,
                 on_data_file_ ? "it holds the file itself locked; " + lock_path.string() +
                                     " could not be created here"
                               : "lock file " + lock_path.string());
  }
  if (!writable) return;
  const std::string pid =
      kind == Kind::shared ? std::string("shared\n") : std::to_string(::getpid()) + "\n";
  // The pid is only for the message above; failing to record it is harmless.
  if (::ftruncate(fd_, 0) == 0) (void)!::pwrite(fd_, pid.data(), pid.size(), 0);
}

void lock_data_file(int fd, const std::string& what) {
  if (::flock(fd, LOCK_EX | LOCK_NB) == 0) return;
  if (errno != EWOULDBLOCK) throw_errno(errno, "cannot lock " + what);
  throw_locked(what, "another process",
               "it holds the file itself locked, having been unable to create a lock file");
}

FileLock::~FileLock() {
  if (fd_ >= 0) ::close(fd_);  // closing releases the flock
}

FileLock::FileLock(FileLock&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), on_data_file_(other.on_data_file_) {}

std::string read_file(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw_errno(errno, "cannot open " + path.string());
  std::string content;
  struct stat st {};
  if (::fstat(fd, &st) == 0 && st.st_size > 0)
    content.reserve(static_cast<std::size_t>(st.st_size));
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      throw_errno(err, "cannot read " + path.string());
    }
    content.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return content;
}

namespace {

void write_all(int fd, std::string_view data, const std::string& what) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno(errno, what);
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
}

}  // namespace

void replace_file(const std::filesystem::path& path, std::string_view content) {
  const std::filesystem::path tmp = path.string() + ".pmap-tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw_errno(errno, "cannot create " + tmp.string());
  try {
    write_all(fd, content, "cannot write " + tmp.string());
    if (::fsync(fd) != 0) throw_errno(errno, "cannot fsync " + tmp.string());
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    throw_errno(err, "cannot rename " + tmp.string() + " to " + path.string());
  }
}

void sync_directory(const std::filesystem::path& dir) {
  const std::filesystem::path d = dir.empty() ? "." : dir;
  const int fd = ::open(d.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw_errno(errno, "cannot open directory " + d.string());
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0 && err != EINVAL) throw_errno(err, "cannot fsync directory " + d.string());
}

unsigned long long free_bytes(int fd) noexcept {
  struct statvfs st {};
  if (::fstatvfs(fd, &st) != 0) return std::numeric_limits<unsigned long long>::max();
  return static_cast<unsigned long long>(st.f_bavail) * st.f_frsize;
}

void FileWatch::seen(const std::string& where) {
  struct stat st {};
  if (::stat(path_.c_str(), &st) != 0) throw_errno(errno, where + ": cannot stat the file");
  device_ = st.st_dev;
  inode_ = st.st_ino;
  size_ = st.st_size;
}

FileWatch::Change FileWatch::changed(const std::string& where, Size rule,
                                     const std::function<bool(long long)>& shrink_ok) {
  if (size_ < 0) return Change::none;
  struct stat st {};
  if (::stat(path_.c_str(), &st) != 0) {
    if (errno != ENOENT) throw_errno(errno, where + ": cannot stat the file");
    return Change::gone;
  }
  if (st.st_dev != device_ || st.st_ino != inode_) return Change::replaced;
  now_ = st.st_size;
  if (rule != Size::any && st.st_size < size_ && !(shrink_ok && shrink_ok(st.st_size)))
    return Change::shrunk;
  if (rule == Size::exact && st.st_size > size_) return Change::grown;
  size_ = st.st_size;
  return Change::none;
}

void FileWatch::check(const std::string& where, Size rule,
                      const std::function<bool(long long)>& shrink_ok) {
  constexpr const char* kInMemory =
      " Every committed entry is still in the map's memory: snapshot() copies it out.";
  switch (changed(where, rule, shrink_ok)) {
    case Change::none:
      return;
    case Change::gone:
      throw Error(Errc::io, where +
                                ": the file was deleted or moved away by another program while "
                                "the map had it open; writes are refused so that none goes into "
                                "a file nobody can open. Put the file back to resume writing." +
                                kInMemory);
    case Change::replaced:
      throw Error(Errc::io, where +
                                ": the file was replaced by another program while the map had it "
                                "open (persistent-map did not write the new file); writes are "
                                "refused. Close the map before changing its file." +
                                kInMemory);
    case Change::shrunk:
    case Change::grown:
      throw Error(Errc::corrupt,
                  where + ": the file was " + (now_ < size_ ? "truncated" : "changed") +
                      " by another program while the map had it open (" + std::to_string(now_) +
                      " bytes, expected " + std::to_string(size_) +
                      "); writes are refused. Restore the file from a backup." + kInMemory);
  }
}

}  // namespace pmap::detail
