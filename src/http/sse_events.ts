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
/**
 * Chunks (and events) up to this size are looked through byte by byte, in one pass: on so few
 * bytes, a native `indexOf` call costs more than it saves.
 */
const SHORT_CHUNK = 512;

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

/**
 * Finds where events end in a byte stream, chunk by chunk, without holding
 * or copying anything: the framing of {@linkcode SseFramer} (same line ends,
 * BOM and blank lines) for a caller that keeps the bytes itself. Inside a
 * line it jumps to the next line end with `indexOf`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { SseBoundaries } from "./sse_events.ts";
 *
 * const bounds = new SseBoundaries();
 * const chunk = new TextEncoder().encode("data: 1\n\ndata: 2\r\n\r");
 * assert.equal(bounds.next(chunk, 0), 9);
 * assert.equal(bounds.next(chunk, 9), 19);
 * assert.equal(bounds.strayLF, true); // the next event starts after a CR
 * assert.equal(bounds.next(chunk, 19), -1);
 * ```
 */
export class SseBoundaries {
  /** The event being scanned starts the stream (it may begin with a BOM). */
  first = true;
  /** The event being scanned starts right after a CR (a leading LF completes that CRLF). */
  strayLF = false;
  #lineEmpty = true; // nothing but the terminator seen on the current line
  #afterCR = false; // the previous byte was a CR
  #bom = 0; // BOM bytes seen at the stream start, or -1 once past them
  // Next LF / CR in #chunk at or after the index they were looked up from (-1: none left),
  // kept while the caller goes through one chunk (from 0 onwards).
  #chunk: Uint8Array | null = null;
  #lf = -1;
  #cr = -1;

  /**
   * The index just past the end of the first event that ends in `chunk` at
   * or after `from` (its dispatching blank line included); `-1` when the
   * chunk ends inside an event (the scan goes on with the next chunk).
   * Read {@linkcode first} and {@linkcode strayLF} before the call: they
   * describe the event that ends.
   */
  next(chunk: Uint8Array, from: number): number {
    if (from === 0 || chunk !== this.#chunk) {
      this.#chunk = chunk;
      this.#lf = this.#cr = -2; // not looked up
    }
    const n = chunk.length;
    let i = from;
    while (i < n) {
      const byte = chunk[i];
      if (this.#bom >= 0) {
        if (byte === BOM[this.#bom]) {
          this.#bom = this.#bom === 2 ? -1 : this.#bom + 1;
          i++;
          continue;
        }
        if (this.#bom > 0) this.#lineEmpty = false; // a partial BOM is a character
        this.#bom = -1;
      }
      if (this.#afterCR) {
        this.#afterCR = false;
        if (byte === LF) { // completes a CRLF
          i++;
          continue;
        }
      }
      if (byte === CR || byte === LF) {
        this.#afterCR = byte === CR;
        i++;
        if (!this.#lineEmpty) {
          this.#lineEmpty = true;
          continue;
        }
        // A blank line: the event ends with this byte.
        this.first = false;
        this.strayLF = this.#afterCR;
        return i;
      }
      // Inside a line: on to its end.
      this.#lineEmpty = false;
      if (n <= SHORT_CHUNK) {
        // A short chunk: looked through byte by byte (cheaper than two native scans).
        i = lineEndIn(chunk, i + 1, n);
        if (i === n) return -1;
        continue;
      }
      if (this.#lf !== -1 && this.#lf < i) this.#lf = chunk.indexOf(LF, i);
      if (this.#cr !== -1 && this.#cr < i) this.#cr = chunk.indexOf(CR, i);
      const lf = this.#lf, cr = this.#cr;
      const end = lf === -1 ? cr : cr === -1 ? lf : lf < cr ? lf : cr;
      if (end === -1) return -1;
      i = end;
    }
    return -1;
  }
}

/** The first CR or LF in `bytes[from, to)`, or `to`. */
function lineEndIn(bytes: Uint8Array, from: number, to: number): number {
  for (let i = from; i < to; i++) {
    const byte = bytes[i];
    if (byte === LF || byte === CR) return i;
  }
  return to;
}

const D_ = 0x64, A_ = 0x61, T_ = 0x74, SPACE = 0x20, COLON_ = 0x3a;

/** Where an event's data lines are, from {@linkcode dataLines}. */
export interface DataSpan {
  /** Start of the first data line's value. */
  start: number;
  /** End of the first data line's value. */
  end: number;
}

/**
 * The data lines of the event in `bytes[from, to)`, as
 * `parseEvent({ bytes, first, strayLF })` reads them: returns how many there
 * are (0, 1, or 2 for two or more) and puts the first one's value (after
 * `data:` and one space) in `span`.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { dataLines } from "./sse_events.ts";
 *
 * const bytes = new TextEncoder().encode("event: message\r\ndata: {}\n\n");
 * const span = { start: 0, end: 0 };
 * assert.equal(dataLines(bytes, 0, bytes.length, true, false, span), 1);
 * assert.deepEqual(span, { start: 22, end: 24 });
 * ```
 */
export function dataLines(
  bytes: Uint8Array,
  from: number,
  to: number,
  first: boolean,
  strayLF: boolean,
  span: DataSpan,
): number {
  let i = from;
  if (
    first && to - i >= 3 && bytes[i] === BOM[0] && bytes[i + 1] === BOM[1] &&
    bytes[i + 2] === BOM[2]
  ) i += 3;
  else if (strayLF && i < to && bytes[i] === LF) i++;
  let count = 0;
  // A short event is looked through byte by byte (cheaper than native scans); in a longer one,
  // line ends are looked up before `to` only (a chunk may hold many events); same indices.
  const short = to - i <= SHORT_CHUNK;
  const b = short || to === bytes.length ? bytes : bytes.subarray(0, to);
  let lf = -2; // next LF / CR at or after i (-1: none left, -2: not looked up)
  let cr = -2;
  while (i < to) {
    let end: number;
    if (short) end = lineEndIn(bytes, i, to);
    else {
      if (lf !== -1 && lf < i) lf = b.indexOf(LF, i);
      if (cr !== -1 && cr < i) cr = b.indexOf(CR, i);
      end = lf === -1 ? (cr === -1 ? to : cr) : cr === -1 || lf < cr ? lf : cr;
    }
    if (end === i) break; // the blank line dispatching the event
    if (
      end - i >= 4 && bytes[i] === D_ && bytes[i + 1] === A_ && bytes[i + 2] === T_ &&
      bytes[i + 3] === A_ && (end - i === 4 || bytes[i + 4] === COLON_)
    ) {
      if (++count === 2) return 2;
      let start = i + 4 === end ? end : i + 5; // after "data:" (nothing when the line is "data")
      if (start < end && bytes[start] === SPACE) start++;
      span.start = start;
      span.end = end;
    }
    i = end + (b[end] === CR && b[end + 1] === LF ? 2 : 1);
  }
  return count;
}

/**
 * The `data` of the event in `bytes[from, to)`, exactly as
 * `parseEvent({ bytes, first, strayLF }).data` reads it, decoding only the
 * data lines' values (line ends are ASCII, so decoding them apart gives the
 * same text).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { eventData } from "./sse_events.ts";
 *
 * const bytes = new TextEncoder().encode("event: message\r\ndata: {}\ndata:x\n\n");
 * assert.equal(eventData(bytes, 0, bytes.length, true, false), "{}\nx");
 * ```
 */
export function eventData(
  bytes: Uint8Array,
  from: number,
  to: number,
  first: boolean,
  strayLF: boolean,
): string | null {
  // Line ends are looked up in the event alone (a chunk may hold many).
  const event = from === 0 && to === bytes.length ? bytes : bytes.subarray(from, to);
  const n = event.length;
  let i = 0;
  if (first && n >= 3 && event[0] === BOM[0] && event[1] === BOM[1] && event[2] === BOM[2]) i = 3;
  else if (strayLF && n > 0 && event[0] === LF) i = 1;
  let data: string | null = null;
  let lf = -2; // next LF / CR at or after i (-1: none left, -2: not looked up)
  let cr = -2;
  while (i < n) {
    if (lf !== -1 && lf < i) lf = event.indexOf(LF, i);
    if (cr !== -1 && cr < i) cr = event.indexOf(CR, i);
    const end = lf === -1 ? (cr === -1 ? n : cr) : cr === -1 || lf < cr ? lf : cr;
    if (end === i) break; // the blank line dispatching the event
    if (
      end - i >= 4 && event[i] === D_ && event[i + 1] === A_ && event[i + 2] === T_ &&
      event[i + 3] === A_ && (end - i === 4 || event[i + 4] === COLON_)
    ) {
      let start = i + 4 === end ? end : i + 5; // after "data:" (nothing when the line is "data")
      if (start < end && event[start] === SPACE) start++;
      const value = start === end ? "" : decoder.decode(event.subarray(start, end));
      data = data === null ? value : `${data}\n${value}`;
    }
    i = end + (event[end] === CR && event[end + 1] === LF ? 2 : 1);
  }
  return data;
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

const I = 0x69; // "i"
const D = 0x64; // "d"
const COLON = 0x3a;
const ID_BYTES = new Uint8Array([I, D]);
const ID_COLON = new Uint8Array([I, D, COLON]);
const ID_COLON_SPACE = new Uint8Array([I, D, COLON, 0x20]);
const textEncoder = new TextEncoder();

/** Rewrites a byte stream chunk by chunk (as {@linkcode SseIdRewriter} does). */
export interface ChunkRewriter {
  /** Feeds one chunk; returns what goes out, in order (possibly nothing). */
  push(chunk: Uint8Array): Uint8Array[];
  /** Ends the stream: returns what is still held. */
  end(): Uint8Array[];
}

/** Pieces up to this size go out as one chunk (copied); larger ones as they are. */
const JOIN_BYTES = 64 * 1024;

/**
 * The pieces a {@linkcode ChunkRewriter} returned, as one chunk (the piece
 * itself when there is one).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { joinParts } from "./sse_events.ts";
 *
 * assert.deepEqual(joinParts([new Uint8Array([1]), new Uint8Array([2])]), new Uint8Array([1, 2]));
 * ```
 */
export function joinParts(parts: Uint8Array[]): Uint8Array {
  return parts.length === 0 ? new Uint8Array(0) : concat(parts);
}

/**
 * Enqueues the pieces a {@linkcode ChunkRewriter} returned: one piece as it
 * is, a few small ones joined into one chunk (one write, not three), large
 * ones as they are (not copied). Returns whether anything was enqueued.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { enqueueParts } from "./sse_events.ts";
 *
 * const chunks: Uint8Array[] = [];
 * const sink = { enqueue: (chunk: Uint8Array) => chunks.push(chunk) };
 * enqueueParts(sink, [new Uint8Array([1]), new Uint8Array([2, 3])]);
 * assert.deepEqual(chunks, [new Uint8Array([1, 2, 3])]);
 * assert.equal(enqueueParts(sink, []), false);
 * ```
 */
export function enqueueParts(
  controller: Pick<ReadableStreamDefaultController<Uint8Array>, "enqueue">,
  parts: Uint8Array[],
): boolean {
  if (parts.length === 0) return false;
  if (parts.length === 1) {
    controller.enqueue(parts[0]);
    return true;
  }
  let size = 0;
  for (const part of parts) size += part.byteLength;
  if (size > JOIN_BYTES) {
    for (const part of parts) controller.enqueue(part);
  } else {
    controller.enqueue(concat(parts));
  }
  return true;
}

/** Default bound on an `id` line's value, in bytes: a longer one passes as it is. */
export const MAX_ID_BYTES = 8 * 1024;

/**
 * Rewrites the value of every `id` field of an event stream as it passes,
 * without holding events: everything but an `id` line goes out as it comes
 * (subarrays of the chunks, never copied), and an `id` line is held only
 * until its line ends. Lines are found as the HTML event-stream parser finds
 * them (CRLF, LF or a lone CR, even split across chunks; a BOM at the
 * stream start is skipped), so the ids rewritten are exactly the ids a
 * client reads.
 *
 * `rewrite(value)` gets the field's value as a client reads it (decoded,
 * one leading space dropped) and returns the new value, or `null` to keep
 * the line as it was. A line `id` without a colon (an empty value) is never
 * passed to it, and a value longer than `maxIdBytes` passes unchanged.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { SseIdRewriter } from "./sse_events.ts";
 *
 * const rewriter = new SseIdRewriter((id) => id === "" ? null : `${id}!`);
 * const encode = (text: string) => new TextEncoder().encode(text);
 * const text = (parts: Uint8Array[]) => parts.map((p) => new TextDecoder().decode(p)).join("");
 * let out = text(rewriter.push(encode("event: message\nid: 4")));
 * out += text(rewriter.push(encode("2\r\ndata: {}\n\nid:\nidle: 1\n\n")));
 * out += text(rewriter.end());
 * assert.equal(out, "event: message\nid: 42!\r\ndata: {}\n\nid:\nidle: 1\n\n");
 * ```
 */
export class SseIdRewriter implements ChunkRewriter {
  readonly #rewrite: (value: string) => string | null;
  readonly #suffix: ((value: Uint8Array) => Uint8Array) | null;
  readonly #max: number;
  /** BOM bytes matched at the stream start, or -1 once past them. */
  #bom = 0;
  /** At a line start (only CR and LF seen since the last line's content). */
  #lineStart = true;
  /** Bytes of `id` held at a line start (1: "i", 2: "id"), else 0. */
  #head = 0;
  /** Inside an `id:` line: its value's bytes so far (after the colon), else `null`. */
  #value: Uint8Array[] | null = null;
  #valueSize = 0;

  /**
   * Builds a rewriter calling `rewrite` for every non-empty `id` value. With
   * `suffix`, a value of ASCII bytes without NUL is rewritten on its bytes
   * instead: `suffix(bytes)` is appended to it, which must be what `rewrite`
   * appends to the same value (nothing decoded or encoded).
   */
  constructor(
    rewrite: (value: string) => string | null,
    maxIdBytes = MAX_ID_BYTES,
    suffix: ((value: Uint8Array) => Uint8Array) | null = null,
  ) {
    this.#rewrite = rewrite;
    this.#max = maxIdBytes;
    this.#suffix = suffix;
  }

  /** Feeds one chunk; returns what goes out, in order (possibly nothing). */
  push(chunk: Uint8Array): Uint8Array[] {
    const n = chunk.length;
    let i = 0;
    if (n <= SHORT_CHUNK && this.#value === null && this.#head === 0) {
      i = this.#plainUpTo(chunk);
      if (i === n) return n === 0 ? [] : [chunk];
    }
    const out: Uint8Array[] = [];
    let from = 0; // start of the bytes of `chunk` not sent yet (nor held)
    let lf = -2; // next LF / CR at or after i (-1: none left in chunk, -2: not looked up)
    let cr = -2;
    const lineEnd = (at: number): number => {
      if (lf !== -1 && lf < at) lf = chunk.indexOf(LF, at);
      if (cr !== -1 && cr < at) cr = chunk.indexOf(CR, at);
      return lf === -1 ? cr : cr === -1 ? lf : Math.min(lf, cr);
    };
    while (i < n) {
      if (this.#value !== null) {
        // Inside an id line: hold its value until the line ends.
        const end = lineEnd(i);
        const stop = end === -1 ? n : end;
        if (stop > i) this.#value.push(chunk.subarray(i, stop));
        this.#valueSize += stop - i;
        i = from = stop;
        if (end !== -1) {
          out.push(this.#idLine());
          this.#lineStart = true;
        } else if (this.#valueSize > this.#max) {
          out.push(ID_COLON, ...this.#value); // too long: the line passes as it is
          this.#value = null;
          this.#lineStart = false;
        }
        continue;
      }
      const byte = chunk[i];
      if (this.#bom >= 0) {
        if (byte === BOM[this.#bom]) {
          this.#bom = this.#bom === 2 ? -1 : this.#bom + 1;
          i++;
          continue;
        }
        if (this.#bom > 0) this.#lineStart = false; // a partial BOM is a character
        this.#bom = -1;
      }
      if (this.#head > 0) {
        if (this.#head === 1 && byte === D) {
          this.#head = 2;
          i = from = i + 1;
          continue;
        }
        if (this.#head === 2 && byte === COLON) {
          this.#head = 0;
          this.#value = [];
          this.#valueSize = 0;
          i = from = i + 1;
          continue;
        }
        // Another field ("i...", "idle", or "id" alone: an empty id, kept).
        out.push(ID_BYTES.subarray(0, this.#head));
        this.#head = 0;
        this.#lineStart = false;
      }
      if (this.#lineStart) {
        if (byte === CR || byte === LF) {
          i++;
          continue;
        }
        if (byte === I) {
          if (i > from) out.push(chunk.subarray(from, i));
          this.#head = 1;
          i = from = i + 1;
          continue;
        }
        this.#lineStart = false;
      }
      // Inside another line: it passes as it comes, up to its end.
      const end = lineEnd(i);
      if (end === -1) break;
      i = end;
      this.#lineStart = true;
    }
    if (n > from && this.#head === 0 && this.#value === null) out.push(chunk.subarray(from));
    return out;
  }

  /**
   * A short chunk, between lines or inside one, looked through in one pass over its bytes
   * (cheaper than the line walk's native calls on a short chunk): returns where the walk takes
   * over, the state then being the walk's there: the chunk's length when no line in it starts
   * with "i" (no id line can: it passes whole), the index of the first "i" that starts a line,
   * or 0 at a BOM or part of one.
   */
  #plainUpTo(chunk: Uint8Array): number {
    const n = chunk.length;
    if (n === 0) return 0;
    if (this.#bom >= 0) {
      if (this.#bom > 0 || chunk[0] === BOM[0]) return 0;
      this.#bom = -1; // as the walk: a first byte that is not a BOM's
    }
    let lineStart = this.#lineStart;
    for (let i = 0; i < n; i++) {
      const byte = chunk[i];
      if (byte === CR || byte === LF) lineStart = true;
      else if (lineStart && byte === I) {
        this.#lineStart = true;
        return i;
      } else lineStart = false;
    }
    this.#lineStart = lineStart;
    return n;
  }

  /** Ends the stream: returns what is still held (an unterminated last line). */
  end(): Uint8Array[] {
    const out: Uint8Array[] = [];
    if (this.#head > 0) out.push(ID_BYTES.subarray(0, this.#head));
    if (this.#value !== null) out.push(ID_COLON, ...this.#value);
    this.#head = 0;
    this.#value = null;
    return out;
  }

  /** The held id line, rewritten (or as it was). */
  #idLine(): Uint8Array {
    const parts = this.#value!;
    this.#value = null;
    const bytes = concat(parts.length === 0 ? [new Uint8Array(0)] : parts);
    if (this.#suffix !== null) {
      const start = bytes[0] === SPACE ? 1 : 0; // one leading space is not the value's
      let ascii = bytes.length > start;
      for (let i = start; ascii && i < bytes.length; i++) {
        const byte = bytes[i];
        if (byte === 0 || byte >= 0x80) ascii = false;
      }
      if (ascii) {
        const raw = start === 0 ? bytes : bytes.subarray(start);
        return concat([ID_COLON_SPACE, raw, this.#suffix(raw)]);
      }
    }
    let value = decoder.decode(bytes);
    if (value.startsWith(" ")) value = value.slice(1);
    const rewritten = value === "" ? null : this.#rewrite(value);
    if (rewritten === null) return concat([ID_COLON, bytes]);
    return textEncoder.encode(`id: ${rewritten}`);
  }
}
