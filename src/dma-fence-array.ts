/**
 * dma_fence_array: one fence standing for several (drivers/dma-buf/dma-fence-array.c).
 *
 * An array signals when all its members have signalled, or with `signalOnAny` when the first
 * one has. It is an ordinary fence otherwise: it can be waited on, polled, given callbacks and
 * shared with other threads, and its members may live in and be signalled by any thread.
 *
 * Kernel rules kept here:
 * - Arming is lazy: members get their callbacks (shared-memory dependents) only when signalling
 *   is enabled on the array (a wait, a callback, `enableSwSignaling`). Members found already
 *   signalled while arming count at once; once the count is reached the array signals and the
 *   remaining members are not armed.
 * - Completion is deferred: the array signals after the member's own signal is complete (its
 *   callbacks have run), never inside it; still before the member's `signal()` returns, in the
 *   thread that signalled the member.
 * - Errors: the first member that reports an error (before the array completes) gives the
 *   array its error; later ones are ignored. Until completion the array holds an internal
 *   "pending" marker which `error` and `getStatus()` never show.
 * - Polling (`isSignaled()`) without arming reports completion once enough members have
 *   signalled.
 * - An armed array stays alive until every armed member has signalled (each armed member holds
 *   a reference on it), exactly as in the kernel: with `signalOnAny`, members that never signal
 *   keep the array (and themselves) alive.
 * - No containers inside arrays: flatten with `unwrapMerge` instead.
 *
 * Deviations, chosen on purpose:
 * - `create` takes its own reference on every member; the caller keeps its handles and disposes
 *   them as usual (the kernel takes over the caller's references instead).
 * - Bad input the kernel only warns about is rejected with `EINVAL`: no members (an empty array
 *   can never be armed to completion: an all-array never gets a callback, an any-array never
 *   reaches its count), container members, and a seqno that does not fit the kernel's 32-bit
 *   `unsigned` parameter.
 * - When polling completes an array that was never armed, v6.17 resets the pending marker to 0
 *   and so drops the members' errors; here the first failing member in member order gives the
 *   error, as the later kernel fix does. Armed arrays follow the kernel exactly (first in time).
 *
 * Every thread that touches an array (or signals one of its members) must have loaded this
 * module or another container module; see `dma-fence-containers.ts`.
 *
 * @module
 */

import { ADOPT, DmaFence, FenceKindId, wrapFence } from './dma-fence.js';
import {
  arrayAny,
  arrayCreateSlot,
  arrayMember,
  arrayMembers,
  arrayNum,
  checkFence,
  checkUint,
  contextOf,
  isArraySlot,
  isContainer,
  setContainerClass,
} from './dma-fence-containers.js';
import type { Domain } from './substrate/domain.js';
import { DmaBufError } from './substrate/errno.js';

/** A new owned handle on record `slot` (takes a reference). */
function handleOf(d: Domain, slot: number): DmaFence {
  d.get(slot);
  return wrapFence(slot, d.gen(slot), true);
}

/**
 * A handle to a `dma_fence_array`.
 *
 * @example
 * ```ts
 * import { DmaFence } from 'dmabuf';
 * import { DmaFenceArray } from 'dmabuf/dma-fence-array';
 * const ctx = DmaFence.contextAlloc(2);
 * using a = new DmaFence(ctx, 1n);
 * using b = new DmaFence(ctx + 1n, 1n);
 * using all = DmaFenceArray.create([a, b], DmaFence.contextAlloc(1), 1n, false);
 * a.signal();
 * b.signal();
 * await all.wait();
 * ```
 */
export class DmaFenceArray extends DmaFence {
  /**
   * Creates an array over `fences` (`dma_fence_array_create`). The array takes its own
   * reference on each member; the caller keeps its handles. The array's names are
   * "dma_fence_array" / "unbound" and its seqno orders on 32 bits.
   *
   * @param fences the members, in order; the same fence may appear several times.
   * @param context the array's context (usually a fresh one from `DmaFence.contextAlloc`).
   * @param seqno the array's seqno, in [0, 2^32).
   * @param signalOnAny signal when the first member signals instead of when all have.
   * @throws {DmaBufError} EINVAL for an empty or non-array list, a member that is not a live
   *   fence handle or is a container (array or chain), a context outside [0, 2^64), a seqno
   *   outside [0, 2^32), a non-boolean `signalOnAny`; EBADF for a disposed or stale member;
   *   ENOMEM when the shared region is full.
   */
  static create(
    fences: readonly DmaFence[],
    context: bigint,
    seqno: bigint,
    signalOnAny: boolean,
  ): DmaFenceArray {
    if (!Array.isArray(fences) || fences.length === 0) {
      throw new DmaBufError('EINVAL', 'a fence array needs at least one member');
    }
    checkUint(context, 64, 'context');
    checkUint(seqno, 32, 'array seqno');
    if (typeof signalOnAny !== 'boolean') {
      throw new DmaBufError('EINVAL', 'signalOnAny must be a boolean');
    }
    let d: Domain | undefined;
    const slots: number[] = [];
    for (const f of fences) {
      d = checkFence(f, 'array member');
      if (isContainer(f)) {
        throw new DmaBufError(
          'EINVAL',
          'containers (arrays, chains) cannot be array members: flatten them with unwrapMerge',
        );
      }
      slots.push(f._slot);
    }
    const dom = d!;
    const slot = arrayCreateSlot(dom, slots, context, seqno, signalOnAny, false);
    return new DmaFenceArray(ADOPT, slot, dom.gen(slot), true);
  }

  /** True when `fence` is an array (`dma_fence_is_array`). */
  static isArray(fence: DmaFence): boolean {
    const d = checkFence(fence, 'fence');
    return isArraySlot(d, fence._slot);
  }

  /**
   * `dma_fence_match_context`: for an array, whether every member is on `context`; for any
   * other fence, whether the fence itself is.
   */
  static matchContext(fence: DmaFence, context: bigint): boolean {
    const d = checkFence(fence, 'fence');
    if (!isArraySlot(d, fence._slot)) return contextOf(d, fence._slot) === context;
    for (const m of arrayMembers(d, fence._slot)) if (contextOf(d, m) !== context) return false;
    return true;
  }

  /**
   * `dma_fence_array_first`: null for null; `head` itself (a new handle) when it is not an
   * array; otherwise its first member (a new handle). The caller disposes the result.
   */
  static first(head: DmaFence | null | undefined): DmaFence | null {
    if (head === null || head === undefined) return null;
    const d = checkFence(head, 'head');
    if (!isArraySlot(d, head._slot)) return handleOf(d, head._slot);
    const m = arrayMember(d, head._slot, 0);
    return m < 0 ? null : handleOf(d, m);
  }

  /**
   * `dma_fence_array_next`: member `index` of `head` as a new handle, or null when `head` is not
   * an array or `index` is past the end. The caller disposes the result.
   */
  static next(head: DmaFence | null | undefined, index: number): DmaFence | null {
    if (head === null || head === undefined) return null;
    const d = checkFence(head, 'head');
    if (!isArraySlot(d, head._slot)) return null;
    const m = arrayMember(d, head._slot, index);
    return m < 0 ? null : handleOf(d, m);
  }

  /** Number of members. */
  get numFences(): number {
    return arrayNum(this._check(), this._slot);
  }

  /** Whether the array signals on the first member rather than on all. */
  get signalOnAny(): boolean {
    return arrayAny(this._check(), this._slot);
  }

  /** The members, in order, as new handles (the caller disposes them). */
  fences(): DmaFence[] {
    const d = this._check();
    return arrayMembers(d, this._slot).map((m) => handleOf(d, m));
  }

  /**
   * Member `index` as a new handle (the caller disposes it).
   *
   * @throws {DmaBufError} EINVAL when `index` is not a valid member index.
   */
  member(index: number): DmaFence {
    const d = this._check();
    const m = arrayMember(d, this._slot, index);
    if (m < 0)
      throw new DmaBufError('EINVAL', `no member ${index} in an array of ${this.numFences}`);
    return handleOf(d, m);
  }
}

setContainerClass(FenceKindId.ARRAY, DmaFenceArray);
