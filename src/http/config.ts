/**
 * Validates and defaults {@linkcode GuardOptions}: every mistake is an
 * `InvalidInputError` naming the option (and, for a typo, the nearest valid
 * key) when the guard is created, never a surprise on the first request.
 *
 * @module
 */

import { absoluteHttpUrl, InvalidInputError } from "../core/errors.ts";
import { fingerprint, identityProblem } from "../core/fingerprint.ts";
import { checkOptionKeys } from "../core/options_check.ts";
import { checkCount } from "../core/validate.ts";
import { type GuardObserver, observerOf } from "./observer.ts";
import { derivedRegistry, SessionOwnerRegistry } from "../registry/session_owner_registry.ts";
import type {
  GuardCancellations,
  GuardCredentialOwners,
  GuardDecision,
  GuardOptions,
  GuardOwners,
  GuardTaskOwners,
  RequestHandler,
} from "./types.ts";

/** Where the guard's own task registry keeps its bindings in the owners' store. */
const TASK_NAMESPACE = { redis: "t:", kv: ":t" };
/** Where the guard's own credential records live in the owners' store. */
const CREDENTIAL_NAMESPACE = { redis: "s:", kv: ":s" };

/** Every key of {@linkcode GuardOptions}. */
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
  "resumption",
  "tasks",
  "credentials",
  "matchClientId",
  "resourceMetadata",
  "onDecision",
  "onSessionClosed",
  "onError",
];

/** The guard's settings, checked and defaulted. */
export interface GuardConfig {
  handler: RequestHandler;
  owners: GuardOwners;
  cancellations: GuardCancellations;
  principal: GuardOptions["principal"];
  secret: string | Uint8Array | undefined;
  strict: boolean;
  maxBodyBytes: number;
  fingerprintCacheSize: number;
  ownerCacheMs: number;
  /** `notOwnerStatus: 404`: another principal's session is answered as an unknown one. */
  hideOthers: boolean;
  forwardParsed: boolean;
  /** `resumption`: what a `Last-Event-ID` may resume. */
  resumption: "requests" | "all" | "unchecked";
  /** Who owns which task (`undefined`: `tasks: false`, task requests pass unchecked). */
  tasks: GuardTaskOwners | undefined;
  /**
   * What the credential that opened each session allowed (`undefined`:
   * `credentials: false`, or attach-only mode: sessions bind to the subject alone).
   */
  credentials: GuardCredentialOwners | undefined;
  /** `matchClientId`: a session opened by one OAuth client refuses the others. */
  matchClientId: boolean;
  /** `resourceMetadata`, serialized: added to the guard's own challenges. */
  resourceMetadata: string | undefined;
  /** Fingerprints of `sharedPrincipals` (hashed with `secret`). */
  shared: Promise<Set<string>>;
  onDecision: ((decision: GuardDecision) => void) | undefined;
  onSessionClosed: GuardOptions["onSessionClosed"];
  onError: GuardOptions["onError"];
  /** Telemetry (`@mcp-guard/session/otel`), or `undefined`. */
  observer: GuardObserver | undefined;
}

function fail(message: string): never {
  throw new InvalidInputError(`guardSessions: ${message}`);
}

function shown(value: unknown): string {
  return typeof value === "string" ? JSON.stringify(value) : typeof value;
}

function oneOf<T>(name: string, value: unknown, allowed: readonly T[], fallback: T): T {
  if (value === undefined) return fallback;
  if (!allowed.includes(value as T)) {
    fail(
      `${name} must be ${allowed.map((a) => JSON.stringify(a)).join(" or ")}, got ${
        JSON.stringify(value)
      }`,
    );
  }
  return value as T;
}

/** Checks `guardSessions`' arguments; throws `InvalidInputError` naming the bad one. */
export function resolveGuardConfig(handler: RequestHandler, options: GuardOptions): GuardConfig {
  if (typeof handler !== "function") fail("handler must be a function");
  if (options === null || typeof options !== "object") fail("options are required");
  checkOptionKeys("guardSessions", options, GUARD_OPTION_KEYS);
  const { owners, cancellations, tasks } = options;
  for (const name of ["bind", "authorizeAttach", "ownerOf", "forget", "unpin"] as const) {
    if (typeof owners?.[name] !== "function") {
      fail(`options.owners must be a SessionOwnerRegistry (missing ${name})`);
    }
  }
  for (const name of ["track", "deregister", "cancel", "cancelAll"] as const) {
    if (typeof cancellations?.[name] !== "function") {
      fail(`options.cancellations must be a CancellationRegistry (missing ${name})`);
    }
  }
  if (typeof options.principal !== "function") fail("options.principal must be a function");
  for (const name of ["onDecision", "onError", "onSessionClosed"] as const) {
    if (options[name] !== undefined && typeof options[name] !== "function") {
      fail(`options.${name} must be a function`);
    }
  }
  if (
    tasks !== undefined && tasks !== false &&
    (typeof tasks?.bind !== "function" || typeof tasks.ownerOf !== "function")
  ) {
    fail(
      `options.tasks must be a SessionOwnerRegistry (with bind and ownerOf) or false, got ${
        shown(tasks)
      }`,
    );
  }
  if (tasks === undefined && !(owners instanceof SessionOwnerRegistry)) {
    fail(
      "options.tasks is required when options.owners is not a SessionOwnerRegistry " +
        "(task bindings cannot be derived from it): pass a registry for tasks, " +
        "or tasks: false to let task requests through unchecked",
    );
  }
  const mode = oneOf("mode", options.mode, ["strict", "attach-only"] as const, "strict");
  const credentials = options.credentials;
  if (
    credentials !== undefined && credentials !== false &&
    (["bind", "ownerOf", "forget", "pin", "unpin"] as const).some((name) =>
      typeof credentials?.[name] !== "function"
    )
  ) {
    fail(
      `options.credentials must be a SessionOwnerRegistry (with bind, ownerOf, forget, pin and unpin) or false, got ${
        shown(credentials)
      }`,
    );
  }
  if (
    mode === "strict" && credentials === undefined && !(owners instanceof SessionOwnerRegistry)
  ) {
    fail(
      "options.credentials is required when options.owners is not a SessionOwnerRegistry " +
        "(credential records cannot be derived from it): pass a registry for them, " +
        "or credentials: false to bind sessions to the subject alone",
    );
  }
  if (options.matchClientId !== undefined && typeof options.matchClientId !== "boolean") {
    fail(`matchClientId must be true or false, got ${shown(options.matchClientId)}`);
  }
  let resourceMetadata: string | undefined;
  if (options.resourceMetadata !== undefined) {
    resourceMetadata = absoluteHttpUrl(options.resourceMetadata) ?? fail(
      `resourceMetadata must be an absolute http(s) URL, got ${
        shown(String(options.resourceMetadata))
      }`,
    );
  }
  const secret = options.secret;
  if (
    secret !== undefined &&
    !((typeof secret === "string" || secret instanceof Uint8Array) && secret.length > 0)
  ) {
    fail("secret must be a non-empty string or bytes");
  }
  const shared = options.sharedPrincipals ?? [];
  if (!Array.isArray(shared)) {
    fail(
      `sharedPrincipals must be an array of identities (as principal() returns them), got ${
        shown(shared)
      }`,
    );
  }
  shared.forEach((identity: unknown, i: number) => {
    const problem = identityProblem(identity);
    if (problem !== null) fail(`sharedPrincipals[${i}] ${problem}`);
  });
  const sharedFps = Promise.all(shared.map((identity) => fingerprint(identity, { secret })))
    .then((fps) => new Set(fps));
  sharedFps.catch(() => {});
  const observer = observerOf(options);
  const config: GuardConfig = {
    handler: observer === undefined ? handler : observer.handler(handler),
    owners,
    cancellations,
    principal: options.principal,
    secret,
    strict: mode === "strict",
    maxBodyBytes: checkCount("maxBodyBytes", options.maxBodyBytes ?? 4 * 1024 * 1024, 1),
    fingerprintCacheSize: checkCount(
      "fingerprintCacheSize",
      options.fingerprintCacheSize ?? 1024,
      0,
    ),
    ownerCacheMs: checkCount("ownerCacheMs", options.ownerCacheMs ?? 0, 0),
    hideOthers: oneOf("notOwnerStatus", options.notOwnerStatus, [403, 404] as const, 403) === 404,
    forwardParsed:
      oneOf("forwardBody", options.forwardBody, ["copy", "parsed"] as const, "copy") === "parsed",
    resumption: oneOf(
      "resumption",
      options.resumption,
      ["requests", "all", "unchecked"] as const,
      "requests",
    ),
    tasks: tasks === false
      ? undefined
      : tasks ?? derivedRegistry(owners as SessionOwnerRegistry, TASK_NAMESPACE),
    credentials: mode !== "strict" || credentials === false ? undefined : credentials ??
      derivedRegistry(owners as SessionOwnerRegistry, CREDENTIAL_NAMESPACE, "mirror"),
    matchClientId: options.matchClientId ?? true,
    resourceMetadata,
    shared: sharedFps,
    onDecision: options.onDecision,
    onSessionClosed: options.onSessionClosed,
    onError: options.onError,
    observer,
  };
  observer?.attach({ owners, cancellations, tasks: config.tasks, secret });
  return config;
}
