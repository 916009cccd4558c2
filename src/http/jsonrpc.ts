/**
 * JSON-RPC body handling for the HTTP guard: reading a POST body within a size
 * limit, classifying the one message it carries, and building the JSON-RPC
 * error responses the guard answers with.
 *
 * The guard refuses what it cannot reason about instead of guessing: batch
 * bodies (removed from MCP in 2025-06-18) and messages that are neither a
 * request, a notification nor a response. It does not decide which methods
 * exist, nor which ids are valid: every method name and id reaches the
 * handler, which answers unknown methods and invalid ids itself.
 *
 * @module
 */

/** JSON-RPC error codes the guard uses. */
export const RpcCode = {
  /** Invalid JSON. */
  ParseError: -32700,
  /** Not a valid JSON-RPC message, or refused by the session rules. */
  InvalidRequest: -32600,
  /** Malformed params (e.g. a cancellation's `requestId`). */
  InvalidParams: -32602,
  /** The server failed (a misconfigured registry). */
  InternalError: -32603,
  /** Transport-level refusal (method not allowed, media type, size, unavailable). */
  ServerError: -32000,
  /** An MCP header does not match the body (MCP 2026-07-28). */
  HeaderMismatch: -32020,
  /** The session is unknown (same code as the MCP SDK uses). */
  SessionNotFound: -32001,
} as const;

/** One JSON-RPC message, classified. */
export type RpcMessage =
  /**
   * `id` is `null` when the message's id is not a JSON-RPC id (`null`, `true`, an object, a
   * number JSON parses as infinite): the handler answers such a request itself.
   */
  | { kind: "request"; id: string | number | null; method: string; params: unknown }
  | { kind: "notification"; method: string; params: unknown }
  | { kind: "response"; id: string | number | null; result: unknown; error: unknown };

/** Why a body was refused, with the HTTP status and JSON-RPC error to answer. */
export interface RpcProblem {
  kind: "problem";
  /** HTTP status. */
  status: number;
  /** JSON-RPC error code. */
  code: number;
  /** Human-readable message naming the problem. */
  message: string;
  /** Short machine-readable reason, for logs and metrics. */
  reason: string;
  /** The message's id when one could be read, else `null`. */
  id: string | number | null;
}

function problem(
  status: number,
  code: number,
  reason: string,
  message: string,
  id: string | number | null = null,
): RpcProblem {
  return { kind: "problem", status, code, message, reason, id };
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * True for what JSON-RPC allows as a request id: any string, or a finite number. Some of them
 * are not tracked for cancellation (`isValidRequestId` in `src/core/validate.ts`: ill-formed
 * Unicode, over 1,024 UTF-8 bytes): those requests still reach the handler, untracked.
 */
function isRequestId(value: unknown): value is string | number {
  return typeof value === "string" || (typeof value === "number" && Number.isFinite(value));
}

/**
 * Classifies a parsed body. Any method name passes: which methods exist is
 * the handler's business (it answers `-32601` itself); the guard only reads
 * the few it treats specially.
 */
export function classify(value: unknown): RpcMessage | RpcProblem {
  if (Array.isArray(value)) {
    return problem(
      400,
      RpcCode.InvalidRequest,
      "batch",
      "Invalid Request: JSON-RPC batches are not supported; send one message per POST",
    );
  }
  if (!isObject(value)) {
    return problem(
      400,
      RpcCode.InvalidRequest,
      "invalid-request",
      "Invalid Request: the body must be one JSON-RPC message object",
    );
  }
  const hasId = "id" in value;
  const rawId = value.id;
  const id = isRequestId(rawId) ? rawId : null;
  if (value.jsonrpc !== "2.0") {
    return problem(
      400,
      RpcCode.InvalidRequest,
      "invalid-request",
      'Invalid Request: "jsonrpc" must be "2.0"',
      id,
    );
  }
  const method = value.method;
  if (method === undefined) {
    if (("result" in value) !== ("error" in value) && hasId) {
      return { kind: "response", id, result: value.result, error: value.error };
    }
    return problem(
      400,
      RpcCode.InvalidRequest,
      "invalid-request",
      "Invalid Request: a message needs a method (request, notification) or an id with exactly one of result and error (response)",
      id,
    );
  }
  if (typeof method !== "string" || method.length === 0) {
    return problem(
      400,
      RpcCode.InvalidRequest,
      "invalid-request",
      "Invalid Request: method must be a non-empty string",
      id,
    );
  }
  if (value.params !== undefined && !isObject(value.params)) {
    return problem(
      400,
      RpcCode.InvalidParams,
      "invalid-params",
      "Invalid params: params must be an object",
      id,
    );
  }
  if (hasId) return { kind: "request", id: id!, method, params: value.params };
  // A notifications/cancelled naming an id the guard never tracks (not a string or number, or
  // one no registry keys) matches nothing here, and is still the handler's to answer.
  return { kind: "notification", method, params: value.params };
}

/** Decodes a whole body (no streaming state: shared by every request). */
const utf8 = new TextDecoder();

/** Outcome of {@linkcode readBody}: the text, or the problem to answer with. */
export type BodyResult = { kind: "text"; text: string } | RpcProblem;

function tooLarge(maxBytes: number): RpcProblem {
  return problem(
    413,
    RpcCode.ServerError,
    "body-too-large",
    `Payload Too Large: the body must not exceed ${maxBytes} bytes`,
  );
}

/**
 * Reads a request body as UTF-8 text, refusing more than `maxBytes`: a
 * declared `Content-Length` over the limit is refused without reading, and a
 * body without one stops being read as soon as it passes the limit.
 */
export async function readBody(request: Request, maxBytes: number): Promise<BodyResult> {
  const declared = request.headers.get("content-length");
  if (declared !== null) {
    const length = Number(declared);
    if (!Number.isSafeInteger(length) || length < 0) {
      return problem(
        400,
        RpcCode.InvalidRequest,
        "invalid-request",
        "Bad Request: invalid Content-Length",
      );
    }
    if (length > maxBytes) {
      await request.body?.cancel().catch(() => {});
      return tooLarge(maxBytes);
    }
    // The HTTP server delivers exactly Content-Length bytes.
    return { kind: "text", text: await request.text() };
  }
  if (request.body === null) return { kind: "text", text: "" };
  const reader = request.body.getReader();
  const first = await reader.read();
  if (first.done) return { kind: "text", text: "" };
  const chunk = first.value;
  let received = chunk.byteLength;
  if (received > maxBytes) {
    await reader.cancel().catch(() => {});
    return tooLarge(maxBytes);
  }
  let next = await reader.read();
  // Most bodies come as one chunk: decoded as is, without a streaming decoder.
  if (next.done) return { kind: "text", text: utf8.decode(chunk) };
  const chunks = [chunk];
  do {
    received += next.value.byteLength;
    if (received > maxBytes) {
      await reader.cancel().catch(() => {});
      return tooLarge(maxBytes);
    }
    chunks.push(next.value);
    next = await reader.read();
  } while (!next.done);
  // Decoding the bytes at once reads them exactly as a streaming decoder would.
  const bytes = new Uint8Array(received);
  let at = 0;
  for (const part of chunks) {
    bytes.set(part, at);
    at += part.byteLength;
  }
  return { kind: "text", text: utf8.decode(bytes) };
}

/**
 * Parses body text as JSON, or returns the `-32700` problem. Never throws.
 */
export function parseJson(text: string): { kind: "json"; value: unknown } | RpcProblem {
  try {
    return { kind: "json", value: JSON.parse(text) };
  } catch {
    return problem(
      400,
      RpcCode.ParseError,
      "parse-error",
      "Parse error: the body is not valid JSON",
    );
  }
}

/** True when a `Content-Type` header value names JSON (`application/json`, any parameters). */
export function isJsonMediaType(value: string | null): boolean {
  if (value === null) return false;
  if (value === "application/json") return true; // as clients send it
  const semi = value.indexOf(";");
  const essence = (semi === -1 ? value : value.slice(0, semi)).trim().toLowerCase();
  return essence === "application/json";
}

/**
 * A JSON-RPC error response: `{ jsonrpc: "2.0", error: { code, message }, id }`
 * with the given HTTP status and extra headers.
 */
export function rpcError(
  status: number,
  code: number,
  message: string,
  id: string | number | null = null,
  headers?: Record<string, string>,
): Response {
  return new Response(
    JSON.stringify({ jsonrpc: "2.0", error: { code, message }, id }),
    { status, headers: { "content-type": "application/json", ...headers } },
  );
}
