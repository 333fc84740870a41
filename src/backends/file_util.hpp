// File helpers shared by the file backends: errors naming the file, the
// per-map lock, whole-file reads and atomic replacement. Not API.
//
// Thread safety: FileLock is one owner's; the functions are reentrant.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include "pmap/error.hpp"

namespace pmap::detail {

// Throws Errc::io: "<what>: <strerror(err)>", plus advice for common errnos.
[[noreturn]] void throw_errno(int err, const std::string& what);

// Checks that path can hold a file the backend creates or opens: not a
// directory, and its parent directory exists.
// Errors: Errc::io naming path.
void check_file_path(const std::filesystem::path& path, std::string_view kind);

// An exclusive advisory lock (flock) on lock_path, created if missing, that
// records the holder's pid. flock locks belong to the open file, so a second
// opener in the same process conflicts too.
class FileLock {
 public:
  // Errors: Errc::locked naming `what` and the holder ("process 1234", or
  // "this process"); Errc::io when the lock file cannot be created.
  FileLock(const std::filesystem::path& lock_path, const std::string& what);
  ~FileLock();
  FileLock(FileLock&& other) noexcept;
  FileLock& operator=(FileLock&&) = delete;
  FileLock(const FileLock&) = delete;

 private:
  int fd_ = -1;
};

// The whole content of a file. Errors: Errc::io.
std::string read_file(const std::filesystem::path& path);

// Replaces path with content atomically: writes path + ".pmap-tmp", fsyncs
// it, renames it over path, fsyncs the directory. A crash leaves either the
// old or the new file. Errors: Errc::io (path is left as it was).
void replace_file(const std::filesystem::path& path, std::string_view content);

// fsync of a directory, so that a create or rename in it is durable.
void sync_directory(const std::filesystem::path& dir);

// What a backend last saw of its open file, to notice another program
// deleting, moving, replacing or truncating it underneath: writes would then
// go into a file nobody can open, or after a hole. Costs one stat().
class FileWatch {
 public:
  explicit FileWatch(std::filesystem::path path) : path_(std::move(path)) {}
  // Records the file now at path (the backend's own file). Errors: Errc::io.
  void seen(const std::string& where);
  // The backend itself made the file this long.
  void expect_size(long long size) noexcept { size_ = size; }
  // What the file's size may have become since: anything (a file that
  // shrinks by itself), at least what was seen, or exactly that.
  enum class Size { any, at_least, exact };
  // Errors: Errc::io when path no longer names the file seen (deleted, moved
  // away, replaced); Errc::corrupt when its size breaks `rule` (truncated or
  // changed). The messages say what to do.
  void check(const std::string& where, Size rule);

 private:
  std::filesystem::path path_;
  unsigned long long device_ = 0, inode_ = 0;
  long long size_ = -1;  // -1: not seen yet
};

}  // namespace pmap::detail
