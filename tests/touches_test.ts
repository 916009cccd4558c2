import assert from "node:assert/strict";
import { TouchCoalescer } from "../src/registry/touches.ts";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A coalescer whose sends are recorded as "<session>/<fingerprint>". */
function recorder(intervalMs: number) {
  const sent: string[] = [];
  const touches = new TouchCoalescer(intervalMs, (sid, fp) => {
    sent.push(`${sid}/${fp}`);
    return Promise.resolve(true);
  });
  return { sent, touches };
}

Deno.test("TouchCoalescer: one touch per pair per interval, then one trailing touch", async (t) => {
  await t.step("absorbed touches resolve at once; one trailing touch carries them", async () => {
    const { sent, touches } = recorder(60);
    await touches.touch("s-1", "alice");
    assert.deepEqual(sent, ["s-1/alice"]);
    for (let i = 0; i < 20; i++) await touches.touch("s-1", "alice");
    assert.deepEqual(sent, ["s-1/alice"], "absorbed within the interval");
    await sleep(120);
    assert.deepEqual(sent, ["s-1/alice", "s-1/alice"], "exactly one trailing touch");
    await sleep(80);
    assert.equal(sent.length, 2, "nothing more without new use");
    touches.clear();
  });

  await t.step("another caller has a pair of its own: never uses up the owner's", async () => {
    const { sent, touches } = recorder(60);
    await touches.touch("s-1", "alice");
    await touches.touch("s-1", "mallory");
    await touches.touch("s-1", "mallory");
    await touches.touch("s-1", "alice");
    assert.deepEqual(sent, ["s-1/alice", "s-1/mallory"]);
    await sleep(120);
    assert.deepEqual(sent.slice(2).sort(), ["s-1/alice", "s-1/mallory"]);
    touches.clear();
  });

  await t.step(
    "a pair sent directly while its trailing touch waits is not sent again",
    async () => {
      const { sent, touches } = recorder(100);
      await touches.touch("p", "fp"); // t=0: sent
      await sleep(50);
      await touches.touch("q", "fp"); // t=50: sent
      await touches.touch("q", "fp"); // absorbed: the trailing timer fires at t=150
      await sleep(10);
      await touches.touch("p", "fp"); // t=60: absorbed, due with q's timer
      await sleep(55);
      await touches.touch("p", "fp"); // t=115: p's interval is over: sent now, carrying the use
      assert.deepEqual(sent, ["p/fp", "q/fp", "p/fp"]);
      await sleep(90); // past t=150
      assert.deepEqual(sent, ["p/fp", "q/fp", "p/fp", "q/fp"], "q's trailing touch only");
      touches.clear();
    },
  );

  await t.step("interval 0 sends every touch; clear() drops a pending trailing one", async () => {
    const every = recorder(0);
    for (let i = 0; i < 3; i++) await every.touches.touch("s-3", "carol");
    assert.equal(every.sent.length, 3);
    const { sent, touches } = recorder(30);
    await touches.touch("s-4", "dave");
    await touches.touch("s-4", "dave");
    touches.clear();
    await sleep(60);
    assert.deepEqual(sent, ["s-4/dave"]);
  });
});
