// The Redis backend. See pmap/backends/redis.hpp and docs/formats.md.
//
// hiredis (0.14, synchronous API) behind a thin layer of our own (Context,
// Reply, Args below). Every commit is one Lua script, kApplyScript (or
// kCommitScript for a batch with conditional writes, which it checks and
// applies or skips): it applies the writes to the map's hash, appends the
// change record's entry (position from INCR on {P}head, packed ops as in
// change_record.hpp), notes "origin committed seq" in {P}done:<origin>, and
// PUBLISHes the origin — atomically, since Redis runs one script at a
// time, and in one round trip. Readers read the record with another
// script, kReadScript, that returns the entries after a position and the
// values of the keys they put, in one atomic step (a snapshot).
//
// A commit whose connection broke after it was sent is looked up: reconnect,
// end the old connection on the server (CLIENT KILL ID ... ADDR ..., so a
// command it still held can no longer run), then read {P}done:<origin>.

#include "pmap/backends/redis.hpp"

#include <absl/container/flat_hash_map.h>
#include <hiredis/hiredis.h>

#include <algorithm>
#include <charconv>
#include <limits>
#include <thread>
#include <utility>
#include <vector>

#include "../errors.hpp"
#include "builtin.hpp"
#include "change_record.hpp"
#include "file_util.hpp"
#include "pmap/error.hpp"
#include "server_uri.hpp"
#include "wake_fd.hpp"

namespace pmap {

namespace {

constexpr std::size_t kMaxPrefix = 200;
constexpr const char* kKeepRecord = "16384";  // entries the stream keeps (about)
constexpr std::size_t kReadChunk = 1024;      // record entries per read script
constexpr const char* kScanCount = "1000";    // HSCAN's COUNT
constexpr std::chrono::milliseconds kOwnWakeDelay{10};

// KEYS: data, log, head, done. ARGV: origin, seq, tag, channel, keep, n, then
// five per write: op ('p', 'e', 'c'), key, value, condition ('-' none, 'a'
// absent, 'v' the value that follows), expected value. Returns the
// conflicts, three items each: index, 1 if the key was present else 0, its
// value ("" when absent).
constexpr const char* kCommitScript = R"lua(
local data, log, head, done = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local function varint(len)
  local out = {}
  repeat
    local b = len % 128
    len = (len - b) / 128
    if len > 0 then b = b + 128 end
    out[#out + 1] = string.char(b)
  until len == 0
  return table.concat(out)
end
local ops, conflicts = {}, {}
for i = 0, tonumber(ARGV[6]) - 1 do
  local b = 7 + i * 5
  local op, key, cond = ARGV[b], ARGV[b + 1], ARGV[b + 3]
  local apply = true
  if cond ~= '-' then
    local stored = redis.call('HGET', data, key)
    if cond == 'a' then apply = not stored else apply = stored == ARGV[b + 4] end
    if not apply then
      conflicts[#conflicts + 1] = i
      conflicts[#conflicts + 1] = stored and 1 or 0
      conflicts[#conflicts + 1] = stored or ''
    end
  end
  if apply then
    if op == 'p' then
      redis.call('HSET', data, key, ARGV[b + 2])
      ops[#ops + 1] = 'p' .. varint(#key) .. key
    elseif op == 'e' then
      redis.call('HDEL', data, key)
      ops[#ops + 1] = 'e' .. varint(#key) .. key
    else
      redis.call('UNLINK', data)
      ops[#ops + 1] = 'c'
    end
  end
end
redis.call('SET', done, ARGV[2], 'EX', 86400)
if #ops > 0 then
  local pos = redis.call('INCR', head)
  redis.call('XADD', log, 'MAXLEN', '~', ARGV[5], string.format('%d-1', pos),
             'o', ARGV[1], 's', ARGV[2], 't', ARGV[3], 'ops', table.concat(ops))
  redis.call('PUBLISH', ARGV[4], ARGV[1])
end
return conflicts
)lua";

// The common case, a batch without conditional writes: the client packs
// the record's ops, and the writes come as runs of one op each, applied
// with one HSET / HDEL per run (of up to 500 pairs or 1,000 keys: Lua's
// unpack has a limit). KEYS: as above. ARGV: origin, seq, tag, channel,
// keep, ops, then the runs: 'p', n, n key/value pairs | 'e', n, n keys |
// 'c', 0.
constexpr const char* kApplyScript = R"lua(
local data = KEYS[1]
local i, last = 7, #ARGV
while i <= last do
  local op, n = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  local width = op == 'p' and 2 * n or n
  if op == 'c' then
    redis.call('UNLINK', data)
  else
    local command = op == 'p' and 'HSET' or 'HDEL'
    for j = i, i + width - 1, 1000 do
      redis.call(command, data, unpack(ARGV, j, math.min(j + 999, i + width - 1)))
    end
  end
  i = i + width
end
redis.call('SET', KEYS[4], ARGV[2], 'EX', 86400)
local pos = redis.call('INCR', KEYS[3])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], string.format('%d-1', pos),
           'o', ARGV[1], 's', ARGV[2], 't', ARGV[3], 'ops', ARGV[6])
redis.call('PUBLISH', ARGV[4], ARGV[1])
return {}
)lua";

// KEYS: data, log, head. ARGV: from, count, no_values_for. Returns {the
// last position given out, the record's entries after `from` (at most
// count), key/value pairs: the value of each key those entries put (nil
// when absent), but for entries by origin no_values_for}.
constexpr const char* kReadScript = R"lua(
local last = tonumber(redis.call('GET', KEYS[3]) or '0')
local entries = redis.call('XRANGE', KEYS[2], '(' .. ARGV[1] .. '-1', '+', 'COUNT', ARGV[2])
local values = {}
for _, e in ipairs(entries) do
  local f = e[2]
  local origin, ops
  for j = 1, #f, 2 do
    if f[j] == 'o' then origin = f[j + 1] elseif f[j] == 'ops' then ops = f[j + 1] end
  end
  if ops and origin ~= ARGV[3] then
    local i, len = 1, #ops
    while i <= len do
      local c = string.sub(ops, i, i)
      i = i + 1
      if c == 'p' or c == 'e' then
        local n, shift, b = 0, 1, 0
        repeat
          b = string.byte(ops, i) or 0
          i = i + 1
          n = n + (b % 128) * shift
          shift = shift * 128
        until b < 128
        if c == 'p' then
          local key = string.sub(ops, i, i + n - 1)
          values[#values + 1] = key
          values[#values + 1] = redis.call('HGET', KEYS[1], key)
        end
        i = i + n
      elseif c ~= 'c' then
        break
      end
    end
  end
end
return {last, entries, values}
)lua";

struct ContextDeleter {
  void operator()(redisContext* c) const { redisFree(c); }
};
using Context = std::unique_ptr<redisContext, ContextDeleter>;

struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

// One command, formatted as RESP as its arguments are added (binary-safe;
// numbers as text): one copy of each key and value, where hiredis's own
// formatting makes several.
class Args {
 public:
  Args& add(std::string_view s) {
    ++count_;
    body_ += '$';
    append_number(body_, s.size());
    body_ += "\r\n";
    body_.append(s);
    body_ += "\r\n";
    return *this;
  }
  Args& number(std::uint64_t n) {
    std::string digits;
    append_number(digits, n);
    return add(digits);
  }
  // other's arguments after these.
  Args& append(const Args& other) {
    count_ += other.count_;
    body_ += other.body_;
    return *this;
  }
  // Queues the command on c (sent with the next redisGetReply).
  bool queue(redisContext* c) const {
    std::string head = "*";
    append_number(head, count_);
    head += "\r\n";
    return redisAppendFormattedCommand(c, head.data(), head.size()) == REDIS_OK &&
           redisAppendFormattedCommand(c, body_.data(), body_.size()) == REDIS_OK;
  }

 private:
  static void append_number(std::string& out, std::uint64_t n) {
    char buf[24];
    const auto end = std::to_chars(buf, buf + sizeof buf, n).ptr;
    out.append(buf, end);
  }
  std::size_t count_ = 0;
  std::string body_;
};

std::string_view text(const redisReply* r) {
  return r && r->str ? std::string_view(r->str, r->len) : std::string_view();
}

std::uint64_t to_u64(std::string_view s) {
  std::uint64_t v = 0;
  std::from_chars(s.data(), s.data() + s.size(), v);
  return v;
}

// An integer reply, or a number sent as a string.
std::uint64_t number_of(const redisReply* r) {
  if (!r) return 0;
  if (r->type == REDIS_REPLY_INTEGER)
    return r->integer < 0 ? 0 : static_cast<std::uint64_t>(r->integer);
  return to_u64(text(r));
}

timeval to_timeval(std::chrono::milliseconds ms) {
  const auto count = std::max<std::int64_t>(ms.count(), 1);
  return timeval{static_cast<time_t>(count / 1000), static_cast<suseconds_t>(count % 1000 * 1000)};
}

// The connection broke, or a reply never came: the caller decides whether
// the work may have happened.
struct Lost {
  std::string message;
};

// The key names of a map with this prefix: "{P}..." unless P holds a hash
// tag of its own.
std::string key_base(const std::string& prefix) {
  const auto open = prefix.find('{');
  if (open != std::string::npos) {
    const auto close = prefix.find('}', open + 1);
    if (close != std::string::npos && close > open + 1) return prefix;
  }
  return "{" + prefix + "}";
}

}  // namespace

struct RedisBackend::Impl {
  RedisOptions options;
  std::string where;  // redis://user@host:port/db?prefix=P, without the password
  std::string data, log, head, done, channel;
  std::uint64_t origin = 0;
  std::uint64_t seq = 0;  // this session's commits (the record's s field)
  Context conn;
  std::uint64_t client_id = 0;  // conn's, on the server, and its address there
  std::string client_addr;
  std::string commit_sha, apply_sha, read_sha;
  std::function<void(const Error&)> report;

  explicit Impl(RedisOptions opts);
  Impl(const Impl& parent) : Impl(parent.options) { origin = parent.origin; }

  // A new connection, logged in, its db selected. Lost when it cannot be
  // reached; Error(Errc::io) when it refuses the login or the db.
  Context dial() const;
  void connect();
  void live() {
    if (!conn || conn->err) connect();
  }
  // Sends args on c and waits for the reply: Lost when the connection broke
  // (c is then dead), the reply otherwise (errors included).
  static Reply send(redisContext* c, const Args& args);
  // The next reply on c (sending what is queued first).
  static Reply receive(redisContext* c);
  // On conn; an error reply throws Errc::io (doing, and the server's message).
  Reply call(const Args& args, const std::string& doing);
  // The integer reply of a command (nil: 0); Errc::io when it fails.
  std::uint64_t number(std::initializer_list<std::string_view> command, const char* doing);
  // "EVALSHA <sha> <args>", the script loaded first (SCRIPT LOAD, which
  // runs nothing) when sha is not known yet.
  Args evalsha(const char* script, std::string& sha, const Args& args, const std::string& doing);
  // The server forgot the script (restarted, SCRIPT FLUSH): it did not run.
  static bool forgotten(const redisReply* r) {
    return r->type == REDIS_REPLY_ERROR && text(r).starts_with("NOSCRIPT");
  }
  // evalsha() sent and answered, loaded again once if the server forgot it.
  Reply eval(const char* script, std::string& sha, const Args& args, const std::string& doing);

  void check_layout();
  std::uint64_t scan_at(ScanSink& sink);
  std::optional<std::string> get_one(std::string_view key);
  Durability commit(std::span<const Write> batch, std::span<const Expect> expect, std::uint64_t tag,
                    std::vector<Conflict>& conflicts);
  bool resolve(std::uint64_t seq_no, const std::string& why);
  ChangeRead changes_since(std::uint64_t from, std::uint64_t no_values_for);
};

RedisBackend::Impl::Impl(RedisOptions opts) : options(std::move(opts)) {
  const auto printable = [](const std::string& s) {
    return std::all_of(s.begin(), s.end(), [](char c) { return c > ' ' && c < 0x7F; });
  };
  if (options.prefix.empty() || options.prefix.size() > kMaxPrefix || !printable(options.prefix))
    throw Error(Errc::invalid_argument,
                "Redis prefix \"" + options.prefix +
                    "\" is not allowed: use 1 to 200 printable characters without spaces");
  if (options.db < 0) throw Error(Errc::invalid_argument, "Redis db must not be negative");
  if (options.replicas < 0)
    throw Error(Errc::invalid_argument, "Redis replicas must not be negative");
  const std::string user = options.user.empty() ? "" : options.user + "@";
  if (options.socket.empty())
    where = "redis://" + user + options.host + ":" + std::to_string(options.port) + "/" +
            std::to_string(options.db) + "?prefix=" + options.prefix;
  else
    where = "redis+unix://" + user + options.socket + "?db=" + std::to_string(options.db) +
            "&prefix=" + options.prefix;
  const std::string base = key_base(options.prefix);
  data = base + "data";
  log = base + "log";
  head = base + "head";
  channel = base + "changes";
}

Reply RedisBackend::Impl::send(redisContext* c, const Args& args) {
  if (!args.queue(c)) throw Lost{"out of memory"};
  return receive(c);
}

Reply RedisBackend::Impl::receive(redisContext* c) {
  void* r = nullptr;
  if (redisGetReply(c, &r) != REDIS_OK || !r)
    throw Lost{c->errstr[0] ? c->errstr : "the connection broke"};
  return Reply(static_cast<redisReply*>(r));
}

Context RedisBackend::Impl::dial() const {
  const timeval tv = to_timeval(options.timeout);
  Context c(options.socket.empty() ? redisConnectWithTimeout(options.host.c_str(), options.port, tv)
                                   : redisConnectUnixWithTimeout(options.socket.c_str(), tv));
  if (!c) throw Lost{"out of memory"};
  if (c->err)
    throw Lost{std::string("cannot connect (") + c->errstr +
               "): check that the server runs, and the host and port"};
  redisSetTimeout(c.get(), tv);
  if (!options.password.empty()) {
    Args auth;
    auth.add("AUTH");
    if (!options.user.empty()) auth.add(options.user);
    auth.add(options.password);
    const Reply r = send(c.get(), auth);
    if (r->type == REDIS_REPLY_ERROR)
      throw Error(Errc::io, where + ": the server refused the login (" +
                                std::string(text(r.get())) + "): check the user and password");
  }
  // Named after the map, for CLIENT LIST (and the fault tests).
  Args name;
  name.add("CLIENT").add("SETNAME").add("pmap/" + options.prefix);
  if (const Reply r = send(c.get(), name); r->type == REDIS_REPLY_ERROR)
    throw Error(Errc::io,
                where + ": cannot name the connection (" + std::string(text(r.get())) + ")");
  if (options.db != 0) {
    Args select;
    select.add("SELECT").add(std::to_string(options.db));
    const Reply r = send(c.get(), select);
    if (r->type == REDIS_REPLY_ERROR)
      throw Error(Errc::io, where + ": cannot select db " + std::to_string(options.db) + " (" +
                                std::string(text(r.get())) + ")");
  }
  return c;
}

void RedisBackend::Impl::connect() {
  conn.reset();
  Context c = dial();
  Args info;
  info.add("CLIENT").add("INFO");
  const Reply r = send(c.get(), info);
  if (r->type != REDIS_REPLY_STRING)
    throw Error(Errc::io, where + ": the server does not answer CLIENT INFO (" +
                              std::string(text(r.get())) + "): Redis 6.2 or later is needed");
  // "id=7 addr=127.0.0.1:40112 laddr=... name=..."
  const std::string_view line = text(r.get());
  const auto field = [&](std::string_view name) {
    const auto at = line.find(name);
    if (at == std::string_view::npos) return std::string_view();
    const auto start = at + name.size();
    return line.substr(start, line.find(' ', start) - start);
  };
  client_id = to_u64(field("id="));
  client_addr = std::string(field(" addr="));
  conn = std::move(c);
}

Reply RedisBackend::Impl::call(const Args& args, const std::string& doing) {
  live();
  Reply r = send(conn.get(), args);
  if (r->type == REDIS_REPLY_ERROR)
    throw Error(Errc::io, where + ": " + doing + ": " + std::string(text(r.get())));
  return r;
}

Args RedisBackend::Impl::evalsha(const char* script, std::string& sha, const Args& args,
                                 const std::string& doing) {
  if (sha.empty()) {
    Args load;
    load.add("SCRIPT").add("LOAD").add(script);
    sha = std::string(text(call(load, doing).get()));
  }
  Args full;
  full.add("EVALSHA").add(sha).append(args);
  return full;
}

Reply RedisBackend::Impl::eval(const char* script, std::string& sha, const Args& args,
                               const std::string& doing) {
  live();
  Reply r = send(conn.get(), evalsha(script, sha, args, doing));
  if (forgotten(r.get())) {
    sha.clear();
    r = send(conn.get(), evalsha(script, sha, args, doing));
  }
  if (r->type == REDIS_REPLY_ERROR)
    throw Error(Errc::io, where + ": " + doing + ": " + std::string(text(r.get())));
  return r;
}

// Each key of the layout is absent or of its type: never altered otherwise.
void RedisBackend::Impl::check_layout() {
  const std::pair<const std::string*, const char*> expected[] = {
      {&data, "hash"}, {&log, "stream"}, {&head, "string"}};
  for (const auto& [key, type] : expected) {
    Args args;
    args.add("TYPE").add(*key);
    const std::string held(text(call(args, "cannot check the layout").get()));
    if (held != "none" && held != type)
      throw Error(Errc::invalid_argument,
                  where + ": key \"" + *key + "\" holds a " + held + ", not a " + type +
                      ": it belongs to something else; choose another prefix");
  }
}

std::uint64_t RedisBackend::Impl::scan_at(ScanSink& sink) {
  try {
    Args get;
    get.add("GET").add(head);
    const std::uint64_t position = number_of(call(get, "cannot read the store").get());
    std::string cursor = "0";
    do {
      Args scan;
      scan.add("HSCAN").add(data).add(cursor).add("COUNT").add(kScanCount);
      const Reply r = call(scan, "cannot read the store");
      if (r->type != REDIS_REPLY_ARRAY || r->elements != 2)
        throw Error(Errc::io, where + ": cannot read the store: HSCAN gave an unexpected reply");
      cursor = std::string(text(r->element[0]));
      const redisReply* items = r->element[1];
      for (std::size_t i = 0; i + 1 < items->elements; i += 2)
        sink(text(items->element[i]), text(items->element[i + 1]));
    } while (cursor != "0");
    return position;
  } catch (const Lost& lost) {
    conn.reset();
    throw Error(Errc::io, where + ": cannot read the store: " + lost.message);
  }
}

std::uint64_t RedisBackend::Impl::number(std::initializer_list<std::string_view> command,
                                         const char* doing) {
  try {
    live();
    Args args;
    for (std::string_view part : command) args.add(part);
    const Reply r = call(args, doing);
    return r->type == REDIS_REPLY_NIL ? 0 : number_of(r.get());
  } catch (const Lost& lost) {
    conn.reset();
    throw Error(Errc::io, where + ": " + doing + ": " + lost.message);
  }
}

std::optional<std::string> RedisBackend::Impl::get_one(std::string_view key) {
  try {
    Args args;
    args.add("HGET").add(data).add(key);
    const Reply r = call(args, "cannot read key " + detail::shown_key(key));
    if (r->type == REDIS_REPLY_NIL) return std::nullopt;
    return std::string(text(r.get()));
  } catch (const Lost& lost) {
    conn.reset();
    throw Error(Errc::io,
                where + ": cannot read key " + detail::shown_key(key) + ": " + lost.message);
  }
}

Durability RedisBackend::Impl::commit(std::span<const Write> batch, std::span<const Expect> expect,
                                      std::uint64_t tag, std::vector<Conflict>& conflicts) {
  conflicts.clear();
  if (options.read_only)
    throw Error(Errc::invalid_argument,
                where + ": opened read-only (RedisOptions::read_only); it cannot be written");
  if (batch.empty()) return Durability::now;
  try {
    live();
  } catch (const Lost& lost) {
    conn.reset();
    throw Error(Errc::io, where + ": cannot commit, nothing was written: " + lost.message);
  }
  const std::uint64_t seq_no = ++seq;
  Args args;
  args.add("4").add(data).add(log).add(head).add(done);
  args.number(origin).number(seq_no).number(tag).add(channel).add(kKeepRecord);
  const bool conditional = !expect.empty();
  if (conditional) {
    std::vector<const Expect*> condition(batch.size(), nullptr);
    for (const Expect& e : expect)
      if (e.index < batch.size()) condition[e.index] = &e;
    args.number(batch.size());
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const Write& w = batch[i];
      args.add(w.op == Write::Op::put ? "p" : w.op == Write::Op::erase ? "e" : "c");
      args.add(w.key).add(w.op == Write::Op::put ? std::string_view(w.value) : std::string_view());
      const Expect* e = condition[i];
      args.add(!e ? "-" : e->value ? "v" : "a");
      args.add(e && e->value ? std::string_view(*e->value) : std::string_view());
    }
  } else {
    std::string ops;
    for (const Write& w : batch) detail::append_op(ops, w);
    args.add(ops);
    for (std::size_t i = 0; i < batch.size();) {
      std::size_t end = i;
      while (end < batch.size() && batch[end].op == batch[i].op &&
             (batch[i].op != Write::Op::clear || end == i))
        ++end;
      const Write::Op op = batch[i].op;
      args.add(op == Write::Op::put ? "p" : op == Write::Op::erase ? "e" : "c");
      args.number(op == Write::Op::clear ? 0 : end - i);
      for (; i < end; ++i) {
        if (op == Write::Op::clear) continue;
        args.add(batch[i].key);
        if (op == Write::Op::put) args.add(batch[i].value);
      }
    }
  }
  const char* script = conditional ? kCommitScript : kApplyScript;
  std::string& sha = conditional ? commit_sha : apply_sha;
  bool sent = false;
  try {
    // Loading the script runs nothing: only the EVALSHA itself leaves the
    // outcome in doubt.
    const Args full = evalsha(script, sha, args, "cannot commit");
    // With replicas, WAIT goes in the same round trip.
    Args wait;
    wait.add("WAIT")
        .number(static_cast<std::uint64_t>(options.replicas))
        .number(static_cast<std::uint64_t>(options.replica_timeout.count()));
    if (!full.queue(conn.get()) || (options.replicas > 0 && !wait.queue(conn.get())))
      throw Lost{"out of memory"};  // queued only: nothing was sent
    sent = true;
    Reply r = receive(conn.get());
    Reply waited = options.replicas > 0 ? receive(conn.get()) : nullptr;
    if (forgotten(r.get())) {
      sha.clear();
      --seq;
      return commit(batch, expect, tag, conflicts);
    }
    if (r->type == REDIS_REPLY_ERROR)
      throw Error(Errc::io, where + ": cannot commit: " + std::string(text(r.get())));
    for (std::size_t i = 0; r->type == REDIS_REPLY_ARRAY && i + 2 < r->elements; i += 3) {
      Conflict c;
      c.index = static_cast<std::size_t>(number_of(r->element[i]));
      if (number_of(r->element[i + 1]) == 1) c.stored = std::string(text(r->element[i + 2]));
      conflicts.push_back(std::move(c));
    }
    if (waited) {
      const std::uint64_t reached = number_of(waited.get());
      if ((waited->type == REDIS_REPLY_ERROR ||
           reached < static_cast<std::uint64_t>(options.replicas)) &&
          report)
        report(Error(Errc::io, where + ": a commit reached " + std::to_string(reached) + " of " +
                                   std::to_string(options.replicas) + " replicas within " +
                                   std::to_string(options.replica_timeout.count()) +
                                   " ms (it is on the primary; a failover now may lose it)"));
    }
    return Durability::now;
  } catch (const Lost& lost) {
    conn.reset();
    conflicts.clear();
    if (!sent)
      throw Error(Errc::io, where + ": the connection to the server broke before the commit (" +
                                lost.message + "); nothing was written");
    if (resolve(seq_no, lost.message)) return Durability::now;
    throw Error(Errc::io, where + ": the connection to the server broke during the commit (" +
                              lost.message + "); it did not commit");
  } catch (...) {
    conflicts.clear();
    throw;
  }
}

// After the connection broke with the script sent: whether it ran.
// Reconnects (with back-off, for up to options.resolve_timeout), ends the
// old connection on the server if it is still there, then reads what the
// script notes of this origin's last commit.
bool RedisBackend::Impl::resolve(std::uint64_t seq_no, const std::string& why) {
  const std::uint64_t old_id = client_id;
  const std::string old_addr = client_addr;
  const auto deadline = std::chrono::steady_clock::now() + options.resolve_timeout;
  std::chrono::milliseconds delay{50};
  const auto give_up = [&](const std::string& last) {
    if (std::chrono::steady_clock::now() + delay <= deadline) return;
    throw Error(Errc::io, where + ": the connection to the server broke during a commit (" + why +
                              ") and the server could not be asked whether it committed (" + last +
                              "): the outcome is unknown; reopen the map to see the store");
  };
  for (;;) {
    try {
      connect();
      // Both the id and the address: ids start again from 1 after a restart.
      Args kill;
      kill.add("CLIENT").add("KILL").add("ID").number(old_id).add("ADDR").add(old_addr);
      send(conn.get(), kill);  // "No such client" is fine: it is gone already
      Args get;
      get.add("GET").add(done);
      return number_of(call(get, "cannot look up the commit").get()) >= seq_no;
    } catch (const Lost& lost) {
      conn.reset();
      give_up(lost.message);
    } catch (const Error& e) {
      conn.reset();
      give_up(e.what());
    }
    std::this_thread::sleep_for(delay);
    delay = std::min<std::chrono::milliseconds>(delay * 2, std::chrono::seconds(2));
  }
}

// In chunks of kReadChunk entries, each read atomically with the values
// its puts left (a later chunk's puts get later values: per key, the value
// comes from a read at or after its last change in the result).
Backend::ChangeRead RedisBackend::Impl::changes_since(std::uint64_t from,
                                                      std::uint64_t no_values_for) {
  const std::string doing = "cannot read the change record";
  ChangeRead read;
  read.through = from;
  try {
    for (;;) {
      Args args;
      args.add("3").add(data).add(log).add(head);
      args.number(read.through).number(kReadChunk).number(no_values_for);
      const Reply r = eval(kReadScript, read_sha, args, doing);
      if (r->type != REDIS_REPLY_ARRAY || r->elements != 3)
        throw Error(Errc::io, where + ": " + doing + ": the read script gave an unexpected reply");
      const std::uint64_t last = number_of(r->element[0]);
      const redisReply* entries = r->element[1];
      const redisReply* values = r->element[2];
      if (entries->elements == 0) {
        // Nothing after `through`, though positions were given out past it
        // (the stream was trimmed or deleted), or the record ends before it
        // (created again): what happened in between is unknown.
        if (last != read.through) return ChangeRead{true, from, {}};
        return read;
      }
      absl::flat_hash_map<std::string_view, std::optional<std::string>> found;
      for (std::size_t i = 0; i + 1 < values->elements; i += 2) {
        const redisReply* v = values->element[i + 1];
        found[text(values->element[i])] =
            v->type == REDIS_REPLY_NIL ? std::nullopt : std::optional<std::string>(text(v));
      }
      for (std::size_t e = 0; e < entries->elements; ++e) {
        const redisReply* entry = entries->element[e];
        const auto damaged = [&](const std::string& at) {
          return Error(Errc::corrupt, where + ": the change record " + log + " is damaged at " +
                                          at +
                                          "; the map's hash itself is unaffected: reopen every "
                                          "map on it (the record starts again from the hash)");
        };
        if (entry->type != REDIS_REPLY_ARRAY || entry->elements != 2 ||
            entry->element[1]->type != REDIS_REPLY_ARRAY)
          throw damaged("an entry after position " + std::to_string(read.through));
        const std::string_view id = text(entry->element[0]);
        const std::uint64_t pos = to_u64(id.substr(0, id.find('-')));
        if (pos != read.through + 1) return ChangeRead{true, from, {}};  // trimmed past it
        std::uint64_t entry_origin = 0, entry_tag = 0;
        std::optional<std::string_view> ops;
        const redisReply* fields = entry->element[1];
        for (std::size_t f = 0; f + 1 < fields->elements; f += 2) {
          const std::string_view name = text(fields->element[f]);
          const std::string_view value = text(fields->element[f + 1]);
          if (name == "o") entry_origin = to_u64(value);
          if (name == "t") entry_tag = to_u64(value);
          if (name == "ops") ops = value;
        }
        if (!ops) throw damaged("position " + std::to_string(pos));
        const bool own = no_values_for != 0 && entry_origin == no_values_for;
        const bool ok = detail::parse_ops(*ops, [&](Write::Op op, std::string_view key) {
          std::optional<std::string> value;
          if (op == Write::Op::put && !own)
            if (const auto it = found.find(key); it != found.end()) value = it->second;
          read.changes.push_back(
              RecordedChange{entry_origin, entry_tag, op, std::string(key), std::move(value)});
        });
        if (!ok) throw damaged("position " + std::to_string(pos));
        read.through = pos;
      }
      if (entries->elements < kReadChunk) return read;
    }
  } catch (const Lost& lost) {
    conn.reset();
    throw Error(Errc::io, where + ": " + doing + ": " + lost.message);
  }
}

// ---- The backend.

RedisBackend::RedisBackend(RedisOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {
  Impl& d = *impl_;
  d.origin = detail::random_origin();
  d.done = key_base(d.options.prefix) + "done:" + std::to_string(d.origin);
  try {
    d.connect();
    d.check_layout();
  } catch (const Lost& lost) {
    throw Error(Errc::io, d.where + ": " + lost.message);
  }
}

RedisBackend::RedisBackend(RedisBackend&&) noexcept = default;
RedisBackend& RedisBackend::operator=(RedisBackend&&) noexcept = default;
RedisBackend::~RedisBackend() = default;

void RedisBackend::scan(ScanSink sink) { impl_->scan_at(sink); }
std::uint64_t RedisBackend::scan_at(ScanSink sink) { return impl_->scan_at(sink); }
std::optional<std::string> RedisBackend::get(std::string_view key) { return impl_->get_one(key); }
void RedisBackend::write(std::span<const Write> batch) { commit(batch); }

std::optional<std::uint64_t> RedisBackend::count() {
  return impl_->number({"HLEN", impl_->data}, "cannot count the entries");
}

std::optional<std::uint64_t> RedisBackend::bytes() {
  Impl& d = *impl_;
  return d.number({"MEMORY", "USAGE", d.data}, "cannot measure the hash") +
         d.number({"MEMORY", "USAGE", d.log}, "cannot measure the change record");
}

Durability RedisBackend::commit(std::span<const Write> batch) {
  std::vector<Conflict> conflicts;
  return impl_->commit(batch, {}, 0, conflicts);
}

Durability RedisBackend::commit_shared(std::span<const Write> batch, std::span<const Expect> expect,
                                       std::uint64_t tag, std::vector<Conflict>& conflicts) {
  return impl_->commit(batch, expect, tag, conflicts);
}

void RedisBackend::report_to(std::function<void(const Error&)> report) {
  impl_->report = std::move(report);
}

std::string RedisBackend::describe() const { return impl_ ? impl_->where : "redis:(moved-from)"; }
std::uint64_t RedisBackend::origin() const { return impl_->origin; }

// A reader session: a connection that reads the record, and one SUBSCRIBEd
// to the map's channel; interrupt() wakes its wait through an eventfd.
class RedisBackend::Reader final : public Backend {
 public:
  explicit Reader(const Impl& parent) : impl_(parent), wake_(impl_.where) {
    try {
      impl_.connect();
      subscribe();
    } catch (const Lost& lost) {
      throw Error(Errc::io, impl_.where + ": cannot open a reader session: " + lost.message);
    }
  }

  void scan(ScanSink sink) override { impl_.scan_at(sink); }
  std::uint64_t scan_at(ScanSink sink) override { return impl_.scan_at(sink); }
  std::optional<std::string> get(std::string_view key) override { return impl_.get_one(key); }
  void write(std::span<const Write>) override {
    throw Error(Errc::invalid_argument, impl_.where + ": a reader session cannot write");
  }
  std::string describe() const override { return impl_.where; }
  bool shared() const override { return true; }
  std::uint64_t origin() const override { return impl_.origin; }
  ChangeRead changes_since(std::uint64_t from, std::uint64_t no_values_for) override {
    return impl_.changes_since(from, no_values_for);
  }
  void wait_for_change(std::uint64_t from, std::chrono::milliseconds timeout) override;
  void interrupt() override { wake_.signal(); }

 private:
  // A connection SUBSCRIBEd to the channel (Lost when it cannot be made).
  void subscribe() {
    Context c = impl_.dial();
    Args args;
    args.add("SUBSCRIBE").add(impl_.channel);
    const Reply r = Impl::send(c.get(), args);
    if (r->type != REDIS_REPLY_ARRAY)
      throw Error(Errc::io, impl_.where + ": cannot subscribe to " + impl_.channel + " (" +
                                std::string(text(r.get())) + ")");
    sub_ = std::move(c);
  }

  Impl impl_;
  Context sub_;
  detail::WakeFd wake_;
};

// Returns on a message from another session at once, on one of this
// session's own commits within kOwnWakeDelay (several of them make one
// read), on interrupt(), on timeout, or when the subscription broke — and,
// after it was made again, at once, so that the next read catches up on
// whatever was published meanwhile.
void RedisBackend::Reader::wait_for_change(std::uint64_t, std::chrono::milliseconds timeout) {
  using Clock = std::chrono::steady_clock;
  if (!sub_ || sub_->err) {
    sub_.reset();
    try {
      subscribe();
    } catch (...) {
      // The server is away: wait a little (or until interrupted), and let
      // the next read report it.
      wake_.wait(-1, std::min(timeout, std::chrono::milliseconds(100)));
    }
    return;
  }
  redisContext* c = sub_.get();
  const std::string own = std::to_string(impl_.origin);
  auto until = Clock::now() + timeout;
  bool own_seen = false;
  for (;;) {
    for (;;) {  // the messages already read
      void* raw = nullptr;
      if (redisGetReplyFromReader(c, &raw) != REDIS_OK) {
        sub_.reset();
        return;
      }
      if (!raw) break;
      const Reply message(static_cast<redisReply*>(raw));
      const bool mine = message->type == REDIS_REPLY_ARRAY && message->elements == 3 &&
                        text(message->element[2]) == own;
      if (!mine) return;
      if (!own_seen) {
        own_seen = true;
        until = std::min(until, Clock::now() + kOwnWakeDelay);
      }
    }
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now()).count();
    if (left <= 0) return;
    const auto woke = wake_.wait(c->fd, std::chrono::milliseconds(left + 1));
    if (woke == detail::WakeFd::Woke::signalled) return;
    // Input, or the connection ending: reading finds out which.
    if (woke != detail::WakeFd::Woke::timeout && redisBufferRead(c) != REDIS_OK) {
      sub_.reset();
      return;
    }
  }
}

std::unique_ptr<Backend> RedisBackend::open_reader() { return std::make_unique<Reader>(*impl_); }

// ---- URIs

namespace {

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// "%2F" -> "/"; false when an escape is malformed.
bool percent_decode(std::string_view in, std::string& out) {
  out.clear();
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] != '%') {
      out.push_back(in[i]);
      continue;
    }
    if (i + 2 >= in.size()) return false;
    const int hi = hex_digit(in[i + 1]), lo = hex_digit(in[i + 2]);
    if (hi < 0 || lo < 0) return false;
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return true;
}

}  // namespace

RedisOptions detail::parse_redis_uri(std::string_view scheme, std::string_view rest) {
  const std::string uri = std::string(scheme) + ":" + std::string(rest);
  const auto bad = [&](const std::string& why) {
    return Error(Errc::invalid_argument,
                 "bad Redis URI \"" + redact_uri(uri) + "\": " + why +
                     " (redis://[[user]:password@]host[:port][/db][?prefix=P], "
                     "redis+unix://[[user]:password@]/path/to/socket[?db=N&prefix=P])");
  };
  const auto decode = [&](std::string_view in, const char* what) {
    std::string out;
    if (!percent_decode(in, out)) throw bad(std::string("malformed %-escape in the ") + what);
    return out;
  };
  const auto number = [&](std::string_view in, const char* what,
                          long long max = std::numeric_limits<int>::max()) {
    long long v = 0;
    const auto [end, ec] = std::from_chars(in.data(), in.data() + in.size(), v);
    if (ec != std::errc() || end != in.data() + in.size() || v < 0 || v > max)
      throw bad(std::string(what) + " must be a number from 0 to " + std::to_string(max) +
                ", not \"" + std::string(in) + "\"");
    return v;
  };
  if (scheme == "rediss")
    throw bad(
        "TLS (rediss://) is not supported: Debian's hiredis 0.14 has none; reach the "
        "server through a TLS tunnel (stunnel, spiped) with redis://");
  RedisOptions options;
  std::string_view body = rest;
  std::string_view query;
  if (const auto q = body.find('?'); q != std::string_view::npos) {
    query = body.substr(q + 1);
    body = body.substr(0, q);
  }
  const bool unix_socket = scheme != "redis";
  if (body.starts_with("//")) {
    body.remove_prefix(2);
    // user-info: up to the last '@' before the path
    const auto at = body.rfind('@', body.find('/'));
    if (at != std::string_view::npos) {
      const std::string_view info = body.substr(0, at);
      body = body.substr(at + 1);
      const auto colon = info.find(':');
      options.user = decode(info.substr(0, colon), "user");
      if (colon != std::string_view::npos)
        options.password = decode(info.substr(colon + 1), "password");
    }
  } else if (!unix_socket) {
    throw bad("expected \"redis://\"");
  }
  if (unix_socket) {
    if (!body.starts_with("/")) throw bad("the socket path must be absolute");
    options.socket = decode(body, "socket path");
  } else {
    const auto slash = body.find('/');
    std::string_view hostport = body.substr(0, slash);
    if (slash != std::string_view::npos) {
      const std::string_view db = body.substr(slash + 1);
      if (!db.empty()) options.db = static_cast<int>(number(db, "the db"));
    }
    if (hostport.starts_with("[")) {  // [::1]:6379
      const auto close = hostport.find(']');
      if (close == std::string_view::npos) throw bad("unclosed '[' in the host");
      options.host = std::string(hostport.substr(1, close - 1));
      hostport.remove_prefix(close + 1);
      if (hostport.starts_with(":"))
        options.port = static_cast<int>(number(hostport.substr(1), "the port", 65535));
    } else {
      const auto colon = hostport.rfind(':');
      options.host = std::string(hostport.substr(0, colon));
      if (colon != std::string_view::npos)
        options.port = static_cast<int>(number(hostport.substr(colon + 1), "the port", 65535));
    }
    if (options.host.empty()) options.host = "127.0.0.1";
  }
  for (const auto& [name, value] : detail::parse_query(query)) {
    if (name == "prefix")
      options.prefix = decode(value, "prefix");
    else if (name == "db")
      options.db = static_cast<int>(number(value, "db"));
    else if (name == "password")
      options.password = decode(value, "password");
    else if (name == "timeout")
      options.timeout = std::chrono::milliseconds(number(value, "timeout", 86400000));
    else if (name == "resolve_timeout")
      options.resolve_timeout =
          std::chrono::milliseconds(number(value, "resolve_timeout", 86400000));
    else if (name == "replicas")
      options.replicas = static_cast<int>(number(value, "replicas"));
    else if (name == "replica_timeout")
      options.replica_timeout =
          std::chrono::milliseconds(number(value, "replica_timeout", 86400000));
    else if (name == "read_only")
      options.read_only =
          detail::parse_bool("bad Redis URI \"" + redact_uri(uri) + "\"", name, value);
    else
      throw bad("unknown parameter \"" + std::string(name) +
                "\" (known: prefix, db, password, timeout, resolve_timeout, replicas, "
                "replica_timeout, read_only)");
  }
  return options;
}

namespace {

std::unique_ptr<Backend> open_uri(std::string_view scheme, std::string_view rest) {
  return std::make_unique<RedisBackend>(detail::parse_redis_uri(scheme, rest));
}

}  // namespace

}  // namespace pmap

// Registers the redis:, redis+unix:, unix: (and, to refuse it clearly,
// rediss:) schemes when this file is linked in. The pmap::redis target makes
// its consumers reference this symbol (-Wl,--undefined), so a static
// library keeps it.
extern "C" {
extern const int pmap_redis_schemes;
const int pmap_redis_schemes = [] {
  for (const char* scheme : {"redis", "redis+unix", "unix", "rediss"})
    pmap::register_backend(
        scheme, [scheme](std::string_view rest) { return pmap::open_uri(scheme, rest); });
  return 4;
}();
}
