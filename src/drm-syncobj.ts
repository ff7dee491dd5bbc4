/**
 * drm_syncobj: binary and timeline sync objects (drivers/gpu/drm/drm_syncobj.c,
 * include/uapi/drm/drm.h).
 *
 * A syncobj is a shared container for one fence pointer, possibly empty ("unsubmitted"). Binary
 * use replaces the fence; timeline use makes the pointer the newest `dma_fence_chain` node, one
 * node per point. Its state (the pointer, a lock, and the lists of waiters for a fence or point
 * to appear) is a record in shared memory, so every thread holding it (`share()` /
 * `DrmSyncobj.import(msg)`, the syncobj fd) sees the same live object.
 *
 * {@linkcode DrmFile} models the per-client handle table of a DRM file and its ioctls with the
 * kernel's argument checks, in the kernel's order, with the kernel's errnos; see its comment.
 *
 * Kernel rules kept here (6.x mainline unless noted):
 * - Lookup of (syncobj, point): an empty syncobj, a point past the newest, or a point > 0 on a
 *   fence that is not a chain node is "missing"; point 0 means the whole current fence; a point
 *   already signalled and collected from the chain gives the signalled global stub.
 * - Waits capture the fence present when each entry resolves; a later reset, signal or replace
 *   does not affect an entry that already captured its fence (IGT's "snapshot" tests). Entries
 *   missing a fence register on the syncobj (WAIT_FOR_SUBMIT or WAIT_AVAILABLE) and capture the
 *   fence or point when it appears, at that moment, in whichever thread makes it appear.
 * - Timeouts are absolute CLOCK_MONOTONIC nanoseconds (the same clock in every thread); 0 or a
 *   time already past polls once; expiry is ETIME. A missing entry without WAIT_FOR_SUBMIT or
 *   WAIT_AVAILABLE is EINVAL before any waiting. An AbortSignal stands for a pending signal
 *   (ERESTARTSYS).
 * - `addPoint` accepts non-increasing points silently (the chain then opens a new context and
 *   QUERY may report 0 or a stale value); SIGNAL and RESET on a timeline drop its history.
 * - When the last reference goes, the fence is dropped and pending eventfd registrations are
 *   freed without firing.
 *
 * Version notes (mainline 6.x is followed; older behaviour differs here):
 * - WAIT / TIMELINE_WAIT with no handles succeed since 6.4 (EINVAL before).
 * - WAIT_AVAILABLE without WAIT_FOR_SUBMIT registers missing entries on the syncobj as mainline
 *   does now; before about 6.8 such a wait could only time out.
 * - WAIT_DEADLINE, `deadline_nsec` and EVENTFD are 6.4 / 6.6 additions; `find_fence` rejects
 *   flags other than WAIT_FOR_SUBMIT only in recent kernels.
 * - Handles are allocated lowest-free-first from 1 (idr, and xarray in allocation mode later).
 *
 * Deviations:
 * - The handle table ({@linkcode DrmFile}) belongs to one thread; syncobjs cross threads as
 *   syncobj fds (the shared objects themselves).
 * - An eventfd is a callback and a promise in the registering thread (no eventfd counter);
 *   that thread must stay alive (or cancel) for it to fire.
 * - Waits take milliseconds from the absolute `timeout_nsec` exactly; the kernel rounds up to
 *   whole jiffies plus one.
 *
 * Threads: waiters on one syncobj sleep on their own word (one entry: the entry's node, then the
 * captured fence's own word) or on their thread's doorbell (several entries), so a fence or
 * point appearing in another thread wakes them with one store and one notify. Fence callbacks
 * and waiter lists never run user code under the syncobj lock; a callback that re-enters a
 * syncobj whose lock its own thread holds gets EDEADLK instead of hanging (the kernel forbids
 * it as well).
 *
 * @module
 */
import './dma-fence-array.js';
import {
  DmaFence,
  type DmaFenceCb,
  enableSlot,
  F,
  FENCE_BITS,
  fenceWaitTarget,
  isSignaledSlot,
  putFence,
  setDeadlineSlot,
  wrapFence,
} from './dma-fence.js';
import './dma-fence-chain.js';
import {
  chainCreateSlot,
  chainPrevSeqno,
  chainWalkSlot,
  containedSlot,
  contextOf,
  isChainSlot,
  seqnoOf,
  signaledQuick,
} from './dma-fence-containers.js';
import { unwrapMerge } from './dma-fence-unwrap.js';
import { mightSleep } from './lockdep.js';
import { ktimeGetNs } from './substrate/clock.js';
import { type Domain, domain, RecordType } from './substrate/domain.js';
import { DmaBufError } from './substrate/errno.js';
import { claim, HandleKind, type SharedMessage, SharedObject } from './substrate/handle.js';
import { lockWord, unlockWord } from './substrate/lock.js';
import { type WaitTarget, waitUntil, waitUntilAsync } from './substrate/waiter.js';
import { SyncFile, syncFileGetFence } from './sync-file.js';

// ---- uapi constants (include/uapi/drm/drm.h) ----------------------------------------------------

export const DRM_SYNCOBJ_CREATE_SIGNALED = 1 << 0;
export const DRM_SYNCOBJ_FD_TO_HANDLE_FLAGS_IMPORT_SYNC_FILE = 1 << 0;
export const DRM_SYNCOBJ_FD_TO_HANDLE_FLAGS_TIMELINE = 1 << 1;
export const DRM_SYNCOBJ_HANDLE_TO_FD_FLAGS_EXPORT_SYNC_FILE = 1 << 0;
export const DRM_SYNCOBJ_HANDLE_TO_FD_FLAGS_TIMELINE = 1 << 1;
export const DRM_SYNCOBJ_WAIT_FLAGS_WAIT_ALL = 1 << 0;
export const DRM_SYNCOBJ_WAIT_FLAGS_WAIT_FOR_SUBMIT = 1 << 1;
export const DRM_SYNCOBJ_WAIT_FLAGS_WAIT_AVAILABLE = 1 << 2;
export const DRM_SYNCOBJ_WAIT_FLAGS_WAIT_DEADLINE = 1 << 3;
export const DRM_SYNCOBJ_QUERY_FLAGS_LAST_SUBMITTED = 1 << 0;
export const DRM_CAP_SYNCOBJ = 0x13;
export const DRM_CAP_SYNCOBJ_TIMELINE = 0x14;

const WAIT_ALL = DRM_SYNCOBJ_WAIT_FLAGS_WAIT_ALL;
const FOR_SUBMIT = DRM_SYNCOBJ_WAIT_FLAGS_WAIT_FOR_SUBMIT;
const AVAILABLE = DRM_SYNCOBJ_WAIT_FLAGS_WAIT_AVAILABLE;
const DEADLINE = DRM_SYNCOBJ_WAIT_FLAGS_WAIT_DEADLINE;
const SUBMIT_OR_AVAILABLE = FOR_SUBMIT | AVAILABLE;

/** `first_signaled` when no entry qualifies (the kernel's ~0). */
export const SYNCOBJ_NO_INDEX = 0xffffffff;
/** How long `findFence` with WAIT_FOR_SUBMIT waits for the point to appear (5 s, as the kernel). */
export const SYNCOBJ_WAIT_FOR_SUBMIT_TIMEOUT_MS = 5000;

const U32_MAX = 0xffffffff;
const U64_LIMIT = 1n << 64n;
const SIGNALED = FENCE_BITS.SIGNALED;

// ---- record layouts -------------------------------------------------------------------------------

/** Syncobj record words. */
const S_LOCK = 3;
/** The fence, as slot + 1 (0: none). The record owns one reference on it. */
const S_FENCE = 4;
/** Bumped on every pointer change (tests and debugging read it). */
const S_SEQ = 5;
/** Waiters for a fence or point to appear (`cb_list`), as node slot + 1. */
const S_CB_HEAD = 6;
/** Pending eventfd registrations (`ev_fd_list`), as node slot + 1. */
const S_EV_HEAD = 7;

/** Waiter node words (an EXT record owned by the waiting thread). */
const N_NEXT = 3;
const N_STATE = 4;
const N_SLEEPERS = 5;
const N_MODE = 6;
/** MODE_BELL: the word to bump and notify. */
const N_BELL = 7;
/** The captured fence as slot + 1 (the node then owns a reference on it). */
const N_FENCE = 8;
const N_FLAGS = 9;
/** 64-bit word 5 (words 10, 11): the point. */
const N_POINT64 = 5;
const N_SYNCOBJ = 12;
const N_SYNCOBJ_GEN = 13;

/** Both lists, waiters first (the kernel runs `cb_list`, then `ev_fd_list`). */
const LISTS = [S_CB_HEAD, S_EV_HEAD] as const;

const PENDING = 0;
const RESOLVED = 1;
const CANCELLED = 2;

/** Notify the node's state word when someone sleeps on it. */
const MODE_NOTIFY = 0;
/** Bump and notify the word in N_BELL (a waiter's thread doorbell). */
const MODE_BELL = 1;
/** Always notify the state word (an async waiter that does not count itself). */
const MODE_ALWAYS = 2;

const MISSING = -1;

// ---- locking ---------------------------------------------------------------------------------------

/** Syncobj slots whose lock this thread holds (a small stack; no allocation per lock). */
let lockedHere = new Int32Array(8);
let lockedDepth = 0;

function lockSyncobj(d: Domain, so: number): void {
  for (let i = 0; i < lockedDepth; i++) {
    if (lockedHere[i] === so) {
      throw new DmaBufError(
        'EDEADLK',
        'syncobj re-entered while its own thread holds its lock (from a fence callback)',
      );
    }
  }
  lockWord(d.region, d.base(so) + S_LOCK);
  if (lockedDepth === lockedHere.length) {
    const bigger = new Int32Array(lockedHere.length * 2);
    bigger.set(lockedHere);
    lockedHere = bigger;
  }
  lockedHere[lockedDepth++] = so;
}

function unlockSyncobj(d: Domain, so: number): void {
  for (let i = lockedDepth - 1; i >= 0; i--) {
    if (lockedHere[i] === so) {
      lockedHere.copyWithin(i, i + 1, lockedDepth);
      lockedDepth--;
      break;
    }
  }
  unlockWord(d.region, d.base(so) + S_LOCK);
}

// ---- fences of a syncobj ---------------------------------------------------------------------------

let stubSlotHere = -1;

/** The global stub fence's slot (it lives as long as the domain; no reference taken). */
function stubSlot(): number {
  if (stubSlotHere < 0) {
    const h = DmaFence.getStub();
    stubSlotHere = h._slot;
    h.dispose();
  }
  return stubSlotHere;
}

/** A new reference to the global stub fence, as a slot. */
function stubRef(d: Domain): number {
  const s = stubSlot();
  d.get(s);
  return s;
}

/** `drm_syncobj_fence_get`: the current fence with a new reference, or -1. */
function fenceGet(d: Domain, so: number): number {
  lockSyncobj(d, so);
  const f = d.ld(so, S_FENCE) - 1;
  if (f >= 0) d.get(f);
  unlockSyncobj(d, so);
  return f;
}

/**
 * Finds the fence for `point` starting from `head` (`dma_fence_chain_find_seqno` plus the
 * syncobj's stub substitution). Consumes the reference on `head`; returns a slot with a
 * reference, or MISSING.
 */
function findPoint(d: Domain, head: number, point: bigint): number {
  if (point === 0n) return head;
  if (!isChainSlot(d, head) || seqnoOf(d, head) < point) {
    putFence(head);
    return MISSING;
  }
  const ctx = head;
  let it = head;
  let kept = false;
  while (
    it >= 0 &&
    isChainSlot(d, it) &&
    sameContext(d, it, ctx) &&
    chainPrevSeqno(d, it) >= point
  ) {
    // Keep the head's record alive while later nodes are compared with its context.
    if (it === head && !kept) {
      d.get(head);
      kept = true;
    }
    it = chainWalkSlot(d, it);
  }
  if (kept) putFence(head);
  // Walked off the chain: the point has signalled and its node was collected.
  return it < 0 ? stubRef(d) : it;
}

/** Whether two fence records share a context (compared word by word: no bigint). */
function sameContext(d: Domain, a: number, b: number): boolean {
  const ba = d.base(a) + 2 * F.CONTEXT64;
  const bb = d.base(b) + 2 * F.CONTEXT64;
  const i32 = d.i32;
  return i32[ba] === i32[bb] && i32[ba + 1] === i32[bb + 1];
}

/** Looks the point up in the current fence; a slot with a reference, or MISSING. */
function lookup(d: Domain, so: number, point: bigint): number {
  const head = fenceGet(d, so);
  return head < 0 ? MISSING : findPoint(d, head, point);
}

function isSignaledBit(d: Domain, f: number): boolean {
  return (d.ld(f, F.FLAGS) & SIGNALED) !== 0;
}

// ---- waiter and eventfd nodes -------------------------------------------------------------------

function allocNode(d: Domain, point: bigint, mode: number, bell: number): number {
  const n = d.alloc(RecordType.EXT);
  const nb = d.base(n);
  Atomics.store(d.i64, (nb >> 1) + N_POINT64, BigInt.asIntN(64, point));
  Atomics.store(d.i32, nb + N_MODE, mode);
  Atomics.store(d.i32, nb + N_BELL, bell);
  return n;
}

function nodePoint(d: Domain, n: number): bigint {
  return BigInt.asUintN(64, d.ld64(n, N_POINT64));
}

function nodeState(d: Domain, n: number): number {
  return d.ld(n, N_STATE);
}

/** Appends node `n` to the list at word `S_CB_HEAD` or `S_EV_HEAD` of `so` (lock held). */
function linkNode(d: Domain, so: number, list: number, n: number): void {
  const head = d.ld(so, list);
  if (head === 0) {
    d.st(so, list, n + 1);
    return;
  }
  let last = head - 1;
  for (let next = d.ld(last, N_NEXT); next !== 0; ) {
    last = next - 1;
    next = d.ld(last, N_NEXT);
  }
  d.st(last, N_NEXT, n + 1);
}

/** Removes node `n` from a list of `so` if it is there (lock held). */
function unlinkNode(d: Domain, so: number, list: number, n: number): void {
  let prev = -1;
  let it = d.ld(so, list);
  while (it !== 0) {
    const next = d.ld(it - 1, N_NEXT);
    if (it - 1 === n) {
      if (prev < 0) d.st(so, list, next);
      else d.st(prev, N_NEXT, next);
      d.st(n, N_NEXT, 0);
      return;
    }
    prev = it - 1;
    it = next;
  }
}

/**
 * Marks node `n` (already unlinked) resolved with `fence` (a reference it takes over) or
 * cancelled (`fence` -1), and wakes its owner. The owner may free the node as soon as it sees
 * the new state, so nothing of the node is read after the state is stored.
 */
function settleNode(d: Domain, n: number, fence: number): void {
  const nb = d.base(n);
  const mode = Atomics.load(d.i32, nb + N_MODE);
  const bell = Atomics.load(d.i32, nb + N_BELL);
  if (fence >= 0) Atomics.store(d.i32, nb + N_FENCE, fence + 1);
  const sleepers = nb + N_SLEEPERS;
  Atomics.store(d.i32, nb + N_STATE, fence >= 0 ? RESOLVED : CANCELLED);
  if (mode === MODE_BELL) {
    Atomics.add(d.i32, bell, 1);
    d.region.notify(bell);
  } else if (mode === MODE_ALWAYS || Atomics.load(d.i32, sleepers) > 0) {
    d.region.notify(nb + N_STATE);
  }
}

/**
 * Runs both lists after the pointer changed (`syncobj_wait_syncobj_func`,
 * `syncobj_eventfd_entry_func`): each entry whose point now exists captures its fence and
 * leaves the list. The lock is held.
 */
function runLists(d: Domain, so: number): void {
  for (const list of LISTS) {
    let prev = -1;
    let it = d.ld(so, list);
    while (it !== 0) {
      const n = it - 1;
      const next = d.ld(n, N_NEXT);
      const head = d.ld(so, S_FENCE) - 1;
      let found = MISSING;
      if (head >= 0) {
        d.get(head);
        found = findPoint(d, head, nodePoint(d, n));
      }
      if (found === MISSING) {
        prev = n;
      } else {
        if (prev < 0) d.st(so, list, next);
        else d.st(prev, N_NEXT, next);
        d.st(n, N_NEXT, 0);
        settleNode(d, n, found);
      }
      it = next;
    }
  }
}

/**
 * Registers node `n` on list `list` of `so` unless the point is already there: then returns
 * the fence (with a reference) and does not register (`drm_syncobj_fence_add_wait`).
 */
function addWaitNode(d: Domain, so: number, list: number, n: number): number {
  lockSyncobj(d, so);
  try {
    const head = d.ld(so, S_FENCE) - 1;
    let found = MISSING;
    if (head >= 0) {
      d.get(head);
      found = findPoint(d, head, nodePoint(d, n));
    }
    if (found === MISSING) linkNode(d, so, list, n);
    return found;
  } finally {
    unlockSyncobj(d, so);
  }
}

/**
 * Takes node `n` off `so`'s list if still pending; returns the fence it captured (the
 * reference moves to the caller) or -1, and frees the node.
 */
function retireNode(d: Domain, so: number, list: number, n: number): number {
  if (nodeState(d, n) === PENDING) {
    lockSyncobj(d, so);
    if (nodeState(d, n) === PENDING) unlinkNode(d, so, list, n);
    unlockSyncobj(d, so);
  }
  const f = nodeState(d, n) === RESOLVED ? d.ld(n, N_FENCE) - 1 : -1;
  d.free(n);
  return f;
}

// ---- pointer changes ---------------------------------------------------------------------------

/** `drm_syncobj_replace_fence`: installs `fence` (slot, or -1 for none). */
function replaceFenceSlot(d: Domain, so: number, fence: number): void {
  if (fence >= 0) d.get(fence);
  let old: number;
  lockSyncobj(d, so);
  try {
    const b = d.base(so);
    old = Atomics.load(d.i32, b + S_FENCE) - 1;
    Atomics.store(d.i32, b + S_FENCE, fence + 1);
    Atomics.add(d.i32, b + S_SEQ, 1);
    if (old !== fence) runLists(d, so);
  } finally {
    unlockSyncobj(d, so);
  }
  if (old >= 0) putFence(old);
}

/**
 * `dma_fence_chain_init` on records: a new chain node for `seqno` containing `fence` after
 * `prev` (-1: none), taking its own references on both. The same rule as
 * `DmaFenceChain.create`: prev's context continues when prev is a chain node with a lower
 * point; otherwise a new context, and the point is clamped up to prev's.
 */
function chainInit(d: Domain, prev: number, fence: number, seqno: bigint): number {
  const prevIsChain = prev >= 0 && isChainSlot(d, prev);
  const prevPoint = prevIsChain ? seqnoOf(d, prev) : 0n;
  if (prevIsChain && seqno > prevPoint) {
    return chainCreateSlot(d, prev, fence, contextOf(d, prev), seqno, prevPoint);
  }
  const point = prevIsChain && prevPoint > seqno ? prevPoint : seqno;
  return chainCreateSlot(d, prev, fence, d.allocContexts(1), point, 0n);
}

/** `drm_syncobj_add_point`: a new chain node for `point` containing fence `fence`. */
function addPointSlot(d: Domain, so: number, fence: number, point: bigint): void {
  let prev: number;
  lockSyncobj(d, so);
  try {
    prev = d.ld(so, S_FENCE) - 1;
    // A non-increasing point only merits a debug message in the kernel: accepted as is.
    const node = chainInit(d, prev, fence, point);
    // The syncobj's reference on the old head becomes ours (for the walk below).
    d.st(so, S_FENCE, node + 1);
    d.add32(so, S_SEQ, 1);
    runLists(d, so);
  } finally {
    unlockSyncobj(d, so);
  }
  // Walk the old chain once so that signalled links are collected.
  for (let it = prev; it >= 0; ) it = chainWalkSlot(d, it);
}

/** DRM_IOCTL_SYNCOBJ_QUERY for one syncobj. */
function querySlot(d: Domain, so: number, lastSubmitted: boolean): bigint {
  const head = fenceGet(d, so);
  if (head < 0) return 0n;
  try {
    if (!isChainSlot(d, head)) return 0n;
    if (lastSubmitted) return seqnoOf(d, head);
    // Walk back while still on the head's timeline; the deepest pending node reached tells the
    // highest point known complete.
    d.get(head);
    let last = head;
    d.get(head);
    let it = head;
    for (;;) {
      it = chainWalkSlot(d, it);
      if (it < 0) break;
      if (!sameContext(d, it, head)) {
        putFence(it);
        break;
      }
      putFence(last);
      d.get(it);
      last = it;
    }
    try {
      if (isSignaledSlot(d, last, d.gen(last))) return seqnoOf(d, last);
      return isChainSlot(d, last) ? chainPrevSeqno(d, last) : 0n;
    } finally {
      putFence(last);
    }
  } finally {
    putFence(head);
  }
}

// ---- the array wait ---------------------------------------------------------------------------------

/** Options of the waits on syncobj objects. */
export interface SyncobjWaitOptions {
  /** One point per syncobj (u64); null or left out: all 0 (binary). */
  points?: readonly (bigint | number)[] | null;
  /** DRM_SYNCOBJ_WAIT_FLAGS_*. */
  flags?: number;
  /** Absolute CLOCK_MONOTONIC ns (the uapi `timeout_nsec`); 0 or past: poll once. */
  timeoutNs?: bigint;
  /** Relative timeout in ms, used when `timeoutNs` is left out; default Infinity. */
  timeout?: number;
  /** With WAIT_DEADLINE: the deadline hint (absolute monotonic ns) given to every fence. */
  deadlineNs?: bigint;
  /** Makes the wait interruptible: aborting it throws ERESTARTSYS. */
  signal?: AbortSignal;
}

/**
 * The fence a wait on `f` should sleep on, with a new reference: for a chain node the first
 * contained fence still pending along its walk (signalled links are collected on the way), else
 * `f` itself.
 */
function firstPending(d: Domain, f: number): number {
  if (isChainSlot(d, f)) {
    d.get(f);
    for (let it = f; it >= 0; ) {
      const c = containedSlot(d, it);
      if (!isSignaledBit(d, c)) {
        d.get(c);
        putFence(it);
        return c;
      }
      it = chainWalkSlot(d, it);
    }
  }
  d.get(f);
  return f;
}

/** `drm_syncobj_array_wait_timeout` over syncobj slots the caller holds references on. */
class ArrayWait {
  d: Domain = domain();
  objs: readonly number[] = NONE;
  points: readonly bigint[] = NO_POINTS;
  flags = 0;
  n = 0;
  readonly fences: number[] = [];
  readonly nodes: number[] = [];
  readonly sat: boolean[] = [];
  readonly armed: boolean[] = [];
  readonly cbs: (DmaFenceCb | undefined)[] = [];
  idx = SYNCOBJ_NO_INDEX;
  epoch = 0;
  waitEpoch = 0;
  bell = -1;
  /** When true, a successful run leaves entry 0's fence to the caller (findFence). */
  keepFirst = false;
  /** The fence a single-entry wait sleeps on (a reference held during the sleep), or -1. */
  held = -1;
  /** Reused for every sleep of this wait. */
  readonly #target = { region: domain().region, index: 0, sleepers: -1 };
  #ok = false;
  readonly #ring = (): void => {
    Atomics.add(this.d.i32, this.bell, 1);
    this.d.region.notify(this.bell);
  };

  /** Prepares a wait on `objs` (slots the caller holds) at `points` (read before any await). */
  init(d: Domain, objs: readonly number[], points: readonly bigint[], flags: number): this {
    this.d = d;
    this.objs = objs;
    this.points = points;
    this.flags = flags;
    const n = objs.length;
    this.n = n;
    this.fences.length = n;
    this.fences.fill(-1);
    this.nodes.length = n;
    this.nodes.fill(-1);
    this.sat.length = n;
    this.sat.fill(false);
    this.armed.length = n;
    this.armed.fill(false);
    this.cbs.length = n;
    this.cbs.fill(undefined);
    this.idx = SYNCOBJ_NO_INDEX;
    this.epoch = 0;
    this.waitEpoch = 0;
    this.bell = -1;
    this.keepFirst = false;
    this.held = -1;
    this.#ok = false;
    return this;
  }

  /** First pass: capture what exists. True when the wait is already satisfied. */
  pass1(): boolean {
    const d = this.d;
    let count = 0;
    for (let i = 0; i < this.n; i++) {
      const f = lookup(d, this.objs[i]!, this.points[i]!);
      if (f === MISSING) {
        if (this.flags & SUBMIT_OR_AVAILABLE) continue;
        throw new DmaBufError('EINVAL', `syncobj ${i} has no fence for point ${this.points[i]}`);
      }
      this.fences[i] = f;
      if (this.flags & AVAILABLE || isSignaledSlot(d, f, d.gen(f))) {
        this.sat[i] = true;
        if (count === 0) this.idx = i;
        count++;
      }
    }
    return count === this.n || (count > 0 && (this.flags & WAIT_ALL) === 0);
  }

  /** Registers missing entries on their syncobjs and passes the deadline hint on. */
  register(deadlineNs: bigint | undefined): void {
    const d = this.d;
    if (this.flags & SUBMIT_OR_AVAILABLE) {
      if (this.n > 1) this.bell = d.doorbellWord();
      for (let i = 0; i < this.n; i++) {
        if (this.fences[i]! >= 0) continue;
        const n =
          this.n > 1
            ? allocNode(d, this.points[i]!, MODE_BELL, this.bell)
            : allocNode(d, this.points[i]!, MODE_NOTIFY, 0);
        const f = addWaitNode(d, this.objs[i]!, S_CB_HEAD, n);
        if (f === MISSING) this.nodes[i] = n;
        else {
          d.free(n);
          this.fences[i] = f;
        }
      }
    }
    if (deadlineNs !== undefined) {
      for (const f of this.fences) if (f >= 0) setDeadlineSlot(d, f, d.gen(f), deadlineNs);
    }
  }

  /** One scan of the loop; true when satisfied. `poll` also polls and arms fences. */
  scan(poll: boolean): boolean {
    const d = this.d;
    for (let i = 0; i < this.n; i++) {
      const n = this.nodes[i]!;
      if (n >= 0 && this.fences[i]! < 0 && nodeState(d, n) === RESOLVED) {
        // The point appeared: the node captured its fence for us; the node is retired later.
        this.fences[i] = d.ld(n, N_FENCE) - 1;
        d.st(n, N_FENCE, 0);
        this.epoch++;
      }
    }
    const all = (this.flags & WAIT_ALL) !== 0;
    let count = 0;
    for (let i = 0; i < this.n; i++) {
      if (!this.sat[i]) {
        const f = this.fences[i]!;
        if (f < 0) continue;
        if (this.flags & AVAILABLE || isSignaledBit(d, f)) this.sat[i] = true;
        else if (poll) this.sat[i] = isSignaledSlot(d, f, d.gen(f)) || this.#arm(i, f);
        if (!this.sat[i]) continue;
      }
      if (!all) {
        this.idx = i;
        return true;
      }
      count++;
    }
    return all && count === this.n;
  }

  /** Arms entry `i` so that its signal wakes us; true when it turned out signalled already. */
  #arm(i: number, f: number): boolean {
    if (this.armed[i]) return false;
    this.armed[i] = true;
    const d = this.d;
    if (this.n === 1) {
      // One entry sleeps on the fence's own word: enabling signalling is all it needs.
      enableSlot(d, f, d.gen(f));
      return isSignaledBit(d, f);
    }
    if (this.bell < 0) this.bell = d.doorbellWord();
    try {
      this.cbs[i] = wrapFence(f, d.gen(f), false).addCallback(this.#ring);
      return false;
    } catch (e) {
      if (e instanceof DmaBufError && e.code === 'ENOENT') return true;
      throw e;
    }
  }

  /**
   * Where to sleep now. One entry sleeps on its own word: the node until the point appears,
   * then the fence. For a chain point that is the first pending fence inside the chain (the
   * one the chain itself waits for), so its signal wakes us directly and we poll the chain,
   * instead of waiting for the chain's completion to be passed on; a reference on it is held
   * for the sleep (see `unhold`).
   */
  target(): WaitTarget {
    const d = this.d;
    const t = this.#target;
    t.region = d.region;
    if (this.n === 1) {
      const f = this.fences[0]!;
      if (f >= 0) {
        const h = firstPending(d, f);
        this.held = h;
        return fenceWaitTarget(d, h);
      }
      const nb = d.base(this.nodes[0]!);
      t.index = nb + N_STATE;
      t.sleepers = nb + N_SLEEPERS;
      return t;
    }
    if (this.bell < 0) this.bell = d.doorbellWord();
    t.index = this.bell;
    t.sleepers = -1;
    return t;
  }

  /** Drops the reference `target` took for the sleep. */
  unhold(): void {
    if (this.held >= 0) {
      putFence(this.held);
      this.held = -1;
    }
  }

  /**
   * The sleep predicate: satisfied, or something changed that needs a new target (a point
   * appeared, or the fence slept on inside a chain signalled: poll the chain again).
   */
  readonly quick = (): boolean =>
    this.scan(false) ||
    this.epoch !== this.waitEpoch ||
    (this.held >= 0 && this.held !== this.fences[0] && isSignaledBit(this.d, this.held));

  #done(): number {
    this.#ok = true;
    return this.idx;
  }

  cleanup(): void {
    const d = this.d;
    for (let i = 0; i < this.n; i++) {
      const n = this.nodes[i]!;
      if (n < 0) continue;
      this.nodes[i] = -1;
      const f = retireNode(d, this.objs[i]!, S_CB_HEAD, n);
      if (f >= 0) {
        if (this.fences[i]! < 0) this.fences[i] = f;
        else putFence(f);
      }
    }
    for (let i = 0; i < this.n; i++) {
      const cb = this.cbs[i];
      if (cb) cb.fence.removeCallback(cb);
    }
    for (let i = this.keepFirst && this.#ok ? 1 : 0; i < this.n; i++) {
      const f = this.fences[i]!;
      if (f >= 0) putFence(f);
    }
  }

  runSync(timeoutMs: number, deadlineNs: bigint | undefined): number {
    try {
      if (this.pass1()) return this.#done();
      this.register(deadlineNs);
      if (this.scan(true)) return this.#done();
      const end = performance.now() + timeoutMs;
      for (;;) {
        const remaining = end - performance.now();
        if (!(remaining > 0)) throw etime();
        this.waitEpoch = this.epoch;
        try {
          waitUntil(this.target(), this.quick, remaining);
        } finally {
          this.unhold();
        }
        if (this.scan(true)) return this.#done();
      }
    } finally {
      this.cleanup();
    }
  }

  async runAsync(
    timeoutMs: number,
    deadlineNs: bigint | undefined,
    signal: AbortSignal | undefined,
  ): Promise<number> {
    try {
      if (this.pass1()) return this.#done();
      this.register(deadlineNs);
      if (this.scan(true)) return this.#done();
      const end = performance.now() + timeoutMs;
      for (;;) {
        const remaining = end - performance.now();
        if (!(remaining > 0)) throw etime();
        this.waitEpoch = this.epoch;
        try {
          await waitUntilAsync(this.target(), this.quick, remaining, signal);
        } finally {
          this.unhold();
        }
        if (this.scan(true)) return this.#done();
      }
    } finally {
      this.cleanup();
    }
  }
}

const NONE: readonly number[] = [];
const NO_POINTS: readonly bigint[] = [];
/** Finished waits kept for reuse: a wait per hop should not feed the garbage collector. */
const waitPool: ArrayWait[] = [];

function takeWait(
  d: Domain,
  objs: readonly number[],
  points: readonly bigint[],
  flags: number,
): ArrayWait {
  return (waitPool.pop() ?? new ArrayWait()).init(d, objs, points, flags);
}

function giveWait(w: ArrayWait): void {
  w.objs = NONE;
  w.points = NO_POINTS;
  w.cbs.fill(undefined);
  if (waitPool.length < 8) waitPool.push(w);
}

function etime(): DmaBufError {
  return new DmaBufError('ETIME', 'syncobj wait timed out');
}

/** Milliseconds left until absolute monotonic time `abs` (s64 ns); 0 means poll. */
function absToMs(abs: bigint): number {
  const t = BigInt.asIntN(64, abs);
  if (t === 0n) return 0;
  const now = ktimeGetNs();
  if (t <= now) return 0;
  return Number(t - now) / 1e6;
}

/**
 * An absolute timeout (CLOCK_MONOTONIC ns, as the uapi wants) `ms` milliseconds from now;
 * Infinity gives the largest one.
 */
export function syncobjTimeoutNs(ms: number): bigint {
  if (typeof ms !== 'number' || Number.isNaN(ms) || ms < 0) {
    throw new DmaBufError('EINVAL', 'timeout must be a number of ms >= 0');
  }
  if (!Number.isFinite(ms)) return (1n << 63n) - 1n;
  return ktimeGetNs() + BigInt(Math.ceil(ms * 1e6));
}

function toPoint(v: unknown, what: string): bigint {
  if (typeof v === 'bigint' && v >= 0n && v < U64_LIMIT) return v;
  if (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) return BigInt(v);
  throw new DmaBufError('EINVAL', `${what} must be an integer in [0, 2^64)`);
}

function toPoints(points: unknown, count: number): readonly bigint[] {
  if (points === null || points === undefined) return new Array<bigint>(count).fill(0n);
  if (!Array.isArray(points) || points.length < count) {
    throw new DmaBufError('EFAULT', `points must be an array of at least ${count} values`);
  }
  let same = true;
  for (let i = 0; i < count && same; i++) {
    const p: unknown = points[i];
    same = typeof p === 'bigint' && p >= 0n && p < U64_LIMIT;
  }
  // Valid bigints are used as given (they are read before the first await); others converted.
  if (same) return points as readonly bigint[];
  const out: bigint[] = [];
  for (let i = 0; i < count; i++) out.push(toPoint(points[i], 'point'));
  return out;
}

function toTimeoutNs(v: unknown): bigint {
  if (typeof v === 'bigint') return BigInt.asIntN(64, v);
  if (typeof v === 'number' && Number.isInteger(v)) return BigInt(v);
  throw new DmaBufError('EINVAL', 'timeout must be an absolute time in ns (bigint)');
}

function checkFlags(flags: unknown, allowed: number, what: string): number {
  if (typeof flags !== 'number' || !Number.isInteger(flags) || (flags & ~allowed) !== 0) {
    throw new DmaBufError('EINVAL', `bad ${what} flags ${String(flags)}`);
  }
  return flags >>> 0;
}

function checkPad(pad: unknown): void {
  if (pad !== 0 && pad !== undefined) throw new DmaBufError('EINVAL', 'pad must be 0');
}

/** What `waitSetup` found; read at once by the caller (no object per wait). */
const setup = {
  d: undefined as unknown as Domain,
  points: NO_POINTS,
  flags: 0,
  ms: 0,
  dl: undefined as bigint | undefined,
};

/** Checks the arguments of the object waits; returns the slots, the rest goes to `setup`. */
function waitSetup(objs: readonly DrmSyncobj[], opts: SyncobjWaitOptions): number[] {
  if (!Array.isArray(objs)) throw new DmaBufError('EINVAL', 'wait takes an array of syncobjs');
  const flags = checkFlags(opts.flags ?? 0, WAIT_ALL | SUBMIT_OR_AVAILABLE | DEADLINE, 'wait');
  const d = domain();
  const slots = new Array<number>(objs.length);
  for (let i = 0; i < objs.length; i++) {
    const o: unknown = objs[i];
    if (!(o instanceof DrmSyncobj))
      throw new DmaBufError('EINVAL', 'wait takes DrmSyncobj handles');
    o._check();
    slots[i] = o._slot;
  }
  const points = toPoints(opts.points, objs.length);
  let ms: number;
  if (opts.timeoutNs !== undefined) ms = absToMs(toTimeoutNs(opts.timeoutNs));
  else {
    ms = opts.timeout ?? Number.POSITIVE_INFINITY;
    if (typeof ms !== 'number' || Number.isNaN(ms) || ms < 0) {
      throw new DmaBufError('EINVAL', 'timeout must be a number of ms >= 0');
    }
  }
  setup.d = d;
  setup.points = points;
  setup.flags = flags;
  setup.ms = ms;
  setup.dl = flags & DEADLINE ? toTimeoutNs(opts.deadlineNs ?? 0n) : undefined;
  return slots;
}

/** @internal The waits on slots the caller holds references on. */
function waitSlotsSync(
  d: Domain,
  slots: number[],
  points: readonly bigint[],
  flags: number,
  ms: number,
  dl: bigint | undefined,
): number {
  if (flags & SUBMIT_OR_AVAILABLE || ms > 0) mightSleep('drm_syncobj_wait');
  if (slots.length === 1 && ms > 0 && dl === undefined && (flags & AVAILABLE) === 0) {
    const r = waitOneSync(d, slots[0]!, points[0]!, ms);
    if (r !== MISSING) return r;
  }
  const w = takeWait(d, slots, points, flags);
  try {
    return w.runSync(ms, dl);
  } finally {
    giveWait(w);
  }
}

/**
 * The common case of a wait (one syncobj, its point already submitted, no deadline) without
 * the general machinery: wait on the point's fence through the spinning waiter, like a plain
 * fence wait. For a timeline point (a chain node) completion is polled, as
 * `dma_fence_chain_signaled` does: the point is done once its fence and every earlier point's
 * fence have signalled, even before the signalling thread has run the deferred work that marks
 * the node itself. Returns 0 (the index) when signalled, MISSING to fall back to the general
 * path (point not submitted yet).
 *
 * @throws {DmaBufError} ETIME on timeout.
 */
function waitOneSync(d: Domain, so: number, point: bigint, ms: number): number {
  const f = lookup(d, so, point);
  if (f === MISSING) return MISSING;
  try {
    const gen = d.gen(f);
    enableSlot(d, f, gen);
    if (!waitUntil(fenceWaitTarget(d, f), () => signaledQuick(d, f), ms)) throw etime();
    return 0;
  } finally {
    putFence(f);
  }
}

async function waitSlotsAsync(
  d: Domain,
  slots: number[],
  points: readonly bigint[],
  flags: number,
  ms: number,
  dl: bigint | undefined,
  signal: AbortSignal | undefined,
): Promise<number> {
  const w = takeWait(d, slots, points, flags);
  try {
    return await w.runAsync(ms, dl, signal);
  } finally {
    giveWait(w);
  }
}

/**
 * `drm_syncobj_find_fence` on a syncobj slot the caller holds: the fence for `point` with a
 * reference, waiting up to 5 s for it to appear with WAIT_FOR_SUBMIT.
 */
function findFenceSync(d: Domain, so: number, point: bigint, flags: number): number {
  const f = lookup(d, so, point);
  if (f !== MISSING) return f;
  if ((flags & FOR_SUBMIT) === 0) {
    throw new DmaBufError('EINVAL', `no fence for point ${point} (not submitted)`);
  }
  mightSleep('drm_syncobj_find_fence');
  const w = takeWait(d, [so], [point], AVAILABLE | FOR_SUBMIT);
  try {
    w.keepFirst = true;
    w.runSync(SYNCOBJ_WAIT_FOR_SUBMIT_TIMEOUT_MS, undefined);
    return w.fences[0]!;
  } finally {
    giveWait(w);
  }
}

async function findFenceAsync(
  d: Domain,
  so: number,
  point: bigint,
  flags: number,
  signal?: AbortSignal,
): Promise<number> {
  const f = lookup(d, so, point);
  if (f !== MISSING) return f;
  if ((flags & FOR_SUBMIT) === 0) {
    throw new DmaBufError('EINVAL', `no fence for point ${point} (not submitted)`);
  }
  const w = takeWait(d, [so], [point], AVAILABLE | FOR_SUBMIT);
  try {
    w.keepFirst = true;
    await w.runAsync(SYNCOBJ_WAIT_FOR_SUBMIT_TIMEOUT_MS, undefined, signal);
    return w.fences[0]!;
  } finally {
    giveWait(w);
  }
}

// ---- eventfd -----------------------------------------------------------------------------------------

const EVENTFD_TOKEN: unique symbol = Symbol('syncobj-eventfd');

/**
 * A registration made by `eventfd()` (the DRM_IOCTL_SYNCOBJ_EVENTFD equivalent): fires once,
 * in the registering thread, when the point becomes available (WAIT_AVAILABLE) or its fence
 * signals. A syncobj released before that frees it without firing, as the kernel does; the
 * promise then stays pending.
 */
export class SyncobjEventfd {
  /** Resolves when the registration fires. */
  readonly promise: Promise<void>;
  #fired = false;
  #done = false;
  #cancelled = false;
  #resolve!: () => void;
  readonly #cb: (() => void) | undefined;
  readonly #d: Domain;
  #node: number;
  readonly #so: number;
  readonly #soGen: number;
  readonly #flags: number;
  #fence: DmaFence | undefined;
  #fenceCb: DmaFenceCb | undefined;

  /** @internal Made by `DrmSyncobj.eventfd` / `DrmFile.eventfd`. */
  constructor(
    token: typeof EVENTFD_TOKEN,
    d: Domain,
    so: number,
    point: bigint,
    flags: number,
    cb: (() => void) | undefined,
  ) {
    if (token !== EVENTFD_TOKEN) throw new DmaBufError('EINVAL', 'use DrmSyncobj.eventfd()');
    this.#d = d;
    this.#so = so;
    this.#soGen = d.gen(so);
    this.#flags = flags;
    this.#cb = cb;
    this.promise = new Promise<void>((r) => {
      this.#resolve = r;
    });
    const n = allocNode(d, point, MODE_ALWAYS, 0);
    const nb = d.base(n);
    Atomics.store(d.i32, nb + N_FLAGS, flags);
    Atomics.store(d.i32, nb + N_SYNCOBJ, so);
    Atomics.store(d.i32, nb + N_SYNCOBJ_GEN, this.#soGen);
    this.#node = n;
    lockSyncobj(d, so);
    try {
      linkNode(d, so, S_EV_HEAD, n);
      // Evaluated at once, under the lock, as the kernel does on registration.
      runOne(d, so, n);
    } finally {
      unlockSyncobj(d, so);
    }
    void this.#watch();
  }

  /** True once it fired. */
  get fired(): boolean {
    return this.#fired;
  }

  /** True once it can no longer fire (fired, cancelled, or its syncobj was released). */
  get done(): boolean {
    return this.#done;
  }

  async #watch(): Promise<void> {
    const d = this.#d;
    const n = this.#node;
    const nb = d.base(n);
    const target: WaitTarget = { region: d.region, index: nb + N_STATE, sleepers: -1 };
    await waitUntilAsync(target, () => nodeState(d, n) !== PENDING, Number.POSITIVE_INFINITY);
    const state = nodeState(d, n);
    const f = state === RESOLVED ? d.ld(n, N_FENCE) - 1 : -1;
    d.free(n);
    this.#node = -1;
    if (f < 0 || this.#cancelled) {
      if (f >= 0) putFence(f);
      this.#done = true;
      return;
    }
    if (this.#flags & AVAILABLE) {
      putFence(f);
      this.#fire();
      return;
    }
    const fence = wrapFence(f, d.gen(f), true);
    try {
      this.#fenceCb = fence.addCallback(() => {
        this.#dropFence();
        this.#fire();
      });
      this.#fence = fence;
    } catch (e) {
      fence.dispose();
      if (!(e instanceof DmaBufError && e.code === 'ENOENT')) throw e;
      this.#fire();
    }
  }

  #dropFence(): void {
    const f = this.#fence;
    this.#fence = undefined;
    if (f) {
      if (this.#fenceCb) f.removeCallback(this.#fenceCb);
      f.dispose();
    }
    this.#fenceCb = undefined;
  }

  #fire(): void {
    if (this.#done) return;
    this.#done = true;
    this.#fired = true;
    // Never inside a signal or under a syncobj lock: the callback may use syncobjs freely. The
    // promise resolves after it ran.
    const cb = this.#cb;
    queueMicrotask(() => {
      try {
        cb?.();
      } finally {
        this.#resolve();
      }
    });
  }

  /** Withdraws the registration (closing the eventfd); it will not fire. Idempotent. */
  cancel(): void {
    if (this.#done || this.#cancelled) return;
    this.#cancelled = true;
    this.#done = true;
    const d = this.#d;
    const n = this.#node;
    if (n >= 0 && nodeState(d, n) === PENDING) {
      if (d.tryGet(this.#so, this.#soGen, RecordType.DRM_SYNCOBJ)) {
        try {
          lockSyncobj(d, this.#so);
          try {
            if (nodeState(d, n) === PENDING) {
              unlinkNode(d, this.#so, S_EV_HEAD, n);
              settleNode(d, n, -1);
            }
          } finally {
            unlockSyncobj(d, this.#so);
          }
        } finally {
          putSyncobj(this.#so);
        }
      }
      // Otherwise the syncobj is being released, which cancels the node itself.
    }
    this.#dropFence();
  }
}

/** Resolves one registered node if its point exists (lock held). */
function runOne(d: Domain, so: number, n: number): void {
  const head = d.ld(so, S_FENCE) - 1;
  if (head < 0) return;
  d.get(head);
  const found = findPoint(d, head, nodePoint(d, n));
  if (found === MISSING) return;
  unlinkNode(d, so, S_EV_HEAD, n);
  settleNode(d, n, found);
}

// ---- the shared object ------------------------------------------------------------------------------

function putSyncobj(slot: number): void {
  const d = domain();
  if (!d.put(slot)) return;
  // drm_syncobj_free: drop the fence (no waiter is satisfied by that), then free the pending
  // eventfd registrations without firing them.
  replaceFenceSlot(d, slot, -1);
  lockSyncobj(d, slot);
  try {
    for (;;) {
      const head = d.ld(slot, S_EV_HEAD);
      if (head === 0) break;
      const n = head - 1;
      d.st(slot, S_EV_HEAD, d.ld(n, N_NEXT));
      d.st(n, N_NEXT, 0);
      settleNode(d, n, -1);
    }
  } finally {
    unlockSyncobj(d, slot);
  }
  d.free(slot);
}

const syncobjKind = new HandleKind('drm-syncobj', RecordType.DRM_SYNCOBJ, putSyncobj);

const TOKEN: unique symbol = Symbol('drm-syncobj');

function checkFenceArg(f: unknown, what: string): DmaFence {
  if (!(f instanceof DmaFence)) throw new DmaBufError('EINVAL', `${what} must be a DmaFence`);
  f._check();
  return f;
}

/**
 * A handle to a syncobj. Holding one is holding a syncobj fd: `share()` it and
 * `DrmSyncobj.import(msg)` in another thread gives the same live object.
 *
 * @example
 * ```ts
 * import { DrmSyncobj, DRM_SYNCOBJ_WAIT_FLAGS_WAIT_FOR_SUBMIT } from 'dmabuf';
 * using tl = DrmSyncobj.create();
 * worker.postMessage(tl.share()); // the worker calls timelineSignal(1n) later
 * await DrmSyncobj.wait([tl], { points: [1n], flags: DRM_SYNCOBJ_WAIT_FLAGS_WAIT_FOR_SUBMIT });
 * ```
 */
export class DrmSyncobj extends SharedObject {
  /** @internal */
  constructor(token: typeof TOKEN, slot: number, gen: number) {
    if (token !== TOKEN) throw new DmaBufError('EINVAL', 'use DrmSyncobj.create()');
    super(slot, gen, true);
  }

  /** @internal */
  override _kind(): HandleKind {
    return syncobjKind;
  }

  /**
   * `drm_syncobj_create`: an empty syncobj, or with DRM_SYNCOBJ_CREATE_SIGNALED one holding a new
   * signalled stub fence; `fence`, when given, is installed after that.
   *
   * @throws {DmaBufError} EINVAL for flags other than DRM_SYNCOBJ_CREATE_SIGNALED or a `fence`
   *   that is not a fence handle; ENOMEM when the shared region is full.
   */
  static create(flags = 0, fence?: DmaFence | null): DrmSyncobj {
    checkFlags(flags, DRM_SYNCOBJ_CREATE_SIGNALED, 'create');
    if (fence !== undefined && fence !== null) checkFenceArg(fence, 'fence');
    const d = domain();
    const slot = d.alloc(RecordType.DRM_SYNCOBJ);
    const obj = new DrmSyncobj(TOKEN, slot, d.gen(slot));
    try {
      if (flags & DRM_SYNCOBJ_CREATE_SIGNALED) obj.signal();
      if (fence) obj.replaceFence(fence);
    } catch (e) {
      obj.dispose();
      throw e;
    }
    return obj;
  }

  /**
   * Adopts a syncobj handed over by another thread (the syncobj fd); the same live object.
   *
   * @throws {DmaBufError} EINVAL for a message that is not a syncobj; EBADF when it was already
   *   imported; EXDEV for one of another domain.
   */
  static import(msg: SharedMessage): DrmSyncobj {
    const d = claim(msg, syncobjKind);
    return new DrmSyncobj(TOKEN, msg.slot, d.gen(msg.slot));
  }

  /**
   * Gives back the reference held by a message that will never be imported.
   *
   * @throws {DmaBufError} EBADF when it was already imported or released.
   */
  static override releaseShared(msg: SharedMessage): void {
    SharedObject.releaseShared(msg, syncobjKind);
  }

  /**
   * Waits on several syncobjs at once (DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT on objects). Resolves
   * `first_signaled`: the first satisfied index, or with WAIT_ALL the first one already
   * satisfied before waiting ({@linkcode SYNCOBJ_NO_INDEX} if none).
   *
   * @throws {DmaBufError} EINVAL for unknown flags, bad points, or a missing fence without
   *   WAIT_FOR_SUBMIT / WAIT_AVAILABLE; ETIME on timeout; ERESTARTSYS when `signal` aborts;
   *   EBADF for a disposed handle.
   */
  static async wait(objs: readonly DrmSyncobj[], opts: SyncobjWaitOptions = {}): Promise<number> {
    const slots = waitSetup(objs, opts);
    const { d, points, flags, ms, dl } = setup;
    if (slots.length === 0) return SYNCOBJ_NO_INDEX;
    for (const s of slots) d.get(s);
    try {
      return await waitSlotsAsync(d, slots, points, flags, ms, dl, opts.signal);
    } finally {
      for (const s of slots) putSyncobj(s);
    }
  }

  /**
   * The blocking form of {@linkcode DrmSyncobj.wait} (an already aborted `signal` gives
   * ERESTARTSYS; a blocked thread cannot see a later abort).
   */
  static waitSync(objs: readonly DrmSyncobj[], opts: SyncobjWaitOptions = {}): number {
    const slots = waitSetup(objs, opts);
    const { d, points, flags, ms, dl } = setup;
    if (opts.signal?.aborted) {
      throw new DmaBufError('ERESTARTSYS', 'wait interrupted by AbortSignal', {
        cause: opts.signal.reason,
      });
    }
    if (slots.length === 0) return SYNCOBJ_NO_INDEX;
    for (const s of slots) d.get(s);
    try {
      return waitSlotsSync(d, slots, points, flags, ms, dl);
    } finally {
      for (const s of slots) putSyncobj(s);
    }
  }

  /** A second handle to the same syncobj (another fd on it). */
  get(): DrmSyncobj {
    const d = this._check();
    d.get(this._slot);
    return new DrmSyncobj(TOKEN, this._slot, this._gen);
  }

  /** Bumped on every change of the fence pointer. */
  get changes(): number {
    const d = this._check();
    return d.ld(this._slot, S_SEQ);
  }

  /** `drm_syncobj_fence_get`: the current fence as a new handle, or null when empty. */
  fence(): DmaFence | null {
    const d = this._check();
    const f = fenceGet(d, this._slot);
    return f < 0 ? null : wrapFence(f, d.gen(f), true);
  }

  /**
   * `drm_syncobj_replace_fence`: installs `fence` (null empties the syncobj). Entries waiting
   * for a fence capture it now.
   *
   * @throws {DmaBufError} EINVAL when `fence` is not a fence handle.
   */
  replaceFence(fence: DmaFence | null): void {
    const d = this._check();
    if (fence === null) replaceFenceSlot(d, this._slot, -1);
    else replaceFenceSlot(d, this._slot, checkFenceArg(fence, 'fence')._slot);
  }

  /**
   * `drm_syncobj_add_point`: a new timeline point `point` containing `fence`, chained after the
   * current fence. A point not above the newest is accepted (see the module comment).
   *
   * @throws {DmaBufError} EINVAL when `fence` is not a fence handle or is a chain node, or
   *   `point` is not in [0, 2^64).
   */
  addPoint(fence: DmaFence, point: bigint | number): void {
    const d = this._check();
    const p = toPoint(point, 'point');
    const f = checkFenceArg(fence, 'fence')._slot;
    if (isChainSlot(d, f)) {
      throw new DmaBufError('EINVAL', 'a chain node cannot be the fence of a timeline point');
    }
    addPointSlot(d, this._slot, f, p);
  }

  /** DRM_IOCTL_SYNCOBJ_SIGNAL on this syncobj: installs a new signalled stub (drops a timeline). */
  signal(): void {
    const stub = DmaFence.allocatePrivateStub();
    try {
      this.replaceFence(stub);
    } finally {
      stub.dispose();
    }
  }

  /** DRM_IOCTL_SYNCOBJ_RESET on this syncobj: empties it. */
  reset(): void {
    this.replaceFence(null);
  }

  /** DRM_IOCTL_SYNCOBJ_TIMELINE_SIGNAL on this syncobj: a point wrapping the signalled stub. */
  timelineSignal(point: bigint | number): void {
    const d = this._check();
    addPointSlot(d, this._slot, stubSlot(), toPoint(point, 'point'));
  }

  /**
   * DRM_IOCTL_SYNCOBJ_QUERY on this syncobj: the highest point known signalled (0 when the fence
   * is not a chain node); with DRM_SYNCOBJ_QUERY_FLAGS_LAST_SUBMITTED the newest point.
   *
   * @throws {DmaBufError} EINVAL for other flags.
   */
  query(flags = 0): bigint {
    const d = this._check();
    checkFlags(flags, DRM_SYNCOBJ_QUERY_FLAGS_LAST_SUBMITTED, 'query');
    return querySlot(d, this._slot, flags !== 0);
  }

  /**
   * `drm_syncobj_find_fence`: the fence for `point` as a new handle. With
   * DRM_SYNCOBJ_WAIT_FLAGS_WAIT_FOR_SUBMIT it blocks up to 5 s for the point to appear.
   *
   * @throws {DmaBufError} EINVAL for other flags or a missing point (without WAIT_FOR_SUBMIT);
   *   ETIME when it did not appear in time.
   */
  findFence(point: bigint | number = 0n, flags = 0): DmaFence {
    const d = this._check();
    checkFlags(flags, FOR_SUBMIT, 'find_fence');
    const f = findFenceSync(d, this._slot, toPoint(point, 'point'), flags);
    return wrapFence(f, d.gen(f), true);
  }

  /** The non-blocking form of {@linkcode DrmSyncobj.findFence}. */
  async findFenceAsync(
    point: bigint | number = 0n,
    flags = 0,
    signal?: AbortSignal,
  ): Promise<DmaFence> {
    const d = this._check();
    checkFlags(flags, FOR_SUBMIT, 'find_fence');
    const p = toPoint(point, 'point');
    d.get(this._slot);
    try {
      const f = await findFenceAsync(d, this._slot, p, flags, signal);
      return wrapFence(f, d.gen(f), true);
    } finally {
      putSyncobj(this._slot);
    }
  }

  /**
   * Exports the fence for `point` as it is now (a snapshot) as a sync file.
   *
   * @throws {DmaBufError} EINVAL when the syncobj has no fence for `point`.
   */
  exportSyncFile(point: bigint | number = 0n): SyncFile {
    const f = this.findFence(point, 0);
    try {
      return SyncFile.create(f);
    } finally {
      f.dispose();
    }
  }

  /**
   * Imports the fence of `file`: at `point` > 0 as a new timeline point, else replacing the
   * fence.
   *
   * @throws {DmaBufError} EINVAL when `file` is not a sync file.
   */
  importSyncFile(file: SyncFile, point: bigint | number = 0n): void {
    this._check();
    const p = toPoint(point, 'point');
    const f = syncFileGetFence(file);
    if (!f) throw new DmaBufError('EINVAL', 'not a sync file');
    try {
      if (p !== 0n) this.addPoint(f, p);
      else this.replaceFence(f);
    } finally {
      f.dispose();
    }
  }

  /**
   * Registers a one-shot notification (DRM_IOCTL_SYNCOBJ_EVENTFD): `callback` runs and the
   * returned registration's promise resolves, in this thread, when `point` becomes available
   * (with DRM_SYNCOBJ_WAIT_FLAGS_WAIT_AVAILABLE) or its fence signals. It is evaluated now and
   * on every change of the syncobj, and binds to the fence present when the point appears.
   *
   * @throws {DmaBufError} EINVAL for flags other than WAIT_AVAILABLE or a bad point.
   */
  eventfd(point: bigint | number, flags = 0, callback?: () => void): SyncobjEventfd {
    const d = this._check();
    checkFlags(flags, AVAILABLE, 'eventfd');
    const p = toPoint(point, 'point');
    if (callback !== undefined && typeof callback !== 'function') {
      throw new DmaBufError('EINVAL', 'callback must be a function');
    }
    return new SyncobjEventfd(EVENTFD_TOKEN, d, this._slot, p, flags, callback);
  }
}

// ---- the DRM file: per-client handles and the ioctls --------------------------------------------

/** Which syncobj features the modelled driver has (DRIVER_SYNCOBJ, DRIVER_SYNCOBJ_TIMELINE). */
export interface DrmFileOptions {
  /** DRIVER_SYNCOBJ (default true). */
  syncobj?: boolean;
  /** DRIVER_SYNCOBJ_TIMELINE (default true). */
  timeline?: boolean;
}

/** The in-fields of `struct drm_syncobj_transfer`. */
export interface SyncobjTransfer {
  srcHandle: number;
  dstHandle: number;
  srcPoint?: bigint | number;
  dstPoint?: bigint | number;
  flags?: number;
  pad?: number;
}

/** Options of the wait ioctls besides the uapi arguments. */
export interface DrmWaitOptions {
  /** With WAIT_DEADLINE: `deadline_nsec`. */
  deadlineNs?: bigint;
  /** Stands for a pending signal: aborting gives ERESTARTSYS. */
  signal?: AbortSignal;
}

/**
 * A DRM file's syncobj side: a table of per-client handles (u32, allocated from 1, lowest free
 * first; 0 is never valid), each owning one reference on its syncobj, and the syncobj ioctls
 * with the kernel's checks in the kernel's order. Closing the file drops every handle.
 *
 * The table belongs to the thread that made it (a DRM fd used by one thread); syncobjs move
 * between threads as syncobj fds: `handleToFd(h)` gives a {@linkcode DrmSyncobj} handle, which
 * is `share()`d, imported there, and turned into a handle of that thread's file with
 * `fdToHandle(obj)`. Every import makes a new handle.
 *
 * Errno notes (copied from the kernel on purpose): an unknown handle is EINVAL in `destroy` and
 * in `handleToFd` without EXPORT_SYNC_FILE, ENOENT everywhere else; no handles is EINVAL for
 * reset, signal, timeline signal and query, but success for the two waits; a feature the driver
 * lacks is EOPNOTSUPP before any other check.
 */
export class DrmFile implements Disposable {
  readonly #table = new Map<number, DrmSyncobj>();
  readonly #free: number[] = [];
  #next = 1;
  #closed = false;
  readonly #syncobj: boolean;
  readonly #timeline: boolean;

  constructor(opts: DrmFileOptions = {}) {
    this.#syncobj = opts.syncobj ?? true;
    this.#timeline = opts.timeline ?? true;
  }

  #open(timeline: boolean): void {
    if (this.#closed) throw new DmaBufError('EBADF', 'DRM file is closed');
    if (!this.#syncobj || (timeline && !this.#timeline)) {
      throw new DmaBufError('EOPNOTSUPP', 'the driver lacks this syncobj feature');
    }
  }

  /** DRM_IOCTL_GET_CAP for DRM_CAP_SYNCOBJ / DRM_CAP_SYNCOBJ_TIMELINE (1 or 0). */
  getCap(cap: number): number {
    if (this.#closed) throw new DmaBufError('EBADF', 'DRM file is closed');
    if (cap === DRM_CAP_SYNCOBJ) return this.#syncobj ? 1 : 0;
    if (cap === DRM_CAP_SYNCOBJ_TIMELINE) return this.#timeline ? 1 : 0;
    throw new DmaBufError('EINVAL', `unknown capability ${cap}`);
  }

  /** Number of live handles. */
  get handleCount(): number {
    return this.#table.size;
  }

  #install(obj: DrmSyncobj): number {
    let h: number;
    if (this.#free.length > 0) h = this.#free.shift()!;
    else h = this.#next++;
    this.#table.set(h, obj);
    return h;
  }

  #release(h: number): void {
    // Keep the free list sorted: the lowest free handle is reused first.
    let i = 0;
    while (i < this.#free.length && this.#free[i]! < h) i++;
    this.#free.splice(i, 0, h);
  }

  /** The object of `handle`, or undefined. */
  #get(handle: unknown): DrmSyncobj | undefined {
    if (typeof handle !== 'number' || !Number.isInteger(handle) || handle < 0 || handle > U32_MAX) {
      return undefined;
    }
    return this.#table.get(handle);
  }

  /** `drm_syncobj_array_find`: slots with a reference each (ENOENT for an unknown handle). */
  #findAll(handles: readonly unknown[], count: number): number[] {
    const objs: DrmSyncobj[] = [];
    for (let i = 0; i < count; i++) {
      const o = this.#get(handles[i]);
      if (!o) throw new DmaBufError('ENOENT', `no syncobj handle ${String(handles[i])}`);
      objs.push(o);
    }
    const d = domain();
    return objs.map((o) => {
      d.get(o._slot);
      return o._slot;
    });
  }

  #count(handles: unknown): readonly unknown[] {
    if (!Array.isArray(handles)) throw new DmaBufError('EFAULT', 'handles must be an array');
    return handles;
  }

  /**
   * `drm_syncobj_find`: a new handle object on the syncobj of `handle`.
   *
   * @throws {DmaBufError} ENOENT for an unknown handle.
   */
  find(handle: number): DrmSyncobj {
    if (this.#closed) throw new DmaBufError('EBADF', 'DRM file is closed');
    const o = this.#get(handle);
    if (!o) throw new DmaBufError('ENOENT', `no syncobj handle ${handle}`);
    return o.get();
  }

  /** `drm_syncobj_get_handle`: a new handle for `obj` in this file (its own reference). */
  getHandle(obj: DrmSyncobj): number {
    if (this.#closed) throw new DmaBufError('EBADF', 'DRM file is closed');
    if (!(obj instanceof DrmSyncobj)) throw new DmaBufError('EINVAL', 'not a syncobj');
    return this.#install(obj.get());
  }

  /**
   * DRM_IOCTL_SYNCOBJ_CREATE: a new handle.
   *
   * @throws {DmaBufError} EINVAL for flags other than DRM_SYNCOBJ_CREATE_SIGNALED.
   */
  create(flags = 0): number {
    this.#open(false);
    checkFlags(flags, DRM_SYNCOBJ_CREATE_SIGNALED, 'create');
    return this.#install(DrmSyncobj.create(flags));
  }

  /**
   * DRM_IOCTL_SYNCOBJ_DESTROY: drops the handle (and its reference only).
   *
   * @throws {DmaBufError} EINVAL for a non-zero pad or an unknown handle.
   */
  destroy(handle: number, pad = 0): void {
    this.#open(false);
    checkPad(pad);
    const o = this.#get(handle);
    if (!o) throw new DmaBufError('EINVAL', `no syncobj handle ${String(handle)}`);
    this.#table.delete(handle);
    this.#release(handle);
    o.dispose();
  }

  /**
   * DRM_IOCTL_SYNCOBJ_HANDLE_TO_FD. With DRM_SYNCOBJ_HANDLE_TO_FD_FLAGS_EXPORT_SYNC_FILE a
   * {@linkcode SyncFile} of the fence at `point` (used only with the TIMELINE flag), as it is
   * now; otherwise a {@linkcode DrmSyncobj} handle (the syncobj fd), for which `point` must be 0.
   *
   * @throws {DmaBufError} EINVAL for a non-zero pad, unknown flags, a point without export, an
   *   unknown handle (without export), a missing fence (export); ENOENT for an unknown handle
   *   (export).
   */
  handleToFd(
    handle: number,
    flags = 0,
    point: bigint | number = 0n,
    pad = 0,
  ): DrmSyncobj | SyncFile {
    this.#open(false);
    checkPad(pad);
    checkFlags(
      flags,
      DRM_SYNCOBJ_HANDLE_TO_FD_FLAGS_TIMELINE | DRM_SYNCOBJ_HANDLE_TO_FD_FLAGS_EXPORT_SYNC_FILE,
      'handle_to_fd',
    );
    const p = flags & DRM_SYNCOBJ_HANDLE_TO_FD_FLAGS_TIMELINE ? toPoint(point, 'point') : 0n;
    if (flags & DRM_SYNCOBJ_HANDLE_TO_FD_FLAGS_EXPORT_SYNC_FILE) {
      const o = this.#get(handle);
      if (!o) throw new DmaBufError('ENOENT', `no syncobj handle ${String(handle)}`);
      return o.exportSyncFile(p);
    }
    if (p !== 0n) throw new DmaBufError('EINVAL', 'a point needs EXPORT_SYNC_FILE');
    const o = this.#get(handle);
    if (!o) throw new DmaBufError('EINVAL', `no syncobj handle ${String(handle)}`);
    return o.get();
  }

  /** HANDLE_TO_FD with EXPORT_SYNC_FILE (and TIMELINE when `point` > 0), typed. */
  exportSyncFile(handle: number, point: bigint | number = 0n): SyncFile {
    const p = toPoint(point, 'point');
    const flags =
      DRM_SYNCOBJ_HANDLE_TO_FD_FLAGS_EXPORT_SYNC_FILE |
      (p !== 0n ? DRM_SYNCOBJ_HANDLE_TO_FD_FLAGS_TIMELINE : 0);
    return this.handleToFd(handle, flags, p) as SyncFile;
  }

  /** HANDLE_TO_FD without flags, typed: the syncobj fd. */
  handleToSyncobj(handle: number): DrmSyncobj {
    return this.handleToFd(handle, 0) as DrmSyncobj;
  }

  /**
   * DRM_IOCTL_SYNCOBJ_FD_TO_HANDLE. With DRM_SYNCOBJ_FD_TO_HANDLE_FLAGS_IMPORT_SYNC_FILE, `fd` is
   * a {@linkcode SyncFile} whose fence goes into the existing `handle` (as a timeline point when
   * TIMELINE and `point` > 0, else replacing its fence), and `handle` is returned; otherwise `fd`
   * is a syncobj fd ({@linkcode DrmSyncobj}) and a new handle is returned (every import a new
   * one), with `point` 0.
   *
   * @throws {DmaBufError} EINVAL for a non-zero pad, unknown flags, a point without import, or an
   *   `fd` of the wrong type; ENOENT for an unknown `handle` (import); EBADF for a disposed `fd`.
   */
  fdToHandle(fd: unknown, flags = 0, handle = 0, point: bigint | number = 0n, pad = 0): number {
    this.#open(false);
    checkPad(pad);
    checkFlags(
      flags,
      DRM_SYNCOBJ_FD_TO_HANDLE_FLAGS_TIMELINE | DRM_SYNCOBJ_FD_TO_HANDLE_FLAGS_IMPORT_SYNC_FILE,
      'fd_to_handle',
    );
    const p = flags & DRM_SYNCOBJ_FD_TO_HANDLE_FLAGS_TIMELINE ? toPoint(point, 'point') : 0n;
    if (flags & DRM_SYNCOBJ_FD_TO_HANDLE_FLAGS_IMPORT_SYNC_FILE) {
      const fence = syncFileGetFence(fd);
      if (!fence) throw new DmaBufError('EINVAL', 'not a sync file');
      try {
        const o = this.#get(handle);
        if (!o) throw new DmaBufError('ENOENT', `no syncobj handle ${String(handle)}`);
        if (p !== 0n) o.addPoint(fence, p);
        else o.replaceFence(fence);
        return handle;
      } finally {
        fence.dispose();
      }
    }
    if (p !== 0n) throw new DmaBufError('EINVAL', 'a point needs IMPORT_SYNC_FILE');
    if (!(fd instanceof DrmSyncobj)) throw new DmaBufError('EINVAL', 'not a syncobj fd');
    return this.#install(fd.get());
  }

  /** FD_TO_HANDLE with IMPORT_SYNC_FILE (and TIMELINE when `point` > 0), typed. */
  importSyncFile(handle: number, file: SyncFile, point: bigint | number = 0n): void {
    const p = toPoint(point, 'point');
    const flags =
      DRM_SYNCOBJ_FD_TO_HANDLE_FLAGS_IMPORT_SYNC_FILE |
      (p !== 0n ? DRM_SYNCOBJ_FD_TO_HANDLE_FLAGS_TIMELINE : 0);
    this.fdToHandle(file, flags, handle, p);
  }

  #waitArgs(
    timeline: boolean,
    handles: unknown,
    points: unknown,
    timeoutNs: unknown,
    flags: unknown,
    opts: DrmWaitOptions,
  ): {
    d: Domain;
    slots: number[];
    pts: readonly bigint[];
    fl: number;
    ms: number;
    dl: bigint | undefined;
  } | null {
    this.#open(timeline);
    const allowed = WAIT_ALL | FOR_SUBMIT | DEADLINE | (timeline ? AVAILABLE : 0);
    const fl = checkFlags(flags, allowed, timeline ? 'timeline_wait' : 'wait');
    const hs = this.#count(handles);
    if (hs.length === 0) return null;
    const tns = toTimeoutNs(timeoutNs);
    const slots = this.#findAll(hs, hs.length);
    try {
      const pts = timeline ? toPoints(points, hs.length) : new Array<bigint>(hs.length).fill(0n);
      const dl = fl & DEADLINE ? toTimeoutNs(opts.deadlineNs ?? 0n) : undefined;
      return { d: domain(), slots, pts, fl, ms: absToMs(tns), dl };
    } catch (e) {
      for (const s of slots) putSyncobj(s);
      throw e;
    }
  }

  /**
   * DRM_IOCTL_SYNCOBJ_WAIT (binary: point 0 for every handle). Resolves `first_signaled`
   * ({@linkcode SYNCOBJ_NO_INDEX} for no handles).
   *
   * @param timeoutNs absolute CLOCK_MONOTONIC ns (s64); 0 or past polls once.
   * @throws {DmaBufError} EINVAL for flags beyond WAIT_ALL | WAIT_FOR_SUBMIT | WAIT_DEADLINE or
   *   an empty syncobj without WAIT_FOR_SUBMIT; ENOENT for an unknown handle; ETIME on timeout;
   *   ERESTARTSYS when `opts.signal` aborts.
   */
  async wait(
    handles: readonly number[],
    timeoutNs: bigint,
    flags = 0,
    opts: DrmWaitOptions = {},
  ): Promise<number> {
    return this.#runAsync(false, handles, null, timeoutNs, flags, opts);
  }

  /** The blocking form of {@linkcode DrmFile.wait}. */
  waitSync(
    handles: readonly number[],
    timeoutNs: bigint,
    flags = 0,
    opts: DrmWaitOptions = {},
  ): number {
    return this.#runSync(false, handles, null, timeoutNs, flags, opts);
  }

  /**
   * DRM_IOCTL_SYNCOBJ_TIMELINE_WAIT. `points` null means all 0. Resolves `first_signaled`.
   *
   * @throws {DmaBufError} as {@linkcode DrmFile.wait}, WAIT_AVAILABLE allowed;
   *   EOPNOTSUPP without the timeline feature.
   */
  async timelineWait(
    handles: readonly number[],
    points: readonly (bigint | number)[] | null,
    timeoutNs: bigint,
    flags = 0,
    opts: DrmWaitOptions = {},
  ): Promise<number> {
    return this.#runAsync(true, handles, points, timeoutNs, flags, opts);
  }

  /** The blocking form of {@linkcode DrmFile.timelineWait}. */
  timelineWaitSync(
    handles: readonly number[],
    points: readonly (bigint | number)[] | null,
    timeoutNs: bigint,
    flags = 0,
    opts: DrmWaitOptions = {},
  ): number {
    return this.#runSync(true, handles, points, timeoutNs, flags, opts);
  }

  async #runAsync(
    timeline: boolean,
    handles: unknown,
    points: unknown,
    timeoutNs: unknown,
    flags: unknown,
    opts: DrmWaitOptions,
  ): Promise<number> {
    const a = this.#waitArgs(timeline, handles, points, timeoutNs, flags, opts);
    if (!a) return SYNCOBJ_NO_INDEX;
    try {
      return await waitSlotsAsync(a.d, a.slots, a.pts, a.fl, a.ms, a.dl, opts.signal);
    } finally {
      for (const s of a.slots) putSyncobj(s);
    }
  }

  #runSync(
    timeline: boolean,
    handles: unknown,
    points: unknown,
    timeoutNs: unknown,
    flags: unknown,
    opts: DrmWaitOptions,
  ): number {
    const a = this.#waitArgs(timeline, handles, points, timeoutNs, flags, opts);
    if (!a) return SYNCOBJ_NO_INDEX;
    try {
      if (opts.signal?.aborted) {
        throw new DmaBufError('ERESTARTSYS', 'wait interrupted by AbortSignal', {
          cause: opts.signal.reason,
        });
      }
      return waitSlotsSync(a.d, a.slots, a.pts, a.fl, a.ms, a.dl);
    } finally {
      for (const s of a.slots) putSyncobj(s);
    }
  }

  #each(handles: unknown, fn: (obj: DrmSyncobj, i: number) => void): void {
    const hs = this.#count(handles);
    if (hs.length === 0) throw new DmaBufError('EINVAL', 'no handles');
    const slots = this.#findAll(hs, hs.length);
    try {
      for (let i = 0; i < hs.length; i++) fn(this.#get(hs[i])!, i);
    } finally {
      for (const s of slots) putSyncobj(s);
    }
  }

  /**
   * DRM_IOCTL_SYNCOBJ_RESET: empties every syncobj (all handles are checked first).
   *
   * @throws {DmaBufError} EINVAL for a non-zero pad or no handles; ENOENT for an unknown one.
   */
  reset(handles: readonly number[], pad = 0): void {
    this.#open(false);
    checkPad(pad);
    this.#each(handles, (o) => o.reset());
  }

  /**
   * DRM_IOCTL_SYNCOBJ_SIGNAL: a new signalled stub in every syncobj (a timeline loses its
   * history).
   *
   * @throws {DmaBufError} EINVAL for a non-zero pad or no handles; ENOENT for an unknown one.
   */
  signal(handles: readonly number[], pad = 0): void {
    this.#open(false);
    checkPad(pad);
    this.#each(handles, (o) => o.signal());
  }

  /**
   * DRM_IOCTL_SYNCOBJ_TIMELINE_SIGNAL: adds point `points[i]` (null: all 0) wrapping the
   * signalled stub to each syncobj; point 0 is not special (the new node still waits for the
   * old fence).
   *
   * @throws {DmaBufError} EINVAL for non-zero flags, no handles or a bad point; ENOENT for an
   *   unknown handle; EFAULT for a points array shorter than the handles.
   */
  timelineSignal(
    handles: readonly number[],
    points: readonly (bigint | number)[] | null,
    flags = 0,
  ): void {
    this.#open(true);
    if (flags !== 0) throw new DmaBufError('EINVAL', 'timeline signal flags must be 0');
    const hs = this.#count(handles);
    if (hs.length === 0) throw new DmaBufError('EINVAL', 'no handles');
    const slots = this.#findAll(hs, hs.length);
    try {
      const pts = toPoints(points, hs.length);
      for (let i = 0; i < hs.length; i++) this.#get(hs[i])!.timelineSignal(pts[i]!);
    } finally {
      for (const s of slots) putSyncobj(s);
    }
  }

  /**
   * DRM_IOCTL_SYNCOBJ_QUERY: per handle the highest signalled point (or with
   * DRM_SYNCOBJ_QUERY_FLAGS_LAST_SUBMITTED the newest point).
   *
   * @throws {DmaBufError} EINVAL for other flags or no handles; ENOENT for an unknown handle.
   */
  query(handles: readonly number[], flags = 0): bigint[] {
    this.#open(true);
    checkFlags(flags, DRM_SYNCOBJ_QUERY_FLAGS_LAST_SUBMITTED, 'query');
    const out: bigint[] = [];
    this.#each(handles, (o) => {
      out.push(o.query(flags));
    });
    return out;
  }

  #transferArgs(args: SyncobjTransfer): {
    dst: DrmSyncobj;
    src: number;
    sp: bigint;
    dp: bigint;
    fl: number;
  } {
    this.#open(true);
    if (typeof args !== 'object' || args === null) throw new DmaBufError('EFAULT', 'no arguments');
    checkPad(args.pad ?? 0);
    const dp = toPoint(args.dstPoint ?? 0n, 'dst_point');
    const sp = toPoint(args.srcPoint ?? 0n, 'src_point');
    const dst = this.#get(args.dstHandle);
    if (!dst) throw new DmaBufError('ENOENT', `no syncobj handle ${String(args.dstHandle)}`);
    const fl = args.flags ?? 0;
    if (typeof fl !== 'number' || (fl & ~FOR_SUBMIT) !== 0) {
      throw new DmaBufError('EINVAL', 'transfer flags may only hold WAIT_FOR_SUBMIT');
    }
    const src = this.#get(args.srcHandle);
    if (!src) throw new DmaBufError('ENOENT', `no syncobj handle ${String(args.srcHandle)}`);
    return { dst, src: src._slot, sp, dp, fl };
  }

  #transferApply(dst: DrmSyncobj, fence: DmaFence, dp: bigint): void {
    if (dp !== 0n) {
      // To a timeline point: flattened first (signalled parts and their errors dropped).
      const merged = unwrapMerge(fence);
      try {
        dst.addPoint(merged, dp);
      } finally {
        merged.dispose();
      }
    } else {
      dst.replaceFence(fence);
    }
  }

  /**
   * DRM_IOCTL_SYNCOBJ_TRANSFER: the fence at (src, srcPoint) goes to (dst, dstPoint); point 0
   * means the binary fence on either side. May block up to 5 s with WAIT_FOR_SUBMIT.
   *
   * @throws {DmaBufError} EINVAL for a non-zero pad, flags beyond WAIT_FOR_SUBMIT, or a missing
   *   source point; ENOENT for an unknown handle; ETIME when the point did not appear in time.
   */
  transfer(args: SyncobjTransfer): void {
    const { dst, src, sp, dp, fl } = this.#transferArgs(args);
    const d = domain();
    d.get(src);
    let f: number;
    try {
      f = findFenceSync(d, src, sp, fl);
    } finally {
      putSyncobj(src);
    }
    const fence = wrapFence(f, d.gen(f), true);
    try {
      this.#transferApply(dst, fence, dp);
    } finally {
      fence.dispose();
    }
  }

  /** The non-blocking form of {@linkcode DrmFile.transfer}. */
  async transferAsync(args: SyncobjTransfer, signal?: AbortSignal): Promise<void> {
    const { dst, src, sp, dp, fl } = this.#transferArgs(args);
    const d = domain();
    const keep = dst.get();
    d.get(src);
    try {
      let f: number;
      try {
        f = await findFenceAsync(d, src, sp, fl, signal);
      } finally {
        putSyncobj(src);
      }
      const fence = wrapFence(f, d.gen(f), true);
      try {
        this.#transferApply(keep, fence, dp);
      } finally {
        fence.dispose();
      }
    } finally {
      keep.dispose();
    }
  }

  /**
   * DRM_IOCTL_SYNCOBJ_EVENTFD: see {@linkcode DrmSyncobj.eventfd}.
   *
   * @throws {DmaBufError} EOPNOTSUPP without the timeline feature (even for point 0); EINVAL
   *   for flags other than WAIT_AVAILABLE or a non-zero pad; ENOENT for an unknown handle.
   */
  eventfd(
    handle: number,
    point: bigint | number,
    flags = 0,
    callback?: () => void,
    pad = 0,
  ): SyncobjEventfd {
    this.#open(true);
    checkFlags(flags, AVAILABLE, 'eventfd');
    checkPad(pad);
    const o = this.#get(handle);
    if (!o) throw new DmaBufError('ENOENT', `no syncobj handle ${String(handle)}`);
    return o.eventfd(point, flags, callback);
  }

  /** Closes the file: every handle's reference is dropped. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const o of this.#table.values()) o.dispose();
    this.#table.clear();
  }

  /** Same as `close()`. */
  dispose(): void {
    this.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
