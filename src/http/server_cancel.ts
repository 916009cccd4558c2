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

/** An SSE answer under watch whose response comes once what its body already holds is read. */
export interface EagerAnswerWatch {
  /** The response to hand to the client. */
  readonly response: Promise<Response>;
  /** As {@linkcode AnswerWatch.interrupt}. */
  interrupt(event: Uint8Array): boolean;
}

/** Reads of a handler's body that {@linkcode watchAnswerEagerly} takes at most before streaming. */
const EAGER_READS = 16;
/** Bytes {@linkcode watchAnswerEagerly} collects at most before streaming. */
const EAGER_BYTES = 64 * 1024;
/**
 * Microtask turns {@linkcode watchAnswerEagerly} waits in all for reads not answered at once
 * (SDK 1.32 writes an echo tool's answer 5 turns after handing its response back). A turn
 * costs a few tens of nanoseconds; no timer, no I/O is waited for.
 */
const EAGER_TURNS = 16;

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
  const watch = new Watch(response, id, hooks, maxEventBytes, rewriter, false);
  return {
    response: watch.streamed(response),
    interrupt: (event) => watch.interrupt(event),
  };
}

/**
 * {@linkcode watchAnswer}, except that what the handler's body already holds
 * is read first, without waiting for more (a few reads, each one that the
 * body answers at once, up to 64 KiB). When that is the whole body (an
 * answer the handler wrote before handing its response back, as an SDK
 * server does with a quick tool), the client gets it as one byte body, with
 * no stream left to watch (`onEnd` has run; `Content-Length` is then the
 * body's). Otherwise the bytes read so far go first, and the rest streams
 * as {@linkcode watchAnswer} streams it. Either way the client sees the same
 * bytes, and an interrupt (until the answer went by) drops only what it
 * would drop there: an event not complete yet.
 */
export function watchAnswerEagerly(
  response: Response,
  id: string | number,
  hooks: AnswerHooks,
  maxEventBytes = DEFAULT_MAX_MESSAGE_BYTES,
  rewriter: ChunkRewriter | null = null,
): EagerAnswerWatch {
  const watch = new Watch(response, id, hooks, maxEventBytes, rewriter, true);
  return {
    response: watch.eagerly(response),
    interrupt: (event) => watch.interrupt(event),
  };
}

type ReadResult = ReadableStreamReadResult<Uint8Array>;

/** Decodes UTF-8 exactly (a BOM kept), or throws: then the bytes are not text. */
const strictDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
/**
 * Decodes UTF-8 with U+FFFD for bytes that are not (a leading BOM dropped): the default
 * decoder, which Deno runs on a faster path than a fatal or BOM-keeping one.
 */
const fastDecoder = new TextDecoder();

/**
 * A body of exactly these bytes: as text when they are UTF-8 (a string body
 * is cheaper to build, and to read or send, than a copy of bytes), else the
 * bytes (copied off shared memory, which a body must not be).
 */
function bodyOf(parts: Uint8Array[]): string | Uint8Array<ArrayBuffer> {
  const bytes = joinParts(parts);
  // Bytes that do not start with a BOM decode to the same text on the fast path, if they are
  // UTF-8; that text then holds no U+FFFD unless the bytes did (the strict decoder decides).
  if (!(bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf)) {
    const text = fastDecoder.decode(bytes);
    if (!text.includes("\uFFFD")) return text;
  }
  try {
    return strictDecoder.decode(bytes);
  } catch {
    return ownBytes(bytes);
  }
}

/** These bytes as one body (copied off shared memory, which a body must not be). */
function bytesOf(parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  return ownBytes(joinParts(parts));
}

/** `bytes`, or a copy of them off shared memory. */
function ownBytes(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  return bytes.buffer instanceof ArrayBuffer
    ? bytes as Uint8Array<ArrayBuffer>
    : new Uint8Array(bytes);
}

/** The state of one watched SSE answer (see {@linkcode watchAnswer}). */
class Watch {
  readonly #id: string | number;
  readonly #hooks: AnswerHooks;
  readonly #max: number;
  readonly #rewriter: ChunkRewriter | null;
  readonly #reader: ReadableStreamDefaultReader<Uint8Array> | null;
  readonly #bounds = new SseBoundaries();
  readonly #span: DataSpan = { start: 0, end: 0 };
  /** False once the answer went by, or an event outgrew the bound. */
  #framing = true;
  #over = false;
  /** Bytes forwarded while the body's first reads are taken eagerly; `null` once streaming. */
  #collected: Uint8Array[] | null;
  #collectedSize = 0;
  #out: ReadableStreamDefaultController<Uint8Array> | null = null;
  /** The unfinished event, from earlier chunks: never sent while framing. */
  #held: Uint8Array[] = [];
  #heldSize = 0;
  /** A read taken eagerly that had not settled: the stream's first pull awaits it. */
  #pending: Promise<ReadResult> | null = null;
  /** Emits through `#emit` (for `enqueueParts`). */
  readonly #sink = { enqueue: (bytes: Uint8Array) => this.#emit(bytes) };

  constructor(
    response: Response,
    id: string | number,
    hooks: AnswerHooks,
    max: number,
    rewriter: ChunkRewriter | null,
    eager: boolean,
  ) {
    this.#id = id;
    this.#hooks = hooks;
    this.#max = max;
    this.#rewriter = rewriter;
    this.#collected = eager ? [] : null;
    const source = response.body;
    this.#reader = source === null ? null : source.getReader();
    if (source === null) this.#end();
  }

  #end(): void {
    if (this.#over) return;
    this.#over = true;
    this.#hooks.onEnd();
  }

  #emit(bytes: Uint8Array): void {
    if (this.#collected !== null) {
      this.#collected.push(bytes);
      this.#collectedSize += bytes.byteLength;
    } else {
      this.#out!.enqueue(bytes);
    }
  }

  interrupt(event: Uint8Array): boolean {
    if (this.#over || !this.#framing) return false;
    // The unfinished event held was never sent: dropped with the handler's body.
    this.#emit(event);
    this.#out?.close();
    this.#reader!.cancel().catch(() => {});
    this.#end();
    return true;
  }

  /** The held bytes followed by `tail`, as one chunk. */
  #takeHeld(tail: Uint8Array | null): Uint8Array {
    const held = this.#held;
    if (tail !== null && tail.byteLength > 0) held.push(tail);
    const bytes = joinParts(held);
    this.#held = [];
    this.#heldSize = 0;
    return bytes;
  }

  /** True when the event in `bytes[from, to)` carries the JSON-RPC response to the request. */
  #answers(bytes: Uint8Array, from: number, to: number, first: boolean, strayLF: boolean): boolean {
    const span = this.#span;
    const lines = dataLines(bytes, from, to, first, strayLF, span);
    if (lines === 0) return false;
    // One short data line (as an SDK writes a short message): read on the bytes, nothing
    // decoded or built. A long text is parsed faster by JSON.parse (its strings are copied
    // natively; the scan looks at every byte in JavaScript).
    if (lines === 1 && span.end - span.start <= SCAN_BYTES) {
      return carriesResponseBytes(bytes, span.start, span.end, this.#id);
    }
    const data = eventData(bytes, from, to, first, strayLF)!;
    return mayHoldMessage(data) && carriesResponse(data, this.#id);
  }

  /** Forwards one chunk of the handler's body; returns whether anything was emitted. */
  #push(chunk: Uint8Array): boolean {
    const rewriter = this.#rewriter;
    if (rewriter === null) return this.#forward(chunk);
    const parts = rewriter.push(chunk);
    if (!this.#framing) return enqueueParts(this.#sink, parts);
    return parts.length > 0 && this.#forward(joinParts(parts));
  }

  /** The handler's body ended: what is still held goes out. */
  #finish(): void {
    const rewriter = this.#rewriter;
    if (rewriter !== null) {
      const parts = rewriter.end();
      if (!this.#framing) enqueueParts(this.#sink, parts);
      else if (parts.length > 0) this.#forward(joinParts(parts));
    }
    // An unfinished last event goes out as it is (a client discards it).
    if (this.#framing && this.#heldSize > 0) this.#emit(this.#takeHeld(null));
    this.#framing = false;
    this.#end();
  }

  /**
   * Forwards a chunk's complete events in one piece (and, once the answer went by, all the
   * rest as it comes); returns whether anything was emitted.
   */
  #forward(chunk: Uint8Array): boolean {
    if (!this.#framing) {
      this.#emit(chunk);
      return true;
    }
    const bounds = this.#bounds;
    let sent = false;
    let start = 0; // start in chunk of the event being scanned (or of its part in it)
    let cut = 0; // chunk bytes before it not sent yet
    for (;;) {
      const { first, strayLF } = bounds;
      const stop = bounds.next(chunk, start);
      if (stop === -1) break;
      let found: boolean;
      if (this.#heldSize > 0) {
        // An event begun in earlier chunks: it goes out whole.
        const event = this.#takeHeld(chunk.subarray(0, stop));
        found = this.#answers(event, 0, event.byteLength, first, strayLF);
        this.#emit(event);
        sent = true;
        cut = stop;
      } else {
        found = this.#answers(chunk, start, stop, first, strayLF);
      }
      start = stop;
      if (found) {
        // The answer went by: the rest passes through as it comes.
        this.#framing = false;
        if (cut < chunk.byteLength) this.#emit(cut === 0 ? chunk : chunk.subarray(cut));
        this.#hooks.onAnswer();
        return true;
      }
    }
    if (start > cut) {
      this.#emit(cut === 0 && start === chunk.byteLength ? chunk : chunk.subarray(cut, start));
      sent = true;
    }
    if (start < chunk.byteLength) {
      this.#held.push(start === 0 ? chunk : chunk.subarray(start));
      this.#heldSize += chunk.byteLength - start;
      if (this.#heldSize > this.#max) {
        // Too large to hold: it goes out as it comes, and the stream can no longer be cut.
        this.#framing = false;
        this.#emit(this.#takeHeld(null));
        return true;
      }
    }
    return sent;
  }

  /** Reads what the body already holds, then answers with it whole or streams the rest. */
  async eagerly(response: Response): Promise<Response> {
    const reader = this.#reader;
    if (reader === null) return response;
    let turns = EAGER_TURNS;
    for (let reads = 0; reads < EAGER_READS && this.#collectedSize <= EAGER_BYTES; reads++) {
      const read = reader.read();
      let chunk: ReadResult | null = null;
      let failed = false;
      read.then((result) => void (chunk = result), () => void (failed = true));
      // A read the body answers at once has settled by the next turn (its reaction was queued
      // before this one); one the handler answers a few turns later (an SDK server writing a
      // quick tool's answer) is waited for, a few turns in all.
      await null;
      while (chunk === null && !failed && turns > 0 && !this.#over) {
        turns--;
        await null;
      }
      if (this.#over) break; // interrupted meanwhile: the body is what was collected
      if (chunk === null) {
        // Not answered at once (or failed: the body then errors after what was collected, as
        // the handler's body did): the rest streams.
        this.#pending = read;
        return this.streamed(response);
      }
      const { done, value } = chunk as ReadResult;
      try {
        if (done) {
          this.#finish();
          break;
        }
        this.#push(value);
      } catch (err) {
        // As a stream whose pull throws: the body errors after what was collected.
        reader.cancel(err).catch(() => {});
        const failed = Promise.reject(err);
        // Handled where the stream's first pull awaits it; until then (a body read late, or
        // cancelled unread) it must not count as an unhandled rejection.
        failed.catch(() => {});
        this.#pending = failed;
        return this.streamed(response);
      }
    }
    if (!this.#over) return this.streamed(response);
    const parts = this.#collected!;
    this.#collected = null;
    let headers = response.headers;
    // A text body without a Content-Type would get one (text/plain).
    const body = headers.has("content-type") ? bodyOf(parts) : bytesOf(parts);
    if (headers.has("content-length")) {
      headers = new Headers(headers); // the length is the body's (ids may have been rewritten)
      headers.delete("content-length");
    }
    return new Response(body, {
      status: response.status,
      statusText: response.statusText,
      headers,
    });
  }

  /** The response streaming the body (after what was collected, if anything). */
  streamed(response: Response): Response {
    const reader = this.#reader;
    if (reader === null) return response;
    const body = new ReadableStream<Uint8Array>({
      start: (controller) => {
        this.#out = controller;
        const collected = this.#collected;
        this.#collected = null;
        if (collected !== null && collected.length > 0) enqueueParts(controller, collected);
      },
      pull: async (controller) => {
        for (;;) {
          let chunk: ReadResult;
          try {
            const pending = this.#pending;
            this.#pending = null;
            chunk = await (pending ?? reader.read());
          } catch (err) {
            if (this.#over) return;
            this.#end();
            controller.error(err);
            return;
          }
          if (this.#over) return;
          if (chunk.done) {
            this.#finish();
            controller.close();
            return;
          }
          if (this.#push(chunk.value)) return;
        }
      },
      cancel: (reason) => {
        this.#end();
        return reader.cancel(reason);
      },
    }, { highWaterMark: 0 });
    return new Response(body, {
      status: response.status,
      statusText: response.statusText,
      headers: response.headers,
    });
  }
}
