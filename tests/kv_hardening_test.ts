/**
 * Hardening of the Deno KV store: `bind`'s shared flag and `touch`, idle
 * expiry (`idleTtlMs`), evictions and expiries announced to every process
 * sharing the database, keys that fit KV's limits for any accepted input,
 * one operation's failure isolated from the rest of its batch, what a
 * backend carries from one transaction to the next never outliving another
 * process's write nor a transaction that did not commit, and
 * misconfiguration (a typo in an option, no `--unstable-kv`, no permission)
 * reported by name.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import {
  CancellationRegistry,
  InvalidInputError,
  kvStore,
  type RemovedSessions,
  SessionOwnerRegistry,
} from "../mod.ts";
import { createBackend } from "../src/store/kv/kv_backend.ts";
import { OpFailure } from "../src/store/backend.ts";
import { OwnerTable, resolveOwnerOptions } from "../src/core/owner_table.ts";
import { type InitMessage, Op, type WorkerEvent } from "../src/actor/protocol.ts";
import { utf8Length } from "../src/core/validate.ts";

const MOD_URL = new URL("../mod.ts", import.meta.url).href;

async function waitFor(what: string, cond: () => boolean | Promise<boolean>, ms = 3_000) {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Collects a registry's `onRemoved` events as `cause:sid` strings. */
function listen(owners: SessionOwnerRegistry): string[] {
  const heard: string[] = [];
  owners.onRemoved((e: RemovedSessions) => {
    for (const sid of e.sessionIds) heard.push(`${e.cause}:${sid}`);
  });
  return heard;
}

/** A child `deno run` process (a script written to `dir`) that reports JSON lines. */
class Proc {
  readonly #proc: Deno.ChildProcess;
  readonly #reader: ReadableStreamDefaultReader<string>;
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array>;
  #buffer = "";

  constructor(flags: string[], script: string, job: unknown) {
    this.#proc = new Deno.Command(Deno.execPath(), {
      args: ["run", "--quiet", ...flags, script, JSON.stringify(job)],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#reader = this.#proc.stdout.pipeThrough(new TextDecoderStream()).getReader();
    this.#stdin = this.#proc.stdin.getWriter();
  }

  async next(): Promise<Record<string, unknown>> {
    while (!this.#buffer.includes("\n")) {
      const { value, done } = await this.#reader.read();
      if (done) {
        const err = await new Response(this.#proc.stderr).text();
        throw new Error(`child exited early: ${this.#buffer} ${err}`);
      }
      this.#buffer += value;
    }
    const at = this.#buffer.indexOf("\n");
    const line = this.#buffer.slice(0, at);
    this.#buffer = this.#buffer.slice(at + 1);
    return JSON.parse(line);
  }

  /** Closes stdin (the child's cue to stop) and returns its exit code. */
  async close(): Promise<number> {
    await this.#stdin.close().catch(() => {});
    await this.#reader.cancel().catch(() => {});
    await this.#proc.stderr.cancel().catch(() => {});
    return (await this.#proc.status).code;
  }
}

/** The child script: `listen` prints every `onRemoved` event; `call` prints one call's outcome. */
function childScript(): string {
  return `
import { kvStore, SessionOwnerRegistry } from ${JSON.stringify(MOD_URL)};
const job = JSON.parse(Deno.args[0]);
const out = (v) => console.log(JSON.stringify(v));
if (job.action === "listen") {
  const owners = new SessionOwnerRegistry({
    store: kvStore({ path: job.path, prefix: job.prefix, pollIntervalMs: 20, idleTtlMs: job.idleTtlMs ?? 0 }),
    maxEntries: job.maxEntries ?? 10000,
    touchIntervalMs: 0,
  });
  owners.onRemoved((e) => out({ event: e }));
  await owners.size();
  out({ ready: true });
  for await (const _ of Deno.stdin.readable) { /* until the parent closes stdin */ }
  await owners.close();
} else {
  const owners = new SessionOwnerRegistry({ store: kvStore({ path: job.path }) });
  try {
    out({ ok: await owners.bind("s-1", "fp-a") });
  } catch (err) {
    out({ name: err.name, message: err.message });
  }
  await owners.close();
}
`;
}

Deno.test("kvStore options: typos, idleTtlMs and a prefix that keeps keys within KV's limit", async (t) => {
  await t.step("an unknown key names itself and the nearest valid one", () => {
    assert.throws(
      () => kvStore({ pathh: "./x.kv" } as never),
      (err: unknown) =>
        err instanceof InvalidInputError && /"pathh"/.test(err.message) &&
        /did you mean "path"/.test(err.message),
    );
    assert.throws(
      () => kvStore({ idleTTLms: 5 } as never),
      (err: unknown) => err instanceof InvalidInputError && /"idleTtlMs"/.test(err.message),
    );
  });

  await t.step("idleTtlMs is a count of ms, resolved into the descriptor", () => {
    for (const bad of [-1, 1.5, "10", NaN]) {
      assert.throws(() => kvStore({ idleTtlMs: bad as never }), /idleTtlMs/);
    }
    const store = kvStore({ idleTtlMs: 5_000 });
    assert.equal((store as { options: { idleTtlMs: number } }).options.idleTtlMs, 5_000);
    assert.equal((kvStore() as { options: { idleTtlMs: number } }).options.idleTtlMs, 0);
  });

  await t.step(
    "prefix: 1 to 64 UTF-8 bytes, no NUL, well-formed; the error names the limit",
    () => {
      const max = "€".repeat(21) + "x"; // 64 bytes, 22 characters
      assert.equal(utf8Length(max), 64);
      assert.equal(kvStore({ prefix: max }).kind, "module");
      for (const bad of ["€".repeat(22), "x".repeat(65), "a\0b", "\uD800", ""]) {
        assert.throws(
          () => kvStore({ prefix: bad }),
          (err: unknown) =>
            err instanceof InvalidInputError && /64 UTF-8 bytes/.test(err.message) &&
            /2,048-byte/.test(err.message),
          JSON.stringify(bad),
        );
      }
    },
  );
});

Deno.test("Deno KV store: shared binds, touch and idle expiry", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "mcp-guard-kv-hard-" });
  const path = `${dir}/sessions.kv`;
  let n = 0;
  const prefix = () => `h${n++}`;
  try {
    await t.step("bind { shared: true } is exempt from the per-principal cap", async () => {
      await using owners = new SessionOwnerRegistry({
        maxPerPrincipal: 1,
        store: kvStore({ path, prefix: prefix() }),
      });
      const heard = listen(owners);
      assert.equal(await owners.bind("s1", "fp-a"), "bound");
      assert.equal(await owners.bind("s2", "fp-a", { shared: true }), "bound");
      assert.equal(await owners.bind("s3", "fp-a", { shared: true }), "bound");
      assert.equal(await owners.ownerOf("s1"), "fp-a");
      assert.equal((await owners.stats()).evictions, 0);
      // Without the flag the principal pays with its own oldest binding.
      assert.equal(await owners.bind("s4", "fp-a"), "bound");
      assert.equal(await owners.ownerOf("s1"), null);
      assert.equal((await owners.stats()).evictions, 1);
      assert.deepEqual(heard, ["evicted:s1"]);
    });

    await t.step("touch refreshes its owner's binding only, and is never a claim", async () => {
      await using owners = new SessionOwnerRegistry({
        maxEntries: 2,
        touchIntervalMs: 0,
        store: kvStore({ path, prefix: prefix() }),
      });
      assert.equal(await owners.bind("a", "fp-a"), "bound");
      assert.equal(await owners.bind("b", "fp-b"), "bound");
      await owners.touch("a", "fp-b"); // not the owner: no refresh
      await owners.touch("nobody", "fp-b"); // unbound: not claimed
      assert.equal(await owners.ownerOf("nobody"), null);
      assert.equal(await owners.bind("c", "fp-c"), "bound"); // evicts a, the least recent
      assert.equal(await owners.ownerOf("a"), null);
      await owners.touch("b", "fp-b"); // the owner: b becomes the most recent
      assert.equal(await owners.bind("d", "fp-d"), "bound"); // evicts c, not b
      assert.equal(await owners.ownerOf("b"), "fp-b");
      assert.equal(await owners.ownerOf("c"), null);
      const stats = await owners.stats();
      assert.equal(stats.claims, 0);
      assert.equal(stats.refusals, 0);
      assert.equal(stats.invalid, 0);
    });

    await t.step("property: shared binds and touches agree with the pure table", async () => {
      type Call =
        | { op: "bind"; sid: string; fp: string; shared: boolean }
        | { op: "touch"; sid: string; fp: string }
        | { op: "attach"; sid: string; fp: string; pin: boolean }
        | { op: "unpin"; sid: string }
        | { op: "ownerOf"; sid: string };
      const sid = fc.constantFrom("s1", "s2", "s3", "s4", "s5", "s6");
      const fp = fc.constantFrom("fp-a", "fp-b", "fp-c");
      const call: fc.Arbitrary<Call> = fc.oneof(
        fc.record({ op: fc.constant("bind" as const), sid, fp, shared: fc.boolean() }),
        fc.record({ op: fc.constant("touch" as const), sid, fp }),
        fc.record({ op: fc.constant("attach" as const), sid, fp, pin: fc.boolean() }),
        fc.record({ op: fc.constant("unpin" as const), sid }),
        fc.record({ op: fc.constant("ownerOf" as const), sid }),
      );
      await fc.assert(
        fc.asyncProperty(fc.array(call, { minLength: 1, maxLength: 40 }), async (calls) => {
          const bounds = { maxEntries: 4, maxPerPrincipal: 2, sharedPrincipals: [] };
          await using owners = new SessionOwnerRegistry({
            ...bounds,
            touchIntervalMs: 0,
            store: kvStore({ path, prefix: prefix() }),
          });
          const model = new OwnerTable(bounds);
          const got = await Promise.all(calls.map((c) => {
            switch (c.op) {
              case "bind":
                return owners.bind(c.sid, c.fp, { shared: c.shared });
              case "touch":
                return owners.touch(c.sid, c.fp);
              case "attach":
                return owners.authorizeAttach(c.sid, c.fp, { pin: c.pin });
              case "unpin":
                return owners.unpin(c.sid);
              case "ownerOf":
                return owners.ownerOf(c.sid);
            }
          }));
          const want = calls.map((c) => {
            switch (c.op) {
              case "bind":
                return model.bind(c.sid, c.fp, c.shared);
              case "touch":
                return void model.touch(c.sid, c.fp);
              case "attach":
                return model.authorizeAttach(c.sid, c.fp, c.pin);
              case "unpin":
                return model.unpin(c.sid);
              case "ownerOf":
                return model.ownerOf(c.sid);
            }
          });
          assert.deepEqual(got, want);
          assert.deepEqual(await owners.stats(), model.stats());
          for (const s of ["s1", "s2", "s3", "s4", "s5", "s6"]) {
            assert.equal(await owners.ownerOf(s), model.ownerOf(s), s);
          }
        }),
        { numRuns: 25 },
      );
    });

    await t.step(
      "idle bindings expire for every op and are announced; pinned ones never",
      async () => {
        const store = kvStore({ path, prefix: prefix(), idleTtlMs: 400, pollIntervalMs: 20 });
        await using owners = new SessionOwnerRegistry({ store, touchIntervalMs: 100 });
        await using other = new SessionOwnerRegistry({ store, touchIntervalMs: 100 });
        const heard = listen(owners);
        const heardOther = listen(other);
        await other.size(); // started: it reads the event log from here on
        assert.equal(await owners.bind("idle", "fp-a"), "bound");
        assert.equal(await owners.bind("busy", "fp-a"), "bound");
        assert.equal(await owners.authorizeAttach("live", "fp-a", { pin: true }), true);
        const started = Date.now();
        // busy is used (touched) all along; idle is not.
        while (Date.now() - started < 900) {
          await owners.touch("busy", "fp-a");
          await sleep(50);
        }
        assert.equal(await owners.ownerOf("idle"), null);
        assert.equal(await other.authorizeAttach("idle", "fp-b"), true); // unbound now: claimable
        assert.equal(await owners.ownerOf("busy"), "fp-a");
        assert.equal(await owners.ownerOf("live"), "fp-a"); // pinned: never expires
        await waitFor(
          "both registries to hear the expiry",
          () => heard.includes("expired:idle") && heardOther.includes("expired:idle"),
        );
        await sleep(100);
        // Announced once to each, whichever process swept it.
        assert.deepEqual(
          heard.filter((e) => e === "expired:idle"),
          ["expired:idle"],
        );
        assert.deepEqual(heardOther.filter((e) => e === "expired:idle"), ["expired:idle"]);
        assert.ok(!heard.some((e) => /busy|live/.test(e)), heard.join());
        // Unpinned, the live one ages like any other.
        assert.equal(await owners.unpin("live"), true);
        await waitFor(
          "the unpinned binding to expire",
          () => heard.includes("expired:live"),
          3_000,
        );
        assert.equal(await other.ownerOf("live"), null);
      },
    );

    await t.step("data written with sequence scores (before idleTtlMs) still works", async () => {
      const p = prefix();
      {
        const kv = await Deno.openKv(path);
        // The layout of the previous version: scores 1, 2 from a counter, no event sequence.
        await kv.atomic()
          .set([p, "o", "meta"], {
            seq: 2,
            size: 2,
            pinned: 0,
            evictions: 0,
            refusals: 0,
            claims: 0,
            invalid: 0,
            full: 0,
          })
          .set([p, "o", "s", "old-1"], { owner: "fp-a", pins: 0, score: 1 })
          .set([p, "o", "lru", 1, "old-1"], "fp-a")
          .set([p, "o", "pu", "fp-a", 1, "old-1"], true)
          .set([p, "o", "s", "old-2"], { owner: "fp-b", pins: 0, score: 2 })
          .set([p, "o", "lru", 2, "old-2"], "fp-b")
          .set([p, "o", "pu", "fp-b", 2, "old-2"], true)
          .set([p, "o", "pc", "fp-a"], 1)
          .set([p, "o", "pc", "fp-b"], 1)
          .commit();
        kv.close();
      }
      {
        await using owners = new SessionOwnerRegistry({
          maxEntries: 2,
          store: kvStore({ path, prefix: p }),
        });
        assert.equal(await owners.ownerOf("old-1"), "fp-a");
        assert.equal(await owners.bind("old-2", "fp-b"), "bound"); // refreshed: now the newest
        assert.equal(await owners.bind("new", "fp-c"), "bound"); // evicts old-1
        assert.equal(await owners.ownerOf("old-1"), null);
        assert.equal(await owners.ownerOf("old-2"), "fp-b");
        assert.equal(await owners.size(), 2);
      }
      // With idle expiry on, the old scores read as long idle: they expire, nothing breaks.
      await using owners = new SessionOwnerRegistry({
        store: kvStore({ path, prefix: p, idleTtlMs: 60_000 }),
      });
      assert.equal(await owners.ownerOf("new"), "fp-c");
      assert.equal(await owners.ownerOf("old-2"), "fp-b"); // refreshed above with a clock score
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("Deno KV store: evictions and expiries reach every process sharing the file", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "mcp-guard-kv-ev-" });
  const path = `${dir}/sessions.kv`;
  const script = `${dir}/child.ts`;
  await Deno.writeTextFile(script, childScript());
  try {
    await t.step("a registry started later hears only what happens after it started", async () => {
      const store = kvStore({ path, prefix: "late", pollIntervalMs: 20 });
      await using a = new SessionOwnerRegistry({ maxEntries: 1, store });
      assert.equal(await a.bind("s1", "fp-a"), "bound");
      assert.equal(await a.bind("s2", "fp-a"), "bound"); // evicts s1
      await using b = new SessionOwnerRegistry({ maxEntries: 1, store });
      const heardB = listen(b);
      await b.size();
      await sleep(100);
      assert.deepEqual(heardB, []);
      assert.equal(await a.bind("s3", "fp-a"), "bound"); // evicts s2
      await waitFor("b to hear s2", () => heardB.length > 0);
      assert.deepEqual(heardB, ["evicted:s2"]);
    });

    await t.step("another process hears every eviction, in order, once", async () => {
      const child = new Proc(
        ["--allow-all", "--unstable-kv"],
        script,
        { action: "listen", path, prefix: "x", maxEntries: 3 },
      );
      try {
        assert.deepEqual(await child.next(), { ready: true });
        await using here = new SessionOwnerRegistry({
          maxEntries: 3,
          store: kvStore({ path, prefix: "x", pollIntervalMs: 20 }),
        });
        const heard = listen(here);
        // 250 sessions with 256-byte ids in one tick: 247 evictions, in many commits.
        const sids = Array.from({ length: 250 }, (_, i) => `${i}-`.padEnd(256, "x"));
        const results = await Promise.all(sids.map((sid) => here.bind(sid, "fp-a")));
        assert.ok(results.every((r) => r === "bound"));
        const want = sids.slice(0, 247).map((sid) => `evicted:${sid}`);
        assert.deepEqual(heard, want); // this process: at once, with the replies
        const theirs: string[] = [];
        while (theirs.length < want.length) {
          const line = await child.next();
          const event = line.event as RemovedSessions;
          for (const sid of event.sessionIds) theirs.push(`${event.cause}:${sid}`);
        }
        assert.deepEqual(theirs, want);
      } finally {
        assert.equal(await child.close(), 0);
      }
    });

    await t.step("an idle expiry is announced once in every process", async () => {
      const child = new Proc(
        ["--allow-all", "--unstable-kv"],
        script,
        { action: "listen", path, prefix: "ttl", idleTtlMs: 300 },
      );
      try {
        assert.deepEqual(await child.next(), { ready: true });
        await using here = new SessionOwnerRegistry({
          store: kvStore({ path, prefix: "ttl", pollIntervalMs: 20, idleTtlMs: 300 }),
          touchIntervalMs: 0,
        });
        const heard = listen(here);
        assert.equal(await here.bind("gone-1", "fp-a"), "bound");
        assert.equal(await here.bind("gone-2", "fp-b"), "bound");
        await waitFor("the expiry here", () => heard.length >= 2);
        const theirs: string[] = [];
        while (theirs.length < 2) {
          const event = (await child.next()).event as RemovedSessions;
          for (const sid of event.sessionIds) theirs.push(`${event.cause}:${sid}`);
        }
        await sleep(300);
        assert.deepEqual(heard.sort(), ["expired:gone-1", "expired:gone-2"]);
        assert.deepEqual(theirs.sort(), ["expired:gone-1", "expired:gone-2"]);
      } finally {
        assert.equal(await child.close(), 0);
      }
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("Deno KV store: the longest accepted input fits every key and every commit", async () => {
  const dir = await Deno.makeTempDir({ prefix: "mcp-guard-kv-big-" });
  const prefix = "€".repeat(21) + "x"; // the longest prefix: 64 bytes
  const store = kvStore({ path: `${dir}/big.kv`, prefix });
  try {
    const sid = "s".repeat(256);
    const fps = ["€".repeat(341) + "x", "😀".repeat(256), "f".repeat(1024)]; // 1,024 bytes each
    const rids = ["€".repeat(341) + "x", "\0".repeat(1024), "😀".repeat(256), "r".repeat(1024)];
    for (const v of [...fps, ...rids]) assert.equal(utf8Length(v), 1024);
    {
      const bounds = { maxEntries: 250, maxPerPrincipal: 1_000 };
      await using owners = new SessionOwnerRegistry({ ...bounds, store, touchIntervalMs: 0 });
      for (const fp of fps) {
        const own = `${fp.length}`.padEnd(256, "-");
        assert.equal(await owners.bind(own, fp), "bound");
        assert.equal(await owners.authorizeAttach(own, fp, { pin: true }), true);
        await owners.touch(own, fp);
        assert.equal(await owners.unpin(own), true);
        assert.equal(await owners.ownerOf(own), fp);
        assert.equal(await owners.forget(own, fp), true);
      }
      // Many such bindings in one tick (the last ones evicting): each commit stays within
      // KV's limits (81,920 bytes of keys written, 1,000 mutations, 800 KiB in all).
      const calls = Array.from({ length: 300 }, (_, i) => [`${i}-`.padEnd(256, "y"), fps[i % 3]]);
      const results = await Promise.all(calls.map(([s, fp]) => owners.bind(s, fp)));
      const model = new OwnerTable(bounds);
      assert.deepEqual(results, calls.map(([s, fp]) => model.bind(s, fp)));
      assert.deepEqual(await owners.stats(), model.stats());
    }
    await using cancels = new CancellationRegistry({ store });
    for (const rid of rids) {
      const reg = await cancels.register(sid, rid);
      assert.ok(reg !== null, JSON.stringify(rid.slice(0, 4)));
      assert.equal(await cancels.cancel(sid, rid, "x".repeat(5_000)), true);
      assert.ok(reg.signal.aborted);
      assert.equal(await cancels.deregister(reg.entryId), true);
    }
    // NUL ids are keyed apart from each other and from their look-alikes.
    const a = (await cancels.register(sid, "\0a"))!;
    const b = (await cancels.register(sid, "\0b"))!;
    assert.equal(await cancels.cancel(sid, "\0b"), true);
    assert.equal(b.signal.aborted, true);
    assert.equal(a.signal.aborted, false);
    const regs = await Promise.all(rids.map((rid) => cancels.register(sid, rid)));
    assert.equal(await cancels.cancelAll(sid), rids.length + 1);
    assert.ok(regs.every((r) => r?.signal.aborted));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("Deno KV backend: no commit exceeds KV's limits, even for the longest input", async () => {
  const prefix = "€".repeat(21) + "x";
  const fps = ["€".repeat(341) + "x", "😀".repeat(256), "f".repeat(1024)];
  const realCommit = Deno.AtomicOperation.prototype.commit;
  const refused: string[] = [];
  let commits = 0;
  Deno.AtomicOperation.prototype.commit = async function (this: Deno.AtomicOperation) {
    commits++;
    try {
      return await realCommit.call(this);
    } catch (err) {
      refused.push(String(err));
      throw err;
    }
  };
  const init = (registry: "owner" | "cancel"): InitMessage => ({
    kind: "init",
    registry,
    options: registry === "owner"
      ? resolveOwnerOptions({ maxEntries: 500, maxPerPrincipal: 10_000 })
      : { maxEntries: 10_000 },
    store: kvStore({ path: ":memory:", prefix }),
    instanceId: "i",
  });
  const owners = await createBackend({ init: init("owner"), emit: () => {} });
  const cancels = await createBackend({ init: init("cancel"), emit: () => {} });
  try {
    const ops: number[] = [], args: unknown[] = [];
    const model = new OwnerTable({ maxEntries: 500, maxPerPrincipal: 10_000 });
    const want: unknown[] = [];
    for (let i = 0; i < 600; i++) {
      const sid = `${i}-`.padEnd(256, "y"), fp = fps[i % 3];
      if (i % 5 === 4) {
        ops.push(Op.Attach);
        args.push(sid, fp, true);
        want.push(model.authorizeAttach(sid, fp, true));
      } else {
        ops.push(Op.Bind);
        args.push(sid, fp, false, undefined); // Bind(sessionId, fp, shared, keepMs)
        want.push(model.bind(sid, fp));
      }
    }
    assert.deepEqual(await owners.run(ops, args), want);
    const cops: number[] = [], cargs: unknown[] = [];
    // 450 registrations with distinct request ids of (nearly) 1,024 bytes each.
    const bases = ["€".repeat(338), "\0".repeat(1016), "😀".repeat(254)];
    for (let i = 0; i < 450; i++) {
      cops.push(Op.Register);
      cargs.push("s".repeat(256), bases[i % 3] + `${i}`.padStart(8, "0"), `e.${i}`);
    }
    cops.push(Op.CancelAll, Op.CancelSize);
    cargs.push("s".repeat(256), "r".repeat(4_096));
    const out = await cancels.run(cops, cargs);
    assert.deepEqual(out.slice(0, 450), Array(450).fill(true));
    assert.equal((out[450] as string[]).length, 450);
    assert.equal(out[451], 450);
    assert.deepEqual(refused, []);
    assert.ok(commits > 4, `${commits} commits`);
  } finally {
    Deno.AtomicOperation.prototype.commit = realCommit;
    await owners.close();
    await cancels.close();
  }
});

Deno.test("Deno KV backend: an op KV refuses fails alone; its batch's other writes stand", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "mcp-guard-kv-iso-" });
  const path = `${dir}/iso.kv`;
  const init = (registry: "owner" | "cancel", prefix: string): InitMessage => ({
    kind: "init",
    registry,
    options: registry === "owner"
      ? resolveOwnerOptions({ maxEntries: 100, maxPerPrincipal: 100 })
      : { maxEntries: 100 },
    store: kvStore({ path, prefix }),
    instanceId: crypto.randomUUID(),
  });
  const events: WorkerEvent[] = [];
  const proto = Deno.AtomicOperation.prototype;
  const realSet = proto.set;
  const realGet = Deno.Kv.prototype.get;
  try {
    await t.step("a write KV refuses at commit: that op alone gets an OpFailure", async () => {
      const backend = await createBackend({
        init: init("owner", "a"),
        emit: (e) => events.push(e),
      });
      try {
        // KV refuses any write of the "poison" session (as it would an oversized key).
        proto.set = function (this: Deno.AtomicOperation, key, value, options) {
          if (key.includes("poison")) {
            throw new TypeError("Key too large for write (max 2048 bytes)");
          }
          return realSet.call(this, key, value, options);
        };
        const out = await backend.run(
          [Op.Bind, Op.Bind, Op.Bind, Op.Attach, Op.OwnerSize],
          [
            ...["s1", "fp-a", false, undefined, "poison", "fp-a", false, undefined],
            ...["s2", "fp-b", false, undefined, "s3", "fp-a", true],
          ],
        );
        proto.set = realSet;
        assert.equal(out[0], "bound");
        assert.ok(out[1] instanceof OpFailure);
        assert.ok((out[1] as OpFailure).error instanceof InvalidInputError);
        assert.match(String((out[1] as OpFailure).error), /Key too large/);
        assert.deepEqual(out.slice(2), ["bound", true, 3]);
        assert.deepEqual(
          await backend.run([Op.OwnerOf, Op.OwnerOf, Op.OwnerOf, Op.OwnerOf, Op.OwnerStats], [
            "s1",
            "poison",
            "s2",
            "s3",
          ]),
          ["fp-a", null, "fp-b", "fp-a", {
            size: 3,
            pinned: 1,
            evictions: 0,
            refusals: 0,
            claims: 1,
            invalid: 0,
            full: 0,
            restarts: 0,
          }],
        );
      } finally {
        proto.set = realSet;
        await backend.close();
      }
    });

    await t.step("a read that fails while an op is applied: the ops before it commit", async () => {
      // Bound by another backend (another process): this one has nothing of it cached, so
      // the forget below reads fp-poison's count from the database.
      const seed = await createBackend({ init: init("owner", "b"), emit: () => {} });
      try {
        assert.deepEqual(
          await seed.run([Op.Bind, Op.Bind], [
            ...["k1", "fp-poison", false, undefined],
            ...["k2", "fp-b", false, undefined],
          ]),
          ["bound", "bound"],
        );
      } finally {
        await seed.close();
      }
      const backend = await createBackend({
        init: init("owner", "b"),
        emit: (e) => events.push(e),
      });
      try {
        // Reading fp-poison's count (a forget of its session reads it) fails.
        Deno.Kv.prototype.get = function (this: Deno.Kv, key: Deno.KvKey, options?: never) {
          if (key.includes("fp-poison")) throw new RangeError("Value too large (max 65536 bytes)");
          return realGet.call(this, key, options);
        } as typeof realGet;
        const out = await backend.run(
          [Op.Bind, Op.Forget, Op.Forget, Op.Bind, Op.OwnerOf],
          [
            ...["k3", "fp-c", false, undefined, "k1", "fp-poison", "k2", "fp-b"],
            ...["k4", "fp-d", false, undefined, "k3"],
          ],
        );
        Deno.Kv.prototype.get = realGet;
        assert.equal(out[0], "bound");
        assert.ok(out[1] instanceof OpFailure, String(out[1]));
        assert.deepEqual(out.slice(2), [true, "bound", "fp-c"]);
        assert.deepEqual(
          await backend.run([Op.OwnerOf, Op.OwnerOf, Op.OwnerOf, Op.OwnerOf, Op.OwnerSize], [
            "k1",
            "k2",
            "k3",
            "k4",
          ]),
          ["fp-poison", null, "fp-c", "fp-d", 3],
        );
      } finally {
        Deno.Kv.prototype.get = realGet;
        await backend.close();
      }
    });

    await t.step(
      "cancellation: a refused registration leaves the others (and deregisters)",
      async () => {
        const backend = await createBackend({
          init: init("cancel", "c"),
          emit: (e) => events.push(e),
        });
        try {
          assert.deepEqual(
            await backend.run([Op.Register, Op.Register], ["s", 1, "i.1", "s", 2, "i.2"]),
            [true, true],
          );
          proto.set = function (this: Deno.AtomicOperation, key, value, options) {
            if (key.includes("i.poison")) {
              throw new TypeError("Total mutation size too large (max 819200 bytes)");
            }
            return realSet.call(this, key, value, options);
          };
          const out = await backend.run(
            [Op.Register, Op.Deregister, Op.Register, Op.Register, Op.CancelSize],
            ["s", 3, "i.3", "i.1", "s", 4, "i.poison", "s", 5, "i.5"],
          );
          proto.set = realSet;
          assert.equal(out[0], true);
          assert.equal(out[1], true);
          assert.ok(out[2] instanceof OpFailure);
          assert.deepEqual(out.slice(3), [true, 3]);
          // Input no store can hold is refused before it reaches KV, like the pure table does.
          assert.deepEqual(
            await backend.run(
              [Op.Deregister, Op.Register, Op.Register, Op.Cancel, Op.CancelSize],
              [
                "x".repeat(3_000),
                "s",
                "€".repeat(1024),
                "i.6",
                "s",
                1,
                "e".repeat(3_000),
                "s",
                "€".repeat(1024),
                undefined,
                null,
              ],
            ),
            [false, false, false, null, 3],
          );
        } finally {
          proto.set = realSet;
          await backend.close();
        }
      },
    );
  } finally {
    proto.set = realSet;
    Deno.Kv.prototype.get = realGet;
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("Deno KV backend: what one transaction leaves for the next is only ever current", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "mcp-guard-kv-cache-" });
  const path = `${dir}/cache.kv`;
  const init = (instanceId: string): InitMessage => ({
    kind: "init",
    registry: "owner",
    options: resolveOwnerOptions({ maxEntries: 100, maxPerPrincipal: 100 }),
    store: kvStore({ path, prefix: "c" }),
    instanceId,
  });
  const proto = Deno.AtomicOperation.prototype;
  const realSet = proto.set;
  const a = await createBackend({ init: init("a"), emit: () => {} });
  const b = await createBackend({ init: init("b"), emit: () => {} });
  try {
    await t.step("another process's write: the next transaction reads again", async () => {
      assert.deepEqual(
        await a.run([Op.Bind, Op.Attach], ["s1", "fp-a", false, undefined, "s1", "fp-a", false]),
        ["bound", true],
      );
      // b (another process on the file) moves s1 to fp-b behind a's back.
      assert.deepEqual(
        await b.run([Op.Forget, Op.Bind], ["s1", undefined, "s1", "fp-b", false, undefined]),
        [true, "bound"],
      );
      assert.deepEqual(
        await a.run([Op.Attach, Op.OwnerOf, Op.OwnerSize], ["s1", "fp-a", false, "s1"]),
        [false, "fp-b", 1],
      );
      assert.deepEqual(await a.run([Op.Bind], ["s2", "fp-a", false, undefined]), ["bound"]);
      assert.deepEqual(await b.run([Op.OwnerOf, Op.OwnerSize], ["s2"]), ["fp-a", 2]);
    });

    await t.step("a transaction that did not commit leaves nothing behind", async () => {
      // s1's record is known to `b` from its own last commit. A batch pins it, then a write KV
      // refuses fails the shared commit: the pin was applied to b's copy only, so re-applied
      // alone it pins s1 once, not twice.
      assert.deepEqual(await b.run([Op.Attach], ["s1", "fp-b", false]), [true]); // b's last commit
      proto.set = function (this: Deno.AtomicOperation, key, value, options) {
        if (key.includes("poison")) throw new TypeError("Key too large for write (max 2048 bytes)");
        return realSet.call(this, key, value, options);
      };
      const out = await b.run(
        [Op.Attach, Op.Bind],
        ["s1", "fp-b", true, "poison", "fp-b", false, undefined],
      );
      proto.set = realSet;
      assert.equal(out[0], true);
      assert.ok(out[1] instanceof OpFailure);
      const stats = (await b.run([Op.OwnerStats], []))[0] as { pinned: number; size: number };
      assert.deepEqual([stats.pinned, stats.size], [1, 2]);
      // One unpin releases it: a second finds no pin left.
      assert.deepEqual(await b.run([Op.Unpin, Op.Unpin], ["s1", "s1"]), [true, false]);
      assert.deepEqual(await a.run([Op.Unpin], ["s1"]), [false]);
    });
  } finally {
    proto.set = realSet;
    await a.close();
    await b.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("Deno KV store misconfigured: RegistryMisconfiguredError naming the flag", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "mcp-guard-kv-flags-" });
  const script = `${dir}/child.ts`;
  await Deno.writeTextFile(script, childScript());
  const run = async (flags: string[]) => {
    const child = new Proc(flags, script, { action: "call", path: `${dir}/db.kv` });
    try {
      return await child.next();
    } finally {
      await child.close();
    }
  };
  try {
    await t.step("without --unstable-kv", async () => {
      const got = await run(["--allow-read", "--allow-write"]);
      assert.equal(got.name, "RegistryMisconfiguredError", JSON.stringify(got));
      assert.match(String(got.message), /--unstable-kv/);
    });
    await t.step("without --allow-write for the database file", async () => {
      const got = await run(["--unstable-kv", "--allow-read"]);
      assert.equal(got.name, "RegistryMisconfiguredError", JSON.stringify(got));
      assert.match(String(got.message), /--allow-write/);
    });
    await t.step("with both, the same call works", async () => {
      assert.deepEqual(await run(["--unstable-kv", "--allow-read", "--allow-write"]), {
        ok: "bound",
      });
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
