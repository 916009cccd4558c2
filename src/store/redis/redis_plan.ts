/**
 * Batch planning for the Redis store backend: turns one batch of facade
 * operations into script calls of at most {@linkcode CHUNK_OPS} operations
 * (and {@linkcode CHUNK_CHARS} argument characters) each, and maps the
 * script's raw results back to the facade's results.
 *
 * Input is validated here, before anything is sent, exactly as the in-memory
 * tables do: invalid input gets its fail-closed answer locally (or a script
 * op that only counts it) and never reaches, nor fails, the script.
 *
 * @module
 */

import { OpFailure } from "../backend.ts";
import { cancelKey } from "../../core/cancel_table.ts";
import { InvalidInputError } from "../../core/errors.ts";
import { ARITY, Op } from "../../core/operations.ts";
import { CANCEL_INVALID, CHUNK_OPS, OWNER_INVALID } from "./redis_scripts.ts";
import {
  isValidFingerprint,
  isValidRequestId,
  sanitizeSessionId,
  str,
} from "../../core/validate.ts";
import { keepMsOf } from "../../core/owner_types.ts";

/** Decodes one script result into the facade's result for that op. */
type Decode = (raw: unknown) => unknown;

/** One batch prepared for the script: the script ops, and how to fill each result. */
export interface Plan {
  /** Per batch op: a ready result, or a decoder of the script's next result. */
  steps: ({ value: unknown } | Decode)[];
  /** Script ARGV tail per chunk (op codes and arguments). */
  chunks: string[][];
}

/**
 * Longest cancel reason forwarded to other processes, in characters. A longer
 * one fails that `cancel` alone with `InvalidInputError` (the HTTP guard
 * forwards at most 200 characters).
 */
export const MAX_REASON_LENGTH = 65_536;

/** Longest entry id accepted (the facade's are about 40 characters). */
const MAX_ENTRY_ID_LENGTH = 1_024;

/** Most argument characters one script call carries, so no call grows unbounded. */
const CHUNK_CHARS = 4 * 1024 * 1024;

const BIND_RESULT = ["refused", "bound", "full"] as const;
const bool: Decode = (raw) => raw === 1;
const num: Decode = (raw) => Number(raw);
const ownerOf: Decode = (raw) => (typeof raw === "string" ? raw : null);
const bindResult: Decode = (raw) => BIND_RESULT[raw as number] ?? "refused";
const ownerStats: Decode = (raw) => {
  const [size, pinned, evictions, refusals, claims, invalid, full] = (raw as number[]).map(Number);
  return { size, pinned, evictions, refusals, claims, invalid, full, restarts: 0 };
};
const cancelStats: Decode = (raw) => {
  const [size, registered, ignored, displaced, cancelled] = (raw as number[]).map(Number);
  return { size, registered, ignored, displaced, cancelled, restarts: 0 };
};
const entryId: Decode = (raw) => (typeof raw === "string" ? raw : null);
const entryIds: Decode = (raw) => (Array.isArray(raw) ? raw.map(String) : []);

class PlanBuilder {
  readonly steps: Plan["steps"] = [];
  readonly chunks: string[][] = [];
  #current: string[] = [];
  #count = 0;
  #chars = 0;

  local(value: unknown): void {
    this.steps.push({ value });
  }

  script(decode: Decode, ...argv: string[]): void {
    let chars = 0;
    for (const a of argv) chars += a.length;
    if (this.#count === CHUNK_OPS || (this.#count > 0 && this.#chars + chars > CHUNK_CHARS)) {
      this.chunks.push(this.#current);
      this.#current = [];
      this.#count = 0;
      this.#chars = 0;
    }
    this.#current.push(...argv);
    this.#count++;
    this.#chars += chars;
    this.steps.push(decode);
  }

  build(): Plan {
    if (this.#count > 0) this.chunks.push(this.#current);
    return { steps: this.steps, chunks: this.chunks };
  }
}

/**
 * Plans an owner batch. Input is validated here exactly as the in-memory
 * table does, before anything is sent: invalid input becomes that op's
 * fail-closed answer and never reaches (or fails) the script.
 */
export function planOwner(ops: number[], args: unknown[], shared: Set<string>): Plan {
  const p = new PlanBuilder();
  const flags = (fp: string, exempt: boolean, pin: boolean) =>
    String((exempt || shared.has(fp) ? 1 : 0) + (pin ? 2 : 0));
  for (let i = 0, at = 0; i < ops.length; i++) {
    const a = args[at], b = args[at + 1], c = args[at + 2];
    switch (ops[i]) {
      case Op.Bind: {
        const keep = keepMsOf(args[at + 3]);
        if (sanitizeSessionId(a) === null || !isValidFingerprint(b) || keep === null) {
          p.script(() => "refused", String(OWNER_INVALID));
        } else p.script(bindResult, "1", a as string, b, flags(b, c === true, false), String(keep));
        break;
      }
      case Op.Attach:
        if (sanitizeSessionId(a) === null || !isValidFingerprint(b)) {
          p.script(() => false, String(OWNER_INVALID));
        } else p.script(bool, "2", a as string, b, flags(b, false, c === true));
        break;
      case Op.Touch:
        // Never counted: a touch that finds nothing of the caller's is not a refusal.
        if (sanitizeSessionId(a) === null || !isValidFingerprint(b)) p.local(false);
        else p.script(bool, "9", a as string, b);
        break;
      case Op.Forget:
        if (sanitizeSessionId(a) === null || (b !== undefined && !isValidFingerprint(b))) {
          p.script(() => false, String(OWNER_INVALID));
        } else p.script(bool, "3", a as string, b === undefined ? "" : b as string);
        break;
      case Op.OwnerOf:
        if (sanitizeSessionId(a) === null) p.local(null);
        else p.script(ownerOf, "4", a as string);
        break;
      case Op.Pin:
      case Op.Unpin:
        if (sanitizeSessionId(a) === null) p.local(false);
        else p.script(bool, ops[i] === Op.Pin ? "5" : "6", a as string);
        break;
      case Op.OwnerSize:
        p.script(num, "7");
        break;
      default:
        p.script(ownerStats, "8");
    }
    at += ARITY[ops[i]];
  }
  return p.build();
}

/** A cancel reason the store cannot forward fails that op alone. */
function reasonTooLong(reason: unknown): OpFailure | null {
  if (typeof reason !== "string" || reason.length <= MAX_REASON_LENGTH) return null;
  return new OpFailure(
    new InvalidInputError(
      `cancel reason is ${reason.length} characters; the Redis store forwards at most ${MAX_REASON_LENGTH}`,
    ),
  );
}

/** Plans a cancellation batch, validating input as {@linkcode planOwner} does. */
export function planCancel(ops: number[], args: unknown[]): Plan {
  const p = new PlanBuilder();
  for (let i = 0, at = 0; i < ops.length; i++) {
    const a = args[at], b = args[at + 1], c = args[at + 2];
    switch (ops[i]) {
      case Op.Register:
        if (
          sanitizeSessionId(a) === null || !isValidRequestId(b) || typeof c !== "string" ||
          c.length === 0 || c.length > MAX_ENTRY_ID_LENGTH
        ) {
          p.script(() => false, String(CANCEL_INVALID));
        } else p.script(bool, "20", a as string, cancelKey(a as string, b), c);
        break;
      case Op.Deregister:
        if (typeof a !== "string" || a.length === 0 || a.length > MAX_ENTRY_ID_LENGTH) {
          p.local(false);
        } else p.script(bool, "21", a);
        break;
      case Op.Cancel: {
        const tooLong = reasonTooLong(c);
        if (tooLong !== null) p.local(tooLong);
        else if (sanitizeSessionId(a) === null || !isValidRequestId(b)) p.local(null);
        else {
          const meta = JSON.stringify([a, b, str(c)]);
          p.script(entryId, "22", cancelKey(a as string, b), meta);
        }
        break;
      }
      case Op.CancelAll: {
        const tooLong = reasonTooLong(b);
        if (tooLong !== null) p.local(tooLong);
        else if (sanitizeSessionId(a) === null) p.local([]);
        else p.script(entryIds, "23", a as string, JSON.stringify([a, null, str(b)]));
        break;
      }
      case Op.CancelSize:
        p.script(num, "24");
        break;
      default:
        p.script(cancelStats, "25");
    }
    at += ARITY[ops[i]];
  }
  return p.build();
}

/**
 * The facade's results for a planned batch: each ready result as is, each
 * script op's raw result (one per script op, in order) decoded, or the
 * `OpFailure` it raised passed through.
 */
export function planResults(plan: Plan, raw: unknown[]): unknown[] {
  const out = new Array(plan.steps.length);
  for (let i = 0, k = 0; i < plan.steps.length; i++) {
    const step = plan.steps[i];
    if (typeof step !== "function") out[i] = step.value;
    else {
      const r = raw[k++];
      out[i] = r instanceof OpFailure ? r : step(r);
    }
  }
  return out;
}
