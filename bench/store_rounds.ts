/**
 * Store throughput in interleaved rounds, with min / median / max: the same
 * pipelined registry calls as `store_bench.ts` (1,000 concurrent callers x
 * 10 awaited `authorizeAttach` per round), on each store in turn, the order
 * rotating every round so that a noisy neighbour hits every store alike.
 *
 * - `claims`: new session ids with the table at its bound (20,000), so each
 *   claim also evicts: the costliest owner operation.
 * - `checks`: sessions the caller already owns (a refresh each).
 * - `requests`: what one guarded request asks of the stores when nothing is
 *   cached: the owner check of the caller's session, then the request's
 *   cancellation `register` and `deregister` (a `CancellationRegistry` on
 *   the same store and prefix: on a cluster, the same slot). Counted per
 *   request (three operations).
 *
 * For the Redis stores it also reads the servers' own cost per operation:
 * `script µs/op` is Redis's time inside the scripts (`INFO commandstats`,
 * EVALSHA and EVAL), `server µs/op` the server process's whole CPU (`INFO
 * cpu`: the scripts plus reading, parsing and answering). One slot is
 * served by one master's one thread, so 1,000,000 / `server µs/op` is the
 * most operations per second one registry (one prefix) can get from a
 * cluster, however many masters it has.
 *
 * Stores (`--stores=a,b,...`, default all): `memory`; `redis` (one
 * `redis-server`); `cluster-1` (a Redis Cluster of three masters, one
 * prefix: one slot on one master); `cluster-3` (the same cluster, three
 * registries on three prefixes whose slots are on three different masters,
 * each running the round's calls at once: the aggregate); `kv-mem` (Deno KV
 * `:memory:`); `kv-file` (Deno KV on a file). Every server is started here
 * on free loopback ports and stopped at the end.
 *
 * `--against=<path or URL of another checkout's mod.ts>` runs each chosen
 * store twice per round, with this checkout and with that one (an A/B run
 * of two builds; the other checkout's `redis.ts` beside its `mod.ts`).
 *
 * ```sh
 * deno run -A --unstable-kv bench/store_rounds.ts --rounds=5
 * deno run -A --unstable-kv bench/store_rounds.ts --stores=kv-mem,kv-file --against=/tmp/old/mod.ts
 * ```
 *
 * @module
 */

import * as current from "../mod.ts";
import * as currentRedis from "../redis.ts";
import {
  type RedisCluster,
  type RedisServer,
  startRedis,
  startRedisCluster,
} from "../tests/support/redis_server.ts";

type Mod = typeof current;
type RedisMod = typeof currentRedis;
type Registry = InstanceType<Mod["SessionOwnerRegistry"]>;
type Cancels = InstanceType<Mod["CancellationRegistry"]>;
const KINDS = ["claims", "checks", "requests"] as const;
type Kind = (typeof KINDS)[number];

const STORES = ["memory", "redis", "cluster-1", "cluster-3", "kv-mem", "kv-file"] as const;
type StoreName = (typeof STORES)[number];

const CALLERS = 1_000;
const ROUNDS_PER_CALLER = 10;
const BOUND = 20_000;
/** Prefixes whose slots (648, 6107, 14352) redis-cli's three masters each hold one of. */
const SPREAD = ["down-a:", "down-b:", "down-h:"];

function parseArgs(args: string[]) {
  let rounds = 5;
  let stores: StoreName[] = [...STORES];
  let against: string | null = null;
  for (const arg of args) {
    let m: RegExpExecArray | null;
    if ((m = /^--rounds=(\d+)$/.exec(arg)) !== null && Number(m[1]) > 0) rounds = Number(m[1]);
    else if ((m = /^--stores=(.+)$/.exec(arg)) !== null) {
      stores = m[1].split(",") as StoreName[];
      for (const s of stores) {
        if (!STORES.includes(s)) throw new Error(`unknown store ${s}: use ${STORES.join(", ")}`);
      }
    } else if (arg.startsWith("--against=") && arg.length > 10) against = arg.slice(10);
    else throw new Error(`unknown argument ${arg} (--rounds=N, --stores=a,b, --against=<mod.ts>)`);
  }
  return { rounds, stores, against };
}

/** One store under test, with one build's registries on it. */
interface Subject {
  label: string;
  registries: Registry[];
  /** One cancellation registry beside each owner registry, on its store. */
  cancels: Cancels[];
  /** Redis nodes whose cost per operation is read, if any. */
  nodes: { command(...args: string[]): Promise<string> }[];
  /** Operations (requests) per second, per kind and round. */
  rate: Record<Kind, number[]>;
  /** Redis script µs, then server CPU µs, per operation (request), per kind and round. */
  cost: Record<Kind, [number[], number[]]>;
}

const fps = Array.from({ length: CALLERS }, (_, i) => `fp-${i}`.padEnd(64, "0"));

/** One round of guarded requests' store calls on the callers' own sessions. */
async function requests(reg: Registry, cancels: Cancels, round: number): Promise<void> {
  await Promise.all(fps.map(async (fp, c) => {
    for (let r = 0; r < ROUNDS_PER_CALLER; r++) {
      const sid = `owned-${c}`;
      if (!await reg.authorizeAttach(sid, fp)) throw new Error("refused");
      const entry = await cancels.register(sid, round * ROUNDS_PER_CALLER + r);
      if (entry === null) throw new Error("not registered");
      await cancels.deregister(entry.entryId);
    }
  }));
}

/** One round's calls on `reg`: new ids (claims) or the callers' own sessions (checks). */
async function drive(reg: Registry, ids: (caller: number, r: number) => string): Promise<void> {
  await Promise.all(fps.map(async (fp, c) => {
    for (let r = 0; r < ROUNDS_PER_CALLER; r++) {
      if (!await reg.authorizeAttach(ids(c, r), fp)) throw new Error("refused");
    }
  }));
}

/** `field:value` of an INFO reply. */
function infoField(info: string, section: RegExp, field: string): number {
  const line = info.split("\r\n").find((l) => section.test(l)) ?? "";
  const m = new RegExp(`(?:^|[:,])${field}=?([0-9.]+)`).exec(line);
  return m === null ? 0 : Number(m[1]);
}

/** Redis's script time (µs) and server CPU (µs) so far, summed over `nodes`. */
async function redisCost(nodes: Subject["nodes"]): Promise<[number, number]> {
  let script = 0, cpu = 0;
  for (const node of nodes) {
    const stats = await node.command("INFO", "commandstats");
    script += infoField(stats, /^cmdstat_evalsha:/, "usec");
    script += infoField(stats, /^cmdstat_eval:/, "usec");
    const info = await node.command("INFO", "cpu");
    cpu += (infoField(info, /^used_cpu_user:/, "used_cpu_user:") +
      infoField(info, /^used_cpu_sys:/, "used_cpu_sys:")) * 1e6;
  }
  return [script, cpu];
}

const { rounds, stores, against } = parseArgs(Deno.args);
const builds: { name: string; mod: Mod; redis: RedisMod }[] = [
  { name: "this", mod: current, redis: currentRedis },
];
if (against !== null) {
  const url = new URL(against, `file://${Deno.cwd()}/`);
  builds.push({
    name: "other",
    mod: await import(url.href),
    redis: await import(new URL("./redis.ts", url).href),
  });
}

const dir = await Deno.makeTempDir({ prefix: "mcp-guard-store-rounds-" });
let redis: RedisServer | null = null;
let cluster: RedisCluster | null = null;
const subjects: Subject[] = [];
try {
  if (stores.includes("redis")) redis = await startRedis();
  if (stores.includes("cluster-1") || stores.includes("cluster-3")) {
    cluster = await startRedisCluster();
  }
  const clusterNodes = cluster === null ? [] : cluster.ports.map((port) => ({
    command: (...args: string[]) => cluster!.command(port, ...args),
  }));
  for (const store of stores) {
    for (const [b, build] of builds.entries()) {
      const tag = `${b}`;
      const make = (s: ReturnType<Mod["memoryStore"]>) =>
        new build.mod.SessionOwnerRegistry({
          store: s,
          maxEntries: BOUND,
          maxPerPrincipal: BOUND,
        });
      let stores: ReturnType<Mod["memoryStore"]>[];
      let nodes: Subject["nodes"] = [];
      switch (store) {
        case "memory":
          stores = [build.mod.memoryStore()];
          break;
        case "redis":
          stores = [build.redis.redisStore({ url: redis!.url, prefix: `r${tag}:` })];
          nodes = [redis!];
          break;
        case "cluster-1":
        case "cluster-3": {
          const rootNodes = [...cluster!.urls];
          const prefixes = store === "cluster-1" ? [`one${tag}:`] : SPREAD.map((p) => p + tag);
          stores = prefixes.map((prefix) =>
            build.redis.redisStore({ cluster: { rootNodes }, prefix } as never)
          );
          nodes = clusterNodes;
          break;
        }
        case "kv-mem":
          stores = [build.mod.kvStore({ path: ":memory:" })];
          break;
        case "kv-file":
          stores = [build.mod.kvStore({ path: `${dir}/${tag}.kv` })];
          break;
      }
      subjects.push({
        label: `${store}${builds.length > 1 ? ` (${build.name})` : ""}`,
        registries: stores.map(make),
        cancels: stores.map((store) => new build.mod.CancellationRegistry({ store })),
        nodes,
        rate: { claims: [], checks: [], requests: [] },
        cost: { claims: [[], []], checks: [[], []], requests: [[], []] },
      });
    }
  }

  // Bind each caller's own session, and fill every table to its bound (untimed).
  let fresh = 0;
  for (const s of subjects) {
    await Promise.all(s.registries.map(async (reg) => {
      await Promise.all(fps.map((fp, c) => reg.bind(`owned-${c}`, fp)));
      for (let filled = CALLERS; filled < BOUND + CALLERS * ROUNDS_PER_CALLER;) {
        const base = fresh;
        fresh += CALLERS * ROUNDS_PER_CALLER;
        await drive(reg, (c, r) => `warm-${base + r * CALLERS + c}`);
        filled += CALLERS * ROUNDS_PER_CALLER;
      }
    }));
  }

  for (let round = 0; round < rounds; round++) {
    const order = subjects.map((_, i) => subjects[(i + round) % subjects.length]);
    for (const s of order) {
      for (const kind of KINDS) {
        const before = s.nodes.length > 0 ? await redisCost(s.nodes) : [0, 0];
        const t0 = performance.now();
        await Promise.all(s.registries.map((reg, k) => {
          if (kind === "requests") return requests(reg, s.cancels[k], round);
          if (kind === "checks") return drive(reg, (c) => `owned-${c}`);
          const base = fresh;
          fresh += CALLERS * ROUNDS_PER_CALLER;
          return drive(reg, (c, r) => `new-${base + r * CALLERS + c}`);
        }));
        const ms = performance.now() - t0;
        const ops = CALLERS * ROUNDS_PER_CALLER * s.registries.length;
        s.rate[kind].push(ops / (ms / 1000));
        if (s.nodes.length > 0) {
          const after = await redisCost(s.nodes);
          s.cost[kind][0].push((after[0] - before[0]) / ops);
          s.cost[kind][1].push((after[1] - before[1]) / ops);
        }
      }
    }
  }

  const sorted = (xs: number[]) => [...xs].sort((a, b) => a - b);
  const mmm = (xs: number[], digits = 0) => {
    const s = sorted(xs);
    const f = (x: number) =>
      digits === 0 ? Math.round(x).toLocaleString("en-US") : x.toFixed(digits);
    return `${f(s[0])} / ${f(s[s.length >> 1])} / ${f(s[s.length - 1])}`;
  };
  console.log(
    `\n${rounds} interleaved rounds of ${
      (CALLERS * ROUNDS_PER_CALLER).toLocaleString("en-US")
    } calls per registry (${CALLERS} callers); min / median / max per round\n`,
  );
  console.log(
    "| store | claims/s | checks/s | requests/s | Redis µs (script; CPU) per claim | " +
      "per check | per request |",
  );
  console.log("| --- | --- | --- | --- | --- | --- | --- |");
  for (const s of subjects) {
    const cost = (kind: Kind) =>
      s.nodes.length > 0 ? `${mmm(s.cost[kind][0], 1)}; ${mmm(s.cost[kind][1], 1)}` : "-";
    console.log(
      `| ${s.label} | ${KINDS.map((k) => mmm(s.rate[k])).join(" | ")} | ${
        KINDS.map(cost).join(" | ")
      } |`,
    );
  }
} finally {
  await Promise.all(subjects.flatMap((s) => [...s.registries, ...s.cancels].map((r) => r.close())));
  await redis?.[Symbol.asyncDispose]();
  await cluster?.stop();
  await Deno.remove(dir, { recursive: true }).catch(() => {});
}
