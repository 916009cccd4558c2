/**
 * The Lua scripts of the Redis store. Each script applies a whole chunk of a
 * batch (up to {@linkcode CHUNK_OPS} operations) in one atomic server-side
 * step: Redis runs one script at a time, so no other client's command
 * interleaves with it, and every owner operation in it is atomic across
 * processes. The `#!lua` shebang (Redis 7+) makes Redis refuse the script up
 * front under memory pressure instead of failing halfway through.
 *
 * One operation's failure never fails another: the caller validates input
 * before it is sent (invalid input becomes a fail-closed opcode), the script
 * checks every opcode before it applies any, and each operation runs under
 * `pcall`, so an error raised by one (a key of the wrong type, say) is
 * reported for that operation alone while the others stand.
 *
 * Owner keys (P = the prefix; on a Redis Cluster `{prefix}`, a hash tag that puts
 * every key and channel of the prefix in one slot, so each script runs on one node):
 * - `P o:own`    hash    session id -> "<pins>:<owner fingerprint>"
 * - `P o:lru`    zset    UNPINNED session ids by last-use score (global LRU;
 *                        a pinned binding is never evicted, so it leaves it)
 * - `P o:kl`     zset    the same for UNPINNED bindings whose `keepMs` floor
 *                        lasts past their idle expiry: they are evicted in
 *                        LRU order with `o:lru` (the older head of the two
 *                        goes), but never idle-expired, so a sweep of
 *                        `o:lru` never has to step over them
 * - `P o:ku`     zset    session id -> its `keepMs` floor (ms, server clock);
 *                        a floor that ended moves its binding from `o:kl`
 *                        back to `o:lru` (the sweep, or its next use)
 * - `P o:p:<fp>` zset    every session id of one principal by last-use score
 *                        (with `capByFirstWord`, `<fp>` is its first word)
 * - `P o:meta`   hash    seq (last score), pinned, evictions, refusals,
 *                        claims, invalid, full
 * - channel `P o:ev`: bindings evicted or idle-expired, for every process:
 *   `{"cause":"evicted"|"expired","sessionIds":[...],"from":"<instanceId>"}`
 *
 * Cancellation keys:
 * - `P c:slot`     hash  "<sessionId>\n<n|s><requestId>" -> entry id
 * - `P c:ent`      hash  entry id -> "<0|1 cancelled><slot key>"
 * - `P c:s:<sid>`  zset  the session's entry ids in registration order
 * - `P c:age`      zset  entry ids by registration time (ms)
 * - `P c:i:<inst>` set   the entry ids registered by one registry instance
 *                        (dropped together when it closes)
 * - `P c:meta`     hash  seq, registered, ignored, displaced, cancelled
 * - channel `P c:ch:<instanceId>`: abort events for the process running
 *   those entries: `<JSON [sessionId, requestId, reason]>\n<JSON [entry ids]>`
 *
 * Scores are `max(seq + 1, now_ms * 1000)` from the server clock: strictly
 * increasing (exact LRU order, like the in-memory table) and comparable to
 * time (idle expiry).
 *
 * @module
 */

/** Most operations one script call carries; longer batches run as several calls, in order. */
export const CHUNK_OPS = 1_000;

/** Owner opcode inside the script for a call refused on the caller's side (invalid input). */
export const OWNER_INVALID = 19;

/** Owner opcode inside the script: drop up to `limit` idle-expired bindings (the periodic sweep). */
export const OWNER_SWEEP = 10;

/** Cancellation opcode for a registration refused on the caller's side (invalid input). */
export const CANCEL_INVALID = 29;

/** Cancellation opcode: drop every entry this instance registered (on `close`). */
export const CANCEL_CLOSE = 26;

/** Most idle-expired bindings the owner script drops on its own before it applies a chunk. */
export const SWEEP_PER_CALL = 128;

/** Suffix (after the prefix) of the channel that announces evicted and expired bindings. */
export const REMOVED_CHANNEL = "o:ev";

/**
 * Lua shared by both scripts: `message(e)` (an error's text) and a check
 * that every op of ARGV, from index `first`, is known, before any is applied.
 */
export function checkOps(first: number, kind: string): string {
  return `local function message(e)
  if type(e) == 'table' then return tostring(e.err or e.message or 'error') end
  return tostring(e)
end

-- Every op is checked before any is applied: an unknown one is a bug, not input.
local i = ${first}
local n = #ARGV
while i <= n do
  local arity = ARITY[ARGV[i]]
  if arity == nil then
    return redis.error_reply('ERR mcp-guard: unknown ${kind} op ' .. tostring(ARGV[i]))
  end
  i = i + 1 + arity
end
`;
}

/**
 * Lua shared by both scripts: applies every op of ARGV from index `first`,
 * each under `pcall`, into `out` (one result per op) and `failed` (pairs of
 * the failed op's 1-based position and its error text): one op's error
 * never fails the others.
 */
export function applyOps(first: number): string {
  return `local out, failed = {}, {}
i = ${first}
while i <= n do
  local op = ARGV[i]
  local ok, r = pcall(apply, op, i + 1)
  if ok then
    out[#out + 1] = r
  else
    out[#out + 1] = 0
    failed[#failed + 1] = #out
    failed[#failed + 1] = message(r)
  end
  i = i + 1 + ARITY[op]
end
`;
}

/**
 * How a script announces events: `PUBLISH` on a single server, `SPUBLISH` on
 * a cluster (sharded pub/sub: the channel hashes to the keys' slot, so the
 * message stays on that shard instead of being broadcast to every node).
 */
export type Publish = "PUBLISH" | "SPUBLISH";

/**
 * The owner script, announcing removals with `publish`.
 *
 * KEYS: `P o:meta` (declared so a cluster client routes the call to the
 * node serving the prefix's slot; every key the script touches is in that
 * slot). ARGV: prefix, maxEntries, maxPerPrincipal, idleTtlMs (0 = none), instanceId,
 * maxPerSharedPrincipal, capByFirstWord ("1" or "0"), then per op its code and arguments:
 * 1 bind(sid, fp, flags: 1 shared, keepMs) · 2 attach(sid, fp, flags: 1 shared + 2 pin) ·
 * 3 forget(sid, fp or "") · 4 ownerOf(sid) · 5 pin(sid) · 6 unpin(sid) ·
 * 7 size · 8 stats · 9 touch(sid, fp) · 10 sweep(limit) ·
 * 19 invalid (counts one invalid call).
 *
 * Returns `{ results, failures, evicted, expired }`: one result per op (bind
 * 1 bound / 0 refused / 2 full; booleans 1/0; ownerOf the fingerprint or 0;
 * size; stats as an array; sweep the number dropped); `failures` a flat list
 * of `index (1-based), message` for the ops that raised an error (each op runs
 * under `pcall`, so one op's error never undoes or stops the others); the
 * session ids this call evicted and expired. Those are also published on
 * `P o:ev` as JSON `{ cause, sessionIds, from: instanceId }`, so every process
 * sharing the store can close the sessions behind them.
 */
export function ownerScript(publish: Publish): string {
  return `#!lua
local P = ARGV[1]
local maxEntries = tonumber(ARGV[2])
local maxPer = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local self = ARGV[5]
local maxShared = tonumber(ARGV[6])
local byFirstWord = ARGV[7] == '1'
local OWN, LRU, META = P .. 'o:own', P .. 'o:lru', P .. 'o:meta'
local KL, KU = P .. 'o:kl', P .. 'o:ku'

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local m = redis.call('HMGET', META, 'seq', 'pinned', 'evictions', 'refusals', 'claims', 'invalid', 'full')
local seq = tonumber(m[1]) or 0
local pinned = tonumber(m[2]) or 0
local st = { tonumber(m[3]) or 0, tonumber(m[4]) or 0, tonumber(m[5]) or 0, tonumber(m[6]) or 0, tonumber(m[7]) or 0 }
local EVICT, REFUSE, CLAIM, INVALID, FULL = 1, 2, 3, 4, 5
local dirty = false
local size = redis.call('HLEN', OWN)
local cutoff = -1
if ttl > 0 then cutoff = (now - ttl) * 1000 end
local gone = { evicted = {}, expired = {} }
-- Whether any binding has a keepMs floor (else o:kl and o:ku are empty and never read).
local kept = redis.call('ZCARD', KU) > 0

local function fmt(n) return string.format('%.0f', n) end
local function pkey(fp)
  if byFirstWord then fp = string.match(fp, '^[^ ]*') end
  return P .. 'o:p:' .. fp
end
local function bump(i) st[i] = st[i] + 1; dirty = true end
local function nextScore()
  local s = now * 1000
  if s <= seq then s = seq + 1 end
  seq = s
  dirty = true
  return fmt(s)
end
local function parse(v)
  local c = string.find(v, ':', 1, true)
  if c == nil then error('mcp-guard: malformed binding ' .. v) end
  return tonumber(string.sub(v, 1, c - 1)), string.sub(v, c + 1)
end

-- The keepMs floor of sid (ms), or nil.
local function floorOf(sid)
  if not kept then return nil end
  return tonumber(redis.call('ZSCORE', KU, sid))
end

-- Takes an unpinned binding out of its recency index (o:lru or o:kl).
local function unplace(sid)
  redis.call('ZREM', LRU, sid)
  if kept then redis.call('ZREM', KL, sid) end
end

-- Files an unpinned binding just used (score s) in its recency index: o:kl while its floor
-- lasts past its idle expiry (now + ttl), else o:lru (a floor that no longer matters goes).
local function place(sid, s)
  local k = floorOf(sid)
  if k ~= nil and k > now + ttl then
    redis.call('ZREM', LRU, sid)
    redis.call('ZADD', KL, s, sid)
    return
  end
  if k ~= nil then
    redis.call('ZREM', KU, sid)
    redis.call('ZREM', KL, sid)
  end
  redis.call('ZADD', LRU, s, sid)
end

-- Raises sid's floor to now + keep (never lowers it); idle expiry only (ttl > 0).
local function raiseFloor(sid, keep)
  if keep <= 0 or ttl <= 0 then return end
  local k = floorOf(sid)
  if k == nil or now + keep > k then
    redis.call('ZADD', KU, fmt(now + keep), sid)
    kept = true
  end
end

-- Drops a binding; cause 'evicted' or 'expired' is announced, nil (forget) is not.
local function remove(sid, owner, pins, cause)
  redis.call('HDEL', OWN, sid)
  if pins == 0 then unplace(sid) else pinned = pinned - 1 end
  if kept then redis.call('ZREM', KU, sid) end
  redis.call('ZREM', pkey(owner), sid)
  size = size - 1
  dirty = true
  if cause ~= nil then table.insert(gone[cause], sid) end
end

-- The binding of sid as (pins, owner), or nil; drops it first when idle-expired.
local function load(sid)
  local v = redis.call('HGET', OWN, sid)
  if not v then return nil end
  local pins, owner = parse(v)
  if cutoff >= 0 and pins == 0 then
    local sc = tonumber(redis.call('ZSCORE', LRU, sid))
    if sc == nil and kept and (floorOf(sid) or 0) < now then
      -- Kept, but its floor ended (not yet moved back): idle expiry applies again.
      sc = tonumber(redis.call('ZSCORE', KL, sid))
    end
    if sc ~= nil and sc < cutoff then
      remove(sid, owner, 0, 'expired')
      return nil
    end
  end
  return pins, owner
end

local function touch(sid, owner, pins)
  local s = nextScore()
  if pins == 0 then place(sid, s) end
  redis.call('ZADD', pkey(owner), s, sid)
end

local function setPins(sid, owner, old, new)
  redis.call('HSET', OWN, sid, new .. ':' .. owner)
  if old == 0 and new > 0 then
    unplace(sid)
    pinned = pinned + 1
  elseif old > 0 and new == 0 then
    pinned = pinned - 1
  end
  dirty = true
end

-- Evicts the principal's least recently used unpinned binding.
local function evictOwn(key)
  local from = 0
  while true do
    local sids = redis.call('ZRANGE', key, from, from + 31)
    if #sids == 0 then return false end
    for _, sid in ipairs(sids) do
      local v = redis.call('HGET', OWN, sid)
      if not v then
        redis.call('ZREM', key, sid)
        from = from - 1
      else
        local pins, owner = parse(v)
        if pins == 0 then
          remove(sid, owner, 0, 'evicted')
          bump(EVICT)
          return true
        end
      end
    end
    from = from + 32
  end
end

-- The first live session id of a recency index and its score, or nil (drops stale ids).
local function headOf(key)
  while true do
    local head = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    if #head == 0 then return nil end
    local v = redis.call('HGET', OWN, head[1])
    if v then return head[1], tonumber(head[2]), v end
    redis.call('ZREM', key, head[1])
  end
end

-- Evicts the globally least recently used unpinned binding: the older head of o:lru and o:kl.
local function evictGlobal()
  local sid, sc, v = headOf(LRU)
  if kept then
    local ksid, ksc, kv = headOf(KL)
    if ksid ~= nil and (sid == nil or ksc < sc) then sid, v = ksid, kv end
  end
  if sid == nil then return false end
  local _, owner = parse(v)
  remove(sid, owner, 0, 'evicted')
  bump(EVICT)
  return true
end

local function insert(sid, fp, shared, keep)
  local key = pkey(fp)
  if shared then
    -- A shared principal pays with its own oldest binding, at its own cap and when the table
    -- is full: it stands for many callers, so it never pushes anyone else out.
    if redis.call('ZCARD', key) >= maxShared or size >= maxEntries then
      if not evictOwn(key) then bump(FULL); return false end
    end
  elseif redis.call('ZCARD', key) >= maxPer then
    if not evictOwn(key) then bump(FULL); return false end
  elseif size >= maxEntries then
    if not evictGlobal() then bump(FULL); return false end
  end
  redis.call('HSET', OWN, sid, '0:' .. fp)
  raiseFloor(sid, keep)
  local s = nextScore()
  place(sid, s)
  redis.call('ZADD', key, s, sid)
  size = size + 1
  return true
end

-- Drops up to limit unpinned bindings idle since before the cutoff, oldest first.
local function sweep(limit)
  if cutoff < 0 then return 0 end
  if kept then
    -- Floors that ended: their bindings go back to o:lru, where idle expiry sees them.
    local ended = redis.call('ZRANGEBYSCORE', KU, '-inf', '(' .. fmt(now), 'LIMIT', 0, limit)
    for _, sid in ipairs(ended) do
      redis.call('ZREM', KU, sid)
      local sc = redis.call('ZSCORE', KL, sid)
      if sc then
        redis.call('ZREM', KL, sid)
        redis.call('ZADD', LRU, sc, sid)
      end
    end
  end
  local old = redis.call('ZRANGEBYSCORE', LRU, '-inf', '(' .. fmt(cutoff), 'LIMIT', 0, limit)
  local dropped = 0
  for _, sid in ipairs(old) do
    local v = redis.call('HGET', OWN, sid)
    local pins, owner = 1, nil
    if v then pins, owner = parse(v) end
    if owner ~= nil and pins == 0 then
      remove(sid, owner, 0, 'expired')
      dropped = dropped + 1
    else
      redis.call('ZREM', LRU, sid) -- stale: gone, or pinned (pinned bindings leave the LRU)
    end
  end
  return dropped
end

local ARITY = { ['1'] = 4, ['2'] = 3, ['3'] = 2, ['4'] = 1, ['5'] = 1, ['6'] = 1,
  ['7'] = 0, ['8'] = 0, ['9'] = 2, ['10'] = 1, ['19'] = 0 }

-- Applies one op whose arguments start at ARGV[a]; returns its result.
local function apply(op, a)
  local r = 0
  if op == '1' or op == '2' then
    local sid, fp, flags = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
    local shared, pin = flags % 2 == 1, flags >= 2
    local keep = 0
    if op == '1' then keep = tonumber(ARGV[a + 3]) end
    local pins, owner = load(sid)
    if owner ~= nil and owner ~= fp then
      bump(REFUSE)
    elseif owner ~= nil then
      raiseFloor(sid, keep)
      touch(sid, owner, pins)
      r = 1
    elseif insert(sid, fp, shared, keep) then
      pins = 0
      r = 1
      if op == '2' then bump(CLAIM) end
    elseif op == '1' then
      r = 2
    end
    if op == '2' and r == 1 and pin then setPins(sid, fp, pins, pins + 1) end
  elseif op == '3' then
    local sid, fp = ARGV[a], ARGV[a + 1]
    local pins, owner = load(sid)
    if owner == nil then
      r = 1
    elseif fp ~= '' and owner ~= fp then
      bump(REFUSE)
    else
      remove(sid, owner, pins, nil)
      r = 1
    end
  elseif op == '4' then
    local pins, owner = load(ARGV[a])
    if owner ~= nil then r = owner end
  elseif op == '5' then
    local sid = ARGV[a]
    local pins, owner = load(sid)
    if owner ~= nil then
      setPins(sid, owner, pins, pins + 1)
      r = 1
    end
  elseif op == '6' then
    local sid = ARGV[a]
    local pins, owner = load(sid)
    if owner ~= nil and pins > 0 then
      setPins(sid, owner, pins, pins - 1)
      touch(sid, owner, pins - 1)
      r = 1
    end
  elseif op == '7' then
    r = size
  elseif op == '8' then
    r = { size, pinned, st[1], st[2], st[3], st[4], st[5] }
  elseif op == '9' then
    -- A use of the caller's own binding: refreshed like an attach, never a claim or refusal.
    local sid, fp = ARGV[a], ARGV[a + 1]
    local pins, owner = load(sid)
    if owner ~= nil and owner == fp then
      touch(sid, owner, pins)
      r = 1
    end
  elseif op == '10' then
    r = sweep(tonumber(ARGV[a]))
  else
    bump(INVALID)
  end
  return r
end

${checkOps(8, "owner")}
pcall(sweep, ${SWEEP_PER_CALL})

${applyOps(8)}
if dirty then
  redis.call('HSET', META, 'seq', fmt(seq), 'pinned', pinned, 'evictions', st[1],
    'refusals', st[2], 'claims', st[3], 'invalid', st[4], 'full', st[5])
end
for _, cause in ipairs({ 'evicted', 'expired' }) do
  if #gone[cause] > 0 then
    redis.call('${publish}', P .. '${REMOVED_CHANNEL}',
      cjson.encode({ cause = cause, sessionIds = gone[cause], from = self }))
  end
end
return { out, failed, gone.evicted, gone.expired }
`;
}
