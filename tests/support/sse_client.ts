/**
 * A reference SSE client for tests: the HTML event-stream parser, small
 * enough to read, and a reader of events off a `Response`.
 *
 * @module
 */

import assert from "node:assert/strict";

/** One SSE event as a client reads it (the HTML event-stream rules). */
export interface ClientEvent {
  /** The last event id after this event (`""` after a reset, or when none was ever set). */
  id: string;
  event: string;
  data: string;
}

/**
 * Reads SSE events off `response` until `stop(events)` holds, the stream
 * ends, or `timeoutMs` passes; then cancels the body. Parsed as a browser
 * does: CRLF, LF or CR line ends, a leading BOM skipped, `id` with NUL
 * ignored, the last event id carried over.
 */
export async function readEvents(
  response: Response,
  stop: (events: ClientEvent[]) => boolean = () => false,
  timeoutMs = 2_000,
): Promise<ClientEvent[]> {
  assert.ok(response.body !== null);
  const reader = response.body
    .pipeThrough(new TextDecoderStream("utf-8", { ignoreBOM: true }))
    .getReader();
  const events: ClientEvent[] = [];
  const parser = new ClientParser((event) => events.push(event));
  const deadline = setTimeout(() => reader.cancel().catch(() => {}), timeoutMs);
  try {
    while (!stop(events)) {
      const { value, done } = await reader.read();
      if (done) break;
      parser.push(value);
    }
  } finally {
    clearTimeout(deadline);
    await reader.cancel().catch(() => {});
  }
  return events;
}

/**
 * A minimal HTML event-stream parser (the reference the tests hold the
 * guard's output to). Unlike a browser, and like `eventsource-parser` (what
 * the SDK client uses), it dispatches an event whose data is empty, so a
 * priming event's id can be read.
 */
export class ClientParser {
  #buffer = "";
  #started = false;
  #lastId = "";
  #event = "";
  #data: string[] | null = null;
  #dispatch: (event: ClientEvent) => void;
  #pendingCR = false;

  constructor(dispatch: (event: ClientEvent) => void) {
    this.#dispatch = dispatch;
  }

  push(text: string): void {
    if (!this.#started && text.length > 0) {
      this.#started = true;
      if (text.startsWith("\uFEFF")) text = text.slice(1);
    }
    if (this.#pendingCR && text.startsWith("\n")) text = text.slice(1);
    this.#pendingCR = false;
    this.#buffer += text;
    for (;;) {
      const match = /\r\n|\r|\n/.exec(this.#buffer);
      if (match === null) return;
      if (match[0] === "\r" && match.index === this.#buffer.length - 1) {
        this.#pendingCR = true; // the LF of a CRLF may come next
      }
      const line = this.#buffer.slice(0, match.index);
      this.#buffer = this.#buffer.slice(match.index + match[0].length);
      this.#line(line);
    }
  }

  #line(line: string): void {
    if (line === "") {
      if (this.#data !== null) {
        this.#dispatch({ id: this.#lastId, event: this.#event, data: this.#data.join("\n") });
      }
      this.#data = null;
      this.#event = "";
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") (this.#data ??= []).push(value);
    else if (field === "event") this.#event = value;
    else if (field === "id" && !value.includes("\0")) this.#lastId = value;
  }
}
