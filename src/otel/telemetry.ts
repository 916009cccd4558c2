/**
 * {@linkcode GuardTelemetry}: the guard's metrics, traces and audit trail
 * through the OpenTelemetry API. The only part of the package that imports
 * `@opentelemetry/api` (reached from `otel.ts` alone).
 *
 * A request is followed with an `AsyncLocalStorage` record (its start, the
 * handler's share of its time, who the caller is, the guard's last
 * decision), set up only when something is recorded: a telemetry with no
 * provider registered and no audit lines leaves the guard's options as they
 * were.
 *
 * @module
 */

import { AsyncLocalStorage } from "node:async_hooks";
import {
  type Attributes,
  type BatchObservableResult,
  type Counter,
  type Histogram,
  type Logger,
  type LoggerProvider,
  logs,
  type Meter,
  type MeterProvider,
  metrics,
  type Observable,
  SeverityNumber,
  type Span,
  SpanKind,
  SpanStatusCode,
  trace,
  type Tracer,
  type TracerProvider,
} from "@opentelemetry/api";
import type { ActorClient } from "../actor/actor_client.ts";
import { InvalidInputError } from "../core/errors.ts";
import { checkOptionKeys } from "../core/options_check.ts";
import { type GuardObserver, type ObservedRegistries, OBSERVER } from "../http/observer.ts";
import { isValidTaskId, relatedTask } from "../http/tasks.ts";
import type { GuardContext, GuardDecision, RequestHandler } from "../http/types.ts";
import type { HandleRegistry } from "../registry/handle_registry.ts";
import { handleOwners, type HandleRefusal, registryEvents } from "../registry/observers.ts";
import { clients } from "../registry/registry_options.ts";
import type { RegistryStore } from "../store/store.ts";
import { AuditKey, LineSink, type LineTarget, type RefusalRecord } from "./audit.ts";
import {
  ATTR,
  errorType,
  httpMethod,
  mcpMethod,
  METRIC,
  OPERATIONS,
  OTHER,
  REFUSAL_EVENT,
} from "./names.ts";

/** The scope name of every instrument, span and log record. */
const SCOPE = "@mcp-guard/session";

/** The OpenTelemetry API's global registry (see the API's "Version Compatibility" notes). */
const API_GLOBAL = Symbol.for("opentelemetry.js.api.1");

/** Whether a provider for `signal` is registered globally (Deno does for traces and metrics). */
function registered(signal: "trace" | "metrics" | "logs"): boolean {
  const api = (globalThis as Record<symbol, Record<string, unknown> | undefined>)[API_GLOBAL];
  return api?.[signal] !== undefined;
}

/** Boundaries (s) for the guard's own time per request: microseconds to a second. */
const GUARD_BUCKETS = [
  0.000005,
  0.00001,
  0.000025,
  0.00005,
  0.0001,
  0.00025,
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
];

/** Boundaries (s) for a registry call: a worker's microseconds to a store's timeout. */
const REGISTRY_BUCKETS = [
  0.00001,
  0.000025,
  0.00005,
  0.0001,
  0.00025,
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
];

/** A registry's statistics take at most this long to count in a collection (a hung worker). */
const STATS_TIMEOUT_MS = 1_000;

/** Refusals whose target is a task (the message's, hashed into the record). */
const TASK_REASONS: ReadonlySet<string> = new Set([
  "not-task-owner",
  "unknown-task",
  "header-mismatch",
]);

/** What a registry is to the guard: the `mcp_guard.registry` attribute. */
type Role = "session" | "task" | "cancellation" | "handle";

/** A registry being measured. */
interface Observed {
  role: Role;
  /** `mcp_guard.registry` and `mcp_guard.store`. */
  attrs: Attributes;
  stats: () => Promise<{ size: number; pinned?: number }>;
}

/** A registry that can say which bindings went away (a `SessionOwnerRegistry`). */
interface Removable {
  onRemoved?: (listener: (event: { cause: string; sessionIds: string[] }) => void) => unknown;
}

/** One request, from its arrival at the guard to the guard's answer. */
interface RequestRecord {
  start: number;
  /** Time (ms) spent in the wrapped handler, until its `Response` existed. */
  handlerMs: number;
  ctx: GuardContext | null;
  /** The last decision (a bound session's `"bound"` follows its `"allowed"`). */
  decision: GuardDecision | null;
  /** The request span (`Deno.serve`'s) when it is recording. */
  span: Span | undefined;
  key: AuditKey;
}

const requests = new AsyncLocalStorage<RequestRecord>();

/** `mcp_guard.store`: which store answers a registry's calls. */
function storeName(store: RegistryStore): string {
  if (store.kind === "memory") return "memory";
  if (store.url.endsWith("/redis/redis_backend.ts")) return "redis";
  if (store.url.endsWith("/kv/kv_backend.ts")) return "kv";
  return "custom";
}

/** The task a refused message names: its related-task first (the gate checks it first). */
function taskOf(body: unknown): string | null {
  if (typeof body !== "object" || body === null) return null;
  const related = relatedTask(body as { params?: unknown });
  if (related.kind === "task") return related.taskId;
  const taskId = (body as { params?: { taskId?: unknown } }).params?.taskId;
  return isValidTaskId(taskId) ? taskId : null;
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error("timed out")), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

/** An OpenTelemetry `MeterProvider` (an SDK's, or the API's `metrics.getMeterProvider()`). */
export interface MeterProviderLike {
  /** The API's `MeterProvider.getMeter`. */
  getMeter(name: string): unknown;
}

/** An OpenTelemetry `TracerProvider` (an SDK's, or the API's `trace.getTracerProvider()`). */
export interface TracerProviderLike {
  /** The API's `TracerProvider.getTracer`. */
  getTracer(name: string): unknown;
}

/** An OpenTelemetry `LoggerProvider` (an SDK's, or the API's `logs.getLoggerProvider()`). */
export interface LoggerProviderLike {
  /** The API's `LoggerProvider.getLogger`. */
  getLogger(name: string): unknown;
}

/**
 * Options of {@linkcode guardTelemetry}. Without providers, the global ones
 * are used: Deno registers a tracer and a meter provider with
 * `OTEL_DENO=true`; an SDK registers them with its `register()` /
 * `setGlobal...Provider`. Create the telemetry after that: a signal with no
 * provider at that moment is not recorded.
 */
export interface GuardTelemetryOptions {
  /**
   * Record metrics (with `meterProvider`, or the global meter provider if
   * one is registered).
   *
   * @default {true}
   */
  metrics?: boolean;
  /**
   * Put decisions on request spans and registry calls in child spans (with
   * `tracerProvider`, or the global tracer provider if one is registered).
   *
   * @default {true}
   */
  traces?: boolean;
  /** Where metrics go (default: the global meter provider, if one is registered). */
  meterProvider?: MeterProviderLike;
  /** Where spans go (default: the global tracer provider, if one is registered). */
  tracerProvider?: TracerProviderLike;
  /**
   * Where refusal records go as log records (default: the global logger
   * provider, if one is registered; Deno 2.9 registers none for this API,
   * but exports what the program prints: see `auditLines`).
   */
  loggerProvider?: LoggerProviderLike;
  /**
   * Emit each refusal as an OpenTelemetry log record, when there is a
   * logger provider.
   *
   * @default {true}
   */
  auditLogs?: boolean;
  /**
   * Also write each refusal as one line of JSON: to a function (such as
   * `console.log`: under `OTEL_DENO=true` Deno exports each printed line as
   * a log record of the request's trace) or to a byte stream (such as
   * `Deno.stdout.writable`; at most 1,024 lines wait for a slow stream, the
   * rest are dropped and counted in `mcp_guard.audit.dropped`).
   */
  auditLines?: ((line: string) => void) | WritableStream<Uint8Array>;
  /**
   * Each registry call a request makes as a child span of the request's
   * span (with its store, operation and duration).
   *
   * @default {true}
   */
  registrySpans?: boolean;
  /**
   * Key for the hashes of session, task and handle ids in refusal records
   * when the guard has no `secret` of its own, and for handles (see
   * {@linkcode GuardTelemetry.observeHandles}). Without any, ids are hashed
   * with plain SHA-256.
   */
  secret?: string | Uint8Array;
}

/**
 * The guard's telemetry: metrics, spans and an audit trail of refusals
 * through the OpenTelemetry API. Made by {@linkcode guardTelemetry}; plug it
 * into a guard with {@linkcode GuardTelemetry.instrument}.
 */
export class GuardTelemetry {
  readonly #tracer: Tracer | null;
  readonly #logger: Logger | null;
  readonly #meter: Meter | null;
  readonly #lines: LineSink | null;
  readonly #registrySpans: boolean;
  readonly #secret: string | Uint8Array | undefined;
  /** The first instrumented guard's secret (the default key for handles). */
  #guardSecret: string | Uint8Array | undefined;
  #attached = false;
  readonly #observed = new Map<ActorClient, Observed>();
  readonly #registries: object[] = [];
  readonly #cleanups: (() => void)[] = [];
  // Instruments exist when #meter does.
  #decisions!: Observable;
  /**
   * Decisions counted here and read at each collection: an attribute costs
   * Deno's exporter about 0.4 µs per recording, and a decision has six.
   * Every label is bounded, so the map is too.
   */
  readonly #decisionCounts = new Map<string, { attrs: Attributes; count: number }>();
  #duration!: Histogram;
  #registryDuration!: Histogram;
  #registryFailures!: Counter;
  #removed!: Counter;
  #cancellations!: Counter;
  #handleRefusals!: Counter;
  #errors!: Counter;
  #auditDropped!: Counter;
  #queueDepth!: Observable;
  #oldest!: Observable;
  #restarts!: Observable;
  #bindings!: Observable;
  #pinned!: Observable;
  #tracked!: Observable;

  /** See {@linkcode guardTelemetry}. */
  constructor(options: GuardTelemetryOptions = {}) {
    checkOptionKeys("guardTelemetry", options, [
      "metrics",
      "traces",
      "meterProvider",
      "tracerProvider",
      "loggerProvider",
      "auditLogs",
      "auditLines",
      "registrySpans",
      "secret",
    ]);
    const meterProvider = options.metrics === false
      ? undefined
      : (options.meterProvider as MeterProvider | undefined) ??
        (registered("metrics") ? metrics.getMeterProvider() : undefined);
    const tracerProvider = options.traces === false
      ? undefined
      : (options.tracerProvider as TracerProvider | undefined) ??
        (registered("trace") ? trace.getTracerProvider() : undefined);
    const loggerProvider = options.auditLogs === false
      ? undefined
      : (options.loggerProvider as LoggerProvider | undefined) ??
        (registered("logs") ? logs.getLoggerProvider() : undefined);
    const lines = options.auditLines;
    if (
      lines !== undefined && typeof lines !== "function" && !(lines instanceof WritableStream)
    ) {
      throw new InvalidInputError(
        "guardTelemetry: auditLines must be a function or a WritableStream<Uint8Array>",
      );
    }
    const secret = options.secret;
    if (
      secret !== undefined &&
      !((typeof secret === "string" || secret instanceof Uint8Array) && secret.length > 0)
    ) {
      throw new InvalidInputError("guardTelemetry: secret must be a non-empty string or bytes");
    }
    this.#secret = secret;
    this.#registrySpans = options.registrySpans ?? true;
    this.#tracer = tracerProvider?.getTracer(SCOPE) ?? null;
    this.#logger = loggerProvider?.getLogger(SCOPE) ?? null;
    this.#meter = meterProvider?.getMeter(SCOPE) ?? null;
    this.#lines = lines === undefined ? null : new LineSink(lines, () => this.#dropped());
    if (this.#meter !== null) this.#createInstruments(this.#meter);
  }

  /** Whether anything is recorded: a provider, or audit lines. Off: `instrument` changes nothing. */
  get enabled(): boolean {
    return this.#meter !== null || this.#tracer !== null || this.#logger !== null ||
      this.#lines !== null;
  }

  /**
   * The options of `guardSessions` (or Hono's `mcpGuard`) with this
   * telemetry plugged in; the same object when nothing is recorded. The
   * guard it makes reports its decisions, its time, its registries and its
   * refusals here.
   */
  instrument<T extends object>(options: T): T {
    if (options === null || typeof options !== "object") {
      throw new InvalidInputError("instrument: options must be an object");
    }
    if (!this.enabled) return options;
    return { ...options, [OBSERVER]: this.#observer() };
  }

  /**
   * Measures a `HandleRegistry` too (live handles, its calls, evictions),
   * and puts every handle it refuses (`authorize` false, `require` throwing)
   * in the audit trail, hashed with this telemetry's `secret`, else the
   * first instrumented guard's.
   */
  observeHandles(handles: HandleRegistry): void {
    const inner = handleOwners.get(handles);
    if (inner === undefined) {
      throw new InvalidInputError("observeHandles: handles must be a HandleRegistry");
    }
    if (!this.enabled) return;
    this.#observeRegistry(inner, "handle");
    this.#onRemoved(inner, "handle");
    const key = new AuditKey(this.#secret ?? this.#guardSecret);
    registryEvents.set(handles, {
      ...registryEvents.get(handles),
      handleRefused: (reason, handle, fp) => this.#handleRefused(key, reason, handle, fp),
    });
    this.#registries.push(handles);
  }

  /**
   * Stops observing: removes the metric callbacks and registry listeners,
   * and waits for the audit lines under way (a stream is released, not
   * closed). The guards keep running, unobserved.
   */
  async close(): Promise<void> {
    for (const cleanup of this.#cleanups.splice(0)) cleanup();
    for (const client of this.#observed.keys()) client.observer = null;
    this.#observed.clear();
    for (const registry of this.#registries.splice(0)) registryEvents.delete(registry);
    await this.#lines?.close();
  }

  #createInstruments(meter: Meter): void {
    this.#decisions = meter.createObservableCounter(METRIC.decisions, {
      description: "Decisions of the guard, by outcome and reason.",
      unit: "{decision}",
    });
    this.#duration = meter.createHistogram(METRIC.duration, {
      description:
        "Time the guard itself spent on a request: from its arrival to the guard's answer, " +
        "less the wrapped handler's time until its Response.",
      unit: "s",
      advice: { explicitBucketBoundaries: GUARD_BUCKETS },
    });
    this.#registryDuration = meter.createHistogram(METRIC.registryDuration, {
      description: "Duration of a registry call awaited by its caller, from call to answer.",
      unit: "s",
      advice: { explicitBucketBoundaries: REGISTRY_BUCKETS },
    });
    this.#registryFailures = meter.createCounter(METRIC.registryFailures, {
      description: "Awaited registry calls that failed (worker or store unavailable, closed).",
      unit: "{call}",
    });
    this.#removed = meter.createCounter(METRIC.removed, {
      description: "Bindings removed without their owner asking: evicted or expired idle.",
      unit: "{binding}",
    });
    this.#cancellations = meter.createCounter(METRIC.cancellations, {
      description: "Cancellations that aborted a request here, by where they came from.",
      unit: "{request}",
    });
    this.#handleRefusals = meter.createCounter(METRIC.handlesRefused, {
      description: "Handles refused to a caller (unknown, another principal's, malformed).",
      unit: "{call}",
    });
    this.#errors = meter.createCounter(METRIC.errors, {
      description: "Failures the guard reported to onError, by where they happened.",
      unit: "{error}",
    });
    this.#auditDropped = meter.createCounter(METRIC.auditDropped, {
      description: "Audit lines dropped: the line target threw, failed or fell behind.",
      unit: "{record}",
    });
    this.#queueDepth = meter.createObservableGauge(METRIC.queueDepth, {
      description: "Calls waiting for a registry's worker: queued, or sent and not answered.",
      unit: "{call}",
    });
    this.#oldest = meter.createObservableGauge(METRIC.oldestCall, {
      description: "Age of the oldest call a registry's worker has not answered (0: none).",
      unit: "s",
    });
    this.#restarts = meter.createObservableCounter(METRIC.restarts, {
      description: "Registry workers restarted after a crash or a hang.",
      unit: "{restart}",
    });
    this.#bindings = meter.createObservableUpDownCounter(METRIC.bindings, {
      description: "Live bindings: sessions, tasks or handles bound to their creator.",
      unit: "{binding}",
    });
    this.#pinned = meter.createObservableUpDownCounter(METRIC.pinned, {
      description: "Bindings pinned by a live stream (never evicted).",
      unit: "{binding}",
    });
    this.#tracked = meter.createObservableUpDownCounter(METRIC.tracked, {
      description: "Requests tracked for cancellation.",
      unit: "{request}",
    });
    const observables = [
      this.#decisions,
      this.#queueDepth,
      this.#oldest,
      this.#restarts,
      this.#bindings,
      this.#pinned,
      this.#tracked,
    ];
    const callback = (result: BatchObservableResult) => this.#collect(result);
    meter.addBatchObservableCallback(callback, observables);
    this.#cleanups.push(() => meter.removeBatchObservableCallback(callback, observables));
  }

  /** The observable metrics, read at each collection. */
  async #collect(result: BatchObservableResult): Promise<void> {
    for (const { attrs, count } of this.#decisionCounts.values()) {
      result.observe(this.#decisions, count, attrs);
    }
    const pending: Promise<void>[] = [];
    for (const [client, observed] of this.#observed) {
      if (client.closed) {
        this.#observed.delete(client);
        continue;
      }
      const { attrs } = observed;
      const health = client.health();
      result.observe(this.#queueDepth, health.waiting, attrs);
      result.observe(this.#oldest, health.oldestMs / 1000, attrs);
      result.observe(this.#restarts, client.restarts, attrs);
      // A registry nobody used has no worker: asking would start one.
      if (!health.started) continue;
      pending.push(
        withTimeout(observed.stats(), STATS_TIMEOUT_MS).then((stats) => {
          if (observed.role === "cancellation") {
            result.observe(this.#tracked, stats.size, attrs);
          } else {
            result.observe(this.#bindings, stats.size, attrs);
            result.observe(this.#pinned, stats.pinned ?? 0, attrs);
          }
        }, () => {}),
      );
    }
    await Promise.all(pending);
  }

  #dropped(): void {
    if (this.#meter !== null) this.#auditDropped.add(1);
  }

  /** Measures a registry facade's worker, once. */
  #observeRegistry(
    registry: { stats(): Promise<{ size: number; pinned?: number }> },
    role: Role,
  ): void {
    const client = clients.get(registry);
    if (client === undefined || this.#observed.has(client)) return;
    const attrs: Attributes = { [ATTR.registry]: role, [ATTR.store]: storeName(client.store) };
    this.#observed.set(client, { role, attrs, stats: () => registry.stats() });
    if (this.#meter === null && (this.#tracer === null || !this.#registrySpans)) return;
    const byOp = new Map<number, Attributes>();
    const attrsOf = (op: number) => {
      let a = byOp.get(op);
      if (a === undefined) {
        a = { ...attrs, [ATTR.operation]: OPERATIONS[op] ?? OTHER };
        byOp.set(op, a);
      }
      return a;
    };
    client.observer = {
      call: (op, promise, lazy) => this.#call(attrsOf(op), promise, lazy),
    };
  }

  /**
   * One registry call: its duration, its failure, and its span under the
   * request's. A lazy call (a deregistration, an in-memory registration)
   * waits for company by design, and nobody waits for it: its time says
   * nothing, and the guard reports its failure (`mcp_guard.errors`).
   */
  #call(attrs: Attributes, promise: Promise<unknown>, lazy: boolean): void {
    if (lazy) return;
    const start = performance.now();
    let span: Span | undefined;
    const tracer = this.#tracer;
    if (tracer !== null && this.#registrySpans && trace.getActiveSpan() !== undefined) {
      span = tracer.startSpan(`mcp_guard.registry ${attrs[ATTR.operation]}`, {
        kind: SpanKind.INTERNAL,
        attributes: attrs,
      });
    }
    const metered = this.#meter !== null;
    if (!metered && span === undefined) return;
    promise.then(() => {
      if (metered) this.#registryDuration.record((performance.now() - start) / 1000, attrs);
      span?.end();
    }, (error) => {
      const failed = { ...attrs, [ATTR.errorType]: errorType(error) };
      if (metered) {
        this.#registryFailures.add(1, failed);
        this.#registryDuration.record((performance.now() - start) / 1000, failed);
      }
      if (span !== undefined) {
        span.setAttribute(ATTR.errorType, failed[ATTR.errorType] as string);
        span.setStatus({ code: SpanStatusCode.ERROR });
        span.end();
      }
    });
  }

  #onRemoved(registry: Removable, role: Role): void {
    if (this.#meter === null || typeof registry.onRemoved !== "function") return;
    const stop = registry.onRemoved(({ cause, sessionIds }) => {
      this.#removed.add(sessionIds.length, { [ATTR.registry]: role, [ATTR.cause]: cause });
    });
    if (typeof stop === "function") this.#cleanups.push(stop as () => void);
  }

  /** The registries of a guard just created. */
  #attach(registries: ObservedRegistries): AuditKey {
    const { owners, cancellations, tasks, secret } = registries;
    if (!this.#attached) {
      this.#attached = true;
      this.#guardSecret = secret;
    }
    const measured = (r: unknown): r is { stats(): Promise<{ size: number }> } =>
      typeof (r as { stats?: unknown })?.stats === "function";
    if (measured(owners)) this.#observeRegistry(owners, "session");
    this.#onRemoved(owners as Removable, "session");
    if (tasks !== undefined) {
      if (measured(tasks)) this.#observeRegistry(tasks, "task");
      this.#onRemoved(tasks as Removable, "task");
    }
    if (measured(cancellations)) this.#observeRegistry(cancellations, "cancellation");
    if (this.#meter !== null) {
      registryEvents.set(cancellations, {
        ...registryEvents.get(cancellations),
        cancelled: (origin) => this.#cancellations.add(1, { [ATTR.origin]: origin }),
      });
      this.#registries.push(cancellations);
    }
    return new AuditKey(secret ?? this.#secret);
  }

  /** The observer one guard calls. */
  #observer(): GuardObserver {
    let key = new AuditKey(this.#secret);
    const metered = this.#meter !== null;
    const traced = this.#tracer !== null;
    return {
      attach: (registries) => {
        key = this.#attach(registries);
      },
      handler: (handler: RequestHandler): RequestHandler => (request, ctx) => {
        const record = requests.getStore();
        if (record === undefined) return handler(request, ctx);
        const start = performance.now();
        let answer: Response | Promise<Response>;
        try {
          answer = handler(request, ctx);
        } catch (err) {
          record.handlerMs += performance.now() - start;
          throw err;
        }
        if (answer instanceof Response) {
          record.handlerMs += performance.now() - start;
          return answer;
        }
        return answer.then((response) => {
          record.handlerMs += performance.now() - start;
          return response;
        }, (err) => {
          record.handlerMs += performance.now() - start;
          throw err;
        });
      },
      request: (request, handle) => {
        let span: Span | undefined;
        if (traced) {
          span = trace.getActiveSpan();
          if (span !== undefined && !span.isRecording()) span = undefined;
        }
        const record: RequestRecord = {
          start: performance.now(),
          handlerMs: 0,
          ctx: null,
          decision: null,
          span,
          key,
        };
        const answer = requests.run(record, handle, request);
        if (metered) {
          const finish = () => this.#finish(record);
          answer.then(finish, finish);
        }
        return answer;
      },
      identified: (ctx) => {
        const record = requests.getStore();
        if (record !== undefined) record.ctx = ctx;
      },
      decided: (decision, task) => {
        try {
          this.#decided(decision, requests.getStore(), key, task);
        } catch {
          // Telemetry must never break a request.
        }
      },
      error: (error, context) => {
        if (!metered) return;
        try {
          this.#errors.add(1, {
            [ATTR.errorContext]: context.length <= 64 ? context : OTHER,
            [ATTR.errorType]: errorType(error),
          });
        } catch {
          // Telemetry must never break a request.
        }
      },
    };
  }

  /** The guard's time on a request, once it answered. */
  #finish(record: RequestRecord): void {
    const decision = record.decision;
    if (decision === null) return;
    // Three attributes: each costs Deno's exporter about 0.4 µs per recording.
    const attrs: Attributes = {
      [ATTR.outcome]: decision.outcome,
      [ATTR.httpMethod]: httpMethod(decision.method),
    };
    if (decision.rpcMethod !== null) attrs[ATTR.mcpMethod] = mcpMethod(decision.rpcMethod);
    const ms = performance.now() - record.start - record.handlerMs;
    this.#duration.record(Math.max(0, ms) / 1000, attrs);
  }

  #decided(
    decision: GuardDecision,
    record: RequestRecord | undefined,
    key: AuditKey,
    replaced?: string,
  ): void {
    if (record !== undefined) record.decision = decision;
    const refused = decision.outcome === "refuse";
    const rpc = decision.rpcMethod === null ? null : mcpMethod(decision.rpcMethod);
    if (this.#meter !== null) {
      const method = httpMethod(decision.method);
      const key = `${decision.reason} ${method} ${rpc} ${decision.status}`;
      const counted = this.#decisionCounts.get(key);
      if (counted !== undefined) counted.count++;
      else {
        const attrs: Attributes = {
          [ATTR.outcome]: decision.outcome,
          [ATTR.reason]: decision.reason,
          [ATTR.httpMethod]: method,
        };
        if (rpc !== null) attrs[ATTR.mcpMethod] = rpc;
        if (refused) {
          attrs[ATTR.httpStatus] = decision.status ?? 0;
          attrs[ATTR.errorType] = decision.reason;
        }
        this.#decisionCounts.set(key, { attrs, count: 1 });
      }
    }
    const span = record?.span;
    if (span !== undefined) {
      const attrs: Attributes = {
        [ATTR.outcome]: decision.outcome,
        [ATTR.reason]: decision.reason,
      };
      // MCP's conventions name the JSON-RPC method `mcp.method.name` (instead of `rpc.*`).
      if (rpc !== null) attrs[ATTR.mcpMethod] = rpc;
      if (decision.sessionId !== null) attrs[ATTR.session] = key.hash(decision.sessionId);
      if (refused) attrs[ATTR.errorType] = decision.reason;
      span.setAttributes(attrs);
    }
    // Audited: refusals, and task requests let through with a task id nobody was issued in
    // place of one the caller does not own (their body now names the substitute).
    if (!refused && replaced === undefined) return;
    if (this.#logger === null && this.#lines === null) return;
    const ctx = record?.ctx ?? null;
    const task = replaced !== undefined
      ? replaced
      : TASK_REASONS.has(decision.reason)
      ? taskOf(ctx?.parsedBody)
      : null;
    this.#audit({
      time: new Date().toISOString(),
      event: REFUSAL_EVENT,
      reason: decision.reason,
      status: decision.status,
      method: decision.method.slice(0, 32),
      rpcMethod: decision.rpcMethod?.slice(0, 128) ?? null,
      principal: ctx?.fingerprint ?? null,
      session: decision.sessionId === null ? null : key.hash(decision.sessionId),
      task: task === null ? null : key.hash(task),
      handle: null,
    }, span);
  }

  #handleRefused(
    key: AuditKey,
    reason: HandleRefusal,
    handle: string | null,
    fingerprint: string | null,
  ): void {
    try {
      if (this.#meter !== null) this.#handleRefusals.add(1, { [ATTR.reason]: reason });
      if (this.#logger === null && this.#lines === null) return;
      // Inside a guarded request (a tool's check), the request says where it happened.
      const record = requests.getStore();
      const decision = record?.decision ?? null;
      this.#audit({
        time: new Date().toISOString(),
        event: REFUSAL_EVENT,
        reason,
        status: null,
        method: decision?.method.slice(0, 32) ?? null,
        rpcMethod: decision?.rpcMethod?.slice(0, 128) ?? null,
        principal: fingerprint,
        session: decision === null || decision.sessionId === null
          ? null
          : key.hash(decision.sessionId),
        task: null,
        handle: handle === null ? null : key.hash(handle),
      }, record?.span);
    } catch {
      // Telemetry must never break a tool.
    }
  }

  /** Writes one refusal record: a log record, a JSON line. */
  #audit(record: RefusalRecord, span: Span | undefined): void {
    const context = (span ?? trace.getActiveSpan())?.spanContext();
    if (context !== undefined && context.traceId !== "00000000000000000000000000000000") {
      record.traceId = context.traceId;
      record.spanId = context.spanId;
    }
    this.#lines?.write(record);
    const logger = this.#logger;
    if (logger === null) return;
    const attributes: Attributes = {
      [ATTR.reason]: record.reason,
      [ATTR.errorType]: record.reason,
    };
    if (record.status !== null) attributes[ATTR.httpStatus] = record.status;
    if (record.method !== null) attributes[ATTR.httpMethod] = httpMethod(record.method);
    if (record.rpcMethod !== null) attributes[ATTR.mcpMethod] = record.rpcMethod;
    if (record.principal !== null) attributes[ATTR.principal] = record.principal;
    if (record.session !== null) attributes[ATTR.session] = record.session;
    if (record.task !== null) attributes[ATTR.task] = record.task;
    if (record.handle !== null) attributes[ATTR.handle] = record.handle;
    const serverError = record.status !== null && record.status >= 500;
    logger.emit({
      eventName: REFUSAL_EVENT,
      severityNumber: serverError ? SeverityNumber.ERROR : SeverityNumber.WARN,
      severityText: serverError ? "ERROR" : "WARN",
      body: `refused ${record.method ?? "-"}${
        record.rpcMethod === null ? "" : ` ${record.rpcMethod}`
      }: ${record.reason}${record.status === null ? "" : ` (${record.status})`}`,
      attributes,
    });
  }
}

/**
 * Telemetry for the HTTP guard: see {@linkcode GuardTelemetryOptions} and
 * {@linkcode GuardTelemetry.instrument}.
 */
export function guardTelemetry(options: GuardTelemetryOptions = {}): GuardTelemetry {
  return new GuardTelemetry(options);
}

export type { LineTarget };
