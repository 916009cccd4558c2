/**
 * A fleet on one Redis: 1, 2 and 4 guarded benchmark server processes
 * (`bench/http_server.ts`, the example SDK app behind `guardSessions`)
 * sharing one `redis-server` on loopback, against the same processes on the
 * in-memory store (each process alone), in interleaved rounds.
 *
 * ```sh
 * deno task bench:fleet                       # 5 rounds of 3 s, 1/2/4 processes, SSE answers
 * deno task bench:fleet --rounds=3 --seconds=2 --procs=1,4 --json --owner-cache-ms=1000
 * ```
 *
 * Options: `--rounds=N` (5), `--seconds=N` (3), `--connections=N` (32, split
 * evenly over the processes), `--procs=1,2,4`, `--stores=memory,redis`,
 * and, handed to every server, `--json` (JSON answers),
 * `--owner-cache-ms=N`, `--no-credentials`.
 *
 * Sticky routing, like a load balancer with session affinity: connection
 * `i` opens its session (`initialize`) on process `i % N` and sends all its
 * `tools/call` requests there. (Spreading one session's requests over the
 * processes is not possible with this app: the SDK's transport of a session
 * lives in the process that initialized it, whatever store the guard uses.)
 * Every request is a `tools/call` of `echo`, which answers at once.
 *
 * Per store and process count, min / median / max over the rounds:
 * - total requests per second (`npm:autocannon`, one instance per process,
 *   in this process);
 * - CPU per request: every server process's CPU (`/proc/<pid>/stat`, all
 *   threads) plus `redis-server`'s, over the requests served; and Redis's
 *   share of it;
 * - Redis calls per request: script calls (`EVALSHA`, `EVAL`) and plain
 *   reads (`HMGET` sent on its own: the `HMGET`s counted beyond the one every
 *   store script runs), from the difference of `INFO commandstats` over the
 *   round (this bench's own `INFO` excluded); every command Redis ran per
 *   request, those inside scripts included; and the µs Redis spent in script
 *   calls per request.
 *
 * The `redis-server` is started here on a free loopback port and stopped at
 * the end; the servers are started once (the largest process count of each
 * store) and the first N of them take each round's load.
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
import { startRedis } from "../tests/support/redis_server.ts";

interface Args {
  rounds: number;
  seconds: number;
  connections: number;
  procs: number[];
  stores: ("memory" | "redis")[];
  serverFlags: string[];
}

function parseArgs(args: string[]): Args {
  const out: Args = {
    rounds: 5,
    seconds: 3,
    connections: 32,
    procs: [1, 2, 4],
    stores: ["memory", "redis"],
    serverFlags: [],
  };
  for (const arg of args) {
    let m: RegExpExecArray | null;
    if ((m = /^--rounds=(\d+)$/.exec(arg)) && Number(m[1]) > 0) out.rounds = Number(m[1]);
    else if ((m = /^--seconds=(\d+)$/.exec(arg)) && Number(m[1]) > 0) out.seconds = Number(m[1]);
    else if ((m = /^--connections=(\d+)$/.exec(arg)) && Number(m[1]) > 0) {
      out.connections = Number(m[1]);
    } else if ((m = /^--procs=([\d,]+)$/.exec(arg))) {
      out.procs = m[1].split(",").map(Number).filter((n) => n > 0);
    } else if ((m = /^--stores=([a-z,]+)$/.exec(arg))) {
      out.stores = m[1].split(",").map((s) => {
        if (s !== "memory" && s !== "redis") throw new Error(`unknown store ${s}`);
        return s;
      });
    } else if (
      arg === "--json" || arg === "--no-credentials" || /^--owner-cache-ms=\d+$/.test(arg)
    ) {
      out.serverFlags.push(arg);
    } else {
      throw new Error(
        `unknown argument ${arg} (--rounds=N --seconds=N --connections=N --procs=1,2,4 ` +
          "--stores=memory,redis --json --owner-cache-ms=N --no-credentials)",
      );
    }
  }
  if (out.procs.some((n) => out.connections < n)) {
    throw new Error("--connections must be at least the largest process count");
  }
  return out;
}

const TOKENS = ["alice-token", "bob-token"];

function startServer(flags: string[]): Promise<BenchServer> {
  return startBenchServer(["--guard=on", ...flags]);
}

/** `INFO <section>` over a fresh connection, read to the end of its bulk reply. */
async function info(port: number, section: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(
      new TextEncoder().encode(`*2\r\n$4\r\nINFO\r\n$${section.length}\r\n${section}\r\n`),
    );
    const chunks: Uint8Array[] = [];
    let have = 0;
    let need = -1;
    let head = 0;
    const buf = new Uint8Array(64 * 1024);
    while (need < 0 || have < head + need + 2) {
      const n = await conn.read(buf);
      if (n === null) throw new Error("redis-server closed the connection");
      chunks.push(buf.slice(0, n));
      have += n;
      if (need < 0) {
        const text = new TextDecoder().decode(concat(chunks));
        const eol = text.indexOf("\r\n");
        if (eol < 0) continue;
        if (text[0] !== "$") throw new Error(`INFO ${section}: ${text.slice(0, 200)}`);
        need = Number(text.slice(1, eol));
        head = new TextEncoder().encode(text.slice(0, eol + 2)).length;
      }
    }
    return new TextDecoder().decode(concat(chunks).subarray(head, head + need));
  } finally {
    conn.close();
  }
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/** Calls and µs per command so far (`INFO commandstats`), without this bench's own INFO. */
async function commandStats(port: number): Promise<Map<string, { calls: number; usec: number }>> {
  const stats = new Map<string, { calls: number; usec: number }>();
  for (const line of (await info(port, "commandstats")).split("\r\n")) {
    const m = /^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/.exec(line);
    if (m === null || m[1] === "info") continue;
    stats.set(m[1], { calls: Number(m[2]), usec: Number(m[3]) });
  }
  return stats;
}

interface Sample {
  rps: number;
  /** Server processes' and Redis's CPU µs per request. */
  cpu: number;
  /** Redis's CPU µs per request (part of `cpu`). */
  redisCpu: number;
  /** Redis commands per request, by command (those run inside scripts included). */
  commands: Map<string, number>;
  /** Script calls per request. */
  scripts: number;
  /** Plain reads (HMGET on its own) per request. */
  reads: number;
  /** µs Redis spent in script calls, per request. */
  scriptUsec: number;
}

interface Subject {
  store: "memory" | "redis";
  procs: number;
  samples: Sample[];
}

/** One round of load on the first `n` servers: `connections` sessions, sticky. */
async function round(
  servers: BenchServer[],
  n: number,
  redis: { port: number; pid: number } | null,
  connections: number,
  seconds: number,
): Promise<Sample> {
  const used = servers.slice(0, n);
  const sessions = await Promise.all(
    Array.from({ length: connections }, async (_, i) => {
      const token = TOKENS[i % TOKENS.length];
      const server = used[i % n];
      return { server, token, sid: await openSession(server.url, token, "bench-fleet") };
    }),
  );
  const pids = used.map((s) => s.child.pid);
  if (redis !== null) pids.push(redis.pid);
  const cpuOf = async () => {
    const each = await Promise.all(pids.map(processCpuMicros));
    return { all: each.reduce((a, b) => a + b, 0), redis: redis === null ? 0 : each.at(-1)! };
  };
  const statsBefore = redis === null ? null : await commandStats(redis.port);
  const cpuBefore = await cpuOf();
  const results = await Promise.all(used.map((server) => {
    const mine = sessions.filter((s) => s.server === server);
    let client = 0;
    return autocannon({
      url: server.url,
      connections: mine.length,
      duration: seconds,
      method: "POST",
      setupClient(c: { setHeaders(h: Record<string, string>): void }) {
        const { token, sid } = mine[client++ % mine.length];
        c.setHeaders(headers(token, sid));
      },
      requests: [{
        setupRequest: (req: Record<string, unknown>) => ({ ...req, body: echoCall() }),
      }],
    });
  }));
  // Lazy calls (deregistrations) leave within 10 ms of the last answer.
  await new Promise((r) => setTimeout(r, 50));
  const cpuAfter = await cpuOf();
  const statsAfter = redis === null ? null : await commandStats(redis.port);
  let total = 0;
  let duration = 0;
  for (const r of results) {
    if (r.non2xx > 0 || r.errors > 0 || r.timeouts > 0) {
      throw new Error(`${r.non2xx} non-2xx, ${r.errors} errors, ${r.timeouts} timeouts`);
    }
    total += r.requests.total;
    duration = Math.max(duration, r.duration || seconds);
  }
  const commands = new Map<string, number>();
  let scriptUsec = 0;
  if (statsAfter !== null) {
    for (const [name, after] of statsAfter) {
      const before = statsBefore!.get(name) ?? { calls: 0, usec: 0 };
      if (after.calls === before.calls) continue;
      commands.set(name, (after.calls - before.calls) / total);
      // A script's time includes the commands it runs (also counted under their own names).
      if (name === "evalsha" || name === "eval") scriptUsec += after.usec - before.usec;
    }
  }
  const scripts = (commands.get("evalsha") ?? 0) + (commands.get("eval") ?? 0);
  return {
    rps: total / duration,
    cpu: (cpuAfter.all - cpuBefore.all) / total,
    redisCpu: (cpuAfter.redis - cpuBefore.redis) / total,
    commands,
    scripts,
    // Every owner and cancellation script call runs one HMGET (of its meta hash).
    reads: Math.max(0, (commands.get("hmget") ?? 0) - scripts),
    scriptUsec: scriptUsec / total,
  };
}

const args = parseArgs(Deno.args);
const most = Math.max(...args.procs);
const redisServer = args.stores.includes("redis") ? await startRedis() : null;
const servers = new Map<"memory" | "redis", BenchServer[]>();
try {
  let redis: { port: number; pid: number } | null = null;
  if (redisServer !== null) {
    const pid = /process_id:(\d+)/.exec(await info(redisServer.port, "server"))?.[1];
    if (pid === undefined) throw new Error("INFO server named no process_id");
    redis = { port: redisServer.port, pid: Number(pid) };
  }
  for (const store of args.stores) {
    const flags = store === "redis"
      ? [`--redis=${redisServer!.url}`, "--prefix=bench-fleet:", ...args.serverFlags]
      : args.serverFlags;
    servers.set(store, await Promise.all(Array.from({ length: most }, () => startServer(flags))));
  }
  const subjects: Subject[] = [];
  for (const procs of args.procs) {
    for (const store of args.stores) subjects.push({ store, procs, samples: [] });
  }
  const run = (s: Subject) =>
    round(
      servers.get(s.store)!,
      s.procs,
      s.store === "redis" ? redis : null,
      args.connections,
      args.seconds,
    );
  // Warm-up (JIT, connections, Redis's script cache): every process of each store, untimed.
  for (const store of args.stores) {
    await run({ store, procs: most, samples: [] });
  }
  const fmt = (n: number, digits = 0) =>
    n.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
  const listed = (m: Map<string, number>) =>
    [...m].sort((a, b) => b[1] - a[1]).map(([c, v]) => `${c} ${v.toFixed(3)}`).join(", ");
  for (let r = 1; r <= args.rounds; r++) {
    // Alternate the order every round (memory/redis, and the process counts), so drifts in the
    // machine's load hit every configuration alike.
    const order = r % 2 === 1 ? subjects : [...subjects].reverse();
    for (const s of order) {
      const sample = await run(s);
      s.samples.push(sample);
      const redisPart = s.store === "redis"
        ? `, Redis ${fmt(sample.redisCpu, 1)} µs; per request ${sample.scripts.toFixed(3)} ` +
          `script calls, ${sample.reads.toFixed(3)} plain reads; commands run: ${
            listed(sample.commands)
          }`
        : "";
      console.log(
        `round ${r}/${args.rounds}: ${s.store} x${s.procs}: ${fmt(sample.rps)} req/s, ` +
          `CPU ${fmt(sample.cpu)} µs/request${redisPart}`,
      );
    }
  }

  const mmm = (xs: number[], digits = 0) => {
    const s = [...xs].sort((a, b) => a - b);
    return `${fmt(s[0], digits)} / ${fmt(s[s.length >> 1], digits)} / ${fmt(s.at(-1)!, digits)}`;
  };
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
  console.log(
    `\n${args.rounds} interleaved rounds of ${args.seconds} s, ${args.connections} connections ` +
      `(sticky sessions, split over the processes), ${
        args.serverFlags.includes("--json") ? "JSON" : "SSE"
      } answers${
        args.serverFlags.length > 0 ? ` (server flags: ${args.serverFlags.join(" ")})` : ""
      }; min / median / max per round\n`,
  );
  console.log(
    "| store | processes | req/s | vs memory (median of rounds) | CPU µs per request " +
      "(servers + Redis) | Redis CPU µs per request | script calls + plain reads per request | " +
      "µs in scripts per request | commands Redis ran per request (median; inside scripts too) |",
  );
  console.log("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
  for (const s of subjects) {
    const memory = subjects.find((m) => m.store === "memory" && m.procs === s.procs);
    const ratio = s.store === "redis" && memory !== undefined
      ? median(s.samples.map((x, i) => x.rps / memory.samples[i].rps)).toFixed(2)
      : "";
    const names = new Set(s.samples.flatMap((x) => [...x.commands.keys()]));
    const perCommand = new Map(
      [...names].map((c) => [c, median(s.samples.map((x) => x.commands.get(c) ?? 0))]),
    );
    const totalCommands = median(
      s.samples.map((x) => [...x.commands.values()].reduce((a, b) => a + b, 0)),
    );
    const redisCols = s.store === "redis"
      ? `${mmm(s.samples.map((x) => x.redisCpu), 1)} | ${
        median(s.samples.map((x) => x.scripts)).toFixed(2)
      } + ${median(s.samples.map((x) => x.reads)).toFixed(2)} | ${
        mmm(s.samples.map((x) => x.scriptUsec), 1)
      } | ${totalCommands.toFixed(1)} (${listed(perCommand)})`
      : " | | | ";
    console.log(
      `| ${s.store} | ${s.procs} | ${mmm(s.samples.map((x) => x.rps))} | ${ratio} | ${
        mmm(s.samples.map((x) => x.cpu))
      } | ${redisCols} |`,
    );
  }
} finally {
  for (const list of servers.values()) {
    for (const server of list) {
      server.child.kill("SIGTERM");
      await server.child.status;
    }
  }
  await redisServer?.[Symbol.asyncDispose]();
}
