/**
 * dma_fence_chain: a timeline of points, one node per point (drivers/dma-buf/dma-fence-chain.c).
 *
 * A node contains one fence and links to the previous point (`prev`: another node, a plain
 * fence, or nothing). It signals when its own fence and every fence along its predecessors have
 * signalled, so waiting on a node waits for the whole timeline up to its point. Nodes are fences
 * with 64-bit seqnos; a chain's nodes share one context while their seqnos increase.
 *
 * Kernel rules kept here:
 * - `create` reuses the predecessor's context when `prev` is a chain node and the new seqno is
 *   higher; otherwise it opens a new context, and after a chain node clamps the seqno up to the
 *   predecessor's (`prevSeqno` then stays 0).
 * - Walking (`walk`, `iterate`, `findSeqno`, polling, arming) garbage-collects: a predecessor
 *   whose fence has signalled is unlinked with a compare-exchange on the shared prev word, so a
 *   long-finished history is not walked again. Walks run concurrently in any thread.
 * - Arming hangs one dependent on the first pending contained fence along the walk; when that
 *   fence signals, the dependent (in the signalling thread, after the signal is complete)
 *   re-arms on the next pending one, or signals the node when none is left.
 * - Chains never carry errors: a failed contained fence completes its point like any other.
 * - Releasing a node releases the predecessors only it holds in a loop, never recursively, so a
 *   chain of any length can be dropped.
 *
 * Deviations, chosen on purpose:
 * - `create` takes its own references on `prev` and `fence`; the caller keeps its handles (the
 *   kernel consumes the caller's references).
 * - A contained fence that is itself a chain is rejected with `EINVAL` (the kernel warns and
 *   continues, which breaks walking and unwrapping).
 * - `walk`, `findSeqno` and `iterate` leave the caller's handles alone and return new handles,
 *   instead of consuming the reference passed in.
 *
 * Every thread that touches a chain (or signals one of its contained fences) must have loaded
 * this module or another container module; see `dma-fence-containers.ts`.
 *
 * @module
 */

import { ADOPT, DmaFence, FenceKindId, putFence, wrapFence } from './dma-fence.js';
import {
  chainCreateSlot,
  chainFenceSlot,
  chainGetPrev,
  chainPrevSeqno,
  chainWalkSlot,
  checkFence,
  checkUint,
  containedSlot,
  contextOf,
  isChainSlot,
  linkSlot,
  seqnoOf,
  setContainerClass,
} from './dma-fence-containers.js';
import type { Domain } from './substrate/domain.js';
import { DmaBufError } from './substrate/errno.js';

/** Wraps a reference the caller already holds on `slot` as an owned handle. */
function adopt(d: Domain, slot: number): DmaFence {
  return wrapFence(slot, d.gen(slot), true);
}

/**
 * A handle to a `dma_fence_chain` node.
 *
 * @example
 * ```ts
 * import { DmaFence } from 'dmabuf';
 * import { DmaFenceChain } from 'dmabuf/dma-fence-chain';
 * const ctx = DmaFence.contextAlloc(1);
 * using job1 = new DmaFence(ctx, 1n);
 * using job2 = new DmaFence(ctx, 2n);
 * using p1 = DmaFenceChain.create(null, job1, 1n);
 * using p2 = DmaFenceChain.create(p1, job2, 2n);
 * job2.signal(); // p2 still waits for job1
 * job1.signal();
 * await p2.wait();
 * ```
 */
export class DmaFenceChain extends DmaFence {
  /**
   * Creates a chain node for point `seqno` containing `fence`, after `prev`
   * (`dma_fence_chain_init`). Takes its own references on `prev` and `fence`; the caller keeps
   * its handles. Names "dma_fence_chain" / "unbound"; 64-bit seqno ordering.
   *
   * @param prev the previous point: a chain node, any other fence (which must still complete),
   *   or null to start a chain.
   * @param fence the fence of this point: any fence but a chain node (arrays are allowed).
   * @param seqno the point, in [0, 2^64); clamped up to `prev`'s when `prev` is a chain node with
   *   a seqno not below it (and a new context is used then).
   * @throws {DmaBufError} EINVAL when `fence` is a chain node, an argument is not a fence handle,
   *   or `seqno` is out of range; EBADF for a disposed or stale handle; ENOMEM when the shared
   *   region is full.
   */
  static create(prev: DmaFence | null, fence: DmaFence, seqno: bigint): DmaFenceChain {
    const d = checkFence(fence, 'fence');
    if (prev !== null && prev !== undefined) checkFence(prev, 'prev');
    checkUint(seqno, 64, 'seqno');
    if (isChainSlot(d, fence._slot)) {
      throw new DmaBufError(
        'EINVAL',
        'a chain node cannot contain another chain node: link chains through prev',
      );
    }
    const prevSlot = prev ? prev._slot : -1;
    const prevIsChain = prevSlot >= 0 && isChainSlot(d, prevSlot);
    const prevPoint = prevIsChain ? seqnoOf(d, prevSlot) : 0n;
    let context: bigint;
    let prevSeqno = 0n;
    let point = seqno;
    if (prevIsChain && seqno > prevPoint) {
      // Continue prev's timeline.
      context = contextOf(d, prevSlot);
      prevSeqno = prevPoint;
    } else {
      // A new timeline; never below the predecessor's point.
      context = DmaFence.contextAlloc(1);
      if (prevIsChain && prevPoint > point) point = prevPoint;
    }
    const slot = chainCreateSlot(d, prevSlot, fence._slot, context, point, prevSeqno);
    return new DmaFenceChain(ADOPT, slot, d.gen(slot), true);
  }

  /** True when `fence` is a chain node (`dma_fence_is_chain`). */
  static isChain(fence: DmaFence): boolean {
    const d = checkFence(fence, 'fence');
    return isChainSlot(d, fence._slot);
  }

  /**
   * `dma_fence_chain_contained`: the fence of chain node `fence`, or `fence` itself when it is
   * not a chain node, as a new handle (the caller disposes it).
   */
  static contained(fence: DmaFence): DmaFence {
    const d = checkFence(fence, 'fence');
    const s = containedSlot(d, fence._slot);
    d.get(s);
    return adopt(d, s);
  }

  /**
   * `dma_fence_chain_walk`: the first predecessor of `fence` whose point is still pending, as a
   * new handle (the caller disposes it), unlinking signalled predecessors on the way. Null when
   * there is none or `fence` is not a chain node. `fence` itself stays the caller's.
   */
  static walk(fence: DmaFence): DmaFence | null {
    const d = checkFence(fence, 'fence');
    d.get(fence._slot);
    const next = chainWalkSlot(d, fence._slot);
    return next < 0 ? null : adopt(d, next);
  }

  /**
   * `dma_fence_chain_for_each`: `head` first (always), then each pending predecessor found by
   * `walk`. Each yielded handle belongs to the iteration and is disposed when it moves on (or
   * ends, or is left with `break`); call `.get()` on one to keep it. The iteration holds its own
   * reference on the current node, so `head`'s handle may be disposed meanwhile.
   */
  static iterate(head: DmaFence): Generator<DmaFence, void, undefined> {
    // Checked now; references are taken only once iterated, so an iterator that is never
    // started holds nothing.
    checkFence(head, 'head');
    return iterateFrom(head);
  }

  /**
   * `dma_fence_chain_find_seqno`: the node that signals point `seqno` of `head`'s timeline, as
   * a new handle (the caller disposes it); `head` stays the caller's.
   * - `seqno` 0: a no-op success, `head` itself (any fence).
   * - `fence` null: the point has already signalled and its node was collected.
   * - Otherwise the first node along the walk whose previous point is below `seqno` (or that
   *   leaves the timeline). It may be an earlier node than the one created for `seqno` when the
   *   nodes in between have signalled: waiting on it waits for exactly what is still missing.
   *
   * @throws {DmaBufError} EINVAL when `head` is not a chain node or `seqno` is past `head`'s
   *   point (not submitted yet), or `seqno` is not a bigint in [0, 2^64).
   */
  static findSeqno(head: DmaFence, seqno: bigint): { fence: DmaFence | null } {
    const d = checkFence(head, 'head');
    checkUint(seqno, 64, 'seqno');
    if (seqno === 0n) {
      d.get(head._slot);
      return { fence: adopt(d, head._slot) };
    }
    if (!isChainSlot(d, head._slot)) {
      throw new DmaBufError('EINVAL', 'findSeqno needs a chain node');
    }
    if (seqnoOf(d, head._slot) < seqno) {
      throw new DmaBufError('EINVAL', `point ${seqno} is past the chain's head (not submitted)`);
    }
    const context = contextOf(d, head._slot);
    d.get(head._slot);
    let it = head._slot;
    // A non-chain predecessor ends the search where it stands (the kernel would dereference
    // it as a chain node if it happened to share the timeline's context).
    while (
      it >= 0 &&
      isChainSlot(d, it) &&
      contextOf(d, it) === context &&
      chainPrevSeqno(d, it) >= seqno
    ) {
      it = chainWalkSlot(d, it);
    }
    return { fence: it < 0 ? null : adopt(d, it) };
  }

  /** The point before this node on its timeline (0 when it starts one). */
  get prevSeqno(): bigint {
    return chainPrevSeqno(this._check(), this._slot);
  }

  /** The contained fence, as a new handle (the caller disposes it). */
  contained(): DmaFence {
    const d = this._check();
    const s = chainFenceSlot(d, this._slot);
    d.get(s);
    return adopt(d, s);
  }

  /**
   * The current predecessor link (no garbage collection), as a new handle the caller disposes,
   * or null. Read with get-unless-zero, so it is safe against concurrent unlinking.
   */
  prev(): DmaFence | null {
    const d = this._check();
    const v = chainGetPrev(d, this._slot);
    return v === 0n ? null : adopt(d, linkSlot(v));
  }
}

function* iterateFrom(head: DmaFence): Generator<DmaFence, void, undefined> {
  const d = checkFence(head, 'head');
  d.get(head._slot);
  let it = head._slot;
  try {
    while (it >= 0) {
      d.get(it);
      const h = adopt(d, it);
      try {
        yield h;
      } finally {
        h.dispose();
      }
      const cur = it;
      it = -1;
      it = chainWalkSlot(d, cur);
    }
  } finally {
    if (it >= 0) putFence(it);
  }
}

setContainerClass(FenceKindId.CHAIN, DmaFenceChain);
