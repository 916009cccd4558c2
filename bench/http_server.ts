/**
 * The benchmark's server: the example SDK app on `Deno.serve`, with or
 * without the guard. Started by `bench/http_load.ts` as a child process:
 *
 * ```sh
 * deno run --allow-net --allow-read --allow-env bench/http_server.ts --guard=on
 * ```
 *
 * Prints `listening <port>` once ready; exits on SIGTERM.
 *
 * @module
 */

import { CancellationRegistry, guardSessions, SessionOwnerRegistry } from "../mod.ts";
import { createMcpApp } from "../examples/mcp_app.ts";
import { bearerPrincipal } from "../examples/server.ts";

const guarded = Deno.args.includes("--guard=on") || Deno.args.includes("--guard=fake");
const fake = Deno.args.includes("--guard=fake");
const fakeO = Deno.args.includes("--fake-owners");
const fakeC = Deno.args.includes("--fake-cancels");
const jsonResponse = Deno.args.includes("--json");

const owners = new SessionOwnerRegistry();
const cancellations = new CancellationRegistry();
const app = createMcpApp({ jsonResponse });
const handler = guarded
  ? guardSessions(app.handler, fake ? {
    owners: { bind: async () => "bound" as const, authorizeAttach: async () => true, ownerOf: async () => "2bd806c97f0e00af1a1fc3328fa763a9269723c8db8fac4f93af71db186d6e90", forget: async () => true, unpin: async () => true },
    cancellations: { register: async (_s, _r, c) => ({ entryId: "x", signal: c!.signal }), deregister: async () => true, cancel: async () => false, cancelAll: async () => 0 },
    principal: bearerPrincipal(),
  } : {
    owners: fakeO ? { bind: async () => "bound" as const, authorizeAttach: async () => true, ownerOf: async () => "2bd806c97f0e00af1a1fc3328fa763a9269723c8db8fac4f93af71db186d6e90", forget: async () => true, unpin: async () => true } : owners,
    cancellations: fakeC ? { register: async (_s, _r, c) => ({ entryId: "x", signal: c!.signal }), deregister: async () => true, cancel: async () => false, cancelAll: async () => 0 } : cancellations,
    principal: bearerPrincipal(),
    ownerCacheMs: Number(Deno.args.find((a) => a.startsWith("--owner-cache="))?.slice(14) ?? 0) })
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
