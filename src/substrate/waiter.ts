/**
 * The one waiter: every wait in the project goes through here.
 *
 * A synchronous wait first spins on the condition for a bounded time, then sleeps on a shared
 * word until it changes. A fast peer answers in about a microsecond, far less than a futex
 * wake-up (tens of microseconds on these VMs), so spinning pays when the answer comes within
 * the spin (cross-process.md: only then). The spin is adaptive on the thread's recent waits: while
 * they are short enough that a spin could catch them (an average under a few spin budgets; a
 * sleeping peer's answer included), the thread spins the full budget; when they are long, it
 * spins only briefly, so a long wait burns almost no CPU and wakes exactly like a raw
 * `Atomics.wait`, since the wake-up comes after the thread is asleep anyway.
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
const SPIN_MAX_MS = 0.05;
/** Waits averaging longer than this are "long": spin only {@linkcode SPIN_MIN_MS}. */
const LONG_WAIT_MS = 4 * SPIN_MAX_MS;
/** Longest single async sleep; bounds how long an abandoned waitAsync lingers in V8. */
const ASYNC_SLICE_MS = 1000;

/** Moving average of this thread's recent blocking wait durations, ms. */
let avgWaitMs = 0;
let spinLimitMs = SPIN_MAX_MS;

/** Current spin budget in milliseconds (for benchmarks and tests). */
export function spinBudgetMs(): number {
  return Math.min(spinLimitMs, avgWaitMs < LONG_WAIT_MS ? SPIN_MAX_MS : SPIN_MIN_MS);
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
  const spin = spinBudgetMs();
  if (spin > 0) {
    const spinEnd = start + Math.min(spin, timeoutMs);
    for (let i = 1; ; i++) {
      if (done()) {
        recordWait(performance.now() - start);
        return true;
      }
      if ((i & 15) === 0 && performance.now() >= spinEnd) break;
    }
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
    recordWait(performance.now() - start);
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
