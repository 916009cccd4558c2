/**
 * The reply half of the compact wire format (see `wire.ts` for the layout):
 * typed results, per-op failures, removed session ids, or the batch's error.
 *
 * @module
 */

import { InvalidInputError, type WireError } from "../core/errors.ts";
import { type Frame, HEADER_WORDS, KNOWN, Reader, Status, Tag, Writer } from "./wire.ts";

/** A per-op failure as encoded in a reply: a result object with this shape. */
export interface OpFailed {
  /** Marks the failure. */
  readonly failed: WireError;
}

/** Encodes replies (each frame has its own string table). */
export class ReplyEncoder {
  readonly #out = new Writer();

  /**
   * Encodes a batch's results (an op that failed alone is an
   * {@linkcode OpFailed} in its slot) and the removed session ids. Returns
   * `false` when they do not fit `frame`.
   */
  encode(frame: Frame, results: readonly unknown[], removed?: readonly string[]): boolean {
    const out = this.#out;
    out.reset(frame, HEADER_WORDS);
    for (let i = 0; i < results.length; i++) if (!this.#result(results[i])) return false;
    if (removed === undefined) {
      if (!out.word(-1)) return false;
    } else {
      if (!out.word(removed.length)) return false;
      for (const sid of removed) if (!out.str(sid)) return false;
    }
    this.#header(frame, Status.Ok, results.length);
    return true;
  }

  /** Encodes a whole-batch failure (always fits a frame of a few hundred units). */
  encodeFailure(frame: Frame, error: WireError): boolean {
    const out = this.#out;
    out.reset(frame, HEADER_WORDS);
    const message = error.message.length > 1_000
      ? `${error.message.slice(0, 1_000)}...`
      : error.message;
    if (!out.str(error.name.slice(0, 100)) || !out.str(message)) return false;
    this.#header(frame, Status.Failed, 0);
    return true;
  }

  /** Marks `frame` as a reply sent as a message instead. */
  static overflow(frame: Frame): void {
    frame.i32[0] = Status.Overflow;
  }

  #header(frame: Frame, status: number, count: number): void {
    const i32 = frame.i32;
    i32[0] = status;
    i32[1] = count;
    i32[2] = this.#out.w;
    i32[3] = this.#out.n;
    i32[4] = this.#out.u;
  }

  #result(x: unknown): boolean {
    const out = this.#out;
    switch (typeof x) {
      case "boolean":
        return out.word(x ? Tag.True : Tag.False) && out.word(0);
      case "undefined":
        return out.word(Tag.Undefined) && out.word(0);
      case "number":
        if ((x | 0) === x && !Object.is(x, -0)) return out.word(Tag.Int) && out.word(x);
        return out.word(Tag.Number) && out.word(out.n) && out.num(x);
      case "string": {
        const k = KNOWN.indexOf(x);
        if (k >= 0) return out.word(Tag.Known) && out.word(k);
        return out.word(Tag.String) && out.str(x);
      }
      case "object": {
        if (x === null) return out.word(Tag.Null) && out.word(0);
        if (Array.isArray(x) && x.every((s) => typeof s === "string")) {
          if (!out.word(Tag.List) || !out.word(x.length)) return false;
          for (const s of x) if (!out.str(s)) return false;
          return true;
        }
        const failed = (x as Partial<OpFailed>).failed;
        if (failed !== undefined) {
          return out.word(Tag.Failed) && out.word(0) && out.str(failed.name) &&
            out.str(failed.message);
        }
      }
    }
    return out.word(Tag.Json) && out.str(JSON.stringify(x) ?? "null");
  }
}

/** A decoded reply. */
export interface DecodedReply {
  /** {@linkcode Status} of the batch. */
  status: number;
  /** One result per op (`null` where the op failed alone). */
  results: unknown[];
  /** Session ids reported removed, if any were reported. */
  removed?: string[];
  /** Ops that failed alone, as `[index, error]`. */
  failed?: [number, WireError][];
  /** Status `Failed`: the whole batch's error. */
  error?: WireError;
}

/** Decodes a reply frame; throws `InvalidInputError` when it is malformed. */
export function decodeReply(frame: Frame): DecodedReply {
  const i32 = frame.i32;
  const status = i32[0];
  if (status === Status.Overflow) return { status, results: [] };
  const count = i32[1];
  const end = i32[2];
  if (!(count >= 0 && end >= HEADER_WORDS && end <= i32.length)) {
    throw new InvalidInputError("malformed reply frame");
  }
  const r = new Reader(frame, end, HEADER_WORDS);
  if (status === Status.Failed) {
    return { status, results: [], error: { name: r.str(r.word()), message: r.str(r.word()) } };
  }
  const results = new Array<unknown>(count);
  let failed: [number, WireError][] | undefined;
  for (let i = 0; i < count; i++) {
    const tag = r.word();
    const v = r.word();
    switch (tag) {
      case Tag.False:
        results[i] = false;
        break;
      case Tag.True:
        results[i] = true;
        break;
      case Tag.Null:
        results[i] = null;
        break;
      case Tag.Undefined:
        results[i] = undefined;
        break;
      case Tag.Int:
        results[i] = v;
        break;
      case Tag.Number:
        results[i] = frame.f64[v];
        break;
      case Tag.String:
        results[i] = r.str(v);
        break;
      case Tag.Known:
        results[i] = KNOWN[v];
        break;
      case Tag.List: {
        const list = new Array<string>(v);
        for (let k = 0; k < v; k++) list[k] = r.str(r.word());
        results[i] = list;
        break;
      }
      case Tag.Json:
        results[i] = JSON.parse(r.str(v));
        break;
      case Tag.Failed:
        (failed ??= []).push([i, { name: r.str(r.word()), message: r.str(r.word()) }]);
        results[i] = null;
        break;
      default:
        throw new InvalidInputError(`bad result tag ${tag}`);
    }
  }
  const n = r.word();
  let removed: string[] | undefined;
  if (n >= 0) {
    removed = new Array<string>(n);
    for (let k = 0; k < n; k++) removed[k] = r.str(r.word());
  }
  const out: DecodedReply = { status, results };
  if (removed !== undefined) out.removed = removed;
  if (failed !== undefined) out.failed = failed;
  return out;
}
