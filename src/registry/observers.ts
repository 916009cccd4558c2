/**
 * Telemetry's listeners on registry events the actor does not see: a
 * cancellation delivered to a request, a handle refused. Keyed by facade in
 * a `WeakMap` (not exported from `mod.ts`; `otel.ts` registers them), so a
 * registry nobody observes pays one map lookup per such event, and nothing
 * on its hot paths.
 *
 * @module
 */

import type { SessionOwnerRegistry } from "./session_owner_registry.ts";

/** Where a cancellation that aborted a request came from. */
export type CancelOrigin = "client" | "server" | "other-process";

/** Why a handle was refused (`authorize` answered `false`). */
export type HandleRefusal = "invalid-handle" | "unknown-handle" | "not-handle-owner";

/** What telemetry hears from a registry. Listeners must not throw. */
export interface RegistryEvents {
  /** A `CancellationRegistry` aborted one of its requests. */
  cancelled?(origin: CancelOrigin): void;
  /**
   * A `HandleRegistry` refused `handle` to `fingerprint` (each `null` when
   * malformed: not worth hashing).
   */
  handleRefused?(reason: HandleRefusal, handle: string | null, fingerprint: string | null): void;
}

/** Listeners by registry facade. */
export const registryEvents: WeakMap<object, RegistryEvents> = new WeakMap();

/** The owner registry inside each `HandleRegistry` (its bindings, its worker). */
export const handleOwners: WeakMap<object, SessionOwnerRegistry> = new WeakMap();
