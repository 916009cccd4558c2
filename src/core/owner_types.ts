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
 * import { type OwnerBounds, SessionOwnerRegistry } from "@mcp-guard/session";
 *
 * const bounds: OwnerBounds = { maxEntries: 50_000, maxPerPrincipal: 20, sharedPrincipals: [] };
 * await using owners = new SessionOwnerRegistry(bounds);
 * console.log(await owners.size()); // 0
 * ```
 */
export interface OwnerBounds {
  /** Global bound on bindings. Default 10,000. */
  maxEntries?: number;
  /** Bound on bindings of one principal. Default 100. */
  maxPerPrincipal?: number;
  /**
   * Principal fingerprints (what `fingerprint()` returns, with the guard's
   * `secret`), never raw identities, exempt from the per-principal cap (e.g.
   * a shared master key). To exempt raw identities as `principal()` returns
   * them, use the guard's own `sharedPrincipals` option instead.
   */
  sharedPrincipals?: readonly string[];
}

/** The keys of {@linkcode OwnerBounds}, for rejecting unknown ones. */
export const OWNER_BOUND_KEYS: readonly string[] = [
  "maxEntries",
  "maxPerPrincipal",
  "sharedPrincipals",
];

/** Validated, defaulted form of {@linkcode OwnerBounds}. */
export interface ResolvedOwnerOptions {
  maxEntries: number;
  maxPerPrincipal: number;
  sharedPrincipals: string[];
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
  return { maxEntries, maxPerPrincipal, sharedPrincipals: [...shared] };
}
