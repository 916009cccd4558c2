/**
 * The HTTP guard's public types: its options, the context it hands the
 * handler, the decisions it reports, and the request references
 * `signalFor` takes.
 *
 * @module
 */

import type { CancellationRegistry } from "../registry/cancellation_registry.ts";
import type { SessionOwnerRegistry } from "../registry/session_owner_registry.ts";

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
 * Who is calling, as `principal()` may answer besides a plain string: the
 * verified subject, and what its credential allows (the `scope` claim of
 * an OAuth access token, split on spaces; the OAuth client it was issued
 * to). A string `principal()` answer is the same as `{ subject }`.
 *
 * Ownership follows the `subject` alone: `{ subject: "alice", scopes:
 * ["mcp:read"] }` owns the sessions `"alice"` opened. What the credential
 * that opened a session allowed binds the session too (strict mode; the
 * guard's `credentials` option): a later request of the session whose
 * credential lacks one of those scopes is answered 403 with
 * `WWW-Authenticate: Bearer error="insufficient_scope", scope="..."` (the
 * step-up challenge MCP clients follow), and one from another `clientId`
 * 403 too (`matchClientId`). A session opened without scopes or client id
 * asks nothing more.
 *
 * `scopes`: at most 64 distinct scope tokens (RFC 6749: 1 to 256 visible
 * ASCII characters but `"` and `\`, no spaces); `clientId`: a non-blank,
 * well-formed string of at most 1,024 UTF-8 bytes without control
 * characters. Anything else (or any other key) is a bug: answered 500
 * (`"principal-invalid"`), the cause in `onError`.
 *
 * @example Alice's read-only token cannot use the session her write token opened
 * ```ts
 * import assert from "node:assert/strict";
 * import {
 *   CancellationRegistry,
 *   guardSessions,
 *   type Principal,
 *   SessionOwnerRegistry,
 * } from "@mcp-guard/session";
 *
 * // Stands for a verified access token: its subject, scopes and client.
 * const tokens: Record<string, Principal> = {
 *   "alice-write": { subject: "alice", scopes: ["mcp:read", "mcp:write"], clientId: "app" },
 *   "alice-read": { subject: "alice", scopes: ["mcp:read"], clientId: "app" },
 * };
 * await using owners = new SessionOwnerRegistry();
 * await using cancellations = new CancellationRegistry();
 * // A stand-in for an MCP server: initialize opens session "s-1".
 * const mcpHandler = (request: Request) =>
 *   new Response(null, {
 *     status: 202,
 *     headers: request.headers.has("mcp-session-id") ? {} : { "mcp-session-id": "s-1" },
 *   });
 * const guard = guardSessions(mcpHandler, {
 *   owners,
 *   cancellations,
 *   principal: (request) => tokens[request.headers.get("authorization") ?? ""] ?? null,
 * });
 * const post = (token: string, sessionId?: string) =>
 *   guard(
 *     new Request("http://localhost/mcp", {
 *       method: "POST",
 *       headers: {
 *         authorization: token,
 *         "content-type": "application/json",
 *         ...(sessionId === undefined ? {} : { "mcp-session-id": sessionId }),
 *       },
 *       body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "ping" }),
 *     }),
 *   );
 *
 * assert.equal((await post("alice-write")).headers.get("mcp-session-id"), "s-1");
 * const read = await post("alice-read", "s-1");
 * assert.equal(read.status, 403);
 * assert.equal(
 *   read.headers.get("www-authenticate"),
 *   'Bearer error="insufficient_scope", scope="mcp:read mcp:write"',
 * );
 * assert.equal((await post("alice-write", "s-1")).status, 202);
 * ```
 */
export interface Principal {
  /** The verified identity (a token's `sub`): what owns sessions, as a string answer does. */
  subject: string;
  /** What the credential allows (a token's `scope` claim, split on spaces). */
  scopes?: readonly string[];
  /** The OAuth client the credential was issued to (a token's `client_id`). */
  clientId?: string;
}

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
  /**
   * The identity `principal()` returned (its `subject`, for a
   * {@linkcode Principal}), or `null` for an anonymous caller (attach-only
   * mode).
   */
  principal: string | null;
  /**
   * The credential's scopes, when `principal()` answered a
   * {@linkcode Principal} with some: distinct, sorted.
   */
  scopes?: readonly string[];
  /** The credential's OAuth client, when `principal()` answered a {@linkcode Principal} with one. */
  clientId?: string;
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
export type GuardTaskOwners =
  & Pick<SessionOwnerRegistry, "bind" | "ownerOf">
  & Partial<Pick<SessionOwnerRegistry, "touch">>;

/**
 * Where the guard keeps what the credential that opened each session
 * allowed: the {@linkcode SessionOwnerRegistry} calls it makes (a registry
 * of its own, one record per session, keyed by session id).
 */
export type GuardCredentialOwners =
  & Pick<SessionOwnerRegistry, "bind" | "ownerOf" | "forget" | "pin" | "unpin">
  & Partial<Pick<SessionOwnerRegistry, "knownOwner" | "touch" | "onRemoved">>;

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
  /**
   * 400: a GET's `Last-Event-ID` is not an event id the guard sent in this
   * session: another session's, altered, without the guard's tag, or tagged
   * by a guard with another key (another `secret`, or a restart without one).
   */
  | "unknown-event-id"
  /**
   * 400: a GET's `Last-Event-ID` is an event id of a stream the task rules
   * acted on (a `tasks/list` answer, a task-creating answer): an event
   * store would replay the handler's answer before the guard filtered the
   * list, sealed its cursor or bound the task. The client asks again.
   */
  | "task-event-id"
  /** 401: strict mode and `principal()` answered `null`. */
  | "anonymous"
  /** 401: `principal()` threw an `UnauthenticatedError` (a bad or expired credential). */
  | "unauthenticated"
  /** 503: `principal()` threw anything but an `UnauthenticatedError` or an `InvalidInputError`. */
  | "principal-error"
  /**
   * 500: `principal()` answered something that cannot name one caller: not
   * a string or `null`, blank, ill-formed Unicode (a lone surrogate), or a
   * stringified `null`/`undefined`/object; the error naming the cause goes
   * to `onError`.
   */
  | "principal-invalid"
  /** 400: the client went away (or broke off) while sending the body. */
  | "client-aborted"
  /** 403 (or 404 with `notOwnerStatus: 404`): the session belongs to another principal. */
  | "not-owner"
  /** 404: strict mode and the session id is bound to nobody. */
  | "unknown-session"
  /**
   * 403: the credential lacks a scope the session was opened with (strict
   * mode); `WWW-Authenticate: Bearer error="insufficient_scope",
   * scope="<the session's scopes>"` tells the client which to step up to.
   */
  | "insufficient-scope"
  /** 403: the session was opened by another OAuth client of the same subject (`matchClientId`). */
  | "other-client"
  /**
   * 404, answered as an unknown session: the session is bound, but the
   * record of the credential that opened it is gone (evicted, or the
   * session was opened by a guard that kept none): it cannot be checked,
   * so it cannot be used; the client opens a new one.
   */
  | "credentials-missing"
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
  /**
   * 400 (`-32600`): a request of a session whose id is that of a request of
   * the same session still in flight (until its answer ends). MCP forbids
   * reusing a request id in a session; an SDK server would send the earlier
   * request's answer on this request's stream, past the task rules (a
   * `tasks/list` answer unfiltered). The same id once the earlier request
   * ended is the client's business and goes on.
   */
  | "duplicate-request-id"
  /** 400: malformed params (a cancellation's `requestId`). */
  | "invalid-params"
  /** 400: a task request whose `Mcp-Name` header does not match its `params.taskId`. */
  | "header-mismatch"
  /**
   * 403 (or 404 with `notOwnerStatus: 404`): the task belongs to another
   * principal. Also an allow (status `null`) with `notOwnerStatus: 404`, on a
   * 2026-07-28 request a server refuses whatever the task (`tasks/result`,
   * `tasks/*` without the tasks extension): the handler got it with the task
   * id replaced by one nobody was issued.
   */
  | "not-task-owner"
  /**
   * 404: the task id is bound to nobody. Also an allow (status `null`) on a
   * 2026-07-28 request a server refuses whatever the task: the handler got it
   * with the task id replaced by one nobody was issued.
   */
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
   * or `null` for anonymous. Only its fingerprint is stored. Identities are
   * compared losslessly (as UTF-8 of a well-formed string); an answer that
   * cannot name one caller (blank, a lone surrogate, `"null"`,
   * `"undefined"`) is a bug, answered 500 (`"principal-invalid"`) with the
   * cause in `onError`.
   *
   * Answer a {@linkcode Principal} (`{ subject, scopes, clientId }`) to
   * bind each session to what the credential that opened it allowed, too.
   *
   * Throw {@linkcode UnauthenticatedError} for a credential that is bad or
   * expired: the caller gets 401 with its `challenge` as `WWW-Authenticate`.
   * Anything else it throws means "cannot tell right now" (a key server is
   * down): 503 with `Retry-After`, and the error goes to `onError`.
   */
  principal: (
    request: Request,
  ) => string | Principal | null | undefined | Promise<string | Principal | null | undefined>;
  /**
   * Identities, as `principal()` returns them, that stand for many clients
   * (a shared master key): their sessions are bounded by the owner
   * registry's `maxPerSharedPrincipal` instead of `maxPerPrincipal`, and
   * never evict another principal's session. The guard fingerprints them
   * with its `secret`; the registry never sees them raw.
   *
   * @default {[]}
   */
  sharedPrincipals?: readonly string[];
  /**
   * HMAC secret for fingerprints and for the tags of SSE event ids (same on
   * every process of a cluster). Without it, fingerprints are plain SHA-256
   * and event ids are tagged with a random key of this guard: a client can
   * resume a stream only through the process (and the run) that sent it.
   */
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
   * How far a GET's `Last-Event-ID` may resume a stream (MCP resumability,
   * SEP-1699 polling). The guard appends to every SSE event id it forwards
   * (a POST's SSE answer, a GET's stream) a tag for the session:
   * `<id>.<r|l|t><22 characters>`, which clients store and send back as
   * they are (without a session: a tag for the caller, or for every
   * anonymous caller together). A `Last-Event-ID` must carry this session's
   * tag, or the GET is refused (400, `"unknown-event-id"`) before the
   * handler sees it: an event store shared by sessions can then never
   * replay one session's events into another. The handler gets the id it
   * wrote. An id of a stream the task rules acted on (`t`: a `tasks/list`
   * answer, a task-creating answer) is refused in every mode but
   * `"unchecked"` (400, `"task-event-id"`): the store keeps the handler's
   * answer from before those rules.
   *
   * - `"requests"`: an id from a request's stream (a POST's SSE answer, or
   *   a GET resuming one) resumes it; an id from a listening stream opens a
   *   fresh listening stream (the handler gets the GET without
   *   `Last-Event-ID`). The SDK names every session's listening stream
   *   `_GET_stream`, so a store shared by sessions would replay other
   *   sessions' notifications there; what the server sent while the
   *   listener was away is not replayed.
   * - `"all"`: every id resumes its stream, listening streams too. Only for
   *   event stores that keep sessions apart (one store per session, or
   *   stream ids that include the session).
   * - `"unchecked"`: ids pass untagged and `Last-Event-ID` unchecked (any
   *   session's events can be replayed into any other's through a shared
   *   store).
   *
   * @default {"requests"}
   */
  resumption?: "requests" | "all" | "unchecked";
  /**
   * Task ownership (MCP 2025-11-25 tasks utility and the 2026-07-28 tasks
   * extension), on by default. The guard binds the task id of every answer
   * that creates a task to the caller before the caller can read it (for at
   * least the task's own `ttl`; each use refreshes it), refuses every
   * reference to another principal's task (`params.taskId` of `tasks/get`,
   * `tasks/result`, `tasks/update`, `tasks/cancel`, and
   * `_meta["io.modelcontextprotocol/related-task"]` on any message) and to a
   * task bound to nobody, checks `Mcp-Name` against `params.taskId`, keeps a
   * `tasks/list` answer to the caller's own tasks and seals its cursor to
   * the caller. A 2026-07-28 request a server must refuse whatever the task
   * (`tasks/result`, `tasks/*` without the tasks extension) naming a task
   * the caller does not own (bound to nobody, or another principal's with
   * `notOwnerStatus: 404`) reaches the handler with a task id nobody was
   * issued instead, in `params.taskId` and in an `Mcp-Name` naming it: a
   * 2025-11-25 server, which ignores the era marker, answers "not found".
   *
   * By default the bindings live in a registry made from `owners` (its
   * options and store, under a key space of its own: prefix + `t:` on
   * Redis, + `:t` on Deno KV; in memory, a table of its own in the owners'
   * worker, made on the first task request), closed with `owners`. Pass a registry to choose;
   * `false` lets task requests through unchecked (only for a server whose
   * task store already scopes tasks to their creator). Required when
   * `owners` is not a `SessionOwnerRegistry`.
   *
   * @default {a registry derived from `owners`}
   */
  tasks?: GuardTaskOwners | false;
  /**
   * Scope-bound sessions (strict mode), on by default: the guard keeps, for
   * every session an `initialize` opened, what the credential that opened
   * it allowed (a {@linkcode Principal}'s `scopes` and `clientId`; nothing
   * for a string answer), and checks every later GET, POST and DELETE of
   * the session against it: a credential without one of those scopes gets
   * 403 `"insufficient-scope"`, one of another client 403 `"other-client"`
   * (see `matchClientId`). Credentials with the same or more scopes pass.
   * A session whose record is gone (or that a guard without records
   * opened) is refused as unknown (404 `"credentials-missing"`): never
   * let through unchecked.
   *
   * By default the records live in a registry made from `owners` (its
   * store and idle expiry, under a key space of its own: prefix + `s:` on
   * Redis, + `:s` on Deno KV, in memory a table of its own in the owners'
   * worker; an LRU of twice `maxEntries`), closed with `owners`. Pass a registry to choose;
   * `false` binds sessions to the subject alone (scopes and client ids are
   * ignored). Required in strict mode when `owners` is not a
   * `SessionOwnerRegistry`.
   *
   * @default {a registry derived from `owners`}
   */
  credentials?: GuardCredentialOwners | false;
  /**
   * Whether a session opened by a credential with a `clientId` refuses
   * credentials of any other client (or of none), 403 `"other-client"`:
   * another OAuth client of the same user does not get into it. `false`
   * binds sessions to the subject and scopes only.
   *
   * @default {true}
   */
  matchClientId?: boolean;
  /**
   * The absolute http(s) URL of this server's OAuth 2.0 Protected Resource
   * Metadata (RFC 9728). The challenges the guard makes itself (401
   * `"anonymous"`, 403 `"insufficient-scope"`) carry it as
   * `resource_metadata="..."`, which MCP clients read to find where to get
   * a token (or a token with more scopes).
   */
  resourceMetadata?: string | URL;
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
