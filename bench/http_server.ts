/**
 * The HTTP benchmark's server: the example SDK app on `Deno.serve`, with or
 * without the guard. Started by `bench/http_bench.ts` as a child process:
 *
 * ```sh
 * deno run --allow-net --allow-read --allow-env bench/http_server.ts --guard=on [--json] [--no-known-owners] [--owner-cache-ms=1000] [--no-credentials] [--redis=redis://127.0.0.1:6379 [--prefix=fleet:]]
 * ```
 *
 * `--redis=<url>` puts both registries on the Redis store (`redisStore`, key
 * prefix `--prefix`, default `bench-fleet:`) and gives the guard a fixed
 * `secret`, so every process started with the same url and prefix shares
 * one set of bindings and cancellations, as a fleet behind a load balancer
 * does (`bench/fleet.ts`).
 *
 * Prints `listening <port>` once ready; exits on SIGTERM.
 *
 * @module
 */

import { CancellationRegistry, guardSessions, SessionOwnerRegistry } from "../mod.ts";
import { redisStore } from "../redis.ts";
import { createMcpApp } from "../examples/mcp_app.ts";
import { bearerPrincipal } from "../examples/server.ts";

const guarded = Deno.args.includes("--guard=on");
const jsonResponse = Deno.args.includes("--json");
const ownerCacheMs = Number(
  Deno.args.find((a) => a.startsWith("--owner-cache-ms="))?.split("=")[1] ?? 0,
);

const flag = (name: string) =>
  Deno.args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const redisUrl = flag("redis");
const store = redisUrl === undefined
  ? undefined
  : redisStore({ url: redisUrl, prefix: flag("prefix") ?? "bench-fleet:" });

const owners = new SessionOwnerRegistry({
  knownOwners: !Deno.args.includes("--no-known-owners"),
  ...(store === undefined ? {} : { store }),
});
const cancellations = new CancellationRegistry(store === undefined ? {} : { store });
const app = createMcpApp({ jsonResponse });
const handler = guarded
  ? guardSessions(app.handler, {
    owners,
    cancellations,
    principal: bearerPrincipal(),
    ownerCacheMs,
    forwardBody: Deno.args.includes("--copy-body") ? "copy" : "parsed",
    ...(Deno.args.includes("--no-credentials") ? { credentials: false } : {}),
    // One secret for the fleet: a principal has the same fingerprint on every process.
    ...(store === undefined ? {} : { secret: "bench-fleet-secret" }),
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
