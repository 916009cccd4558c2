/**
 * `carriesResponseBytes` (the SSE answer's check on the bytes) against
 * `carriesResponse(decode(bytes), id)`: the same answer for valid and broken
 * JSON, batches, escaped keys, duplicate ids, bytes that are not UTF-8.
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { carriesResponseBytes } from "../src/http/json_scan.ts";
import { carriesResponse } from "../src/http/response_watch.ts";

const enc = new TextEncoder();
const dec = new TextDecoder("utf-8", { ignoreBOM: true });

function same(bytes: Uint8Array, id: string | number): void {
  const expected = carriesResponse(dec.decode(bytes), id);
  assert.equal(carriesResponseBytes(bytes, 0, bytes.length, id), expected, dec.decode(bytes));
  // In place, among other bytes.
  const padded = new Uint8Array(bytes.length + 6);
  padded.set(enc.encode("data: "), 0);
  padded.set(bytes, 6);
  assert.equal(carriesResponseBytes(padded, 6, padded.length, id), expected);
}

const ids = fc.oneof(
  fc.constantFrom<string | number>(7, "7", 0, -0, 1e21, 'a"b', "\u00e9", "\ud800", 1.5, "id"),
  fc.integer(),
  fc.string({ maxLength: 6 }),
);
const key = fc.oneof(
  fc.constantFrom("id", "method", "result", "error", "jsonrpc", "params", "__proto__"),
  fc.constantFrom("\\u0069d", "r\\u0065sult", "m\\u0065thod", "err\\u006fr", "i\\d", "\\ud800"),
  fc.string({ maxLength: 5 }).map((s) => JSON.stringify(s).slice(1, -1)),
);
const idJson = fc.oneof(
  fc.constantFrom(
    "7",
    '"7"',
    "-0",
    "0",
    "7.0",
    "7e0",
    "70e-1",
    "1e21",
    "null",
    "true",
    '"\\u0037"',
    "[7]",
  ),
  ids.map((id) => JSON.stringify(id)),
);
const value = fc.oneof(
  { depthSize: "small" },
  fc.json({ maxDepth: 3 }),
  idJson,
);
const ws = fc.constantFrom("", " ", "\n", "\t", "\r\n ", "\u00a0", "\ufeff");
const member = fc.tuple(key, ws, value, ws).map(([k, a, v, b]) => `"${k}"${a}:${b}${v}`);
const object = fc.tuple(fc.array(member, { maxLength: 5 }), ws).map(([ms, w]) =>
  `{${w}${ms.join(",")}}`
);
const message = fc.oneof(
  object,
  fc.tuple(idJson, fc.constantFrom("result", "error"), fc.json({ maxDepth: 2 })).map(([id, k, v]) =>
    `{"jsonrpc":"2.0","id":${id},"${k}":${v}}`
  ),
);
const text = fc.oneof(
  message,
  fc.array(message, { maxLength: 3 }).map((ms) => `[${ms.join(", ")}]`),
  fc.json(),
);

Deno.test("property: carriesResponseBytes agrees with carriesResponse on JSON-RPC-like texts", () => {
  fc.assert(
    fc.property(text, ws, ws, ids, (t, a, b, id) => {
      same(enc.encode(a + t + b), id);
    }),
    { numRuns: 3000 },
  );
});

Deno.test("property: ... and on broken ones (bytes cut out, changed, or not UTF-8)", () => {
  const alphabet = [...'{}[]:,"\\ \n0123456789-+.eEtrufalsn7ido'].map((c) => c.charCodeAt(0))
    .concat([0x00, 0x1f, 0x7f, 0x80, 0xc3, 0xa9, 0xef, 0xbb, 0xbf, 0xff, 0xed, 0xa0]);
  fc.assert(
    fc.property(
      text,
      fc.array(fc.tuple(fc.nat(), fc.nat(), fc.nat({ max: alphabet.length - 1 })), {
        minLength: 1,
        maxLength: 3,
      }),
      ids,
      (t, edits, id) => {
        let bytes = enc.encode(t);
        for (const [at, kind, c] of edits) {
          const i = bytes.length === 0 ? 0 : at % bytes.length;
          if (kind % 3 === 0) {
            bytes = Uint8Array.of(...bytes.subarray(0, i), ...bytes.subarray(i + 1));
          } else if (kind % 3 === 1 && i < bytes.length) bytes[i] = alphabet[c];
          else bytes = Uint8Array.of(...bytes.subarray(0, i), alphabet[c], ...bytes.subarray(i));
        }
        same(bytes, id);
      },
    ),
    { numRuns: 5000 },
  );
});

Deno.test("carriesResponseBytes: examples", () => {
  const cases: [string, string | number][] = [
    ['{"jsonrpc":"2.0","id":7,"result":{}}', 7],
    ['{"id":7,"result":1,"id":8}', 7],
    ['{"id":8,"result":1,"id":7}', 7],
    ['{"id":7,"result":1,"method":"x"}', 7],
    ['{"\\u0069d":7,"\\u0065rror":{}}', 7],
    ['{"id":-0,"error":null}', 0],
    ['{"id":"\\u0037","result":0}', "7"],
    ['[{"id":1,"method":"x"},{"id":7,"result":0}]', 7],
    ['[{"id":7,"result":0},]', 7],
    ['{"id":7,"result":0} x', 7],
    ['{"id":7,"result":01}', 7],
    ['{"id":7,"result":"\u0001"}', 7],
    ['{"id":7,"result":[' + "[".repeat(5000) + "]".repeat(5000) + "]}", 7],
    ['{"id":7,"result":[' + "[".repeat(5000) + "]".repeat(4999) + "]}", 7],
    ["", 7],
    ["7", 7],
    ["[]", 7],
    ["{}", 7],
  ];
  for (const [t, id] of cases) same(enc.encode(t), id);
  same(Uint8Array.of(0xef, 0xbb, 0xbf, ...enc.encode('{"id":7,"result":0}')), 7);
  same(Uint8Array.of(...enc.encode('{"id":7,"result":"'), 0xff, 0xc3, ...enc.encode('"}')), 7);
  same(enc.encode(`{"id":${"9".repeat(200_000)},"result":0}`), Infinity as unknown as number);
});
