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

// ---- the held list (the kernel's robust futex list) -----------------------------------------
//
// A worker ended with `terminate()` stops wherever it is, possibly holding a lock, which would
// then block every thread that needs it. So each thread lists the lock words of its domain it
// holds, in words of its own that the reaper can read once it is dead (its thread-table entry),
// and the reaper releases them. Taken, then listed; unlisted, then released: a death between
// the two leaks that one lock, but never releases a lock held by someone else.

/** Entries of a held list. Deeper nesting goes unlisted. */
export const HELD_SLOTS = 7;
let heldRegion: SharedRegion | undefined;
let heldBase = -1;

/** @internal Where this thread lists the locks of `region` it holds (undefined: nowhere). */
export function setHeldList(region: SharedRegion | undefined, base: number): void {
  heldRegion = region;
  heldBase = base;
}

function listHeld(region: SharedRegion, index: number): void {
  if (region !== heldRegion) return;
  // Plain accesses: only this thread writes its list; the reaper reads it after its death.
  const i32 = region.i32;
  for (let k = heldBase, end = heldBase + HELD_SLOTS; k < end; k++) {
    if (i32[k] === 0) {
      i32[k] = index + 1;
      return;
    }
  }
}

function unlistHeld(region: SharedRegion, index: number): void {
  if (region !== heldRegion) return;
  const i32 = region.i32;
  for (let k = heldBase, end = heldBase + HELD_SLOTS; k < end; k++) {
    if (i32[k] === index + 1) {
      i32[k] = 0;
      return;
    }
  }
}

/**
 * Releases every lock word a dead thread's held list names (at `base`) and clears the list;
 * returns how many. What those locks protected may be half updated, as after a robust futex's
 * OWNER_DIED: the objects stay usable, but one being changed at the time of death may be left
 * between two states.
 */
export function breakHeldLocks(region: SharedRegion, base: number): number {
  const i32 = region.i32;
  let n = 0;
  for (let k = base, end = base + HELD_SLOTS; k < end; k++) {
    const index = Atomics.load(i32, k) - 1;
    if (index < 0) continue;
    Atomics.store(i32, k, 0);
    Atomics.store(i32, index, 0);
    region.notify(index);
    n++;
  }
  return n;
}

/** Takes the lock word at `i32[index]`. */
export function lockWord(region: SharedRegion, index: number): void {
  const i32 = region.i32;
  if (Atomics.compareExchange(i32, index, 0, 1) !== 0) lockSlow(region, index);
  listHeld(region, index);
}

function lockSlow(region: SharedRegion, index: number): void {
  const i32 = region.i32;
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
  if (Atomics.compareExchange(region.i32, index, 0, 1) !== 0) return false;
  listHeld(region, index);
  return true;
}

/** Releases the lock word, waking one sleeper if the lock was contended. */
export function unlockWord(region: SharedRegion, index: number): void {
  unlistHeld(region, index);
  if (Atomics.exchange(region.i32, index, 0) === 2) region.notify(index, 1);
}

/**
 * The robust form, for the domain's own tables: the word names its holder, as a robust futex
 * does (0 free, otherwise `(owner + 1) * 2`, plus 1 while others sleep on it). A thread that
 * dies holding it (a worker ended with `terminate()` stops wherever it is) would otherwise
 * block every thread that needs the table; whoever reaps the dead thread breaks its hold with
 * {@linkcode breakLockWord}. Sleeps are bounded, so a waiter also looks again by itself.
 */
export function lockOwnedWord(region: SharedRegion, index: number, owner: number): void {
  const i32 = region.i32;
  const me = (owner + 1) * 2;
  if (Atomics.compareExchange(i32, index, 0, me) === 0) return;
  for (let i = 0; i < SPINS; i++) {
    if (Atomics.load(i32, index) === 0 && Atomics.compareExchange(i32, index, 0, me) === 0) return;
  }
  for (;;) {
    const v = Atomics.load(i32, index);
    if (v === 0) {
      // Taken after a sleep: keep the mark, others may still sleep on it.
      if (Atomics.compareExchange(i32, index, 0, me | 1) === 0) return;
      continue;
    }
    if ((v & 1) === 0 && Atomics.compareExchange(i32, index, v, v | 1) !== v) continue;
    region.wait(index, v | 1, ROBUST_SLEEP_MS);
  }
}

/** Tries once to take a robust word (see {@linkcode lockOwnedWord}); true on success. */
export function tryLockOwnedWord(region: SharedRegion, index: number, owner: number): boolean {
  return Atomics.compareExchange(region.i32, index, 0, (owner + 1) * 2) === 0;
}

/** Releases a word taken with {@linkcode lockOwnedWord}, waking its sleepers if any. */
export function unlockOwnedWord(region: SharedRegion, index: number): void {
  if ((Atomics.exchange(region.i32, index, 0) & 1) !== 0) region.notify(index);
}

/**
 * Frees a word that `deadOwner` held when it died; true if it did. Only for owners known to be
 * gone: what the word protected may be half updated, and the caller repairs what it must.
 */
export function breakLockWord(region: SharedRegion, index: number, deadOwner: number): boolean {
  const v = Atomics.load(region.i32, index);
  if (v === 0 || v >> 1 !== deadOwner + 1) return false;
  if (Atomics.compareExchange(region.i32, index, v, 0) !== v) return false;
  region.notify(index);
  return true;
}

const ROBUST_SLEEP_MS = 50;
