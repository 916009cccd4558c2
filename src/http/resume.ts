/**
 * Resumption kept within its session: the guard's `resumption` option.
 *
 * Every event id a guarded SSE stream carries is tagged for its session
 * (`./event_ids.ts`), and a GET's `Last-Event-ID` must carry this session's
 * tag: the handler then gets the raw id, or, for an id of a listening
 * stream with `resumption: "requests"`, no `Last-Event-ID` at all (a fresh
 * listening stream: the SDK names every session's listening stream
 * `_GET_stream`, so an event store shared by sessions would replay other
 * sessions' notifications there). An id that does not check out is refused
 * (`unknown-event-id`) before the handler sees it, and so is an id of a
 * stream the task rules acted on (`task-event-id`): an event store replays
 * the handler's answer as it stored it, before the guard filtered a task
 * list, sealed its cursor or bound a created task.
 *
 * @module
 */

import type { EventIdKey, EventStreamKind } from "./event_ids.ts";
import { onBodyEnd } from "./body_end.ts";
import { SseIdRewriter } from "./sse_events.ts";

/** Copies the guard made of a request, to the request it got (for the Hono adapter). */
const originals = new WeakMap<Request, Request>();

/**
 * The request the guard got, for a copy it handed the handler instead (a
 * GET whose `Last-Event-ID` it rewrote, a POST whose `Mcp-Name` it
 * replaced); any other request is its own.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { originalRequest } from "./resume.ts";
 *
 * const request = new Request("http://localhost/mcp");
 * assert.equal(originalRequest(request), request);
 * ```
 */
export function originalRequest(request: Request): Request {
  return originals.get(request) ?? request;
}

/**
 * Records `copy` as a copy the guard made of `original` for the handler (so
 * {@linkcode originalRequest} finds the request the guard got).
 */
export function copiedFrom(copy: Request, original: Request): Request {
  originals.set(copy, original);
  return copy;
}

/** What a GET becomes: the request for the handler and the stream it opens. */
export interface Resumed {
  request: Request;
  kind: Exclude<EventStreamKind, "task">;
}

/**
 * Why a GET's `Last-Event-ID` is refused: not an id sent on this session's
 * (or caller's) streams, or an id of a stream the task rules acted on.
 */
export type ResumeRefusal = "unknown-event-id" | "task-event-id";

/**
 * The guard's resumption rules, with its key.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { EventIdKey } from "./event_ids.ts";
 * import { Resumption } from "./resume.ts";
 *
 * const key = EventIdKey.random();
 * const resumption = new Resumption(key, false);
 * const get = (lastEventId: string) =>
 *   new Request("http://localhost/mcp", { headers: { "last-event-id": lastEventId } });
 *
 * // A request stream's id of this session: the handler gets the raw id.
 * const own = resumption.resume(get(key.tagger("s1", "request")("e-9")), "s1");
 * assert.equal(typeof own === "object" && own.request.headers.get("last-event-id"), "e-9");
 * // Another session's id (or a forged one, or a raw one): refused.
 * assert.equal(resumption.resume(get(key.tagger("s2", "request")("e-9")), "s1"), "unknown-event-id");
 * // An id of a stream the task rules acted on (a task list): never replayed.
 * assert.equal(resumption.resume(get(key.tagger("s1", "task")("e-4")), "s1"), "task-event-id");
 * // A listening stream's id: a fresh listening stream.
 * const listen = resumption.resume(get(key.tagger("s1", "listen")("e-3")), "s1");
 * assert.equal(typeof listen === "object" && listen.request.headers.has("last-event-id"), false);
 * assert.equal(typeof listen === "object" && listen.kind, "listen");
 * ```
 */
export class Resumption {
  readonly #key: EventIdKey;
  readonly #replayListening: boolean;

  /** `replayListening`: a listening stream's id resumes it too (`resumption: "all"`). */
  constructor(key: EventIdKey, replayListening: boolean) {
    this.#key = key;
    this.#replayListening = replayListening;
  }

  /**
   * The GET to hand the handler, and the stream it opens; the refusal when
   * its `Last-Event-ID` is not an id this session was sent
   * (`"unknown-event-id"`) or one of a stream the task rules acted on
   * (`"task-event-id"`). A GET without one (or with an empty one, which the
   * SDK ignores) is handed on as it is.
   */
  resume(request: Request, sessionId: string): Resumed | ResumeRefusal {
    const cursor = request.headers.get("last-event-id");
    if (cursor === null || cursor === "") return { request, kind: "listen" };
    const checked = this.#key.verify(sessionId, cursor);
    if (checked === null) return "unknown-event-id";
    // What the store replays is the handler's answer before the task rules: the client asks
    // again instead (a task list, or `tasks/get` of the task it created).
    if (checked.kind === "task") return "task-event-id";
    const headers = new Headers(request.headers);
    if (checked.kind === "listen" && !this.#replayListening) headers.delete("last-event-id");
    else headers.set("last-event-id", checked.raw);
    // A copy: a Deno.serve request's headers are immutable.
    const copy = copiedFrom(new Request(request.url, { method: request.method, headers }), request);
    return { request: copy, kind: checked.kind };
  }

  /**
   * The rewriter that tags the event ids of `response` for `sessionId`, when
   * it is a successful SSE stream that is not content-encoded; else `null`
   * (its ids, if any, then never check out: resumption fails, closed). An
   * id a client ignores (with NUL) is left as it is.
   */
  rewriter(
    response: Response,
    sessionId: string | null,
    kind: EventStreamKind,
  ): SseIdRewriter | null {
    if (sessionId === null || !response.ok || response.body === null) return null;
    const type = response.headers.get("content-type");
    if (type === null || !type.toLowerCase().startsWith("text/event-stream")) return null;
    const encoding = response.headers.get("content-encoding");
    if (encoding !== null && encoding.trim().toLowerCase() !== "identity") return null;
    // Made at the first id: many streams have none.
    let tag: ((raw: string) => string) | null = null;
    let suffix: ((raw: Uint8Array) => Uint8Array) | null = null;
    return new SseIdRewriter(
      (id) => id.includes("\0") ? null : (tag ??= this.#key.tagger(sessionId, kind))(id),
      undefined,
      // An ASCII id without NUL, on its bytes: what the tagger appends, nothing decoded.
      (raw) => (suffix ??= this.#key.suffixer(sessionId, kind))(raw),
    );
  }

  /** `response` with its event ids tagged (see {@linkcode Resumption.rewriter}), or as it is. */
  tag(response: Response, sessionId: string | null, kind: EventStreamKind): Response {
    const rewriter = this.rewriter(response, sessionId, kind);
    return rewriter === null ? response : rewriteEventIds(response, rewriter);
  }
}

/**
 * `response` with every `id` field of its event stream rewritten by
 * `rewrite` (a function, or a {@linkcode SseIdRewriter}); the rest passes
 * byte for byte.
 * Cancelling the body cancels `response`'s.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { rewriteEventIds } from "./resume.ts";
 *
 * const sse = new Response("id: 1\ndata: {}\n\n", {
 *   headers: { "content-type": "text/event-stream" },
 * });
 * const out = rewriteEventIds(sse, (id) => `${id}.x`);
 * assert.equal(await out.text(), "id: 1.x\ndata: {}\n\n");
 * ```
 */
export function rewriteEventIds(
  response: Response,
  rewrite: ((id: string) => string | null) | SseIdRewriter,
): Response {
  const rewriter = rewrite instanceof SseIdRewriter ? rewrite : new SseIdRewriter(rewrite);
  return onBodyEnd(response, () => {}, rewriter);
}
