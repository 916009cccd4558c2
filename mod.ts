/**
 * Session-ownership and session-scoped cancellation for MCP servers that speak
 * Streamable HTTP.
 *
 * - {@linkcode SessionOwnerRegistry} binds each `Mcp-Session-Id` to the
 *   fingerprint of the principal that created it, so nobody else can attach
 *   to its stream, post into it, or terminate it.
 * - {@linkcode HandleRegistry} mints application state handles (MCP
 *   2026-07-28, which has no protocol sessions) bound to the principal they
 *   were minted for, and refuses them to anyone else.
 * - {@linkcode CancellationRegistry} tracks in-flight requests by
 *   `(sessionId, requestId)` and cancels them only for the same session.
 *
 * Both registries keep their state in a dedicated Web Worker that applies
 * operations one at a time (an actor); the classes here are thin async
 * facades over it.
 *
 * @example Quick start
 * ```ts
 * import { CancellationRegistry, fingerprint, SessionOwnerRegistry } from "@mcp-guard/session";
 *
 * await using owners = new SessionOwnerRegistry();
 * await using cancels = new CancellationRegistry();
 *
 * const alice = await fingerprint("Bearer alice-token");
 * console.log(await owners.bind("session-1", alice)); // "bound"
 *
 * const reg = await cancels.register("session-1", 1);
 * console.log(await cancels.cancel("session-2", 1)); // false
 * console.log(await cancels.cancel("session-1", 1)); // true
 * console.log(reg?.signal.aborted); // true
 * ```
 *
 * @module
 */

export { SessionOwnerRegistry } from "./src/registry/session_owner_registry.ts";
export type {
  AttachOptions,
  BindOptions,
  BindResult,
  OwnerBounds,
  OwnerStats,
  RemovedSessions,
  SessionOwnerRegistryOptions,
} from "./src/registry/session_owner_registry.ts";
export { HandleRegistry } from "./src/registry/handle_registry.ts";
export type { HandleRegistryOptions, MintOptions } from "./src/registry/handle_registry.ts";
export { CancellationRegistry } from "./src/registry/cancellation_registry.ts";
export type {
  CancellationRegistryOptions,
  CancelStats,
  Registration,
  Tracked,
} from "./src/registry/cancellation_registry.ts";
export type { RegistryOptions } from "./src/registry/registry_options.ts";
export { memoryStore, type MemoryStoreOptions, type RegistryStore } from "./src/store/store.ts";
export { kvStore, type KvStoreOptions } from "./src/store/kv/kv_store.ts";
export { fingerprint, type FingerprintOptions } from "./src/core/fingerprint.ts";
export { sanitizeSessionId } from "./src/core/validate.ts";
export {
  HandleError,
  HandleNotOwnedError,
  HandleTableFullError,
  InvalidInputError,
  RegistryClosedError,
  RegistryError,
  RegistryMisconfiguredError,
  RegistryUnavailableError,
  RequestCancelledError,
  UnauthenticatedError,
  type UnauthenticatedOptions,
} from "./src/core/errors.ts";
export { guardSessions } from "./src/http/guard.ts";
export type {
  GuardCancellations,
  GuardContext,
  GuardCredentialOwners,
  GuardDecision,
  GuardedHandler,
  GuardMode,
  GuardOptions,
  GuardOwners,
  GuardReason,
  GuardTaskOwners,
  Principal,
  RequestHandler,
  RequestRef,
  SdkContextRef,
  SdkExtraRef,
} from "./src/http/types.ts";
