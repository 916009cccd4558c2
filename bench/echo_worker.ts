/// <reference lib="deno.worker" />
// Echoes every message: the cost of a worker round trip with no work behind it.
self.onmessage = (event: MessageEvent) =>
  self.postMessage({ kind: "reply", id: event.data.id, results: [true] });
