import assert from "node:assert/strict";
import { SessionMaps } from "../src/core/session_maps.ts";
import { InflightSignals } from "../src/http/inflight_signals.ts";

Deno.test("SessionMaps: a session's map stays while the sessions are few, empty ones are swept", () => {
  const maps = new SessionMaps<number>();
  const first = maps.of("s-0");
  first.set(1, 1);
  first.delete(1);
  assert.equal(maps.of("s-0"), first, "an emptied map is reused");
  for (let i = 1; i < 1_024; i++) maps.of(`s-${i}`).set(i, i);
  for (let i = 1; i < 1_024; i++) maps.get(`s-${i}`)!.delete(i);
  maps.of("s-live").set("1", 1);
  assert.equal(maps.size, 1, "the empty maps went when the 1,025th session came");
  assert.equal(maps.get("s-live")!.get("1"), 1);
  assert.equal(maps.get("s-live")!.get(1), undefined, '1 and "1" differ');
});

Deno.test("InflightSignals: a later request under the same id keeps its own signal", () => {
  const signals = new InflightSignals();
  const a = new AbortController(), b = new AbortController();
  signals.set("s", 1, a);
  signals.set("s", 1, b);
  signals.delete("s", 1, a);
  assert.equal(signals.get("s", 1), b.signal);
  signals.delete("s", 1, b);
  assert.equal(signals.get("s", 1), undefined);
  assert.equal(signals.get("other", 1), undefined);
});

Deno.test("InflightSignals: has answers without making the request's signal", () => {
  const signals = new InflightSignals();
  let made = 0;
  const source = {
    get signal() {
      made++;
      return new AbortController().signal;
    },
  };
  assert.equal(signals.has("s", 1), false);
  signals.set("s", 1, source);
  assert.equal(signals.has("s", 1), true);
  assert.equal(signals.has("s", "1"), false, '1 and "1" differ');
  assert.equal(signals.has("other", 1), false);
  assert.equal(made, 0, "no signal made");
  signals.delete("s", 1, source);
  assert.equal(signals.has("s", 1), false);
});
