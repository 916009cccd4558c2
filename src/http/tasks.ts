/**
 * Pure helpers for binding MCP task ids to the principal that created them.
 *
 * Two task designs exist. In MCP 2025-11-25 (the tasks utility) a `tools/call`
 * whose `params.task` is set creates a task, answered as
 * `{ task: { taskId, status, ... } }`, and `tasks/get`, `tasks/result`,
 * `tasks/cancel` and `tasks/list` reach it. In the 2026-07-28 tasks extension a
 * modern request (one carrying `params._meta["io.modelcontextprotocol/protocolVersion"]`)
 * may be answered with the flat `{ resultType: "task", taskId, ... }`, and
 * `tasks/get`, `tasks/update` and `tasks/cancel` reach it; on Streamable HTTP
 * those must repeat `params.taskId` in the `Mcp-Name` header.
 *
 * Nothing here calls a registry: {@linkcode taskRequest} says what the guard
 * must do with a request, {@linkcode taskIdOfResult} finds the id to bind in a
 * result, and {@linkcode checkMcpName} checks the routing header.
 *
 * @module
 */

import { deriveFromSecret } from "../core/hmac_sha256.ts";

/** Longest task id accepted, in UTF-8 bytes. */
export const MAX_TASK_ID_BYTES = 1024;

/** `_meta` key whose presence marks a 2026-07-28 ("modern") request. */
export const PROTOCOL_VERSION_META = "io.modelcontextprotocol/protocolVersion";

/** `_meta` key carrying the client capabilities of a modern request. */
export const CLIENT_CAPABILITIES_META = "io.modelcontextprotocol/clientCapabilities";

/** Extension id of the 2026-07-28 tasks extension. */
export const TASKS_EXTENSION = "io.modelcontextprotocol/tasks";

/**
 * `_meta` key naming the task a message belongs to. A request carrying it is
 * run as part of that task (the SDK queues its answer and every message it
 * sends into the task), a response carrying it answers a request the task
 * made: both are uses of the task.
 */
export const RELATED_TASK_META = "io.modelcontextprotocol/related-task";

/** The task methods that address one task by `params.taskId`. */
export const TASK_ACCESS_METHODS: ReadonlySet<string> = new Set([
  "tasks/get",
  "tasks/result",
  "tasks/cancel",
  "tasks/update",
]);

/** What the guard must do with a request, as {@linkcode taskRequest} decides. */
export type TaskRequest =
  /** A `tools/call` that may create a task: watch its result and bind the task id. */
  | { kind: "create" }
  /**
   * A request addressing one task: allow it only for the task's owner.
   * `modern` is true for a 2026-07-28 request. `serverRefuses` is true when
   * a 2026-07-28 server must refuse it whatever the task (`tasks/result`,
   * which the tasks extension removed, or a client that did not declare the
   * extension). The marker is the client's word, and a 2025-11-25 server
   * ignores it: such a request naming a task the caller does not own goes
   * on naming a task nobody was issued ({@linkcode unissuedTaskId}), so a
   * 2026-07-28 server still refuses it and an older one answers "not found"
   * (or the guard refuses another principal's task, without `hideOthers`).
   * `Mcp-Name` is required for the other modern ones.
   */
  | { kind: "access"; method: string; taskId: string; modern: boolean; serverRefuses: boolean }
  /** A task method with a missing or malformed `taskId`: refuse with `-32602`. */
  | { kind: "invalid"; message: string }
  /** `tasks/list`: filter the result down to the requester's tasks. */
  | { kind: "list" }
  /** Nothing task-related. */
  | { kind: "none" };

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

const encoder = new TextEncoder();

/**
 * True when `value` is a usable task id: a non-empty, well-formed Unicode
 * string (no lone surrogates, which UTF-8 stores would collapse into U+FFFD)
 * of at most {@linkcode MAX_TASK_ID_BYTES} UTF-8 bytes. Like session ids, task
 * ids are never trimmed or rewritten.
 */
export function isValidTaskId(value: unknown): value is string {
  if (typeof value !== "string" || value.length === 0) return false;
  // A UTF-16 unit encodes to at most 3 bytes; longer strings cannot fit.
  if (value.length > MAX_TASK_ID_BYTES) return false;
  if (!value.isWellFormed()) return false;
  return value.length * 3 <= MAX_TASK_ID_BYTES ||
    encoder.encode(value).byteLength <= MAX_TASK_ID_BYTES;
}

function metaOf(params: unknown): Record<string, unknown> | null {
  if (!isObject(params) || !isObject(params._meta)) return null;
  return params._meta;
}

/** True when `params` belong to a 2026-07-28 request (`_meta` names a protocol version). */
export function isModernRequest(params: unknown): boolean {
  return typeof metaOf(params)?.[PROTOCOL_VERSION_META] === "string";
}

/** True when a request's `_meta` client capabilities declare the tasks extension. */
function declaresTasksExtension(params: unknown): boolean {
  const capabilities = metaOf(params)?.[CLIENT_CAPABILITIES_META];
  if (!isObject(capabilities) || !isObject(capabilities.extensions)) return false;
  const tasks = capabilities.extensions[TASKS_EXTENSION];
  return tasks !== undefined && tasks !== null && tasks !== false;
}

/**
 * Says what the guard must do with a classified JSON-RPC request.
 *
 * - `tools/call` is `"create"` when it may create a task: its `params.task` is
 *   set (2025-11-25 task augmentation; any value but `undefined` counts, so a
 *   server lenient about its shape still gets its task bound), or its `_meta`
 *   client capabilities declare the tasks extension (2026-07-28: servers must
 *   not create tasks for clients that do not). Other `tools/call`s are `"none"`.
 *   Watching more than needed is safe: a result without a task binds nothing.
 * - `tasks/get`, `tasks/result`, `tasks/cancel` and `tasks/update` are
 *   `"access"` with a valid `params.taskId` (see {@linkcode isValidTaskId}),
 *   `"none"` without one (no task is named: the server answers), and
 *   `"invalid"` with a malformed one (a lenient server might coerce it). Each method is handled whichever protocol version asks:
 *   a method the server does not have gets its own "method not found" answer.
 * - `tasks/list` is `"list"`; everything else is `"none"`.
 */
export function taskRequest(
  message: { method: string; params: unknown; id?: string | number | null },
): TaskRequest {
  const { method, params } = message;
  if (method === "tools/call") {
    const augmented = isObject(params) && params.task !== undefined;
    return augmented || declaresTasksExtension(params) ? { kind: "create" } : { kind: "none" };
  }
  if (method === "tasks/list") return { kind: "list" };
  if (!TASK_ACCESS_METHODS.has(method)) return { kind: "none" };
  const taskId = isObject(params) ? params.taskId : undefined;
  // No taskId names no task: the server answers its own error (or its own method).
  if (taskId === undefined) return { kind: "none" };
  if (!isValidTaskId(taskId)) {
    return {
      kind: "invalid",
      message:
        `Invalid params: ${method} needs taskId to be a non-empty string of at most ${MAX_TASK_ID_BYTES} UTF-8 bytes`,
    };
  }
  const modern = isModernRequest(params);
  const serverRefuses = modern &&
    (method === "tasks/result" || !declaresTasksExtension(params));
  return { kind: "access", method, taskId, modern, serverRefuses };
}

/** What {@linkcode relatedTask} found. */
export type RelatedTask =
  | { kind: "none" }
  | { kind: "task"; taskId: string }
  | { kind: "invalid"; message: string };

/**
 * The task a client message says it belongs to:
 * `_meta["io.modelcontextprotocol/related-task"].taskId` of a request's or
 * notification's `params`, or of a response's `result` (or `error.data`).
 * A `taskId` that is present but not a valid task id is `"invalid"` (an SDK
 * would still use a truthy one).
 */
export function relatedTask(
  message: { params?: unknown; result?: unknown; error?: unknown },
): RelatedTask {
  let meta = metaOf(message.params) ?? metaOf(message.result);
  if (meta === null && isObject(message.error)) meta = metaOf(message.error.data);
  const related = meta?.[RELATED_TASK_META];
  if (!isObject(related) || related.taskId === undefined) return { kind: "none" };
  if (!isValidTaskId(related.taskId)) {
    return {
      kind: "invalid",
      message:
        `Invalid params: _meta["${RELATED_TASK_META}"].taskId must be a non-empty string of at most ${MAX_TASK_ID_BYTES} UTF-8 bytes`,
    };
  }
  return { kind: "task", taskId: related.taskId };
}

/**
 * How long (ms) a task lives by its creation answer (`ttl`), or `null` when
 * the answer gives none (or `null`: unlimited).
 */
export function taskTtlOfResult(result: unknown): number | null {
  if (!isObject(result)) return null;
  const ttl = result.resultType === "task"
    ? result.ttl
    : isObject(result.task)
    ? result.task.ttl
    : undefined;
  return typeof ttl === "number" && Number.isFinite(ttl) && ttl > 0 ? Math.ceil(ttl) : null;
}

/**
 * The task id a `tools/call` result creates, or `null`. Handles the flat
 * 2026-07-28 form (`{ resultType: "task", taskId }`) and the 2025-11-25 form
 * (`{ task: { taskId } }`). Ids {@linkcode isValidTaskId} refuses give `null`:
 * no later request can name them, so they need no binding.
 */
export function taskIdOfResult(result: unknown): string | null {
  if (!isObject(result)) return null;
  if (result.resultType === "task") {
    return isValidTaskId(result.taskId) ? result.taskId : null;
  }
  if (isObject(result.task)) {
    const taskId = result.task.taskId;
    return isValidTaskId(taskId) ? taskId : null;
  }
  return null;
}

/** Outcome of {@linkcode checkMcpName}. */
export type McpNameCheck =
  | { ok: true }
  | {
    ok: false;
    /** `missing`: absent on a modern request; `malformed`: a bad base64 form. */
    reason: "missing" | "malformed" | "mismatch";
    message: string;
  };

const BASE64_PREFIX = "=?base64?";
const BASE64_SUFFIX = "?=";
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * Decodes an MCP header value: `=?base64?<standard base64 of UTF-8>?=` (the
 * markers are lowercase and case-sensitive) gives the decoded text, any other
 * value is taken literally. `null` when the base64 form is malformed or does
 * not hold UTF-8.
 */
export function decodeMcpHeaderValue(value: string): string | null {
  if (
    value.length < BASE64_PREFIX.length + BASE64_SUFFIX.length ||
    !value.startsWith(BASE64_PREFIX) || !value.endsWith(BASE64_SUFFIX)
  ) {
    return value;
  }
  const payload = value.slice(BASE64_PREFIX.length, -BASE64_SUFFIX.length);
  if (!BASE64.test(payload)) return null;
  const binary = atob(payload);
  const bytes = Uint8Array.from(binary, (char) => char.charCodeAt(0));
  try {
    return new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch {
    return null;
  }
}

/**
 * Checks the `Mcp-Name` header (`headerValue`, `null` when absent) of a task
 * request against its `params.taskId`. A present header must equal the task
 * id once decoded (see {@linkcode decodeMcpHeaderValue}), whatever the
 * protocol version; an absent one is a failure only when `modern` is true,
 * since 2026-07-28 clients must send it and older ones do not.
 */
export function checkMcpName(
  headerValue: string | null,
  taskId: string,
  modern: boolean,
): McpNameCheck {
  if (headerValue === null) {
    return modern
      ? { ok: false, reason: "missing", message: "Bad Request: Mcp-Name header is required" }
      : { ok: true };
  }
  const decoded = decodeMcpHeaderValue(headerValue);
  if (decoded === null) {
    return {
      ok: false,
      reason: "malformed",
      message: "Bad Request: Mcp-Name header has a malformed base64 value",
    };
  }
  if (decoded !== taskId) {
    return {
      ok: false,
      reason: "mismatch",
      message: "Bad Request: Mcp-Name header does not match params.taskId",
    };
  }
  return { ok: true };
}

/** Start of every {@linkcode unissuedTaskId}. */
export const UNISSUED_TASK_PREFIX = "mcp-guard.unissued.";

/** What a guard's unissued task id is derived for from its secret (see `deriveFromSecret`). */
const UNISSUED_DERIVATION = "mcp-session-guard unissued task id v1";

/**
 * A task id no server issues: the prefix {@linkcode UNISSUED_TASK_PREFIX}
 * and 128 bits (32 hex digits), derived from `secret` (the same on every
 * process of a fleet), else random (fresh for each call). The guard sends
 * it in place of the id of a task the caller does not own, on a request a
 * 2026-07-28 server refuses whatever the task, so the server answers as for
 * any id nobody owns.
 */
export function unissuedTaskId(secret?: string | Uint8Array): string {
  const bytes = secret === undefined
    ? crypto.getRandomValues(new Uint8Array(16))
    : deriveFromSecret(secret, UNISSUED_DERIVATION).subarray(0, 16);
  let hex = "";
  for (const byte of bytes) hex += byte.toString(16).padStart(2, "0");
  return UNISSUED_TASK_PREFIX + hex;
}

/**
 * The `Mcp-Name` value to send once `params.taskId` is replaced by
 * `substitute`: when `headerValue` names `taskId` (decoded as
 * {@linkcode checkMcpName} does), `substitute` in the same form (base64 when
 * the client used it, else literal; `substitute` must be visible ASCII);
 * else `null`: a header that does not name the task (malformed, or another
 * name) is left as it is, and still fails a server's check as it did.
 */
export function renamedMcpName(
  headerValue: string,
  taskId: string,
  substitute: string,
): string | null {
  if (decodeMcpHeaderValue(headerValue) !== taskId) return null;
  const base64Form = headerValue !== taskId; // it decoded to taskId from the base64 form
  return base64Form ? `${BASE64_PREFIX}${btoa(substitute)}${BASE64_SUFFIX}` : substitute;
}
