/**
 * {@linkcode guardSessions}: a web-standard `(Request) => Promise<Response>`
 * wrapper that makes a Streamable HTTP MCP server refuse session hijacking and
 * cross-session cancellation.
 *
 * It drops in front of any handler that speaks MCP Streamable HTTP (the
 * official SDK's `WebStandardStreamableHTTPServerTransport`, a Hono route, a
 * hand-written router): it reads only headers and the JSON-RPC body, keeps its
 * state in a `SessionOwnerRegistry` and a `CancellationRegistry`, and answers
 * refusals itself with a JSON-RPC error body (see `./refusals.ts`).
 *
 * @module
 */

import { onBodyEnd } from "./body_end.ts";
import {
  InvalidInputError,
  RegistryMisconfiguredError,
  RequestCancelledError,
  UnauthenticatedError,
} from "../core/errors.ts";
import { SessionOrder } from "./session_order.ts";
import { isValidRequestId, sanitizeSessionId } from "../core/validate.ts";
import { type GuardConfig, resolveGuardConfig } from "./config.ts";
import { insufficientScope, SessionCredentials } from "./credentials.ts";
import { closeSession } from "./handler_calls.ts";
import { Identifier } from "./identify.ts";
import { InflightSignals } from "./inflight_signals.ts";
import { type LocalSession, LocalSessions, type RemovalCause } from "./local_sessions.ts";
import { OwnerCache } from "./owner_cache.ts";
import { PostPath } from "./post.ts";
import { type At, type RefusalReason, refusalResponse } from "./refusals.ts";
import { registry, RegistryFailure } from "./registry_failure.ts";
import { EventIdKey } from "./event_ids.ts";
import { Resumption, rewriteEventIds } from "./resume.ts";
import type { SseIdRewriter } from "./sse_events.ts";
import { TaskGate } from "./task_gate.ts";
import { shareWorker, startWorker } from "../registry/registry_options.ts";
import type {
  GuardContext,
  GuardDecision,
  GuardedHandler,
  GuardOptions,
  GuardReason,
  RequestHandler,
  RequestRef,
  SdkContextRef,
  SdkExtraRef,
} from "./types.ts";

/** A session-scoped guard around one handler: the state and the GET/DELETE rules. */
export class SessionGuard {
  readonly config: GuardConfig;
  readonly identifier: Identifier;
  readonly owners: OwnerCache;
  readonly local: LocalSessions;
  readonly tasks: TaskGate | undefined;
  /** Scope-bound sessions: the credential records (`undefined`: off, or attach-only mode). */
  readonly credentials: SessionCredentials | undefined;
  /** The guard's signal of each tracked request, by session and request id. */
  readonly inflight: InflightSignals = new InflightSignals();
  /** GETs and DELETEs that later requests of their session must not overtake. */
  readonly #order = new SessionOrder();
  readonly #post: PostPath;
  /** Event id tags and `Last-Event-ID` checks; `null` with `resumption: "unchecked"`. */
  readonly #resumption: Resumption | null;
  /** The first identified caller's request came: the worker was started (see `#startWorker`). */
  #started = false;

  constructor(handler: RequestHandler, options: GuardOptions) {
    const config = resolveGuardConfig(handler, options);
    this.config = config;
    this.identifier = new Identifier(config.principal, config.secret, config.fingerprintCacheSize);
    this.owners = new OwnerCache(config.ownerCacheMs);
    this.local = new LocalSessions((sid, session, cause) =>
      this.#closeRemoved(sid, session, cause)
    );
    this.tasks = config.tasks === undefined
      ? undefined
      : new TaskGate(config.tasks, config.hideOthers, this.report, config.secret);
    this.credentials = config.credentials === undefined ? undefined : new SessionCredentials(
      config.credentials,
      config.matchClientId,
      config.secret,
      config.ownerCacheMs,
    );
    this.#post = new PostPath(this);
    const observer = config.observer;
    if (observer !== undefined) {
      const handle = this.handle;
      this.handle = (request) => observer.request(request, handle);
    }
    this.#resumption = config.resumption === "unchecked" ? null : new Resumption(
      config.secret === undefined ? EventIdKey.random() : EventIdKey.fromSecret(config.secret),
      config.resumption === "all",
    );
    config.owners.onRemoved?.(({ cause, sessionIds }) => {
      for (const sid of sessionIds) {
        // A session of this guard is closed, its credential record forgotten with it. Any other
        // (another process's, or one the handler already forgot: its 404 dropped it here but
        // left its binding) loses its record here: a record outliving its binding would hold a
        // slot of the records' table for nothing, and, never expiring without `idleTtlMs`,
        // could push out the records of live sessions.
        if (!this.local.removed(sid, cause)) this.#forgetRecord(sid);
      }
    });
    // A session whose credential record went cannot be checked: it is closed like an evicted one.
    config.credentials?.onRemoved?.(({ cause, sessionIds }) => {
      for (const sid of sessionIds) this.local.removed(sid, cause);
    });
    // A registry learns owners from the first time `knownOwner` is asked: ask now, so the
    // bindings of the very first sessions are known too.
    config.owners.knownOwner?.("");
    // One worker for the whole guard: the cancellations' store joins the owners' worker
    // (where the derived registries live already), unless its own worker ran already.
    shareWorker(config.cancellations, config.owners);
    // The worker starts with the first identified request (see `#startWorker`), not here: a guard nobody
    // uses (a script that builds its app and exits) must not keep the process alive.
  }

  /**
   * On the first request of an identified caller (or of an anonymous one the guard lets in,
   * `strict: false`): starts the guard's worker, with the stores a session needs (the
   * owners', the credential records', the cancellations'), so that it boots while the handler
   * answers that request (the first `initialize` binds its session once the handler
   * answered). The tasks' store starts with the first task request, as before: a guard that
   * sees none opens nothing for it (with Redis, a connection). A failure to start is the
   * first call's.
   */
  #startWorker(): void {
    this.#started = true;
    const { owners, credentials, cancellations } = this.config;
    try {
      startWorker(owners, credentials, cancellations);
    } catch {
      // Reported by the call that needs the worker, which tries again.
    }
  }

  handle = (request: Request): Promise<Response> => {
    // Ordering is decided on arrival, before anything is awaited: a GET or DELETE holds its
    // session's later requests back until the handler has answered it; a POST waits for the
    // GETs and DELETEs that arrived before it.
    const method = request.method;
    const rawSid = request.headers.get("mcp-session-id");
    if (rawSid === null) return this.#handle(request, method, null, undefined);
    if (method === "POST") return this.#handle(request, method, rawSid, this.#order.ahead(rawSid));
    if (method !== "GET" && method !== "DELETE") {
      return this.#handle(request, method, rawSid, undefined);
    }
    const release = this.#order.hold(rawSid);
    const answered = this.#handle(request, method, rawSid, undefined);
    answered.then(release, release);
    return answered;
  };

  /**
   * One request, answered: a promise in every case (a throw becomes its
   * rejection), and no promise of its own for a POST whose caller is known
   * at once (the POST path's is the answer).
   */
  #handle(
    request: Request,
    method: string,
    rawSid: string | null,
    ahead: Promise<void> | undefined,
  ): Promise<Response> {
    try {
      const answer = this.#route(request, method, rawSid, ahead);
      return answer instanceof Response ? Promise.resolve(answer) : answer;
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** The request's method and session id checked, its caller identified. */
  #route(
    request: Request,
    method: string,
    rawSid: string | null,
    ahead: Promise<void> | undefined,
  ): Response | Promise<Response> {
    if (method !== "POST" && method !== "GET" && method !== "DELETE") {
      return this.refuse("method-not-allowed", { method }, method);
    }
    let sid: string | null = null;
    if (rawSid !== null) {
      sid = sanitizeSessionId(rawSid);
      if (sid === null) return this.refuse("invalid-session-id", { method });
    }
    let identified: GuardContext | Promise<GuardContext>;
    try {
      identified = this.identifier.identify(request);
    } catch (err) {
      return this.#unidentified(err, method, sid);
    }
    if (identified instanceof Promise) {
      return identified.then(
        (ctx) => this.#identified(request, method, sid, ahead, ctx),
        (err) => this.#unidentified(err, method, sid),
      );
    }
    return this.#identified(request, method, sid, ahead, identified);
  }

  /** `principal()` failed (or telemetry's look at the caller did): the refusal. */
  #unidentified(err: unknown, method: string, sid: string | null): Response {
    if (err instanceof UnauthenticatedError) {
      return this.refuse("unauthenticated", { method, sid }, "", {
        headers: { "www-authenticate": err.challenge },
      });
    }
    this.report(err, "principal");
    // A principal() that answers what cannot name a caller is a bug: retrying will not help.
    const invalid = err instanceof InvalidInputError;
    return this.refuse(invalid ? "principal-invalid" : "principal-error", { method, sid });
  }

  /** The request of an identified caller, to its method's path. */
  #identified(
    request: Request,
    method: string,
    sid: string | null,
    ahead: Promise<void> | undefined,
    ctx: GuardContext,
  ): Response | Promise<Response> {
    const observer = this.config.observer;
    if (observer !== undefined) {
      try {
        observer.identified(ctx);
      } catch (err) {
        return this.#unidentified(err, method, sid);
      }
    }
    if (ctx.fingerprint === null && this.config.strict) {
      const metadata = this.config.resourceMetadata;
      return this.refuse("anonymous", { method, sid }, "", {
        headers: metadata === undefined
          ? undefined
          : { "www-authenticate": `Bearer resource_metadata="${metadata}"` },
      });
    }
    // The first request of a caller the guard lets in starts the worker (a refused one, such
    // as a 401, starts nothing: traffic that is only ever refused keeps nothing alive).
    if (!this.#started) this.#startWorker();
    // The POST path answers a registry failure itself (registryRefusal).
    if (method === "POST") return this.#post.handle(request, sid, ctx, ahead);
    if (sid === null) return this.#sessionless(request, method, ctx);
    return this.#getOrDelete(request, method, sid, ctx);
  }

  /** A GET or DELETE of a session; a registry failure answered 503. */
  async #getOrDelete(
    request: Request,
    method: string,
    sid: string,
    ctx: GuardContext,
  ): Promise<Response> {
    try {
      if (method === "GET") return await this.#get(request, sid, ctx);
      return await this.#delete(request, sid, ctx);
    } catch (err) {
      if (!(err instanceof RegistryFailure)) throw err;
      return this.registryRefusal(err, { method, sid });
    }
  }

  /** The answer to a registry call that failed (503, or 500 for a misconfigured registry). */
  registryRefusal(err: RegistryFailure, at: At): Response {
    this.report(err.cause, "registry");
    const misconfigured = err.cause instanceof RegistryMisconfiguredError;
    return this.refuse(misconfigured ? "registry-misconfigured" : "registry-unavailable", at);
  }

  signalFor = (ref: RequestRef): AbortSignal => {
    const req = (ref as SdkContextRef | undefined)?.mcpReq;
    const extra = ref as Partial<SdkExtraRef> | undefined;
    const requestId = req !== undefined ? req?.id : extra?.requestId;
    if (typeof requestId !== "string" && typeof requestId !== "number") {
      throw new InvalidInputError(
        "signalFor: pass the tool's `extra` (SDK 1.32) or `ctx` (SDK v2), got " +
          (ref === null || typeof ref !== "object"
            ? String(ref)
            : "an object without a request id"),
      );
    }
    const signal = req !== undefined ? req.signal : extra!.signal;
    const sdk = signal instanceof AbortSignal ? signal : undefined;
    const sid = ref.sessionId;
    // A request whose id no registry keys runs untracked: the SDK's signal is its only one.
    const own = typeof sid === "string" && isValidRequestId(requestId)
      ? this.inflight.get(sid, requestId)
      : undefined;
    if (own !== undefined && sdk !== undefined) return AbortSignal.any([own, sdk]);
    return own ?? sdk ?? new AbortController().signal;
  };

  async #get(request: Request, sid: string, ctx: GuardContext): Promise<Response> {
    const fp = ctx.fingerprint;
    const { owners } = this.config;
    const credentials = this.credentials;
    let pinned = false;
    if (this.config.strict) {
      const record = credentials?.lookup(sid);
      // The owner's own stream, by the registry's memory: one round trip (the pin), not two;
      // a listening GET that reaches the handler late misses the server's requests.
      if (owners.knownOwner?.(sid) !== fp) {
        const refusal = await this.checkOwner({ method: "GET", sid }, fp!, this.ownerOf(sid));
        if (refusal !== null) return refusal;
      }
      if (credentials === undefined) {
        pinned = await registry(owners.authorizeAttach(sid, fp!, { pin: true }));
        if (!pinned) return this.notOwner({ method: "GET", sid });
      } else {
        const refusal = this.checkCredentials({ method: "GET", sid }, ctx, await record!);
        if (refusal !== null) return refusal;
        // The record is pinned with the session: a live stream's record is never evicted.
        const refused = await this.#pinBoth(sid, fp!, credentials);
        if (refused !== null) return refused;
        pinned = true;
      }
    } else if (fp === null) {
      // Attach-only, anonymous: may listen only on a session nobody owns, and never claims it.
      if (await registry(owners.ownerOf(sid)) !== null) {
        return this.notOwner({ method: "GET", sid });
      }
    } else {
      pinned = await registry(owners.authorizeAttach(sid, fp, { pin: true }));
      if (!pinned) {
        if (await registry(owners.ownerOf(sid)) === null) {
          return this.refuse("bind-full", { method: "GET", sid });
        }
        return this.notOwner({ method: "GET", sid });
      }
    }
    const unpin = () => {
      owners.unpin(sid).catch((err) => this.report(err, "unpin"));
      credentials?.registry.unpin(sid).catch((err) => this.report(err, "unpin"));
    };
    // Resumption stays within the session: a Last-Event-ID must be an id sent in it.
    const resumed = this.#resumption === null
      ? { request, kind: "listen" as const }
      : this.#resumption.resume(request, sid);
    if (typeof resumed === "string") {
      if (pinned) unpin();
      return this.refuse(resumed, { method: "GET", sid });
    }
    this.decide("allow", "allowed", null, { method: "GET", sid });
    if (!pinned) {
      const response = await this.config.handler(resumed.request, ctx);
      return this.#resumption?.tag(response, sid, resumed.kind) ?? response;
    }
    let response: Response;
    try {
      response = await this.config.handler(resumed.request, ctx);
    } catch (err) {
      unpin();
      throw err;
    }
    if (!response.ok || response.body === null) {
      unpin();
      return response;
    }
    return onBodyEnd(response, unpin, this.#resumption?.rewriter(response, sid, resumed.kind));
  }

  /**
   * Pins a session and its credential record for a live stream: `null`
   * when both are pinned, else the refusal (and neither stays pinned).
   */
  async #pinBoth(
    sid: string,
    fp: string,
    credentials: SessionCredentials,
  ): Promise<Response | null> {
    const { owners } = this.config;
    const [own, record] = await Promise.allSettled([
      owners.authorizeAttach(sid, fp, { pin: true }),
      credentials.registry.pin(sid),
    ]);
    const undo = (which: "owner" | "record") => {
      const unpinned = which === "owner" ? owners.unpin(sid) : credentials.registry.unpin(sid);
      unpinned.catch((err) => this.report(err, "unpin"));
    };
    if (own.status === "rejected" || record.status === "rejected") {
      if (own.status === "fulfilled" && own.value) undo("owner");
      if (record.status === "fulfilled" && record.value) undo("record");
      throw new RegistryFailure(
        own.status === "rejected"
          ? own.reason
          : record.status === "rejected"
          ? record.reason
          : null,
      );
    }
    if (own.value && record.value) return null;
    if (own.value) undo("owner");
    if (record.value) undo("record");
    return own.value
      ? this.refuse("credentials-missing", { method: "GET", sid })
      : this.notOwner({ method: "GET", sid });
  }

  /**
   * The rewriter that tags the SSE event ids of a POST's answer for its
   * session (the one it names, or the one an `initialize` answer issued and
   * the guard bound) or, without one, for its caller (see
   * {@linkcode streamsOf}); `null` when there is nothing to tag. `gated`:
   * the task rules acted on the answer (the task gate wrapped it), so its
   * ids are tagged as a `"task"` stream, which is never resumed.
   */
  answerRewriter(
    response: Response,
    sid: string | null,
    ctx: GuardContext,
    gated = false,
  ): SseIdRewriter | null {
    if (this.#resumption === null) return null;
    const session = sid ?? sanitizeSessionId(response.headers.get("mcp-session-id")) ??
      streamsOf(ctx);
    return this.#resumption.rewriter(response, session, gated ? "task" : "request");
  }

  /** A POST's answer with its SSE event ids tagged (see {@linkcode answerRewriter}). */
  tagAnswer(response: Response, sid: string | null, ctx: GuardContext, gated = false): Response {
    const rewriter = this.answerRewriter(response, sid, ctx, gated);
    return rewriter === null ? response : rewriteEventIds(response, rewriter);
  }

  /**
   * A GET or DELETE of no session: it asks no ownership question, and the
   * handler answers it (an SDK server: 405 or 400) as it would unguarded;
   * only a GET resuming a stream (`Last-Event-ID`) must name one of its
   * caller's streams (a stateless server's answers are tagged for their
   * caller, anonymous callers' for all of them together), and the stream it
   * opens is tagged for that caller too.
   */
  async #sessionless(request: Request, method: string, ctx: GuardContext): Promise<Response> {
    if (method !== "GET" || this.#resumption === null) {
      this.decide("allow", "allowed", null, { method });
      return await this.config.handler(request, ctx);
    }
    const streams = streamsOf(ctx);
    const resumed = this.#resumption.resume(request, streams);
    if (typeof resumed === "string") return this.refuse(resumed, { method });
    this.decide("allow", "allowed", null, { method });
    const response = await this.config.handler(resumed.request, ctx);
    return this.#resumption.tag(response, streams, resumed.kind);
  }

  async #delete(request: Request, sid: string, ctx: GuardContext): Promise<Response> {
    const fp = ctx.fingerprint;
    const credentials = this.credentials;
    const lookup = credentials?.lookup(sid);
    const owner = await registry(this.config.owners.ownerOf(sid));
    let record: string | null = null;
    if (this.config.strict) {
      if (owner === null) return this.refuse("unknown-session", { method: "DELETE", sid });
      if (owner !== fp) return this.notOwner({ method: "DELETE", sid });
      if (credentials !== undefined) {
        record = await lookup!;
        const refusal = this.checkCredentials({ method: "DELETE", sid }, ctx, record);
        if (refusal !== null) return refusal;
      }
    } else if (owner !== null && owner !== fp) {
      return this.notOwner({ method: "DELETE", sid });
    }
    this.decide("allow", "allowed", null, { method: "DELETE", sid });
    this.owners.ended(sid);
    credentials?.cache.ended(sid);
    const response = await this.config.handler(request, ctx);
    if (response.ok || response.status === 404) {
      // The session is over (or the handler no longer knows it): stop its requests, drop it.
      this.local.drop(sid);
      const [cancelled, forgotten, unrecorded] = await Promise.allSettled([
        this.config.cancellations.cancelAll(sid),
        owner === null ? Promise.resolve(true) : this.config.owners.forget(sid, owner),
        record === null ? Promise.resolve(true) : credentials!.registry.forget(sid, record),
      ]);
      if (cancelled.status === "rejected") this.report(cancelled.reason, "cancelAll");
      if (forgotten.status === "rejected") this.report(forgotten.reason, "forget");
      if (unrecorded.status === "rejected") this.report(unrecorded.reason, "forget");
    }
    return response;
  }

  /** `owners.ownerOf`, with a failure turned into a 503 (and never unhandled). */
  ownerOf(sid: string): Promise<string | null> {
    const promise = registry(this.config.owners.ownerOf(sid));
    promise.catch(() => {}); // a request refused before it looks must not crash the process
    return promise;
  }

  /** Strict check: `null` when `fp` owns the session, else the refusal to answer with. */
  async checkOwner(
    at: At & { sid: string },
    fp: string,
    lookup: Promise<string | null>,
    epoch = this.owners.epoch,
  ): Promise<Response | null> {
    return this.ownerVerdict(at, fp, await lookup, epoch);
  }

  /**
   * {@linkcode checkOwner} of an owner already looked up: `null` when `fp`
   * is `owner`, else the refusal.
   */
  ownerVerdict(
    at: At & { sid: string },
    fp: string,
    owner: string | null,
    epoch = this.owners.epoch,
  ): Response | null {
    if (owner === fp) {
      // Not cached if a session ended while the lookup was under way: its answer may
      // predate that end.
      this.owners.remember(at.sid, fp, epoch);
      return null;
    }
    this.owners.drop(at.sid);
    if (owner === null) return this.refuse("unknown-session", at);
    return this.notOwner(at);
  }

  /**
   * Scope-bound sessions: `null` when `ctx`'s credential may use the
   * session whose credential record is `record`, else the refusal (403
   * with the step-up challenge for a scope it lacks). A record confirmed by
   * the registry is remembered for `ownerCacheMs`, unless a session ended
   * since `epoch`.
   */
  checkCredentials(
    at: At & { sid: string },
    ctx: GuardContext,
    record: string | null,
    epoch?: number,
  ): Response | null {
    const credentials = this.credentials!;
    const verdict = credentials.check(record, ctx);
    if (verdict === null) {
      credentials.cache.remember(at.sid, record!, epoch);
      return null;
    }
    credentials.cache.drop(at.sid);
    if (verdict.reason !== "insufficient-scope") return this.refuse(verdict.reason, at);
    return this.refuse("insufficient-scope", at, verdict.scopes?.join(" ") ?? "", {
      headers: {
        "www-authenticate": insufficientScope(verdict.scopes, this.config.resourceMetadata),
      },
    });
  }

  /**
   * Closes, in the handler, a session of this process whose binding was
   * evicted or expired (sessions of other processes are their guards' to
   * close), and tells `onSessionClosed`. Its requests are cancelled first, so
   * each caller gets its `-32000` answer before the handler closes the
   * streams they would have been written to.
   */
  #closeRemoved(sid: string, session: LocalSession, cause: RemovalCause): void {
    this.owners.ended(sid);
    if (this.credentials !== undefined && session.fingerprint !== null) {
      // The binding and the credential record go together, whichever of them went first (a
      // record evicted or expired on its own closes its session too: it cannot be checked).
      this.#forgetRecord(sid);
      this.config.owners.forget(sid, session.fingerprint)
        .catch((err) => this.report(err, "forget"));
    }
    const ctx: GuardContext = {
      principal: session.principal,
      fingerprint: session.fingerprint,
      parsedBody: undefined,
      era: "legacy",
    };
    (async () => {
      const why = new RequestCancelledError(
        sid,
        null,
        `session ${sid} ${cause}: request cancelled`,
      );
      await this.config.cancellations.cancelAll(sid, why)
        .catch((err) => this.report(err, "cancelAll"));
      await closeSession(this.config.handler, session.url, sid, ctx);
      try {
        this.config.onSessionClosed?.(sid, cause);
      } catch (err) {
        this.report(err, "onSessionClosed");
      }
    })().catch((err) => this.report(err, "close-removed-session"));
  }

  /** Forgets the credential record of `sid`, whose binding went (no-op without records). */
  #forgetRecord(sid: string): void {
    const credentials = this.credentials;
    if (credentials === undefined) return;
    credentials.cache.ended(sid);
    credentials.registry.forget(sid).catch((err) => this.report(err, "forget"));
  }

  /** Another principal's session: 403, or answered exactly as an unknown one (`notOwnerStatus: 404`). */
  notOwner(at: At): Response {
    return this.refuse("not-owner", at, "", {
      as: this.config.hideOthers ? "unknown-session" : undefined,
    });
  }

  /** Answers a refusal from the table, and reports the decision. */
  refuse(
    reason: RefusalReason,
    at: At,
    detail = "",
    options: { as?: RefusalReason; headers?: Record<string, string> } = {},
  ): Response {
    const { status, response } = refusalResponse(reason, at.id ?? null, detail, options);
    this.decide("refuse", reason, status, at);
    return response;
  }

  /**
   * Reports one decision to `onDecision` (a throwing hook goes to `onError`) and telemetry;
   * `task`: the task id the guard replaced with one nobody was issued (for the audit trail).
   */
  decide(
    outcome: "allow" | "refuse",
    reason: GuardReason,
    status: number | null,
    at: At,
    task?: string,
  ): void {
    const hook = this.config.onDecision;
    const observer = this.config.observer;
    if (hook === undefined && observer === undefined) return;
    const decision: GuardDecision = {
      outcome,
      reason,
      status,
      method: at.method,
      rpcMethod: at.rpcMethod ?? null,
      sessionId: at.sid ?? null,
    };
    observer?.decided(decision, task);
    if (hook === undefined) return;
    try {
      hook(decision);
    } catch (err) {
      this.report(err, "onDecision");
    }
  }

  /** Tells `onError` (a throwing hook is ignored: it must not break request handling). */
  report = (error: unknown, context: string): void => {
    this.config.observer?.error(error, context);
    const hook = this.config.onError;
    if (hook === undefined) return;
    try {
      hook(error, context);
    } catch {
      // A throwing error hook must not break request handling.
    }
  };
}

/**
 * Whose streams a request without a session reads: its caller's (a
 * stateless server's answers), or, for an anonymous caller (attach-only
 * mode), every anonymous caller's: nothing tells them apart, but a named
 * caller's id never resumes there, nor theirs a named caller's. The space
 * keeps the names apart from every session id (visible ASCII only), and
 * from each other (`caller <fingerprint>` never equals `anonymous caller`).
 */
function streamsOf(ctx: GuardContext): string {
  return ctx.fingerprint === null ? "anonymous caller" : `caller ${ctx.fingerprint}`;
}

/**
 * Wraps a Streamable HTTP MCP handler so that sessions belong to the principal
 * that initialized them, and cancellations reach only requests of their own
 * session. Returns a handler with the same signature, for `Deno.serve`, Hono,
 * or the SDK's own per-session routing.
 *
 * Rules (strict mode): a session id the handler issues is bound to the caller
 * (refused or full: the session is closed and the caller gets 409/503, never
 * the id); GET, POST and DELETE with another principal's session id get 403;
 * unknown ids 404; anonymous callers 401; malformed ids 400 before any
 * lookup; a GET or DELETE without a session id asks no ownership question
 * and reaches the handler; a live GET stream pins its session until it
 * ends; every SSE event id the guard forwards is tagged for its session,
 * and a GET's `Last-Event-ID` must carry this session's tag (400
 * otherwise), so a shared event store never replays one session's events
 * into another (option `resumption`); DELETE by the owner cancels the
 * session's requests and forgets it; a `notifications/cancelled` aborts
 * only a request of the same session; a
 * failed registry call answers 503, never allow. Requests are tracked so
 * `signalFor(extra)` gives tool handlers an `AbortSignal`; a cancellation
 * from the server side (`cancellations.cancel`/`cancelAll`, a closed
 * session) is also sent to the handler as a `notifications/cancelled`, so an
 * SDK tool's own `extra.signal` aborts, and the caller gets a JSON-RPC error
 * `-32000` ("Request cancelled by the server: ...") instead of no answer.
 *
 * One worker hosts `owners`, the registries derived from it and, when its
 * worker never ran, `cancellations`; it starts with the first request the
 * guard lets in (not a refused one, such as a 401), so that it boots while
 * the handler answers it (a guard nobody calls keeps nothing alive). Close
 * the registries to stop it: a live worker keeps the process alive.
 *
 * @example Guard an MCP handler on Deno.serve
 * ```ts
 * import assert from "node:assert/strict";
 * import {
 *   CancellationRegistry,
 *   guardSessions,
 *   SessionOwnerRegistry,
 * } from "@mcp-guard/session";
 *
 * const owners = new SessionOwnerRegistry();
 * const cancellations = new CancellationRegistry();
 * // A stand-in for an MCP server without a listening stream: GET is 405.
 * const mcpHandler = (request: Request) =>
 *   new Response(null, { status: request.method === "GET" ? 405 : 202 });
 *
 * const guard = guardSessions(mcpHandler, {
 *   owners,
 *   cancellations,
 *   principal: (request) => request.headers.get("authorization"),
 * });
 *
 * const anonymous = await guard(new Request("http://localhost/mcp", { method: "GET" }));
 * assert.equal(anonymous.status, 401); // strict mode wants an identified caller
 * const stranger = await guard(
 *   new Request("http://localhost/mcp", {
 *     method: "GET",
 *     headers: { authorization: "Bearer alice", "mcp-session-id": "someone-elses" },
 *   }),
 * );
 * assert.equal(stranger.status, 404); // nobody owns that session id
 * // A GET of no session asks no ownership question: the handler answers it.
 * const noSession = await guard(
 *   new Request("http://localhost/mcp", { headers: { authorization: "Bearer alice" } }),
 * );
 * assert.equal(noSession.status, 405);
 * await owners.close();
 * await cancellations.close();
 * ```
 */
export function guardSessions(handler: RequestHandler, options: GuardOptions): GuardedHandler {
  const guard = new SessionGuard(handler, options);
  const guarded = guard.handle as GuardedHandler;
  guarded.signalFor = guard.signalFor;
  return guarded;
}
