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
import { carriesResponseBytes } from "./json_scan.ts";
import {
  type ChunkRewriter,
  dataLines,
  type DataSpan,
  enqueueParts,
  eventData,
  joinParts,
  SseBoundaries,
} from "./sse_events.ts";

/** Characters of the abort reason kept in the answer's message. */
const MAX_REASON_CHARS = 200;

const encoder = new TextEncoder();

/** An answer's data up to this size is checked on its bytes (`./json_scan.ts`), a longer one parsed. */
const SCAN_BYTES = 512;

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

/**
 * False when a JSON text cannot hold a JSON-RPC message: it does not start
 * (after JSON whitespace) with an object or an array. `JSON.parse` of such a
 * text is a primitive or throws (as for a priming event's empty data), so
 * {@linkcode carriesResponse} is false for it, without the cost of the throw.
 */
function mayHoldMessage(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x7b || c === 0x5b) return true; // { [
    if (c !== 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) return false;
  }
  return false;
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
  const bounds = new SseBoundaries();
  const reader = source.getReader();
  let framing = true; // false once the answer went by, or an event outgrew the bound
  let over = false;
  let out!: ReadableStreamDefaultController<Uint8Array>;
  // The unfinished event, from earlier chunks: never sent while framing.
  let held: Uint8Array[] = [];
  let heldSize = 0;
  const end = () => {
    if (over) return;
    over = true;
    hooks.onEnd();
  };
  /** The held bytes followed by `tail`, as one chunk. */
  const takeHeld = (tail: Uint8Array | null): Uint8Array => {
    if (tail !== null && tail.byteLength > 0) held.push(tail);
    const bytes = joinParts(held);
    held = [];
    heldSize = 0;
    return bytes;
  };
  const span: DataSpan = { start: 0, end: 0 };
  /** True when the event in `bytes[from, to)` carries the JSON-RPC response to `id`. */
  const answers = (
    bytes: Uint8Array,
    from: number,
    to: number,
    first: boolean,
    strayLF: boolean,
  ): boolean => {
    const lines = dataLines(bytes, from, to, first, strayLF, span);
    if (lines === 0) return false;
    // One short data line (as an SDK writes a short message): read on the bytes, nothing
    // decoded or built. A long text is parsed faster by JSON.parse (its strings are copied
    // natively; the scan looks at every byte in JavaScript).
    if (lines === 1 && span.end - span.start <= SCAN_BYTES) {
      return carriesResponseBytes(bytes, span.start, span.end, id);
    }
    const data = eventData(bytes, from, to, first, strayLF)!;
    return mayHoldMessage(data) && carriesResponse(data, id);
  };
  /** Forwards the rewritten parts of a chunk; returns whether anything was enqueued. */
  const forwardParts = (parts: Uint8Array[]): boolean => {
    if (!framing) return enqueueParts(out, parts);
    return parts.length > 0 && forward(joinParts(parts));
  };
  /**
   * Forwards a chunk's complete events in one piece (and, once the answer went by, all the
   * rest as it comes); returns whether anything was enqueued.
   */
  const forward = (chunk: Uint8Array): boolean => {
    if (!framing) {
      out.enqueue(chunk);
      return true;
    }
    let sent = false;
    let start = 0; // start in chunk of the event being scanned (or of its part in it)
    let cut = 0; // chunk bytes before it not sent yet
    for (;;) {
      const { first, strayLF } = bounds;
      const stop = bounds.next(chunk, start);
      if (stop === -1) break;
      let found: boolean;
      if (heldSize > 0) {
        // An event begun in earlier chunks: it goes out whole.
        const event = takeHeld(chunk.subarray(0, stop));
        found = answers(event, 0, event.byteLength, first, strayLF);
        out.enqueue(event);
        sent = true;
        cut = stop;
      } else {
        found = answers(chunk, start, stop, first, strayLF);
      }
      start = stop;
      if (found) {
        // The answer went by: the rest passes through as it comes.
        framing = false;
        if (cut < chunk.byteLength) out.enqueue(chunk.subarray(cut));
        hooks.onAnswer();
        return true;
      }
    }
    if (start > cut) {
      out.enqueue(cut === 0 && start === chunk.byteLength ? chunk : chunk.subarray(cut, start));
      sent = true;
    }
    if (start < chunk.byteLength) {
      held.push(start === 0 ? chunk : chunk.subarray(start));
      heldSize += chunk.byteLength - start;
      if (heldSize > maxEventBytes) {
        // Too large to hold: it goes out as it comes, and the stream can no longer be cut.
        framing = false;
        out.enqueue(takeHeld(null));
        return true;
      }
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
          if (framing && heldSize > 0) controller.enqueue(takeHeld(null));
          framing = false;
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
      // The unfinished event held was never sent: dropped with the handler's body.
      out.enqueue(event);
      out.close();
      reader.cancel().catch(() => {});
      end();
      return true;
    },
  };
}
