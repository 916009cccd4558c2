/**
 * The owner table's vocabulary: bind outcomes, counters, bounds and their
 * validation, shared by the pure table, the facades and every store.
 *
 * @module
 */

import { InvalidInputError } from "./errors.ts";
import { checkCount, isValidFingerprint } from "./validate.ts";

/**
 * Outcome of `SessionOwnerRegistry.bind`: `"bound"` (new binding or the
 * caller's own refreshed), `"refused"` (another owner, or blank input),
 * `"full"` (every evictable slot is pinned).
 *
 * @example
 * ```ts
 * import { type BindResult, SessionOwnerRegistry } from "@mcp-guard/session";
 *
 * await using owners = new SessionOwnerRegistry();
 * const result: BindResult = await owners.bind("s-1", "fp-alice");
 * if (result !== "bound") throw new Error(`session not owned: ${result}`);
 * ```
 */
export type BindResult = "bound" | "refused" | "full";

/**
 * Counters reported by `SessionOwnerRegistry.stats()`.
 *
 * @example
 * ```ts
 * import { type OwnerStats, SessionOwnerRegistry } from "@mcp-guard/session";
 *
 * await using owners = new SessionOwnerRegistry();
 * const stats: OwnerStats = await owners.stats();
 * console.log(stats.size, stats.evictions, stats.refusals); // 0 0 0
 * ```
 */
export interface OwnerStats {
  /** Bindings currently held. */
  size: number;
  /** Bindings currently pinned by a live stream. */
  pinned: number;
  /** Bindings dropped to make room (global LRU or per-principal cap). */
  evictions: number;
  /** Calls refused because another principal owns the session. */
  refusals: number;
  /** Unbound sessions claimed trust-on-first-use by `authorizeAttach`. */
  claims: number;
  /** Calls refused because their input was blank or invalid. */
  invalid: number;
  /** Calls answered `"full"`/`false` because every candidate was pinned. */
  full: number;
  /** Times the worker was restarted after dying (its state was lost). */
  restarts: number;
}

/**
 * Memory bounds of a {@linkcode SessionOwnerRegistry}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { type OwnerBounds, SessionOwnerRegistry } from "@mcp-guard/session";
 *
 * const bounds: OwnerBounds = {
 *   maxEntries: 3,
 *   maxPerPrincipal: 20,
 *   sharedPrincipals: ["fp-master"],
 *   maxPerSharedPrincipal: 5,
 * };
 * await using owners = new SessionOwnerRegistry(bounds);
 * assert.equal(await owners.bind("alice-1", "fp-alice"), "bound");
 * for (let i = 0; i < 4; i++) assert.equal(await owners.bind(`m-${i}`, "fp-master"), "bound");
 * // The table is full: the shared principal paid with its own oldest bindings, never Alice's.
 * assert.equal(await owners.ownerOf("alice-1"), "fp-alice");
 * assert.equal(await owners.ownerOf("m-1"), null);
 * assert.equal(await owners.size(), 3);
 * ```
 */
export interface OwnerBounds {
  /**
   * Global bound on bindings.
   *
   * @default {10000}
   */
  maxEntries?: number;
  /**
   * Bound on bindings of one principal.
   *
   * @default {100}
   */
  maxPerPrincipal?: number;
  /**
   * Principal fingerprints (what `fingerprint()` returns, with the guard's
   * `secret`), never raw identities, that stand for many callers (e.g. a
   * shared master key): instead of `maxPerPrincipal` they are bounded by
   * `maxPerSharedPrincipal`, and they never evict another principal's
   * binding. To list raw identities as `principal()` returns them, use the
   * guard's own `sharedPrincipals` option instead.
   *
   * @default {[]}
   */
  sharedPrincipals?: readonly string[];
  /**
   * Bound on bindings of one shared principal (`sharedPrincipals`, or a
   * `bind` with `shared: true`). At this bound, or when the table holds
   * `maxEntries`, a shared principal evicts its own least recently used
   * unpinned binding, never another principal's; with none evictable it
   * gets `"full"`. The default gives a shared identity ten times the room
   * of one caller's default cap while keeping nine tenths of the table for
   * everyone else, and never less than `maxPerPrincipal` (listing an
   * identity as shared never lowers its bound).
   *
   * @default {Math.max(maxPerPrincipal, Math.floor(maxEntries / 10))}
   */
  maxPerSharedPrincipal?: number;
}

/** The keys of {@linkcode OwnerBounds}, for rejecting unknown ones. */
export const OWNER_BOUND_KEYS: readonly string[] = [
  "maxEntries",
  "maxPerPrincipal",
  "sharedPrincipals",
  "maxPerSharedPrincipal",
];

/** Validated, defaulted form of {@linkcode OwnerBounds}. */
export interface ResolvedOwnerOptions {
  maxEntries: number;
  maxPerPrincipal: number;
  sharedPrincipals: string[];
  maxPerSharedPrincipal: number;
  /** See {@linkcode OwnerTableOptions.capByFirstWord} (internal: derived registries set it). */
  capByFirstWord?: boolean;
}

/** Table settings beyond the bounds: idle expiry and the clock it reads. */
export interface OwnerTableOptions extends OwnerBounds {
  /**
   * An unpinned binding unused for this long (ms) expires: it is gone for
   * every operation, and `sweep()` reports it. `0`: never. Default `0`.
   */
  idleTtlMs?: number;
  /** The clock, in ms (tests pass a fake one). Default `performance.now`. */
  now?: () => number;
  /**
   * Whether the per-principal caps (and `sharedPrincipals`) count bindings
   * by the first space-separated word of their fingerprint rather than the
   * whole of it: the credential records' registry, whose "fingerprint" is a
   * record that starts with its owner's fingerprint, so that one principal's
   * records (whatever its scopes) only ever evict its own. Default `false`.
   */
  capByFirstWord?: boolean;
}

/**
 * The key the per-principal caps count `fp` under: the fingerprint itself,
 * or, with `capByFirstWord`, its first space-separated word.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { capKey } from "./owner_types.ts";
 *
 * assert.equal(capKey("fp-a s:mcp:read", true), "fp-a");
 * assert.equal(capKey("fp-a s:mcp:read", false), "fp-a s:mcp:read");
 * ```
 */
export function capKey(fp: string, capByFirstWord: boolean | undefined): string {
  if (capByFirstWord !== true) return fp;
  const space = fp.indexOf(" ");
  return space < 0 ? fp : fp.slice(0, space);
}

/**
 * Longest `keepMs` a bind accepts: 30 days, in ms. A longer floor would let
 * one call hold a binding far past any sensible idle expiry.
 */
export const MAX_KEEP_MS = 30 * 24 * 3_600_000;

/**
 * A bind's `keepMs` as a number of ms (`undefined` is `0`), or `null` when it
 * is not an integer from 0 to {@linkcode MAX_KEEP_MS}.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { keepMsOf } from "./owner_types.ts";
 *
 * assert.equal(keepMsOf(undefined), 0);
 * assert.equal(keepMsOf(60_000), 60_000);
 * assert.equal(keepMsOf(-1), null);
 * ```
 */
export function keepMsOf(value: unknown): number | null {
  if (value === undefined) return 0;
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0 &&
      value <= MAX_KEEP_MS
    ? value
    : null;
}

/** Why a binding left the table. */
export type RemoveCause = "forgotten" | "evicted" | "expired";

/** Validates and defaults owner-table options; throws `InvalidInputError` naming the bad value. */
export function resolveOwnerOptions(options: OwnerBounds = {}): ResolvedOwnerOptions {
  const maxEntries = checkCount("maxEntries", options.maxEntries ?? 10_000, 1);
  const maxPerPrincipal = checkCount("maxPerPrincipal", options.maxPerPrincipal ?? 100, 1);
  const shared = options.sharedPrincipals ?? [];
  if (!Array.isArray(shared)) {
    throw new InvalidInputError(
      `sharedPrincipals must be an array of principal fingerprints, got ${
        typeof shared === "string" ? JSON.stringify(shared) : typeof shared
      }`,
    );
  }
  const bad = shared.findIndex((fp) => !isValidFingerprint(fp));
  if (bad >= 0) {
    throw new InvalidInputError(
      `sharedPrincipals[${bad}] must be a non-blank fingerprint string (await fingerprint(identity, { secret })), got ${
        typeof shared[bad] === "string" ? JSON.stringify(shared[bad]) : typeof shared[bad]
      }`,
    );
  }
  const maxPerSharedPrincipal = checkCount(
    "maxPerSharedPrincipal",
    options.maxPerSharedPrincipal ?? Math.max(maxPerPrincipal, Math.floor(maxEntries / 10)),
    1,
  );
  return { maxEntries, maxPerPrincipal, sharedPrincipals: [...shared], maxPerSharedPrincipal };
}
