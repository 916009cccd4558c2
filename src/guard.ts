/**
 * {@linkcode guardSessions}: a web-standard `(Request) => Promise<Response>`
 * wrapper that makes a Streamable HTTP MCP server refuse session hijacking and
 * cross-session cancellation.
 *
 * It drops in front of any handler that speaks MCP Streamable HTTP (the
 * official SDK's `WebStandardStreamableHTTPServerTransport`, a Hono route, a
 * hand-written router): it reads only headers and the JSON-RPC body, keeps its
 * state in a {@linkcode SessionOwnerRegistry} and a
 * {@linkcode CancellationRegistry}, and answers refusals itself with a JSON-RPC
 * error body.
 *
 * @module
 */

import { onBodyEnd } from "./body_end.ts";
import { cancelKey } from "./cancel_table.ts";
import type { CancellationRegistry, Tracked } from "./cancellation_registry.ts";
import {
  InvalidInputError,
  RegistryMisconfiguredError,
  RequestCancelledError,
  UnauthenticatedError,
} from "./errors.ts";
import { checkOptionKeys } from "./options_check.ts";
import { fingerprint } from "./fingerprint.ts";
import {
  classify,
  isJsonMediaType,
  parseJson,
  readBody,
  RpcCode,
  rpcError,
  type RpcMessage,
} from "./jsonrpc.ts";
import { rewriteResult, watchResponse } from "./response_watch.ts";
import { SessionOrder } from "./session_order.ts";
import {
  checkMcpName,
  isModernRequest,
  isValidTaskId,
  taskIdOfResult,
  taskRequest,
} from "./tasks.ts";
import type { SessionOwnerRegistry } from "./session_owner_registry.ts";
import { checkCount, isValidRequestId, sanitizeSessionId } from "./validate.ts";

/**
 * How much the guard enforces.
 *
 * - `"strict"` (default): a session belongs to the principal that initialized
 *   it. Every GET, POST and DELETE carrying its id must come from that
 *   principal (others get 403); ids the registry does not know get 404 and are
 *   never claimed; anonymous callers get 401.
 * - `"attach-only"`: the original behaviour. Only the listening GET (claimed
 *   trust-on-first-use and pinned) and DELETE are owner-checked; POSTs are
 *   not, and anonymous callers pass through without owning anything.
 */
export type GuardMode = "strict" | "attach-only";

/**
 * A web-standard request handler, as `Deno.serve` and Hono take. The guard
 * passes a second argument, {@linkcode GuardContext}, that a plain handler may
 * ignore.
 */
export type RequestHandler = (
  request: Request,
  context: GuardContext,
) => Response | Promise<Response>;

/**
 * What the guard tells the handler about a request it let through: who sent
 * it and, for a POST, the body it already read and parsed.
 *
 * Hand `parsedBody` and the caller's identity to the SDK instead of reading
 * the body again: SDK 1.32's `transport.handleRequest(request, { parsedBody,
 * authInfo })` and SDK v2's `handler.fetch(request, { parsedBody, authInfo })`
 * both take them (see `forwardBody: "parsed"`).
 */
export interface GuardContext {
  /** The identity `principal()` returned, or `null` for an anonymous caller (attach-only mode). */
  principal: string | null;
  /** Its fingerprint (what the registries store), or `null`. */
  fingerprint: string | null;
  /** The JSON-RPC message of a POST, parsed; `undefined` for GET and DELETE. */
  parsedBody: unknown;
  /**
   * `"modern"` for an MCP 2026-07-28 request (its `params._meta` carries
   * `io.modelcontextprotocol/protocolVersion`; no protocol session), else
   * `"legacy"` (2025-era traffic, with or without a session).
   */
  era: "legacy" | "modern";
}

/** The {@linkcode SessionOwnerRegistry} calls the guard makes (any implementation will do). */
export type GuardOwners =
  & Pick<SessionOwnerRegistry, "bind" | "authorizeAttach" | "ownerOf" | "forget" | "unpin">
  & Partial<Pick<SessionOwnerRegistry, "knownOwner" | "touch" | "onRemoved">>;

/**
 * Who owns which task: the {@linkcode SessionOwnerRegistry} calls the guard
 * makes for tasks (give it a registry of its own, so tasks never count
 * against sessions' bounds).
 */
export type GuardTaskOwners = Pick<SessionOwnerRegistry, "bind" | "ownerOf">;

/** The {@linkcode CancellationRegistry} calls the guard makes (any implementation will do). */
export type GuardCancellations = Pick<
  CancellationRegistry,
  "track" | "deregister" | "cancel" | "cancelAll"
>;

/** Why the guard let a request through or answered it itself. */
export type GuardReason =
  /** Allowed: the caller owns the session, or the request carries none. */
  | "allowed"
  /** Allowed: the handler issued a session id and it is now bound to the caller. */
  | "bound"
  /** Allowed: a `notifications/cancelled` aborted a request of the same session. */
  | "cancelled"
  /** Allowed: a `notifications/cancelled` matched no live request of the session. */
  | "cancel-unmatched"
  /** 405: not GET, POST or DELETE. */
  | "method-not-allowed"
  /** 400: `Mcp-Session-Id` is malformed (not 1-256 visible ASCII characters). */
  | "invalid-session-id"
  /** 400: GET or DELETE without `Mcp-Session-Id`. */
  | "missing-session-id"
  /** 401: strict mode and `principal()` answered `null`. */
  | "anonymous"
  /** 401: `principal()` threw an `UnauthenticatedError` (a bad or expired credential). */
  | "unauthenticated"
  /** 503: `principal()` threw anything else, or answered something other than a string or `null`. */
  | "principal-error"
  /** 400: the client went away (or broke off) while sending the body. */
  | "client-aborted"
  /** 403 (or 404 with `notOwnerStatus: 404`): the session belongs to another principal. */
  | "not-owner"
  /** 404: strict mode and the session id is bound to nobody. */
  | "unknown-session"
  /** 415: a POST whose `Content-Type` is not `application/json`. */
  | "unsupported-media-type"
  /** 413: the body is larger than `maxBodyBytes`. */
  | "body-too-large"
  /** 400: the body is not JSON. */
  | "parse-error"
  /** 400: a JSON-RPC batch (an array body). */
  | "batch"
  /** 400: not a JSON-RPC request, notification or response. */
  | "invalid-request"
  /** 400: malformed params (a cancellation's `requestId`). */
  | "invalid-params"
  /** 400: a task request whose `Mcp-Name` header does not match its `params.taskId`. */
  | "header-mismatch"
  /** 403 (or 404 with `notOwnerStatus: 404`): the task belongs to another principal. */
  | "not-task-owner"
  /** 404: strict mode and the task id is bound to nobody. */
  | "unknown-task"
  /** 409: the issued session id is owned by another principal; the session was closed. */
  | "bind-refused"
  /** 503: no room to bind the issued session id (every slot is pinned); the session was closed. */
  | "bind-full"
  /** 500: the handler issued a session id that is not valid; the session was closed. */
  | "invalid-issued-session-id"
  /** 503: a registry call failed (worker or store unavailable): fail closed. */
  | "registry-unavailable"
  /**
   * 500: the registry cannot work as configured (a missing permission such
   * as `--allow-read` or `--allow-net`): retrying will not help; the error,
   * naming the flag, goes to `onError`.
   */
  | "registry-misconfigured";

/** What the guard decided about one request, for logs and metrics. */
export interface GuardDecision {
  /** `"allow"`: passed to the handler; `"refuse"`: the guard answered itself. */
  outcome: "allow" | "refuse";
  /** Why. */
  reason: GuardReason;
  /** The HTTP status the guard answered with, or `null` when the handler answers. */
  status: number | null;
  /** The HTTP method. */
  method: string;
  /** The JSON-RPC method of a POST body, when it was read. */
  rpcMethod: string | null;
  /** The validated session id (the issued one for `"bound"`), or `null`. */
  sessionId: string | null;
}

/** Options of {@linkcode guardSessions}. */
export interface GuardOptions {
  /** Who owns which session. */
  owners: GuardOwners;
  /** In-flight requests, cancellable only from their own session. */
  cancellations: GuardCancellations;
  /**
   * The caller's identity (a user id, an API key, a verified token subject),
   * or `null` for anonymous. Only its fingerprint is stored.
   *
   * Throw {@linkcode UnauthenticatedError} for a credential that is bad or
   * expired: the caller gets 401 with its `challenge` as `WWW-Authenticate`.
   * Anything else it throws means "cannot tell right now" (a key server is
   * down): 503 with `Retry-After`, and the error goes to `onError`.
   */
  principal: (request: Request) => string | null | undefined | Promise<string | null | undefined>;
  /**
   * Identities, as `principal()` returns them, exempt from the per-principal
   * session cap (a shared master key used by many clients). The guard
   * fingerprints them with its `secret`; the registry never sees them raw.
   *
   * @default {[]}
   */
  sharedPrincipals?: readonly string[];
  /** HMAC secret for fingerprints (same on every process of a cluster). */
  secret?: string | Uint8Array;
  /** `"strict"` (default) or `"attach-only"`. */
  mode?: GuardMode;
  /** Largest POST body read, in bytes (default 4 MiB, as the MCP SDK). */
  maxBodyBytes?: number;
  /**
   * Principal-to-fingerprint pairs kept in memory to skip hashing (default
   * 1,024; `0` disables). Set `0` if principals are raw secrets that must not
   * stay in memory.
   */
  fingerprintCacheSize?: number;
  /**
   * How long (ms) a POST may rely on an owner the registry confirmed, instead
   * of asking again (default `0`: ask on every request). A positive value
   * saves a registry round trip per POST; the price is that, for that long,
   * an operator's `forget`, an eviction or a registry outage does not yet stop
   * the session's own owner (never anyone else). GET and DELETE always ask.
   * With the in-memory store, the registry's `knownOwner` already spares
   * that round trip without the wait; this is for shared stores.
   */
  ownerCacheMs?: number;
  /**
   * How a POST's body reaches the handler, which the guard has already read.
   *
   * - `"copy"`: the handler gets a new `Request` carrying the same body, so
   *   any handler that reads `request.body` works.
   * - `"parsed"`: the handler gets the original `Request` (its body already
   *   read, its `signal` intact) and must take the message from
   *   `context.parsedBody`, as `handleRequest(request, { parsedBody })` (SDK
   *   1.32) and `handler.fetch(request, { parsedBody })` (SDK v2) do. The body
   *   is read once.
   *
   * @default {"copy"}
   */
  forwardBody?: "copy" | "parsed";
  /**
   * The status a caller gets for another principal's session. `403` tells
   * the caller the session exists; `404` answers exactly as for a session
   * nobody owns (same status, JSON-RPC code and message), so another
   * principal cannot learn which session ids are live. `onDecision` still
   * reports the reason `"not-owner"`.
   *
   * @default {403}
   */
  notOwnerStatus?: 403 | 404;
  /**
   * Task ownership (MCP 2025-11-25 tasks utility and the 2026-07-28 tasks
   * extension). When given, the guard binds the task id of every result
   * that creates a task to the caller before the caller can read it,
   * refuses `tasks/get`, `tasks/result`, `tasks/update` and `tasks/cancel`
   * for another principal's task (and, in strict mode, for a task bound to
   * nobody), checks `Mcp-Name` against `params.taskId`, and filters a
   * `tasks/list` result to the caller's own tasks. Without it, task
   * requests pass as any other request of their session.
   */
  tasks?: GuardTaskOwners;
  /**
   * Called with each decision (errors thrown by it are reported to
   * `onError`): one per request, plus, for a request whose answer issued a
   * session id, a second one once the id is bound (`"bound"`) or refused.
   */
  onDecision?: (decision: GuardDecision) => void;
  /**
   * Called for each session the guard closed in its handler because its
   * binding was evicted (to make room) or expired (idle longer than the
   * store's `idleTtlMs`), with the cause.
   */
  onSessionClosed?: (sessionId: string, cause: "evicted" | "expired") => void;
  /**
   * Called with failures the guard cannot answer with a status: a background
   * `unpin`/`deregister` that failed, a session it could not close, a throwing
   * `onDecision`, a registry error that became a 503.
   */
  onError?: (error: unknown, context: string) => void;
}

/**
 * Identifies an in-flight request; the MCP SDK's request handler `extra`
 * argument fits as is.
 */
export type RequestRef = SdkExtraRef | SdkContextRef;

/** A request as SDK 1.32 hands it to a tool: its `extra` argument. */
export interface SdkExtraRef {
  /** The session the request arrived in (`extra.sessionId`). */
  sessionId?: string;
  /** The JSON-RPC id (`extra.requestId`). */
  requestId: string | number;
  /** A signal to combine with the guard's (`extra.signal`). */
  signal?: AbortSignal;
}

/** A request as SDK v2 hands it to a tool: its `ctx` argument. */
export interface SdkContextRef {
  /** The session, if any (`ctx.sessionId`; none on 2026-07-28). */
  sessionId?: string;
  /** The request (`ctx.mcpReq`): its JSON-RPC id and the SDK's signal. */
  mcpReq: { id: string | number; signal?: AbortSignal };
}

/** The handler {@linkcode guardSessions} returns. */
export interface GuardedHandler {
  /** Handles one request: refuses it, or passes it to the wrapped handler. */
  (request: Request): Promise<Response>;
  /**
   * The `AbortSignal` of an in-flight request: aborted when a
   * `notifications/cancelled` from the same session (or the session's
   * termination, or `cancellations.cancel`/`cancelAll`) cancels it, combined
   * with the SDK's own signal when given (it aborts when a 2026-07-28 client
   * disconnects). A request the guard does not track gets the SDK's signal,
   * or a signal that never aborts. Pass the tool's `extra` (SDK 1.32) or
   * `ctx` (SDK v2) as is; anything else (`undefined`, a tool's arguments) is
   * an `InvalidInputError`, never a signal that silently never fires.
   */
  signalFor(ref: RequestRef): AbortSignal;
}

/** Most sessions a guard remembers as bound by it, to close them when evicted. */
const LOCAL_SESSIONS = 100_000;

/** A session this guard bound: what closing it through the handler takes. */
interface LocalSession {
  url: string;
  principal: string | null;
  fingerprint: string | null;
}

/** Every key of {@linkcode GuardOptions}, for rejecting unknown ones. */
const GUARD_OPTION_KEYS: readonly string[] = [
  "owners",
  "cancellations",
  "principal",
  "sharedPrincipals",
  "secret",
  "mode",
  "maxBodyBytes",
  "fingerprintCacheSize",
  "ownerCacheMs",
  "forwardBody",
  "notOwnerStatus",
  "tasks",
  "onDecision",
  "onSessionClosed",
  "onError",
];

const UNKNOWN_TASK = "Invalid params: no task with this taskId; it may have expired";

/** What a task gate does to the handler's answer. */
type ResponseWrap = (response: Response) => Response;

const UNKNOWN_SESSION =
  "Session not found: no principal owns this session id; initialize a new session";

/** Most sessions whose owner the guard remembers (see `ownerCacheMs`). */
const OWNER_CACHE_ENTRIES = 10_000;

/** A registry call failed: answered with 503. */
class RegistryFailure {
  constructor(readonly cause: unknown) {}
}

function registry<T>(promise: Promise<T>): Promise<T> {
  return promise.catch((err) => {
    throw new RegistryFailure(err);
  });
}

/** A session-scoped guard around one handler. */
class SessionGuard {
  readonly #handler: RequestHandler;
  readonly #owners: GuardOwners;
  readonly #cancellations: GuardCancellations;
  readonly #principal: GuardOptions["principal"];
  readonly #secret: string | Uint8Array | undefined;
  readonly #strict: boolean;
  readonly #maxBodyBytes: number;
  readonly #cacheSize: number;
  readonly #fingerprints = new Map<string, string>();
  readonly #onDecision: ((decision: GuardDecision) => void) | undefined;
  readonly #onError: ((error: unknown, context: string) => void) | undefined;
  /** cancelKey(sessionId, requestId) -> the guard's signal for that request. */
  readonly #inflight = new Map<string, AbortSignal>();
  readonly #ownerCacheMs: number;
  readonly #hideOthers: boolean;
  readonly #forwardParsed: boolean;
  readonly #tasks: GuardTaskOwners | undefined;
  /** session id -> owner confirmed by the registry, and until when to trust it. */
  readonly #ownerCache = new Map<string, { fp: string; until: number }>();
  /** GETs and DELETEs that later requests of their session must not overtake. */
  readonly #order = new SessionOrder();
  /** DELETEs let through so far (owner lookups older than the last one are not cached). */
  #deletes = 0;
  /**
   * Sessions this guard bound, and what closing one in the handler takes:
   * when the registry reports one evicted or expired, the guard closes it.
   */
  readonly #local = new Map<string, LocalSession>();
  /**
   * Issued session ids whose `bind` is under way, and the removal heard for
   * one meanwhile (a bind's own eviction can be announced before its reply).
   */
  readonly #binding = new Map<string, "evicted" | "expired" | null>();
  /** Fingerprints of `sharedPrincipals`, once hashed. */
  readonly #shared: Promise<Set<string>>;
  readonly #onSessionClosed: GuardOptions["onSessionClosed"];

  constructor(handler: RequestHandler, options: GuardOptions) {
    if (typeof handler !== "function") {
      throw new InvalidInputError("guardSessions: handler must be a function");
    }
    if (options === null || typeof options !== "object") {
      throw new InvalidInputError("guardSessions: options are required");
    }
    checkOptionKeys("guardSessions", options, GUARD_OPTION_KEYS);
    const { owners, cancellations } = options;
    for (const name of ["bind", "authorizeAttach", "ownerOf", "forget", "unpin"] as const) {
      if (typeof owners?.[name] !== "function") {
        throw new InvalidInputError(
          `guardSessions: options.owners must be a SessionOwnerRegistry (missing ${name})`,
        );
      }
    }
    for (const name of ["track", "deregister", "cancel", "cancelAll"] as const) {
      if (typeof cancellations?.[name] !== "function") {
        throw new InvalidInputError(
          `guardSessions: options.cancellations must be a CancellationRegistry (missing ${name})`,
        );
      }
    }
    if (typeof options.principal !== "function") {
      throw new InvalidInputError("guardSessions: options.principal must be a function");
    }
    const mode = options.mode ?? "strict";
    if (mode !== "strict" && mode !== "attach-only") {
      throw new InvalidInputError(
        `guardSessions: mode must be "strict" or "attach-only", got ${JSON.stringify(mode)}`,
      );
    }
    if (options.secret !== undefined) {
      const s = options.secret;
      if (!((typeof s === "string" || s instanceof Uint8Array) && s.length > 0)) {
        throw new InvalidInputError("guardSessions: secret must be a non-empty string or bytes");
      }
    }
    this.#handler = handler;
    this.#owners = owners;
    this.#cancellations = cancellations;
    this.#principal = options.principal;
    this.#secret = options.secret;
    this.#strict = mode === "strict";
    this.#maxBodyBytes = checkCount("maxBodyBytes", options.maxBodyBytes ?? 4 * 1024 * 1024, 1);
    this.#cacheSize = checkCount("fingerprintCacheSize", options.fingerprintCacheSize ?? 1024, 0);
    this.#ownerCacheMs = checkCount("ownerCacheMs", options.ownerCacheMs ?? 0, 0);
    const notOwnerStatus = options.notOwnerStatus ?? 403;
    if (notOwnerStatus !== 403 && notOwnerStatus !== 404) {
      throw new InvalidInputError(
        `guardSessions: notOwnerStatus must be 403 or 404, got ${JSON.stringify(notOwnerStatus)}`,
      );
    }
    this.#hideOthers = notOwnerStatus === 404;
    const forwardBody = options.forwardBody ?? "copy";
    if (forwardBody !== "copy" && forwardBody !== "parsed") {
      throw new InvalidInputError(
        `guardSessions: forwardBody must be "copy" or "parsed", got ${JSON.stringify(forwardBody)}`,
      );
    }
    this.#forwardParsed = forwardBody === "parsed";
    const tasks = options.tasks;
    if (
      tasks !== undefined &&
      (typeof tasks?.bind !== "function" || typeof tasks.ownerOf !== "function")
    ) {
      throw new InvalidInputError(
        "guardSessions: options.tasks must be a SessionOwnerRegistry (with bind and ownerOf)",
      );
    }
    this.#tasks = tasks;
    this.#onDecision = options.onDecision;
    this.#onError = options.onError;
    this.#onSessionClosed = options.onSessionClosed;
    for (const name of ["onDecision", "onError", "onSessionClosed"] as const) {
      if (options[name] !== undefined && typeof options[name] !== "function") {
        throw new InvalidInputError(`guardSessions: options.${name} must be a function`);
      }
    }
    const shared = options.sharedPrincipals ?? [];
    if (!Array.isArray(shared)) {
      throw new InvalidInputError(
        `guardSessions: sharedPrincipals must be an array of identities (as principal() returns them), got ${
          typeof shared === "string" ? JSON.stringify(shared) : typeof shared
        }`,
      );
    }
    shared.forEach((identity: unknown, i: number) => {
      if (typeof identity !== "string" || identity.trim().length === 0) {
        throw new InvalidInputError(
          `guardSessions: sharedPrincipals[${i}] must be a non-blank string, got ${
            typeof identity === "string" ? JSON.stringify(identity) : typeof identity
          }`,
        );
      }
    });
    this.#shared = Promise.all(
      shared.map((identity: string) => fingerprint(identity, { secret: this.#secret })),
    ).then((fps) => new Set(fps));
    this.#shared.catch(() => {});
    owners.onRemoved?.(({ cause, sessionIds }) => {
      for (const sid of sessionIds) this.#closeRemoved(sid, cause);
    });
    // A registry learns owners from the first time `knownOwner` is asked: ask now, so the
    // bindings of the very first sessions are known too.
    owners.knownOwner?.("");
  }

  handle = (request: Request): Promise<Response> => {
    // Ordering is decided on arrival, before anything is awaited: a GET or DELETE holds its
    // session's later requests back until the handler has answered it; a POST waits for the
    // GETs and DELETEs that arrived before it.
    const method = request.method;
    const rawSid = request.headers.get("mcp-session-id");
    if (rawSid === null) return this.#handle(request, method, null, undefined);
    if (method === "POST") return this.#handle(request, method, rawSid, this.#order.ahead(rawSid));
    if (method !== "GET" && method !== "DELETE") {
      return this.#handle(request, method, rawSid, undefined);
    }
    const release = this.#order.hold(rawSid);
    const answered = this.#handle(request, method, rawSid, undefined);
    answered.then(release, release);
    return answered;
  };

  async #handle(
    request: Request,
    method: string,
    rawSid: string | null,
    ahead: Promise<void> | undefined,
  ): Promise<Response> {
    if (method !== "POST" && method !== "GET" && method !== "DELETE") {
      return this.#refuse(
        method,
        null,
        null,
        405,
        RpcCode.ServerError,
        "method-not-allowed",
        `Method Not Allowed: ${method.slice(0, 32)}; an MCP endpoint takes POST, GET and DELETE`,
        null,
        { allow: "GET, POST, DELETE" },
      );
    }
    let sid: string | null = null;
    if (rawSid !== null) {
      sid = sanitizeSessionId(rawSid);
      if (sid === null) {
        return this.#refuse(
          method,
          null,
          null,
          400,
          RpcCode.InvalidRequest,
          "invalid-session-id",
          "Bad Request: Mcp-Session-Id must be 1 to 256 visible ASCII characters (0x21-0x7E)",
        );
      }
    } else if (method !== "POST") {
      return this.#refuse(
        method,
        null,
        null,
        400,
        RpcCode.InvalidRequest,
        "missing-session-id",
        `Bad Request: Mcp-Session-Id header is required for ${method}`,
      );
    }
    let ctx: GuardContext;
    try {
      ctx = await this.#identify(request);
    } catch (err) {
      if (err instanceof UnauthenticatedError) {
        return this.#refuse(
          method,
          null,
          sid,
          401,
          RpcCode.InvalidRequest,
          "unauthenticated",
          "Unauthorized: the credentials were not accepted",
          null,
          { "www-authenticate": err.challenge },
        );
      }
      this.#report(err, "principal");
      return this.#refuse(
        method,
        null,
        sid,
        503,
        RpcCode.ServerError,
        "principal-error",
        "Service Unavailable: could not identify the caller",
        null,
        { "retry-after": "1" },
      );
    }
    const fp = ctx.fingerprint;
    if (fp === null && this.#strict) {
      return this.#refuse(
        method,
        null,
        sid,
        401,
        RpcCode.InvalidRequest,
        "anonymous",
        "Unauthorized: this MCP server needs an identified caller; anonymous callers cannot use sessions",
        null,
        { "www-authenticate": "Bearer" },
      );
    }
    try {
      if (method === "POST") return await this.#post(request, sid, ctx, ahead);
      if (method === "GET") return await this.#get(request, sid!, ctx);
      return await this.#delete(request, sid!, ctx);
    } catch (err) {
      if (!(err instanceof RegistryFailure)) throw err;
      this.#report(err.cause, "registry");
      if (err.cause instanceof RegistryMisconfiguredError) {
        return this.#refuse(
          method,
          null,
          sid,
          500,
          RpcCode.InternalError,
          "registry-misconfigured",
          "Internal Server Error: the session registry is misconfigured; see the server log",
        );
      }
      return this.#refuse(
        method,
        null,
        sid,
        503,
        RpcCode.ServerError,
        "registry-unavailable",
        "Service Unavailable: the session registry is unavailable; try again",
        null,
        { "retry-after": "1" },
      );
    }
  }

  signalFor = (ref: RequestRef): AbortSignal => {
    const req = (ref as SdkContextRef | undefined)?.mcpReq;
    const extra = ref as Partial<SdkExtraRef> | undefined;
    const requestId = req !== undefined ? req?.id : extra?.requestId;
    if (!isValidRequestId(requestId)) {
      throw new InvalidInputError(
        "signalFor: pass the tool's `extra` (SDK 1.32) or `ctx` (SDK v2), got " +
          (ref === null || typeof ref !== "object"
            ? String(ref)
            : "an object without a request id"),
      );
    }
    const signal = req !== undefined ? req.signal : extra!.signal;
    const sdk = signal instanceof AbortSignal ? signal : undefined;
    const sid = ref.sessionId;
    const own = typeof sid === "string" ? this.#inflight.get(cancelKey(sid, requestId)) : undefined;
    if (own !== undefined && sdk !== undefined) return AbortSignal.any([own, sdk]);
    return own ?? sdk ?? new AbortController().signal;
  };

  async #post(
    request: Request,
    sid: string | null,
    ctx: GuardContext,
    ahead: Promise<void> | undefined,
  ): Promise<Response> {
    const fp = ctx.fingerprint;
    // Strict mode: ask who owns the session while the body is read and parsed.
    const epoch = this.#deletes;
    const owner = this.#strict && sid !== null ? this.#lookupOwner(sid, fp!) : null;
    if (!isJsonMediaType(request.headers.get("content-type"))) {
      return this.#refuse(
        "POST",
        null,
        sid,
        415,
        RpcCode.ServerError,
        "unsupported-media-type",
        "Unsupported Media Type: Content-Type must be application/json",
      );
    }
    let body: Awaited<ReturnType<typeof readBody>>;
    try {
      body = await readBody(request, this.#maxBodyBytes);
    } catch {
      // The client went away mid-body: nothing to answer it with, nothing to log.
      return this.#refuse(
        "POST",
        null,
        sid,
        400,
        RpcCode.InvalidRequest,
        "client-aborted",
        "Bad Request: the request body could not be read to its end",
      );
    }
    if (body.kind === "problem") return this.#problem("POST", null, sid, body);
    const json = parseJson(body.text);
    if (json.kind === "problem") return this.#problem("POST", null, sid, json);
    const message = classify(json.value);
    if (message.kind === "problem") return this.#problem("POST", null, sid, message);
    const rpcMethod = message.kind === "response" ? null : message.method;
    ctx.parsedBody = json.value;
    if (message.kind !== "response" && isModernRequest(message.params)) ctx.era = "modern";
    const inner = this.#forwardParsed ? request : this.#copy(request, body.text);

    if (sid === null) {
      // No session yet: `initialize`, or a stateless server's traffic.
      const gate = await this.#taskGate(request, message, ctx, null);
      if (gate instanceof Response) return gate;
      this.#decide("allow", "allowed", null, "POST", rpcMethod, null);
      const response = await this.#invoke(inner, ctx, gate);
      return await this.#bindIssued(request, response, null, ctx, rpcMethod);
    }
    if (this.#strict) {
      const refusal = await this.#checkOwner(
        "POST",
        rpcMethod,
        sid,
        fp!,
        requestIdOf(message),
        owner!,
        epoch,
      );
      if (refusal !== null) return refusal;
    }
    const gate = await this.#taskGate(request, message, ctx, sid);
    if (gate instanceof Response) return gate;
    // Never overtake a GET or DELETE of this session that arrived earlier.
    if (ahead !== undefined) await ahead;
    // Every allowed request is a use of the session (LRU recency, idle expiry); the registry
    // coalesces touches, so this is not a round trip per request.
    if (fp !== null) this.#touch(sid, fp);
    if (message.kind === "notification" && message.method === "notifications/cancelled") {
      const params = message.params as { requestId?: string | number; reason?: unknown };
      let cancelled = false;
      if (params?.requestId !== undefined) {
        const why = typeof params.reason === "string" ? params.reason.slice(0, 200) : undefined;
        cancelled = await registry(this.#cancellations.cancel(
          sid,
          params.requestId,
          new RequestCancelledError(
            sid,
            params.requestId,
            why === undefined ? undefined : `cancelled by the client: ${why}`,
          ),
        ));
      }
      this.#decide(
        "allow",
        cancelled ? "cancelled" : "cancel-unmatched",
        null,
        "POST",
        rpcMethod,
        sid,
      );
      return await this.#bindIssued(request, await this.#handler(inner, ctx), sid, ctx, rpcMethod);
    }
    this.#decide("allow", "allowed", null, "POST", rpcMethod, sid);
    if (message.kind === "request") {
      return await this.#runTracked(request, inner, sid, ctx, message, gate);
    }
    return await this.#bindIssued(request, await this.#handler(inner, ctx), sid, ctx, rpcMethod);
  }

  /**
   * Runs a request tracked for cancellation. The registration is queued with
   * `track` (the caller is authorized by then, so it cannot displace anyone's
   * entry) and travels to the registry while the handler runs; a request that
   * finishes quickly has its registration and deregistration sent together.
   *
   * If the registry fails before the handler answered, the request is
   * cancelled (its signal aborted, and a `notifications/cancelled` sent to the
   * handler so an SDK server stops it too) and the caller gets 503. If it
   * fails later, the request is stopped the same way and the failure is
   * reported to `onError`: a request the registry cannot cancel does not run.
   *
   * The registry entry is dropped once the request is cancelled or its answer
   * is over (stream ended, errored, or cancelled by a disconnecting client;
   * handler threw). The signal stays reachable through `signalFor` until the
   * answer is over, so a tool that asks late still sees the cancellation.
   */
  async #runTracked(
    request: Request,
    inner: Request,
    sid: string,
    ctx: GuardContext,
    message: Extract<RpcMessage, { kind: "request" }>,
    wrap: ResponseWrap | null,
  ): Promise<Response> {
    const controller = new AbortController();
    const signal = controller.signal;
    const key = cancelKey(sid, message.id);
    this.#inflight.set(key, signal);
    let tracked: Tracked;
    try {
      tracked = this.#cancellations.track(sid, message.id, controller);
    } catch (err) {
      this.#inflight.delete(key);
      throw new RegistryFailure(err);
    }
    const entryId = tracked.entryId;
    let released = false;
    let ended = false;
    const release = () => {
      if (released) return;
      released = true;
      this.#deregister(entryId);
    };
    const end = () => {
      if (ended) return;
      ended = true;
      signal.removeEventListener("abort", release);
      if (this.#inflight.get(key) === signal) this.#inflight.delete(key);
      release();
    };
    // A cancelled entry can never be cancelled again: drop it from the registry at once.
    signal.addEventListener("abort", release);
    let failure: { cause: unknown } | null = null;
    let answered = false;
    tracked.registered.then((ok) => {
      if (!ok) released = true; // refused (full): the request runs untracked, nothing to drop
    }, (err) => {
      // The registration may still have reached a shared store before the failure: the
      // deregistration at the end stays (it only removes a slot this entry still owns).
      failure = { cause: err };
      if (!answered || ended) return;
      // The answer is already streaming: stop the request rather than run it uncancellable.
      this.#report(err, "register");
      controller.abort(err);
      this.#cancelInner(request, sid, ctx, message.id);
    });
    let response: Response;
    try {
      response = await this.#invoke(inner, ctx, wrap);
      if (failure === null) {
        response = await this.#bindIssued(request, response, sid, ctx, message.method);
      }
    } catch (err) {
      end();
      throw err;
    }
    if (failure !== null) {
      const cause = (failure as { cause: unknown }).cause;
      controller.abort(cause);
      await response.body?.cancel().catch(() => {});
      await this.#cancelInner(request, sid, ctx, message.id);
      end();
      throw new RegistryFailure(cause);
    }
    answered = true;
    if (!isEventStream(response)) {
      end();
      return response;
    }
    return onBodyEnd(response, end);
  }

  /** Calls the handler, and applies a task gate's wrap to its answer. */
  async #invoke(inner: Request, ctx: GuardContext, wrap: ResponseWrap | null): Promise<Response> {
    const response = await this.#handler(inner, ctx);
    return wrap === null ? response : wrap(response);
  }

  /**
   * Task ownership for one request (when `options.tasks` is set): a refusal,
   * a wrap for the handler's answer (bind a created task's id; filter a task
   * list), or `null` when there is nothing to do.
   */
  async #taskGate(
    request: Request,
    message: RpcMessage,
    ctx: GuardContext,
    sid: string | null,
  ): Promise<Response | ResponseWrap | null> {
    const tasks = this.#tasks;
    if (tasks === undefined || message.kind !== "request") return null;
    const task = taskRequest(message);
    const fp = ctx.fingerprint;
    const { id, method } = message;
    switch (task.kind) {
      case "none":
        return null;
      case "invalid":
        return this.#refuse(
          "POST",
          method,
          sid,
          400,
          RpcCode.InvalidParams,
          "invalid-params",
          task.message,
          id,
        );
      case "access": {
        const name = checkMcpName(request.headers.get("mcp-name"), task.taskId, task.modern);
        if (!name.ok) {
          return this.#refuse(
            "POST",
            method,
            sid,
            400,
            RpcCode.HeaderMismatch,
            "header-mismatch",
            name.message,
            id,
          );
        }
        const owner = await registry(tasks.ownerOf(task.taskId));
        if (owner !== null ? owner === fp : !this.#strict) return null;
        if (owner === null || this.#hideOthers) {
          return this.#refuse(
            "POST",
            method,
            sid,
            404,
            RpcCode.InvalidParams,
            owner === null ? "unknown-task" : "not-task-owner",
            UNKNOWN_TASK,
            id,
          );
        }
        return this.#refuse(
          "POST",
          method,
          sid,
          403,
          RpcCode.InvalidRequest,
          "not-task-owner",
          "Forbidden: this task belongs to another principal",
          id,
        );
      }
      case "create":
        if (fp === null) return null; // attach-only, anonymous: nobody to bind it to
        return (response) =>
          watchResponse(response, id, async (reply) => {
            const taskId = taskIdOfResult(reply.result);
            if (taskId === null) return;
            const bound = await tasks.bind(taskId, fp);
            if (bound !== "bound") {
              const error = new Error(
                `could not bind task ${JSON.stringify(taskId.slice(0, 64))}: ${bound}`,
              );
              this.#report(error, "bind-task");
              throw error; // the caller must not learn a task id nobody owns
            }
          });
      case "list":
        return (response) =>
          rewriteResult(response, id, async (reply) => {
            const result = reply.result as { tasks?: unknown } | undefined;
            if (!Array.isArray(result?.tasks)) return reply;
            const listed = result.tasks as { taskId?: unknown }[];
            const owners = await Promise.all(
              listed.map((t) => isValidTaskId(t?.taskId) ? tasks.ownerOf(t.taskId) : null),
            );
            const own = listed.filter((_, i) => fp !== null && owners[i] === fp);
            return { ...reply, result: { ...result, tasks: own } };
          });
    }
  }

  #deregister(entryId: string): void {
    this.#cancellations.deregister(entryId).catch((err) => this.#report(err, "deregister"));
  }

  /** Tells the handler that a request it started is cancelled (the SDK then stops it). */
  async #cancelInner(
    request: Request,
    sid: string,
    ctx: GuardContext,
    requestId: string | number,
  ): Promise<void> {
    try {
      const headers = new Headers(request.headers);
      headers.delete("content-length");
      headers.set("mcp-session-id", sid);
      const notification = {
        jsonrpc: "2.0",
        method: "notifications/cancelled",
        params: { requestId, reason: "the session registry is unavailable" },
      };
      const response = await this.#handler(
        new Request(request.url, { method: "POST", headers, body: JSON.stringify(notification) }),
        { ...ctx, parsedBody: notification },
      );
      await response.body?.cancel().catch(() => {});
    } catch (err) {
      this.#report(err, "cancel-in-handler");
    }
  }

  async #get(request: Request, sid: string, ctx: GuardContext): Promise<Response> {
    const fp = ctx.fingerprint;
    let pinned = false;
    if (this.#strict) {
      // The owner's own stream, by the registry's memory: one round trip (the pin), not two;
      // a listening GET that reaches the handler late misses the server's requests.
      if (this.#owners.knownOwner?.(sid) !== fp) {
        const refusal = await this.#checkOwner(
          "GET",
          null,
          sid,
          fp!,
          null,
          this.#ownerOf(sid),
          this.#deletes,
        );
        if (refusal !== null) return refusal;
      }
      pinned = await registry(this.#owners.authorizeAttach(sid, fp!, { pin: true }));
      if (!pinned) return this.#notOwner("GET", null, sid, null);
    } else if (fp === null) {
      // Attach-only, anonymous: may listen only on a session nobody owns, and never claims it.
      if (await registry(this.#owners.ownerOf(sid)) !== null) {
        return this.#notOwner("GET", null, sid, null);
      }
    } else {
      pinned = await registry(this.#owners.authorizeAttach(sid, fp, { pin: true }));
      if (!pinned) {
        if (await registry(this.#owners.ownerOf(sid)) === null) return this.#full("GET", sid);
        return this.#notOwner("GET", null, sid, null);
      }
    }
    this.#decide("allow", "allowed", null, "GET", null, sid);
    if (!pinned) return await this.#handler(request, ctx);
    const unpin = () => {
      this.#owners.unpin(sid).catch((err) => this.#report(err, "unpin"));
    };
    let response: Response;
    try {
      response = await this.#handler(request, ctx);
    } catch (err) {
      unpin();
      throw err;
    }
    if (!response.ok || response.body === null) {
      unpin();
      return response;
    }
    return onBodyEnd(response, unpin);
  }

  async #delete(request: Request, sid: string, ctx: GuardContext): Promise<Response> {
    const fp = ctx.fingerprint;
    const owner = await registry(this.#owners.ownerOf(sid));
    if (this.#strict) {
      if (owner === null) return this.#unknown("DELETE", null, sid, null);
      if (owner !== fp) return this.#notOwner("DELETE", null, sid, null);
    } else if (owner !== null && owner !== fp) {
      return this.#notOwner("DELETE", null, sid, null);
    }
    this.#decide("allow", "allowed", null, "DELETE", null, sid);
    this.#deletes++;
    this.#ownerCache.delete(sid);
    const response = await this.#handler(request, ctx);
    if (response.ok || response.status === 404) {
      this.#local.delete(sid);
      // The session is over (or the handler no longer knows it): stop its requests, drop it.
      const [cancelled, forgotten] = await Promise.allSettled([
        this.#cancellations.cancelAll(sid),
        owner === null ? Promise.resolve(true) : this.#owners.forget(sid, owner),
      ]);
      if (cancelled.status === "rejected") this.#report(cancelled.reason, "cancelAll");
      if (forgotten.status === "rejected") this.#report(forgotten.reason, "forget");
    }
    return response;
  }

  /**
   * The owner of `sid` for a POST: `fp` when the registry already knows it as
   * the owner (`knownOwner`), or the owner cache holds it (`ownerCacheMs`);
   * else the registry's answer.
   */
  #lookupOwner(sid: string, fp: string): Promise<string | null> {
    // The registry's own memory of owners it confirmed (in-memory store): no round trip.
    if (this.#owners.knownOwner?.(sid) === fp) return Promise.resolve(fp);
    if (this.#ownerCacheMs > 0) {
      const hit = this.#ownerCache.get(sid);
      if (hit !== undefined && hit.fp === fp && hit.until > performance.now()) {
        return Promise.resolve(fp);
      }
    }
    return this.#ownerOf(sid);
  }

  /** `owners.ownerOf`, with a failure turned into a 503 (and never unhandled). */
  #ownerOf(sid: string): Promise<string | null> {
    const promise = registry(this.#owners.ownerOf(sid));
    promise.catch(() => {}); // a request refused before it looks must not crash the process
    return promise;
  }

  /** Strict check: `null` when `fp` owns `sid`, else the refusal to answer with. */
  async #checkOwner(
    method: string,
    rpcMethod: string | null,
    sid: string,
    fp: string,
    id: string | number | null,
    lookup: Promise<string | null>,
    epoch: number,
  ): Promise<Response | null> {
    const owner = await lookup;
    if (owner === fp) {
      // Not cached if a DELETE went through while the lookup was under way: its answer may
      // predate the session's end.
      if (epoch === this.#deletes) this.#rememberOwner(sid, fp);
      return null;
    }
    this.#ownerCache.delete(sid);
    if (owner === null) return this.#unknown(method, rpcMethod, sid, id);
    return this.#notOwner(method, rpcMethod, sid, id);
  }

  /**
   * Remembers a confirmed owner for `ownerCacheMs` (POSTs only consult it).
   * A live entry is not extended: at most `ownerCacheMs` after the registry
   * last said so, the registry is asked again.
   */
  #rememberOwner(sid: string, fp: string): void {
    if (this.#ownerCacheMs === 0) return;
    const now = performance.now();
    const live = this.#ownerCache.get(sid);
    if (live !== undefined && live.fp === fp && live.until > now) return;
    if (this.#ownerCache.size >= OWNER_CACHE_ENTRIES && !this.#ownerCache.has(sid)) {
      this.#ownerCache.clear();
    }
    this.#ownerCache.set(sid, { fp, until: now + this.#ownerCacheMs });
  }

  /**
   * Binds a session id the handler just issued to the caller. When it cannot
   * be bound, the session is closed through the handler and the caller gets
   * an error instead of the id.
   */
  async #bindIssued(
    request: Request,
    response: Response,
    sid: string | null,
    ctx: GuardContext,
    rpcMethod: string | null,
  ): Promise<Response> {
    const fp = ctx.fingerprint;
    if (sid !== null && response.status === 404) {
      this.#ownerCache.delete(sid);
      this.#local.delete(sid);
    }
    const raw = response.headers.get("mcp-session-id");
    if (raw === null || raw === sid) return response;
    const issued = sanitizeSessionId(raw);
    if (issued === null) {
      await this.#closeIssued(request, raw, response, ctx);
      return this.#refuse(
        "POST",
        rpcMethod,
        null,
        500,
        RpcCode.ServerError,
        "invalid-issued-session-id",
        "Internal error: the server issued an invalid session id; the session was closed",
      );
    }
    if (fp === null) return response; // attach-only, anonymous: nobody owns it
    let result: string;
    this.#binding.set(issued, null);
    try {
      const shared = (await this.#shared).has(fp);
      result = await this.#owners.bind(issued, fp, shared ? { shared } : undefined);
    } catch (err) {
      this.#binding.delete(issued);
      await this.#closeIssued(request, issued, response, ctx);
      throw new RegistryFailure(err);
    }
    const removed = this.#binding.get(issued) ?? null;
    this.#binding.delete(issued);
    if (result === "bound") {
      this.#rememberOwner(issued, fp);
      this.#keepLocal(issued, request.url, ctx);
      // Evicted before its reply even arrived (a flood of binds by one principal): close it.
      if (removed !== null) this.#closeRemoved(issued, removed);
      this.#decide("allow", "bound", null, "POST", rpcMethod, issued);
      return response;
    }
    await this.#closeIssued(request, issued, response, ctx);
    if (result === "full") return this.#full("POST", issued, rpcMethod);
    return this.#refuse(
      "POST",
      rpcMethod,
      issued,
      409,
      RpcCode.InvalidRequest,
      "bind-refused",
      "Conflict: the server issued a session id another principal owns; the session was closed",
    );
  }

  /** Discards a response and asks the handler to terminate the session it issued. */
  async #closeIssued(
    request: Request,
    sid: string,
    response: Response,
    ctx: GuardContext,
  ): Promise<void> {
    await response.body?.cancel().catch(() => {});
    try {
      const headers = new Headers(request.headers);
      headers.delete("content-type");
      headers.delete("content-length");
      headers.set("mcp-session-id", sid);
      const closed = await this.#handler(
        new Request(request.url, { method: "DELETE", headers }),
        { ...ctx, parsedBody: undefined, era: "legacy" },
      );
      await closed.body?.cancel().catch(() => {});
    } catch (err) {
      this.#report(err, "close-issued-session");
    }
  }

  /** Counts an allowed request as a use of its session (coalesced by the registry). */
  #touch(sid: string, fp: string): void {
    const touch = this.#owners.touch;
    if (touch === undefined) return;
    touch.call(this.#owners, sid, fp).catch((err) => this.#report(err, "touch"));
  }

  /** Remembers a session this guard bound, so it can close it when its binding goes. */
  #keepLocal(sid: string, url: string, ctx: GuardContext): void {
    if (this.#local.size >= LOCAL_SESSIONS && !this.#local.has(sid)) {
      // Oldest first: a session this old was most likely closed by its server already.
      this.#local.delete(this.#local.keys().next().value!);
    }
    this.#local.set(sid, {
      url,
      principal: this.#cacheSize === 0 ? null : ctx.principal,
      fingerprint: ctx.fingerprint,
    });
  }

  /**
   * Closes, in the handler, a session of this process whose binding was
   * evicted or expired: without it the server would keep a session nobody
   * can reach (its owner's requests now get 404), and `maxPerPrincipal`
   * would bound table rows, not live sessions. Sessions that live in
   * another process are that process's guard's to close.
   */
  #closeRemoved(sid: string, cause: "evicted" | "expired"): void {
    const local = this.#local.get(sid);
    if (local === undefined) {
      if (this.#binding.has(sid)) this.#binding.set(sid, cause);
      return;
    }
    this.#local.delete(sid);
    // As for a DELETE: an owner lookup already under way must not be cached.
    this.#deletes++;
    this.#ownerCache.delete(sid);
    const closing = (async () => {
      const headers = new Headers({ "mcp-session-id": sid });
      const ctx: GuardContext = {
        principal: local.principal,
        fingerprint: local.fingerprint,
        parsedBody: undefined,
        era: "legacy",
      };
      const [response, cancelled] = await Promise.allSettled([
        this.#handler(new Request(local.url, { method: "DELETE", headers }), ctx),
        this.#cancellations.cancelAll(sid),
      ]);
      if (cancelled.status === "rejected") this.#report(cancelled.reason, "cancelAll");
      if (response.status === "rejected") throw response.reason;
      await response.value.body?.cancel().catch(() => {});
      try {
        this.#onSessionClosed?.(sid, cause);
      } catch (err) {
        this.#report(err, "onSessionClosed");
      }
    })();
    closing.catch((err) => this.#report(err, "close-removed-session"));
  }

  /** The caller's identity and fingerprint, as the context the handler will get. */
  async #identify(request: Request): Promise<GuardContext> {
    const principal = await this.#principal(request);
    const ctx: GuardContext = {
      principal: null,
      fingerprint: null,
      parsedBody: undefined,
      era: "legacy",
    };
    if (principal === null || principal === undefined) return ctx;
    if (typeof principal !== "string") {
      throw new InvalidInputError(
        `principal() must return a string or null, got ${typeof principal}`,
      );
    }
    if (principal.trim().length === 0) return ctx;
    ctx.principal = principal;
    if (this.#cacheSize === 0) {
      ctx.fingerprint = await fingerprint(principal, { secret: this.#secret });
      return ctx;
    }
    let fp = this.#fingerprints.get(principal);
    if (fp === undefined) {
      fp = await fingerprint(principal, { secret: this.#secret });
      if (this.#fingerprints.size >= this.#cacheSize) this.#fingerprints.clear();
      this.#fingerprints.set(principal, fp);
    }
    ctx.fingerprint = fp;
    return ctx;
  }

  /**
   * A fresh request carrying the body already read. Not `new Request(request,
   * ...)`: that reads `request.signal`, and a Deno.serve request whose signal
   * was touched is aborted with a DOMException after every response (a stack
   * trace each time, and a warning). A client's disconnect still reaches the
   * handler: Deno.serve cancels the response stream it was reading.
   */
  #copy(request: Request, body: string): Request {
    return new Request(request.url, { method: "POST", headers: request.headers, body });
  }

  #notOwner(
    method: string,
    rpcMethod: string | null,
    sid: string,
    id: string | number | null,
  ): Response {
    if (this.#hideOthers) {
      return this.#refuse(
        method,
        rpcMethod,
        sid,
        404,
        RpcCode.SessionNotFound,
        "not-owner",
        UNKNOWN_SESSION,
        id,
      );
    }
    return this.#refuse(
      method,
      rpcMethod,
      sid,
      403,
      RpcCode.InvalidRequest,
      "not-owner",
      "Forbidden: this session belongs to another principal",
      id,
    );
  }

  #unknown(
    method: string,
    rpcMethod: string | null,
    sid: string,
    id: string | number | null,
  ): Response {
    return this.#refuse(
      method,
      rpcMethod,
      sid,
      404,
      RpcCode.SessionNotFound,
      "unknown-session",
      UNKNOWN_SESSION,
      id,
    );
  }

  #full(method: string, sid: string, rpcMethod: string | null = null): Response {
    return this.#refuse(
      method,
      rpcMethod,
      sid,
      503,
      RpcCode.ServerError,
      "bind-full",
      "Service Unavailable: the session table is full (every slot holds a live stream); try again later",
      null,
      { "retry-after": "5" },
    );
  }

  #problem(
    method: string,
    rpcMethod: string | null,
    sid: string | null,
    p: {
      status: number;
      code: number;
      reason: string;
      message: string;
      id: string | number | null;
    },
  ): Response {
    return this.#refuse(
      method,
      rpcMethod,
      sid,
      p.status,
      p.code,
      p.reason as GuardReason,
      p.message,
      p.id,
    );
  }

  #refuse(
    method: string,
    rpcMethod: string | null,
    sid: string | null,
    status: number,
    code: number,
    reason: GuardReason,
    message: string,
    id: string | number | null = null,
    headers?: Record<string, string>,
  ): Response {
    this.#decide("refuse", reason, status, method, rpcMethod, sid);
    return rpcError(status, code, message, id, headers);
  }

  #decide(
    outcome: "allow" | "refuse",
    reason: GuardReason,
    status: number | null,
    method: string,
    rpcMethod: string | null,
    sessionId: string | null,
  ): void {
    if (this.#onDecision === undefined) return;
    try {
      this.#onDecision({ outcome, reason, status, method, rpcMethod, sessionId });
    } catch (err) {
      this.#report(err, "onDecision");
    }
  }

  #report(error: unknown, context: string): void {
    if (this.#onError === undefined) return;
    try {
      this.#onError(error, context);
    } catch {
      // A throwing error hook must not break request handling.
    }
  }
}

function requestIdOf(message: RpcMessage): string | number | null {
  return message.kind === "notification" ? null : message.id;
}

function isEventStream(response: Response): boolean {
  const type = response.headers.get("content-type");
  return type !== null && type.toLowerCase().startsWith("text/event-stream");
}

/**
 * Wraps a Streamable HTTP MCP handler so that sessions belong to the principal
 * that initialized them, and cancellations reach only requests of their own
 * session. Returns a handler with the same signature, for `Deno.serve`, Hono,
 * or the SDK's own per-session routing.
 *
 * Rules (strict mode): a session id the handler issues is bound to the caller
 * (refused or full: the session is closed and the caller gets 409/503, never
 * the id); GET, POST and DELETE with another principal's session id get 403;
 * unknown ids 404; anonymous callers 401; malformed ids 400 before any
 * lookup; a live GET stream pins its session until it ends; DELETE by the
 * owner cancels the session's requests and forgets it; a
 * `notifications/cancelled` aborts only a request of the same session; a
 * failed registry call answers 503, never allow. Requests are tracked so
 * `signalFor(extra)` gives tool handlers an `AbortSignal`.
 *
 * @example Guard an MCP handler on Deno.serve
 * ```ts
 * import {
 *   CancellationRegistry,
 *   guardSessions,
 *   SessionOwnerRegistry,
 * } from "@mcp-guard/session";
 *
 * const owners = new SessionOwnerRegistry();
 * const cancellations = new CancellationRegistry();
 * const mcpHandler = (_request: Request) => new Response(null, { status: 202 });
 *
 * const guard = guardSessions(mcpHandler, {
 *   owners,
 *   cancellations,
 *   principal: (request) => request.headers.get("authorization"),
 * });
 *
 * const anonymous = await guard(new Request("http://localhost/mcp", { method: "GET" }));
 * console.log(anonymous.status); // 400: a GET needs Mcp-Session-Id
 * await owners.close();
 * await cancellations.close();
 * ```
 */
export function guardSessions(handler: RequestHandler, options: GuardOptions): GuardedHandler {
  const guard = new SessionGuard(handler, options);
  const guarded = guard.handle as GuardedHandler;
  guarded.signalFor = guard.signalFor;
  return guarded;
}
