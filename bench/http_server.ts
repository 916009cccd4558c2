/**
 * The HTTP benchmark's server: the example SDK app on `Deno.serve`, with or
 * without the guard. Started by `bench/http_bench.ts` as a child process:
 *
 * ```sh
 * deno run --allow-net --allow-read --allow-env bench/http_server.ts --guard=on [--json] [--no-known-owners] [--owner-cache-ms=1000] [--no-credentials]
 * ```
 *
 * Prints `listening <port>` once ready; exits on SIGTERM.
 *
 * @module
 */

import { CancellationRegistry, guardSessions, SessionOwnerRegistry } from "../mod.ts";
import { createMcpApp } from "../examples/mcp_app.ts";
import { bearerPrincipal } from "../examples/server.ts";

const guarded = Deno.args.includes("--guard=on");
const jsonResponse = Deno.args.includes("--json");
const ownerCacheMs = Number(
  Deno.args.find((a) => a.startsWith("--owner-cache-ms="))?.split("=")[1] ?? 0,
);

const owners = new SessionOwnerRegistry({
  knownOwners: !Deno.args.includes("--no-known-owners"),
});
const cancellations = new CancellationRegistry();
const app = createMcpApp({ jsonResponse });
const handler = guarded
  ? guardSessions(app.handler, {
    owners,
    cancellations,
    principal: bearerPrincipal(),
    ownerCacheMs,
    forwardBody: Deno.args.includes("--copy-body") ? "copy" : "parsed",
    ...(Deno.args.includes("--no-credentials") ? { credentials: false } : {}),
  })
  : app.handler;

const server = Deno.serve({
  port: 0,
  hostname: "127.0.0.1",
  onListen: ({ port }) => console.log(`listening ${port}`),
}, (request) => handler(request));

Deno.addSignalListener("SIGTERM", async () => {
  await app.close();
  await server.shutdown();
  await owners.close();
  await cancellations.close();
  Deno.exit(0);
});
