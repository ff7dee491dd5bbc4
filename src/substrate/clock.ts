/**
 * The one monotonic clock (CLOCK_MONOTONIC, nanoseconds) shared by every thread of the process:
 * fence timestamps and deadlines are compared across threads, so they must all come from here.
 *
 * @module
 */

/** Now, in nanoseconds of the monotonic clock (the kernel's `ktime_get()`). */
export function ktimeGetNs(): bigint {
  return process.hrtime.bigint();
}
