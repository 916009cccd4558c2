/**
 * The guard's POST path, as a sequence of named steps over the narrow state
 * each needs:
 *
 * 1. `#read`: read and classify the body once (while, in
 *    strict mode, the session's owner and credential record are looked up);
 * 2. `#checkSession`: the owner and the credential of a
 *    session request (strict mode);
 * 3. the task gate (`./task_gate.ts`): every task reference, task creation,
 *    task lists;
 * 4. `#forward`: a cancellation scoped to its session, a
 *    request tracked for cancellation (`./tracked_request.ts`), anything else
 *    as is; a session id the answer issues is bound to the caller
 *    (`./issued_sessions.ts`).
 *
 * @module
 */

import { RequestCancelledError } from "../core/errors.ts";
import { isValidRequestId } from "../core/validate.ts";
import type { SessionCredentials } from "./credentials.ts";
import { invokeHandler } from "./handler_calls.ts";
import type { Identifier } from "./identify.ts";
import { IssuedSessions } from "./issued_sessions.ts";
import {
  type BodyResult,
  classify,
  isJsonMediaType,
  parseJson,
  readBody,
  rpcError,
  type RpcMessage,
} from "./jsonrpc.ts";
import type { InflightSignals } from "./inflight_signals.ts";
import type { LocalSessions } from "./local_sessions.ts";
import type { OwnerCache } from "./owner_cache.ts";
import type { At, RefusalReason } from "./refusals.ts";
import { registry, RegistryFailure } from "./registry_failure.ts";
import { copiedFrom } from "./resume.ts";
import type { GatePass, TaskGate } from "./task_gate.ts";
import { isModernRequest } from "./tasks.ts";
import { DONE } from "../registry/touches.ts";
import { runTracked, type TrackedRequest, type TrackedState } from "./tracked_request.ts";
import type { GuardConfig } from "./config.ts";
import type { GuardContext, GuardReason } from "./types.ts";

/** What the POST path takes from its guard (`SessionGuard` is one). */
export interface PostGuard {
  readonly config: GuardConfig;
  readonly identifier: Identifier;
  readonly owners: OwnerCache;
  readonly local: LocalSessions;
  readonly tasks: TaskGate | undefined;
  readonly credentials: SessionCredentials | undefined;
  readonly inflight: InflightSignals;
  ownerOf(sid: string): Promise<string | null>;
  ownerVerdict(
    at: At & { sid: string },
    fp: string,
    owner: string | null,
    epoch?: number,
  ): Response | null;
  checkCredentials(
    at: At & { sid: string },
    ctx: GuardContext,
    record: string | null,
    epoch?: number,
  ): Response | null;
  answerRewriter: TrackedState["answerRewriter"];
  tagAnswer(response: Response, sid: string | null, ctx: GuardContext, gated?: boolean): Response;
  decide(
    outcome: "allow" | "refuse",
    reason: GuardReason,
    status: number | null,
    at: At,
    task?: string,
  ): void;
  refuse(
    reason: RefusalReason,
    at: At,
    detail?: string,
    options?: { as?: RefusalReason; headers?: Record<string, string> },
  ): Response;
  report(error: unknown, context: string): void;
  registryRefusal(err: RegistryFailure, at: At): Response;
}

/** A POST body read and classified. */
interface Read {
  message: Exclude<RpcMessage, { kind: "problem" }>;
  /** The parsed body (the task gate may rewrite it). */
  value: unknown;
  text: string;
}

/**
 * What strict mode looked up for a session request while its body was read
 * (what the registry's memory or the caches knew at once, else a promise).
 */
interface Lookups {
  epoch: number;
  owner: string | null | Promise<string | null>;
  credentials: SessionCredentials | undefined;
  recordEpoch: number | undefined;
  record: string | null | Promise<string | null> | undefined;
}

/** The POST path of one guard. */
export class PostPath {
  readonly #guard: PostGuard;
  readonly #issued: IssuedSessions;
  readonly #tracking: TrackedState;
  readonly #touchFailed = (err: unknown) => this.#guard.report(err, "touch");

  constructor(guard: PostGuard) {
    this.#guard = guard;
    const { config } = guard;
    this.#issued = new IssuedSessions({
      handler: config.handler,
      owners: config.owners,
      shared: config.shared,
      credentials: guard.credentials,
      ownerCache: guard.owners,
      local: guard.local,
      keepsPrincipals: guard.identifier.keepsPrincipals,
      decide: (outcome, reason, status, at) => guard.decide(outcome, reason, status, at),
      refuse: (reason, at) => guard.refuse(reason, at),
      report: guard.report,
    });
    this.#tracking = {
      handler: config.handler,
      cancellations: config.cancellations,
      inflight: guard.inflight,
      issued: this.#issued,
      answerRewriter: (response, sid, ctx, gated) =>
        guard.answerRewriter(response, sid, ctx, gated),
      report: guard.report,
    };
  }

  /** One POST: read, checked, gated, forwarded; a registry failure answered 503. */
  async handle(
    request: Request,
    sid: string | null,
    ctx: GuardContext,
    ahead: Promise<void> | undefined,
  ): Promise<Response> {
    const guard = this.#guard;
    try {
      const at: At = { method: "POST", sid };
      // Strict mode: ask who owns the session (and what opened it) while the body is read.
      const lookups = this.#lookUp(sid, ctx);
      if (!isJsonMediaType(request.headers.get("content-type"))) {
        return guard.refuse("unsupported-media-type", at);
      }
      let body: BodyResult;
      try {
        body = await readBody(request, guard.config.maxBodyBytes);
      } catch {
        // The client went away mid-body: nothing to answer it with, nothing to log.
        return guard.refuse("client-aborted", at);
      }
      const read = this.#read(body, at);
      if (read instanceof Response) return read;
      const { message } = read;
      const rpcMethod = message.kind === "response" ? null : message.method;
      ctx.parsedBody = read.value;
      if (message.kind !== "response" && isModernRequest(message.params)) ctx.era = "modern";
      const id = message.kind === "notification" ? null : message.id;
      const where: At = { method: "POST", sid, rpcMethod, id };

      let recorded: string | null = null;
      if (sid !== null && lookups !== null) {
        let checked = this.#checkSession(where as At & { sid: string }, ctx, lookups);
        if (checked instanceof Promise) checked = await checked;
        if (checked instanceof Response) return checked;
        recorded = checked;
      }
      let pass: Response | GatePass | null | Promise<Response | GatePass | null> = null;
      if (guard.tasks !== undefined) {
        const refuse = (
          reason: RefusalReason,
          id: string | number | null,
          detail?: string,
          as?: RefusalReason,
        ) => guard.refuse(reason, { ...where, id }, detail, { as });
        pass = guard.tasks.check(request, message, ctx, sid, refuse);
        if (pass instanceof Promise) pass = await pass;
        if (pass instanceof Response) return pass;
      }
      const inner = this.#inner(request, read, pass);
      const wrap = pass?.wrap ?? null;

      if (sid === null) {
        // No session yet: `initialize`, or a stateless server's traffic.
        guard.decide(
          "allow",
          pass?.reason ?? "allowed",
          null,
          { method: "POST", rpcMethod },
          pass?.task,
        );
        const answer = await invokeHandler(guard.config.handler, inner, ctx, wrap);
        // An answer the task rules acted on is tagged as such: never resumed (see `./resume.ts`).
        return guard.tagAnswer(
          await this.#issued.bind(request, answer, null, ctx, rpcMethod),
          null,
          ctx,
          wrap !== null,
        );
      }
      // Never overtake a GET or DELETE of this session that arrived earlier.
      if (ahead !== undefined) await ahead;
      // Every allowed request is a use of the session (LRU recency, idle expiry); the registry
      // coalesces touches, so this is not a round trip per request.
      if (ctx.fingerprint !== null) this.#touch(sid, ctx.fingerprint, recorded);
      return await this.#forward(request, inner, sid, ctx, message, pass);
    } catch (err) {
      if (!(err instanceof RegistryFailure)) throw err;
      return guard.registryRefusal(err, { method: "POST", sid });
    }
  }

  /**
   * Strict mode, a session request: the owner lookup (the registry's
   * `knownOwner` or the owner cache when they know it, else the registry)
   * and the credential record, started before the body is read.
   */
  #lookUp(sid: string | null, ctx: GuardContext): Lookups | null {
    const guard = this.#guard;
    if (sid === null || !guard.config.strict) return null;
    const fp = ctx.fingerprint!;
    const epoch = guard.owners.epoch;
    let owner: string | Promise<string | null>;
    if (guard.config.owners.knownOwner?.(sid) === fp) owner = fp;
    else if (guard.owners.has(sid, fp)) owner = fp;
    else owner = guard.ownerOf(sid);
    const credentials = guard.credentials;
    return {
      epoch,
      owner,
      credentials,
      recordEpoch: credentials?.cache.epoch,
      record: credentials?.lookup(sid, true),
    };
  }

  /** The body, parsed and classified; or the answer to a body problem. */
  #read(body: BodyResult, at: At): Read | Response {
    if (body.kind === "problem") return this.#problem(at, body);
    const json = parseJson(body.text);
    if (json.kind === "problem") return this.#problem(at, json);
    const message = classify(json.value);
    if (message.kind === "problem") return this.#problem(at, message);
    return { message, value: json.value, text: body.text };
  }

  /** A body problem found by `./jsonrpc.ts`: it carries its own answer. */
  #problem(
    at: At,
    p: {
      status: number;
      code: number;
      reason: string;
      message: string;
      id: string | number | null;
    },
  ): Response {
    this.#guard.decide("refuse", p.reason as GuardReason, p.status, at);
    return rpcError(p.status, p.code, p.message, p.id);
  }

  /**
   * Strict mode: the caller owns the session, and its credential may use it
   * (scope-bound sessions). The credential record it was checked against, or
   * the refusal: at once when both were known at once, else a promise.
   */
  #checkSession(
    where: At & { sid: string },
    ctx: GuardContext,
    lookups: Lookups,
  ): string | null | Response | Promise<string | null | Response> {
    const { owner, record } = lookups;
    if (owner instanceof Promise || record instanceof Promise) {
      return this.#checkSessionLater(where, ctx, lookups);
    }
    const refusal = this.#guard.ownerVerdict(where, ctx.fingerprint!, owner, lookups.epoch);
    if (refusal !== null) return refusal;
    if (lookups.credentials === undefined) return null;
    return this.#guard.checkCredentials(where, ctx, record!, lookups.recordEpoch) ?? record!;
  }

  /** {@linkcode #checkSession} once its lookups are answered. */
  async #checkSessionLater(
    where: At & { sid: string },
    ctx: GuardContext,
    lookups: Lookups,
  ): Promise<string | null | Response> {
    const guard = this.#guard;
    const refusal = guard.ownerVerdict(where, ctx.fingerprint!, await lookups.owner, lookups.epoch);
    if (refusal !== null) return refusal;
    if (lookups.credentials === undefined) return null;
    const recorded = await lookups.record!;
    return guard.checkCredentials(where, ctx, recorded, lookups.recordEpoch) ?? recorded;
  }

  /**
   * The request the handler gets: the original one with `forwardBody:
   * "parsed"`, else a fresh one carrying the body as read, or as the task
   * gate rewrote it. When the gate replaced `Mcp-Name` (a task id replaced),
   * a fresh one in every mode, with that header (and the rewritten body):
   * with `"parsed"` it is recorded as a copy of the original
   * (`originalRequest`, which the Hono adapter relies on). Not
   * `new Request(request, ...)`: that reads `request.signal`, and a
   * Deno.serve request whose signal was touched is aborted with a
   * DOMException after every response.
   */
  #inner(request: Request, read: Read, pass: GatePass | null): Request {
    const mcpName = pass?.mcpName;
    const parsed = this.#guard.config.forwardParsed;
    if (parsed && mcpName === undefined) return request;
    const rewritten = pass?.rewritten === true;
    const body = rewritten ? JSON.stringify(read.value) : read.text;
    let headers = request.headers;
    if (rewritten) {
      headers = new Headers(headers);
      headers.delete("content-length"); // the body was serialized again
      if (mcpName !== undefined) headers.set("mcp-name", mcpName);
    }
    const inner = new Request(request.url, { method: "POST", headers, body });
    return parsed ? copiedFrom(inner, request) : inner;
  }

  /** Counts a use of the session, and of its credential record (coalesced by the registries). */
  #touch(sid: string, fp: string, record: string | null): void {
    const guard = this.#guard;
    // A touch absorbed into the trailing one answers DONE: nothing to watch.
    const touched = guard.config.owners.touch?.(sid, fp);
    if (touched !== undefined && touched !== DONE) touched.catch(this.#touchFailed);
    if (record !== null) {
      const recordTouched = guard.credentials?.registry.touch?.(sid, record);
      if (recordTouched !== undefined && recordTouched !== DONE) {
        recordTouched.catch(this.#touchFailed);
      }
    }
  }

  /**
   * An allowed message of a session, to the handler; a request whose id a
   * request of the session still in flight has is refused instead.
   */
  #forward(
    request: Request,
    inner: Request,
    sid: string,
    ctx: GuardContext,
    message: Read["message"],
    pass: GatePass | null,
  ): Response | Promise<Response> {
    const wrap = pass?.wrap ?? null;
    const rpcMethod = message.kind === "response" ? null : message.method;
    const at: At = { method: "POST", sid, rpcMethod };
    if (message.kind === "notification" && message.method === "notifications/cancelled") {
      return this.#forwardCancel(request, inner, sid, ctx, message.params, at);
    }
    if (message.kind === "request" && isValidRequestId(message.id)) {
      // MCP forbids reusing a request id in a session. An SDK server sends each answer on the
      // stream of the latest request with its id: this request's stream would carry the earlier
      // one's answer, which the task rules never saw (a `tasks/list` unfiltered). Checked and
      // registered (`runTracked`) with nothing awaited between, so no two run at once.
      if (this.#guard.inflight.has(sid, message.id)) {
        return this.#guard.refuse(
          "duplicate-request-id",
          { ...at, id: message.id },
          quotedId(message.id),
        );
      }
      this.#guard.decide("allow", pass?.reason ?? "allowed", null, at, pass?.task);
      // Its SSE answer's ids are tagged where the answer is watched.
      const tracked = message as TrackedRequest;
      return runTracked(this.#tracking, request, inner, sid, ctx, tracked, wrap);
    }
    this.#guard.decide("allow", pass?.reason ?? "allowed", null, at, pass?.task);
    // A notification, or a request whose id no registry keys (ill-formed Unicode, over 1,024
    // UTF-8 bytes; or not a JSON-RPC id at all): the handler answers it as it would unguarded;
    // such a request runs untracked, as when the cancellation table is full (a server-side
    // cancel cannot reach it).
    return this.#forwardUntracked(request, inner, sid, ctx, rpcMethod, wrap);
  }

  /** A `notifications/cancelled` of a session: its request cancelled, then the handler told. */
  async #forwardCancel(
    request: Request,
    inner: Request,
    sid: string,
    ctx: GuardContext,
    params: unknown,
    at: At,
  ): Promise<Response> {
    const guard = this.#guard;
    const cancelled = await this.#cancel(sid, params as { requestId?: unknown });
    guard.decide("allow", cancelled ? "cancelled" : "cancel-unmatched", null, at);
    const answer = await this.#issued.bind(
      request,
      await guard.config.handler(inner, ctx),
      sid,
      ctx,
      at.rpcMethod ?? null,
    );
    return guard.tagAnswer(answer, sid, ctx);
  }

  /** A message of a session the registry cannot track, to the handler. */
  async #forwardUntracked(
    request: Request,
    inner: Request,
    sid: string,
    ctx: GuardContext,
    rpcMethod: string | null,
    wrap: GatePass["wrap"],
  ): Promise<Response> {
    const guard = this.#guard;
    const answer = await invokeHandler(guard.config.handler, inner, ctx, wrap);
    const bound = await this.#issued.bind(request, answer, sid, ctx, rpcMethod);
    return guard.tagAnswer(bound, sid, ctx, wrap !== null);
  }

  /** A `notifications/cancelled`: aborts only a request of the same session. */
  async #cancel(sid: string, params: { requestId?: unknown; reason?: unknown }): Promise<boolean> {
    // Only ids a registry keys are ever tracked: any other matches nothing.
    const requestId = params?.requestId;
    if (!isValidRequestId(requestId)) return false;
    const why = typeof params.reason === "string" ? params.reason.slice(0, 200) : undefined;
    return await registry(this.#guard.config.cancellations.cancel(
      sid,
      requestId,
      new RequestCancelledError(
        sid,
        requestId,
        why === undefined ? undefined : `cancelled by the client: ${why}`,
        { origin: "client" },
      ),
    ));
  }
}

/** A request id as a refusal's message names it (a long string id cut short). */
function quotedId(id: string | number): string {
  const quoted = JSON.stringify(id);
  return quoted.length <= 66 ? quoted : `${quoted.slice(0, 64)}..."`;
}
