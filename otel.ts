/**
 * OpenTelemetry for the HTTP guard: metrics, spans and an audit trail of
 * refusals, through the official API (`npm:@opentelemetry/api`), which Deno
 * wires to its built-in exporter with `OTEL_DENO=true`: no SDK to set up.
 *
 * Import it from `@mcp-guard/session/otel`; only this entry point depends on
 * `@opentelemetry/api` (the core has no dependency). Every instrument,
 * attribute and record field is listed in `docs/observability.md`.
 *
 * - Metrics: decisions by outcome and reason (`mcp_guard.decisions`), the
 *   guard's own time per request, each registry call's duration by store,
 *   live bindings, evictions and expiries, worker restarts, registry
 *   failures, cancellations by origin, and each worker's queue depth and
 *   oldest waiting call. No principal, session, task or handle id is ever a
 *   label.
 * - Traces: the decision on the request span `Deno.serve` opens
 *   (`mcp_guard.reason`, `error.type` when refused), and each registry call
 *   a request makes as a child span.
 * - Audit: every refusal as one record (time, reason, status, method, the
 *   caller's fingerprint, the targeted session, task or handle id hashed:
 *   {@linkcode auditId}), as an OpenTelemetry log record and, with
 *   `auditLines`, as one JSON line. No raw token or id is ever written.
 *
 * With no provider registered and no `auditLines`, `instrument` hands the
 * options back unchanged: the guard costs what it costs without telemetry.
 *
 * @example Hijack attempts in the audit trail, as JSON lines
 * ```ts
 * import assert from "node:assert/strict";
 * import {
 *   CancellationRegistry,
 *   fingerprint,
 *   guardSessions,
 *   SessionOwnerRegistry,
 * } from "@mcp-guard/session";
 * import { auditId, guardTelemetry } from "@mcp-guard/session/otel";
 *
 * const lines: string[] = [];
 * // With OTEL_DENO=true, pass `auditLines: console.log`: Deno exports each line as a log record.
 * const telemetry = guardTelemetry({ auditLines: (line) => lines.push(line) });
 * await using owners = new SessionOwnerRegistry();
 * await using cancellations = new CancellationRegistry();
 * const guard = guardSessions(
 *   () => new Response(null, { status: 202 }),
 *   telemetry.instrument({
 *     owners,
 *     cancellations,
 *     principal: (request) => request.headers.get("authorization"),
 *   }),
 * );
 *
 * await owners.bind("alice-session", await fingerprint("alice"));
 * const attempt = await guard(
 *   new Request("http://localhost/mcp", {
 *     method: "DELETE",
 *     headers: { authorization: "mallory", "mcp-session-id": "alice-session" },
 *   }),
 * );
 * assert.equal(attempt.status, 403);
 *
 * const record = JSON.parse(lines[0]);
 * assert.equal(record.reason, "not-owner");
 * assert.equal(record.principal, await fingerprint("mallory")); // who tried
 * assert.equal(record.session, auditId("alice-session")); // what, hashed
 * assert.ok(!lines[0].includes("alice-session"));
 * await telemetry.close();
 * ```
 *
 * @example With Deno's built-in OpenTelemetry
 * ```ts ignore
 * // OTEL_DENO=true OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4318 deno run -A server.ts
 * import { guardSessions } from "@mcp-guard/session";
 * import { guardTelemetry } from "@mcp-guard/session/otel";
 *
 * const telemetry = guardTelemetry({ auditLines: console.log });
 * const guarded = guardSessions(mcpHandler, telemetry.instrument({ owners, cancellations, principal }));
 * telemetry.observeHandles(handles); // a HandleRegistry's refusals and bindings too
 * Deno.serve((request) => guarded(request));
 * ```
 *
 * @module
 */

export {
  GuardTelemetry,
  guardTelemetry,
  type GuardTelemetryOptions,
  type LoggerProviderLike,
  type MeterProviderLike,
  type TracerProviderLike,
} from "./src/otel/telemetry.ts";
export { auditId, type AuditIdOptions, type RefusalRecord } from "./src/otel/audit.ts";
