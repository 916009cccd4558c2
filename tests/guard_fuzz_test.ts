/**
 * Model-based fuzzing of the HTTP guard, over real HTTP: random sequences of
 * initialize / GET / POST / DELETE / cancellation / malformed requests from
 * alice, bob, an anonymous caller and a caller with a forged token, against
 * the SDK 1.32 example app behind `guardSessions` on `Deno.serve({ port: 0 })`.
 * A reference model tracks who owns which live session; every step checks the
 * status, the body, the guard's decisions and that nothing reached the
 * handler for a principal who does not own the session (see
 * `tests/support/guard_fuzz.ts`).
 *
 * Replay a failure with the seed and path fast-check prints:
 * `GUARD_FUZZ_SEED=... GUARD_FUZZ_PATH=... deno test -A --unstable-kv tests/guard_fuzz_test.ts`.
 */

import assert from "node:assert/strict";
import {
  type Caller,
  type Command,
  fuzzGuard,
  type FuzzOptions,
  type FuzzReport,
  MALFORMED,
  type Message,
  type RidChoice,
  runCommands,
  startFuzzTarget,
  type Target,
} from "./support/guard_fuzz.ts";

const STEPS = 50;

function env(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined; // no --allow-env: random seed
  }
}

/** One line per outcome, for the test log. */
function summary(report: FuzzReport): string {
  const outcomes = Object.entries(report.tally).sort(([a], [b]) => a.localeCompare(b))
    .map(([outcome, n]) => `  ${String(n).padStart(5)}  ${outcome}`);
  return `${report.runs} runs, ${report.commands} commands, ${report.requests} requests\n${
    outcomes.join("\n")
  }`;
}

function options(runs: number): FuzzOptions {
  const seed = env("GUARD_FUZZ_SEED");
  return {
    runs: Number(env("GUARD_FUZZ_RUNS") ?? runs),
    steps: STEPS,
    seed: seed === undefined ? undefined : Number(seed),
    path: env("GUARD_FUZZ_PATH"),
  };
}

Deno.test("guard fuzz: strict mode, another principal's session answers 403", async () => {
  await using target = startFuzzTarget();
  const report = await fuzzGuard(target, options(32));
  console.log(summary(report));
  assert.equal(report.commands, report.runs * STEPS);
});

Deno.test("guard fuzz: strict mode, notOwnerStatus 404 and an owner cache, no knownOwner", async () => {
  await using target = startFuzzTarget({
    guard: { notOwnerStatus: 404, ownerCacheMs: 60_000 },
    ownerOptions: { knownOwners: false },
  });
  const report = await fuzzGuard(target, options(20));
  console.log(summary(report));
  assert.equal(report.commands, report.runs * STEPS);
});

Deno.test("guard fuzz: a scripted sequence through every rule (same checks as the fuzz)", async () => {
  await using target = startFuzzTarget();
  const own = (pick = 0): Target => ({ kind: "own", pick });
  const other = (pick = 0): Target => ({ kind: "other", pick });
  const post = (caller: Caller, target: Target, msg: Message, jsonOnly = false): Command => ({
    t: "post",
    caller,
    target,
    msg,
    numericId: true,
    jsonOnly,
  });
  const cancel = (caller: Caller, target: Target, rid: RidChoice): Command => ({
    t: "cancel",
    caller,
    target,
    rid,
  });
  const none: Target = { kind: "none" };
  const commands: Command[] = [
    post("alice", none, "initialize"),
    post("bob", none, "initialize"),
    post("anonymous", none, "initialize"),
    post("forged", none, "initialize"),
    post("alice", own(), "count"),
    post("bob", own(), "count"),
    // Bob guesses alice's request id in his own session: matches nothing.
    cancel("bob", own(), { kind: "any", pick: 0 }),
    // ... and in alice's session: refused.
    cancel("bob", other(), { kind: "target", pick: 0 }),
    // Alice: the right id with the wrong type matches nothing; the right one cancels.
    cancel("alice", own(), { kind: "flipped", pick: 0 }),
    cancel("alice", own(), { kind: "target", pick: 0 }),
    cancel("alice", own(), { kind: "target", pick: 0 }),
    post("alice", own(), "count"),
    { t: "abandon", pick: 1 },
    cancel("alice", { kind: "busy", pick: 0 }, { kind: "target", pick: 0 }),
    post("alice", own(), "echo"),
    post("alice", own(), "ping"),
    post("alice", own(), "unknown-method"),
    post("alice", own(), "notification"),
    post("alice", own(), "response"),
    post("alice", own(), "initialize"),
    post("alice", none, "ping"),
    post("alice", own(), "echo", true),
    post("bob", other(), "echo"),
    post("anonymous", other(), "ping"),
    post("forged", own(), "ping"),
    post("bob", { kind: "guess", value: "__proto__" }, "ping"),
    post("bob", { kind: "near", pick: 0, how: "upper" }, "ping"),
    post("bob", { kind: "malformed", value: "has space" }, "ping"),
    post("bob", { kind: "malformed", value: "s".repeat(257) }, "ping"),
    post("bob", { kind: "twice", pick: 0 }, "ping"),
    { t: "get", caller: "alice", target: own(), jsonOnly: false },
    { t: "get", caller: "alice", target: own(), jsonOnly: true },
    { t: "get", caller: "bob", target: other(), jsonOnly: false },
    { t: "get", caller: "anonymous", target: own(), jsonOnly: false },
    { t: "get", caller: "bob", target: none, jsonOnly: false },
    { t: "get", caller: "anonymous", target: none, jsonOnly: false },
    { t: "delete", caller: "bob", target: none, badVersion: false },
    { t: "delete", caller: "bob", target: other(), badVersion: false },
    { t: "delete", caller: "alice", target: own(), badVersion: true },
    ...(["PUT", "patch", "PURGE"] as const).map((method): Command => ({
      t: "method",
      caller: "alice",
      target: own(),
      method,
    })),
    ...MALFORMED.map((kind): Command => ({ t: "malformed", caller: "bob", target: other(), kind })),
    { t: "delete", caller: "alice", target: own(), badVersion: false },
    post("alice", { kind: "deleted", pick: 0 }, "echo"),
    { t: "get", caller: "alice", target: { kind: "deleted", pick: 0 }, jsonOnly: false },
    { t: "delete", caller: "alice", target: { kind: "deleted", pick: 0 }, badVersion: false },
  ];
  const { tally } = await runCommands(target, commands);
  for (
    const outcome of [
      "POST 202 cancelled/empty",
      "POST 202 cancel-unmatched/empty",
      "POST 403 not-owner",
      "POST 404 unknown-session",
      "POST 401 anonymous",
      "POST 400 invalid-session-id",
      "GET 200 allowed/sse-open",
      "GET 400 allowed/json-error",
      "GET 401 anonymous",
      "DELETE 400 allowed/json-error",
      "GET 403 not-owner",
      "DELETE 403 not-owner",
      "DELETE 200 allowed/empty",
      "POST 413 body-too-large",
      "POST 415 unsupported-media-type",
      "POST 400 batch",
      "PUT 405 method-not-allowed",
      "abandon",
    ]
  ) {
    assert.ok(tally[outcome] > 0, `${outcome} never happened: ${JSON.stringify(tally)}`);
  }
});
