/**
 * The Lua scripts of the Redis store. Each script applies a whole chunk of a
 * batch (up to {@linkcode CHUNK_OPS} operations) in one atomic server-side
 * step: Redis runs one script at a time, so no other client's command
 * interleaves with it, and every owner operation in it is atomic across
 * processes. The `#!lua` shebang (Redis 7+) makes Redis refuse the script up
 * front under memory pressure instead of failing halfway through.
 *
 * Owner keys (P = the prefix):
 * - `P o:own`    hash    session id -> "<pins>:<owner fingerprint>"
 * - `P o:lru`    zset    UNPINNED session ids by last-use score (global LRU;
 *                        a pinned binding is never evicted, so it leaves it)
 * - `P o:p:<fp>` zset    every session id of one principal by last-use score
 * - `P o:meta`   hash    seq (last score), pinned, evictions, refusals,
 *                        claims, invalid, full
 *
 * Cancellation keys:
 * - `P c:slot`     hash  "<sessionId>\n<n|s><requestId>" -> entry id
 * - `P c:ent`      hash  entry id -> "<0|1 cancelled><slot key>"
 * - `P c:s:<sid>`  zset  the session's entry ids in registration order
 * - `P c:age`      zset  entry ids by registration time (ms)
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

/** Owner opcodes inside the script (the wire opcodes plus `OWNER_INVALID`). */
export const OWNER_INVALID = 9;

/** Cancellation opcode for a registration refused on the caller's side (invalid input). */
export const CANCEL_INVALID = 29;

/**
 * ARGV: prefix, maxEntries, maxPerPrincipal, idleTtlMs (0 = none), then per op
 * its code and arguments:
 * 1 bind(sid, fp, shared) · 2 attach(sid, fp, flags: 1 shared + 2 pin) ·
 * 3 forget(sid, fp or "") · 4 ownerOf(sid) · 5 pin(sid) · 6 unpin(sid) ·
 * 7 size · 8 stats · 9 invalid (counts one invalid call).
 * Returns one result per op: bind 1 bound / 0 refused / 2 full; booleans
 * 1/0; ownerOf the fingerprint or 0; size; stats as an array.
 */
export const OWNER_SCRIPT = `#!lua
local P = ARGV[1]
local maxEntries = tonumber(ARGV[2])
local maxPer = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local OWN, LRU, META = P .. 'o:own', P .. 'o:lru', P .. 'o:meta'

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

local function fmt(n) return string.format('%.0f', n) end
local function pkey(fp) return P .. 'o:p:' .. fp end
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
  return tonumber(string.sub(v, 1, c - 1)), string.sub(v, c + 1)
end

local function remove(sid, owner, pins)
  redis.call('HDEL', OWN, sid)
  if pins == 0 then redis.call('ZREM', LRU, sid) else pinned = pinned - 1 end
  redis.call('ZREM', pkey(owner), sid)
  size = size - 1
  dirty = true
end

-- The binding of sid as (pins, owner), or nil; drops it first when idle-expired.
local function load(sid)
  local v = redis.call('HGET', OWN, sid)
  if not v then return nil end
  local pins, owner = parse(v)
  if cutoff >= 0 and pins == 0 then
    local sc = tonumber(redis.call('ZSCORE', LRU, sid))
    if sc ~= nil and sc < cutoff then
      remove(sid, owner, 0)
      return nil
    end
  end
  return pins, owner
end

local function touch(sid, owner, pins)
  local s = nextScore()
  if pins == 0 then redis.call('ZADD', LRU, s, sid) end
  redis.call('ZADD', pkey(owner), s, sid)
end

local function setPins(sid, owner, old, new)
  redis.call('HSET', OWN, sid, new .. ':' .. owner)
  if old == 0 and new > 0 then
    redis.call('ZREM', LRU, sid)
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
          remove(sid, owner, 0)
          bump(EVICT)
          return true
        end
      end
    end
    from = from + 32
  end
end

-- Evicts the globally least recently used unpinned binding.
local function evictGlobal()
  while true do
    local head = redis.call('ZRANGE', LRU, 0, 0)
    if #head == 0 then return false end
    local v = redis.call('HGET', OWN, head[1])
    if v then
      local _, owner = parse(v)
      remove(head[1], owner, 0)
      bump(EVICT)
      return true
    end
    redis.call('ZREM', LRU, head[1])
  end
end

local function insert(sid, fp, shared)
  local key = pkey(fp)
  if not shared and redis.call('ZCARD', key) >= maxPer then
    if not evictOwn(key) then bump(FULL); return false end
  elseif size >= maxEntries then
    if not evictGlobal() then bump(FULL); return false end
  end
  redis.call('HSET', OWN, sid, '0:' .. fp)
  local s = nextScore()
  redis.call('ZADD', LRU, s, sid)
  redis.call('ZADD', key, s, sid)
  size = size + 1
  return true
end

if cutoff >= 0 then
  local old = redis.call('ZRANGEBYSCORE', LRU, '-inf', '(' .. fmt(cutoff), 'LIMIT', 0, 128)
  for _, sid in ipairs(old) do
    local v = redis.call('HGET', OWN, sid)
    if v then
      local pins, owner = parse(v)
      remove(sid, owner, pins)
    else
      redis.call('ZREM', LRU, sid)
    end
  end
end

local out = {}
local i = 5
local n = #ARGV
while i <= n do
  local op = ARGV[i]
  local r = 0
  if op == '1' or op == '2' then
    local sid, fp, flags = ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
    local shared, pin = flags % 2 == 1, flags >= 2
    i = i + 4
    local pins, owner = load(sid)
    if owner ~= nil and owner ~= fp then
      bump(REFUSE)
    elseif owner ~= nil then
      touch(sid, owner, pins)
      r = 1
    elseif insert(sid, fp, shared) then
      pins = 0
      r = 1
      if op == '2' then bump(CLAIM) end
    elseif op == '1' then
      r = 2
    end
    if op == '2' and r == 1 and pin then setPins(sid, fp, pins, pins + 1) end
  elseif op == '3' then
    local sid, fp = ARGV[i + 1], ARGV[i + 2]
    i = i + 3
    local pins, owner = load(sid)
    if owner == nil then
      r = 1
    elseif fp ~= '' and owner ~= fp then
      bump(REFUSE)
    else
      remove(sid, owner, pins)
      r = 1
    end
  elseif op == '4' then
    local pins, owner = load(ARGV[i + 1])
    i = i + 2
    if owner ~= nil then r = owner end
  elseif op == '5' then
    local sid = ARGV[i + 1]
    i = i + 2
    local pins, owner = load(sid)
    if owner ~= nil then
      setPins(sid, owner, pins, pins + 1)
      r = 1
    end
  elseif op == '6' then
    local sid = ARGV[i + 1]
    i = i + 2
    local pins, owner = load(sid)
    if owner ~= nil and pins > 0 then
      setPins(sid, owner, pins, pins - 1)
      touch(sid, owner, pins - 1)
      r = 1
    end
  elseif op == '7' then
    i = i + 1
    r = size
  elseif op == '8' then
    i = i + 1
    r = { size, pinned, st[1], st[2], st[3], st[4], st[5] }
  elseif op == '9' then
    i = i + 1
    bump(INVALID)
  else
    return redis.error_reply('ERR mcp-guard: unknown owner op ' .. tostring(op))
  end
  out[#out + 1] = r
end

if dirty then
  redis.call('HSET', META, 'seq', fmt(seq), 'pinned', pinned, 'evictions', st[1],
    'refusals', st[2], 'claims', st[3], 'invalid', st[4], 'full', st[5])
end
return out
`;

/**
 * ARGV: prefix, maxEntries, instanceId, requestTtlMs (0 = none), then per op:
 * 20 register(sid, slotKey, entryId) · 21 deregister(entryId) ·
 * 22 cancel(slotKey, meta) · 23 cancelAll(sid, meta) · 24 size · 25 stats ·
 * 29 invalid registration (counts one ignored).
 * `meta` is the JSON `[sessionId, requestId | null, reason | null]` published
 * with the entry ids to every other process that runs a cancelled entry.
 * Returns one result per op: booleans 1/0; cancel the entry id or 0;
 * cancelAll the entry ids; size; stats as an array.
 */
export const CANCEL_SCRIPT = `#!lua
local P = ARGV[1]
local maxEntries = tonumber(ARGV[2])
local self = ARGV[3]
local ttl = tonumber(ARGV[4])
local SLOT, ENT, AGE, META = P .. 'c:slot', P .. 'c:ent', P .. 'c:age', P .. 'c:meta'

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local m = redis.call('HMGET', META, 'seq', 'registered', 'ignored', 'displaced', 'cancelled')
local seq = tonumber(m[1]) or 0
local registered, ignored = tonumber(m[2]) or 0, tonumber(m[3]) or 0
local displaced, cancelled = tonumber(m[4]) or 0, tonumber(m[5]) or 0
local dirty = false
local size = redis.call('HLEN', ENT)

local function fmt(n) return string.format('%.0f', n) end
local function skey(sid) return P .. 'c:s:' .. sid end
local function sidOf(key) return string.sub(key, 1, string.find(key, '\\n', 1, true) - 1) end

-- Drops an entry; 1 when it still owned its slot (and so freed it).
local function drop(eid, v)
  local key = string.sub(v, 2)
  redis.call('HDEL', ENT, eid)
  redis.call('ZREM', skey(sidOf(key)), eid)
  redis.call('ZREM', AGE, eid)
  size = size - 1
  if redis.call('HGET', SLOT, key) == eid then
    redis.call('HDEL', SLOT, key)
    return 1
  end
  return 0
end

-- Entry ids are "<instanceId>.<n>": tell every other instance to abort its own.
local function notify(ids, meta)
  local groups, order = {}, {}
  for _, eid in ipairs(ids) do
    local inst = string.match(eid, '^(.*)%.[^.]*$')
    if inst ~= nil and inst ~= self then
      if groups[inst] == nil then
        groups[inst] = {}
        order[#order + 1] = inst
      end
      table.insert(groups[inst], eid)
    end
  end
  for _, inst in ipairs(order) do
    redis.call('PUBLISH', P .. 'c:ch:' .. inst, meta .. '\\n' .. cjson.encode(groups[inst]))
  end
end

if ttl > 0 then
  local old = redis.call('ZRANGEBYSCORE', AGE, '-inf', '(' .. fmt(now - ttl), 'LIMIT', 0, 128)
  for _, eid in ipairs(old) do
    local v = redis.call('HGET', ENT, eid)
    if v then drop(eid, v) else redis.call('ZREM', AGE, eid) end
  end
end

local out = {}
local i = 5
local n = #ARGV
while i <= n do
  local op = ARGV[i]
  local r = 0
  if op == '20' then
    local sid, key, eid = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
    i = i + 4
    if size >= maxEntries or redis.call('HEXISTS', ENT, eid) == 1 then
      ignored = ignored + 1
    else
      if redis.call('HSET', SLOT, key, eid) == 0 then displaced = displaced + 1 end
      redis.call('HSET', ENT, eid, '0' .. key)
      seq = seq + 1
      redis.call('ZADD', skey(sid), seq, eid)
      redis.call('ZADD', AGE, now, eid)
      size = size + 1
      registered = registered + 1
      r = 1
    end
    dirty = true
  elseif op == '21' then
    local eid = ARGV[i + 1]
    i = i + 2
    local v = redis.call('HGET', ENT, eid)
    if v then r = drop(eid, v) end
  elseif op == '22' then
    local key, meta = ARGV[i + 1], ARGV[i + 2]
    i = i + 3
    local eid = redis.call('HGET', SLOT, key)
    if eid then
      local v = redis.call('HGET', ENT, eid)
      if v and string.sub(v, 1, 1) == '0' then
        redis.call('HSET', ENT, eid, '1' .. string.sub(v, 2))
        cancelled = cancelled + 1
        dirty = true
        notify({ eid }, meta)
        r = eid
      end
    end
  elseif op == '23' then
    local sid, meta = ARGV[i + 1], ARGV[i + 2]
    i = i + 3
    local ids = redis.call('ZRANGE', skey(sid), 0, -1)
    local hit = {}
    for _, eid in ipairs(ids) do
      local v = redis.call('HGET', ENT, eid)
      if v and string.sub(v, 1, 1) == '0' then
        redis.call('HSET', ENT, eid, '1' .. string.sub(v, 2))
        hit[#hit + 1] = eid
      end
    end
    if #hit > 0 then
      cancelled = cancelled + #hit
      dirty = true
      notify(hit, meta)
    end
    r = hit
  elseif op == '24' then
    i = i + 1
    r = size
  elseif op == '25' then
    i = i + 1
    r = { size, registered, ignored, displaced, cancelled }
  elseif op == '29' then
    i = i + 1
    ignored = ignored + 1
    dirty = true
  else
    return redis.error_reply('ERR mcp-guard: unknown cancel op ' .. tostring(op))
  end
  out[#out + 1] = r
end

if dirty then
  redis.call('HSET', META, 'seq', seq, 'registered', registered, 'ignored', ignored,
    'displaced', displaced, 'cancelled', cancelled)
end
return out
`;
