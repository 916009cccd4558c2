/**
 * Model-based fuzzing of `guardSessions` over real HTTP: random sequences of
 * requests from two identified principals, an anonymous caller and a caller
 * with a forged token, sent with `fetch` to the SDK 1.32 example app behind
 * the guard on a real `Deno.serve({ port: 0 })`. A small reference model
 * knows which principal owns which live session and which requests are in
 * flight; every step's status, body, guard decisions and what reached the
 * handler are checked against it.
 *
 * The server stays up across runs; every run starts with no sessions (the
 * SDK issues fresh ids) and ends by deleting the sessions it created and
 * checking that nothing is left in the registries.
 *
 * @module
 */

import fc from "fast-check";
import {
  CancellationRegistry,
  fingerprint,
  type GuardContext,
  type GuardDecision,
  type GuardedHandler,
  type GuardOptions,
  guardSessions,
  type RequestHandler,
  SessionOwnerRegistry,
  type SessionOwnerRegistryOptions,
} from "../../mod.ts";
import { createMcpApp, type McpApp, type ToolEvent } from "../../examples/mcp_app.ts";
import { bearerPrincipal } from "../../examples/server.ts";

// ---------------------------------------------------------------------------------------------
// The target: the SDK app, guarded, on Deno.serve, with everything it did recorded.
// ---------------------------------------------------------------------------------------------

/** What reached the wrapped handler. */
export interface HandlerRecord {
  /** The `x-fuzz-step` header of the request (which step sent it), or `null`. */
  step: string | null;
  method: string;
  /** The `Mcp-Session-Id` header the handler saw. */
  sessionId: string | null;
  /** Who the guard said is calling. */
  principal: string | null;
  /** For a `notifications/cancelled`: the request it names and why. */
  cancels?: { requestId: unknown; reason: string };
}

/** How the guard words a cancellation from the server side (an operator, an ended session). */
const SERVER_CANCEL = "Request cancelled by the server: ";

/** Builds the guarded handler: `guardSessions` unless an experiment swaps it. */
export type GuardFactory = (handler: RequestHandler, options: GuardOptions) => GuardedHandler;

/** Options of {@linkcode startFuzzTarget}. */
export interface FuzzTargetOptions {
  /** Guard options to override (`notOwnerStatus`, `ownerCacheMs`...). */
  guard?: Partial<GuardOptions>;
  /** Owner registry options (bounds are raised so nothing is ever evicted). */
  ownerOptions?: SessionOwnerRegistryOptions;
  /** Builds the guarded handler (default `guardSessions`). */
  factory?: GuardFactory;
}

/** A running guarded server and its recorders. */
export interface FuzzTarget extends AsyncDisposable {
  url: URL;
  app: McpApp;
  owners: SessionOwnerRegistry;
  cancellations: CancellationRegistry;
  /** `403` or `404`: what another principal's session id gets. */
  notOwnerStatus: 403 | 404;
  /** Body-size limit of the guard (small, so 413 is cheap to provoke). */
  maxBodyBytes: number;
  /** Decisions go here while a step runs; `orphans` otherwise. */
  sink: GuardDecision[] | null;
  orphans: GuardDecision[];
  /** Everything that reached the handler. */
  records: HandlerRecord[];
  /** Every tool event of the SDK app. */
  tools: ToolEvent[];
  /** Errors the guard reported to `onError`. */
  errors: { error: unknown; context: string }[];
}

const MAX_BODY_BYTES = 16 * 1024;

/** Starts the SDK example app behind the guard on a free loopback port. */
export function startFuzzTarget(options: FuzzTargetOptions = {}): FuzzTarget {
  const owners = new SessionOwnerRegistry({
    maxEntries: 100_000,
    maxPerPrincipal: 100_000,
    ...options.ownerOptions,
  });
  const cancellations = new CancellationRegistry({ maxEntries: 100_000 });
  let guard: GuardedHandler | null = null;
  const tools: ToolEvent[] = [];
  const app = createMcpApp({
    signalFor: (extra) => guard?.signalFor(extra) ?? extra.signal!,
    onToolEvent: (event) => tools.push(event),
  });
  const records: HandlerRecord[] = [];
  const inner: RequestHandler = (request: Request, context: GuardContext) => {
    const body = context?.parsedBody as
      | { method?: unknown; params?: { requestId?: unknown; reason?: unknown } }
      | undefined;
    const cancelled = request.method === "POST" && body?.method === "notifications/cancelled";
    records.push({
      step: request.headers.get("x-fuzz-step"),
      method: request.method,
      sessionId: request.headers.get("mcp-session-id"),
      principal: context?.principal ?? null,
      ...(cancelled
        ? {
          cancels: {
            requestId: body?.params?.requestId,
            reason: String(body?.params?.reason ?? ""),
          },
        }
        : {}),
    });
    return app.handler(request);
  };
  const factory = options.factory ?? guardSessions;
  const serve = factory(inner, {
    principal: bearerPrincipal(),
    maxBodyBytes: MAX_BODY_BYTES,
    ...options.guard,
    owners,
    cancellations,
    onDecision: (decision) => (target.sink ?? target.orphans).push(decision),
    onError: (error, context) => target.errors.push({ error, context }),
  });
  guard = serve;
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen: () => {} }, serve);
  const target: FuzzTarget = {
    url: new URL(`http://127.0.0.1:${server.addr.port}/mcp`),
    app,
    owners,
    cancellations,
    notOwnerStatus: options.guard?.notOwnerStatus ?? 403,
    maxBodyBytes: options.guard?.maxBodyBytes ?? MAX_BODY_BYTES,
    sink: null,
    orphans: [],
    records,
    tools,
    errors: [],
    async [Symbol.asyncDispose]() {
      await app.close();
      await server.shutdown();
      await owners.close();
      await cancellations.close();
    },
  };
  return target;
}

// ---------------------------------------------------------------------------------------------
// Commands (what fast-check generates). Session ids do not exist when commands are generated:
// a command names its session abstractly ("one of mine", "another's", "a deleted one"...), and
// the run resolves it against the model when the step executes.
// ---------------------------------------------------------------------------------------------

/** Who sends a request. */
export type Caller = "alice" | "bob" | "anonymous" | "forged";
type Owner = "alice" | "bob";

const AUTHORIZATION: Record<Caller, string | null> = {
  alice: "Bearer alice-token",
  bob: "Bearer bob-token",
  anonymous: null,
  forged: "Bearer forged-token-not-in-the-table",
};

/** Which session id a command uses. */
export type Target =
  /** A live session of the caller (another live one, or a guess, when it has none). */
  | { kind: "own"; pick: number }
  /** A live session of another principal. */
  | { kind: "other"; pick: number }
  /** A live session with requests in flight, the caller's if it has one (else as "own"). */
  | { kind: "busy"; pick: number }
  /** Any live session. */
  | { kind: "live"; pick: number }
  /** A session deleted earlier in this run. */
  | { kind: "deleted"; pick: number }
  /** A valid id nobody was ever issued. */
  | { kind: "guess"; value: string }
  /** A valid id one edit away from a live one. */
  | { kind: "near"; pick: number; how: "upper" | "suffix" | "prefix" | "chop" }
  /** An invalid header value. */
  | { kind: "malformed"; value: string }
  /** A live session's id sent twice (the header becomes "id, id"). */
  | { kind: "twice"; pick: number }
  /** No `Mcp-Session-Id` header. */
  | { kind: "none" };

/** A JSON-RPC message a well-formed POST carries. */
export type Message =
  | "echo"
  | "ping"
  | "unknown-method"
  | "notification"
  | "response"
  | "count"
  | "initialize";

/** A request id a `notifications/cancelled` names. */
export type RidChoice =
  /** One in flight in the target session. */
  | { kind: "target"; pick: number }
  /** One in flight in any session (a cross-session guess). */
  | { kind: "any"; pick: number }
  /** One in flight in the target session, number and string swapped (`5` vs `"5"`). */
  | { kind: "flipped"; pick: number }
  | { kind: "random"; value: string | number }
  | { kind: "absent" };

/** A body the guard must refuse before looking at the session. */
export type Malformed =
  | "bad-json"
  | "empty-body"
  | "batch"
  | "empty-batch"
  | "jsonrpc-1.0"
  | "scalar"
  | "no-method"
  | "empty-method"
  | "array-params"
  | "result-and-error"
  | "text/plain"
  | "no-content-type"
  | "application/json-seq"
  | "too-large";

/** One step. */
export type Command =
  | { t: "skip" }
  | {
    t: "post";
    caller: Caller;
    target: Target;
    msg: Message;
    numericId: boolean;
    jsonOnly: boolean;
  }
  | { t: "cancel"; caller: Caller; target: Target; rid: RidChoice }
  | { t: "get"; caller: Caller; target: Target; jsonOnly: boolean }
  | { t: "delete"; caller: Caller; target: Target; badVersion: boolean }
  | { t: "malformed"; caller: Caller; target: Target; kind: Malformed }
  | { t: "method"; caller: Caller; target: Target; method: string }
  | { t: "abandon"; pick: number };

function describeTarget(target: Target): string {
  switch (target.kind) {
    case "guess":
      return `guess(${JSON.stringify(target.value.slice(0, 40))})`;
    case "malformed":
      return `malformed(${JSON.stringify(target.value.slice(0, 40))}${
        target.value.length > 40 ? `…${target.value.length}` : ""
      })`;
    case "near":
      return `near-${target.how}#${target.pick}`;
    case "none":
      return "no-session";
    default:
      return `${target.kind}#${target.pick}`;
  }
}

/** A short line naming a command (how fast-check prints a counterexample). */
export function describeCommand(cmd: Command): string {
  switch (cmd.t) {
    case "skip":
      return "·";
    case "post":
      return `${cmd.caller} POST ${cmd.msg}${cmd.jsonOnly ? "(accept json only)" : ""} → ${
        describeTarget(cmd.target)
      }`;
    case "cancel":
      return `${cmd.caller} POST notifications/cancelled(${
        cmd.rid.kind === "random"
          ? JSON.stringify(cmd.rid.value)
          : cmd.rid.kind === "absent"
          ? "no requestId"
          : `${cmd.rid.kind}#${cmd.rid.pick}`
      }) → ${describeTarget(cmd.target)}`;
    case "get":
      return `${cmd.caller} GET${cmd.jsonOnly ? "(accept json only)" : ""} → ${
        describeTarget(cmd.target)
      }`;
    case "delete":
      return `${cmd.caller} DELETE${cmd.badVersion ? "(bad protocol version)" : ""} → ${
        describeTarget(cmd.target)
      }`;
    case "malformed":
      return `${cmd.caller} POST malformed:${cmd.kind} → ${describeTarget(cmd.target)}`;
    case "method":
      return `${cmd.caller} ${cmd.method} → ${describeTarget(cmd.target)}`;
    case "abandon":
      return `client drops in-flight call #${cmd.pick}`;
  }
}

const pickArb = fc.nat({ max: 999 });

const callerArb: fc.Arbitrary<Caller> = fc.oneof(
  { weight: 4, arbitrary: fc.constant("alice" as const) },
  { weight: 4, arbitrary: fc.constant("bob" as const) },
  { weight: 1, arbitrary: fc.constant("anonymous" as const) },
  { weight: 1, arbitrary: fc.constant("forged" as const) },
);

const visibleArb = fc.stringMatching(/^[\x21-\x7e]{1,24}$/);

const guessArb: fc.Arbitrary<string> = fc.oneof(
  fc.uuid(),
  fc.constantFrom(
    "__proto__",
    "constructor",
    "toString",
    "hasOwnProperty",
    "valueOf",
    "0",
    "null",
    "undefined",
    "../mcp",
    "%00",
    "*",
    "s".repeat(256),
  ),
  visibleArb,
);

const malformedSidArb: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom("", "has space", "a\tb", "sess\u00e9", "\u00fc"),
  fc.tuple(visibleArb, visibleArb).map(([a, b]) => `${a} ${b}`),
  fc.integer({ min: 257, max: 400 }).map((n) => "s".repeat(n)),
);

const targetArb: fc.Arbitrary<Target> = fc.oneof(
  { weight: 8, arbitrary: pickArb.map((pick) => ({ kind: "own" as const, pick })) },
  { weight: 5, arbitrary: pickArb.map((pick) => ({ kind: "other" as const, pick })) },
  { weight: 1, arbitrary: pickArb.map((pick) => ({ kind: "live" as const, pick })) },
  { weight: 2, arbitrary: pickArb.map((pick) => ({ kind: "deleted" as const, pick })) },
  { weight: 2, arbitrary: guessArb.map((value) => ({ kind: "guess" as const, value })) },
  {
    weight: 1,
    arbitrary: fc.record({
      kind: fc.constant("near" as const),
      pick: pickArb,
      how: fc.constantFrom("upper" as const, "suffix" as const, "prefix" as const, "chop" as const),
    }),
  },
  { weight: 1, arbitrary: malformedSidArb.map((value) => ({ kind: "malformed" as const, value })) },
  { weight: 1, arbitrary: pickArb.map((pick) => ({ kind: "twice" as const, pick })) },
  { weight: 1, arbitrary: fc.constant({ kind: "none" as const }) },
);

const messageArb: fc.Arbitrary<Message> = fc.oneof(
  { weight: 4, arbitrary: fc.constant("echo" as const) },
  { weight: 2, arbitrary: fc.constant("ping" as const) },
  { weight: 1, arbitrary: fc.constant("unknown-method" as const) },
  { weight: 2, arbitrary: fc.constant("notification" as const) },
  { weight: 1, arbitrary: fc.constant("response" as const) },
  { weight: 2, arbitrary: fc.constant("count" as const) },
  { weight: 1, arbitrary: fc.constant("initialize" as const) },
);

const ridArb: fc.Arbitrary<RidChoice> = fc.oneof(
  { weight: 6, arbitrary: pickArb.map((pick) => ({ kind: "target" as const, pick })) },
  { weight: 3, arbitrary: pickArb.map((pick) => ({ kind: "any" as const, pick })) },
  { weight: 1, arbitrary: pickArb.map((pick) => ({ kind: "flipped" as const, pick })) },
  {
    weight: 1,
    arbitrary: fc.oneof(fc.integer({ min: -3, max: 60 }), fc.string({ maxLength: 8 }))
      .map((value) => ({ kind: "random" as const, value })),
  },
  { weight: 1, arbitrary: fc.constant({ kind: "absent" as const }) },
);

/** Every malformed body kind. */
export const MALFORMED: readonly Malformed[] = [
  "bad-json",
  "empty-body",
  "batch",
  "empty-batch",
  "jsonrpc-1.0",
  "scalar",
  "no-method",
  "empty-method",
  "array-params",
  "result-and-error",
  "text/plain",
  "no-content-type",
  "application/json-seq",
  "too-large",
];

const malformedArb: fc.Arbitrary<Malformed> = fc.constantFrom(...MALFORMED);

const coin = (trueWeight: number) =>
  fc.oneof({ weight: 10 - trueWeight, arbitrary: fc.constant(false) }, {
    weight: trueWeight,
    arbitrary: fc.constant(true),
  });

/** Most requests start a session or go to one; an initialize mostly goes without a session. */
const initArb: fc.Arbitrary<Command> = fc.record({
  t: fc.constant("post" as const),
  caller: callerArb,
  target: fc.oneof({ weight: 6, arbitrary: fc.constant({ kind: "none" as const }) }, {
    weight: 1,
    arbitrary: targetArb,
  }),
  msg: fc.constant("initialize" as const),
  numericId: fc.boolean(),
  jsonOnly: coin(1),
});

/** A long-running `count` call, mostly in the caller's own session (to cancel later). */
const launchArb: fc.Arbitrary<Command> = fc.record({
  t: fc.constant("post" as const),
  caller: callerArb,
  target: fc.oneof(
    { weight: 4, arbitrary: pickArb.map((pick) => ({ kind: "own" as const, pick })) },
    { weight: 1, arbitrary: targetArb },
  ),
  msg: fc.constant("count" as const),
  numericId: fc.boolean(),
  jsonOnly: fc.constant(false),
});

const realCommandArb: fc.Arbitrary<Command> = fc.oneof(
  { weight: 6, arbitrary: initArb },
  { weight: 3, arbitrary: launchArb },
  {
    weight: 8,
    arbitrary: fc.record({
      t: fc.constant("post" as const),
      caller: callerArb,
      target: targetArb,
      msg: messageArb,
      numericId: fc.boolean(),
      jsonOnly: coin(1),
    }),
  },
  {
    weight: 6,
    arbitrary: fc.record({
      t: fc.constant("cancel" as const),
      caller: callerArb,
      target: fc.oneof(
        { weight: 2, arbitrary: pickArb.map((pick) => ({ kind: "busy" as const, pick })) },
        { weight: 1, arbitrary: targetArb },
      ),
      rid: ridArb,
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      t: fc.constant("get" as const),
      caller: callerArb,
      target: targetArb,
      jsonOnly: coin(1),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({
      t: fc.constant("delete" as const),
      caller: callerArb,
      target: targetArb,
      badVersion: coin(1),
    }),
  },
  {
    weight: 4,
    arbitrary: fc.record({
      t: fc.constant("malformed" as const),
      caller: callerArb,
      target: targetArb,
      kind: malformedArb,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      t: fc.constant("method" as const),
      caller: callerArb,
      target: targetArb,
      method: fc.constantFrom("PUT", "PATCH", "patch", "OPTIONS", "PURGE"),
    }),
  },
  { weight: 1, arbitrary: fc.record({ t: fc.constant("abandon" as const), pick: pickArb }) },
);

/**
 * Always generates `true`; shrinks to `false`. A command paired with it is
 * always run, and a failing sequence shrinks by turning irrelevant commands
 * into skips (the length stays fixed, so every run has exactly `steps` steps).
 */
class Present extends fc.Arbitrary<boolean> {
  generate(): fc.Value<boolean> {
    return new fc.Value(true, undefined);
  }
  canShrinkWithoutContext(value: unknown): value is boolean {
    return typeof value === "boolean";
  }
  shrink(value: boolean): fc.Stream<fc.Value<boolean>> {
    return value ? fc.Stream.of(new fc.Value(false, undefined)) : fc.Stream.nil();
  }
}

function printable(cmd: Command): Command {
  return Object.defineProperty(cmd, fc.toStringMethod, {
    value: () => describeCommand(cmd),
    enumerable: false,
  });
}

/** One command, printed as a short line. */
export const commandArb: fc.Arbitrary<Command> = fc.tuple(new Present(), realCommandArb).map((
  [present, cmd],
) => printable(present ? cmd : { t: "skip" }));

// ---------------------------------------------------------------------------------------------
// The model.
// ---------------------------------------------------------------------------------------------

type RequestId = string | number;

interface Session {
  id: string;
  /** "S3(bob)": how messages name it. */
  label: string;
  owner: Owner;
  /** Requests in flight the guard tracks (cancellable by the owner). */
  tracked: RequestId[];
  /** Requests in flight whose client went away (the guard no longer tracks them). */
  abandoned: RequestId[];
}

interface Refusal {
  outcome: "refuse";
  status: number;
  reason: string;
  code: number;
  /** The `id` the error body must carry. */
  id: RequestId | null;
}

/** What the handler (SDK) answers when the guard lets a request through. */
type Answer =
  /** An SSE stream carrying the answer to `id`, then closed. */
  | { kind: "sse-answer"; status: 200 }
  /** An SSE stream that stays open (listening GET, a running `count`). */
  | { kind: "sse-open"; status: 200 }
  /** 200 or 202 without a body. */
  | { kind: "empty"; status: 200 | 202 }
  /** A JSON-RPC error body from the SDK. */
  | { kind: "json-error"; status: number; code: number };

interface Allowance {
  outcome: "allow";
  answer: Answer;
  /** The decision reason (`allowed`, `cancelled`, `cancel-unmatched`). */
  reason: string;
}

type Expectation = Refusal | Allowance;

/** Codes of the guard's refusals, by reason (README table, independent of src/). */
const REFUSAL_CODES: Record<string, number> = {
  "method-not-allowed": -32000,
  "invalid-session-id": -32600,
  anonymous: -32600,
  "not-owner": -32600,
  "unknown-session": -32001,
  "unsupported-media-type": -32000,
  "body-too-large": -32000,
  "parse-error": -32700,
  batch: -32600,
  "invalid-request": -32600,
  "invalid-params": -32602,
};

/** The SDK 1.32 transport's answer to a session id it does not know, as the guard gives it. */
const SDK_UNKNOWN_SESSION =
  '{"jsonrpc":"2.0","error":{"code":-32001,"message":"Session not found"},"id":null}';

function refusal(status: number, reason: string, id: RequestId | null = null): Refusal {
  return { outcome: "refuse", status, reason, code: REFUSAL_CODES[reason], id };
}

/** The guard's session-id rule, re-stated: 1 to 256 characters 0x21-0x7E. */
function validSessionId(value: string): boolean {
  return value.length >= 1 && value.length <= 256 && /^[\x21-\x7e]+$/.test(value);
}

function isIdentified(caller: Caller): caller is Owner {
  return caller === "alice" || caller === "bob";
}

function cancelKeyOf(sid: string, rid: RequestId): string {
  return `${sid}\n${typeof rid}:${rid}`;
}

/** A request as the step sends it. */
interface Outgoing {
  method: string;
  headers: Headers;
  body?: BodyInit;
  /** The JSON-RPC id in the body, if any. */
  rpcId: RequestId | null;
  /** The JSON-RPC method the guard reports once it parsed the body. */
  rpcMethod: string | null;
}

/** How a session target resolved. */
interface Resolved {
  /** The header value, or `null` for none. */
  header: string | null;
  /** Appended twice (`"id, id"`). */
  twice: boolean;
  /** The model's session for the id, if it is a live one. */
  session: Session | undefined;
  label: string;
}

/** What the step saw. */
interface Seen {
  status: number;
  contentType: string | null;
  text: string | null;
  headers: Headers;
}

class StepFailure extends Error {}

/** Waits until `predicate()` holds, or throws `what`. */
async function eventually(
  predicate: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 5_000,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await predicate())) {
    if (performance.now() > deadline) throw new StepFailure(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new StepFailure(`timed out: ${what}`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

const PROTOCOL_VERSION = "2025-11-25";

/** One run of a command sequence against the target, with its model. */
class Run {
  readonly live: Session[] = [];
  readonly deleted: Session[] = [];
  readonly byId = new Map<string, Session>();
  /** Open in-flight responses, by cancelKeyOf(session, request id). */
  readonly open = new Map<string, Response>();
  /** Keys of tool runs this run started (and expects to see). */
  readonly launched = new Set<string>();
  /** Keys of tool runs that may stop by now (cancelled by their owner, or session ended). */
  readonly mayStop = new Set<string>();
  /** Lines describing the steps run so far. */
  readonly log: string[] = [];
  readonly toolsFrom: number;
  /** Every session id this run created. */
  readonly created = new Set<string>();
  #nextId = 1;
  #labels = 0;
  /** Commands run (skips excluded). */
  step = 0;
  /** HTTP requests sent and checked. */
  requests = 0;
  /** "METHOD status reason" -> how many requests ended so. */
  readonly tally = new Map<string, number>();

  /** Bindings and tracked requests a failed earlier run may have left (0 after passing runs). */
  readonly baseline: { bindings: number; tracked: number };

  constructor(
    readonly target: FuzzTarget,
    readonly runNo: number,
    readonly prints: Readonly<Record<Owner, string>>,
    baseline: { bindings: number; tracked: number },
  ) {
    this.toolsFrom = target.tools.length;
    this.baseline = baseline;
  }

  // --- resolving abstract targets --------------------------------------------------------------

  #pick<T>(items: readonly T[], pick: number): T | undefined {
    return items.length === 0 ? undefined : items[pick % items.length];
  }

  #resolve(target: Target, caller: Caller): Resolved {
    const session = (s: Session | undefined, fallback: string): Resolved =>
      s === undefined
        ? { header: fallback, twice: false, session: undefined, label: `guess ${fallback}` }
        : { header: s.id, twice: false, session: s, label: s.label };
    const unseen = () => `never-issued-${this.runNo}-${this.step}`;
    switch (target.kind) {
      case "own": {
        const mine = this.live.filter((s) => s.owner === caller);
        return session(
          this.#pick(mine, target.pick) ?? this.#pick(this.live, target.pick),
          unseen(),
        );
      }
      case "busy": {
        const busy = this.live.filter((s) => s.tracked.length + s.abandoned.length > 0);
        const mine = busy.filter((s) => s.owner === caller);
        const chosen = this.#pick(mine, target.pick) ?? this.#pick(busy, target.pick);
        if (chosen !== undefined) return session(chosen, unseen());
        return this.#resolve({ kind: "own", pick: target.pick }, caller);
      }
      case "other":
        return session(
          this.#pick(this.live.filter((s) => s.owner !== caller), target.pick),
          unseen(),
        );
      case "live":
        return session(this.#pick(this.live, target.pick), unseen());
      case "deleted": {
        const s = this.#pick(this.deleted, target.pick);
        return s === undefined
          ? session(undefined, unseen())
          : { header: s.id, twice: false, session: undefined, label: `deleted ${s.label}` };
      }
      case "guess":
        return { header: target.value, twice: false, session: undefined, label: "guess" };
      case "near": {
        const s = this.#pick(this.live, target.pick);
        if (s === undefined) return session(undefined, unseen());
        const id = s.id;
        const near = target.how === "upper"
          ? id.toUpperCase()
          : target.how === "suffix"
          ? `${id}0`
          : target.how === "prefix"
          ? `0${id}`
          : id.slice(0, -1);
        // An id without letters has no upper case: same id, same session.
        return near === id ? session(s, unseen()) : {
          header: near,
          twice: false,
          session: undefined,
          label: `${target.how} of ${s.label}`,
        };
      }
      case "malformed":
        return { header: target.value, twice: false, session: undefined, label: "malformed" };
      case "twice": {
        const s = this.#pick(this.live, target.pick);
        const id = s?.id ?? "x";
        return { header: id, twice: true, session: undefined, label: `twice ${s?.label ?? "x"}` };
      }
      case "none":
        return { header: null, twice: false, session: undefined, label: "no session" };
    }
  }

  /** The header value the server receives. */
  #sent(resolved: Resolved): string | null {
    if (resolved.header === null) return null;
    return resolved.twice ? `${resolved.header}, ${resolved.header}` : resolved.header;
  }

  #headers(caller: Caller, resolved: Resolved, extra: Record<string, string> = {}): Headers {
    const headers = new Headers({
      accept: "application/json, text/event-stream",
      "mcp-protocol-version": PROTOCOL_VERSION,
      "x-fuzz-step": `${this.runNo}.${this.step}`,
      ...extra,
    });
    const auth = AUTHORIZATION[caller];
    if (auth !== null) headers.set("authorization", auth);
    if (resolved.header !== null) {
      headers.append("mcp-session-id", resolved.header);
      if (resolved.twice) headers.append("mcp-session-id", resolved.header);
    }
    return headers;
  }

  #newId(numeric: boolean): RequestId {
    const n = this.#nextId++;
    return numeric ? n : String(n);
  }

  // --- the guard's rules, re-stated --------------------------------------------------------------

  /**
   * The guard's answer before the handler: `null` when the request must reach
   * it. `body` is the refusal a POST body earns (checked after the caller is
   * identified, before the owner).
   */
  #gate(
    method: string,
    caller: Caller,
    resolved: Resolved,
    body: Refusal | null,
    rpcId: RequestId | null,
  ): Refusal | null {
    const sent = this.#sent(resolved);
    if (method !== "GET" && method !== "POST" && method !== "DELETE") {
      return refusal(405, "method-not-allowed");
    }
    if (sent !== null && !validSessionId(sent)) return refusal(400, "invalid-session-id");
    if (!isIdentified(caller)) return refusal(401, "anonymous");
    if (method === "POST" && body !== null) return body;
    if (sent === null) return null;
    const session = resolved.session;
    // An unknown session is answered as the SDK answers it, with `"id": null`.
    if (session === undefined) return refusal(404, "unknown-session");
    if (session.owner !== caller) {
      if (this.target.notOwnerStatus === 404) {
        const r = refusal(404, "not-owner");
        r.code = REFUSAL_CODES["unknown-session"];
        return r;
      }
      return refusal(403, "not-owner", rpcId);
    }
    return null;
  }

  // --- one step ------------------------------------------------------------------------------

  async run(cmd: Command): Promise<void> {
    if (cmd.t === "skip") return;
    this.step++;
    if (cmd.t === "abandon") return await this.#abandon(cmd.pick);
    const line = `step ${this.step}: ${describeCommand(cmd)}`;
    switch (cmd.t) {
      case "post":
        return await this.#post(cmd, line);
      case "cancel":
        return await this.#cancel(cmd, line);
      case "get":
        return await this.#get(cmd, line);
      case "delete":
        return await this.#delete(cmd, line);
      case "malformed":
        return await this.#malformed(cmd, line);
      case "method":
        return await this.#method(cmd, line);
    }
  }

  async #post(cmd: Extract<Command, { t: "post" }>, line: string): Promise<void> {
    const resolved = this.#resolve(cmd.target, cmd.caller);
    const id = this.#newId(cmd.numericId);
    const { body, rpcMethod, rpcId } = messageBody(cmd.msg, id);
    const out: Outgoing = {
      method: "POST",
      headers: this.#headers(cmd.caller, resolved, {
        "content-type": "application/json",
        ...(cmd.jsonOnly ? { accept: "application/json" } : {}),
      }),
      body,
      rpcId,
      rpcMethod,
    };
    const refused = this.#gate("POST", cmd.caller, resolved, null, rpcId);
    let expect: Expectation;
    if (refused !== null) {
      expect = refused;
    } else if (cmd.jsonOnly) {
      expect = {
        outcome: "allow",
        reason: "allowed",
        answer: { kind: "json-error", status: 406, code: -32000 },
      };
    } else if (resolved.header === null) {
      expect = cmd.msg === "initialize"
        ? { outcome: "allow", reason: "allowed", answer: { kind: "sse-answer", status: 200 } }
        : {
          outcome: "allow",
          reason: "allowed",
          answer: { kind: "json-error", status: 400, code: -32000 },
        };
    } else {
      expect = { outcome: "allow", reason: "allowed", answer: answerInSession(cmd.msg) };
    }
    const where = `${cmd.caller} → ${resolved.label}`;
    const seen = await this.#send(
      out,
      line,
      where,
      expect,
      resolved,
      cmd.caller,
      cmd.msg === "count" && expect.outcome === "allow" && expect.answer.kind === "sse-open",
    );
    if (expect.outcome === "refuse") return;
    if (resolved.header === null && cmd.msg === "initialize" && !cmd.jsonOnly) {
      const sid = seen.headers.get("mcp-session-id");
      if (sid === null || !validSessionId(sid) || this.byId.has(sid)) {
        this.#fail(line, where, `initialize answered session id ${JSON.stringify(sid)}`);
      }
      const session: Session = {
        id: sid!,
        label: `S${++this.#labels}(${cmd.caller})`,
        owner: cmd.caller as Owner,
        tracked: [],
        abandoned: [],
      };
      this.live.push(session);
      this.byId.set(session.id, session);
      this.created.add(session.id);
      this.log.push(`${line} => ${session.label} created`);
    }
    if (cmd.msg === "count" && expect.answer.kind === "sse-open") {
      const session = resolved.session!;
      const key = cancelKeyOf(session.id, id);
      session.tracked.push(id);
      this.launched.add(key);
      // The tool runs (60 s steps) until its owner cancels it or the session ends.
      await eventually(
        () => this.#toolEvents().some((e) => e.kind === "started" && this.#keyOf(e) === key),
        `${line}: the count tool to start`,
      ).catch((err) => this.#fail(line, where, String(err)));
    }
  }

  async #cancel(cmd: Extract<Command, { t: "cancel" }>, line: string): Promise<void> {
    const resolved = this.#resolve(cmd.target, cmd.caller);
    const inTarget = resolved.session === undefined
      ? []
      : [...resolved.session.tracked, ...resolved.session.abandoned];
    const anywhere = this.live.flatMap((s) => [...s.tracked, ...s.abandoned]);
    let rid: RequestId | undefined;
    switch (cmd.rid.kind) {
      case "target":
        rid = this.#pick(inTarget, cmd.rid.pick) ?? this.#pick(anywhere, cmd.rid.pick) ?? 1;
        break;
      case "any":
        rid = this.#pick(anywhere, cmd.rid.pick) ?? 1;
        break;
      case "flipped": {
        const r = this.#pick(inTarget, cmd.rid.pick) ?? this.#pick(anywhere, cmd.rid.pick) ?? 1;
        rid = typeof r === "number" ? String(r) : Number(r);
        break;
      }
      case "random":
        rid = cmd.rid.value;
        break;
      case "absent":
        rid = undefined;
    }
    const params: Record<string, unknown> = { reason: "fuzz" };
    if (rid !== undefined) params.requestId = rid;
    const out: Outgoing = {
      method: "POST",
      headers: this.#headers(cmd.caller, resolved, { "content-type": "application/json" }),
      body: JSON.stringify({ jsonrpc: "2.0", method: "notifications/cancelled", params }),
      rpcId: null,
      rpcMethod: "notifications/cancelled",
    };
    const refused = this.#gate("POST", cmd.caller, resolved, null, null);
    const session = resolved.session;
    let expect: Expectation;
    let cancels: RequestId | undefined;
    if (refused !== null) {
      expect = refused;
    } else if (resolved.header === null) {
      // No session: the guard treats it as any session-less message; the SDK refuses it.
      expect = {
        outcome: "allow",
        reason: "allowed",
        answer: { kind: "json-error", status: 400, code: -32000 },
      };
    } else {
      const tracked = rid !== undefined && session!.tracked.some((r) => r === rid);
      if (tracked) cancels = rid;
      expect = {
        outcome: "allow",
        reason: tracked ? "cancelled" : "cancel-unmatched",
        answer: { kind: "empty", status: 202 },
      };
    }
    const where = `${cmd.caller} → ${resolved.label}, requestId ${JSON.stringify(rid)}`;
    await this.#send(out, line, where, expect, resolved, cmd.caller, false);
    if (expect.outcome !== "allow" || session === undefined) return;
    // Only the owner's cancellation, in the request's own session, may stop it.
    if (rid !== undefined && session.abandoned.some((r) => r === rid)) {
      this.mayStop.add(cancelKeyOf(session.id, rid));
    }
    if (cancels !== undefined) {
      const key = cancelKeyOf(session.id, cancels);
      session.tracked = session.tracked.filter((r) => r !== cancels);
      this.mayStop.add(key);
      await eventually(
        () => this.#toolEvents().some((e) => e.kind === "stopped" && this.#keyOf(e) === key),
        `${line}: the cancelled tool to stop`,
      ).catch((err) => this.#fail(line, where, String(err)));
      this.#closeOpen(key);
    }
  }

  async #get(cmd: Extract<Command, { t: "get" }>, line: string): Promise<void> {
    const resolved = this.#resolve(cmd.target, cmd.caller);
    const out: Outgoing = {
      method: "GET",
      headers: this.#headers(cmd.caller, resolved, {
        accept: cmd.jsonOnly ? "application/json" : "text/event-stream",
      }),
      rpcId: null,
      rpcMethod: null,
    };
    const refused = this.#gate("GET", cmd.caller, resolved, null, null);
    // No session id: the handler's own answer (the example app: 400, as the SDK 1.32 transport).
    const expect: Expectation = refused ?? {
      outcome: "allow",
      reason: "allowed",
      answer: resolved.header === null
        ? { kind: "json-error", status: 400, code: -32000 }
        : cmd.jsonOnly
        ? { kind: "json-error", status: 406, code: -32000 }
        : { kind: "sse-open", status: 200 },
    };
    const where = `${cmd.caller} → ${resolved.label}`;
    await this.#send(out, line, where, expect, resolved, cmd.caller, false);
    if (expect.outcome === "allow" && resolved.header !== null) {
      // The stream was closed at once: its pin must go (and the SDK's stream with it).
      await eventually(
        async () => (await this.target.owners.stats()).pinned === 0,
        `${line}: the listening stream's pin to be released`,
      ).catch((err) => this.#fail(line, where, String(err)));
    }
  }

  async #delete(cmd: Extract<Command, { t: "delete" }>, line: string): Promise<void> {
    const resolved = this.#resolve(cmd.target, cmd.caller);
    const out: Outgoing = {
      method: "DELETE",
      headers: this.#headers(
        cmd.caller,
        resolved,
        cmd.badVersion ? { "mcp-protocol-version": "1999-01-01" } : {},
      ),
      rpcId: null,
      rpcMethod: null,
    };
    const refused = this.#gate("DELETE", cmd.caller, resolved, null, null);
    const expect: Expectation = refused ?? {
      outcome: "allow",
      reason: "allowed",
      answer: cmd.badVersion || resolved.header === null
        ? { kind: "json-error", status: 400, code: -32000 }
        : { kind: "empty", status: 200 },
    };
    const where = `${cmd.caller} → ${resolved.label}`;
    await this.#send(out, line, where, expect, resolved, cmd.caller, false);
    if (expect.outcome === "allow" && !cmd.badVersion && resolved.header !== null) {
      this.#ended(resolved.session!);
    }
  }

  async #malformed(cmd: Extract<Command, { t: "malformed" }>, line: string): Promise<void> {
    const resolved = this.#resolve(cmd.target, cmd.caller);
    const bad = malformedBody(cmd.kind, this.target.maxBodyBytes);
    const out: Outgoing = {
      method: "POST",
      headers: this.#headers(cmd.caller, resolved, bad.headers),
      body: bad.body,
      rpcId: null,
      rpcMethod: null,
    };
    if (bad.deleteContentType) out.headers.delete("content-type");
    const expect = this.#gate("POST", cmd.caller, resolved, bad.refusal, null) ?? bad.refusal;
    const where = `${cmd.caller} → ${resolved.label}`;
    await this.#send(out, line, where, expect, resolved, cmd.caller, false);
  }

  async #method(cmd: Extract<Command, { t: "method" }>, line: string): Promise<void> {
    const resolved = this.#resolve(cmd.target, cmd.caller);
    const out: Outgoing = {
      method: cmd.method,
      headers: this.#headers(cmd.caller, resolved, { "content-type": "application/json" }),
      body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "ping" }),
      rpcId: null,
      rpcMethod: null,
    };
    const expect = this.#gate(cmd.method, cmd.caller, resolved, null, null)!;
    const where = `${cmd.caller} → ${resolved.label}`;
    const seen = await this.#send(out, line, where, expect, resolved, cmd.caller, false);
    if (seen.headers.get("allow") !== "GET, POST, DELETE") {
      this.#fail(line, where, `405 without Allow: GET, POST, DELETE`);
    }
  }

  /** The client of an in-flight call goes away: the guard must drop its entry. */
  async #abandon(pick: number): Promise<void> {
    const line = `step ${this.step}: client drops in-flight call #${pick}`;
    const all = this.live.flatMap((s) => s.tracked.map((rid) => ({ s, rid })));
    const chosen = this.#pick(all, pick);
    if (chosen === undefined) {
      this.log.push(`${line} (none in flight)`);
      this.tally.set(
        "abandon (none in flight)",
        (this.tally.get("abandon (none in flight)") ?? 0) + 1,
      );
      return;
    }
    this.tally.set("abandon", (this.tally.get("abandon") ?? 0) + 1);
    const { s, rid } = chosen;
    const key = cancelKeyOf(s.id, rid);
    this.log.push(`${line} => ${s.label} request ${JSON.stringify(rid)}`);
    s.tracked = s.tracked.filter((r) => r !== rid);
    s.abandoned.push(rid);
    this.#closeOpen(key);
    const expected = this.baseline.tracked + this.live.reduce((n, x) => n + x.tracked.length, 0);
    await eventually(
      async () => (await this.target.cancellations.size()) === expected,
      `${line}: the guard to drop the entry (expected ${expected} tracked)`,
    ).catch((err) => this.#fail(line, `${s.label}`, String(err)));
  }

  /** A session ended (DELETE by its owner): its requests may stop, it is gone. */
  #ended(session: Session): void {
    for (const rid of [...session.tracked, ...session.abandoned]) {
      const key = cancelKeyOf(session.id, rid);
      this.mayStop.add(key);
    }
    session.tracked = [];
    session.abandoned = [];
    this.live.splice(this.live.indexOf(session), 1);
    this.byId.delete(session.id);
    this.deleted.push(session);
  }

  /**
   * A `notifications/cancelled` the guard itself sent (carrying the headers of the request it
   * stops) because the request's session ended: its owner deleted it (`ending`: in this very
   * step). Allowed only for a request of that session the model knows was in flight, on
   * behalf of its owner: never for another session, another principal, or a live session.
   */
  #serverCancel(r: HandlerRecord, ending: Session | undefined): boolean {
    if (r.method !== "POST" || r.cancels === undefined || r.sessionId === null) return false;
    if (!r.cancels.reason.startsWith(SERVER_CANCEL)) return false;
    const rid = r.cancels.requestId;
    if (typeof rid !== "string" && typeof rid !== "number") return false;
    if (ending !== undefined && ending.id === r.sessionId) {
      return r.principal === ending.owner &&
        [...ending.tracked, ...ending.abandoned].includes(rid);
    }
    const ended = this.deleted.find((s) => s.id === r.sessionId);
    return ended !== undefined && r.principal === ended.owner &&
      this.mayStop.has(cancelKeyOf(ended.id, rid));
  }

  #closeOpen(key: string): void {
    const response = this.open.get(key);
    if (response === undefined) return;
    this.open.delete(key);
    response.body?.cancel().catch(() => {});
  }

  /**
   * Tool events in this run's sessions (a tool in a session the model does not know would
   * need an SDK session the model does not know: checkInvariants catches that first).
   */
  #toolEvents(): ToolEvent[] {
    return this.target.tools.slice(this.toolsFrom).filter((e) =>
      this.created.has(e.sessionId ?? "")
    );
  }

  /** Every tool started in this run has stopped or completed. */
  #toolsDone(): boolean {
    const events = this.#toolEvents();
    const started = events.filter((e) => e.kind === "started").length;
    return events.filter((e) => e.kind === "stopped" || e.kind === "completed").length === started;
  }

  #keyOf(event: ToolEvent): string {
    return cancelKeyOf(event.sessionId ?? "", event.requestId);
  }

  // --- sending and checking ------------------------------------------------------------------

  async #send(
    out: Outgoing,
    line: string,
    where: string,
    expect: Expectation,
    resolved: Resolved,
    caller: Caller,
    keepOpen: boolean,
  ): Promise<Seen> {
    const target = this.target;
    this.requests++;
    const ownersBefore = new Map([...this.byId].map(([id, s]) => [id, s.owner]));
    const decisions: GuardDecision[] = [];
    const recordsBefore = target.records.length;
    target.sink = decisions;
    let response: Response;
    try {
      response = await withTimeout(
        fetch(target.url, { method: out.method, headers: out.headers, body: out.body }),
        10_000,
        line,
      );
    } finally {
      target.sink = null;
    }
    const contentType = response.headers.get("content-type");
    let text: string | null = null;
    // An event stream is read to its end only when it should carry one answer and close;
    // any other (a listening stream, a running call, or one the guard should have refused)
    // is kept (a running call) or cancelled at once.
    const eventStream = contentType?.startsWith("text/event-stream") === true;
    const wantsAnswer = expect.outcome === "allow" && expect.answer.kind === "sse-answer";
    if (eventStream && !wantsAnswer) {
      const running = keepOpen && response.status === 200;
      if (running) this.open.set(cancelKeyOf(resolved.session!.id, out.rpcId!), response);
      else await response.body?.cancel();
    } else {
      text = await withTimeout(response.text(), 5_000, `${line}: reading the body`).catch(
        async (err) => {
          await response.body?.cancel().catch(() => {});
          throw err;
        },
      );
    }
    const seen: Seen = { status: response.status, contentType, text, headers: response.headers };
    const summary = `${out.method} ${seen.status}${
      text === null ? " (event stream)" : ` ${text.slice(0, 160).replaceAll("\n", "\\n")}`
    }`;
    this.log.push(`${line} => ${summary}`);
    const tallyKey = `${out.method} ${seen.status} ${
      expect.outcome === "refuse" ? expect.reason : `${expect.reason}/${expect.answer.kind}`
    }`;
    this.tally.set(tallyKey, (this.tally.get(tallyKey) ?? 0) + 1);
    const fail = (message: string) =>
      this.#fail(
        line,
        where,
        `${message}\n  expected: ${describeExpectation(expect)}\n  got: ${summary}`,
      );

    // (1) What reached the handler: nothing for a refusal; for an allowed request, only the
    // session's owner (as the model knows it), with the caller's identity.
    const step = `${this.runNo}.${this.step}`;
    const reached = target.records.slice(recordsBefore).filter((r) => r.step === step);
    const ending = out.method === "DELETE" && expect.outcome === "allow" ? resolved.session : null;
    const strays = target.records.slice(recordsBefore).filter((r) =>
      r.step !== step && !this.#serverCancel(r, ending ?? undefined)
    );
    if (strays.length > 0) fail(`the handler got requests of no step: ${JSON.stringify(strays)}`);
    for (const r of reached) {
      if (r.principal !== (isIdentified(caller) ? caller : null)) {
        fail(`the handler got principal ${r.principal} for ${caller}`);
      }
      if (r.sessionId !== null) {
        const owner = ownersBefore.get(r.sessionId);
        if (owner !== caller) {
          fail(
            `${caller}'s ${r.method} reached the handler with session ${
              JSON.stringify(r.sessionId.slice(0, 64))
            }, which ${owner === undefined ? "nobody owns" : `belongs to ${owner}`}`,
          );
        }
      }
    }
    if (expect.outcome === "refuse" && reached.length > 0) {
      fail(`refusal expected, but ${reached.length} request(s) reached the handler`);
    }
    if (expect.outcome === "allow" && reached.length !== 1) {
      fail(`one request should reach the handler, ${reached.length} did`);
    }

    // The decisions: one per request (initialize: "allowed", then "bound").
    const sessionHeader = this.#sent(resolved);
    const validSid = sessionHeader !== null && validSessionId(sessionHeader) ? sessionHeader : null;
    const shown = JSON.stringify(decisions);
    if (expect.outcome === "refuse") {
      const d = decisions[0];
      const before = ["method-not-allowed", "invalid-session-id"];
      const ownerCheck = expect.reason === "not-owner" || expect.reason === "unknown-session";
      if (
        decisions.length !== 1 || d.outcome !== "refuse" || d.reason !== expect.reason ||
        d.status !== expect.status || d.method !== out.method ||
        d.sessionId !== (before.includes(expect.reason) ? null : validSid) ||
        d.rpcMethod !== (ownerCheck && out.method === "POST" ? out.rpcMethod : null)
      ) {
        fail(`decisions ${shown}`);
      }
    } else {
      const initialized = out.rpcMethod === "initialize" && sessionHeader === null &&
        expect.answer.status === 200;
      const want: Partial<GuardDecision>[] = [{
        outcome: "allow",
        reason: expect.reason as GuardDecision["reason"],
        status: null,
        method: out.method,
        rpcMethod: out.rpcMethod,
        sessionId: validSid,
      }];
      if (initialized) {
        want.push({
          outcome: "allow",
          reason: "bound",
          status: null,
          method: "POST",
          rpcMethod: "initialize",
          sessionId: response.headers.get("mcp-session-id"),
        });
      }
      if (
        decisions.length !== want.length ||
        want.some((w, i) =>
          Object.entries(w).some(([k, v]) => decisions[i][k as keyof GuardDecision] !== v)
        )
      ) {
        fail(`decisions ${shown}, wanted ${JSON.stringify(want)}`);
      }
    }

    // (2) The answer: status, and a well-formed body.
    const wantStatus = expect.outcome === "refuse" ? expect.status : expect.answer.status;
    if (seen.status !== wantStatus) fail(`status ${seen.status}, expected ${wantStatus}`);
    if (expect.outcome === "refuse") {
      const body = this.#rpcError(text, contentType, fail);
      if (body.error.code !== expect.code) fail(`error code ${body.error.code}`);
      if (body.id !== expect.id) fail(`error id ${JSON.stringify(body.id)}`);
      if (expect.reason === "unknown-session" || expect.code === REFUSAL_CODES["unknown-session"]) {
        // An unknown session reads as the SDK's own answer to one, byte for byte; with
        // notOwnerStatus 404, another's session reads exactly the same.
        if (text !== SDK_UNKNOWN_SESSION) fail(`unknown-session body differs: ${text}`);
      }
      if (expect.reason === "anonymous" && seen.headers.get("www-authenticate") !== "Bearer") {
        fail("401 without WWW-Authenticate: Bearer");
      }
      return seen;
    }
    const answer = expect.answer;
    switch (answer.kind) {
      case "json-error": {
        const body = this.#rpcError(text, contentType, fail);
        if (body.error.code !== answer.code) fail(`error code ${body.error.code}`);
        break;
      }
      case "empty":
        if (text !== "") fail(`expected no body`);
        break;
      case "sse-open":
        if (!contentType?.startsWith("text/event-stream")) fail(`content-type ${contentType}`);
        break;
      case "sse-answer": {
        if (!contentType?.startsWith("text/event-stream")) fail(`content-type ${contentType}`);
        const messages = parseSse(text ?? "", fail);
        const reply = messages.find((m) => m.id === out.rpcId);
        if (reply === undefined) fail(`no answer to id ${JSON.stringify(out.rpcId)} in the stream`);
        const r = reply as Record<string, unknown>;
        if (("result" in r) === ("error" in r)) fail(`not a JSON-RPC answer`);
        if (
          out.rpcMethod === "tools/call" && (r.result as { content?: { text?: string }[] })
              ?.content?.[0]?.text !== `fuzz-${out.rpcId}`
        ) {
          fail(`echo answered ${JSON.stringify(r.result)}`);
        }
        if (out.rpcMethod === "fuzz/unknown" && (r.error as { code?: number })?.code !== -32601) {
          fail(`unknown method answered ${JSON.stringify(r)}`);
        }
        if (
          out.rpcMethod === "initialize" && typeof (r.result as { protocolVersion?: unknown })
              ?.protocolVersion !== "string"
        ) {
          fail(`initialize answered ${JSON.stringify(r)}`);
        }
        break;
      }
    }
    return seen;
  }

  #rpcError(
    text: string | null,
    contentType: string | null,
    fail: (message: string) => never,
  ): { error: { code: number; message: string }; id: RequestId | null } {
    if (contentType === null || !contentType.toLowerCase().startsWith("application/json")) {
      fail(`error answer with content-type ${contentType}`);
    }
    let body: unknown;
    try {
      body = JSON.parse(text ?? "");
    } catch {
      fail(`error answer is not JSON`);
    }
    const b = body as Record<string, unknown>;
    const error = b?.error as Record<string, unknown> | undefined;
    if (
      b === null || typeof b !== "object" || b.jsonrpc !== "2.0" || error === undefined ||
      typeof error.code !== "number" || typeof error.message !== "string" ||
      !("id" in b) || !(b.id === null || typeof b.id === "string" || typeof b.id === "number")
    ) {
      fail(`not a JSON-RPC error body`);
    }
    return b as { error: { code: number; message: string }; id: RequestId | null };
  }

  #fail(line: string, where: string, message: string): never {
    const recent = this.log.slice(-12).map((l) => `    ${l}`).join("\n");
    throw new StepFailure(
      `run ${this.runNo}, ${line}\n  (${where})\n  ${message}\n  last steps of this run:\n${recent}`,
    );
  }

  /** Checks that run after every step: the SDK's sessions and stopped tools match the model. */
  checkInvariants(): void {
    const line = `after step ${this.step}`;
    const sdk = [...this.target.app.sessions.keys()].sort();
    const model = this.live.map((s) => s.id).sort();
    if (JSON.stringify(sdk) !== JSON.stringify(model)) {
      this.#fail(
        line,
        "SDK sessions",
        `the SDK holds ${sdk.length} session(s), the model ${model.length}: ${
          JSON.stringify(sdk.filter((s) => !model.includes(s)).map((s) => s.slice(0, 40)))
        } unexpected, ${
          JSON.stringify(model.filter((s) => !sdk.includes(s)).map((s) => this.byId.get(s)?.label))
        } missing`,
      );
    }
    for (const event of this.#toolEvents()) {
      const key = this.#keyOf(event);
      if (!this.launched.has(key)) {
        this.#fail(line, "tools", `a tool ran that no owner started: ${JSON.stringify(event)}`);
      }
      if (event.kind === "stopped" && !this.mayStop.has(key)) {
        this.#fail(
          line,
          "tools",
          `a tool stopped that its owner never cancelled: ${JSON.stringify(event)}`,
        );
      }
    }
    if (this.target.orphans.length > 0) {
      this.#fail(
        line,
        "decisions",
        `decisions outside any step: ${JSON.stringify(this.target.orphans)}`,
      );
    }
    if (this.target.errors.length > 0) {
      this.#fail(
        line,
        "onError",
        `the guard reported errors: ${
          this.target.errors.map((e) => `${e.context}: ${e.error}`).join("; ")
        }`,
      );
    }
  }

  /** End of run: the registries agree with the model; then every session is deleted by its owner. */
  async finish(): Promise<void> {
    for (const s of this.live) {
      const owner = await this.target.owners.ownerOf(s.id);
      if (owner !== this.prints[s.owner]) {
        this.#fail("end of run", s.label, `the registry names another owner: ${owner}`);
      }
    }
    for (const s of [...this.live]) {
      const pick = this.live.indexOf(s);
      await this.run({
        t: "delete",
        caller: s.owner,
        target: { kind: "live", pick },
        badVersion: false,
      });
      this.checkInvariants();
    }
    for (const s of this.deleted) {
      const owner = await this.target.owners.ownerOf(s.id);
      if (owner !== null) this.#fail("end of run", s.label, `deleted, still owned by ${owner}`);
    }
    for (const key of [...this.open.keys()]) this.#closeOpen(key);
    const line = "end of run";
    await eventually(() => this.#toolsDone(), `${line}: every tool to stop`)
      .catch((err) => this.#fail(line, "tools", String(err)));
    await eventually(
      async () => (await this.target.cancellations.size()) === this.baseline.tracked,
      `${line}: no tracked request left`,
    ).catch((err) => this.#fail(line, "cancellations", String(err)));
    const stats = await this.target.owners.stats();
    if (stats.pinned !== 0 || stats.size !== this.baseline.bindings) {
      this.#fail(
        line,
        "owners",
        `bindings left: ${JSON.stringify(stats)} (${this.baseline.bindings} before the run)`,
      );
    }
  }

  /** After a failure: close what is open and drop what the run left, without checking. */
  async abort(): Promise<void> {
    for (const key of [...this.open.keys()]) this.#closeOpen(key);
    for (const s of this.live) {
      await this.target.owners.forget(s.id).catch(() => {});
      await this.target.cancellations.cancelAll(s.id).catch(() => {});
    }
    await this.target.app.close();
    await eventually(() => this.#toolsDone(), "tools to stop", 2_000).catch(() => {});
    this.target.orphans.length = 0;
    this.target.errors.length = 0;
  }
}

function answerInSession(msg: Message): Answer {
  switch (msg) {
    case "echo":
    case "ping":
    case "unknown-method":
      return { kind: "sse-answer", status: 200 };
    case "count":
      return { kind: "sse-open", status: 200 };
    case "notification":
    case "response":
      return { kind: "empty", status: 202 };
    case "initialize":
      // The SDK refuses a second initialize in a session.
      return { kind: "json-error", status: 400, code: -32600 };
  }
}

function messageBody(
  msg: Message,
  id: RequestId,
): { body: string; rpcMethod: string | null; rpcId: RequestId | null } {
  const request = (method: string, params?: unknown) => ({
    body: JSON.stringify({ jsonrpc: "2.0", id, method, ...(params ? { params } : {}) }),
    rpcMethod: method,
    rpcId: id,
  });
  switch (msg) {
    case "echo":
      return request("tools/call", { name: "echo", arguments: { text: `fuzz-${id}` } });
    case "count":
      return request("tools/call", { name: "count", arguments: { steps: 1, stepMs: 60_000 } });
    case "ping":
      return request("ping");
    case "unknown-method":
      return request("fuzz/unknown", {});
    case "initialize":
      return request("initialize", {
        protocolVersion: PROTOCOL_VERSION,
        capabilities: {},
        clientInfo: { name: "guard-fuzz", version: "0.0.0" },
      });
    case "notification":
      return {
        body: JSON.stringify({ jsonrpc: "2.0", method: "notifications/roots/list_changed" }),
        rpcMethod: "notifications/roots/list_changed",
        rpcId: null,
      };
    case "response":
      return {
        body: JSON.stringify({ jsonrpc: "2.0", id, result: {} }),
        rpcMethod: null,
        rpcId: id,
      };
  }
}

function malformedBody(
  kind: Malformed,
  maxBodyBytes: number,
): {
  body: BodyInit;
  headers: Record<string, string>;
  deleteContentType?: boolean;
  refusal: Refusal;
} {
  const json = { "content-type": "application/json" };
  const ping = JSON.stringify({ jsonrpc: "2.0", id: 1, method: "ping" });
  const bad = (body: string, status: number, reason: string, id: RequestId | null = null) => ({
    body,
    headers: json,
    refusal: refusal(status, reason, id),
  });
  switch (kind) {
    case "bad-json":
      return bad('{"jsonrpc": "2.0", "id": 1, "method": "ping"', 400, "parse-error");
    case "empty-body":
      return bad("", 400, "parse-error");
    case "batch":
      return bad(`[${ping}, ${ping}]`, 400, "batch");
    case "empty-batch":
      return bad("[]", 400, "batch");
    case "jsonrpc-1.0":
      return bad(
        JSON.stringify({ jsonrpc: "1.0", id: 4, method: "ping" }),
        400,
        "invalid-request",
        4,
      );
    case "scalar":
      return bad('"ping"', 400, "invalid-request");
    case "no-method":
      return bad(JSON.stringify({ jsonrpc: "2.0", id: 5 }), 400, "invalid-request", 5);
    case "empty-method":
      return bad(JSON.stringify({ jsonrpc: "2.0", id: 6, method: "" }), 400, "invalid-request", 6);
    case "array-params":
      return bad(
        JSON.stringify({ jsonrpc: "2.0", id: 7, method: "tools/list", params: [1] }),
        400,
        "invalid-params",
        7,
      );
    case "result-and-error":
      return bad(
        JSON.stringify({ jsonrpc: "2.0", id: 8, result: {}, error: { code: 1, message: "x" } }),
        400,
        "invalid-request",
        8,
      );
    case "text/plain":
      return {
        body: ping,
        headers: { "content-type": "text/plain" },
        refusal: refusal(415, "unsupported-media-type"),
      };
    case "application/json-seq":
      return {
        body: ping,
        headers: { "content-type": "application/json-seq" },
        refusal: refusal(415, "unsupported-media-type"),
      };
    case "no-content-type":
      return {
        body: new TextEncoder().encode(ping),
        headers: {},
        deleteContentType: true,
        refusal: refusal(415, "unsupported-media-type"),
      };
    case "too-large":
      return {
        body: JSON.stringify({
          jsonrpc: "2.0",
          id: 9,
          method: "ping",
          params: { pad: "x".repeat(maxBodyBytes) },
        }),
        headers: json,
        refusal: refusal(413, "body-too-large"),
      };
  }
}

function describeExpectation(expect: Expectation): string {
  if (expect.outcome === "refuse") {
    return `refused ${expect.status} ${expect.reason} (code ${expect.code}, id ${
      JSON.stringify(expect.id)
    })`;
  }
  return `allowed (${expect.reason}), handler answers ${expect.answer.status} ${expect.answer.kind}`;
}

/** The JSON-RPC messages of an SSE body (events without data are skipped). */
function parseSse(text: string, fail: (message: string) => never): Record<string, unknown>[] {
  const messages: Record<string, unknown>[] = [];
  for (const event of text.split(/\r?\n\r?\n/)) {
    const data = event.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) =>
      l.slice(5).trimStart()
    ).join("\n");
    if (data === "") continue;
    let message: unknown;
    try {
      message = JSON.parse(data);
    } catch {
      fail(`SSE event data is not JSON: ${data.slice(0, 80)}`);
    }
    const m = message as Record<string, unknown>;
    if (m === null || typeof m !== "object" || m.jsonrpc !== "2.0") {
      fail(`SSE event is not a JSON-RPC message: ${data.slice(0, 80)}`);
    }
    messages.push(m);
  }
  return messages;
}

// ---------------------------------------------------------------------------------------------
// The property.
// ---------------------------------------------------------------------------------------------

/** Options of {@linkcode fuzzGuard}. */
export interface FuzzOptions {
  /** Command sequences to run. */
  runs: number;
  /** Commands per sequence. */
  steps: number;
  /** Replay a failure: fast-check's seed and path. */
  seed?: number;
  path?: string;
}

/** What {@linkcode fuzzGuard} ran (passing runs only). */
export interface FuzzReport {
  runs: number;
  /** Generated commands run (the clean-up DELETEs of each run excluded). */
  commands: number;
  /** HTTP requests sent and checked, clean-up included. */
  requests: number;
  /** "METHOD status reason" -> count, over every request. */
  tally: Record<string, number>;
}

async function baselineOf(target: FuzzTarget): Promise<{ bindings: number; tracked: number }> {
  return { bindings: await target.owners.size(), tracked: await target.cancellations.size() };
}

/** Runs one fixed command sequence (a scripted scenario, or a replayed counterexample). */
export async function runCommands(
  target: FuzzTarget,
  commands: Command[],
): Promise<{ log: string[]; tally: Record<string, number> }> {
  const prints = { alice: await fingerprint("alice"), bob: await fingerprint("bob") };
  const run = new Run(target, 0, prints, await baselineOf(target));
  try {
    for (const cmd of commands) {
      await run.run(cmd);
      run.checkInvariants();
    }
    await run.finish();
  } catch (err) {
    await run.abort();
    throw err;
  }
  return { log: run.log, tally: Object.fromEntries(run.tally) };
}

/** Runs the model-based property. */
export async function fuzzGuard(target: FuzzTarget, options: FuzzOptions): Promise<FuzzReport> {
  const prints = {
    alice: await fingerprint("alice"),
    bob: await fingerprint("bob"),
  };
  let runs = 0;
  const report: FuzzReport = { runs: 0, commands: 0, requests: 0, tally: {} };
  await fc.assert(
    fc.asyncProperty(
      fc.array(commandArb, { minLength: options.steps, maxLength: options.steps }),
      async (commands) => {
        const run = new Run(target, ++runs, prints, await baselineOf(target));
        try {
          for (const cmd of commands) {
            await run.run(cmd);
            run.checkInvariants();
          }
          const commandsRun = run.step;
          await run.finish();
          report.runs++;
          report.commands += commandsRun;
          report.requests += run.requests;
          for (const [k, n] of run.tally) report.tally[k] = (report.tally[k] ?? 0) + n;
        } catch (err) {
          await run.abort();
          throw err;
        }
      },
    ),
    {
      numRuns: options.runs,
      seed: options.seed,
      path: options.path,
      endOnFailure: options.path !== undefined,
      includeErrorInReport: true,
    },
  );
  return report;
}
