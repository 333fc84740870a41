#include "file_util.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
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

FileLock::FileLock(const std::filesystem::path& lock_path, const std::string& what) {
  fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw_errno(errno, "cannot create the lock file " + lock_path.string());
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char buf[32] = {};
    const ssize_t n = ::pread(fd_, buf, sizeof buf - 1, 0);
    ::close(fd_);
    fd_ = -1;
    if (err != EWOULDBLOCK) throw_errno(err, "cannot lock " + lock_path.string());
    std::string holder = "another process";
    if (n > 0) {
      const long pid = std::strtol(buf, nullptr, 10);
      holder = pid == static_cast<long>(::getpid()) ? "another map in this process"
                                                    : "process " + std::to_string(pid);
    }
    throw Error(Errc::locked, what + " is already open in " + holder + " (lock file " +
                                  lock_path.string() +
                                  "); close that map first, or open a different file or table");
  }
  const std::string pid = std::to_string(::getpid()) + "\n";
  // The pid is only for the message above; failing to record it is harmless.
  if (::ftruncate(fd_, 0) == 0) (void)!::pwrite(fd_, pid.data(), pid.size(), 0);
}

FileLock::~FileLock() {
  if (fd_ >= 0) ::close(fd_);  // closing releases the flock
}

FileLock::FileLock(FileLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}

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
  sync_directory(path.parent_path());
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

void FileWatch::seen(const std::string& where) {
  struct stat st {};
  if (::stat(path_.c_str(), &st) != 0) throw_errno(errno, where + ": cannot stat the file");
  device_ = st.st_dev;
  inode_ = st.st_ino;
  size_ = st.st_size;
}

void FileWatch::check(const std::string& where, Size rule) {
  if (size_ < 0) return;
  constexpr const char* kInMemory =
      " Every committed entry is still in the map's memory: snapshot() copies it out.";
  struct stat st {};
  if (::stat(path_.c_str(), &st) != 0) {
    if (errno != ENOENT) throw_errno(errno, where + ": cannot stat the file");
    throw Error(Errc::io, where +
                              ": the file was deleted or moved away by another program while "
                              "the map had it open; writes are refused so that none goes into a "
                              "file nobody can open. Put the file back to resume writing." +
                              kInMemory);
  }
  if (st.st_dev != device_ || st.st_ino != inode_)
    throw Error(Errc::io, where +
                              ": the file was replaced by another program while the map had it "
                              "open (persistent-map did not write the new file); writes are "
                              "refused. Close the map before changing its file." +
                              kInMemory);
  if (rule != Size::any && (st.st_size < size_ || (rule == Size::exact && st.st_size != size_)))
    throw Error(Errc::corrupt,
                where + ": the file was " + (st.st_size < size_ ? "truncated" : "changed") +
                    " by another program while the map had it open (" + std::to_string(st.st_size) +
                    " bytes, expected " + std::to_string(size_) +
                    "); writes are refused. Restore the file from a backup." + kInMemory);
  size_ = st.st_size;
}

}  // namespace pmap::detail
