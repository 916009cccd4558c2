/**
 * A request tracked for cancellation, from its registration to the end of
 * its answer: the first of the handler's answer and a cancellation wins; a
 * server-side cancellation is told to the handler and answered here; a
 * registry failure stops the request (503 before its answer, `onError`
 * after).
 *
 * @module
 */

import {
  type Abortable,
  CancellationRegistry,
  deregisterQuietly,
  trackQuietly,
} from "../registry/cancellation_registry.ts";
import { notifyCancelled } from "./handler_calls.ts";
import type { InflightSignals, SignalSource } from "./inflight_signals.ts";
import type { IssuedSessions } from "./issued_sessions.ts";
import type { RpcMessage } from "./jsonrpc.ts";
import { RegistryFailure } from "./registry_failure.ts";
import {
  cancelledEvent,
  cancelledJson,
  cancelMessage,
  type EagerAnswerWatch,
  isClientCancel,
  isEventStream,
  watchAnswerEagerly,
} from "./server_cancel.ts";
import type { SseIdRewriter } from "./sse_events.ts";
import type { ResponseWrap } from "./task_gate.ts";
import type { GuardCancellations, GuardContext, RequestHandler } from "./types.ts";

const builtIn = CancellationRegistry.prototype;

/** A request whose id a registry keys (tracked for cancellation). */
export type TrackedRequest = Extract<RpcMessage, { kind: "request" }> & { id: string | number };

/** What tracking a request takes from its guard. */
export interface TrackedState {
  handler: RequestHandler;
  cancellations: GuardCancellations;
  /** The guard's signal of each tracked request (`signalFor`). */
  inflight: InflightSignals;
  /** Binds a session id the answer issues; discards an answer nobody will read. */
  issued: IssuedSessions;
  /**
   * Tags the event ids of an SSE answer for its session (`gated`: as a
   * stream the task rules acted on, which is never resumed).
   */
  answerRewriter(
    response: Response,
    sid: string | null,
    ctx: GuardContext,
    gated?: boolean,
  ): SseIdRewriter | null;
  report(error: unknown, context: string): void;
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
export async function runTracked(
  state: TrackedState,
  request: Request,
  inner: Request,
  sid: string,
  ctx: GuardContext,
  message: TrackedRequest,
  wrap: ResponseWrap | null,
): Promise<Response> {
  const signal = new LazySignal(onAbort);
  state.inflight.set(sid, message.id, signal);
  const cancellations = state.cancellations;
  // The built-in registry, as it comes: tracked without a promise per request.
  const quiet = cancellations instanceof CancellationRegistry &&
    cancellations.track === builtIn.track && cancellations.deregister === builtIn.deregister;
  // The entry's number with the built-in registry (`quiet`), else its entry id.
  let slot = -1;
  let entryId = "";
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
  /** The handler's answer, once `first` settled with it. */
  let got: Response | null = null;
  /** Whether the handler's own answer (before the task gate's wrap) is an event stream. */
  let streams = false;
  let stream: EagerAnswerWatch | null = null;
  let failure: { cause: unknown } | null = null;
  let answered = false;
  const deregisterFailed = (err: unknown) => state.report(err, "deregister");
  const release = () => {
    if (released) return;
    released = true;
    if (quiet) {
      deregisterQuietly(
        cancellations,
        slot,
        (err) => queueMicrotask(() => deregisterFailed(err)),
      );
    } else cancellations.deregister(entryId).catch(deregisterFailed);
  };
  const end = () => {
    if (ended) return;
    ended = true;
    signal.unlisten();
    state.inflight.delete(sid, message.id, signal);
    release();
  };
  const stopInner = (reason = "the session registry is unavailable") =>
    notifyCancelled(state.handler, request, sid, ctx, message.id, reason)
      .catch((err) => state.report(err, "cancel-in-handler"));
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
  const registered = (ok: boolean) => {
    if (!ok) released = true; // refused (full): the request runs untracked, nothing to drop
  };
  const registerFailed = (err: unknown) => {
    // The registration may still have reached a shared store before the failure: the
    // deregistration at the end stays (it only removes a slot this entry still owns).
    failure = { cause: err };
    if (settled || ended) return;
    settled = true; // answered 503 once the handler answered, or stopped here
    if (!answered) return;
    // The answer is already streaming: stop the request rather than run it uncancellable.
    state.report(err, "register");
    signal.abort(err);
    stopInner();
  };
  try {
    if (quiet) {
      slot = trackQuietly(
        cancellations,
        sid,
        message.id,
        signal,
        registered,
        (err) => queueMicrotask(() => registerFailed(err)),
      );
    } else {
      const tracked = cancellations.track(sid, message.id, signal.controller());
      entryId = tracked.entryId;
      tracked.registered.then(registered, registerFailed);
    }
  } catch (err) {
    state.inflight.delete(sid, message.id, signal);
    throw new RegistryFailure(err);
  }
  signal.listen();
  // The handler's answer (through the task gate's wrap); one that comes after a
  // cancellation goes nowhere.
  const answer = (response: Response) => {
    let wrapped: Response;
    try {
      // A JSON answer is the answer: from the moment it exists, it wins over a cancellation.
      streams = isEventStream(response);
      if (!streams) settled = true;
      wrapped = wrap === null ? response : wrap(response);
    } catch (err) {
      return failed(err);
    }
    if (cancelled !== null) {
      state.issued.discardLate(request, sid, wrapped, ctx);
      return;
    }
    got = wrapped;
    decide(wrapped);
  };
  const failed = (err: unknown) => {
    if (cancelled !== null) state.report(err, "handler");
    else fail(err);
  };
  try {
    const produced = state.handler(inner, ctx);
    if (produced instanceof Response) answer(produced);
    else Promise.resolve(produced).then(answer, failed);
  } catch (err) {
    failed(err);
  }
  let response: Response;
  try {
    const outcome = await first;
    if (cancelled !== null) {
      // Cancelled before the handler answered: its answer, now or later, goes nowhere.
      if (got !== null) state.issued.discardLate(request, sid, got, ctx);
      end();
      return cancelledJson(message.id, cancelled);
    }
    response = outcome!;
    if (failure === null) {
      const bound = state.issued.bind(request, response, sid, ctx, message.method);
      response = bound instanceof Response ? bound : await bound;
    }
  } catch (err) {
    end();
    throw err;
  }
  if (cancelled !== null) { // cancelled while the answer was being bound
    await state.issued.discardLate(request, sid, response, ctx);
    end();
    return cancelledJson(message.id, cancelled);
  }
  if (failure !== null) {
    const cause = (failure as { cause: unknown }).cause;
    signal.abort(cause);
    await response.body?.cancel().catch(() => {});
    await stopInner();
    end();
    throw new RegistryFailure(cause);
  }
  answered = true;
  if (!(response === got && wrap === null ? streams : isEventStream(response))) {
    end();
    return response;
  }
  stream = watchAnswerEagerly(
    response,
    message.id,
    {
      onAnswer: () => settled = true,
      onEnd: end,
    },
    undefined,
    state.answerRewriter(response, sid, ctx, wrap !== null),
  );
  return await stream.response;
}

const noop = () => {};

/**
 * A tracked request's signal, made only when someone asks for it
 * (`signalFor`), or for a registry other than the built-in one (which takes
 * an `AbortController`): the built-in registry aborts the request through
 * this ({@linkcode Abortable}). Once made, the controller has `onAbort` as
 * its first abort listener, so a cancellation is handled by the guard before
 * anyone else hears of it, as when the controller was made at once; asked
 * for once the request is aborted, the signal is an aborted one with the
 * same reason.
 */
class LazySignal implements Abortable, SignalSource {
  #onAbort: () => void;
  #controller: AbortController | null = null;
  /** The signal made after the request was aborted, if it was asked for then. */
  #late: AbortSignal | null = null;
  #aborted = false;
  /** Why it was aborted, once it was (as `AbortSignal.reason`: never undefined). */
  #reason: unknown = undefined;

  constructor(onAbort: () => void) {
    this.#onAbort = onAbort;
  }

  get aborted(): boolean {
    return this.#aborted;
  }

  get reason(): unknown {
    return this.#reason;
  }

  /** The request's signal, made when first asked for (heard by `onAbort` first). */
  get signal(): AbortSignal {
    if (this.#controller !== null) return this.#controller.signal;
    if (this.#aborted) return this.#late ??= AbortSignal.abort(this.#reason);
    this.#controller = new AbortController();
    this.listen();
    return this.#controller.signal;
  }

  /** The controller, made now, for a registry that takes one (heard once `listen` is called). */
  controller(): AbortController {
    return this.#controller = new AbortController();
  }

  /** `onAbort` hears the controller's abort, if there is a controller. */
  listen(): void {
    this.#controller?.signal.addEventListener("abort", this);
  }

  /** The request is over: `onAbort` no longer hears an abort. */
  unlisten(): void {
    this.#controller?.signal.removeEventListener("abort", this);
    // Nor through this: the built-in registry may hold on to it until its worker answers,
    // and the request's state must not live as long.
    this.#onAbort = noop;
  }

  /** What `AbortController.abort(reason)` does: aborts once, and `onAbort` hears it. */
  abort(reason: unknown): void {
    if (this.#controller !== null) return this.#controller.abort(reason);
    if (this.#aborted) return;
    this.#aborted = true;
    // What AbortController.abort(undefined) gives its signal.
    this.#reason = reason === undefined ? AbortSignal.abort().reason : reason;
    this.#onAbort();
  }

  /** The controller's signal was aborted. */
  handleEvent(): void {
    this.#aborted = true;
    this.#reason = this.#controller!.signal.reason;
    this.#onAbort();
  }
}
