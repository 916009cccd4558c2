/**
 * Session ids the handler issues: each is bound to the caller that asked
 * (its owner binding, then what its credential allowed) before the caller
 * sees it; one that cannot be bound is closed in the handler, and the caller
 * gets the refusal instead of the id.
 *
 * @module
 */

import { sanitizeSessionId } from "../core/validate.ts";
import type { SessionCredentials } from "./credentials.ts";
import { closeSession } from "./handler_calls.ts";
import type { LocalSessions } from "./local_sessions.ts";
import type { OwnerCache } from "./owner_cache.ts";
import type { At, RefusalReason } from "./refusals.ts";
import { RegistryFailure } from "./registry_failure.ts";
import type { GuardContext, GuardOwners, GuardReason, RequestHandler } from "./types.ts";

/** What binding an issued session takes from its guard. */
export interface IssuedSessionsState {
  handler: RequestHandler;
  owners: GuardOwners;
  /** Fingerprints of the guard's `sharedPrincipals`. */
  shared: Promise<Set<string>>;
  credentials: SessionCredentials | undefined;
  ownerCache: OwnerCache;
  local: LocalSessions;
  /** Whether identities may stay in memory (to close a removed session as its caller). */
  keepsPrincipals: boolean;
  decide(outcome: "allow" | "refuse", reason: GuardReason, status: number | null, at: At): void;
  refuse(reason: RefusalReason, at: At): Response;
  report(error: unknown, context: string): void;
}

/** Binds the session ids one guard's handler issues. */
export class IssuedSessions {
  readonly #at: IssuedSessionsState;

  /** Builds the binder over its guard's state. */
  constructor(state: IssuedSessionsState) {
    this.#at = state;
  }

  /** Discards a response and asks the handler to terminate the session it issued. */
  async #closeIssued(request: Request, sid: string, response: Response, ctx: GuardContext) {
    await response.body?.cancel().catch(() => {});
    await closeSession(this.#at.handler, request.url, sid, ctx, request.headers)
      .catch((err) => this.#at.report(err, "close-issued-session"));
  }

  /**
   * Binds a session id the handler just issued to the caller. When it cannot
   * be bound, the session is closed through the handler and the caller gets
   * an error instead of the id.
   */
  bind(
    request: Request,
    response: Response,
    sid: string | null,
    ctx: GuardContext,
    rpcMethod: string | null,
  ): Response | Promise<Response> {
    if (sid !== null && response.status === 404) {
      this.#at.ownerCache.drop(sid);
      this.#at.local.drop(sid);
    }
    const raw = response.headers.get("mcp-session-id");
    // Most answers issue no session id: no promise for them.
    if (raw === null || raw === sid) return response;
    return this.#bindNew(request, response, raw, ctx, rpcMethod);
  }

  async #bindNew(
    request: Request,
    response: Response,
    raw: string,
    ctx: GuardContext,
    rpcMethod: string | null,
  ): Promise<Response> {
    const fp = ctx.fingerprint;
    const at = { method: "POST", rpcMethod };
    const issued = sanitizeSessionId(raw);
    if (issued === null) {
      await this.#closeIssued(request, raw, response, ctx);
      return this.#at.refuse("invalid-issued-session-id", at);
    }
    if (fp === null) return response; // attach-only, anonymous: nobody owns it
    let result: string;
    this.#at.local.binding(issued);
    try {
      const shared = (await this.#at.shared).has(fp);
      result = await this.#at.owners.bind(issued, fp, shared ? { shared } : undefined);
      if (result === "bound" && this.#at.credentials !== undefined) {
        // What the credential allowed, on the issued id only, once its owner is bound: the
        // session is not usable (refused as unknown) until both are.
        let recorded: string;
        try {
          recorded = await this.#at.credentials.bind(issued, ctx);
        } catch (err) {
          await this.#at.owners.forget(issued, fp).catch((e) => this.#at.report(e, "forget"));
          throw err;
        }
        if (recorded !== "bound") {
          await this.#at.owners.forget(issued, fp).catch((e) => this.#at.report(e, "forget"));
          result = recorded;
        }
      }
    } catch (err) {
      this.#at.local.bound(issued, null);
      await this.#closeIssued(request, issued, response, ctx);
      throw new RegistryFailure(err);
    }
    if (result === "bound") {
      this.#at.ownerCache.remember(issued, fp);
      this.#at.decide("allow", "bound", null, { ...at, sid: issued });
      // Evicted before its reply even arrived (a flood of binds by one principal): closed now.
      this.#at.local.bound(issued, {
        url: request.url,
        principal: this.#at.keepsPrincipals ? ctx.principal : null,
        fingerprint: fp,
      });
      return response;
    }
    this.#at.local.bound(issued, null);
    await this.#closeIssued(request, issued, response, ctx);
    return this.#at.refuse(result === "full" ? "bind-full" : "bind-refused", {
      ...at,
      sid: issued,
    });
  }

  /** Discards a handler's answer nobody will read; closes a session it issued on the way. */
  async discardLate(request: Request, sid: string, response: Response, ctx: GuardContext) {
    const raw = response.headers.get("mcp-session-id");
    if (raw !== null && raw !== sid) return await this.#closeIssued(request, raw, response, ctx);
    await response.body?.cancel().catch(() => {});
  }
}
