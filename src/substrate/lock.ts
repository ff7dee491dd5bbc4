/**
 * A small mutex on one shared 32-bit word (the three-state futex mutex: 0 free, 1 held,
 * 2 held with sleepers). It stands in for the kernel's spinlocks that protect a fence or a
 * queue: critical sections are a few loads and stores, so the fast path is one compare-exchange
 * and the slow path spins briefly before sleeping on the word.
 *
 * @module
 */
import type { SharedRegion } from './backend.js';

const SPINS = 200;

/** Takes the lock word at `i32[index]`. */
export function lockWord(region: SharedRegion, index: number): void {
  const i32 = region.i32;
  if (Atomics.compareExchange(i32, index, 0, 1) === 0) return;
  for (let i = 0; i < SPINS; i++) {
    if (Atomics.load(i32, index) === 0 && Atomics.compareExchange(i32, index, 0, 1) === 0) return;
  }
  // Mark contended and sleep until the holder hands the word back.
  while (Atomics.exchange(i32, index, 2) !== 0) {
    region.wait(index, 2, Number.POSITIVE_INFINITY);
  }
}

/** Tries once to take the lock word; true on success. */
export function tryLockWord(region: SharedRegion, index: number): boolean {
  return Atomics.compareExchange(region.i32, index, 0, 1) === 0;
}

/** Releases the lock word, waking one sleeper if the lock was contended. */
export function unlockWord(region: SharedRegion, index: number): void {
  if (Atomics.exchange(region.i32, index, 0) === 2) region.notify(index, 1);
}
