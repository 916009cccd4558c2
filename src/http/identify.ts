/**
 * Who is calling: the guard's `principal()` answer, checked, and its
 * fingerprint (HMAC'd with the guard's secret), with a small cache so a
 * returning caller is not hashed again.
 *
 * @module
 */

import { InvalidInputError } from "../core/errors.ts";
import { fingerprint, identityProblem } from "../core/fingerprint.ts";
import { checkOptionKeys } from "../core/options_check.ts";
import { utf8Length } from "../core/validate.ts";
import type { GuardContext, GuardOptions, Principal } from "./types.ts";

/** Most scopes one credential may carry. */
export const MAX_SCOPES = 64;
/** Longest scope token, in characters (ASCII: also bytes). */
export const MAX_SCOPE_LENGTH = 256;
/** Longest client id, in UTF-8 bytes. */
export const MAX_CLIENT_ID_BYTES = 1024;

/** A scope token (RFC 6749, section 3.3): visible ASCII but `"` and `\`. */
const SCOPE_TOKEN = /^[\x21\x23-\x5b\x5d-\x7e]+$/;
const PRINCIPAL_KEYS: readonly string[] = ["subject", "scopes", "clientId"];

function invalid(message: string): never {
  throw new InvalidInputError(`principal() ${message}`);
}

/**
 * A {@linkcode Principal} answer, checked: its subject, its scopes distinct
 * and sorted (`undefined` when none), its client id. Throws
 * `InvalidInputError` naming what is wrong.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { readPrincipal } from "./identify.ts";
 *
 * assert.deepEqual(readPrincipal({ subject: "alice", scopes: ["b", "a", "b"] }), {
 *   subject: "alice",
 *   scopes: ["a", "b"],
 *   clientId: undefined,
 * });
 * // A token's space-separated scope claim must be split first.
 * assert.throws(() => readPrincipal({ subject: "alice", scopes: ["a b"] }), /no spaces/);
 * assert.throws(() => readPrincipal({ subject: "alice", scope: "a" }), /did you mean "scopes"/);
 * ```
 */
export function readPrincipal(
  answer: object,
): { subject: string; scopes: readonly string[] | undefined; clientId: string | undefined } {
  try {
    checkOptionKeys("a Principal", answer, PRINCIPAL_KEYS);
  } catch (err) {
    invalid(`answered ${(err as Error).message}`);
  }
  const { subject, scopes, clientId } = answer as Principal;
  const problem = identityProblem(subject);
  if (problem !== null) invalid(`must answer a Principal whose subject ${problem}`);
  let sorted: string[] | undefined;
  if (scopes !== undefined) {
    if (!Array.isArray(scopes)) {
      invalid(
        `answered scopes that are not an array (got ${typeof scopes}): split a token's ` +
          `space-separated scope claim into its scopes`,
      );
    }
    if (scopes.length > MAX_SCOPES) {
      invalid(`answered ${scopes.length} scopes, more than ${MAX_SCOPES}`);
    }
    for (const [i, scope] of scopes.entries()) {
      if (
        typeof scope !== "string" || scope.length > MAX_SCOPE_LENGTH || !SCOPE_TOKEN.test(scope)
      ) {
        invalid(
          `answered scopes[${i}] ${
            typeof scope === "string" ? JSON.stringify(scope.slice(0, 64)) : `(${typeof scope})`
          }, not a scope: 1 to ${MAX_SCOPE_LENGTH} visible ASCII characters but " and \\, ` +
            `no spaces (split a space-separated scope claim)`,
        );
      }
    }
    sorted = [...new Set(scopes as string[])].sort();
    if (sorted.length === 0) sorted = undefined;
  }
  if (clientId !== undefined) {
    const why = identityProblem(clientId);
    if (why !== null) invalid(`must answer a Principal whose clientId ${why}`);
    // deno-lint-ignore no-control-regex
    if (/[\x00-\x1f\x7f]/.test(clientId) || utf8Length(clientId) > MAX_CLIENT_ID_BYTES) {
      invalid(
        `must answer a Principal whose clientId has no control characters and at most ` +
          `${MAX_CLIENT_ID_BYTES} UTF-8 bytes`,
      );
    }
  }
  return { subject, scopes: sorted, clientId };
}

/** Whether `await` would wait for `value` (it has a `then` method). */
function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (typeof value === "object" || typeof value === "function") && value !== null &&
    typeof (value as { then?: unknown }).then === "function";
}

/** Turns a request into the context the handler will get. */
export class Identifier {
  readonly #principal: GuardOptions["principal"];
  readonly #secret: string | Uint8Array | undefined;
  readonly #cacheSize: number;
  readonly #fingerprints = new Map<string, string>();

  /** `cacheSize` 0: principals are never kept in memory. */
  constructor(
    principal: GuardOptions["principal"],
    secret: string | Uint8Array | undefined,
    cacheSize: number,
  ) {
    this.#principal = principal;
    this.#secret = secret;
    this.#cacheSize = cacheSize;
  }

  /** Whether identities may stay in memory (the fingerprint cache is on). */
  get keepsPrincipals(): boolean {
    return this.#cacheSize > 0;
  }

  /**
   * The caller's identity and fingerprint (of the subject, for a
   * {@linkcode Principal}), with its scopes and client id: at once when
   * `principal()` answers at once and its fingerprint is cached, else a
   * promise. Throws (or rejects with) what `principal()` threw, or
   * `InvalidInputError` naming the cause when it answered something that
   * cannot name one caller (not a string, a `Principal` or `null`; blank;
   * ill-formed Unicode; `"null"`, `"undefined"`: see `identityProblem`;
   * malformed scopes or client id: see `readPrincipal`).
   */
  identify(request: Request): GuardContext | Promise<GuardContext> {
    const answer = this.#principal(request);
    // A principal() answering at once, of a caller seen before: no promise at all. Anything
    // `await` would wait for is waited for.
    if (!isThenable(answer)) return this.#context(answer);
    return Promise.resolve(answer).then((value) => this.#context(value));
  }

  /** The context of a `principal()` answer (its fingerprint hashed once, then cached). */
  #context(answer: unknown): GuardContext | Promise<GuardContext> {
    const ctx: GuardContext = {
      principal: null,
      fingerprint: null,
      parsedBody: undefined,
      era: "legacy",
    };
    if (answer === null || answer === undefined) return ctx;
    let principal: string;
    if (typeof answer === "string") {
      principal = answer;
    } else if (typeof answer === "object" && !Array.isArray(answer)) {
      const read = readPrincipal(answer);
      principal = read.subject;
      if (read.scopes !== undefined) ctx.scopes = read.scopes;
      if (read.clientId !== undefined) ctx.clientId = read.clientId;
    } else {
      throw new InvalidInputError(
        `principal() must return a string, a Principal or null, got ${
          Array.isArray(answer) ? "an array" : typeof answer
        }`,
      );
    }
    // A cached identity was checked when it was cached.
    const fp = this.#cacheSize === 0 ? undefined : this.#fingerprints.get(principal);
    if (fp !== undefined) {
      ctx.principal = principal;
      ctx.fingerprint = fp;
      return ctx;
    }
    const problem = identityProblem(principal);
    if (problem !== null) {
      throw new InvalidInputError(
        `principal() must return an identity or null: its answer ${problem}`,
      );
    }
    ctx.principal = principal;
    return this.#hashed(ctx, principal, this.#cacheSize > 0);
  }

  /** `ctx` with the fingerprint of `principal` (`keep`: cached for the next request). */
  async #hashed(ctx: GuardContext, principal: string, keep: boolean): Promise<GuardContext> {
    const fp = await fingerprint(principal, { secret: this.#secret });
    if (keep) {
      if (this.#fingerprints.size >= this.#cacheSize) this.#fingerprints.clear();
      this.#fingerprints.set(principal, fp);
    }
    ctx.fingerprint = fp;
    return ctx;
  }
}
