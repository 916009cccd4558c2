/**
 * The Lua script of the Redis cancellation store (see `redis_scripts.ts`
 * for the key layout shared with the owner script).
 *
 * @module
 */

import { applyOps, checkOps, type Publish } from "./redis_scripts.ts";

/**
 * The cancellation script, sending abort events with `publish` (see
 * `ownerScript`).
 *
 * KEYS: `P c:meta` (for routing, as in the owner script).
 * ARGV: prefix, maxEntries, instanceId, requestTtlMs (0 = none), then per op:
 * 20 register(sid, slotKey, entryId) · 21 deregister(entryId) ·
 * 22 cancel(slotKey, meta) · 23 cancelAll(sid, meta) · 24 size · 25 stats ·
 * 26 close (drops every entry instanceId registered) ·
 * 29 invalid registration (counts one ignored).
 * `meta` is the JSON `[sessionId, requestId | null, reason | null]` published
 * with the entry ids to every other process that runs a cancelled entry.
 * Returns `{ results, failures }`: one result per op (booleans 1/0; cancel
 * the entry id or 0; cancelAll the entry ids; size; stats as an array; close
 * the number of entries dropped), and a flat list of `index (1-based),
 * message` for the ops that raised an error.
 */
export function cancelScript(publish: Publish): string {
  return `#!lua
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
-- Entry ids are "<instanceId>.<n>".
local function instOf(eid) return string.match(eid, '^(.*)%.[^.]*$') end
local function ikey(inst) return P .. 'c:i:' .. inst end

-- Drops an entry; 1 when it still owned its slot (and so freed it).
local function drop(eid, v)
  local key = string.sub(v, 2)
  redis.call('HDEL', ENT, eid)
  redis.call('ZREM', skey(sidOf(key)), eid)
  redis.call('ZREM', AGE, eid)
  local inst = instOf(eid)
  if inst ~= nil then redis.call('SREM', ikey(inst), eid) end
  size = size - 1
  if redis.call('HGET', SLOT, key) == eid then
    redis.call('HDEL', SLOT, key)
    return 1
  end
  return 0
end

-- Tells every other instance to abort its own entries among ids.
local function notify(ids, meta)
  local groups, order = {}, {}
  for _, eid in ipairs(ids) do
    local inst = instOf(eid)
    if inst ~= nil and inst ~= self then
      if groups[inst] == nil then
        groups[inst] = {}
        order[#order + 1] = inst
      end
      table.insert(groups[inst], eid)
    end
  end
  for _, inst in ipairs(order) do
    redis.call('${publish}', P .. 'c:ch:' .. inst, meta .. '\\n' .. cjson.encode(groups[inst]))
  end
end

local function expire()
  local old = redis.call('ZRANGEBYSCORE', AGE, '-inf', '(' .. fmt(now - ttl), 'LIMIT', 0, 128)
  for _, eid in ipairs(old) do
    local v = redis.call('HGET', ENT, eid)
    if v then drop(eid, v) else redis.call('ZREM', AGE, eid) end
  end
end

local ARITY = { ['20'] = 3, ['21'] = 1, ['22'] = 2, ['23'] = 2, ['24'] = 0, ['25'] = 0,
  ['26'] = 0, ['29'] = 0 }

-- Applies one op whose arguments start at ARGV[a]; returns its result.
local function apply(op, a)
  local r = 0
  if op == '20' then
    local sid, key, eid = ARGV[a], ARGV[a + 1], ARGV[a + 2]
    dirty = true
    if size >= maxEntries or redis.call('HEXISTS', ENT, eid) == 1 then
      ignored = ignored + 1
    else
      -- The session's own key first: if it cannot be written, nothing else was.
      redis.call('ZADD', skey(sid), seq + 1, eid)
      seq = seq + 1
      if redis.call('HSET', SLOT, key, eid) == 0 then displaced = displaced + 1 end
      redis.call('HSET', ENT, eid, '0' .. key)
      redis.call('ZADD', AGE, now, eid)
      local inst = instOf(eid)
      if inst ~= nil then redis.call('SADD', ikey(inst), eid) end
      size = size + 1
      registered = registered + 1
      r = 1
    end
  elseif op == '21' then
    local v = redis.call('HGET', ENT, ARGV[a])
    if v then r = drop(ARGV[a], v) end
  elseif op == '22' then
    local key, meta = ARGV[a], ARGV[a + 1]
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
    local sid, meta = ARGV[a], ARGV[a + 1]
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
    r = size
  elseif op == '25' then
    r = { size, registered, ignored, displaced, cancelled }
  elseif op == '26' then
    -- This instance closes: nobody is left to abort its entries, so a cancel must not find them.
    local mine = ikey(self)
    local ids = redis.call('SMEMBERS', mine)
    for _, eid in ipairs(ids) do
      local v = redis.call('HGET', ENT, eid)
      if v then
        drop(eid, v)
        r = r + 1
      end
    end
    redis.call('DEL', mine)
  else
    ignored = ignored + 1
    dirty = true
  end
  return r
end

${checkOps(5, "cancel")}
if ttl > 0 then pcall(expire) end

${applyOps(5)}
if dirty then
  redis.call('HSET', META, 'seq', seq, 'registered', registered, 'ignored', ignored,
    'displaced', displaced, 'cancelled', cancelled)
end
return { out, failed }
`;
}
