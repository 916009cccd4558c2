/**
 * Answers for requests the server side cancelled: an operator's
 * `CancellationRegistry.cancel`/`cancelAll`, a cancellation that came
 * through a shared store from another process, a session closed because its
 * binding was evicted or expired.
 *
 * The guard then tells the handler (a `notifications/cancelled`, so an SDK
 * server aborts the tool's own signal) and, since an SDK server drops the
 * answer of a request it saw cancelled, answers the client's POST itself:
 * a JSON-RPC error `-32000` ("Request cancelled by the server: ...") as an
 * HTTP 200 JSON body, or as the last event of the SSE stream the handler
 * opened. A request the client cancelled itself gets no answer (MCP: the
 * receiver does not answer a cancelled request), and an answer the handler
 * already produced wins over a cancellation that lands after it.
 *
 * @module
 */

import { RequestCancelledError } from "../core/errors.ts";
import { RpcCode } from "./jsonrpc.ts";
import { carriesResponse, DEFAULT_MAX_MESSAGE_BYTES } from "./response_watch.ts";
import {
  type ChunkRewriter,
  enqueueParts,
  joinParts,
  parseEvent,
  SseFramer,
} from "./sse_events.ts";

/** Characters of the abort reason kept in the answer's message. */
const MAX_REASON_CHARS = 200;

const encoder = new TextEncoder();

/** True when a response is a `text/event-stream` (an SSE answer). */
export function isEventStream(response: Response): boolean {
  const type = response.headers.get("content-type");
  return type !== null && type.toLowerCase().startsWith("text/event-stream");
}

/** True when `reason` is the client's own cancellation: the client expects no answer. */
export function isClientCancel(reason: unknown): boolean {
  return reason instanceof RequestCancelledError && reason.origin === "client";
}

/**
 * The message a server-side cancellation is answered (and announced to the
 * handler) with: `Request cancelled by the server: <reason>`, the reason
 * being the abort's `RequestCancelledError` message (or string reason),
 * trimmed and shortened.
 */
export function cancelMessage(reason: unknown): string {
  const raw = reason instanceof RequestCancelledError
    ? reason.message
    : typeof reason === "string"
    ? reason
    : "";
  const chars = Array.from(raw.trim());
  const text = chars.length > MAX_REASON_CHARS
    ? `${chars.slice(0, MAX_REASON_CHARS).join("")}…`
    : chars.join("");
  return `Request cancelled by the server: ${text === "" ? "request cancelled" : text}`;
}

function errorJson(id: string | number, message: string): string {
  return JSON.stringify({ jsonrpc: "2.0", error: { code: RpcCode.ServerError, message }, id });
}

/** The answer to a POST cancelled before the handler answered it: HTTP 200, a JSON-RPC error. */
export function cancelledJson(id: string | number, message: string): Response {
  return new Response(errorJson(id, message), {
    status: 200,
    headers: { "content-type": "application/json" },
  });
}

/** The SSE event that ends a stream whose request was cancelled. */
export function cancelledEvent(id: string | number, message: string): Uint8Array {
  return encoder.encode(`event: message\ndata: ${errorJson(id, message)}\n\n`);
}

/** Callbacks of {@linkcode watchAnswer}. */
export interface AnswerHooks {
  /** The stream carried the JSON-RPC response to the request (called once). */
  onAnswer(): void;
  /** The body is over: ended, errored, cancelled by the client, or interrupted (called once). */
  onEnd(): void;
}

/** An SSE answer under watch, from {@linkcode watchAnswer}. */
export interface AnswerWatch {
  /** The response to hand to the client. */
  readonly response: Response;
  /**
   * Ends the body with `event` and cancels the handler's body (so its server
   * drops the stream), unless the body is already over, already carried the
   * answer, or can no longer be cut between events. Returns whether it did.
   */
  interrupt(event: Uint8Array): boolean;
}

/**
 * Watches the SSE answer of request `id`. The body passes through event by
 * event (an unfinished event is held until it completes, so another event can
 * always be appended between two), until the response to `id` went by: then
 * `onAnswer` runs and the rest passes through as it comes. An unfinished
 * event larger than `maxEventBytes` is let through as it comes too; the
 * stream can then no longer be interrupted. With a `rewriter`, the body
 * goes through it first (the guard tags event ids on the way).
 */
export function watchAnswer(
  response: Response,
  id: string | number,
  hooks: AnswerHooks,
  maxEventBytes = DEFAULT_MAX_MESSAGE_BYTES,
  rewriter: ChunkRewriter | null = null,
): AnswerWatch {
  const source = response.body;
  if (source === null) {
    hooks.onEnd();
    return { response, interrupt: () => false };
  }
  const framer = new SseFramer(Infinity);
  const reader = source.getReader();
  let framing = true; // false once the answer went by, or an event outgrew the bound
  let over = false;
  let out!: ReadableStreamDefaultController<Uint8Array>;
  const end = () => {
    if (over) return;
    over = true;
    hooks.onEnd();
  };
  /** Stops framing: what the framer holds goes out, the rest passes through as it comes. */
  const unframe = (): void => {
    framing = false;
    const held = framer.end();
    if (held !== null) out.enqueue(held.bytes);
  };
  /** Forwards the rewritten parts of a chunk; returns whether anything was enqueued. */
  const forwardParts = (parts: Uint8Array[]): boolean => {
    if (!framing) return enqueueParts(out, parts);
    return parts.length > 0 && forward(joinParts(parts));
  };
  /** Forwards a chunk's complete events; returns whether anything was enqueued. */
  const forward = (chunk: Uint8Array): boolean => {
    if (!framing) {
      out.enqueue(chunk);
      return true;
    }
    let sent = false;
    for (const event of framer.push(chunk)) {
      out.enqueue(event.bytes);
      sent = true;
      const data = parseEvent(event).data;
      if (data !== null && carriesResponse(data, id)) {
        hooks.onAnswer();
        unframe();
        return true;
      }
    }
    if (framer.buffered > maxEventBytes) {
      unframe();
      return true;
    }
    return sent;
  };
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      out = controller;
    },
    async pull(controller) {
      for (;;) {
        let chunk: ReadableStreamReadResult<Uint8Array>;
        try {
          chunk = await reader.read();
        } catch (err) {
          if (over) return;
          end();
          controller.error(err);
          return;
        }
        if (over) return;
        if (chunk.done) {
          if (rewriter !== null) forwardParts(rewriter.end());
          // An unfinished last event goes out as it is (a client discards it).
          if (framing) unframe();
          end();
          controller.close();
          return;
        }
        if (rewriter === null ? forward(chunk.value) : forwardParts(rewriter.push(chunk.value))) {
          return;
        }
      }
    },
    cancel(reason) {
      end();
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
  return {
    response: new Response(body, {
      status: response.status,
      statusText: response.statusText,
      headers: response.headers,
    }),
    interrupt(event) {
      if (over || !framing) return false;
      // What the framer holds was never sent: dropped with the handler's body.
      out.enqueue(event);
      out.close();
      reader.cancel().catch(() => {});
      end();
      return true;
    },
  };
}
