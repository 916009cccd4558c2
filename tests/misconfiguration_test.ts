/**
 * Misconfiguration is not an outage: a process without the permission its
 * registry needs gets an error naming the permission and the flag, and the
 * guard answers 500 (not a retryable 503) and tells `onError`. Real
 * subprocesses with real (missing) permissions.
 */

import assert from "node:assert/strict";

const fixture = new URL("./fixtures/misconfigured.ts", import.meta.url);

Deno.test("without --allow-read the worker cannot load: named, not retried, 500", async () => {
  const { stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-prompt", "--no-config", fixture.pathname],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const line = new TextDecoder().decode(stdout).trim().split("\n").at(-1) ?? "";
  let seen: Record<string, unknown>;
  try {
    seen = JSON.parse(line);
  } catch {
    throw new Error(`no JSON line; stderr:\n${new TextDecoder().decode(stderr)}`);
  }
  const call = seen.call as { name: string; message: string };
  assert.equal(call.name, "RegistryMisconfiguredError");
  assert.match(call.message, /Requires read access to .*worker\.ts/);
  assert.match(call.message, /--allow-read/);
  assert.ok((seen.ms as number) < 5_000, `failed fast (${seen.ms} ms), not after a timeout`);
  assert.equal(seen.status, 500);
  assert.equal(seen.retryAfter, null, "no Retry-After: retrying will not help");
  assert.equal(seen.decision, "registry-misconfigured");
  assert.deepEqual(seen.errors, ["registry: RegistryMisconfiguredError"]);
  const body = seen.body as { error: { code: number; message: string } };
  assert.equal(body.error.code, -32603);
  assert.doesNotMatch(body.error.message, /allow-read/, "the client is not told server internals");
});

Deno.test("a store whose options a worker cannot receive: refused when made, or on every call", async (t) => {
  const { InvalidInputError, RegistryMisconfiguredError, SessionOwnerRegistry } = await import(
    "../mod.ts"
  );
  const url = new URL("./fixtures/sync_store.ts", import.meta.url).href;
  await t.step("a function in the options: InvalidInputError naming the store", () => {
    assert.throws(
      () =>
        new SessionOwnerRegistry({ store: { kind: "module", url, options: { hook: () => 1 } } }),
      (err: unknown) =>
        err instanceof InvalidInputError && err.message.includes(url) &&
        /plain data/.test(err.message),
    );
  });
  await t.step(
    "options made unsendable after: every call fails with the reason, no respawn",
    async () => {
      const options: Record<string, unknown> = {};
      const owners = new SessionOwnerRegistry({ store: { kind: "module", url, options } });
      options.hook = () => 1;
      for (let i = 0; i < 2; i++) {
        await assert.rejects(
          owners.bind("s-1", "alice"),
          (err: unknown) =>
            err instanceof RegistryMisconfiguredError && /cannot be sent/.test(err.message),
        );
      }
      await owners.close();
    },
  );
});
