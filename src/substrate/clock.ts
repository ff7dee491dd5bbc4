/**
 * The one monotonic clock (CLOCK_MONOTONIC, nanoseconds) shared by every thread of the process:
 * fence timestamps and deadlines are compared across threads, so they must all come from here.
 *
 * @module
 */

// Taken once: looking `process.hrtime.bigint` up on every call costs as much as the call.
const hrtimeBigint = process.hrtime.bigint;

/** Now, in nanoseconds of the monotonic clock (the kernel's `ktime_get()`). */
export function ktimeGetNs(): bigint {
  return hrtimeBigint();
}

/**
 * Now, in milliseconds of the same clock, as a number (for timeouts). Cheaper than
 * `performance.now()`, which goes through more of Node's own code: it is read on the waiter's
 * way to sleep and back, where every instruction delays the wake-up of a peer (see waiter.ts).
 */
export function nowMs(): number {
  return Number(hrtimeBigint()) / 1e6;
}
