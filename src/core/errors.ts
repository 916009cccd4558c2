/**
 * Typed errors raised by the registries and the HTTP guard.
 *
 * Every error carries a stable `name` so callers can branch on it after the
 * value crossed a worker boundary or was logged as JSON.
 *
 * @module
 */

/**
 * Base class of every error this library raises on purpose.
 *
 * @example Branch on any library error
 * ```ts
 * import { RegistryError, RegistryClosedError } from "@mcp-guard/session";
 *
 * const err: unknown = new RegistryClosedError("SessionOwnerRegistry");
 * if (err instanceof RegistryError) console.log(err.name);
 * ```
 */
export class RegistryError extends Error {
  /** Builds the error; `name` is the concrete subclass name. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}

/**
 * The registry's worker (or its backing store) could not answer: it crashed,
 * was terminated, timed out, or the store is unreachable. Callers must treat
 * this as "deny" (the HTTP guard answers 503). The next call starts a fresh
 * worker or reconnects to the store.
 *
 * @example
 * ```ts
 * import { RegistryUnavailableError } from "@mcp-guard/session";
 *
 * const err = new RegistryUnavailableError("worker terminated");
 * console.log(err.name); // "RegistryUnavailableError"
 * ```
 */
export class RegistryUnavailableError extends RegistryError {}

/**
 * The registry was closed with `close()` (or `await using` disposal); every
 * later call rejects with this error.
 *
 * @example
 * ```ts
 * import { RegistryClosedError, SessionOwnerRegistry } from "@mcp-guard/session";
 *
 * const owners = new SessionOwnerRegistry();
 * await owners.close();
 * try {
 *   await owners.size();
 * } catch (err) {
 *   console.log(err instanceof RegistryClosedError); // true
 * }
 * ```
 */
export class RegistryClosedError extends RegistryError {
  /** Builds the error; `registry` names the registry that was closed. */
  constructor(registry: string) {
    super(`${registry} is closed`);
  }
}

/**
 * An argument or message was malformed (wrong type, out of range, unknown
 * operation). Raised by option validation and sent back by the worker when it
 * receives a message it cannot decode, instead of crashing.
 *
 * @example
 * ```ts
 * import { InvalidInputError, SessionOwnerRegistry } from "@mcp-guard/session";
 *
 * try {
 *   new SessionOwnerRegistry({ maxEntries: -1 });
 * } catch (err) {
 *   console.log(err instanceof InvalidInputError); // true
 * }
 * ```
 */
export class InvalidInputError extends RegistryError {}

/**
 * The registry cannot work as configured, and retrying will not help: the
 * process lacks a permission (the message names it and the flag that grants
 * it, e.g. `--allow-read` for the worker module, `--allow-net` for Redis), or
 * a store option is unusable. The HTTP guard answers it with 500, not with a
 * retryable 503, and reports it to `onError`.
 *
 * @example
 * ```ts
 * import { RegistryMisconfiguredError } from "@mcp-guard/session";
 *
 * const err = new RegistryMisconfiguredError("Requires net access; run again with --allow-net");
 * console.log(err.name); // "RegistryMisconfiguredError"
 * console.log(err.message.includes("--allow-net")); // true
 * ```
 */
export class RegistryMisconfiguredError extends RegistryError {}

/** Options of {@linkcode UnauthenticatedError}. */
export interface UnauthenticatedOptions {
  /** The `WWW-Authenticate` challenge. @default {"Bearer"} */
  challenge?: string;
  /**
   * The absolute http(s) URL of this server's OAuth 2.0 Protected Resource
   * Metadata (RFC 9728), added to the challenge as `resource_metadata="..."`:
   * what an MCP client reads to find the authorization server to get a token
   * from.
   */
  resourceMetadata?: string | URL;
}

/**
 * Thrown by a guard's `principal()` to say "this caller is not
 * authenticated" (a bad or expired token): the guard answers 401 with a
 * `WWW-Authenticate` challenge. Any other error thrown by `principal()`
 * means "cannot tell right now" (a key server is down) and gets 503.
 *
 * @example
 * ```ts
 * import { UnauthenticatedError } from "@mcp-guard/session";
 *
 * const err = new UnauthenticatedError("token expired", {
 *   challenge: 'Bearer error="invalid_token"',
 *   resourceMetadata: "https://mcp.example.com/.well-known/oauth-protected-resource/mcp",
 * });
 * console.log(err.challenge);
 * // Bearer error="invalid_token", resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
 * ```
 */
export class UnauthenticatedError extends Error {
  /** The `WWW-Authenticate` header value of the 401 answer. */
  readonly challenge: string;
  /**
   * Builds the error; `challenge` defaults to `"Bearer"`. Throws
   * `InvalidInputError` when `resourceMetadata` is not an absolute http(s)
   * URL.
   */
  constructor(message = "not authenticated", options: UnauthenticatedOptions = {}) {
    super(message);
    this.name = "UnauthenticatedError";
    const challenge = typeof options.challenge === "string" && options.challenge.trim() !== ""
      ? options.challenge.trim()
      : "Bearer";
    const metadata = options.resourceMetadata;
    if (metadata === undefined) {
      this.challenge = challenge;
      return;
    }
    const href = absoluteHttpUrl(metadata);
    if (href === null) {
      throw new InvalidInputError(
        `UnauthenticatedError: resourceMetadata must be an absolute http(s) URL, got ${
          JSON.stringify(String(metadata))
        }`,
      );
    }
    // After the scheme, auth-params are separated by commas (RFC 9110, section 11.6.1).
    const separator = /\s/.test(challenge) ? ", " : " ";
    this.challenge = `${challenge}${separator}resource_metadata="${href}"`;
  }
}

/** `value` as an absolute http(s) URL (serialized: no quote left in it), or `null`. */
export function absoluteHttpUrl(value: unknown): string | null {
  if (typeof value !== "string" && !(value instanceof URL)) return null;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return null;
  }
  return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
}

/**
 * The Deno permission an error says is missing, with the flag that grants
 * it, or `null` when the error is not about a permission.
 */
export function missingPermission(err: unknown): string | null {
  const name = (err as { name?: unknown } | null)?.name;
  const raw = typeof err === "string" ? err : (err as { message?: unknown } | null)?.message;
  const message = typeof raw === "string" ? raw : "";
  const flag = /--allow-[a-z-]+/.exec(message)?.[0];
  if (name === "NotCapable" || name === "PermissionDenied" || /Requires \w+ access/.test(message)) {
    const first = message.split("\n")[0];
    return flag === undefined || first.includes(flag) ? first : `${first} (grant it with ${flag})`;
  }
  return null;
}

/**
 * The default `AbortSignal.reason` of a request cancelled through
 * `CancellationRegistry.cancel` or `cancelAll`.
 *
 * @example
 * ```ts
 * import { CancellationRegistry, RequestCancelledError } from "@mcp-guard/session";
 *
 * await using cancels = new CancellationRegistry();
 * const reg = await cancels.register("session-1", 7);
 * await cancels.cancel("session-1", 7);
 * console.log(reg?.signal.reason instanceof RequestCancelledError); // true
 * ```
 */
export class RequestCancelledError extends RegistryError {
  /** The session whose request was cancelled. */
  readonly sessionId: string;
  /** The JSON-RPC id of the cancelled request, or `null` for `cancelAll`. */
  readonly requestId: string | number | null;
  /**
   * Who asked: `"client"` when the HTTP guard cancelled the request for the
   * client's own `notifications/cancelled` (the client expects no answer),
   * else `"server"` (an operator, a closed session, another process).
   */
  readonly origin: "client" | "server";
  /**
   * Builds the error for one request (or every request of a session);
   * `options.origin` defaults to `"server"`.
   */
  constructor(
    sessionId: string,
    requestId: string | number | null,
    message?: string,
    options?: { origin?: "client" | "server" },
  ) {
    super(
      message ??
        (requestId === null
          ? `session ${sessionId} terminated: request cancelled`
          : `request ${JSON.stringify(requestId)} of session ${sessionId} cancelled`),
    );
    this.sessionId = sessionId;
    this.requestId = requestId;
    this.origin = options?.origin === "client" ? "client" : "server";
  }
}

/**
 * Base class of the errors a `HandleRegistry` raises on purpose (its own
 * failures; a store outage is still {@linkcode RegistryUnavailableError}).
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { HandleError, HandleNotOwnedError, RegistryError } from "@mcp-guard/session";
 *
 * const err: unknown = new HandleNotOwnedError("cart_x");
 * assert.ok(err instanceof HandleError && err instanceof RegistryError);
 * ```
 */
export class HandleError extends RegistryError {}

/** How much of a handle an error message shows (enough to tell handles apart in a log). */
const HANDLE_PREVIEW = 10;

/**
 * A state handle was presented by a principal that does not own it, or it is
 * unknown (never minted, released, evicted, or malformed): the two cases are
 * deliberately the same error with the same message, so a caller cannot
 * probe whether a handle exists for someone else. The message shows only the
 * first characters of the handle.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { HandleNotOwnedError } from "@mcp-guard/session";
 *
 * const err = new HandleNotOwnedError("cart_9fQ2xLk7TzVbNw3hRmY8pA");
 * assert.equal(err.name, "HandleNotOwnedError");
 * assert.equal(err.message, 'Unknown or foreign handle: "cart_9fQ2x…"');
 * ```
 */
export class HandleNotOwnedError extends HandleError {
  /** Builds the error for the presented value (any type; only a short preview is kept). */
  constructor(handle: unknown) {
    super(`Unknown or foreign handle: ${previewHandle(handle)}`);
  }
}

/**
 * `HandleRegistry.mint` could not bind a new handle: every handle it could
 * evict to make room (the caller's own, when the caller is at
 * `maxPerPrincipal`; anyone's, when the registry is at `maxEntries`) is
 * pinned.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * import { HandleError, HandleTableFullError } from "@mcp-guard/session";
 *
 * const err = new HandleTableFullError();
 * assert.ok(err instanceof HandleError);
 * assert.match(err.message, /full/);
 * ```
 */
export class HandleTableFullError extends HandleError {
  /** Builds the error. */
  constructor() {
    super("HandleRegistry is full: every handle that could make room is pinned");
  }
}

/** A JSON-quoted, truncated preview of a presented handle, for messages and logs. */
function previewHandle(value: unknown): string {
  if (typeof value !== "string") return `(${value === null ? "null" : typeof value})`;
  const chars = Array.from(value);
  return chars.length > HANDLE_PREVIEW
    ? `${JSON.stringify(chars.slice(0, HANDLE_PREVIEW).join("")).slice(0, -1)}…"`
    : JSON.stringify(value);
}

/** Wire form of an error sent back by the worker. */
export interface WireError {
  /** Error class name, e.g. `InvalidInputError`. */
  name: string;
  /** Human-readable message. */
  message: string;
}

/** Turns any thrown value into its wire form. */
export function toWireError(err: unknown): WireError {
  if (err instanceof Error) return { name: err.name, message: err.message };
  return { name: "Error", message: String(err) };
}

/** Rebuilds a typed error from its wire form. */
export function fromWireError(wire: WireError): RegistryError {
  switch (wire.name) {
    case "InvalidInputError":
      return new InvalidInputError(wire.message);
    case "RegistryMisconfiguredError":
      return new RegistryMisconfiguredError(wire.message);
    default: {
      const permission = missingPermission(wire);
      if (permission !== null) {
        return new RegistryMisconfiguredError(`missing permission: ${permission}`);
      }
      return new RegistryUnavailableError(`${wire.name}: ${wire.message}`);
    }
  }
}
