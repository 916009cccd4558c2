/**
 * Who is calling: the guard's `principal()` answer, checked, and its
 * fingerprint (HMAC'd with the guard's secret), with a small cache so a
 * returning caller is not hashed again.
 *
 * @module
 */

import { InvalidInputError } from "../core/errors.ts";
import { fingerprint, identityProblem } from "../core/fingerprint.ts";
import type { GuardContext, GuardOptions } from "./types.ts";

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
   * The caller's identity and fingerprint. Throws what `principal()` threw,
   * or `InvalidInputError` naming the cause when it answered something that
   * cannot name one caller (not a string or `null`; blank; ill-formed
   * Unicode; `"null"`, `"undefined"`: see `identityProblem`).
   */
  async identify(request: Request): Promise<GuardContext> {
    const principal = await this.#principal(request);
    const ctx: GuardContext = {
      principal: null,
      fingerprint: null,
      parsedBody: undefined,
      era: "legacy",
    };
    if (principal === null || principal === undefined) return ctx;
    if (typeof principal !== "string") {
      throw new InvalidInputError(
        `principal() must return a string or null, got ${typeof principal}`,
      );
    }
    const problem = identityProblem(principal);
    if (problem !== null) {
      throw new InvalidInputError(
        `principal() must return an identity or null: its answer ${problem}`,
      );
    }
    ctx.principal = principal;
    if (this.#cacheSize === 0) {
      ctx.fingerprint = await fingerprint(principal, { secret: this.#secret });
      return ctx;
    }
    let fp = this.#fingerprints.get(principal);
    if (fp === undefined) {
      fp = await fingerprint(principal, { secret: this.#secret });
      if (this.#fingerprints.size >= this.#cacheSize) this.#fingerprints.clear();
      this.#fingerprints.set(principal, fp);
    }
    ctx.fingerprint = fp;
    return ctx;
  }
}
