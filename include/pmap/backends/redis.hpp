// pmap/backends/redis.hpp — a shared store on a Redis server (CMake
// component pmap::redis, built when hiredis is found).
//
//   pmap::PersistentMap<std::string, int> m{"redis://:secret@cache.internal:6379/0?prefix=app:"};
//   pmap::PersistentMap<std::string, int> n{pmap::RedisBackend(
//       {.host = "cache.internal", .port = 6379, .password = "secret", .db = 0, .prefix =
//       "app:"})};
//
// Any number of maps, in any processes on any hosts, open one prefix; each
// map's cache stays coherent (see "Scaling out: Redis" in the README).
//
// URIs (pmap::open_backend):
//   redis://[[user]:password@]host[:port][/db][?prefix=P&timeout=MS&replicas=N&replica_timeout=MS&read_only=true]
//   redis+unix://[[user]:password@]/path/to/redis.sock[?db=N&prefix=P&...]
//   unix:/path/to/redis.sock[?db=N&prefix=P&...]   (redis-py's spelling)
// The user, password and prefix may be percent-encoded. rediss:// (TLS) is
// refused: Debian's hiredis 0.14 has no TLS.
//
// Layout (see docs/formats.md): the map's keys all begin with "{P}" — P,
// the prefix, as a Redis Cluster hash tag, so that they share one slot and
// a commit touches one node (a prefix that holds a "{...}" tag of its own
// is used as it is):
//   {P}data     a hash: field = the map's key, value = its value
//   {P}log      a stream: the change record, one entry per commit, id
//               "<position>-1", fields o (origin), s (seq), t (tag), ops
//   {P}head     a string: the last position given out
//   {P}done:<origin>  a string: the last seq that origin committed (expires
//               after a day; what a commit in doubt is looked up by)
// and commits PUBLISH the committer's origin on channel "{P}changes".
//
// Writes: each commit is one Lua script (EVALSHA), sent in one round trip
// and run atomically by the server: conditional writes are checked and
// applied or skipped there, the hash is changed, the record's entry added
// (the stream is trimmed to about 16,384 entries), and the wake-up
// published. Durability is the server's: a commit returns once Redis has
// run the script — on disk by then only with appendonly yes and appendfsync
// always; with everysec (Redis's default for AOF) a server crash can lose
// the last second; without persistence a restart loses everything. With
// replicas = N, each commit also waits (WAIT) until N replicas have it, up
// to replica_timeout; fewer is reported to Options::on_error, and the
// commit still counts as done (it is on the primary; Redis replication is
// asynchronous, and a failover may lose it either way).
//
// Readers (open_reader(), the map's watcher) have two connections of their
// own: one SUBSCRIBEd to the channel, one that reads the record after a
// position with a read-only script (entries and the values of the keys put,
// atomically), after every message and every reconnect — so a lost message
// delays a change, never loses it. Messages about this session's own commits
// wake the reader at most every 10 ms, others' at once.
//
// Faults: a connection that breaks is reconnected on the next call. When it
// breaks during a commit, the backend reconnects (retrying with back-off for
// up to RedisOptions::resolve_timeout), ends the old connection on the server
// if it is still there (CLIENT KILL ID), and looks up {P}done:<origin>: commit()
// returns when the script ran and throws Errc::io when it did not, so a batch
// is never applied twice. When the server stays unreachable for that long,
// the outcome is unknown and commit() throws Errc::io saying so.
//
// Errors at construction: Errc::invalid_argument (a malformed URI, an empty
// or unprintable prefix, a key of the layout holding another type);
// Errc::io (the server cannot be reached, refuses the login or the db: the
// message names host and port). Messages and describe() never contain the
// password.
//
// Thread safety: like every backend, one thread at a time; a reader session
// on a thread of its own, its interrupt() from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "pmap/backend.hpp"

namespace pmap {

struct RedisOptions {
  std::string host = "127.0.0.1";
  int port = 6379;
  // AUTH: a password alone (requirepass), or with `user`, an ACL user's.
  std::string password{};
  int db = 0;
  // Names the map: every key of it begins with "{prefix}". Default "pmap:".
  std::string prefix = "pmap:";
  std::string user{};
  // A Unix socket path; when set, host and port are not used.
  std::string socket{};
  // Connecting, and waiting for any one reply. Default: 10 s.
  std::chrono::milliseconds timeout{10000};
  // How long a commit whose connection broke keeps trying to reach the
  // server to find out whether it committed. Default: 60 s.
  std::chrono::milliseconds resolve_timeout{60000};
  // Replicas each commit waits for (WAIT), and for how long at most.
  int replicas = 0;
  std::chrono::milliseconds replica_timeout{1000};
  // Open for reading only: write() and commit() throw
  // Errc::invalid_argument (a Redis opener creates nothing either way).
  // URI: read_only=true. Default: false.
  bool read_only = false;
};

class RedisBackend final : public Backend {
 public:
  explicit RedisBackend(RedisOptions options = {});
  RedisBackend(RedisBackend&&) noexcept;
  RedisBackend& operator=(RedisBackend&&) noexcept;
  ~RedisBackend() override;

  void scan(ScanSink sink) override;
  std::optional<std::string> get(std::string_view key) override;
  void write(std::span<const Write> batch) override;
  std::string describe() const override;
  Durability commit(std::span<const Write> batch) override;
  void report_to(std::function<void(const Error&)> report) override;
  std::unique_ptr<Backend> open_reader() override;
  // One commit is one Lua script, which every other client of the server
  // waits behind: 1,000 writes run in about 1 ms, and a burst commits no
  // slower in bulk than in groups of 16,384 (bench/notes.md, "Redis").
  std::size_t max_commit_writes() const override { return 1000; }
  bool shared() const override { return true; }
  // For tools: HLEN of the hash; MEMORY USAGE of the hash and the record.
  std::optional<std::uint64_t> count() override;
  std::optional<std::uint64_t> bytes() override;
  std::uint64_t origin() const override;
  std::uint64_t scan_at(ScanSink sink) override;
  Durability commit_shared(std::span<const Write> batch, std::span<const Expect> expect,
                           std::uint64_t tag, std::vector<Conflict>& conflicts) override;

 private:
  struct Impl;
  class Reader;  // open_reader()'s sessions
  std::unique_ptr<Impl> impl_;
};

}  // namespace pmap
