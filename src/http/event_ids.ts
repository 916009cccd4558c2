/**
 * SSE event ids bound to their session: the pure part of the guard's
 * resumption check.
 *
 * The guard forwards every event id of a stream it passes (a GET's
 * listening stream, a POST's SSE answer) as `<raw>.<kind><tag>`: the id the
 * handler wrote, a dot, the kind of stream (`r` a request's stream, `l` a
 * listening stream, `t` a request's stream the task rules acted on) and a tag, 22 base64url characters of HMAC-SHA-256 over
 * (kind, session id, raw id). A client stores the id as it is and sends it
 * back as `Last-Event-ID`; the guard checks the tag against the session the
 * GET names and hands the handler the raw id. An id of another session, one
 * altered in any way, or one without a tag never reaches the handler.
 *
 * The tag's key comes from the guard's `secret` (so every process of a
 * fleet, and the next run, accept each other's ids) or is random per guard
 * (ids then hold only until the process ends).
 *
 * @example Tag an id, check it back
 * ```ts
 * import assert from "node:assert/strict";
 * import { EventIdKey } from "./event_ids.ts";
 *
 * const key = EventIdKey.fromSecret("fleet secret");
 * const tag = key.tagger("session-a", "request");
 * const id = tag("stream-7_1718000000000_k3j2");
 * assert.deepEqual(key.verify("session-a", id), {
 *   raw: "stream-7_1718000000000_k3j2",
 *   kind: "request",
 * });
 * assert.equal(key.verify("session-b", id), null); // another session's id
 * assert.equal(key.verify("session-a", "stream-7_1718000000000_k3j2"), null); // no tag
 * ```
 *
 * @module
 */

import { deriveFromSecret, type HmacSha256Key, hmacSha256Key } from "../core/hmac_sha256.ts";

/**
 * The stream an event id was sent on: a request's (a POST's SSE answer, or
 * a GET resuming one), a session's listening stream (a GET), or a request's
 * stream whose answer the task rules acted on (`"task"`: a `tasks/list`
 * answer filtered and its cursor sealed, a task-creating answer whose task
 * was bound). What an event store replays of a `"task"` stream is the
 * handler's answer as it stored it, before those rules: the guard never
 * resumes one.
 */
export type EventStreamKind = "request" | "listen" | "task";

/** Characters of the tag (128 bits in base64url). */
export const TAG_LENGTH = 22;
/** What the guard appends to a raw id: `.`, the kind, the tag. */
export const SUFFIX_LENGTH = TAG_LENGTH + 2;

/** Taggers an {@linkcode EventIdKey} keeps (one per session and kind of stream). */
const MAX_TAGGERS = 1024;

const KIND_CHAR: Record<EventStreamKind, string> = { request: "r", listen: "l", task: "t" };
const KIND_OF: Record<string, EventStreamKind> = { r: "request", l: "listen", t: "task" };
const KIND_BYTE: Record<EventStreamKind, number> = { request: 0x72, listen: 0x6c, task: 0x74 };

/** What the tag key is derived for from a secret (see `deriveFromSecret`). */
const DERIVATION = "mcp-session-guard event ids v1";

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const encoder = new TextEncoder();

/** The first 16 bytes of `mac` in base64url (22 characters). */
function tagText(mac: Uint8Array): string {
  let out = "";
  for (let i = 0; i < 15; i += 3) {
    const n = (mac[i] << 16) | (mac[i + 1] << 8) | mac[i + 2];
    out += ALPHABET[n >>> 18] + ALPHABET[(n >>> 12) & 63] + ALPHABET[(n >>> 6) & 63] +
      ALPHABET[n & 63];
  }
  return out + ALPHABET[mac[15] >>> 2] + ALPHABET[(mac[15] & 3) << 4];
}

/** Writes the tag of `mac` (as {@linkcode tagText} spells it) into `out` from `at`, as ASCII. */
function tagBytes(mac: Uint8Array, out: Uint8Array, at: number): void {
  for (let i = 0; i < 15; i += 3) {
    const n = (mac[i] << 16) | (mac[i + 1] << 8) | mac[i + 2];
    out[at++] = ALPHABET_CODES[n >>> 18];
    out[at++] = ALPHABET_CODES[(n >>> 12) & 63];
    out[at++] = ALPHABET_CODES[(n >>> 6) & 63];
    out[at++] = ALPHABET_CODES[n & 63];
  }
  out[at++] = ALPHABET_CODES[mac[15] >>> 2];
  out[at] = ALPHABET_CODES[(mac[15] & 3) << 4];
}

const ALPHABET_CODES = encoder.encode(ALPHABET);

/** `a === b` in time that depends only on the length. */
function same(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

/**
 * The key that tags and checks event ids.
 *
 * @example A random key: ids hold for this guard only
 * ```ts
 * import assert from "node:assert/strict";
 * import { EventIdKey } from "./event_ids.ts";
 *
 * const one = EventIdKey.random();
 * const id = one.tagger("s", "listen")("42");
 * assert.equal(one.verify("s", id)?.raw, "42");
 * assert.equal(EventIdKey.random().verify("s", id), null);
 * ```
 */
export class EventIdKey {
  readonly #mac: HmacSha256Key;
  /** Taggers by kind and session, so a session's streams share one (bounded, cleared when full). */
  readonly #taggers = new Map<string, (raw: string) => string>();
  /** The same, on bytes ({@linkcode EventIdKey.suffixer}). */
  readonly #suffixers = new Map<string, (raw: Uint8Array) => Uint8Array>();

  private constructor(mac: HmacSha256Key) {
    this.#mac = mac;
  }

  /** The key derived from the guard's `secret`: the same on every process that shares it. */
  static fromSecret(secret: string | Uint8Array): EventIdKey {
    return new EventIdKey(hmacSha256Key(deriveFromSecret(secret, DERIVATION)));
  }

  /** A random key (256 bits). */
  static random(): EventIdKey {
    return new EventIdKey(hmacSha256Key(crypto.getRandomValues(new Uint8Array(32))));
  }

  /**
   * The MAC key for one session and kind: the message is the kind, NUL, the
   * session id, NUL, zeros up to a 64-byte boundary (absorbed once), then the
   * raw id. Session ids are visible ASCII (no NUL), so no two (kind,
   * session, raw) share a message.
   */
  #scoped(sessionId: string, kind: EventStreamKind): HmacSha256Key {
    const sid = encoder.encode(sessionId);
    const prefix = new Uint8Array(Math.ceil((sid.length + 3) / 64) * 64);
    prefix[0] = KIND_BYTE[kind];
    prefix.set(sid, 2);
    return this.#mac.withPrefix(prefix);
  }

  /**
   * Tags the ids of one stream: `raw` becomes `<raw>.<kind><tag>`. `raw`
   * should be a non-empty id without NUL (an empty `id` resets a client's
   * last event id, and one with NUL is ignored by clients: neither is tagged
   * by the guard).
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { EventIdKey, SUFFIX_LENGTH } from "./event_ids.ts";
   *
   * const tag = EventIdKey.random().tagger("session-a", "request");
   * const id = tag("e-1");
   * assert.equal(id.length, "e-1".length + SUFFIX_LENGTH);
   * assert.match(id, /^e-1\.r[A-Za-z0-9_-]{22}$/);
   * ```
   */
  tagger(sessionId: string, kind: EventStreamKind): (raw: string) => string {
    const cacheKey = KIND_CHAR[kind] + sessionId;
    let tagger = this.#taggers.get(cacheKey);
    if (tagger !== undefined) return tagger;
    const mac = this.#scoped(sessionId, kind);
    const suffix = `.${KIND_CHAR[kind]}`;
    tagger = (raw) => raw + suffix + tagText(mac.sign(encoder.encode(raw)));
    if (this.#taggers.size >= MAX_TAGGERS) this.#taggers.clear();
    this.#taggers.set(cacheKey, tagger);
    return tagger;
  }

  /**
   * {@linkcode EventIdKey.tagger} on bytes: for the UTF-8 bytes of a raw id,
   * the bytes of what the tagger appends to it (`.<kind><tag>`, ASCII), so
   * that `raw + decode(suffix(encode(raw))) === tagger(...)(raw)`.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { EventIdKey } from "./event_ids.ts";
   *
   * const key = EventIdKey.random();
   * const suffix = key.suffixer("session-a", "request")(new TextEncoder().encode("e-1"));
   * assert.equal("e-1" + new TextDecoder().decode(suffix), key.tagger("session-a", "request")("e-1"));
   * ```
   */
  suffixer(sessionId: string, kind: EventStreamKind): (raw: Uint8Array) => Uint8Array {
    const cacheKey = KIND_CHAR[kind] + sessionId;
    let suffixer = this.#suffixers.get(cacheKey);
    if (suffixer !== undefined) return suffixer;
    const mac = this.#scoped(sessionId, kind);
    const kindByte = KIND_BYTE[kind];
    suffixer = (raw) => {
      const out = new Uint8Array(SUFFIX_LENGTH);
      out[0] = 0x2e; // "."
      out[1] = kindByte;
      tagBytes(mac.sign(raw), out, 2);
      return out;
    };
    if (this.#suffixers.size >= MAX_TAGGERS) this.#suffixers.clear();
    this.#suffixers.set(cacheKey, suffixer);
    return suffixer;
  }

  /**
   * Checks an id the guard tagged for `sessionId` (a `Last-Event-ID`):
   * returns the raw id and the kind of stream it was sent on, or `null`
   * when it carries no tag, another session's or kind's, or was altered.
   *
   * @example
   * ```ts
   * import assert from "node:assert/strict";
   * import { EventIdKey } from "./event_ids.ts";
   *
   * const key = EventIdKey.random();
   * const id = key.tagger("session-a", "listen")("7");
   * assert.deepEqual(key.verify("session-a", id), { raw: "7", kind: "listen" });
   * assert.equal(key.verify("session-a", id.replace(".l", ".r")), null); // kind changed
   * assert.equal(key.verify("session-a", "8" + id.slice(1)), null); // raw id changed
   * ```
   */
  verify(sessionId: string, tagged: string): { raw: string; kind: EventStreamKind } | null {
    if (typeof tagged !== "string" || tagged.length <= SUFFIX_LENGTH) return null;
    const at = tagged.length - SUFFIX_LENGTH;
    const kind = KIND_OF[tagged[at + 1]];
    if (tagged[at] !== "." || kind === undefined) return null;
    const raw = tagged.slice(0, at);
    const expected = tagText(this.#scoped(sessionId, kind).sign(encoder.encode(raw)));
    return same(tagged.slice(at + 2), expected) ? { raw, kind } : null;
  }
}
