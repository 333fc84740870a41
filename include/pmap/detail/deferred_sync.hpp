// pmap/detail/deferred_sync.hpp — commits whose fsync comes later. Not API.
//
// A backend that makes a commit durable with an fsync can implement this as
// well as Backend: the map's writer then commits group after group without
// waiting for the disk, while a second thread syncs everything committed so
// far (one fsync for all of it) and only then completes those writes'
// futures. The fsync of one group overlaps the commit of the next, and no
// future completes before its write is durable.
//
// Thread safety: commit() on the writer thread; sync() on the sync thread,
// concurrently with commit().
#pragma once

#include <span>

#include "pmap/backend.hpp"

namespace pmap::detail {

class DeferredSync {
 public:
  // Whether commits are to be synced this way (e.g. not when the backend was
  // asked for no fsync per commit at all).
  virtual bool defers_sync() const noexcept = 0;
  // Backend::write without its fsync: atomic, applied and visible, but not
  // yet durable against power loss (durable against a process crash).
  virtual void commit(std::span<const Write> batch) = 0;
  // Makes every commit() that returned before this call durable.
  virtual void sync() = 0;

 protected:
  ~DeferredSync() = default;
};

}  // namespace pmap::detail
