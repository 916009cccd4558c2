/**
 * Owner lookups without the owner script: a batch made only of `ownerOf`
 * calls (what the HTTP guard sends for a request's owner check and its
 * credential record) is answered by a plain `HMGET` of `P o:own` when the
 * store has no idle expiry, or by a small read-only script when it has.
 *
 * Why: the owner script sets up its whole apply machinery on every call
 * (about 20 Lua closures, the server clock, the meta counters, the table
 * size, a bounded sweep of idle bindings), 14-26 µs of Redis time for one
 * `ownerOf` on this VM (17-38 µs with idle expiry); an `HMGET` costs about
 * 1 µs and the read script about 2-4 µs.
 *
 * The answers are the owner script's: the owner fingerprint of each bound
 * session, `null` for an unbound one, and, with idle expiry, `null` for a
 * binding whose idle time is up (unpinned, last used before `now - idleTtlMs`,
 * no `keepMs` floor ahead), read atomically against the server's clock. What
 * differs is only when such an expired binding is dropped and announced: the
 * owner script drops it at the lookup; a read leaves that to the periodic
 * sweep (at least every second) or to the next owner script call, which
 * sweeps expired bindings before it applies anything. Nothing here writes,
 * so the order of this registry's calls is kept by the connection alone (one
 * connection per worker: Redis answers its commands in the order sent).
 *
 * @module
 */

import { Op } from "../../core/operations.ts";
import { sanitizeSessionId } from "../../core/validate.ts";
import { CHUNK_OPS } from "./redis_scripts.ts";

/** Whether every op of a batch is an `ownerOf` (each has one argument). */
export function onlyOwnerLookups(ops: number[]): boolean {
  for (let i = 0; i < ops.length; i++) if (ops[i] !== Op.OwnerOf) return false;
  return ops.length > 0;
}

/**
 * The read script (with idle expiry). KEYS: `P o:own` (routes the call on a
 * cluster; every other key is in its slot). ARGV: prefix, idleTtlMs, then
 * the session ids. Returns `{ results, failures }`: per session its owner or
 * 0, and a flat list of `index (1-based), message` for a malformed binding,
 * as the owner script reports one.
 */
export const OWNER_READ_SCRIPT = `#!lua flags=no-writes
local P = ARGV[1]
local ttl = tonumber(ARGV[2])
local OWN, LRU, KL, KU = P .. 'o:own', P .. 'o:lru', P .. 'o:kl', P .. 'o:ku'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cutoff = (now - ttl) * 1000
local kept = redis.call('ZCARD', KU) > 0
local out, failed = {}, {}
for i = 3, #ARGV do
  local sid = ARGV[i]
  local r = 0
  local v = redis.call('HGET', OWN, sid)
  if v then
    local c = string.find(v, ':', 1, true)
    if c == nil then
      failed[#failed + 1] = i - 2
      failed[#failed + 1] = 'mcp-guard: malformed binding ' .. v
    else
      r = string.sub(v, c + 1)
      if tonumber(string.sub(v, 1, c - 1)) == 0 then
        -- As the owner script's load(): the binding's last use, from o:lru, or from o:kl
        -- once its keepMs floor ended; idle since before the cutoff means expired.
        local sc = tonumber(redis.call('ZSCORE', LRU, sid))
        if sc == nil and kept and (tonumber(redis.call('ZSCORE', KU, sid)) or 0) < now then
          sc = tonumber(redis.call('ZSCORE', KL, sid))
        end
        if sc ~= nil and sc < cutoff then r = 0 end
      end
    end
  end
  out[#out + 1] = r
end
return { out, failed }
`;

/** One lookup batch: per op a ready answer (invalid id) or its place among the sent ids. */
export interface LookupPlan {
  /** Per op: `null` (an invalid id, answered here) or the index of its id in `sids`. */
  index: (number | null)[];
  /** The valid session ids, in op order, in chunks of at most `CHUNK_OPS`. */
  chunks: string[][];
}

/** Plans an `ownerOf`-only batch: invalid ids are answered `null` here, as `planOwner` does. */
export function planLookups(args: unknown[]): LookupPlan {
  const index: (number | null)[] = [];
  const chunks: string[][] = [];
  let n = 0;
  for (const a of args) {
    if (sanitizeSessionId(a) === null) {
      index.push(null);
      continue;
    }
    if (n % CHUNK_OPS === 0) chunks.push([]);
    chunks.at(-1)!.push(a as string);
    index.push(n++);
  }
  return { index, chunks };
}

/** The owner fingerprint in a raw `o:own` value (`<pins>:<fingerprint>`), or `undefined` if malformed. */
export function ownerIn(value: string): string | undefined {
  const c = value.indexOf(":");
  return c < 0 ? undefined : value.slice(c + 1);
}
