/**
 * Server-Sent Events framing for the response watcher: cutting a byte stream
 * into events without decoding or copying what it does not need to, reading
 * an event's `data`, and re-serializing an event with new data.
 *
 * It follows the HTML event-stream parser so that the guard sees the events a
 * client sees: lines end with CRLF, LF or a lone CR (a CRLF split across
 * chunks is still one line end), a blank line ends an event, a UTF-8 BOM at
 * the stream start is skipped, and bytes that are not UTF-8 read as U+FFFD.
 * Line terminators are ASCII, so an event boundary never splits a character.
 *
 * @module
 */

/** An event's bytes exceed the bound given to {@linkcode SseFramer}. */
export class MessageTooLargeError extends Error {
  /** Builds the error for a bound of `maxBytes`. */
  constructor(maxBytes: number) {
    super(`a response message exceeds ${maxBytes} bytes`);
    this.name = "MessageTooLargeError";
  }
}

/** One event's raw bytes, terminating blank line included. */
export interface SseEvent {
  bytes: Uint8Array;
  /** The event starts the stream (it may begin with a BOM). */
  first: boolean;
  /** The event starts right after a CR (a leading LF completes that CRLF). */
  strayLF: boolean;
}

const CR = 0x0d;
const LF = 0x0a;
const BOM = [0xef, 0xbb, 0xbf];

function concat(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0];
  const out = new Uint8Array(parts.reduce((n, part) => n + part.byteLength, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.byteLength;
  }
  return out;
}

/**
 * Cuts a byte stream into events. {@linkcode SseFramer.push} returns the
 * events a chunk completes (subarrays of it when they fit in it) and keeps
 * the unfinished rest; {@linkcode SseFramer.end} returns that rest. Throws
 * {@linkcode MessageTooLargeError} when an event grows past `maxEventBytes`.
 */
export class SseFramer {
  #max: number;
  #parts: Uint8Array[] = []; // unfinished event, from earlier chunks
  #size = 0;
  #lineEmpty = true; // nothing but the terminator seen on the current line
  #afterCR = false; // the previous byte was a CR
  #bom = 0; // BOM bytes seen at the stream start, or -1 once past them
  #first = true;
  #strayLF = false;

  /** Builds a framer refusing events larger than `maxEventBytes`. */
  constructor(maxEventBytes: number) {
    this.#max = maxEventBytes;
  }

  /** Feeds one chunk; returns the events it completes, in order. */
  push(chunk: Uint8Array): SseEvent[] {
    const events: SseEvent[] = [];
    let start = 0; // start of the current event in chunk
    for (let i = 0; i < chunk.length; i++) {
      const byte = chunk[i];
      if (this.#bom >= 0) {
        if (byte === BOM[this.#bom]) {
          this.#bom = this.#bom === 2 ? -1 : this.#bom + 1;
          continue;
        }
        if (this.#bom > 0) this.#lineEmpty = false; // a partial BOM is a character
        this.#bom = -1;
      }
      if (byte === LF && this.#afterCR) {
        this.#afterCR = false;
        continue;
      }
      this.#afterCR = byte === CR;
      if (byte !== CR && byte !== LF) {
        this.#lineEmpty = false;
      } else if (!this.#lineEmpty) {
        this.#lineEmpty = true;
      } else {
        // A blank line: the event ends with this byte.
        const end = i + 1;
        if (this.#size + end - start > this.#max) throw new MessageTooLargeError(this.#max);
        events.push(this.#take(chunk.subarray(start, end)));
        this.#strayLF = this.#afterCR;
        start = end;
      }
    }
    if (start < chunk.length) {
      this.#size += chunk.length - start;
      if (this.#size > this.#max) throw new MessageTooLargeError(this.#max);
      this.#parts.push(chunk.subarray(start));
    }
    return events;
  }

  /** Bytes of the unfinished event held so far (not returned by `push` yet). */
  get buffered(): number {
    return this.#size;
  }

  /** Ends the stream: returns the unterminated last event, if any. */
  end(): SseEvent | null {
    return this.#size > 0 ? this.#take(new Uint8Array(0)) : null;
  }

  #take(tail: Uint8Array): SseEvent {
    const bytes = concat(tail.byteLength > 0 ? [...this.#parts, tail] : this.#parts);
    const event = { bytes, first: this.#first, strayLF: this.#strayLF };
    this.#parts = [];
    this.#size = 0;
    this.#first = false;
    return event;
  }
}

/** An event's lines, as {@linkcode parseEvent} reads them. */
export interface ParsedEvent {
  /** A BOM or stray LF before the first line, kept when re-serializing. */
  prefix: string;
  /** The event's lines, without terminators or the dispatching blank line. */
  lines: string[];
  /** The joined `data` field values, or `null` when the event has none. */
  data: string | null;
  /** The event ends with a CR (the LF of a CRLF may start the next one). */
  crEnd: boolean;
}

// One decode call per event: ignoreBOM keeps a U+FEFF that is not at the stream start.
const decoder = new TextDecoder("utf-8", { ignoreBOM: true });

/** Field name of an SSE line (the whole line when it has no colon). */
function fieldOf(line: string): string {
  const colon = line.indexOf(":");
  return colon === -1 ? line : line.slice(0, colon);
}

/** Decodes an event and joins its `data` lines with `\n`, as a client does. */
export function parseEvent(event: SseEvent): ParsedEvent {
  let text = decoder.decode(event.bytes);
  let prefix = "";
  if (event.first && text.startsWith("\uFEFF")) prefix = "\uFEFF";
  else if (event.strayLF && text.startsWith("\n")) prefix = "\n";
  text = text.slice(prefix.length);
  const lines: string[] = [];
  for (const line of text.split(/\r\n|\r|\n/)) {
    if (line === "") break; // the blank line dispatching the event
    lines.push(line);
  }
  let data: string | null = null;
  for (const line of lines) {
    if (fieldOf(line) !== "data") continue;
    let value = line.slice(5); // after "data:" ("" when the line is just "data")
    if (value.startsWith(" ")) value = value.slice(1);
    data = data === null ? value : `${data}\n${value}`;
  }
  const crEnd = event.bytes[event.bytes.length - 1] === CR;
  return { prefix, lines, data, crEnd };
}

/**
 * Re-serializes a parsed event with `json` (which holds no line break, as
 * `JSON.stringify` output never does) as its only `data` line, where the
 * first one was; the other lines (`id:`, `event:`, comments) are kept.
 * Lines end with LF, except that an event that ended with a CR ends with one
 * again, so that a following LF still completes a CRLF instead of making an
 * extra blank line.
 */
export function withData(event: ParsedEvent, json: string): string {
  let placed = false;
  const kept: string[] = [];
  for (const line of event.lines) {
    if (fieldOf(line) !== "data") kept.push(line);
    else if (!placed) {
      kept.push(`data: ${json}`);
      placed = true;
    }
  }
  return `${event.prefix}${kept.join("\n")}\n${event.crEnd ? "\r" : "\n"}`;
}
