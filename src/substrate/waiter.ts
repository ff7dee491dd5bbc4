/**
 * The one waiter: every wait in the project goes through here.
 *
 * A synchronous wait first spins on the condition for a bounded time, then sleeps on a shared
 * word until it changes. A fast peer answers in about a microsecond, far less than a futex
 * wake-up (tens of microseconds on these VMs), so spinning pays when the answer comes within
 * the spin (cross-process.md: only then). The spin is adaptive on the thread's recent waits: while
 * they are short enough that a spin could catch them (an average under a few spin budgets; a
 * sleeping peer's answer included), the thread spins the full budget; when they are long, it
 * does not spin at all and goes to sleep as directly as a raw `Atomics.wait`.
 *
 * Why "directly" matters: on these VMs a thread woken by `Atomics.notify` runs only once its
 * waker stops running (measured: a 10 µs busy loop after `notify` adds about 12 µs to the
 * wake-up). A thread that signals and then waits, as every pipeline stage does, delays its
 * peer by everything it does before it sleeps. So the path to the sleep reads the clock once
 * and allocates nothing, and the path back reads it once more.
 *
 * An asynchronous wait never blocks the event loop: it sleeps with `Atomics.waitAsync` in
 * bounded slices and holds a ref'd handle while pending, because a bare `waitAsync` does not
 * keep a thread alive.
 *
 * The waker's side of the protocol: a waiter increments a "sleepers" word before it sleeps and
 * decrements it after; the waker changes the watched word first and calls `notify` only when
 * the sleepers word is non-zero. With sequentially consistent atomics on both sides no wake-up
 * is lost.
 *
 * @module
 */
import type { SharedRegion } from './backend.js';
import { nowMs } from './clock.js';
import { DmaBufError } from './errno.js';

const SPIN_MAX_MS = 0.05;
/** Waits averaging longer than this are "long": no spin. */
const LONG_WAIT_MS = 4 * SPIN_MAX_MS;
/** Longest single async sleep; bounds how long an abandoned waitAsync lingers in V8. */
const ASYNC_SLICE_MS = 1000;

/** Moving average of this thread's recent blocking wait durations, ms. */
let avgWaitMs = 0;
let spinLimitMs = SPIN_MAX_MS;

/** Current spin budget in milliseconds (for benchmarks and tests). */
export function spinBudgetMs(): number {
  return avgWaitMs < LONG_WAIT_MS ? Math.min(spinLimitMs, SPIN_MAX_MS) : 0;
}

/** Caps the spin budget (tests; 0 disables spinning). */
export function setSpinBudgetMs(ms: number): void {
  spinLimitMs = ms;
}

function recordWait(ms: number): void {
  avgWaitMs += (ms - avgWaitMs) / 8;
}

/** Keeps the event loop alive while asynchronous waits or callbacks are pending. */
export const keepAlive = {
  count: 0,
  timer: undefined as NodeJS.Timeout | undefined,
  acquire(): void {
    if (this.count++ === 0) {
      // One interval for the thread's lifetime, ref'd only while something is pending:
      // ref/unref are far cheaper than creating and clearing a timer per wait.
      if (!this.timer) this.timer = setInterval(noop, 0x7fffffff);
      else this.timer.ref();
    }
  },
  release(): void {
    if (--this.count === 0) this.timer?.unref();
  },
};

function noop(): void {}

/** Where a waiter sleeps and how it announces itself. */
export interface WaitTarget {
  readonly region: SharedRegion;
  /** The word whose change means "look again". */
  readonly index: number;
  /** A word the waiter increments while asleep; -1 when the waker always notifies. */
  readonly sleepers: number;
  /**
   * Instead of counting in `sleepers`, set this bit there and never clear it: for a state that
   * is reached once (a fence signals once), whose waker then notifies if the bit is set. The
   * bit can live in the watched word itself, where the waker's own atomic update of that word
   * reports it: no separate read, and no decrement on the way back from a sleep.
   */
  readonly mark?: number;
}

/** Announces a waiter on `target`; true when it counted itself (and must take that back). */
function announce(i32: Int32Array, target: WaitTarget): boolean {
  const { sleepers, mark } = target;
  if (sleepers < 0) return false;
  if (mark) {
    Atomics.or(i32, sleepers, mark);
    return false;
  }
  Atomics.add(i32, sleepers, 1);
  return true;
}

/**
 * Waits synchronously until `done()` is true or `timeoutMs` passes; true if done.
 * Blocks the calling thread (allowed in Node, also on the main thread).
 */
export function waitUntil(target: WaitTarget, done: () => boolean, timeoutMs: number): boolean {
  return waitFor(target, done, timeoutMs) > 0;
}

/**
 * {@linkcode waitUntil} that tells the time left: the milliseconds remaining of `timeoutMs`
 * when `done()` became true (at least `Number.MIN_VALUE`, so never 0; Infinity stays
 * Infinity), or 0 on timeout, as `dma_fence_wait_timeout` reports it.
 */
export function waitFor(target: WaitTarget, done: () => boolean, timeoutMs: number): number {
  if (done()) return timeoutMs === 0 ? Number.MIN_VALUE : timeoutMs;
  if (!(timeoutMs > 0)) return 0;
  const start = nowMs();
  const deadline = start + timeoutMs;
  const spin = spinBudgetMs();
  if (spin > 0) {
    const spinEnd = start + Math.min(spin, timeoutMs);
    for (let i = 1; ; i++) {
      if (done()) return left(timeoutMs, nowMs(), start);
      if ((i & 15) === 0 && nowMs() >= spinEnd) break;
    }
  }
  const { region, index, sleepers } = target;
  const i32 = region.i32;
  const counted = announce(i32, target);
  // The first sleep takes the time left as of the start: a spin, if any, made it at most
  // SPIN_MAX_MS long, and one clock read fewer is what a long wait wants here (see above).
  let now = spin > 0 ? nowMs() : start;
  try {
    // The word is read before the condition, so a change after the read ends the sleep.
    let v = Atomics.load(i32, index);
    while (!done()) {
      const rest = deadline - now;
      if (rest <= 0) {
        recordWait(now - start);
        return 0;
      }
      region.wait(index, v, rest);
      now = nowMs();
      if (done()) break;
      v = Atomics.load(i32, index);
    }
  } finally {
    if (counted) Atomics.sub(i32, sleepers, 1);
  }
  return left(timeoutMs, now, start);
}

/** Records a finished wait and returns the time left of it (see `timeLeft`). */
function left(timeoutMs: number, now: number, start: number): number {
  recordWait(now - start);
  return timeLeft(timeoutMs, now - start);
}

/**
 * What `dma_fence_wait_timeout` returns for a wait that succeeded after `elapsedMs` of
 * `timeoutMs`: the time left, at least `Number.MIN_VALUE` (0 would mean a timeout); Infinity
 * stays Infinity.
 */
export function timeLeft(timeoutMs: number, elapsedMs: number): number {
  if (timeoutMs === Number.POSITIVE_INFINITY) return timeoutMs;
  return Math.max(timeoutMs - elapsedMs, Number.MIN_VALUE);
}

/**
 * Waits without blocking the event loop until `done()` is true or `timeoutMs` passes.
 * Resolves true if done, false on timeout.
 *
 * @throws {DmaBufError} ERESTARTSYS when `signal` aborts the wait (the kernel's interrupted
 *   wait), with the abort reason as `cause`.
 */
export async function waitUntilAsync(
  target: WaitTarget,
  done: () => boolean,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<boolean> {
  if (done()) return true;
  throwIfAborted(signal);
  if (!(timeoutMs > 0)) return false;
  const deadline = nowMs() + timeoutMs;
  const { region, index, sleepers } = target;
  const i32 = region.i32;
  let onAbort: (() => void) | undefined;
  const aborted = signal
    ? new Promise<'aborted'>((resolve) => {
        onAbort = () => resolve('aborted');
        signal.addEventListener('abort', onAbort, { once: true });
      })
    : undefined;
  keepAlive.acquire();
  const counted = announce(i32, target);
  try {
    for (;;) {
      const v = Atomics.load(i32, index);
      if (done()) return true;
      const remaining = deadline - nowMs();
      if (remaining <= 0) return false;
      const r = region.waitAsync(index, v, Math.min(remaining, ASYNC_SLICE_MS));
      if (typeof r === 'string') continue;
      const res = aborted ? await Promise.race([r, aborted]) : await r;
      if (res === 'aborted') throwIfAborted(signal);
    }
  } finally {
    if (counted) Atomics.sub(i32, sleepers, 1);
    keepAlive.release();
    if (onAbort) signal?.removeEventListener('abort', onAbort);
  }
}

/** Throws the ERESTARTSYS analogue if `signal` has aborted. */
export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) {
    throw new DmaBufError('ERESTARTSYS', 'wait interrupted by AbortSignal', {
      cause: signal.reason,
    });
  }
}
