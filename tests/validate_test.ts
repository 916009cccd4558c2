import assert from "node:assert/strict";
import fc from "fast-check";
import { fingerprint, InvalidInputError, sanitizeSessionId } from "../mod.ts";
import { isValidFingerprint, isValidRequestId, utf8Length } from "../src/core/validate.ts";

Deno.test("sanitizeSessionId accepts exactly 1-256 visible ASCII characters", async (t) => {
  await t.step("valid ids come back unchanged", () => {
    for (const id of ["a", "3f2c9a7e-1b4d-4c1e-9d7b-2a1f0e9c8b7a", "!~", "x".repeat(256)]) {
      assert.equal(sanitizeSessionId(id), id);
    }
  });

  await t.step("everything else is null, never truncated or trimmed", () => {
    for (
      const id of [
        "",
        " ",
        " abc",
        "abc ",
        "a b",
        "tab\t",
        "new\nline",
        "\x7f",
        "é",
        "x".repeat(257),
      ]
    ) {
      assert.equal(sanitizeSessionId(id), null, JSON.stringify(id));
    }
    for (const v of [null, undefined, 42, {}, ["a"], Symbol("s")]) {
      assert.equal(sanitizeSessionId(v), null);
    }
  });

  await t.step("property: the result is the input or null; distinct inputs never collide", () => {
    fc.assert(
      fc.property(
        fc.string({ unit: "binary", maxLength: 300 }),
        fc.string({ maxLength: 300 }),
        (a, b) => {
          const sa = sanitizeSessionId(a);
          const sb = sanitizeSessionId(b);
          if (sa !== null) assert.equal(sa, a);
          if (sa !== null && sb !== null && a !== b) assert.notEqual(sa, sb);
          const valid = a.length >= 1 && a.length <= 256 &&
            [...a].every((c) => c.charCodeAt(0) >= 0x21 && c.charCodeAt(0) <= 0x7e);
          assert.equal(sa !== null, valid);
        },
      ),
    );
  });
});

Deno.test("fingerprint", async (t) => {
  await t.step("SHA-256 hex of the principal, deterministic", async () => {
    const a = await fingerprint("alice");
    assert.equal(a, "2bd806c97f0e00af1a1fc3328fa763a9269723c8db8fac4f93af71db186d6e90");
    assert.equal(await fingerprint("alice"), a);
    assert.notEqual(await fingerprint("alice "), a);
  });

  await t.step("HMAC-SHA-256 with a secret; secret bytes and strings agree", async () => {
    const keyed = await fingerprint("alice", { secret: "s3cret" });
    assert.match(keyed, /^[0-9a-f]{64}$/);
    assert.notEqual(keyed, await fingerprint("alice"));
    assert.notEqual(keyed, await fingerprint("alice", { secret: "other" }));
    assert.equal(
      await fingerprint("alice", { secret: new TextEncoder().encode("s3cret") }),
      keyed,
    );
    // Reference value computed independently with node:crypto.
    const { createHmac } = await import("node:crypto");
    assert.equal(keyed, createHmac("sha256", "s3cret").update("alice").digest("hex"));
  });

  await t.step("never contains the raw token", async () => {
    const token = "Bearer abcdef0123456789";
    assert.ok(!(await fingerprint(token)).includes("abcdef0123456789"));
  });

  await t.step("blank principals and bad secrets are typed errors", async () => {
    for (const p of ["", "   ", null, undefined, 42]) {
      await assert.rejects(fingerprint(p as string), InvalidInputError);
    }
    await assert.rejects(fingerprint("alice", { secret: "" }), /secret/);
    await assert.rejects(
      fingerprint("alice", { secret: 7 as unknown as string }),
      InvalidInputError,
    );
  });
});

Deno.test("limits are UTF-8 bytes, so every store can hold what is accepted", async (t) => {
  await t.step("utf8Length agrees with TextEncoder, unpaired surrogates included", () => {
    fc.assert(
      fc.property(fc.string({ unit: "binary", maxLength: 200 }), (s) => {
        assert.equal(utf8Length(s), new TextEncoder().encode(s).byteLength);
      }),
    );
    for (const s of ["", "a", "é", "€", "😀", "\uD800", "\uDC00", "\uD800x", "a\uD83D\uDE00b"]) {
      assert.equal(utf8Length(s), new TextEncoder().encode(s).byteLength, JSON.stringify(s));
    }
  });

  await t.step("request ids: at most 1,024 bytes, well-formed", () => {
    for (
      const ok of ["", "x".repeat(1024), "€".repeat(341) + "x", "😀".repeat(256), "\0".repeat(1024)]
    ) {
      assert.ok(isValidRequestId(ok), `${ok.length} units`);
    }
    // 1,024 "€" are 1,024 UTF-16 units but 3,072 bytes.
    for (const bad of ["€".repeat(1024), "€".repeat(342), "😀".repeat(257), "x".repeat(1025)]) {
      assert.ok(!isValidRequestId(bad), `${bad.length} units`);
    }
    // Every store writes U+FFFD for an unpaired surrogate: "\uD800" and "\uD801" would collide.
    for (const bad of ["\uD800", "a\uDC00", "\uD83D"]) assert.ok(!isValidRequestId(bad));
    assert.ok(isValidRequestId(7) && !isValidRequestId(NaN) && !isValidRequestId(null));
  });

  await t.step("fingerprints: at most 1,024 bytes, well-formed, no control characters", () => {
    for (const ok of ["f".repeat(1024), "€".repeat(341) + "x", "😀".repeat(256)]) {
      assert.ok(isValidFingerprint(ok), `${ok.length} units`);
    }
    for (const bad of ["€".repeat(342), "😀".repeat(257), "f".repeat(1025), "\uD800", "a\nb", ""]) {
      assert.ok(!isValidFingerprint(bad), `${bad.length} units`);
    }
  });
});
