// pmap/backend.hpp — the storage interface, over bytes.
//
// A Backend stores byte strings under byte strings. It is compiled once (not a
// template per key and value type), so writing one is an afternoon's work:
// implement scan, get, write and describe; flush if "durable" needs an extra
// step. The map encodes keys and values with pmap::Codec before they get here.
// Everything below those five members is optional: each has a default that a
// backend written against the five alone keeps, unchanged.
//
// Thread safety: a map calls its backend from one thread at a time — scan()
// on the thread that constructs the map, then scan(), get(), write(),
// commit() and flush() only from the map's writer thread — so a backend
// needs no locking of its own for those. The one exception is sync(), which
// the map's sync thread may call while the writer thread is inside any other
// member; a backend that overrides commit() to defer its fsync must make
// sync() safe beside them (the SQLite backend fsyncs a file descriptor of its
// own). A reader session from open_reader() is a separate object, used from
// another thread beside its parent; its interrupt() may be called from any
// thread while another member runs.
//
// Errors: backends may throw anything; the map reports a pmap::Error
// unchanged and wraps any other exception as Errc::backend, keeping its
// message.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pmap/error.hpp"

namespace pmap {

// One change in a batch. `value` is used only by put.
struct Write {
  enum class Op { put, erase, clear };
  Op op = Op::put;
  std::string key;
  std::string value;
};

// Receives every stored entry while a map loads. The views are valid only
// during the call.
using ScanSink = std::function<void(std::string_view key, std::string_view value)>;

// What Backend::commit() promises about the batch it committed.
enum class Durability {
  now,    // durable as the backend's settings promise (write() has returned)
  later,  // committed and visible, durable once a later sync() returns
};

class Backend {
 public:
  Backend();
  virtual ~Backend();

  // Calls sink once per stored entry, in any order.
  // Errors: throws (typically pmap::Error: io, corrupt) when the store cannot be read.
  virtual void scan(ScanSink sink) = 0;

  // The stored value of key, or std::nullopt when absent.
  virtual std::optional<std::string> get(std::string_view key) = 0;

  // Applies the batch as if in order (writes to different keys may go in any
  // order; a later write to a key wins), atomically: after a return every
  // change is committed; after a throw none is. A crash midway leaves none
  // of it. clear removes every entry, including those put earlier in the
  // batch, and none put after it.
  virtual void write(std::span<const Write> batch) = 0;

  // Makes every committed batch durable now, for backends whose write() alone
  // does not (e.g. SQLite with synchronous=normal). Default: nothing to do.
  virtual void flush() {}

  // Where the data lives, as a URI: "sqlite:/abs/path.db#table", "csv:/abs/f.csv".
  // It never contains a password.
  virtual std::string describe() const = 0;

  // ---- Optional members; the defaults suit a backend with the five above.

  // What the map's writer calls to commit a group of writes: write() with
  // the fsync left for later, so that one group's fsync overlaps the next
  // group's commit. Like write(), atomic: a return means committed (visible
  // to get() and scan()), a throw means none of it. Returning
  // Durability::later means "durable once sync() returns": the map completes
  // the group's futures only after a sync() that began after this return.
  // A backend that loses its connection in the middle of a commit finds out
  // whether the batch committed before it returns (committed) or throws (not
  // committed): the map never sends a batch twice.
  // Called on the writer thread. Default: write(batch), Durability::now.
  virtual Durability commit(std::span<const Write> batch) {
    write(batch);
    return Durability::now;
  }

  // Makes every commit() that returned Durability::later before this call
  // durable (one fsync for all of them). Called on the map's writer thread
  // or its sync thread — the latter possibly while the writer thread is
  // inside another member. A throw means
  // the state of the disk is unknown (the kernel may have dropped the pages
  // that failed): the map fails the writes the sync covered and every later
  // write, until it is reopened. Default: nothing to do.
  virtual void sync() {}

  // The most writes this backend wants in one commit(). The map's writer
  // ends a group there, or at Options::max_group_writes if that is smaller,
  // but never splits one apply(). A server that runs a commit as one step
  // no other client can interleave with (Redis) keeps its other clients
  // waiting for less this way. Called once, by the map's constructor.
  // Default: 0, no limit of the backend's own.
  virtual std::size_t max_commit_writes() const { return 0; }

  // A second session on the same store, for reading beside the map's writer
  // (a read-only opener, a watcher, reads that bypass the cache): its scan()
  // and get() may run on another thread while this backend commits, and see
  // every commit that returned before they began. It takes no lock that
  // would keep another opener out, and its write() and commit() throw
  // Errc::invalid_argument. It must not outlive this backend. Called on the
  // writer thread, or before the map is opened. nullptr: this backend has no
  // such session (the default).
  virtual std::unique_ptr<Backend> open_reader() { return nullptr; }

  // Where to report a problem that fails no operation, so that nobody's
  // future sees it — the CSV backend's compaction skipped on a full disk, a
  // close that could not tidy up. report(error) hands it to the map's
  // Options::on_error; it may be called from any member, the destructor
  // included, and is thread-safe. A backend keeps what it noticed before
  // this call (in its constructor) and reports it from within the call.
  // Called once, by the map's constructor, after scan(). Default: a
  // backend with nothing of the kind to say ignores it.
  virtual void report_to(std::function<void(const Error&)> report) { (void)report; }

  // ---- For tools (pmapctl): optional, and never called by a map.

  // The number of entries, when the backend can tell without handing them
  // all over (SQLite's count(*), Redis's HLEN). Default: nullopt, and a
  // tool counts with scan().
  virtual std::optional<std::uint64_t> count() { return std::nullopt; }

  // The bytes the store takes where it lives (files, server memory or
  // disk), when the backend can tell. Default: nullopt.
  virtual std::optional<std::uint64_t> bytes() { return std::nullopt; }

  // What else the backend can tell about its storage, as (name, value)
  // lines for people: pages, dead rows, the WAL's size. Default: none.
  virtual std::vector<std::pair<std::string, std::string>> details() { return {}; }

  // Damage that only the backend can see, looked for by reading all the
  // storage it has (SQLite: PRAGMA integrity_check of the whole file): a
  // line for each damaged place, naming the file and where in it, at most
  // `limit` lines. Empty: none found. Damage in the entries themselves
  // also fails scan() (a CSV file's damaged lines fail the opener, all
  // named); this finds what scan() would not reach, or would stop at.
  // Default: none looked for.
  virtual std::vector<std::string> damage(std::size_t limit) {
    (void)limit;
    return {};
  }

  // Gives back the space that erased and overwritten entries left (SQLite:
  // the file vacuumed; CSV: the file rewritten), atomically: on a throw the
  // store is as it was. `progress`, if set, is called now and then, on the
  // calling thread, with the work done and the whole work (in the
  // backend's unit, e.g. bytes), for a progress bar. Returns false when the
  // backend has nothing of the kind (the default).
  using CompactProgress = std::function<void(std::uint64_t done, std::uint64_t total)>;
  virtual bool compact(const CompactProgress& progress) {
    (void)progress;
    return false;
  }

  // ---- Shared stores: several maps, in any processes, on one store.
  //
  // A shared backend keeps a change record: every transaction committed by
  // any session, in commit order, at a position (a number counting up, 0
  // before the first), with the session that committed it (its origin) and
  // a tag that session chose. A map reads it from a position to learn what
  // others wrote (changes_since()), waits on it for "something may have
  // changed" (wait_for_change()) — both on a reader session, so a shared
  // backend must give one (open_reader()) — and commits through
  // commit_shared(), which tags the transaction and applies conditional
  // writes (update() as compare-and-set). The defaults describe a store
  // only this map writes: shared() false, and the map calls none of the
  // members below. src/backends/sqlite.cpp is the worked example.

  // Whether other sessions may write this store: the map then keeps its
  // cache coherent through the members below. Default: false.
  virtual bool shared() const { return false; }

  // This session's origin: a number no other live session of the store has
  // (a random 63-bit number is enough). Called once, before the writer
  // starts. Default: 0.
  virtual std::uint64_t origin() const { return 0; }

  // scan(), and the change record's position the scanned entries reflect
  // (read in one snapshot). The map loads with it when shared() is true.
  // Default: scan(sink), then 0.
  virtual std::uint64_t scan_at(ScanSink sink) {
    scan(std::move(sink));
    return 0;
  }

  // A write applied only if its key then holds `value` (nullopt: only if it
  // is absent): batch[index] in commit_shared().
  struct Expect {
    std::size_t index = 0;
    std::optional<std::string> value;
  };
  // A conditional write that was not applied, and what its key held.
  struct Conflict {
    std::size_t index = 0;
    std::optional<std::string> stored;
  };

  // commit() for a shared store: one transaction, recorded in the change
  // record with this session's origin and `tag` (the map's number for the
  // group). A write named in `expect` is applied only if its key holds the
  // expected value at that point of the batch; the others are skipped and
  // appended to `conflicts` (cleared first) with what their key held, while
  // the rest of the batch commits. Atomic, durable and in doubt like
  // commit(). Called on the writer thread. Default: Errc::invalid_argument
  // (only a shared() backend is called).
  virtual Durability commit_shared(std::span<const Write> batch, std::span<const Expect> expect,
                                   std::uint64_t tag, std::vector<Conflict>& conflicts);

  // One change of the record, as changes_since() reports it.
  struct RecordedChange {
    std::uint64_t origin = 0;  // the session that committed it
    std::uint64_t tag = 0;     // the tag that session committed it with
    Write::Op op = Write::Op::put;
    std::string key;  // empty for a clear
    // For a put: the key's value at the end of the read, or nullopt when a
    // later change in the same read removed it (the put is then superseded).
    std::optional<std::string> value;
  };
  struct ChangeRead {
    // The read could not reach back to `from` (the record was trimmed past
    // it, or recreated): changes is empty, and the reader must scan_at()
    // the whole store instead.
    bool gap = false;
    std::uint64_t through = 0;            // the position the read reached
    std::vector<RecordedChange> changes;  // whole transactions, commit order
  };

  // Every change committed after position `from`, in commit order, as one
  // snapshot: whole transactions only. Puts committed by origin
  // `no_values_for` may come without their value (nullopt), saving their
  // lookup: the map passes its own origin while nobody watches it (its
  // cache holds its own writes already), else 0. Called on a reader session
  // (from open_reader()), on the map's watcher thread. Errors: throws when
  // the record cannot be read (the map retries with back-off). Default:
  // nothing changed (through = from).
  virtual ChangeRead changes_since(std::uint64_t from, std::uint64_t no_values_for) {
    (void)no_values_for;
    return ChangeRead{false, from, {}};
  }

  // Blocks until a change after `from` may have been committed (a spurious
  // return is fine), `timeout` passes, or interrupt() is called. Called on
  // a reader session, on the watcher thread. Default: waits for timeout or
  // interrupt().
  virtual void wait_for_change(std::uint64_t from, std::chrono::milliseconds timeout);

  // Makes a wait_for_change() in progress (or the next one) return at once.
  // Thread-safe: called from any thread while the watcher waits.
  virtual void interrupt();

 private:
  struct Wake;
  std::shared_ptr<Wake> wake_;  // the default wait_for_change()'s
};

// Makes a backend from the part of a URI after "scheme:".
using BackendFactory = std::function<std::unique_ptr<Backend>(std::string_view rest)>;

// Opens a backend from a URI:
//   sqlite:PATH[?table=T&synchronous=full|normal|off]   (the default backend)
//   csv:PATH
//   memory:
// plus any scheme added with register_backend.
// Errors: Errc::invalid_argument for a malformed URI or unknown scheme (the
// message lists the known ones, and shows the URI with any password in it
// replaced by "***"); whatever the backend's constructor throws.
std::unique_ptr<Backend> open_backend(std::string_view uri);

// Adds (or replaces) the factory for a scheme, e.g. "redis". Scheme names are
// letters, digits, '+', '-', '.'; anything else is Errc::invalid_argument.
// Thread safety: may be called from any thread, concurrently with open_backend.
void register_backend(std::string scheme, BackendFactory factory);

// The schemes open_backend knows, sorted.
std::vector<std::string> registered_backends();

// uri with its password replaced by "***": the password of a user-info part
// ("postgres://user:secret@host" -> "postgres://user:***@host",
// "redis://:secret@host" -> "redis://:***@host") and the value of a
// "password=" query parameter. What every message of the library shows of a
// URI; use it for your own logs too.
std::string redact_uri(std::string_view uri);

}  // namespace pmap
