/**
 * Inspects a Streamable HTTP response on its way to the client: the guard
 * binds a task id before the client can learn it ({@linkcode watchResponse})
 * and filters a `tasks/list` result down to the requester's tasks
 * ({@linkcode rewriteResult}).
 *
 * Both find the JSON-RPC response whose `id` is the request's (strictly:
 * `1` and `"1"` differ; a server request reusing the id is not a response),
 * in an `application/json` body or in a `text/event-stream` one, and run a
 * callback before those bytes reach the client. Everything else passes
 * through byte for byte.
 *
 * They fail closed: the body errors (and the source body is cancelled) when
 * the callback throws or rejects, when one SSE event or a JSON body exceeds
 * `maxMessageBytes`, or when the body is content-encoded and so cannot be
 * read. SSE is parsed like the HTML event-stream parser (lines end with CRLF,
 * LF or a lone CR; a leading BOM is skipped), except that the data of every
 * event type is inspected, and so is an unterminated last event.
 *
 * @module
 */

import { isJsonMediaType } from "./jsonrpc.ts";
import {
  MessageTooLargeError,
  parseEvent,
  type SseEvent,
  SseFramer,
  withData,
} from "./sse_events.ts";

export { MessageTooLargeError };

/** Default bound on one SSE event or one JSON body, in bytes (4 MiB). */
export const DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024;

/** Options of {@linkcode watchResponse} and {@linkcode rewriteResult}. */
export interface WatchOptions {
  /** Largest SSE event or JSON body accepted, in bytes; a larger one errors the body. */
  maxMessageBytes?: number;
}

/** Why a watched body errored on its own (not through the callback). */
export class ResponseWatchError extends Error {
  /** Builds the error. */
  constructor(message: string) {
    super(message);
    this.name = "ResponseWatchError";
  }
}

/** A JSON-RPC response message (it has `result` or `error`). */
export type ResponseMessage = Record<string, unknown>;

type OnMatch = (message: ResponseMessage) => unknown;
type Emit = (bytes: Uint8Array) => void;

interface Processor {
  push(chunk: Uint8Array, emit: Emit): Promise<void>;
  end(emit: Emit): Promise<void>;
}

const encoder = new TextEncoder();

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isResponseFor(value: unknown, id: string | number | null): value is ResponseMessage {
  return isObject(value) && !("method" in value) && value.id === id &&
    ("result" in value || "error" in value);
}

/** The messages of a JSON text (one message or a batch), or `null` when it is not JSON. */
function messagesOf(text: string): { items: unknown[]; batch: boolean } | null {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  return Array.isArray(value) ? { items: value, batch: true } : { items: [value], batch: false };
}

/**
 * True when a JSON text (one message or a batch) holds the JSON-RPC response
 * to `id`, by the same rule as {@linkcode watchResponse}. Never throws.
 */
export function carriesResponse(text: string, id: string | number): boolean {
  return messagesOf(text)?.items.some((item) => isResponseFor(item, id)) ?? false;
}

/**
 * Runs `onMatch` on each response to `id` in a JSON text (one message or a
 * batch). Returns the new JSON text when rewriting one, else `null`.
 */
async function handle(
  text: string,
  id: string | number | null,
  onMatch: OnMatch,
  rewrite: boolean,
): Promise<string | null> {
  const messages = messagesOf(text);
  if (messages === null) return null; // the client cannot read it either
  const { items, batch } = messages;
  let matched = false;
  const out: unknown[] = [];
  for (const item of items) {
    if (!isResponseFor(item, id)) {
      out.push(item);
      continue;
    }
    matched = true;
    const replacement = await onMatch(item);
    out.push(rewrite ? replacement : item);
  }
  if (!matched || !rewrite) return null;
  const json = JSON.stringify(batch ? out : out[0]);
  if (typeof json !== "string") {
    throw new TypeError("rewrite must return a JSON-serializable value");
  }
  return json;
}

function jsonProcessor(
  id: string | number | null,
  onMatch: OnMatch,
  rewrite: boolean,
  max: number,
): Processor {
  const parts: Uint8Array[] = [];
  let size = 0;
  return {
    push(chunk) {
      size += chunk.byteLength;
      if (size > max) throw new MessageTooLargeError(max);
      parts.push(chunk);
      return Promise.resolve();
    },
    async end(emit) {
      if (size === 0) return;
      const bytes = new Uint8Array(size);
      let at = 0;
      for (const part of parts) {
        bytes.set(part, at);
        at += part.byteLength;
      }
      // Decoded as Response.json() does (BOM stripped, U+FFFD for bad bytes).
      const json = await handle(new TextDecoder().decode(bytes), id, onMatch, rewrite);
      emit(json === null ? bytes : encoder.encode(json));
    },
  };
}

function sseProcessor(
  id: string | number | null,
  onMatch: OnMatch,
  rewrite: boolean,
  max: number,
): Processor {
  const framer = new SseFramer(max);
  /** Emits one event, or its rewrite, after `onMatch` ran on a matching message. */
  async function forward(event: SseEvent, emit: Emit): Promise<void> {
    const parsed = parseEvent(event);
    if (parsed.data === null) return emit(event.bytes);
    const json = await handle(parsed.data, id, onMatch, rewrite);
    emit(json === null ? event.bytes : encoder.encode(withData(parsed, json)));
  }
  return {
    async push(chunk, emit) {
      for (const event of framer.push(chunk)) await forward(event, emit);
    },
    async end(emit) {
      const event = framer.end();
      if (event !== null) await forward(event, emit);
    },
  };
}

function intercept(
  response: Response,
  id: string | number | null,
  onMatch: OnMatch,
  rewrite: boolean,
  options: WatchOptions | undefined,
): Response {
  const type = response.headers.get("content-type");
  const essence = type?.split(";")[0].trim().toLowerCase();
  const sse = essence === "text/event-stream";
  if (response.body === null || (!sse && !isJsonMediaType(type))) return response;
  const max = options?.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  const encoding = response.headers.get("content-encoding")?.trim().toLowerCase() ?? "identity";
  const processor = sse
    ? sseProcessor(id, onMatch, rewrite, max)
    : jsonProcessor(id, onMatch, rewrite, max);
  const reader = response.body.getReader();
  let finished = false;
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      let emitted = false;
      const emit: Emit = (bytes) => {
        if (finished || bytes.byteLength === 0) return;
        emitted = true;
        controller.enqueue(bytes);
      };
      try {
        if (encoding !== "identity") {
          throw new ResponseWatchError(`cannot inspect a body with Content-Encoding ${encoding}`);
        }
        while (!emitted && !finished) {
          const chunk = await reader.read();
          if (finished) return;
          if (chunk.done) {
            await processor.end(emit);
            if (!finished) controller.close();
            finished = true;
            return;
          }
          await processor.push(chunk.value, emit);
        }
      } catch (err) {
        if (finished) return;
        finished = true;
        controller.error(err);
        reader.cancel(err).catch(() => {});
      }
    },
    cancel(reason) {
      finished = true;
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
  const headers = new Headers(response.headers);
  if (rewrite) headers.delete("content-length");
  return new Response(body, { status: response.status, statusText: response.statusText, headers });
}

/**
 * Returns `response` with its body passing through unchanged, except that
 * the JSON-RPC response to `requestId` is held until `onResult(message)`
 * settles (so a task id is bound before the client can read it). A JSON body
 * is read whole first; an SSE body is forwarded event by event as each one
 * completes. If `onResult` throws or rejects, the body errors with that
 * reason instead of delivering the message. Bodies that are neither JSON nor
 * SSE, and bodyless responses, are returned as they are.
 */
export function watchResponse(
  response: Response,
  requestId: string | number | null,
  onResult: (message: ResponseMessage) => Promise<void> | void,
  options?: WatchOptions,
): Response {
  return intercept(
    response,
    requestId,
    async (message) => {
      await onResult(message);
    },
    false,
    options,
  );
}

/**
 * Like {@linkcode watchResponse}, but the JSON-RPC response to `requestId` is
 * replaced by what `rewrite(message)` returns (e.g. a `tasks/list` result
 * without other principals' tasks). In SSE only that event is re-serialized
 * (its other fields, such as `id:`, are kept); `Content-Length` is dropped.
 */
export function rewriteResult(
  response: Response,
  requestId: string | number | null,
  rewrite: (message: ResponseMessage) => Promise<unknown> | unknown,
  options?: WatchOptions,
): Response {
  return intercept(response, requestId, rewrite, true, options);
}
