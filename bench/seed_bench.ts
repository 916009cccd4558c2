/**
 * The original Ruby registry's op mix (`../shared/bench/seed_registry.rb`):
 * 1,000,000 `authorize_attach` calls cycling over 10,000 ids with one
 * fingerprint, at most 10,000 entries. Every contender runs the same op
 * sequence (`ids[i % 10_000]`, `i = 0 .. ops - 1`), in one process, in
 * interleaved rounds (each round runs every contender once, in rotating
 * order), so all of them see the same machine:
 *
 * - worker, pipelined: a `SessionOwnerRegistry({ maxEntries: 10_000 })`
 *   driven by 1,000 concurrent callers; caller `c` awaits, one after the
 *   other, the calls `i = c, c + 1000, c + 2000, ...`. Each round's registry
 *   is fresh (a new worker, a new isolate): before the timed part it runs
 *   200,000 untimed calls on other ids (its JIT warms up, as the main
 *   thread's did in the untimed warm-up round) and drops them, so the timed
 *   part starts from an empty table, as the seed does; the checks below
 *   count from there.
 * - in-thread Map: a plain `Map` with exactly the seed's semantics (claim
 *   if absent and evict the oldest beyond the max; refresh if owner; refuse
 *   otherwise), behind an async function with the same 1,000-caller
 *   pipelining (like for like: the registry's cost against a Map), plus the
 *   raw synchronous loop for reference.
 * - one awaited call: p50/p90 of one awaited `authorizeAttach`, interleaved
 *   sample by sample with a bare `postMessage` round trip to an echo worker
 *   (`bench/echo_worker.ts`), the platform's floor.
 * - ruby seed: `ruby seed_registry.rb 1` as a subprocess (it always runs its
 *   own 1,000,000 ops; skipped with a note when `ruby` or the script is
 *   missing).
 *
 * Each result is checked: every call must return `true` (one fingerprint:
 * the seed's answer for every call) and the table must end up holding the
 * seed's number of entries, so a broken registry cannot post a good number.
 *
 * ```sh
 * deno task bench:seed                      # 3 rounds, 1,000,000 ops
 * deno task bench:seed --rounds=5 --ops=200000
 * deno task bench:seed --json > seed.json   # tables on stderr, summary JSON on stdout
 * ```
 *
 * Flags: `--rounds=N` (default 3), `--ops=N` (default 1,000,000),
 * `--samples=N` latency samples per round (default 20,000), `--json`.
 *
 * @module
 */

import { SessionOwnerRegistry } from "../mod.ts";
import { Op } from "../src/actor/protocol.ts";

// ---------------------------------------------------------------- settings

const IDS = 10_000;
const MAX_ENTRIES = 10_000;
const CALLERS = 1_000;
const FP = "p";
const ids = Array.from({ length: IDS }, (_, i) => `s${i}`);
/** Ids the worker's untimed warm-up claims and drops (never among `ids`). */
const warmIds = Array.from({ length: IDS }, (_, i) => `w${i}`);
/** Untimed warm-up calls per fresh worker. */
const WORKER_WARMUP_OPS = 200_000;

interface Settings {
  rounds: number;
  ops: number;
  samples: number;
  json: boolean;
}

function parseArgs(args: string[]): Settings {
  const settings: Settings = { rounds: 3, ops: 1_000_000, samples: 20_000, json: false };
  for (const arg of args) {
    const m = /^--(rounds|ops|samples)=(\d[\d_]*)$/.exec(arg);
    if (m !== null) {
      const value = Number(m[2].replaceAll("_", ""));
      if (!Number.isSafeInteger(value) || value < 1) throw new Error(`bad value in ${arg}`);
      settings[m[1] as "rounds" | "ops" | "samples"] = value;
    } else if (arg === "--json") settings.json = true;
    else {
      throw new Error(
        `unknown argument ${arg} (use --rounds=N, --ops=N, --samples=N, --json)`,
      );
    }
  }
  return settings;
}

// ---------------------------------------------------------------- the seed's semantics

/** The seed's `authorize_attach` on a plain Map (insertion order = LRU order). */
class SeedMap {
  readonly owners = new Map<string, string>();
  constructor(readonly max: number) {}

  attach(sid: string, fp: string): boolean {
    if (!sid || !fp) return false;
    const owner = this.owners.get(sid);
    if (owner === undefined) {
      this.owners.set(sid, fp);
      while (this.owners.size > this.max) {
        this.owners.delete(this.owners.keys().next().value!);
      }
      return true;
    }
    if (owner === fp) {
      this.owners.delete(sid);
      this.owners.set(sid, owner);
      return true;
    }
    return false;
  }
}

/** How many entries the seed holds after `ops` calls. */
const expectedSize = (ops: number) => Math.min(ops, IDS, MAX_ENTRIES);

/**
 * Runs `ops` calls through `attach` with {@linkcode CALLERS} concurrent
 * callers, caller `c` taking `i = c, c + CALLERS, ...`; returns seconds.
 * Throws unless every call answered `true`.
 */
async function pipelined(
  ops: number,
  attach: (i: number) => Promise<boolean>,
  label: string,
): Promise<number> {
  let ok = 0;
  const caller = async (c: number) => {
    for (let i = c; i < ops; i += CALLERS) if (await attach(i)) ok++;
  };
  const started = performance.now();
  const callers: Promise<void>[] = [];
  for (let c = 0; c < Math.min(CALLERS, ops); c++) callers.push(caller(c));
  await Promise.all(callers);
  const seconds = (performance.now() - started) / 1000;
  if (ok !== ops) throw new Error(`${label}: ${ok} of ${ops} calls returned true, seed: ${ops}`);
  return seconds;
}

// ---------------------------------------------------------------- contenders

interface RoundResult {
  workerOps?: number;
  workerSeconds?: number;
  mapOps?: number;
  mapSeconds?: number;
  mapSyncOps?: number;
  callP50Us?: number;
  callP90Us?: number;
  rtP50Us?: number;
  rtP90Us?: number;
  rubyOps?: number;
  rubySkipped?: string;
}

/**
 * The seed has no per-principal cap: with the default `maxPerPrincipal` (100)
 * its one fingerprint would keep only 100 bindings and turn the seed's
 * refreshes into claim + evict, a different op mix. Lifting the cap to
 * `maxEntries` gives exactly the seed's semantics (checked below: 10,000
 * claims, then refreshes, no evictions).
 */
const WORKER_OPTIONS = { maxEntries: MAX_ENTRIES, maxPerPrincipal: MAX_ENTRIES };

async function runWorker(ops: number, out: RoundResult): Promise<void> {
  const registry = new SessionOwnerRegistry(WORKER_OPTIONS);
  try {
    // Untimed: boot this worker and warm its JIT on other ids (a fresh worker is a fresh
    // isolate), then drop them, so the timed part starts from an empty table as the seed does.
    const warm = Math.min(ops, WORKER_WARMUP_OPS);
    await pipelined(warm, (i) => registry.authorizeAttach(warmIds[i % IDS], FP), "worker warm-up");
    await Promise.all(warmIds.map((id) => registry.forget(id)));
    const before = await registry.stats();
    if (before.size !== 0) throw new Error(`worker: ${before.size} entries left after warm-up`);
    const seconds = await pipelined(
      ops,
      (i) => registry.authorizeAttach(ids[i % IDS], FP),
      "worker",
    );
    const after = await registry.stats();
    const size = after.size;
    const claims = after.claims - before.claims;
    const evictions = after.evictions - before.evictions;
    const refusals = after.refusals - before.refusals;
    const want = expectedSize(ops);
    if (size !== want || claims !== want || evictions !== 0 || refusals !== 0) {
      throw new Error(
        `worker: size ${size}, claims ${claims}, evictions ${evictions}, refusals ${refusals}; seed: ${want} entries, ${want} claims, no evictions or refusals`,
      );
    }
    const owner = await registry.ownerOf(ids[(ops - 1) % IDS]);
    if (owner !== FP) throw new Error(`worker: last id owned by ${owner}, expected ${FP}`);
    out.workerSeconds = seconds;
    out.workerOps = ops / seconds;
  } finally {
    await registry.close();
  }
}

async function runMap(ops: number, out: RoundResult): Promise<void> {
  const map = new SeedMap(MAX_ENTRIES);
  // deno-lint-ignore require-await
  const attach = async (sid: string, fp: string) => map.attach(sid, fp);
  const seconds = await pipelined(ops, (i) => attach(ids[i % IDS], FP), "map");
  if (map.owners.size !== expectedSize(ops)) {
    throw new Error(`map: holds ${map.owners.size} entries, seed: ${expectedSize(ops)}`);
  }
  out.mapSeconds = seconds;
  out.mapOps = ops / seconds;

  const sync = new SeedMap(MAX_ENTRIES);
  let ok = 0;
  const started = performance.now();
  for (let i = 0; i < ops; i++) if (sync.attach(ids[i % IDS], FP)) ok++;
  const syncSeconds = (performance.now() - started) / 1000;
  if (ok !== ops || sync.owners.size !== expectedSize(ops)) {
    throw new Error(`map, sync loop: ${ok} true of ${ops}, ${sync.owners.size} entries`);
  }
  out.mapSyncOps = ops / syncSeconds;
}

const quantile = (xs: number[], q: number) =>
  [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))];

async function runLatency(samples: number, out: RoundResult): Promise<void> {
  const registry = new SessionOwnerRegistry({ maxEntries: MAX_ENTRIES });
  const echo = new Worker(new URL("./echo_worker.ts", import.meta.url), { type: "module" });
  let echoed: (() => void) | null = null;
  echo.onmessage = () => echoed?.();
  let nextId = 1;
  const roundTrip = (sid: string) =>
    new Promise<void>((resolve) => {
      echoed = resolve;
      // Shaped like the registry's own one-call batch.
      echo.postMessage({ kind: "batch", id: nextId++, ops: [Op.Attach], args: [sid, FP, false] });
    });
  try {
    const warmup = Math.max(1_000, Math.floor(samples / 4));
    for (let k = 0; k < warmup; k++) {
      if (!(await registry.authorizeAttach(ids[k % IDS], FP))) throw new Error("refused");
      await roundTrip(ids[k % IDS]);
    }
    const call: number[] = [];
    const rt: number[] = [];
    const timeCall = async (sid: string) => {
      const started = performance.now();
      const ok = await registry.authorizeAttach(sid, FP);
      call.push(performance.now() - started);
      if (!ok) throw new Error(`latency: authorizeAttach(${sid}) returned false, seed: true`);
    };
    const timeRoundTrip = async (sid: string) => {
      const started = performance.now();
      await roundTrip(sid);
      rt.push(performance.now() - started);
    };
    for (let k = 0; k < samples; k++) {
      // Alternate which goes first, so neither always follows the other.
      const sid = ids[k % IDS];
      if (k % 2 === 0) {
        await timeCall(sid);
        await timeRoundTrip(sid);
      } else {
        await timeRoundTrip(sid);
        await timeCall(sid);
      }
    }
    out.callP50Us = quantile(call, 0.5) * 1000;
    out.callP90Us = quantile(call, 0.9) * 1000;
    out.rtP50Us = quantile(rt, 0.5) * 1000;
    out.rtP90Us = quantile(rt, 0.9) * 1000;
  } finally {
    echo.terminate();
    await registry.close();
  }
}

const SEED_SCRIPT = new URL("../../shared/bench/seed_registry.rb", import.meta.url);

/** Why the Ruby seed cannot run here, or null when it can. */
async function rubyUnavailable(): Promise<string | null> {
  try {
    await Deno.stat(SEED_SCRIPT);
  } catch {
    return `${SEED_SCRIPT.pathname} not found`;
  }
  try {
    const { success } = await new Deno.Command("ruby", { args: ["--version"], stdout: "null" })
      .output();
    return success ? null : "`ruby --version` failed";
  } catch (err) {
    return err instanceof Deno.errors.NotFound
      ? "ruby is not on PATH"
      : `cannot run ruby: ${(err as Error).message}`;
  }
}

async function runRuby(out: RoundResult): Promise<void> {
  const { success, stdout, stderr } = await new Deno.Command("ruby", {
    args: [SEED_SCRIPT.pathname, "1"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(stdout);
  const m = /ruby seed, 1 thread: (\d+(?:\.\d+)?) kops\/s/.exec(text);
  if (!success || m === null) {
    throw new Error(`ruby seed failed: ${text}${new TextDecoder().decode(stderr)}`);
  }
  out.rubyOps = Number(m[1]) * 1000;
}

// ---------------------------------------------------------------- formatting

const num = (x: number | undefined, digits = 0) =>
  x === undefined ? "-" : x.toLocaleString("en-US", {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
const ratio = (a: number | undefined, b: number | undefined) =>
  a === undefined || b === undefined ? undefined : a / b;
const ratioText = (x: number | undefined) => x === undefined ? "-" : `${x.toFixed(3)}x`;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

// ---------------------------------------------------------------- main

type Contender = "worker" | "map" | "latency" | "ruby";
const CONTENDERS: Contender[] = ["worker", "map", "latency", "ruby"];

async function main(): Promise<void> {
  const settings = parseArgs(Deno.args);
  /** Human-readable output: stderr under `--json`, so stdout carries only the JSON. */
  const say = settings.json ? (line = "") => console.error(line) : (line = "") => console.log(line);

  const rubySkip = await rubyUnavailable();
  const rubyVersion = rubySkip === null
    ? new TextDecoder().decode(
      (await new Deno.Command("ruby", { args: ["--version"], stdout: "piped" }).output()).stdout,
    ).trim()
    : null;

  say(
    `seed op mix: ${num(settings.ops)} authorizeAttach calls over ${num(IDS)} ids, ` +
      `one fingerprint, maxEntries ${num(MAX_ENTRIES)}; ${num(CALLERS)} pipelined callers`,
  );
  say(`registry options: ${JSON.stringify(WORKER_OPTIONS)} (no per-principal cap, as in the seed)`);
  say(
    `deno ${Deno.version.deno} (v8 ${Deno.version.v8}), ${navigator.hardwareConcurrency} cores; ` +
      (rubyVersion ?? `ruby seed skipped: ${rubySkip}`),
  );
  if (rubySkip === null && settings.ops !== 1_000_000) {
    say(`note: the ruby seed always runs its own 1,000,000 ops; ops/s are compared`);
  }
  say(
    `interleaved rounds: ${settings.rounds}; latency samples per round: ${num(settings.samples)}`,
  );

  // Untimed warm-up of the JS paths (the JIT), so round 1 is not the odd one out.
  {
    const warm = Math.min(settings.ops, 100_000);
    await runWorker(warm, {});
    await runMap(warm, {});
  }

  const rounds: RoundResult[] = [];
  for (let r = 0; r < settings.rounds; r++) {
    const order = CONTENDERS.map((_, k) => CONTENDERS[(k + r) % CONTENDERS.length]);
    const out: RoundResult = {};
    for (const contender of order) {
      switch (contender) {
        case "worker":
          await runWorker(settings.ops, out);
          break;
        case "map":
          await runMap(settings.ops, out);
          break;
        case "latency":
          await runLatency(settings.samples, out);
          break;
        case "ruby":
          if (rubySkip === null) await runRuby(out);
          else out.rubySkipped = rubySkip;
          break;
      }
    }
    rounds.push(out);
    say();
    say(`round ${r + 1}/${settings.rounds} (order: ${order.join(", ")})`);
    const rows: [string, string][] = [
      [
        "worker, pipelined",
        `${num(out.workerOps).padStart(11)} ops/s  (${out.workerSeconds!.toFixed(2)} s)`,
      ],
      [
        "in-thread Map, pipelined",
        `${num(out.mapOps).padStart(11)} ops/s  (${out.mapSeconds!.toFixed(2)} s)`,
      ],
      ["in-thread Map, sync loop", `${num(out.mapSyncOps).padStart(11)} ops/s`],
      [
        "ruby seed, 1 thread",
        out.rubyOps === undefined ? "skipped" : `${num(out.rubyOps).padStart(11)} ops/s`,
      ],
      [
        "one awaited call",
        `p50 ${num(out.callP50Us, 1)} µs  p90 ${num(out.callP90Us, 1)} µs`,
      ],
      [
        "bare postMessage round trip",
        `p50 ${num(out.rtP50Us, 1)} µs  p90 ${num(out.rtP90Us, 1)} µs`,
      ],
    ];
    for (const [name, value] of rows) say(`  ${name.padEnd(30)} ${value}`);
    say(
      `  ratios: worker/Ruby ${ratioText(ratio(out.workerOps, out.rubyOps))}, worker/Map ${
        ratioText(ratio(out.workerOps, out.mapOps))
      }, call/round trip ${ratioText(ratio(out.callP50Us, out.rtP50Us))}`,
    );
  }

  // Per-round values (ratios computed within each round), then min/median/max.
  const metrics: [key: string, label: string, unit: string, values: (number | undefined)[]][] = [
    ["workerOps", "worker ops/s", "", rounds.map((r) => r.workerOps)],
    ["mapOps", "Map ops/s (pipelined)", "", rounds.map((r) => r.mapOps)],
    ["mapSyncOps", "Map ops/s (sync loop)", "", rounds.map((r) => r.mapSyncOps)],
    ["rubyOps", "Ruby ops/s", "", rounds.map((r) => r.rubyOps)],
    ["workerToRuby", "worker/Ruby", "x", rounds.map((r) => ratio(r.workerOps, r.rubyOps))],
    ["workerToMap", "worker/Map", "x", rounds.map((r) => ratio(r.workerOps, r.mapOps))],
    ["callP50Us", "call p50 µs", "", rounds.map((r) => r.callP50Us)],
    ["callP90Us", "call p90 µs", "", rounds.map((r) => r.callP90Us)],
    ["roundTripP50Us", "round-trip p50 µs", "", rounds.map((r) => r.rtP50Us)],
    ["roundTripP90Us", "round-trip p90 µs", "", rounds.map((r) => r.rtP90Us)],
    [
      "callToRoundTrip",
      "call/round-trip (p50)",
      "x",
      rounds.map((r) => ratio(r.callP50Us, r.rtP50Us)),
    ],
  ];

  interface Summary {
    min: number;
    median: number;
    max: number;
    rounds: number[];
  }
  const summary: Record<string, Summary | null> = {};
  say();
  say(`summary over ${settings.rounds} rounds`);
  say(`  ${"".padEnd(24)} ${"min".padStart(12)} ${"median".padStart(12)} ${"max".padStart(12)}`);
  for (const [key, label, unit, values] of metrics) {
    const xs = values.filter((x): x is number => x !== undefined);
    if (xs.length === 0) {
      summary[key] = null;
      say(`  ${label.padEnd(24)} ${"skipped".padStart(12)}`);
      continue;
    }
    // Rounded for the JSON: whole ops/s, 0.1 µs, 4 decimals for ratios.
    const digits = unit === "x" ? 4 : key.endsWith("Us") ? 1 : 0;
    const round = (x: number) => Number(x.toFixed(digits));
    const s = {
      min: round(Math.min(...xs)),
      median: round(median(xs)),
      max: round(Math.max(...xs)),
      rounds: xs.map(round),
    };
    summary[key] = s;
    const fmt = (x: number) =>
      unit === "x" ? `${x.toFixed(3)}x` : key.endsWith("Us") ? num(x, 1) : num(x);
    say(
      `  ${label.padEnd(24)} ${fmt(s.min).padStart(12)} ${fmt(s.median).padStart(12)} ${
        fmt(s.max).padStart(12)
      }`,
    );
  }

  if (settings.json) {
    console.log(JSON.stringify(
      {
        bench: "seed_registry op mix",
        ops: settings.ops,
        ids: IDS,
        maxEntries: MAX_ENTRIES,
        callers: CALLERS,
        rounds: settings.rounds,
        latencySamples: settings.samples,
        deno: Deno.version.deno,
        v8: Deno.version.v8,
        cores: navigator.hardwareConcurrency,
        ruby: rubyVersion,
        rubySkipped: rubySkip,
        summary,
      },
      null,
      2,
    ));
  }
}

// `deno bench bench/` (the "bench" task) loads every *_bench.ts: run only as a script.
if (import.meta.main) await main();
