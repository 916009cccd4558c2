/**
 * What the guard costs an MCP server: the example SDK app
 * (`examples/mcp_app.ts`, official SDK, one transport per session) served by
 * `Deno.serve` in a child process, once unguarded and once wrapped in
 * `guardSessions` with in-memory registries, loaded in the same run with
 * `npm:autocannon` on loopback.
 *
 * ```sh
 * deno task bench:http            # SSE answers (the SDK's default)
 * deno task bench:http --json     # JSON answers (enableJsonResponse)
 * ```
 *
 * Every request is a `tools/call` of the `echo` tool inside an initialized
 * session (each connection has its own session and bearer token), so the
 * guarded server does what it does in production: an owner check, a
 * cancellation registration and its removal per request (withdrawn before
 * they reach the worker when, as here, the answer comes within the 10 ms a
 * registration waits to be sent). A third server is
 * guarded with `knownOwners: false`, asking the owner worker on every
 * request, to show what `knownOwner` saves. Rounds alternate
 * between the servers so background noise hits them alike.
 *
 * Two measurements:
 * - throughput: `CONNECTIONS` concurrent connections for `SECONDS` seconds;
 * - latency: one connection, requests one after another (an unloaded server),
 *   whose median is what the guard adds to a request.
 *
 * @module
 */

import autocannon from "autocannon";
import { headers } from "./mcp_headers.ts";
import {
  type BenchServer,
  echoCall,
  openSession,
  processCpuMicros,
  startBenchServer,
} from "./bench_server.ts";

const ROUNDS = 5;
const SECONDS = 3;
const CONNECTIONS = 32;
const json = Deno.args.includes("--json");
const TOKENS = ["alice-token", "bob-token"];

interface Server extends BenchServer {
  name: string;
}

async function start(name: string, ...flags: string[]): Promise<Server> {
  const server = await startBenchServer([...flags, ...(json ? ["--json"] : [])], `the ${name}`);
  return { name, ...server };
}

/** CPU time (s) the process has used so far, all its threads. */
async function cpuSeconds(pid: number): Promise<number> {
  return (await processCpuMicros(pid)) / 1e6;
}

interface Load {
  /** Requests per second. */
  rps: number;
  /** Server CPU time per request (µs), every thread of the server process. */
  cpu: number;
}

/**
 * `CONNECTIONS` connections, each in its own session, for `SECONDS` seconds.
 * Besides req/s (which on a shared 2-core machine moves with the neighbours),
 * it reads the server's CPU time per request, which does not.
 */
async function throughput(server: Server): Promise<Load> {
  const sessions = await Promise.all(
    Array.from({ length: CONNECTIONS }, async (_, i) => {
      const token = TOKENS[i % TOKENS.length];
      return { token, sid: await openSession(server.url, token) };
    }),
  );
  let client = 0;
  const cpuBefore = await cpuSeconds(server.child.pid);
  const result = await autocannon({
    url: server.url,
    connections: CONNECTIONS,
    duration: SECONDS,
    method: "POST",
    setupClient(c: { setHeaders(h: Record<string, string>): void }) {
      const { token, sid } = sessions[client++ % sessions.length];
      c.setHeaders(headers(token, sid));
    },
    requests: [{ setupRequest: (req: Record<string, unknown>) => ({ ...req, body: echoCall() }) }],
  });
  if (result.non2xx > 0 || result.errors > 0 || result.timeouts > 0) {
    throw new Error(
      `${server.name}: ${result.non2xx} non-2xx, ${result.errors} errors, ${result.timeouts} timeouts`,
    );
  }
  const cpu = (await cpuSeconds(server.child.pid)) - cpuBefore;
  return {
    rps: result.requests.total / (result.duration || SECONDS),
    cpu: cpu * 1e6 / result.requests.total,
  };
}

/**
 * Sequential requests on one connection per server, taking turns (one request
 * to each server in rotation) so noise hits every server alike. Adds each
 * request's time (µs) to its server's samples.
 */
async function latency(servers: Server[], count: number, samples: Map<Server, number[]>) {
  const sessions = await Promise.all(servers.map((s) => openSession(s.url, TOKENS[0])));
  for (let i = 0; i < count; i++) {
    for (let k = 0; k < servers.length; k++) {
      const server = servers[k];
      const started = performance.now();
      const response = await fetch(server.url, {
        method: "POST",
        headers: headers(TOKENS[0], sessions[k]),
        body: echoCall(),
      });
      const text = await response.text();
      samples.get(server)!.push((performance.now() - started) * 1000);
      if (!response.ok || !text.includes("hello")) {
        throw new Error(`${server.name}: HTTP ${response.status}: ${text.slice(0, 200)}`);
      }
    }
  }
}

function quantile(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

const fmt = (n: number) => Math.round(n).toLocaleString("en-US");
const extra = json ? ["--json"] : [];
const servers = [
  await start("unguarded", "--guard=off", ...extra),
  await start("guarded", "--guard=on", ...extra),
  await start("guarded, knownOwners: false", "--guard=on", "--no-known-owners", ...extra),
];
try {
  const rps = new Map(servers.map((s) => [s, [] as number[]]));
  const cpu = new Map(servers.map((s) => [s, [] as number[]]));
  const lat = new Map(servers.map((s) => [s, [] as number[]]));
  // Warm-up: JIT the servers and the client before anything is measured.
  await latency(servers, 300, new Map(servers.map((s) => [s, []])));
  for (const server of servers) await throughput(server);
  for (let round = 1; round <= ROUNDS; round++) {
    const order = round % 2 === 1 ? servers : [...servers].reverse();
    for (const server of order) {
      const r = await throughput(server);
      rps.get(server)!.push(r.rps);
      cpu.get(server)!.push(r.cpu);
      console.log(
        `round ${round}/${ROUNDS}: ${server.name}: ${fmt(r.rps)} req/s, ` +
          `${fmt(r.cpu)} µs server CPU per request`,
      );
    }
    await latency(servers, 500, lat);
  }
  const base = servers[0];
  // Ratios are taken round by round (the servers of one round ran seconds apart, under the
  // same neighbours), then their median.
  const paired = (m: Map<Server, number[]>, server: Server) =>
    quantile(m.get(server)!.map((v, i) => v / m.get(base)![i]), 0.5).toFixed(2);
  const baseP50 = quantile(lat.get(base)!, 0.5);
  console.log(
    `\n${json ? "JSON" : "SSE"} answers; throughput: ${CONNECTIONS} connections, median of ` +
      `${ROUNDS} rounds of ${SECONDS} s (ratios: median of per-round ratios); latency: 1 connection, ${
        ROUNDS * 500
      } requests each`,
  );
  console.log(
    "| server | req/s | vs unguarded | CPU per request | vs unguarded | " +
      "p50 latency | added at p50 | p99 latency |",
  );
  console.log("| --- | --- | --- | --- | --- | --- | --- | --- |");
  for (const server of servers) {
    const r = quantile(rps.get(server)!, 0.5);
    const p50 = quantile(lat.get(server)!, 0.5);
    const p99 = quantile(lat.get(server)!, 0.99);
    const ratio = paired(rps, server);
    const c = quantile(cpu.get(server)!, 0.5);
    const cpuRatio = paired(cpu, server);
    const added = server === base ? "" : `${p50 >= baseP50 ? "+" : ""}${fmt(p50 - baseP50)} µs`;
    console.log(
      `| ${server.name} | ${fmt(r)} | ${ratio} | ${fmt(c)} µs | ${cpuRatio} | ${fmt(p50)} µs | ` +
        `${added} | ${fmt(p99)} µs |`,
    );
  }
} finally {
  for (const server of servers) {
    server.child.kill("SIGTERM");
    await server.child.status;
  }
}
