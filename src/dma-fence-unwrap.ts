/**
 * Unwrapping and merging fence containers (drivers/dma-buf/dma-fence-unwrap.c).
 *
 * `unwrap(head)` visits the leaf fences under a chain and/or array: the leaves of `head`'s own
 * fence, then those of each predecessor still pending (signalled predecessors are skipped and
 * collected). `unwrapMerge(...)` flattens any mix of fences, arrays and chains into one fence
 * that waits for every pending leaf, never nesting containers.
 *
 * @module
 */
// The handle classes: merged arrays and walked chains come back as their own classes.
import './dma-fence-array.js';
import './dma-fence-chain.js';
import { DmaFence, isSignaledSlot, putFence, seqnoIsLater, wrapFence } from './dma-fence.js';
import {
  arrayCreateSlot,
  checkFence,
  contextOf,
  leafSlots,
  seqno64Of,
  seqnoOf,
  timestampOf,
} from './dma-fence-containers.js';
import { type Domain, domain } from './substrate/domain.js';
import { DmaBufError } from './substrate/errno.js';

/**
 * The leaf fences under `head` (`dma_fence_unwrap_for_each`): for an array its members, for a
 * chain the leaves of each node's fence from `head` back through the pending predecessors, for
 * any other fence the fence itself; nothing for null.
 *
 * Each yielded handle belongs to the iteration and is disposed when it moves on (or ends, or is
 * left with `break`); call `.get()` on one to keep it. The iteration holds its own reference on
 * its position, so `head`'s handle may be disposed meanwhile.
 *
 * @throws {DmaBufError} EINVAL when `head` is not a fence handle; EBADF when it is stale.
 */
export function unwrap(head: DmaFence | null | undefined): Generator<DmaFence, void, undefined> {
  // Checked now; the cursor takes its references only once iterated, so an iterator that is
  // never started holds nothing.
  if (head !== null && head !== undefined) checkFence(head, 'head');
  return unwrapLeaves(head);
}

function* unwrapLeaves(head: DmaFence | null | undefined): Generator<DmaFence, void, undefined> {
  if (head === null || head === undefined) return;
  const d = checkFence(head, 'head');
  for (const s of leafSlots(d, head._slot)) {
    d.get(s);
    const h = wrapFence(s, d.gen(s), true);
    try {
      yield h;
    } finally {
      h.dispose();
    }
  }
}

/** `fence_cmp`: context ascending, later first within a context. */
function compare(d: Domain, a: number, b: number): number {
  const ca = contextOf(d, a);
  const cb = contextOf(d, b);
  if (ca !== cb) return ca < cb ? -1 : 1;
  const sa = seqnoOf(d, a);
  const sb = seqnoOf(d, b);
  if (seqnoIsLater(sb, sa, seqno64Of(d, b))) return 1;
  if (seqnoIsLater(sa, sb, seqno64Of(d, a))) return -1;
  return 0;
}

/** Sorts and deduplicates slots we hold references on; puts the dropped ones. */
function dedupSlots(d: Domain, slots: number[]): number {
  if (slots.length === 0) return 0;
  slots.sort((a, b) => compare(d, a, b));
  let j = 0;
  for (let i = 1; i < slots.length; i++) {
    if (contextOf(d, slots[i]!) === contextOf(d, slots[j]!)) putFence(slots[i]!);
    else slots[++j] = slots[i]!;
  }
  slots.length = j + 1;
  return slots.length;
}

/**
 * `dma_fence_dedup_array`: sorts `fences` in place by context (ascending), keeps only the
 * latest fence of each context, disposes the handles it drops, and returns the new length
 * (`fences` is truncated to it). Within a context the order is the kernel's seqno order
 * (`seqnoIsLater` with each fence's seqno64 flag); equal fences keep their input order.
 *
 * Deviation: an empty list gives 0. v6.17 returns 1 for zero fences (a bug since fixed
 * upstream: callers would read a slot that was never filled).
 *
 * @throws {DmaBufError} EINVAL when an entry is not a fence handle; EBADF for a stale one.
 */
export function dedupArray(fences: DmaFence[]): number {
  if (!Array.isArray(fences)) throw new DmaBufError('EINVAL', 'dedupArray takes an array');
  if (fences.length === 0) return 0;
  const d = domain();
  for (const f of fences) checkFence(f, 'fence');
  fences.sort((a, b) => compare(d, a._slot, b._slot));
  let j = 0;
  for (let i = 1; i < fences.length; i++) {
    const f = fences[i]!;
    if (contextOf(d, f._slot) === contextOf(d, fences[j]!._slot)) f.dispose();
    else fences[++j] = f;
  }
  fences.length = j + 1;
  return fences.length;
}

/**
 * `dma_fence_unwrap_merge`: one fence that signals when every leaf of the inputs has. Inputs
 * may be null, plain fences, arrays or chains; they stay the caller's. The result is a new
 * handle the caller disposes:
 * - no pending leaf: a new private stub fence (signalled, context 0), timestamped with the
 *   latest timestamp of the signalled leaves (0 when there were none);
 * - one pending leaf (after keeping the latest per context): that fence;
 * - otherwise a new array on a fresh context, seqno 1, signalling when all have, holding the
 *   latest pending fence of each context sorted by context.
 *
 * Signalled leaves are dropped together with their errors. The result is never a chain and
 * never contains a container.
 *
 * @throws {DmaBufError} EINVAL when an input is not a fence handle; EBADF for a stale one;
 *   ENOMEM when the shared region is full.
 */
export function unwrapMerge(...fences: (DmaFence | null | undefined)[]): DmaFence {
  const d = domain();
  const heads: number[] = [];
  for (const f of fences) {
    if (f === null || f === undefined) continue;
    checkFence(f, 'merge input');
    heads.push(f._slot);
  }
  // Pass 1: count the pending leaves, remember the last one, find the latest timestamp.
  let timestamp = 0n;
  let count = 0;
  let last = -1;
  for (const h of heads) {
    for (const s of leafSlots(d, h)) {
      if (!isSignaledSlot(d, s, d.gen(s))) {
        if (last >= 0) putFence(last);
        d.get(s);
        last = s;
        count++;
      } else {
        const t = timestampOf(d, s);
        if (t > timestamp) timestamp = t;
      }
    }
  }
  if (count === 0) return DmaFence.allocatePrivateStub(timestamp);
  if (count === 1) return wrapFence(last, d.gen(last), true);
  putFence(last);
  // Pass 2: take the leaves still pending (some may have signalled since).
  const slots: number[] = [];
  try {
    for (const h of heads) {
      for (const s of leafSlots(d, h)) {
        if (!isSignaledSlot(d, s, d.gen(s))) {
          d.get(s);
          slots.push(s);
        } else {
          const t = timestampOf(d, s);
          if (t > timestamp) timestamp = t;
        }
      }
    }
    if (slots.length > 1) dedupSlots(d, slots);
    if (slots.length === 0) return DmaFence.allocatePrivateStub(timestamp);
    if (slots.length === 1) {
      const s = slots.pop()!;
      return wrapFence(s, d.gen(s), true);
    }
    // The array adopts our references.
    const arr = arrayCreateSlot(d, slots, DmaFence.contextAlloc(1), 1n, false, true);
    slots.length = 0;
    return wrapFence(arr, d.gen(arr), true);
  } finally {
    for (const s of slots) putFence(s);
  }
}

/** The unwrap helpers under one name. */
export const DmaFenceUnwrap = {
  unwrap,
  merge: unwrapMerge,
  dedupArray,
} as const;
