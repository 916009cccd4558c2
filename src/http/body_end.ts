/**
 * Runs a callback once when a streamed response is over: its body ended,
 * errored, or was cancelled (the client went away). The HTTP guard uses it to
 * unpin a listening stream and to deregister an in-flight request whose
 * answer travels as Server-Sent Events.
 *
 * @module
 */

import { type ChunkRewriter, enqueueParts } from "./sse_events.ts";

/**
 * Returns a response with the same status and headers whose body forwards
 * `response.body` chunk by chunk (through `rewriter` when given: the guard
 * tags event ids on the way, and drops `Content-Length`) and calls `onEnd` exactly once when that body
 * is done, fails, or is cancelled by the consumer. A response without a body
 * calls `onEnd` at once and is returned as is.
 */
export function onBodyEnd(
  response: Response,
  onEnd: () => void,
  rewriter: ChunkRewriter | null = null,
): Response {
  const source = response.body;
  if (source === null) {
    onEnd();
    return response;
  }
  let ended = false;
  const end = () => {
    if (ended) return;
    ended = true;
    onEnd();
  };
  const reader = source.getReader();
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      for (;;) {
        let chunk: ReadableStreamReadResult<Uint8Array>;
        try {
          chunk = await reader.read();
        } catch (err) {
          end();
          controller.error(err);
          return;
        }
        if (chunk.done) {
          if (rewriter !== null) enqueueParts(controller, rewriter.end());
          end();
          controller.close();
          return;
        }
        if (rewriter === null) return controller.enqueue(chunk.value);
        if (enqueueParts(controller, rewriter.push(chunk.value))) return;
      }
    },
    cancel(reason) {
      end();
      return reader.cancel(reason);
    },
  }, { highWaterMark: 0 });
  let headers = response.headers;
  if (rewriter !== null && headers.has("content-length")) {
    // Rewritten bytes need not keep the length.
    headers = new Headers(headers);
    headers.delete("content-length");
  }
  return new Response(body, { status: response.status, statusText: response.statusText, headers });
}
