/**
 * The guard's telemetry hook: an internal interface, not exported from
 * `mod.ts`, that `@mcp-guard/session/otel` implements. A guard without one
 * pays a property check per decision and nothing else.
 *
 * The observer rides in the guard's options under a private symbol
 * ({@linkcode OBSERVER}), so the options' public type and their key check
 * stay as they are: `guardTelemetry().instrument(options)` adds it.
 *
 * @module
 */

import { InvalidInputError } from "../core/errors.ts";
import type {
  GuardCancellations,
  GuardContext,
  GuardDecision,
  GuardOwners,
  GuardTaskOwners,
  RequestHandler,
} from "./types.ts";

/** The options key an observer travels under (see `otel.ts`'s `instrument`). */
export const OBSERVER: unique symbol = Symbol("mcp-guard observer");

/** The registries a guard uses, for metrics on them. */
export interface ObservedRegistries {
  owners: GuardOwners;
  cancellations: GuardCancellations;
  /** `undefined` with `tasks: false`. */
  tasks: GuardTaskOwners | undefined;
  /** The guard's `secret`, for hashing ids in audit records. */
  secret: string | Uint8Array | undefined;
}

/**
 * What a guard tells its observer. No method may throw (an observer catches
 * its own failures): they run on the request path.
 */
export interface GuardObserver {
  /** Once, when the guard is created. */
  attach(registries: ObservedRegistries): void;
  /** Wraps the handler the guard calls (to tell its time from the guard's). */
  handler(handler: RequestHandler): RequestHandler;
  /** Wraps each request the guard handles, from its arrival to the guard's answer. */
  request(request: Request, handle: (request: Request) => Promise<Response>): Promise<Response>;
  /** The caller was identified (before any ownership check): who, and later the body. */
  identified(ctx: GuardContext): void;
  /**
   * One decision, as `onDecision` gets it; `task`: for a task request let through with a task
   * id nobody was issued in place of the caller's (`unknown-task`, `not-task-owner`), the id
   * the caller named.
   */
  decided(decision: GuardDecision, task?: string): void;
  /** A failure the guard reports to `onError`. */
  error(error: unknown, context: string): void;
}

/** The observer `options` carry, if any; throws `InvalidInputError` for anything else under the key. */
export function observerOf(options: object): GuardObserver | undefined {
  const observer = (options as { [OBSERVER]?: unknown })[OBSERVER];
  if (observer === undefined) return undefined;
  const o = observer as Partial<GuardObserver> | null;
  if (
    typeof o !== "object" || o === null ||
    (["attach", "handler", "request", "identified", "decided", "error"] as const)
      .some((name) => typeof o[name] !== "function")
  ) {
    throw new InvalidInputError("guardSessions: the options carry a malformed telemetry observer");
  }
  return o as GuardObserver;
}
