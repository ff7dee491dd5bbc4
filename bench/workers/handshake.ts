/**
 * The signal side of the latency ping-pongs: signal only once the other thread is really
 * waiting. The waiter announces the hop it is about to wait for; the signaller spins until it
 * sees that, then a few more microseconds so the waiter is inside its wait. Without this, a
 * "latency" would include the waiter's own work before it starts waiting (for a timeline
 * syncobj, finding the point on the chain), which is not signal-to-wake.
 *
 * @module
 */

/** Microseconds between seeing the announcement and signalling. */
const SETTLE_US = 5;

/** Longest wait for the announcement: the last hop of a run has no waiter. */
const GIVE_UP_MS = 50;

/** Spins until `waiting[0] === hop` (or gives up), then {@linkcode SETTLE_US} more. */
export function awaitWaiter(waiting: Int32Array, hop: number): void {
  const giveUp = performance.now() + GIVE_UP_MS;
  while (Atomics.load(waiting, 0) !== hop) {
    if (performance.now() > giveUp) return;
  }
  const until = performance.now() + SETTLE_US / 1000;
  while (performance.now() < until) {
    /* let the waiter enter its wait */
  }
}
