/**
 * The one waiter: every wait in the project goes through here.
 *
 * A synchronous wait first spins on the condition for a bounded time, then sleeps on a shared
 * word until it changes. The spin is adaptive: it grows while waits are satisfied during the
 * spin (a fast peer answers in well under a microsecond, far less than a futex wake) and shrinks
 * when waits outlast it, so a long wait costs little more than sleeping at once
 * (cross-process.md: a spin only pays when it outlasts the other side's answer time).
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
import { DmaBufError } from './errno.js';

const SPIN_MIN_MS = 0.002;
const SPIN_MAX_MS = 0.1;
/** Longest single async sleep; bounds how long an abandoned waitAsync lingers in V8. */
const ASYNC_SLICE_MS = 1000;

let spinMs = 0.05;

/** Current spin budget in milliseconds (for benchmarks and tests). */
export function spinBudgetMs(): number {
  return spinMs;
}

/** Sets the spin budget bounds' current value (tests; 0 disables spinning). */
export function setSpinBudgetMs(ms: number): void {
  spinMs = ms;
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
}

/**
 * Waits synchronously until `done()` is true or `timeoutMs` passes; true if done.
 * Blocks the calling thread (allowed in Node, also on the main thread).
 */
export function waitUntil(target: WaitTarget, done: () => boolean, timeoutMs: number): boolean {
  if (done()) return true;
  if (!(timeoutMs > 0)) return false;
  const start = performance.now();
  const deadline = start + timeoutMs;
  const spinEnd = start + Math.min(spinMs, timeoutMs);
  if (spinMs > 0) {
    for (let i = 1; ; i++) {
      if (done()) {
        spinMs = Math.min(SPIN_MAX_MS, spinMs * 1.25);
        return true;
      }
      if ((i & 15) === 0 && performance.now() >= spinEnd) break;
    }
    spinMs = Math.max(SPIN_MIN_MS, spinMs / 2);
  }
  const { region, index, sleepers } = target;
  const i32 = region.i32;
  if (sleepers >= 0) Atomics.add(i32, sleepers, 1);
  try {
    for (;;) {
      const v = Atomics.load(i32, index);
      if (done()) return true;
      const remaining = deadline - performance.now();
      if (remaining <= 0) return false;
      region.wait(index, v, remaining);
    }
  } finally {
    if (sleepers >= 0) Atomics.sub(i32, sleepers, 1);
  }
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
  const deadline = performance.now() + timeoutMs;
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
  if (sleepers >= 0) Atomics.add(i32, sleepers, 1);
  try {
    for (;;) {
      const v = Atomics.load(i32, index);
      if (done()) return true;
      const remaining = deadline - performance.now();
      if (remaining <= 0) return false;
      const r = region.waitAsync(index, v, Math.min(remaining, ASYNC_SLICE_MS));
      if (typeof r === 'string') continue;
      const res = aborted ? await Promise.race([r, aborted]) : await r;
      if (res === 'aborted') throwIfAborted(signal);
    }
  } finally {
    if (sleepers >= 0) Atomics.sub(i32, sleepers, 1);
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
