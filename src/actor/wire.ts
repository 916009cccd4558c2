/**
 * The compact wire format of a batch and its reply: flat typed arrays, no
 * per-call objects. Pure (no I/O, no worker): the facade and the worker both
 * use it, over a shared-memory slot (`shared_channel.ts`) or a transferred
 * `ArrayBuffer` (the `wbatch`/`wreply` messages of `protocol.ts`).
 *
 * A {@linkcode Frame} is three views over one buffer: 32-bit words, 64-bit
 * numbers and 16-bit string units.
 *
 * Request (words): a header of {@linkcode HEADER_WORDS} (`[nOps, words used,
 * numbers used, units used, extras]`), then per op its opcode followed by one
 * word per argument ({@linkcode ARITY}). An argument word `>= 0` is a string
 * of the batch's string table; the negative tags are `null`, `undefined`,
 * `false`, `true`, a number (the next 64-bit number), and extras
 * (`EXTRA_BASE - k`: values the format does not carry, such as objects or
 * very long strings, sent beside the frame and structured-cloned).
 *
 * String table: word `k` names the k-th string defined in the frame; the
 * first time `k` appears its text follows in the units area (two units of
 * length, low then high half, then the UTF-16 code units, so any JS string,
 * lone surrogates included, crosses unchanged). A writer reuses the word of a
 * string it defined recently, so a repeated fingerprint is sent once.
 *
 * Reply (words): a header (`[status, nResults, words used, numbers used,
 * units used]`), then per op a tag and a value (see {@linkcode Tag}; a list
 * is followed by its string words, a failure by its error name and message),
 * then the removed session ids: a count (`-1` for none reported) and string
 * words. Status {@linkcode Status.Failed} carries the batch's error (name and
 * message); {@linkcode Status.Overflow} says the reply did not fit its slot
 * and comes as a message.
 *
 * Replies are encoded by `wire_reply.ts`.
 *
 * @module
 */

import { InvalidInputError } from "../core/errors.ts";
import { ARITY } from "./protocol.ts";

/** Words before a frame's body. */
export const HEADER_WORDS = 8;
/** Longest string carried inline (UTF-16 units); longer ones travel as extras. */
export const MAX_INLINE_UNITS = 4_096;

/** Argument tags (negative words). */
export const Arg = {
  Null: -1,
  Undefined: -2,
  False: -3,
  True: -4,
  Number: -5,
  /** `EXTRA_BASE - k` is extra value `k`. */
  ExtraBase: -16,
} as const;

/** Result tags. */
export const Tag = {
  False: 0,
  True: 1,
  Null: 2,
  Undefined: 3,
  /** Value: a 32-bit integer. */
  Int: 4,
  /** Value: a string word. */
  String: 5,
  /** Value: index of a 64-bit number. */
  Number: 6,
  /** Value: count; that many string words follow. */
  List: 7,
  /** Value: a string word holding JSON (stats objects). */
  Json: 8,
  /** This op failed alone; two string words (error name, message) follow. */
  Failed: 9,
  /** Value: index into {@linkcode KNOWN}. */
  Known: 10,
} as const;

/** Reply status. */
export const Status = { Ok: 0, Failed: 1, Overflow: 2 } as const;

/** Frequent result strings sent as a number. */
export const KNOWN: readonly string[] = ["bound", "refused", "full"];

/** How many recently defined strings a writer reuses by reference (see `Writer.str`). */
const RECENT = 4;

/** Three views over one buffer. */
export interface Frame {
  /** Header and body words. */
  i32: Int32Array;
  /** Numbers. */
  f64: Float64Array;
  /** String units. */
  u16: Uint16Array;
}

/** Bytes a frame of these capacities takes. */
export function frameBytes(words: number, nums: number, units: number): number {
  return ((words + 1) & ~1) * 4 + nums * 8 + units * 2;
}

/** A frame over `buffer` at `byteOffset` (8-aligned) with these capacities. */
export function frameOver(
  buffer: ArrayBufferLike,
  byteOffset: number,
  words: number,
  nums: number,
  units: number,
): Frame {
  const w = (words + 1) & ~1;
  return {
    i32: new Int32Array(buffer, byteOffset, w),
    f64: new Float64Array(buffer, byteOffset + w * 4, nums),
    u16: new Uint16Array(buffer, byteOffset + w * 4 + nums * 8, units),
  };
}

/** A fresh (non-shared) frame, for the message path. */
export function newFrame(words: number, nums: number, units: number): Frame {
  return frameOver(new ArrayBuffer(frameBytes(words, nums, units)), 0, words, nums, units);
}

/** Writes words, numbers and strings into a frame; `false` when something did not fit. */
export class Writer {
  frame!: Frame;
  w = 0;
  n = 0;
  u = 0;
  /** Strings defined in this frame so far (the next one gets this index). */
  count = 0;
  /**
   * The last {@linkcode RECENT} strings defined, compared by `===`: a repeated
   * fingerprint is sent once per frame without hashing every string into a
   * table (a string not among them is simply defined again).
   */
  readonly #recent: string[] = new Array(RECENT).fill("");
  readonly #recentIndex: number[] = new Array(RECENT).fill(-1);
  #next = 0;
  #countAtMark = 0;

  reset(frame: Frame, w: number): void {
    this.frame = frame;
    this.w = w;
    this.n = 0;
    this.u = 0;
    this.count = 0;
    this.#recentIndex.fill(-1);
  }

  mark(): void {
    this.#countAtMark = this.count;
  }

  undo(w: number, n: number, u: number): void {
    const count = this.#countAtMark;
    const index = this.#recentIndex;
    for (let k = 0; k < RECENT; k++) if (index[k] >= count) index[k] = -1;
    this.count = count;
    this.w = w;
    this.n = n;
    this.u = u;
  }

  word(x: number): boolean {
    if (this.w >= this.frame.i32.length) return false;
    this.frame.i32[this.w++] = x;
    return true;
  }

  num(x: number): boolean {
    if (this.n >= this.frame.f64.length) return false;
    this.frame.f64[this.n++] = x;
    return true;
  }

  str(s: string): boolean {
    const recent = this.#recent, recentIndex = this.#recentIndex;
    for (let k = 0; k < RECENT; k++) {
      if (recentIndex[k] >= 0 && recent[k] === s) return this.word(recentIndex[k]);
    }
    const len = s.length;
    const u16 = this.frame.u16;
    let u = this.u;
    if (u + 2 + len > u16.length) return false;
    const index = this.count;
    if (!this.word(index)) return false;
    u16[u++] = len & 0xffff;
    u16[u++] = len >>> 16;
    for (let i = 0; i < len; i++) u16[u++] = s.charCodeAt(i);
    this.u = u;
    this.count = index + 1;
    const slot = this.#next;
    recent[slot] = s;
    recentIndex[slot] = index;
    this.#next = (slot + 1) % RECENT;
    return true;
  }
}

/** A reused array of code units: decoding a short string allocates only the string. */
const scratch: number[] = [];
/** Longest string decoded through {@linkcode scratch}; longer ones through a view. */
const SCRATCH_UNITS = 256;

/** The string of `len` UTF-16 units at `at` (no view allocated for a short one). */
function units(u16: Uint16Array, at: number, len: number): string {
  switch (len) {
    case 0:
      return "";
    case 1:
      return String.fromCharCode(u16[at]);
    case 2:
      return String.fromCharCode(u16[at], u16[at + 1]);
    case 3:
      return String.fromCharCode(u16[at], u16[at + 1], u16[at + 2]);
    case 4:
      return String.fromCharCode(u16[at], u16[at + 1], u16[at + 2], u16[at + 3]);
    case 5:
      return String.fromCharCode(u16[at], u16[at + 1], u16[at + 2], u16[at + 3], u16[at + 4]);
    case 6:
      return String.fromCharCode(
        u16[at],
        u16[at + 1],
        u16[at + 2],
        u16[at + 3],
        u16[at + 4],
        u16[at + 5],
      );
  }
  if (len > SCRATCH_UNITS) {
    return String.fromCharCode.apply(null, u16.subarray(at, at + len) as unknown as number[]);
  }
  scratch.length = len;
  for (let i = 0; i < len; i++) scratch[i] = u16[at + i];
  return String.fromCharCode.apply(null, scratch);
}

/** Reads words and strings back. Throws `InvalidInputError` on a malformed frame. */
export class Reader {
  w: number;
  n = 0;
  u = 0;
  readonly strings: string[] = [];
  constructor(readonly frame: Frame, readonly end: number, w: number) {
    this.w = w;
  }

  word(): number {
    if (this.w >= this.end) throw new InvalidInputError("frame ends early");
    return this.frame.i32[this.w++];
  }

  num(): number {
    if (this.n >= this.frame.f64.length) throw new InvalidInputError("frame number missing");
    return this.frame.f64[this.n++];
  }

  str(k: number): string {
    const strings = this.strings;
    if (k < strings.length) return strings[k];
    if (k !== strings.length) throw new InvalidInputError(`frame string ${k} out of order`);
    const u16 = this.frame.u16;
    const at = this.u;
    if (at + 2 > u16.length) throw new InvalidInputError("frame string missing");
    const len = u16[at] | (u16[at + 1] << 16);
    if (len < 0 || at + 2 + len > u16.length) throw new InvalidInputError("frame string too long");
    const s = units(u16, at + 2, len);
    this.u = at + 2 + len;
    strings.push(s);
    return s;
  }
}

/** Encodes request batches (each frame has its own string table). */
export class BatchEncoder {
  readonly #out = new Writer();
  /** Values of the last frame carried beside it (see {@linkcode Arg.ExtraBase}). */
  extras: unknown[] = [];

  /**
   * Encodes the ops `ops[from .. to)` (their arguments starting at
   * `args[argAt]`) into `frame`, as many as fit. Returns how many were
   * encoded (0: not even the first fits). Resets {@linkcode extras}.
   */
  encode(
    frame: Frame,
    ops: readonly number[],
    args: readonly unknown[],
    from: number,
    to: number,
    argAt: number,
  ): number {
    const out = this.#out;
    out.reset(frame, HEADER_WORDS);
    this.extras = [];
    let i = from;
    let at = argAt;
    for (; i < to; i++) {
      const op = ops[i];
      const arity = ARITY[op] ?? 0;
      const w = out.w, n = out.n, u = out.u, x = this.extras.length;
      out.mark();
      let ok = out.word(op);
      for (let k = 0; ok && k < arity; k++) ok = this.#arg(args[at + k]);
      if (!ok) {
        out.undo(w, n, u);
        this.extras.length = x;
        break;
      }
      at += arity;
    }
    const i32 = frame.i32;
    i32[0] = i - from;
    i32[1] = out.w;
    i32[2] = out.n;
    i32[3] = out.u;
    i32[4] = this.extras.length;
    return i - from;
  }

  #arg(value: unknown): boolean {
    const out = this.#out;
    switch (typeof value) {
      case "string":
        if (value.length <= MAX_INLINE_UNITS) return out.str(value);
        break;
      case "boolean":
        return out.word(value ? Arg.True : Arg.False);
      case "undefined":
        return out.word(Arg.Undefined);
      case "number":
        return out.word(Arg.Number) && out.num(value);
      case "object":
        if (value === null) return out.word(Arg.Null);
    }
    this.extras.push(value);
    return out.word(Arg.ExtraBase - (this.extras.length - 1));
  }
}

/** A decoded request. */
export interface DecodedBatch {
  ops: number[];
  args: unknown[];
}

/** Decodes a request frame; throws `InvalidInputError` when it is malformed. */
export function decodeBatch(frame: Frame, extras: readonly unknown[] = []): DecodedBatch {
  const i32 = frame.i32;
  const count = i32[0];
  const end = i32[1];
  if (!(count >= 0 && end >= HEADER_WORDS && end <= i32.length)) {
    throw new InvalidInputError("malformed batch frame");
  }
  const r = new Reader(frame, end, HEADER_WORDS);
  const ops = new Array<number>(count);
  // Every argument is one word: the rest of the body after the opcodes.
  const argWords = end - HEADER_WORDS - count;
  if (argWords < 0) throw new InvalidInputError("malformed batch frame");
  const args = new Array<unknown>(argWords);
  let a = 0;
  for (let i = 0; i < count; i++) {
    const op = r.word();
    ops[i] = op;
    const arity = ARITY[op];
    if (arity === undefined) throw new InvalidInputError(`unknown opcode ${op} at index ${i}`);
    if (a + arity > argWords) throw new InvalidInputError("frame ends early");
    for (let k = 0; k < arity; k++) {
      const x = r.word();
      let v: unknown;
      if (x >= 0) v = r.str(x);
      else if (x === Arg.Null) v = null;
      else if (x === Arg.Undefined) v = undefined;
      else if (x === Arg.False) v = false;
      else if (x === Arg.True) v = true;
      else if (x === Arg.Number) v = r.num();
      else if (x <= Arg.ExtraBase && Arg.ExtraBase - x < extras.length) {
        v = extras[Arg.ExtraBase - x];
      } else throw new InvalidInputError(`bad argument word ${x}`);
      args[a++] = v;
    }
  }
  if (a !== argWords) throw new InvalidInputError("frame has words after its last op");
  return { ops, args };
}
