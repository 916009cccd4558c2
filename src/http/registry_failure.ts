/**
 * A registry call that failed inside the guard: answered 503 (or 500 when
 * the registry is misconfigured), never "allow".
 *
 * @module
 */

/** Wraps the error of a failed registry call. */
export class RegistryFailure {
  /** `cause` is the registry's error. */
  constructor(readonly cause: unknown) {}
}

/** `promise`, with a rejection turned into a {@linkcode RegistryFailure}. */
export function registry<T>(promise: Promise<T>): Promise<T> {
  return promise.catch((err) => {
    throw new RegistryFailure(err);
  });
}
