/**
 * One principal floods `initialize`: how many live SDK sessions, bindings
 * and how much memory remain. Evicted bindings must close their sessions, so
 * `maxPerPrincipal` (default 100) bounds live server sessions, not just
 * registry rows.
 *
 * ```sh
 * deno run --allow-net --allow-read --allow-env --v8-flags=--expose-gc bench/flood.ts [--count=1000]
 * ```
 *
 * @module
 */

import { CancellationRegistry, guardSessions, SessionOwnerRegistry } from "../mod.ts";
import { createMcpApp } from "../examples/mcp_app.ts";
import { bearerPrincipal } from "../examples/server.ts";

const count = Number(Deno.args.find((a) => a.startsWith("--count="))?.split("=")[1] ?? 1_000);
const owners = new SessionOwnerRegistry();
const cancellations = new CancellationRegistry();
const app = createMcpApp({ jsonResponse: true });
const guard = guardSessions(app.handler, { owners, cancellations, principal: bearerPrincipal() });
const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, guard);
const url = `http://127.0.0.1:${server.addr.port}/mcp`;
const body = JSON.stringify({
  jsonrpc: "2.0",
  id: 0,
  method: "initialize",
  params: {
    protocolVersion: "2025-11-25",
    capabilities: {},
    clientInfo: { name: "f", version: "0" },
  },
});

/** RSS in MiB, after a full GC when run with `--v8-flags=--expose-gc`. */
function rssMiB(): number {
  (globalThis as { gc?: () => void }).gc?.();
  return Deno.memoryUsage().rss / 2 ** 20;
}

// Warm up (modules, JIT, one session), then measure from a settled baseline.
const warm = await fetch(url, {
  method: "POST",
  headers: {
    "content-type": "application/json",
    accept: "application/json, text/event-stream",
    authorization: "Bearer bob-token",
  },
  body,
});
await warm.body?.cancel();
await new Promise((resolve) => setTimeout(resolve, 200));
const before = rssMiB();
const heapBefore = Deno.memoryUsage().heapUsed / 2 ** 20;
for (let i = 0; i < count; i++) {
  const response = await fetch(url, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      authorization: "Bearer mallory-token",
    },
    body,
  });
  await response.body?.cancel();
}
await new Promise((resolve) => setTimeout(resolve, 1_000));
const after = rssMiB();
const stats = await owners.stats();
const heap = Deno.memoryUsage().heapUsed / 2 ** 20;
console.log(
  `${count} initializes from one principal: ${app.sessions.size} live SDK sessions ` +
    `(1 of them another principal's), ${stats.size} bindings, ${stats.evictions} evictions, ` +
    `RSS ${before.toFixed(0)} -> ${after.toFixed(0)} MiB (+${
      (after - before).toFixed(0)
    } MiB), heap used ${heapBefore.toFixed(0)} -> ${heap.toFixed(0)} MiB`,
);
await app.close();
await server.shutdown();
await owners.close();
await cancellations.close();
