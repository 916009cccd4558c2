/**
 * Rejects option bags with keys nobody reads, naming the nearest valid key:
 * `{ maxEntry: 5 }` is a typo, not a default.
 *
 * @module
 */

import { InvalidInputError } from "./errors.ts";

/** Edit distance between two short strings (case-insensitive). */
function distance(a: string, b: string): number {
  a = a.toLowerCase();
  b = b.toLowerCase();
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = row;
  }
  return prev[b.length];
}

/** The valid key closest to `key`, if close enough to be a likely typo. */
function nearestKey(key: string, allowed: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of allowed) {
    const d = distance(key, candidate);
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  const lower = key.toLowerCase();
  const contains = best !== undefined &&
    (best.toLowerCase().includes(lower) || lower.includes(best.toLowerCase()));
  return bestDistance <= Math.max(2, Math.ceil(key.length / 3)) || contains ? best : undefined;
}

/**
 * Throws {@linkcode InvalidInputError} when `options` is not an object, or
 * has an own key outside `allowed`; the message names the key, the nearest
 * valid one, and where the options were given.
 */
export function checkOptionKeys(
  where: string,
  options: unknown,
  allowed: readonly string[],
): void {
  if (options === undefined) return;
  if (options === null || typeof options !== "object" || Array.isArray(options)) {
    throw new InvalidInputError(
      `${where}: options must be an object, got ${
        options === null ? "null" : Array.isArray(options) ? "an array" : typeof options
      }`,
    );
  }
  for (const key of Object.keys(options)) {
    if (allowed.includes(key)) continue;
    const near = nearestKey(key, allowed);
    throw new InvalidInputError(
      `${where}: unknown option ${JSON.stringify(key)}` +
        (near !== undefined
          ? `; did you mean ${JSON.stringify(near)}?`
          : `; valid options: ${allowed.join(", ")}`),
    );
  }
}
