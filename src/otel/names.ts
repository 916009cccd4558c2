/**
 * Names of the guard's instruments and attributes, and the bounded values a
 * metric label may take: a label fed by a request (an HTTP method, a
 * JSON-RPC method) keeps to a fixed list, anything else is `_OTHER`, so a
 * client cannot create series at will.
 *
 * Semantic conventions where they exist: `http.request.method`,
 * `http.response.status_code`, `error.type`, and MCP's `mcp.method.name`
 * for the JSON-RPC method (MCP's conventions recommend it over the generic
 * `rpc.*` ones). The guard's own attributes live under `mcp_guard.`.
 *
 * @module
 */

import { Op } from "../actor/protocol.ts";

/** Attribute keys. */
export const ATTR = {
  outcome: "mcp_guard.outcome",
  reason: "mcp_guard.reason",
  registry: "mcp_guard.registry",
  store: "mcp_guard.store",
  operation: "mcp_guard.operation",
  cause: "mcp_guard.cause",
  origin: "mcp_guard.cancel.origin",
  errorContext: "mcp_guard.error.context",
  principal: "mcp_guard.principal",
  session: "mcp_guard.session",
  task: "mcp_guard.task",
  handle: "mcp_guard.handle",
  httpMethod: "http.request.method",
  httpStatus: "http.response.status_code",
  errorType: "error.type",
  mcpMethod: "mcp.method.name",
} as const;

/** Instrument names. */
export const METRIC = {
  decisions: "mcp_guard.decisions",
  duration: "mcp_guard.request.duration",
  registryDuration: "mcp_guard.registry.operation.duration",
  registryFailures: "mcp_guard.registry.failures",
  queueDepth: "mcp_guard.registry.queue.depth",
  oldestCall: "mcp_guard.registry.queue.oldest_age",
  restarts: "mcp_guard.registry.restarts",
  bindings: "mcp_guard.bindings",
  pinned: "mcp_guard.bindings.pinned",
  removed: "mcp_guard.bindings.removed",
  tracked: "mcp_guard.requests.tracked",
  cancellations: "mcp_guard.cancellations",
  handlesRefused: "mcp_guard.handles.refused",
  errors: "mcp_guard.errors",
  auditDropped: "mcp_guard.audit.dropped",
} as const;

/** The event name of a refusal record (log records and JSON lines). */
export const REFUSAL_EVENT = "mcp_guard.refusal";

/** Stands for any value outside a bounded list. */
export const OTHER = "_OTHER";

const HTTP_METHODS: ReadonlySet<string> = new Set([
  "GET",
  "POST",
  "DELETE",
  "HEAD",
  "OPTIONS",
  "PUT",
  "PATCH",
  "CONNECT",
  "TRACE",
]);

/** The MCP methods (2025-11-25 and 2026-07-28) a metric may name. */
const MCP_METHODS: ReadonlySet<string> = new Set([
  "initialize",
  "ping",
  "server/discover",
  "tools/list",
  "tools/call",
  "resources/list",
  "resources/templates/list",
  "resources/read",
  "resources/subscribe",
  "resources/unsubscribe",
  "prompts/list",
  "prompts/get",
  "completion/complete",
  "logging/setLevel",
  "sampling/createMessage",
  "elicitation/create",
  "roots/list",
  "tasks/get",
  "tasks/result",
  "tasks/list",
  "tasks/cancel",
  "tasks/update",
  "subscriptions/listen",
  "notifications/initialized",
  "notifications/cancelled",
  "notifications/progress",
  "notifications/message",
  "notifications/roots/list_changed",
  "notifications/resources/updated",
  "notifications/resources/list_changed",
  "notifications/tools/list_changed",
  "notifications/prompts/list_changed",
  "notifications/tasks/status",
  "notifications/elicitation/complete",
]);

/** `method` as a label: a known HTTP method, else `_OTHER`. */
export function httpMethod(method: string): string {
  return HTTP_METHODS.has(method) ? method : OTHER;
}

/** A JSON-RPC method as a label: a known MCP method, else `_OTHER`. */
export function mcpMethod(method: string): string {
  return MCP_METHODS.has(method) ? method : OTHER;
}

/** An error's class as `error.type`: its `name` when it looks like one, else `_OTHER`. */
export function errorType(error: unknown): string {
  const name = (error as { name?: unknown } | null)?.name;
  return typeof name === "string" && /^[A-Za-z][A-Za-z0-9_]{0,63}$/.test(name) ? name : OTHER;
}

/** Operation names by opcode (the facade methods that send them). */
export const OPERATIONS: Readonly<Record<number, string>> = {
  [Op.Bind]: "bind",
  [Op.Attach]: "authorizeAttach",
  [Op.Forget]: "forget",
  [Op.OwnerOf]: "ownerOf",
  [Op.Pin]: "pin",
  [Op.Unpin]: "unpin",
  [Op.OwnerSize]: "size",
  [Op.OwnerStats]: "stats",
  [Op.Touch]: "touch",
  [Op.Register]: "register",
  [Op.Deregister]: "deregister",
  [Op.Cancel]: "cancel",
  [Op.CancelAll]: "cancelAll",
  [Op.CancelSize]: "size",
  [Op.CancelStats]: "stats",
};
