/**
 * Every answer the guard gives itself, declared once: reason -> HTTP status,
 * JSON-RPC error code, message and headers. The guard names a reason; this
 * table decides what the caller sees.
 *
 * Body problems found while reading and classifying a POST (wrong media
 * type, too large, not JSON, a batch, not JSON-RPC) carry their own status,
 * code and message from `src/jsonrpc.ts`, where they are found.
 *
 * @module
 */

import { RpcCode, rpcError } from "./jsonrpc.ts";
import type { GuardReason } from "./types.ts";

/** Where a refusal happened, for the decision it reports. */
export interface At {
  method: string;
  rpcMethod?: string | null;
  sid?: string | null;
  id?: string | number | null;
}

/** How one refusal is answered. `message` may depend on a detail (a method, a parser's words). */
export interface RefusalSpec {
  status: number;
  code: number;
  message: string | ((detail: string) => string);
  headers?: Readonly<Record<string, string>>;
  /**
   * `true`: the answer's `id` is `null` whatever the request's id, as the
   * transport-level answer a server gives before reading the message.
   */
  nullId?: boolean;
}

/**
 * An unknown session, answered byte for byte as the MCP SDK's own transport
 * answers a session id it does not know (404, `-32001`, `"id": null`). A
 * client tells an ended session from a failed request by this answer:
 * `@ai-sdk/mcp` calls `onSessionExpired` and drops the session id only for a
 * 404 whose body is not a JSON-RPC error for its request (`"id": null` is not
 * one, by its schema; the request's own id is), and the SDK clients surface
 * the 404 to the application, which opens a new session.
 */
const UNKNOWN_SESSION = "Session not found";

const UNKNOWN_TASK = "Invalid params: no task with this taskId; it may have expired";

/** The refusals the guard decides itself (body problems come with their own answer). */
export const REFUSALS = {
  "method-not-allowed": {
    status: 405,
    code: RpcCode.ServerError,
    message: (method) =>
      `Method Not Allowed: ${method.slice(0, 32)}; an MCP endpoint takes POST, GET and DELETE`,
    headers: { allow: "GET, POST, DELETE" },
  },
  "invalid-session-id": {
    status: 400,
    code: RpcCode.InvalidRequest,
    message: "Bad Request: Mcp-Session-Id must be 1 to 256 visible ASCII characters (0x21-0x7E)",
  },
  "unknown-event-id": {
    status: 400,
    code: RpcCode.ServerError,
    message:
      "Bad Request: Last-Event-ID is not an event id of this session; reconnect without Last-Event-ID",
  },
  "task-event-id": {
    status: 400,
    code: RpcCode.ServerError,
    message:
      "Bad Request: Last-Event-ID names a task list or task-creating answer, which is not resumed; send the request again",
  },
  anonymous: {
    status: 401,
    code: RpcCode.InvalidRequest,
    message:
      "Unauthorized: this MCP server needs an identified caller; anonymous callers cannot use sessions",
    headers: { "www-authenticate": "Bearer" },
  },
  unauthenticated: {
    status: 401,
    code: RpcCode.InvalidRequest,
    message: "Unauthorized: the credentials were not accepted",
  },
  "principal-error": {
    status: 503,
    code: RpcCode.ServerError,
    message: "Service Unavailable: could not identify the caller",
    headers: { "retry-after": "1" },
  },
  "principal-invalid": {
    status: 500,
    code: RpcCode.InternalError,
    message: "Internal Server Error: the server could not name the caller; see the server log",
  },
  "unsupported-media-type": {
    status: 415,
    code: RpcCode.ServerError,
    message: "Unsupported Media Type: Content-Type must be application/json",
  },
  "client-aborted": {
    status: 400,
    code: RpcCode.InvalidRequest,
    message: "Bad Request: the request body could not be read to its end",
  },
  "not-owner": {
    status: 403,
    code: RpcCode.InvalidRequest,
    message: "Forbidden: this session belongs to another principal",
  },
  "unknown-session": {
    status: 404,
    code: RpcCode.SessionNotFound,
    message: UNKNOWN_SESSION,
    nullId: true,
  },
  "invalid-request": {
    status: 400,
    code: RpcCode.InvalidRequest,
    message: (detail) => detail,
  },
  "insufficient-scope": {
    status: 403,
    code: RpcCode.InvalidRequest,
    message: (scopes) =>
      "Forbidden: insufficient scope: this session was opened with a credential that has " +
      (scopes === "" ? "other scopes" : `the scopes ${scopes}`) +
      "; present a credential with them (see WWW-Authenticate)",
  },
  "other-client": {
    status: 403,
    code: RpcCode.InvalidRequest,
    message: "Forbidden: this session was opened by another client",
  },
  // The session cannot be checked, so it cannot be used: the client opens a new one.
  "credentials-missing": {
    status: 404,
    code: RpcCode.SessionNotFound,
    message: UNKNOWN_SESSION,
  },
  // A request id already in flight in the session: MCP forbids reusing it, and an SDK server
  // would send the earlier request's answer on this request's stream.
  "duplicate-request-id": {
    status: 400,
    code: RpcCode.InvalidRequest,
    message: (id) =>
      `Invalid Request: request id ${id} is already in use in this session ` +
      "(a request with it is still in flight); a request id must not be reused",
  },
  "invalid-params": {
    status: 400,
    code: RpcCode.InvalidParams,
    message: (detail) => detail,
  },
  "header-mismatch": {
    status: 400,
    code: RpcCode.HeaderMismatch,
    message: (detail) => detail,
  },
  "not-task-owner": {
    status: 403,
    code: RpcCode.InvalidRequest,
    message: "Forbidden: this task belongs to another principal",
  },
  "unknown-task": {
    status: 404,
    code: RpcCode.InvalidParams,
    message: UNKNOWN_TASK,
  },
  "bind-refused": {
    status: 409,
    code: RpcCode.InvalidRequest,
    message:
      "Conflict: the server issued a session id another principal owns; the session was closed",
  },
  "bind-full": {
    status: 503,
    code: RpcCode.ServerError,
    message:
      "Service Unavailable: the session table is full (every slot holds a live stream); try again later",
    headers: { "retry-after": "5" },
  },
  "invalid-issued-session-id": {
    status: 500,
    code: RpcCode.ServerError,
    message: "Internal error: the server issued an invalid session id; the session was closed",
  },
  "registry-unavailable": {
    status: 503,
    code: RpcCode.ServerError,
    message: "Service Unavailable: the session registry is unavailable; try again",
    headers: { "retry-after": "1" },
  },
  "registry-misconfigured": {
    status: 500,
    code: RpcCode.InternalError,
    message: "Internal Server Error: the session registry is misconfigured; see the server log",
  },
} as const satisfies Partial<Record<GuardReason, RefusalSpec>>;

/** A reason the guard refuses with from {@linkcode REFUSALS}. */
export type RefusalReason = keyof typeof REFUSALS;

/**
 * The answer for `reason`. With `as`, the caller sees another reason's
 * answer (another principal's session answered exactly as an unknown one,
 * with `notOwnerStatus: 404`); `headers` adds or overrides headers (a
 * challenge).
 */
export function refusalResponse(
  reason: RefusalReason,
  id: string | number | null,
  detail = "",
  options: { as?: RefusalReason; headers?: Record<string, string> } = {},
): { status: number; response: Response } {
  const spec: RefusalSpec = REFUSALS[options.as ?? reason];
  const message = typeof spec.message === "function" ? spec.message(detail) : spec.message;
  const headers = options.headers === undefined
    ? spec.headers
    : { ...spec.headers, ...options.headers };
  return {
    status: spec.status,
    response: rpcError(
      spec.status,
      spec.code,
      message,
      spec.nullId === true ? null : id,
      headers as Record<string, string>,
    ),
  };
}
