/**
 * The SSE answer's fast path (`watchAnswer` over `SseBoundaries` and
 * `eventData`) against the reference framing (`SseFramer` + `parseEvent`
 * + `carriesResponse`): the same events, the same data, the same answer,
 * byte for byte, however the stream is cut.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { EventIdKey } from "../src/http/event_ids.ts";
import { carriesResponse } from "../src/http/response_watch.ts";
import { watchAnswer, watchAnswerEagerly } from "../src/http/server_cancel.ts";
import {
  dataLines,
  eventData,
  parseEvent,
  SseBoundaries,
  type SseEvent,
  SseFramer,
  SseIdRewriter,
} from "../src/http/sse_events.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

function splitAt(bytes: Uint8Array, offsets: number[]): Uint8Array[] {
  const cuts = [...new Set(offsets.map((o) => o % (bytes.length + 1)))].sort((a, b) => a - b);
  const out: Uint8Array[] = [];
  let at = 0;
  for (const cut of [...cuts, bytes.length]) {
    out.push(bytes.slice(at, cut));
    at = cut;
  }
  return out;
}

const answer = (id: unknown) => JSON.stringify({ jsonrpc: "2.0", id, result: { ok: 1 } });
const lineText = fc.string({ unit: "binary", maxLength: 20 }).map((s) => s.replace(/[\r\n]/g, ""));
const line = fc.oneof(
  lineText.map((s) => `:${s}`),
  lineText.map((s) => `id: ${s}`),
  fc.constantFrom("event: message", "retry: 10", "data", "data:", "data: ", "data:  [", "dat"),
  fc.constantFrom(
    `data: ${answer(7)}`,
    `data: ${answer("7")}`,
    `data: ${answer(8)}`,
    `data:${answer(7)}`,
    `data: [${answer(7)}]`,
    `data: \t ${answer(7)}`,
    `data: {"jsonrpc":"2.0","id":7,"method":"x","result":1}`,
    'data: {"id":7,',
    'data: "error":{}}',
    "data: 7",
    "data: {not json",
  ),
  lineText.map((s) => `data: ${s}`),
  lineText,
);
const eol = fc.constantFrom("\n", "\r\n", "\r");
// One line end per event: a "\r" line end followed by a "\n" blank line would be one CRLF.
const sseEvent = fc.tuple(fc.array(line, { maxLength: 5 }), eol)
  .map(([lines, end]) => lines.map((l) => l + end).join("") + end);
const sseStream = fc.tuple(
  fc.constantFrom("", "\ufeff", "\ufeff\ufeff"),
  fc.array(sseEvent, { maxLength: 6 }),
  fc.option(lineText),
).map(([bom, events, tail]) => enc.encode(bom + events.join("") + (tail ?? "")));
const noise = fc.uint8Array({ maxLength: 80 }).map((a) =>
  a.map((b) => [0x0d, 0x0a, 0x3a, 0x61, 0xef, 0xbb, 0xbf, 0xe2, 0x82, 0xac, 0x64, 0x74][b % 12])
);
const anyStream = fc.oneof(sseStream, noise);
const cuts = fc.array(fc.nat(), { maxLength: 8 });

/** The reference: events and their data as `SseFramer` and `parseEvent` read them. */
function framed(chunks: Uint8Array[]): { bytes: Uint8Array; data: string | null }[] {
  const framer = new SseFramer(Infinity);
  const events: SseEvent[] = [];
  for (const chunk of chunks) events.push(...framer.push(chunk));
  return events.map((e) => ({ bytes: e.bytes, data: parseEvent(e).data }));
}

Deno.test("property: SseBoundaries + eventData find the events and data SseFramer + parseEvent do", () => {
  fc.assert(
    fc.property(anyStream, cuts, (bytes, offsets) => {
      const chunks = splitAt(bytes, offsets);
      const bounds = new SseBoundaries();
      const got: { bytes: Uint8Array; data: string | null }[] = [];
      let held: Uint8Array[] = [];
      for (const chunk of chunks) {
        let start = 0;
        for (;;) {
          const { first, strayLF } = bounds;
          const stop = bounds.next(chunk, start);
          if (stop === -1) break;
          const parts = [...held, chunk.subarray(start, stop)];
          held = [];
          const event = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
          let at = 0;
          for (const p of parts) {
            event.set(p, at);
            at += p.length;
          }
          got.push({ bytes: event, data: eventData(event, 0, event.length, first, strayLF) });
          // The same data read in place, among the chunk's other bytes.
          if (parts.length === 1) {
            const data = got.at(-1)!.data;
            assert.equal(eventData(chunk, start, stop, first, strayLF), data);
            const span = { start: 0, end: 0 };
            const lines = dataLines(chunk, start, stop, first, strayLF, span);
            if (data === null) assert.equal(lines, 0);
            else if (lines === 1) {
              assert.equal(dec.decode(chunk.subarray(span.start, span.end)), data);
            } else assert.equal(lines, 2);
          }
          start = stop;
        }
        if (start < chunk.length) held.push(chunk.subarray(start));
      }
      assert.deepEqual(got, framed(chunks));
    }),
    { numRuns: 1000 },
  );
});

/** The reference answer: the first complete event whose data carries the response to `id`. */
function referenceAnswer(bytes: Uint8Array, id: string | number): number {
  return framed([bytes]).findIndex((e) => e.data !== null && carriesResponse(e.data, id));
}

function pushed(chunks: Uint8Array[]) {
  let i = 0;
  let cancelled = false;
  const body = new ReadableStream<Uint8Array>({
    pull(c) {
      if (i < chunks.length) c.enqueue(chunks[i++]);
      else c.close();
    },
    cancel: () => void (cancelled = true),
  }, { highWaterMark: 0 });
  return {
    response: new Response(body, { headers: { "content-type": "text/event-stream" } }),
    cancelled: () => cancelled,
  };
}

Deno.test("property: watchAnswer passes every byte, in event-aligned pieces, and sees the answer the reference sees", async () => {
  await fc.assert(
    fc.asyncProperty(anyStream, cuts, fc.boolean(), async (bytes, offsets, rewrite) => {
      const source = pushed(splitAt(bytes, offsets));
      let answers = 0;
      let ends = 0;
      const rewriter = rewrite ? new SseIdRewriter(() => null) : null; // keeps every id as it is
      const watch = watchAnswer(
        source.response,
        7,
        {
          onAnswer: () => answers++,
          onEnd: () => ends++,
        },
        undefined,
        rewriter,
      );
      const reader = watch.response.body!.getReader();
      const pieceEnds: number[] = [];
      const pieces: Uint8Array[] = [];
      let sent = 0;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        pieces.push(value);
        sent += value.length;
        pieceEnds.push(sent);
      }
      const out = new Uint8Array(sent);
      let at = 0;
      for (const p of pieces) {
        out.set(p, at);
        at += p.length;
      }
      assert.deepEqual(out, bytes);
      assert.equal(ends, 1);
      const events = framed([bytes]);
      const expected = referenceAnswer(bytes, 7);
      assert.equal(answers, expected === -1 ? 0 : 1);
      // Up to the answer (all along without one), what went out ended between events.
      const eventEnds = new Set<number>([bytes.length]);
      let end = 0;
      for (const e of events) eventEnds.add(end += e.bytes.length);
      const answerEnd = expected === -1
        ? Infinity
        : events.slice(0, expected + 1).reduce((n, e) => n + e.bytes.length, 0);
      for (const pieceEnd of pieceEnds) {
        if (pieceEnd < answerEnd) assert.ok(eventEnds.has(pieceEnd), `cut at ${pieceEnd}`);
      }
    }),
    { numRuns: 500 },
  );
});

Deno.test("watchAnswer: events after the answer in the same chunk pass through", async () => {
  const tail = 'data: {"jsonrpc":"2.0","method":"notifications/x"}\n\ndata: unfinished';
  const bytes = enc.encode(`data: ${answer(7)}\n\n${tail}`);
  const source = pushed([bytes]);
  let answers = 0;
  const watch = watchAnswer(source.response, 7, { onAnswer: () => answers++, onEnd: () => {} });
  assert.equal(dec.decode(new Uint8Array(await watch.response.arrayBuffer())), dec.decode(bytes));
  assert.equal(answers, 1);
});

Deno.test("watchAnswer: an event split across chunks goes out whole; an interrupt drops a held one", async () => {
  let c!: ReadableStreamDefaultController<Uint8Array>;
  let cancelled = false;
  const body = new ReadableStream<Uint8Array>({
    start: (controller) => void (c = controller),
    cancel: () => void (cancelled = true),
  });
  const response = new Response(body, { headers: { "content-type": "text/event-stream" } });
  const watch = watchAnswer(response, 7, { onAnswer: () => {}, onEnd: () => {} });
  const reader = watch.response.body!.getReader();
  c.enqueue(enc.encode('data: {"jsonrpc":"2.0","method":"x"}\n'));
  c.enqueue(enc.encode("\ndata: one\n\ndata: par"));
  assert.equal(
    dec.decode((await reader.read()).value),
    'data: {"jsonrpc":"2.0","method":"x"}\n\n',
  );
  assert.equal(dec.decode((await reader.read()).value), "data: one\n\n");
  const pending = reader.read();
  c.enqueue(enc.encode("tial"));
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.equal(watch.interrupt(enc.encode("data: bye\n\n")), true);
  assert.equal(dec.decode((await pending).value), "data: bye\n\n");
  assert.equal((await reader.read()).done, true);
  assert.equal(cancelled, true);
});

Deno.test("watchAnswer: a long answer (parsed, not scanned) is seen as a short one is", async () => {
  for (const text of ["short", "x".repeat(4096)]) {
    for (const id of [7, "7"]) {
      const message = JSON.stringify({ jsonrpc: "2.0", id, result: { text } });
      const bytes = enc.encode(`data: ${message}\n\n`);
      let answers = 0;
      const watch = watchAnswer(pushed([bytes]).response, 7, {
        onAnswer: () => answers++,
        onEnd: () => {},
      });
      assert.deepEqual(new Uint8Array(await watch.response.arrayBuffer()), bytes);
      assert.equal(answers, id === 7 ? 1 : 0);
    }
  }
});

/**
 * A source whose chunks come at once (already queued, or enqueued when read) or later (after a
 * timer), as `timing` says chunk by chunk; it closes at once or later too.
 */
type Timing = "queued" | "pulled" | "soon" | "slow" | "later";

function timed(chunks: Uint8Array[], timing: Timing[]) {
  let i = 0;
  let cancelled = false;
  const at = (k: number) => timing[k % Math.max(timing.length, 1)] ?? "queued";
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      while (i < chunks.length && at(i) === "queued") c.enqueue(chunks[i++]);
      if (i === chunks.length && at(i) === "queued") {
        i++;
        c.close();
      }
    },
    async pull(c) {
      if (i > chunks.length) return;
      const when = at(i);
      if (when === "later") await new Promise((resolve) => setTimeout(resolve, 0));
      // A few microtask turns (as an SDK server writes a quick answer), or more than are waited.
      for (let turn = when === "soon" ? 3 : when === "slow" ? 40 : 0; turn > 0; turn--) await null;
      if (i < chunks.length) c.enqueue(chunks[i++]);
      else {
        i++;
        c.close();
      }
    },
    cancel: () => void (cancelled = true),
  }, { highWaterMark: 0 });
  return {
    response: new Response(body, {
      headers: { "content-type": "text/event-stream", "content-length": "1" },
    }),
    cancelled: () => cancelled,
  };
}

Deno.test("property: watchAnswerEagerly gives the bytes and the answer watchAnswer gives, however the body comes", async () => {
  const timing = fc.array(
    fc.constantFrom<Timing>("queued", "pulled", "soon", "slow", "later"),
    {
      maxLength: 6,
    },
  );
  await fc.assert(
    fc.asyncProperty(
      anyStream,
      cuts,
      timing,
      fc.boolean(),
      async (bytes, offsets, when, rewrite) => {
        const source = timed(splitAt(bytes, offsets), when);
        let answers = 0;
        let ends = 0;
        const rewriter = rewrite ? new SseIdRewriter(() => null) : null;
        const watch = watchAnswerEagerly(
          source.response,
          7,
          {
            onAnswer: () => answers++,
            onEnd: () => ends++,
          },
          undefined,
          rewriter,
        );
        const response = await watch.response;
        assert.equal(response.headers.get("content-type"), "text/event-stream");
        const out = new Uint8Array(await response.arrayBuffer());
        assert.deepEqual(out, bytes);
        assert.equal(ends, 1);
        assert.equal(answers, referenceAnswer(bytes, 7) === -1 ? 0 : 1);
        assert.equal(watch.interrupt(enc.encode("data: x\n\n")), false, "over");
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("watchAnswerEagerly: a body already complete comes whole, its length its own", async () => {
  const text = `\ufeffid: 1\ndata: ${answer(7)}\n\n`;
  const source = timed([enc.encode(text)], ["queued"]);
  let ends = 0;
  const ids: string[] = [];
  const watch = watchAnswerEagerly(
    source.response,
    7,
    {
      onAnswer: () => {},
      onEnd: () => ends++,
    },
    undefined,
    new SseIdRewriter((id) => (ids.push(id), `${id}.tagged`)),
  );
  assert.equal(ends, 0, "not before it was read");
  const response = await watch.response;
  assert.equal(ends, 1, "over before the client reads it");
  assert.equal(response.headers.get("content-length"), null);
  assert.deepEqual(ids, ["1"]);
  const out = new Uint8Array(await response.arrayBuffer());
  assert.deepEqual(out, enc.encode(text.replace("id: 1", "id: 1.tagged")));
  // Bytes that are not UTF-8 pass as they are.
  const raw = Uint8Array.of(...enc.encode("data: "), 0xff, 0xfe, 0x0a, 0x0a);
  const bad = watchAnswerEagerly(timed([raw], ["queued"]).response, 7, {
    onAnswer: () => {},
    onEnd: () => {},
  });
  assert.deepEqual(new Uint8Array(await (await bad.response).arrayBuffer()), raw);
  // A U+FFFD the body holds, a BOM inside it: as they are.
  for (const body of ["data: \ufffd\n\n", "data: \ufeff\ufffd\n\n", "\ufeff\ufeffdata: x\n\n"]) {
    const bytes = enc.encode(body);
    const watch = watchAnswerEagerly(timed([bytes], ["queued"]).response, 7, {
      onAnswer: () => {},
      onEnd: () => {},
    });
    assert.deepEqual(new Uint8Array(await (await watch.response).arrayBuffer()), bytes);
  }
});

Deno.test("watchAnswerEagerly: an interrupt while the body is read first ends it with the event", async () => {
  const source = timed([enc.encode("data: one\n\ndata: par")], ["queued", "later"]);
  let ends = 0;
  const watch = watchAnswerEagerly(source.response, 7, { onAnswer: () => {}, onEnd: () => ends++ });
  assert.equal(watch.interrupt(enc.encode("data: bye\n\n")), true);
  assert.equal(watch.interrupt(enc.encode("data: again\n\n")), false);
  const response = await watch.response;
  assert.equal(await response.text(), "data: bye\n\n");
  assert.equal(ends, 1);
  assert.equal(source.cancelled(), true);

  // Once streaming, what was read first went out, and an unfinished event is dropped.
  const later = timed([enc.encode("data: one\n\ndata: par"), enc.encode("tial")], [
    "queued",
    "later",
  ]);
  const w2 = watchAnswerEagerly(later.response, 7, { onAnswer: () => {}, onEnd: () => {} });
  const reader = (await w2.response).body!.getReader();
  assert.equal(dec.decode((await reader.read()).value), "data: one\n\n");
  assert.equal(w2.interrupt(enc.encode("data: bye\n\n")), true);
  assert.equal(dec.decode((await reader.read()).value), "data: bye\n\n");
  assert.equal((await reader.read()).done, true);
  assert.equal(later.cancelled(), true);
});

Deno.test("watchAnswerEagerly: a failing body errors after what it gave; a bodyless one ends at once", async () => {
  let c!: ReadableStreamDefaultController<Uint8Array>;
  const body = new ReadableStream<Uint8Array>({ start: (controller) => void (c = controller) });
  c.enqueue(enc.encode("data: one\n\n"));
  let ends = 0;
  const watch = watchAnswerEagerly(
    new Response(body, { headers: { "content-type": "text/event-stream" } }),
    7,
    { onAnswer: () => {}, onEnd: () => ends++ },
  );
  const response = await watch.response; // the second read is not answered at once
  c.error(new Error("boom"));
  const reader = response.body!.getReader();
  assert.equal(dec.decode((await reader.read()).value), "data: one\n\n");
  await assert.rejects(reader.read(), /boom/);
  assert.equal(ends, 1);

  const bodyless = new Response(null, { headers: { "content-type": "text/event-stream" } });
  const w2 = watchAnswerEagerly(bodyless, 7, { onAnswer: () => {}, onEnd: () => ends++ });
  assert.equal(ends, 2);
  assert.equal(await w2.response, bodyless);
  assert.equal(w2.interrupt(enc.encode("x")), false);
});

Deno.test("watchAnswerEagerly: an answer written a few turns after the response comes whole; a slower one streams", async () => {
  for (const [when, whole] of [["soon", true], ["slow", false]] as const) {
    const bytes = enc.encode(`data: ${answer(7)}\n\n`);
    const source = timed([bytes], [when]);
    let ends = 0;
    const watch = watchAnswerEagerly(source.response, 7, {
      onAnswer: () => {},
      onEnd: () => ends++,
    });
    const response = await watch.response;
    assert.equal(ends, whole ? 1 : 0, when);
    assert.deepEqual(new Uint8Array(await response.arrayBuffer()), bytes);
    assert.equal(ends, 1);
  }
});

Deno.test("watchAnswerEagerly: a rewriter that throws errors the body and ends the watch, however late the body is read", async () => {
  for (const when of ["now", "late", "never"] as const) {
    // Not closed yet: the handler's body is cancelled.
    const source = timed([enc.encode("data: one\n\nid: 1\ndata: two\n\n")], ["queued", "later"]);
    let ends = 0;
    const watch = watchAnswerEagerly(
      source.response,
      7,
      { onAnswer: () => {}, onEnd: () => ends++ },
      undefined,
      new SseIdRewriter(() => {
        throw new Error("no tag");
      }),
    );
    const response = await watch.response;
    // Read late or never, the error must not wait unhandled: Deno would fail the test with
    // "(in promise) Error: no tag".
    if (when !== "now") await new Promise((resolve) => setTimeout(resolve, 20));
    if (when === "never") await response.body?.cancel();
    else await assert.rejects(response.text(), /no tag/);
    assert.equal(ends, 1, when);
    assert.equal(source.cancelled(), true, when);
  }
});

Deno.test("property: an id tagged on its bytes is the id tagged as text", () => {
  const key = EventIdKey.random();
  const tag = key.tagger("session-a", "request");
  const suffix = key.suffixer("session-a", "request");
  const rewrite = (id: string) => id.includes("\0") ? null : tag(id);
  const join = (parts: Uint8Array[]) => {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  };
  const value = fc.oneof(
    fc.string({ unit: "binary", maxLength: 40 }),
    fc.string({ maxLength: 40 }),
    fc.constantFrom("", " ", "a\0b", "\u00e9", "x".repeat(9000)),
  ).map((v) => v.replace(/[\r\n]/g, ""));
  fc.assert(
    fc.property(
      value,
      fc.constantFrom("id:", "id: ", "id:  "),
      eol,
      cuts,
      (v, head, end, offsets) => {
        const bytes = enc.encode(`event: message\n${head}${v}${end}data: {}\n\n`);
        const asText = new SseIdRewriter(rewrite);
        const asBytes = new SseIdRewriter(rewrite, undefined, suffix);
        const a: Uint8Array[] = [];
        const b: Uint8Array[] = [];
        for (const chunk of splitAt(bytes, offsets)) {
          a.push(...asText.push(chunk));
          b.push(...asBytes.push(chunk));
        }
        a.push(...asText.end());
        b.push(...asBytes.end());
        assert.deepEqual(join(b), join(a));
      },
    ),
    { numRuns: 1000 },
  );
});
