/**
 * The conformance runner's comparison (`tests/conformance/run.ts`): what counts as a guarded
 * regression. The suites themselves run in `deno task conformance`.
 */

import assert from "node:assert/strict";
import { type Check, compare, regressed } from "./conformance/run.ts";

const pass = (id: string): Check => ({ id, status: "SUCCESS" });
const fail = (id: string): Check => ({ id, status: "FAILURE", errorMessage: `${id} failed` });

function regressions(unguarded: Check[], guarded: Check[], scenario = "s"): string[] {
  const rows = compare(new Set([scenario]), ["unguarded", "guarded"], {
    unguarded: new Map([[scenario, unguarded]]),
    guarded: new Map([[scenario, guarded]]),
  });
  return rows.filter((row) => regressed(row, rows, "guarded")).map((row) => row.check);
}

Deno.test("conformance comparison: a check that passes unguarded must pass guarded", () => {
  assert.deepEqual(regressions([pass("a"), pass("b")], [pass("a"), pass("b")]), []);
  assert.deepEqual(regressions([pass("a"), pass("b")], [pass("a"), fail("b")]), ["b"]);
  // Failing early guarded: the general failure replaces the checks.
  assert.deepEqual(regressions([pass("a"), pass("b")], [fail("s")]), ["a", "b", "s"]);
});

Deno.test("conformance comparison: a guarded general failure where every check passes unguarded", () => {
  // The scenario's checks all pass guarded too, but it ends in a failure unguarded never
  // reports (a crash after the checks, a timeout): a regression, though no PASS turned.
  assert.deepEqual(regressions([pass("a"), pass("b")], [pass("a"), pass("b"), fail("s")]), [
    "s",
  ]);
  assert.deepEqual(
    regressions([pass("a")], [pass("a"), { id: "w", status: "WARNING" }]),
    ["w"],
  );
  // Where the scenario already fails unguarded, a check only guarded reports is not counted
  // (the guarded run may simply have got further).
  assert.deepEqual(regressions([pass("a"), fail("b")], [pass("a"), fail("b"), fail("c")]), []);
  // A scenario missing guarded is a regression of every check that passes unguarded.
  const rows = compare(new Set(["s"]), ["unguarded", "guarded"], {
    unguarded: new Map([["s", [pass("a")]]]),
    guarded: new Map(),
  });
  assert.deepEqual(rows.map((r) => [r.check, r.status.guarded]), [["a", "MISSING"]]);
  assert.ok(regressed(rows[0], rows, "guarded"));
});
