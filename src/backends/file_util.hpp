// File helpers shared by the file backends: errors naming the file, the
// per-map lock, whole-file reads and atomic replacement. Not API.
//
// Thread safety: FileLock is one owner's; the functions are reentrant.
#pragma once

#include <filesystem>
#include <functional>
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
//
// A lock file that exists but may not be written (another user's) is locked
// through a read-only descriptor. When it neither exists nor can be created
// for want of space or permission (a full disk, a read-only directory), the
// lock falls back to `fallback` itself, when given: the data file, locked
// the same way (on_data_file() then says so, and its owner must not replace
// that file, or the lock would go with it).
//
// A shared lock (Kind::shared) is held by any number of shared openers at
// once, and excludes exclusive ones (and the other way round); its holders
// record "shared" instead of a pid.
class FileLock {
 public:
  enum class Kind { exclusive, shared };
  // Errors: Errc::locked naming `what` and the holder ("process 1234", or
  // "this process"); Errc::io when the lock file cannot be created or
  // opened (and there is no fallback).
  FileLock(const std::filesystem::path& lock_path, const std::string& what,
           const std::filesystem::path* fallback = nullptr, Kind kind = Kind::exclusive);
  ~FileLock();
  FileLock(FileLock&& other) noexcept;
  FileLock& operator=(FileLock&&) = delete;
  FileLock(const FileLock&) = delete;

  bool on_data_file() const noexcept { return on_data_file_; }

 private:
  int fd_ = -1;
  bool on_data_file_ = false;
};

// Takes an exclusive flock on fd (a data file's, whose owner holds its lock
// file too), so that a process that had to fall back to locking the data
// file itself (above) and one with the lock file exclude each other.
// Errors: Errc::locked naming `what`.
void lock_data_file(int fd, const std::string& what);

// The whole content of a file. Errors: Errc::io.
std::string read_file(const std::filesystem::path& path);

// Writes content to path + ".pmap-tmp", fsyncs it and renames it over path:
// a crash leaves either the old or the new file. The caller then syncs the
// directory (sync_directory) to make the rename itself durable. Errors:
// Errc::io, with path as it was and no temporary file left behind.
void replace_file(const std::filesystem::path& path, std::string_view content);

// fsync of a directory, so that a create or rename in it is durable.
void sync_directory(const std::filesystem::path& dir);

// Bytes an unprivileged writer may still add to the file system holding fd
// (statvfs); max() when the file system does not say.
unsigned long long free_bytes(int fd) noexcept;

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
  // What happened to the file since it was seen.
  enum class Change { none, gone, replaced, shrunk, grown };
  // shrink_ok(size): whether a file that is now `size` bytes, shorter than
  // the rule allows, was shortened legitimately (then it is taken as seen).
  // Errors: Errc::io when stat fails for another reason than a missing file.
  Change changed(const std::string& where, Size rule,
                 const std::function<bool(long long)>& shrink_ok = {});
  // changed(), thrown: Errc::io when path no longer names the file seen
  // (deleted, moved away, replaced); Errc::corrupt when its size breaks
  // `rule` (truncated or changed). The messages say what to do.
  void check(const std::string& where, Size rule,
             const std::function<bool(long long)>& shrink_ok = {});

 private:
  std::filesystem::path path_;
  unsigned long long device_ = 0, inode_ = 0;
  long long size_ = -1;  // -1: not seen yet
  long long now_ = -1;   // the size changed() found
};

}  // namespace pmap::detail
