import assert from "node:assert/strict";
import fc from "fast-check";
import {
  Arg,
  BatchEncoder,
  decodeBatch,
  HEADER_WORDS,
  MAX_INLINE_UNITS,
  newFrame,
  Status,
} from "../src/actor/wire.ts";
import { decodeReply, ReplyEncoder } from "../src/actor/wire_reply.ts";
import { ARITY, Op } from "../src/actor/protocol.ts";

const big = () => newFrame(4_096, 64, 16_384);

Deno.test("wire: a batch round-trips, strings sent once per frame", () => {
  const ops = [Op.Bind, Op.Attach, Op.Forget, Op.Register, Op.Cancel, Op.OwnerSize];
  const fp = "f".repeat(64);
  const args = [
    ...["s1", fp, true, 60_000], // Bind(sessionId, fp, shared, keepMs)
    ...["s2", fp, false, "s1", undefined, "s1", 42.5, "e-1", "s1", 7, null],
  ];
  const frame = big();
  const enc = new BatchEncoder();
  assert.equal(enc.encode(frame, ops, args, 0, ops.length, 0), ops.length);
  assert.deepEqual(enc.extras, []);
  // "s1", fp, "s2", "e-1": four strings in the table, fp once although used twice.
  assert.equal(frame.i32[3], 4 * 2 + "s1".length + 64 + "s2".length + "e-1".length);
  assert.deepEqual(decodeBatch(frame), { ops, args });
});

Deno.test("wire: unusual strings and numbers cross unchanged", () => {
  const ops = [Op.Register, Op.Register];
  const args = ["\ud800lone", -0, "", "é🙂", NaN, "x".repeat(MAX_INLINE_UNITS)];
  const frame = big();
  new BatchEncoder().encode(frame, ops, args, 0, 2, 0);
  const { args: back } = decodeBatch(frame);
  assert.ok(Object.is(back[1], -0));
  assert.ok(Number.isNaN(back[4]));
  assert.deepEqual(back, args);
});

Deno.test("wire: values the format does not carry travel as extras", () => {
  const obj = { a: 1 };
  const long = "y".repeat(MAX_INLINE_UNITS + 1);
  const args = [obj, long, 1n];
  const frame = big();
  const enc = new BatchEncoder();
  enc.encode(frame, [Op.Register], args, 0, 1, 0);
  assert.deepEqual(enc.extras, args);
  assert.equal(frame.i32[HEADER_WORDS + 1], Arg.ExtraBase);
  assert.equal(frame.i32[4], 3);
  assert.deepEqual(decodeBatch(frame, enc.extras).args, args);
  assert.throws(() => decodeBatch(frame, []), /bad argument word/);
});

Deno.test("wire: a frame too small takes what fits, whole ops only", () => {
  const ops = Array<number>(10).fill(Op.OwnerOf);
  const args = ops.map((_, i) => `session-${i}`);
  const frame = newFrame(HEADER_WORDS + 8, 1, 64);
  const enc = new BatchEncoder();
  const n = enc.encode(frame, ops, args, 0, ops.length, 0);
  assert.ok(n > 0 && n < ops.length, `${n} ops`);
  assert.deepEqual(decodeBatch(frame), { ops: ops.slice(0, n), args: args.slice(0, n) });
  // The rest, from where it stopped.
  const rest = big();
  assert.equal(enc.encode(rest, ops, args, n, ops.length, n), ops.length - n);
  assert.deepEqual(decodeBatch(rest).args, args.slice(n));
});

Deno.test("wire: malformed request frames are refused", () => {
  const frame = big();
  frame.i32[0] = 1;
  frame.i32[1] = HEADER_WORDS + 1;
  frame.i32[HEADER_WORDS] = 99;
  assert.throws(() => decodeBatch(frame), /unknown opcode 99/);
  frame.i32[HEADER_WORDS] = Op.OwnerOf;
  assert.throws(() => decodeBatch(frame), /ends early/);
  frame.i32[1] = HEADER_WORDS + 2;
  frame.i32[HEADER_WORDS + 1] = 5;
  assert.throws(() => decodeBatch(frame), /out of order/);
  frame.i32[1] = -3;
  assert.throws(() => decodeBatch(frame), /malformed/);
});

Deno.test("wire: replies carry typed results, failures and removed ids", () => {
  const stats = { size: 3, pinned: 0 };
  const results = [
    true,
    false,
    null,
    undefined,
    "bound",
    "full",
    "fp-alice",
    7,
    -0,
    2.5,
    ["e-1", "e-2", "e-1"],
    stats,
    { failed: { name: "InvalidInputError", message: "too long" } },
    2 ** 40,
  ];
  const frame = big();
  const enc = new ReplyEncoder();
  assert.ok(enc.encode(frame, results, ["s1", "fp-alice"]));
  const back = decodeReply(frame);
  assert.equal(back.status, Status.Ok);
  assert.deepEqual(back.removed, ["s1", "fp-alice"]);
  assert.deepEqual(back.failed, [[12, { name: "InvalidInputError", message: "too long" }]]);
  const want = [...results];
  want[12] = null;
  assert.deepEqual(back.results, want);
  assert.ok(Object.is(back.results[8], -0));

  assert.ok(enc.encode(frame, [1, 2]));
  assert.equal(decodeReply(frame).removed, undefined);
  assert.ok(enc.encodeFailure(frame, { name: "Error", message: "store down" }));
  assert.deepEqual(decodeReply(frame), {
    status: Status.Failed,
    results: [],
    error: { name: "Error", message: "store down" },
  });
  assert.equal(enc.encode(newFrame(HEADER_WORDS + 4, 1, 8), ["a long string"]), false);
  ReplyEncoder.overflow(frame);
  assert.equal(decodeReply(frame).status, Status.Overflow);
});

Deno.test("wire property: any batch of valid shape round-trips", () => {
  const value = fc.oneof(
    fc.string({ unit: "binary" }),
    fc.boolean(),
    fc.constant(null),
    fc.constant(undefined),
    fc.double(),
    fc.integer(),
  );
  const opArb = fc.constantFrom(...Object.values(Op));
  fc.assert(
    fc.property(
      fc.array(fc.tuple(opArb, fc.array(value, { minLength: 4, maxLength: 4 }))),
      (xs) => {
        const ops = xs.map(([op]) => op);
        const args = xs.flatMap(([op, a]) => a.slice(0, ARITY[op]));
        const frame = big();
        const n = new BatchEncoder().encode(frame, ops, args, 0, ops.length, 0);
        assert.equal(n, ops.length);
        assert.deepEqual(decodeBatch(frame), { ops, args });
      },
    ),
    { numRuns: 200 },
  );
});
