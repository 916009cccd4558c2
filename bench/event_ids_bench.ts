/**
 * What tagging SSE event ids costs per event, on the main thread: the
 * rewriter over one SDK-shaped event (`event: message`, an `id:` as SDK
 * 1.32's example store writes it, a ~200-byte tool result), against the
 * framing the guard already does for a POST's SSE answer (`SseFramer` plus
 * reading the event's data), and the MAC alone.
 *
 *   deno bench bench/event_ids_bench.ts
 *
 * @module
 */

import { EventIdKey } from "../src/http/event_ids.ts";
import { parseEvent, SseFramer, SseIdRewriter } from "../src/http/sse_events.ts";

const encoder = new TextEncoder();
const sid = crypto.randomUUID();
const result = JSON.stringify({
  jsonrpc: "2.0",
  id: 7,
  result: { content: [{ type: "text", text: "x".repeat(120) }] },
});
const events = Array.from({ length: 256 }, (_, i) => {
  const id = `${crypto.randomUUID()}_${Date.now() + i}_${Math.random().toString(36).slice(2, 10)}`;
  return { id, bytes: encoder.encode(`event: message\nid: ${id}\ndata: ${result}\n\n`) };
});
const key = EventIdKey.random();
const tag = key.tagger(sid, "request");
let n = 0;
const next = () => events[n++ & 255];

Deno.bench("tag: HMAC of one id (the tag alone)", { group: "event" }, () => {
  tag(next().id);
});

Deno.bench("framing an event and reading its data (what a POST's SSE answer already costs)", {
  group: "event",
  baseline: true,
}, () => {
  const framer = new SseFramer(Infinity);
  for (const event of framer.push(next().bytes)) parseEvent(event);
});

Deno.bench("rewriting an event's id with its tag", { group: "event" }, () => {
  const rewriter = new SseIdRewriter((id) => tag(id));
  rewriter.push(next().bytes);
});

const suffix = key.suffixer(sid, "request");
Deno.bench("rewriting an event's id with its tag, on its bytes (as the guard does)", {
  group: "event",
}, () => {
  const rewriter = new SseIdRewriter((id) => tag(id), undefined, suffix);
  rewriter.push(next().bytes);
});

Deno.bench(
  "rewriting an event without an id (keep-alives, pass-through)",
  { group: "event" },
  () => {
    const rewriter = new SseIdRewriter((id) => tag(id));
    rewriter.push(encoder.encode(`event: message\ndata: ${result}\n\n`));
  },
);

Deno.bench("checking a Last-Event-ID", { group: "check" }, () => {
  key.verify(sid, tag(next().id));
});
