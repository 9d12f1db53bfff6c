//! Every Lua script the Redis backend runs: each atomic step that takes more than one command.

use redis::Script;

/// Lua function `prune(index, expiries, now)`: looks at up to two keys that [`keys::kv_expiries`]
/// says were due to expire by `now` and drops the index entries of those that are gone (a key
/// rewritten without expiry leaves the expiry set; one with a later expiry gets its new time).
/// Every write with an expiry runs it when entries are due (in this script or, after a `MULTI`,
/// as [`PRUNE_SCRIPT`]), so entries of expired keys are removed at least as fast as expiring
/// keys are written.
macro_rules! prune_lua {
    () => {
        r"
local function prune(index, expiries, now)
  for _, key in ipairs(redis.call('ZRANGEBYSCORE', expiries, '-inf', now, 'LIMIT', 0, 2)) do
    local left = redis.call('PTTL', key)
    if left == -2 then
      redis.call('ZREM', index, key)
      redis.call('ZREM', expiries, key)
    elseif left == -1 then
      redis.call('ZREM', expiries, key)
    else
      redis.call('ZADD', expiries, now + left, key)
    end
  end
end
"
    };
}

/// The index's upkeep on its own, for a write made with `MULTI` that saw expiry entries due.
/// KEYS: index, expiries. ARGV: now ms.
const PRUNE_SCRIPT: &str = concat!(
    prune_lua!(),
    r"
prune(KEYS[1], KEYS[2], tonumber(ARGV[1]))
return 1
"
);

/// One page of an app's index: members between ARGV[1] and ARGV[2] (ZRANGEBYLEX bounds), at
/// most ARGV[3]; members whose key no longer exists (expired) are dropped from the index and
/// not returned. KEYS: index. Returns `{members read, last member read or '', live keys}`.
const LIST_SCRIPT: &str = r"
local members = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], ARGV[2], 'LIMIT', 0, ARGV[3])
local live = {}
for _, key in ipairs(members) do
  if redis.call('EXISTS', key) == 1 then
    live[#live + 1] = key
  else
    redis.call('ZREM', KEYS[1], key)
  end
end
return {#members, members[#members] or '', live}
";

/// Compare-and-swap in one atomic step. KEYS[1]: key; for a kv key also KEYS[2], KEYS[3]: its
/// index and expiries. ARGV: expect-present flag ("1"/"0"), expected value, new value, ttl
/// seconds ("" for none), now ms. The expiry entry is a `ZADD NX`, as in the writes' `MULTI`
/// (`kv::index_expiring`): a key that already expires keeps its entry, and when that entry
/// falls due `prune` finds the key alive and moves it to the key's new time. Creates of kv keys
/// (nothing expected) do not come here: `RedisBackend::create` makes them with `SET NX` in a
/// `MULTI`.
const CAS_SCRIPT: &str = concat!(
    prune_lua!(),
    r"
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current ~= ARGV[2] then return 0 end
else
  if current then return 0 end
end
if ARGV[4] == '' then
  redis.call('SET', KEYS[1], ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[3], 'EX', ARGV[4])
end
if KEYS[2] then
  redis.call('ZADD', KEYS[2], 0, KEYS[1])
  if ARGV[4] ~= '' then
    local now = tonumber(ARGV[5])
    redis.call('ZADD', KEYS[3], 'NX', now + tonumber(ARGV[4]) * 1000, KEYS[1])
    prune(KEYS[2], KEYS[3], now)
  end
end
return 1
"
);

/// Replaces one function's entry and history if both are still what the caller read.
/// KEYS: functions, history, version, components, claims. ARGV: name, expected entry, expected
/// history, new entry, new history (each "" for absent), claim id ("" for none), digests....
const SWAP_FUNCTION_SCRIPT: &str = r"
local entry = redis.call('HGET', KEYS[1], ARGV[1]) or ''
local history = redis.call('HGET', KEYS[2], ARGV[1]) or ''
if entry ~= ARGV[2] or history ~= ARGV[3] then return 0 end
if ARGV[4] == '' then redis.call('HDEL', KEYS[1], ARGV[1]) else redis.call('HSET', KEYS[1], ARGV[1], ARGV[4]) end
if ARGV[5] == '' then redis.call('HDEL', KEYS[2], ARGV[1]) else redis.call('HSET', KEYS[2], ARGV[1], ARGV[5]) end
for i = 7, #ARGV do redis.call('SADD', KEYS[4], ARGV[i]) end
if ARGV[6] ~= '' then redis.call('HDEL', KEYS[5], ARGV[6]) end
redis.call('INCR', KEYS[3])
return 1
";

/// Claims a digest unless a collector is deleting it. KEYS: claims, deleting, components.
/// ARGV: claim id, digest, now ms, lease ms. Returns 0 when claimed, else milliseconds to wait.
const CLAIM_SCRIPT: &str = r"
local now = tonumber(ARGV[3])
local deleting = tonumber(redis.call('HGET', KEYS[2], ARGV[2]) or '0') or 0
if deleting > now then return deleting - now end
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d %s', now + tonumber(ARGV[4]), ARGV[2]))
redis.call('SADD', KEYS[3], ARGV[2])
return 0
";

/// Marks for deletion every stored digest that no entry, kept version or live claim
/// references, and returns `[digest, mark]` pairs. KEYS: components, functions, history,
/// claims, deleting. ARGV: now ms, delete lease ms. Expired claims are dropped on the way.
/// Any unreadable JSON stops it before it marks anything: better to keep garbage than to
/// delete bytes a version needs.
const COLLECT_SCRIPT: &str = r"
local now = tonumber(ARGV[1])
local keep = {}
for _, json in ipairs(redis.call('HVALS', KEYS[2])) do
  local ok, entry = pcall(cjson.decode, json)
  if not ok or type(entry) ~= 'table' or type(entry.digest) ~= 'string' then
    return redis.error_reply('unreadable function entry; collecting nothing')
  end
  keep[entry.digest] = true
end
for _, json in ipairs(redis.call('HVALS', KEYS[3])) do
  local ok, versions = pcall(cjson.decode, json)
  if not ok or type(versions) ~= 'table' then
    return redis.error_reply('unreadable version history; collecting nothing')
  end
  for _, version in ipairs(versions) do
    if type(version) ~= 'table' or type(version.digest) ~= 'string' then
      return redis.error_reply('unreadable version history; collecting nothing')
    end
    keep[version.digest] = true
  end
end
local claims = redis.call('HGETALL', KEYS[4])
for i = 1, #claims, 2 do
  local expiry, digest = string.match(claims[i + 1], '^(%d+) (%S+)$')
  if expiry and tonumber(expiry) > now then
    keep[digest] = true
  else
    redis.call('HDEL', KEYS[4], claims[i])
  end
end
local doomed = {}
for _, digest in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local marked = tonumber(redis.call('HGET', KEYS[5], digest) or '0') or 0
  if not keep[digest] and marked <= now then
    local mark = string.format('%d', now + tonumber(ARGV[2]))
    redis.call('HSET', KEYS[5], digest, mark)
    doomed[#doomed + 1] = digest
    doomed[#doomed + 1] = mark
  end
end
return doomed
";

/// Forgets a digest whose bytes were deleted, if the deletion mark is still this collector's
/// (a deploy that waited out an expired mark has claimed the digest again). KEYS: components,
/// deleting. ARGV: digest, mark.
const FORGET_SCRIPT: &str = r"
if redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[2] then
  redis.call('SREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
end
return 0
";

/// The Lua scripts, each with its SHA-1 computed once (sent by hash, the source only when
/// Redis does not know it yet).
pub(super) struct Scripts {
    pub(super) cas: Script,
    pub(super) prune: Script,
    pub(super) list: Script,
    pub(super) swap_function: Script,
    pub(super) claim: Script,
    pub(super) collect: Script,
    pub(super) forget: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Scripts {
            cas: Script::new(CAS_SCRIPT),
            prune: Script::new(PRUNE_SCRIPT),
            list: Script::new(LIST_SCRIPT),
            swap_function: Script::new(SWAP_FUNCTION_SCRIPT),
            claim: Script::new(CLAIM_SCRIPT),
            collect: Script::new(COLLECT_SCRIPT),
            forget: Script::new(FORGET_SCRIPT),
        }
    }
}
