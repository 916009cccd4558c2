/**
 * Units of the resumption check: HMAC-SHA-256 against WebCrypto, the event
 * id tags, and the SSE id rewriter against a reference client parser under
 * every way of cutting a stream into chunks.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { hmacSha256Key, sha256 } from "../src/core/hmac_sha256.ts";
import { EventIdKey, type EventStreamKind, SUFFIX_LENGTH } from "../src/http/event_ids.ts";
import { Resumption, rewriteEventIds } from "../src/http/resume.ts";
import { SseIdRewriter } from "../src/http/sse_events.ts";
import { type ClientEvent, ClientParser } from "./support/sse_client.ts";

const encoder = new TextEncoder();
const bytes = (text: string) => encoder.encode(text);

Deno.test("hmac-sha256: equals WebCrypto for random keys and messages, with and without a prefix", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.uint8Array({ minLength: 1, maxLength: 150 }),
      fc.uint8Array({ maxLength: 300 }),
      fc.integer({ min: 0, max: 3 }),
      async (key, message, blocks) => {
        const web = await crypto.subtle.importKey(
          "raw",
          key,
          { name: "HMAC", hash: "SHA-256" },
          false,
          ["sign"],
        );
        const expected = new Uint8Array(await crypto.subtle.sign("HMAC", web, message));
        const mac = hmacSha256Key(key);
        assert.deepEqual(mac.sign(message), expected);
        const cut = Math.min(blocks * 64, message.length - (message.length % 64));
        assert.deepEqual(mac.withPrefix(message.slice(0, cut)).sign(message.slice(cut)), expected);
        assert.deepEqual(
          sha256(message),
          new Uint8Array(await crypto.subtle.digest("SHA-256", message)),
        );
      },
    ),
    { numRuns: 300 },
  );
  assert.throws(() => hmacSha256Key(bytes("k")).withPrefix(new Uint8Array(10)), RangeError);
});

const sessionArb = fc.stringMatching(/^[\x21-\x7e]{1,256}$/);
const rawArb = fc.string({ minLength: 1, maxLength: 80, unit: "binary" })
  .filter((s) => !/[\0\r\n]/.test(s));
const kindArb = fc.constantFrom<EventStreamKind>("request", "listen");

Deno.test("event ids: a tag checks out for its session, kind and raw id, and for nothing else", () => {
  const key = EventIdKey.random();
  fc.assert(
    fc.property(sessionArb, sessionArb, rawArb, rawArb, kindArb, (sid, other, raw, raw2, kind) => {
      const id = key.tagger(sid, kind)(raw);
      assert.equal(id.length, raw.length + SUFFIX_LENGTH);
      assert.deepEqual(key.verify(sid, id), { raw, kind });
      if (other !== sid) assert.equal(key.verify(other, id), null);
      const otherKind = kind === "request" ? "listen" : "request";
      assert.equal(
        key.verify(sid, key.tagger(sid, otherKind)(raw).slice(0, -22) + id.slice(-22)),
        null,
      );
      if (raw2 !== raw) assert.equal(key.verify(sid, raw2 + id.slice(-SUFFIX_LENGTH)), null);
      assert.equal(key.verify(sid, raw), null);
    }),
    { numRuns: 300 },
  );
});

Deno.test("event ids: keys from one secret agree (a fleet), other keys do not", () => {
  const id = EventIdKey.fromSecret("s3cret").tagger("sid", "request")("e-1");
  assert.deepEqual(EventIdKey.fromSecret("s3cret").verify("sid", id), {
    raw: "e-1",
    kind: "request",
  });
  assert.deepEqual(EventIdKey.fromSecret(bytes("s3cret")).verify("sid", id)?.raw, "e-1");
  assert.equal(EventIdKey.fromSecret("s3cret!").verify("sid", id), null);
  assert.equal(EventIdKey.random().verify("sid", id), null);
  // A secret longer than a block works as HMAC keys do.
  const long = "x".repeat(200);
  const tagged = EventIdKey.fromSecret(long).tagger("sid", "listen")("9");
  assert.equal(EventIdKey.fromSecret(long).verify("sid", tagged)?.raw, "9");
});

Deno.test("event ids: malformed ids never check out", () => {
  const key = EventIdKey.fromSecret("k");
  const good = key.tagger("sid", "request")("e-1");
  for (
    const bad of [
      "",
      ".",
      good.slice(-SUFFIX_LENGTH), // no raw id
      good.slice(1 - SUFFIX_LENGTH), // suffix cut
      good.slice(0, -1),
      `${good}A`,
      good.replace(".r", ".x"),
      good.replace(".r", "_r"),
      good.slice(0, -22) + good.slice(-22).toLowerCase(),
      "e-1" + "A".repeat(SUFFIX_LENGTH),
    ]
  ) {
    assert.equal(key.verify("sid", bad), null, JSON.stringify(bad));
  }
  assert.equal(key.verify("sid", undefined as unknown as string), null);
});

/** Parses a whole byte stream as a client does. */
function parse(stream: Uint8Array): ClientEvent[] {
  const events: ClientEvent[] = [];
  new ClientParser((e) => events.push(e)).push(
    new TextDecoder("utf-8", { ignoreBOM: true }).decode(stream),
  );
  return events;
}

/** Runs a rewriter over `stream` cut at `cuts`; returns its output joined. */
function run(rewriter: SseIdRewriter, stream: Uint8Array, cuts: number[]): Uint8Array {
  const parts: Uint8Array[] = [];
  let from = 0;
  for (const cut of [...cuts.map((c) => c % (stream.length + 1)).sort((a, b) => a - b)]) {
    parts.push(...rewriter.push(stream.slice(from, Math.max(from, cut))));
    from = Math.max(from, cut);
  }
  parts.push(...rewriter.push(stream.slice(from)), ...rewriter.end());
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

const lineArb = fc.oneof(
  fc.constantFrom(
    "id: 1",
    "id:2",
    "id:  spaced",
    "id",
    "id:",
    "id: ",
    "id: nul\0inside",
    "idle: 1",
    "i",
    "i:d",
    "ID: upper",
    "data: {}",
    "data",
    ": comment id: 5",
    "retry: 10",
    "event: message",
    "\uFEFFid: bom-inside",
    "id: caf\u00e9 \u{1F600}",
    "",
  ),
  fc.string({ maxLength: 12, unit: "binary" }).map((s) => s.replace(/[\r\n]/g, "")),
  rawArb.map((raw) => `id: ${raw}`),
);
const streamArb = fc.tuple(
  fc.constantFrom("", "\uFEFF", "\uFEFF\uFEFF"),
  fc.array(fc.tuple(lineArb, fc.constantFrom("\n", "\r\n", "\r")), { maxLength: 30 }),
  fc.boolean(),
).map(([bom, lines, terminated]) => {
  const text = bom + lines.map(([line, end]) => line + end).join("") + (terminated ? "\n\n" : "");
  return bytes(text);
});
const cutsArb = fc.array(fc.nat(), { maxLength: 12 });

Deno.test("sse ids: a rewriter that keeps every id passes the stream byte for byte, however it is cut", () => {
  fc.assert(
    fc.property(streamArb, cutsArb, (stream, cuts) => {
      assert.deepEqual(run(new SseIdRewriter(() => null), stream, cuts), stream);
    }),
    { numRuns: 500 },
  );
});

Deno.test("sse ids: a client reads the same events with exactly the ids rewritten, however the stream is cut", () => {
  const mark = (id: string) => `${id}#`;
  fc.assert(
    fc.property(streamArb, cutsArb, cutsArb, (stream, cuts, otherCuts) => {
      const out = run(new SseIdRewriter(mark), stream, cuts);
      assert.deepEqual(run(new SseIdRewriter(mark), stream, otherCuts), out);
      const expected = parse(stream).map((e) => ({
        ...e,
        // The client's last event id: every non-empty one was rewritten (one with NUL is
        // rewritten too, and still ignored by the client).
        id: e.id === "" ? "" : mark(e.id),
      }));
      assert.deepEqual(parse(out), expected);
    }),
    { numRuns: 500 },
  );
});

Deno.test("sse ids: edge cases a client reads the same way", () => {
  const tag = (id: string) => `${id}!`;
  const cases: [string, string][] = [
    ["\uFEFFid: 1\n\n", "\uFEFFid: 1!\n\n"], // BOM at the stream start: skipped
    ["\uFEFF\uFEFFid: 1\n\n", "\uFEFF\uFEFFid: 1\n\n"], // a second BOM is a character
    ["id:1\r\n\r\n", "id: 1!\r\n\r\n"],
    ["id: 1\rdata: x\r\r", "id: 1!\rdata: x\r\r"],
    ["id\n\n", "id\n\n"], // empty id: a reset, kept
    ["id:\n\n", "id:\n\n"],
    ["id: \n\n", "id: \n\n"],
    ["id:  two\n", "id:  two!\n"], // one leading space is the separator, the other the id's
    ["idle: 1\nid: 2\nid: 3\n\n", "idle: 1\nid: 2!\nid: 3!\n\n"],
    [": id: 4\nretry: 5\n\n", ": id: 4\nretry: 5\n\n"],
    ["data: id: 6\n\n", "data: id: 6\n\n"],
    ["id: 7", "id: 7"], // unterminated at the end: passes as it was
  ];
  for (const [input, expected] of cases) {
    for (let cut = 0; cut <= input.length; cut++) {
      const out = run(new SseIdRewriter(tag), bytes(input), [bytes(input.slice(0, cut)).length]);
      assert.equal(new TextDecoder("utf-8", { ignoreBOM: true }).decode(out), expected, input);
    }
  }
  // A partial BOM is a character of the first line, not a BOM.
  const partial = new Uint8Array([0xef, 0xbb, ...bytes("id: 1\n\n")]);
  assert.deepEqual(run(new SseIdRewriter(tag), partial, [1]), partial);
});

Deno.test("sse ids: an id line longer than the bound passes unchanged, the next is rewritten", () => {
  const long = `id: ${"x".repeat(100)}\nid: short\n\n`;
  const chunks = [long.slice(0, 20), long.slice(20, 70), long.slice(70)].map(bytes);
  const rewriter = new SseIdRewriter((id) => `${id}!`, 32);
  const out = [...chunks.flatMap((c) => rewriter.push(c)), ...rewriter.end()]
    .map((p) => new TextDecoder().decode(p)).join("");
  assert.equal(out, `id: ${"x".repeat(100)}\nid: short!\n\n`);
});

Deno.test("sse ids: non-id bytes go out as subarrays of the chunk, not copies", () => {
  const chunk = bytes("event: message\nid: 1\ndata: " + "y".repeat(1000) + "\n\n");
  const parts = new SseIdRewriter((id) => `${id}!`).push(chunk);
  assert.equal(parts.length, 3);
  assert.equal(parts[0].buffer, chunk.buffer);
  assert.equal(parts[2].buffer, chunk.buffer);
  assert.equal(new TextDecoder().decode(parts[1]), "id: 1!");
});

Deno.test("resumption.tag: only successful, unencoded SSE answers of a session are tagged", async () => {
  const key = EventIdKey.random();
  const resumption = new Resumption(key, false);
  const sse = (init: ResponseInit = {}, type = "text/event-stream") =>
    new Response("id: 1\ndata: {}\n\n", {
      ...init,
      headers: { "content-type": type, ...(init.headers as Record<string, string>) },
    });
  const tagged = resumption.tag(sse({ headers: { "content-length": "17" } }), "s", "request");
  const text = await tagged.text();
  assert.equal(key.verify("s", /^id: (.*)$/m.exec(text)![1])?.raw, "1");
  assert.equal(tagged.headers.get("content-length"), null);
  assert.equal(tagged.headers.get("content-type"), "text/event-stream");
  for (
    const untouched of [
      resumption.tag(sse(), null, "request"),
      resumption.tag(sse({ status: 409 }), "s", "listen"),
      resumption.tag(sse({}, "application/json"), "s", "request"),
      resumption.tag(sse({ headers: { "content-encoding": "gzip" } }), "s", "request"),
    ]
  ) {
    assert.equal(await untouched.text(), "id: 1\ndata: {}\n\n");
  }
  const id = key.tagger("s", "request")("1");
  const nul = resumption.tag(
    new Response("id: a\0b\n\n", { headers: { "content-type": "text/event-stream" } }),
    "s",
    "request",
  );
  assert.equal(await nul.text(), "id: a\0b\n\n"); // a client ignores it: not tagged
  assert.ok(id.startsWith("1.r"));
});

Deno.test("rewriteEventIds: an erroring source errors the body; cancelling the body cancels the source", async () => {
  let pulls = 0;
  const failing = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (pulls++ === 0) controller.enqueue(bytes("id: 1\n\n"));
      else controller.error(new Error("boom"));
    },
  });
  const out = rewriteEventIds(new Response(failing), (id) => `${id}!`);
  const reader = out.body!.getReader();
  assert.equal(new TextDecoder().decode((await reader.read()).value), "id: 1!\n\n");
  await assert.rejects(reader.read(), /boom/);

  let cancelled: unknown = null;
  const endless = new ReadableStream<Uint8Array>({
    pull: (controller) => controller.enqueue(bytes(": keepalive\n\n")),
    cancel: (reason) => {
      cancelled = reason;
    },
  });
  const body = rewriteEventIds(new Response(endless), (id) => id).body!;
  const r = body.getReader();
  await r.read();
  await r.cancel("client left");
  assert.equal(cancelled, "client left");
});
