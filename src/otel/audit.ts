/**
 * The audit trail's pieces that need no OpenTelemetry: the hash that stands
 * for a session, task or handle id in a record (so a reader can count and
 * correlate attempts, but never replay the id), the record itself, and the
 * JSON-lines sink.
 *
 * @module
 */

import { InvalidInputError } from "../core/errors.ts";
import { type HmacSha256Key, hmacSha256Key, sha256 } from "../core/hmac_sha256.ts";
import { checkOptionKeys } from "../core/options_check.ts";

const encoder = new TextEncoder();

/** Bytes of a hash kept (128 bits: collisions stay out of reach, lines stay short). */
const KEPT_BYTES = 16;

/** Domain separation: an audit hash is never equal to a fingerprint or an event-id tag. */
const DOMAIN = encoder.encode("mcp-guard audit id v1".padEnd(64, "\0"));

function hex(bytes: Uint8Array): string {
  let out = "";
  for (let i = 0; i < KEPT_BYTES; i++) out += bytes[i].toString(16).padStart(2, "0");
  return out;
}

/**
 * Hashes ids for audit records: HMAC-SHA-256 with the guard's secret when
 * there is one (a reader without the secret cannot even test a guess), else
 * SHA-256; either way under a domain of its own, truncated to 128 bits, hex.
 * Recent answers are remembered, since a session's id recurs on every request.
 */
export class AuditKey {
  readonly #key: HmacSha256Key | null;
  readonly #recent = new Map<string, string>();

  constructor(secret: string | Uint8Array | undefined) {
    this.#key = secret === undefined
      ? null
      : hmacSha256Key(typeof secret === "string" ? encoder.encode(secret) : secret)
        .withPrefix(DOMAIN);
  }

  /** The hash of `id` (32 hex characters). */
  hash(id: string): string {
    let hashed = this.#recent.get(id);
    if (hashed !== undefined) return hashed;
    const data = encoder.encode(id);
    if (this.#key !== null) hashed = hex(this.#key.sign(data));
    else {
      const whole = new Uint8Array(DOMAIN.length + data.length);
      whole.set(DOMAIN);
      whole.set(data, DOMAIN.length);
      hashed = hex(sha256(whole));
    }
    if (this.#recent.size >= 4_096) this.#recent.clear();
    this.#recent.set(id, hashed);
    return hashed;
  }
}

/** Options of {@linkcode auditId}. */
export interface AuditIdOptions {
  /** The guard's `secret` (or the telemetry's): the key its records were hashed with. */
  secret?: string | Uint8Array;
}

/**
 * The hash that stands for a session, task or handle id in refusal records,
 * to find the attempts on a known id ("who tried to use Alice's session?").
 * Give the `secret` the guard was given; records of a guard without one are
 * hashed with plain SHA-256.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { auditId } from "@mcp-guard/session/otel";
 *
 * const hashed = auditId("3f1c9a7e-alice-session");
 * assert.match(hashed, /^[0-9a-f]{32}$/);
 * assert.notEqual(auditId("3f1c9a7e-alice-session", { secret: "k" }), hashed);
 * ```
 */
export function auditId(id: string, options: AuditIdOptions = {}): string {
  if (typeof id !== "string") throw new InvalidInputError("auditId: id must be a string");
  checkOptionKeys("auditId", options, ["secret"]);
  const secret = options.secret;
  if (
    secret !== undefined &&
    !((typeof secret === "string" || secret instanceof Uint8Array) && secret.length > 0)
  ) {
    throw new InvalidInputError("auditId: secret must be a non-empty string or bytes");
  }
  return new AuditKey(secret).hash(id);
}

/** One refusal, as written to the audit trail (JSON lines use these keys). */
export interface RefusalRecord {
  /** When (ISO 8601). */
  time: string;
  /** Always `"mcp_guard.refusal"`. */
  event: string;
  /** The guard's reason (`GuardReason`), or a handle refusal's. */
  reason: string;
  /** The HTTP status answered, `null` for a handle refused inside a tool or a task id replaced. */
  status: number | null;
  /** The HTTP method, `null` when unknown (a handle checked outside a request). */
  method: string | null;
  /** The JSON-RPC method as sent (at most 128 characters), or `null`. */
  rpcMethod: string | null;
  /** The caller's fingerprint (as the registries store it), `null` when not identified. */
  principal: string | null;
  /** The targeted session id, hashed. */
  session: string | null;
  /** The targeted task id, hashed (for a task id replaced, the one the caller named). */
  task: string | null;
  /** The targeted handle, hashed. */
  handle: string | null;
  /** The request's trace, when one is recorded. */
  traceId?: string;
  /** The request's span, when one is recorded. */
  spanId?: string;
}

/** Most lines waiting for a slow stream; beyond, lines are dropped (and counted). */
const MAX_PENDING_LINES = 1_024;

/** Where JSON lines go: a function (`console.log`) or a byte stream (`Deno.stdout.writable`). */
export type LineTarget = ((line: string) => void) | WritableStream<Uint8Array>;

/** Writes records as JSON lines, never blocking and never holding more than a bound. */
export class LineSink {
  readonly #write: ((line: string) => void) | null;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array> | null;
  readonly #dropped: () => void;
  #pending = 0;
  /** Settles once the last line written is out (a stream writes in order). */
  #last: Promise<unknown> = Promise.resolve();

  constructor(target: LineTarget, dropped: () => void) {
    this.#dropped = dropped;
    if (typeof target === "function") {
      this.#write = target;
      this.#writer = null;
    } else {
      this.#write = null;
      this.#writer = target.getWriter();
    }
  }

  /** Writes one record (a throwing function or a failed stream drops it). */
  write(record: RefusalRecord): void {
    const line = JSON.stringify(record);
    if (this.#write !== null) {
      try {
        this.#write(line);
      } catch {
        this.#dropped();
      }
      return;
    }
    if (this.#pending >= MAX_PENDING_LINES) {
      this.#dropped();
      return;
    }
    this.#pending++;
    this.#last = this.#writer!.write(encoder.encode(`${line}\n`)).then(
      () => this.#pending--,
      () => {
        this.#pending--;
        this.#dropped();
      },
    );
  }

  /** Waits for the lines under way, then releases the stream (not closed: it is the caller's). */
  async close(): Promise<void> {
    const writer = this.#writer;
    if (writer === null) return;
    await this.#last;
    writer.releaseLock();
  }
}
