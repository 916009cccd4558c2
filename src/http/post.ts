/**
 * The guard's POST path: read and classify the body once, check the owner
 * (strict mode), apply task rules, scope cancellations to the session, track
 * requests so they can be cancelled, and bind the session id an
 * `initialize` answer issues to its caller.
 *
 * @module
 */

import { cancelKey } from "../core/cancel_table.ts";
import type { Tracked } from "../registry/cancellation_registry.ts";
import { RequestCancelledError } from "../core/errors.ts";
import {
  classify,
  isJsonMediaType,
  parseJson,
  readBody,
  rpcError,
  type RpcMessage,
} from "./jsonrpc.ts";
import { isModernRequest } from "./tasks.ts";
import { isValidRequestId, sanitizeSessionId } from "../core/validate.ts";
import type { At, SessionGuard } from "./guard.ts";
import { closeSession, notifyCancelled } from "./handler_calls.ts";
import { registry, RegistryFailure } from "./registry_failure.ts";
import {
  type AnswerWatch,
  cancelledEvent,
  cancelledJson,
  cancelMessage,
  isClientCancel,
  isEventStream,
  watchAnswer,
} from "./server_cancel.ts";
import type { GatePass, ResponseWrap } from "./task_gate.ts";
import type { GuardContext, GuardReason } from "./types.ts";

/** The POST handler of one guard. */
export type Post = (
  request: Request,
  sid: string | null,
  ctx: GuardContext,
  ahead: Promise<void> | undefined,
) => Promise<Response>;

/** A request whose id a registry keys (tracked for cancellation). */
type Request_ = Extract<RpcMessage, { kind: "request" }> & { id: string | number };

/** Builds the POST path over a guard's state. */
export function postRequest(guard: SessionGuard): Post {
  const { config } = guard;
  const { handler, owners, cancellations } = config;

  /** A body problem found by `src/jsonrpc.ts`: it carries its own answer. */
  function problem(
    at: At,
    p: {
      status: number;
      code: number;
      reason: string;
      message: string;
      id: string | number | null;
    },
  ): Response {
    guard.decide("refuse", p.reason as GuardReason, p.status, at);
    return rpcError(p.status, p.code, p.message, p.id);
  }

  /**
   * The owner of `sid` for a POST: `fp` when the registry already knows it as
   * the owner (`knownOwner`) or the owner cache holds it; else the registry's.
   */
  function lookupOwner(sid: string, fp: string): Promise<string | null> {
    if (owners.knownOwner?.(sid) === fp) return Promise.resolve(fp);
    if (guard.owners.has(sid, fp)) return Promise.resolve(fp);
    return guard.ownerOf(sid);
  }

  /**
   * A fresh request carrying the body already read. Not `new Request(request,
   * ...)`: that reads `request.signal`, and a Deno.serve request whose signal
   * was touched is aborted with a DOMException after every response.
   */
  function copy(request: Request, body: string): Request {
    return new Request(request.url, { method: "POST", headers: request.headers, body });
  }

  /** Calls the handler; `produced` sees its answer at once (before any other task runs). */
  async function invoke(
    inner: Request,
    ctx: GuardContext,
    wrap: ResponseWrap | null,
    produced?: (response: Response) => void,
  ) {
    const answer = handler(inner, ctx);
    const response = answer instanceof Response ? answer : await answer;
    produced?.(response);
    return wrap === null ? response : wrap(response);
  }

  /**
   * Counts an allowed request as a use of its session, and of its credential
   * record (coalesced by the registries).
   */
  const touchFailed = (err: unknown) => guard.report(err, "touch");
  function touch(sid: string, fp: string, record: string | null): void {
    owners.touch?.(sid, fp).catch(touchFailed);
    if (record !== null) guard.credentials?.registry.touch?.(sid, record).catch(touchFailed);
  }

  /** Discards a response and asks the handler to terminate the session it issued. */
  async function closeIssued(request: Request, sid: string, response: Response, ctx: GuardContext) {
    await response.body?.cancel().catch(() => {});
    await closeSession(handler, request.url, sid, ctx, request.headers)
      .catch((err) => guard.report(err, "close-issued-session"));
  }

  /**
   * Binds a session id the handler just issued to the caller. When it cannot
   * be bound, the session is closed through the handler and the caller gets
   * an error instead of the id.
   */
  function bindIssued(
    request: Request,
    response: Response,
    sid: string | null,
    ctx: GuardContext,
    rpcMethod: string | null,
  ): Response | Promise<Response> {
    if (sid !== null && response.status === 404) {
      guard.owners.drop(sid);
      guard.local.drop(sid);
    }
    const raw = response.headers.get("mcp-session-id");
    // Most answers issue no session id: no promise for them.
    if (raw === null || raw === sid) return response;
    return bindNew(request, response, raw, ctx, rpcMethod);
  }

  async function bindNew(
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
      await closeIssued(request, raw, response, ctx);
      return guard.refuse("invalid-issued-session-id", at);
    }
    if (fp === null) return response; // attach-only, anonymous: nobody owns it
    let result: string;
    guard.local.binding(issued);
    try {
      const shared = (await config.shared).has(fp);
      result = await owners.bind(issued, fp, shared ? { shared } : undefined);
      if (result === "bound" && guard.credentials !== undefined) {
        // What the credential allowed, on the issued id only, once its owner is bound: the
        // session is not usable (refused as unknown) until both are.
        let recorded: string;
        try {
          recorded = await guard.credentials.bind(issued, ctx);
        } catch (err) {
          await owners.forget(issued, fp).catch((e) => guard.report(e, "forget"));
          throw err;
        }
        if (recorded !== "bound") {
          await owners.forget(issued, fp).catch((e) => guard.report(e, "forget"));
          result = recorded;
        }
      }
    } catch (err) {
      guard.local.bound(issued, null);
      await closeIssued(request, issued, response, ctx);
      throw new RegistryFailure(err);
    }
    if (result === "bound") {
      guard.owners.remember(issued, fp);
      guard.decide("allow", "bound", null, { ...at, sid: issued });
      // Evicted before its reply even arrived (a flood of binds by one principal): closed now.
      guard.local.bound(issued, {
        url: request.url,
        principal: guard.identifier.keepsPrincipals ? ctx.principal : null,
        fingerprint: fp,
      });
      return response;
    }
    guard.local.bound(issued, null);
    await closeIssued(request, issued, response, ctx);
    return guard.refuse(result === "full" ? "bind-full" : "bind-refused", { ...at, sid: issued });
  }

  /** Discards a handler's answer nobody will read; closes a session it issued on the way. */
  async function discardLate(request: Request, sid: string, response: Response, ctx: GuardContext) {
    const raw = response.headers.get("mcp-session-id");
    if (raw !== null && raw !== sid) return await closeIssued(request, raw, response, ctx);
    await response.body?.cancel().catch(() => {});
  }

  /**
   * Runs a request tracked for cancellation. The registration is queued with
   * `track` (the caller is authorized by then, so it cannot displace anyone's
   * entry) and travels to the registry while the handler runs.
   *
   * If the registry fails before the handler answered, the request is
   * cancelled (its signal aborted, and a `notifications/cancelled` sent to
   * the handler so an SDK server stops it too) and the caller gets 503. If it
   * fails later, the request is stopped the same way and the failure is
   * reported to `onError`: a request the registry cannot cancel does not run.
   *
   * A server-side cancellation (an operator, a closed session, another
   * process) is told to the handler too, so the tool's own signal aborts, and
   * answered here (`./server_cancel.ts`): an SDK server drops the answer of a
   * request it saw cancelled. The client's own gets no answer. The first of
   * the handler's answer and the cancellation wins.
   *
   * The registry entry is dropped once the request is cancelled or its answer
   * is over; `signalFor` finds the signal until the answer is over.
   */
  async function runTracked(
    request: Request,
    inner: Request,
    sid: string,
    ctx: GuardContext,
    message: Request_,
    wrap: ResponseWrap | null,
  ): Promise<Response> {
    const controller = new AbortController();
    const signal = controller.signal;
    const key = cancelKey(sid, message.id);
    guard.inflight.set(key, signal);
    let tracked: Tracked;
    try {
      tracked = cancellations.track(sid, message.id, controller);
    } catch (err) {
      guard.inflight.delete(key);
      throw new RegistryFailure(err);
    }
    const entryId = tracked.entryId;
    let released = false;
    let ended = false;
    // Decided (answered, cancelled, stopped for a registry failure): nothing else may notify
    // the handler or answer the caller. `cancelled`: cancelled before the answer streamed.
    let settled = false;
    let cancelled: string | null = null;
    // Settles with the handler's answer, or with null once a cancellation overtook it.
    let decide!: (first: Response | null) => void;
    let fail!: (err: unknown) => void;
    const first = new Promise<Response | null>((resolve, reject) => {
      decide = resolve;
      fail = reject;
    });
    let stream: AnswerWatch | null = null;
    const release = () => {
      if (released) return;
      released = true;
      cancellations.deregister(entryId).catch((err) => guard.report(err, "deregister"));
    };
    const end = () => {
      if (ended) return;
      ended = true;
      signal.removeEventListener("abort", onAbort);
      if (guard.inflight.get(key) === signal) guard.inflight.delete(key);
      release();
    };
    const stopInner = (reason = "the session registry is unavailable") =>
      notifyCancelled(handler, request, sid, ctx, message.id, reason)
        .catch((err) => guard.report(err, "cancel-in-handler"));
    /**
     * A cancellation: the entry leaves the registry at once (a cancelled entry can never be
     * cancelled again); the server side's is told to the handler and answered here.
     */
    function onAbort(): void {
      release();
      if (settled) return;
      settled = true;
      if (isClientCancel(signal.reason)) return; // the client told the handler itself
      const why = cancelMessage(signal.reason);
      stopInner(why);
      if (stream !== null) {
        stream.interrupt(cancelledEvent(message.id, why));
      } else {
        cancelled = why;
        decide(null);
      }
    }
    signal.addEventListener("abort", onAbort);
    let failure: { cause: unknown } | null = null;
    let answered = false;
    tracked.registered.then((ok) => {
      if (!ok) released = true; // refused (full): the request runs untracked, nothing to drop
    }, (err) => {
      // The registration may still have reached a shared store before the failure: the
      // deregistration at the end stays (it only removes a slot this entry still owns).
      failure = { cause: err };
      if (settled || ended) return;
      settled = true; // answered 503 once the handler answered, or stopped here
      if (!answered) return;
      // The answer is already streaming: stop the request rather than run it uncancellable.
      guard.report(err, "register");
      controller.abort(err);
      stopInner();
    });
    // A JSON answer is the answer: from the moment it exists, it wins over a cancellation.
    const handled = invoke(inner, ctx, wrap, (answer) => {
      if (!isEventStream(answer)) settled = true;
    });
    handled.then(decide, fail);
    let response: Response;
    try {
      const answer = await first;
      if (cancelled !== null) {
        // Cancelled before the handler answered: its answer, now or later, goes nowhere.
        handled.then(
          (late) => discardLate(request, sid, late, ctx),
          (err) => guard.report(err, "handler"),
        );
        end();
        return cancelledJson(message.id, cancelled);
      }
      response = answer!;
      if (failure === null) {
        response = await bindIssued(request, response, sid, ctx, message.method);
      }
    } catch (err) {
      end();
      throw err;
    }
    if (cancelled !== null) { // cancelled while the answer was being bound
      await discardLate(request, sid, response, ctx);
      end();
      return cancelledJson(message.id, cancelled);
    }
    if (failure !== null) {
      const cause = (failure as { cause: unknown }).cause;
      controller.abort(cause);
      await response.body?.cancel().catch(() => {});
      await stopInner();
      end();
      throw new RegistryFailure(cause);
    }
    answered = true;
    if (!isEventStream(response)) {
      end();
      return response;
    }
    stream = watchAnswer(
      response,
      message.id,
      {
        onAnswer: () => settled = true,
        onEnd: end,
      },
      undefined,
      guard.answerRewriter(response, sid, ctx),
    );
    return stream.response;
  }

  /** A `notifications/cancelled`: aborts only a request of the same session. */
  async function cancel(sid: string, params: { requestId?: unknown; reason?: unknown }) {
    // Only ids a registry keys are ever tracked: any other matches nothing.
    const requestId = params?.requestId;
    if (!isValidRequestId(requestId)) return false;
    const why = typeof params.reason === "string" ? params.reason.slice(0, 200) : undefined;
    return await registry(cancellations.cancel(
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

  return async (request, sid, ctx, ahead) => {
    const fp = ctx.fingerprint;
    const at: At = { method: "POST", sid };
    // Strict mode: ask who owns the session while the body is read and parsed.
    const epoch = guard.owners.epoch;
    const owner = config.strict && sid !== null ? lookupOwner(sid, fp!) : null;
    // ... and, for scope-bound sessions, what the credential that opened it allowed.
    const credentials = sid === null ? undefined : guard.credentials;
    const recordEpoch = credentials?.cache.epoch;
    const record = credentials?.lookup(sid!, true);
    if (!isJsonMediaType(request.headers.get("content-type"))) {
      return guard.refuse("unsupported-media-type", at);
    }
    let body: Awaited<ReturnType<typeof readBody>>;
    try {
      body = await readBody(request, config.maxBodyBytes);
    } catch {
      // The client went away mid-body: nothing to answer it with, nothing to log.
      return guard.refuse("client-aborted", at);
    }
    if (body.kind === "problem") return problem(at, body);
    const json = parseJson(body.text);
    if (json.kind === "problem") return problem(at, json);
    const message = classify(json.value);
    if (message.kind === "problem") return problem(at, message);
    const rpcMethod = message.kind === "response" ? null : message.method;
    ctx.parsedBody = json.value;
    if (message.kind !== "response" && isModernRequest(message.params)) ctx.era = "modern";
    const id = message.kind === "notification" ? null : message.id;
    const refuse = (
      reason: Parameters<SessionGuard["refuse"]>[0],
      rid: string | number | null,
      detail?: string,
      as?: Parameters<SessionGuard["refuse"]>[0],
    ) => guard.refuse(reason, { method: "POST", rpcMethod, sid, id: rid }, detail, { as });
    const gateOf = () => guard.tasks?.check(request, message, ctx, sid, refuse) ?? null;
    /** The request the handler gets: the body as read, or as the task gate rewrote it. */
    const innerOf = (pass: GatePass | null) =>
      config.forwardParsed
        ? request
        : copy(request, pass?.rewritten ? JSON.stringify(json.value) : body.text);

    if (sid === null) {
      // No session yet: `initialize`, or a stateless server's traffic.
      const pass = await gateOf();
      if (pass instanceof Response) return pass;
      guard.decide("allow", "allowed", null, { method: "POST", rpcMethod });
      const answer = await invoke(innerOf(pass), ctx, pass?.wrap ?? null);
      return guard.tagAnswer(await bindIssued(request, answer, null, ctx, rpcMethod), null, ctx);
    }
    let recorded: string | null = null;
    if (config.strict) {
      const where = { ...at, rpcMethod, sid, id };
      const refusal = await guard.checkOwner(where, fp!, owner!, epoch);
      if (refusal !== null) return refusal;
      if (credentials !== undefined) {
        recorded = await record!;
        const refused = guard.checkCredentials(where, ctx, recorded, recordEpoch);
        if (refused !== null) return refused;
      }
    }
    const pass = await gateOf();
    if (pass instanceof Response) return pass;
    const inner = innerOf(pass);
    const gate = pass?.wrap ?? null;
    // Never overtake a GET or DELETE of this session that arrived earlier.
    if (ahead !== undefined) await ahead;
    // Every allowed request is a use of the session (LRU recency, idle expiry); the registry
    // coalesces touches, so this is not a round trip per request.
    if (fp !== null) touch(sid, fp, recorded);
    if (message.kind === "notification" && message.method === "notifications/cancelled") {
      const cancelled = await cancel(sid, message.params as { requestId?: unknown });
      guard.decide("allow", cancelled ? "cancelled" : "cancel-unmatched", null, {
        ...at,
        rpcMethod,
      });
      const answer = await bindIssued(request, await handler(inner, ctx), sid, ctx, rpcMethod);
      return guard.tagAnswer(answer, sid, ctx);
    }
    guard.decide("allow", "allowed", null, { ...at, rpcMethod });
    if (message.kind === "request" && isValidRequestId(message.id)) {
      // Its SSE answer's ids are tagged where the answer is watched.
      return await runTracked(request, inner, sid, ctx, message as Request_, gate);
    }
    // A notification, or a request whose id no registry keys (ill-formed Unicode, over 1,024
    // UTF-8 bytes; or not a JSON-RPC id at all): the handler answers it as it would unguarded;
    // such a request runs untracked, as when the cancellation table is full (a server-side
    // cancel cannot reach it).
    return guard.tagAnswer(
      await bindIssued(request, await invoke(inner, ctx, gate), sid, ctx, rpcMethod),
      sid,
      ctx,
    );
  };
}
