/**
 * sw_sync: software timelines that tests and users drive by hand (drivers/dma-buf/sw_sync.c,
 * sync_debug.c). A timeline replaces one open of the kernel's debugfs `sw_sync` file.
 *
 * A timeline has one fence context, a 32-bit value starting at 0 and a list of pending points
 * sorted by value. `createFence(v)` gives a sync file whose fence (driver "sw_sync", timeline
 * named after the timeline, seqno `v`) signals once the value reaches `v`; `inc(n)` adds `n` to
 * the value and signals every point it reached, in ascending order.
 *
 * Cross-thread model: the value, the pending list and the lock that guards both live in a
 * shared record, and each pending point is a plain fence record. Any thread that holds the
 * timeline (`share()` / `SwSyncTimeline.import(msg)`) may create points and increment it: the
 * incrementing thread signals the reached points itself, one by one under the timeline lock, so
 * the order holds whichever threads race. Waiters anywhere wake through the fences' own words;
 * callbacks registered in other threads run there (fence mailboxes); callbacks of the
 * incrementing thread run inside `inc()`.
 *
 * Kernel rules kept here:
 * - Reached means not later on 32 bits: `(int32)(seqno - value) <= 0`, so a point more than 2^31
 *   ahead of the value counts as reached and is signalled at creation.
 * - A point already reached is signalled at creation (timestamp now) and never listed; creating
 *   a pending value twice returns the same fence (so merges collapse them); the name passed to
 *   create is ignored.
 * - `inc(n)` for n above INT_MAX is applied in INT_MAX steps, then the rest; the value wraps as
 *   an int32; `inc(0)` only re-checks.
 * - Releasing the last handle of the timeline (the fd release) signals every pending point with
 *   -ENOENT in ascending order (as since 4.x; older kernels left them pending forever).
 * - Since 6.6 a point being signalled holds an extra reference dropped after the lock: here the
 *   list's own reference plays that role and is dropped after the timeline lock is released.
 *
 * Deviations:
 * - The pending list holds a reference on each point, so an unreferenced pending point stays
 *   until it is reached or the timeline is released (the kernel frees it when its last user
 *   goes). Nothing observable changes: the same value still returns the same fence.
 * - The kernel would deadlock if a fence callback run by `inc()` touched the same timeline (the
 *   callbacks run under its lock); here the lock is re-entrant for the thread that holds it, so
 *   such a callback may create points or increment again, and the order still holds.
 *
 * @module
 */
import {
  DmaFence,
  F,
  FENCE_BITS,
  FenceKindId,
  putFence,
  signalSlot,
  wrapFence,
} from './dma-fence.js';
import { kindOf } from './dma-fence-containers.js';
import { type Domain, domain, RecordType } from './substrate/domain.js';
import { DmaBufError, ERRNO } from './substrate/errno.js';
import { claim, HandleKind, type SharedMessage, SharedObject } from './substrate/handle.js';
import { lockWord, unlockWord } from './substrate/lock.js';
import { SYNC_NAME_MAX_BYTES, SyncFile, syncFileGetFence, truncateUtf8 } from './sync-file.js';

// Timeline record words.
const T_LOCK = 3;
const T_VALUE = 4;
/** First pending point node, as slot + 1 (0: none). */
const T_HEAD = 5;
/** Last pending point node, as slot + 1. */
const T_TAIL = 6;
const T_NAME = 7;
/** 64-bit word 4 (words 8, 9): the fence context. */
const T_CONTEXT64 = 4;
const T_PENDING = 10;

// Pending point node (an EXT record): it holds one reference on the point's fence.
const P_NEXT = 3;
const P_FENCE = 4;
/** The point's value as an int32. */
const P_SEQNO = 5;

const INT_MAX = 0x7fffffff;
const U32_MAX = 0xffffffff;
/** The driver name of every sw_sync point. */
export const SW_SYNC_DRIVER_NAME = 'sw_sync';

const SIGNALED = FENCE_BITS.SIGNALED;

/**
 * Timeline slots this thread has locked, with the nesting depth (the lock is re-entrant for
 * its holder). A small stack: locking allocates nothing.
 */
let heldSlots = new Int32Array(8);
let heldDepths = new Int32Array(8);
let heldCount = 0;

function heldIndex(slot: number): number {
  for (let i = 0; i < heldCount; i++) if (heldSlots[i] === slot) return i;
  return -1;
}

function lockTimeline(d: Domain, slot: number): void {
  const i = heldIndex(slot);
  if (i >= 0) {
    heldDepths[i]!++;
    return;
  }
  lockWord(d.region, d.base(slot) + T_LOCK);
  if (heldCount === heldSlots.length) {
    const s = new Int32Array(heldCount * 2);
    const n = new Int32Array(heldCount * 2);
    s.set(heldSlots);
    n.set(heldDepths);
    heldSlots = s;
    heldDepths = n;
  }
  heldSlots[heldCount] = slot;
  heldDepths[heldCount] = 1;
  heldCount++;
}

function unlockTimeline(d: Domain, slot: number): void {
  const i = heldIndex(slot);
  if (i >= 0 && heldDepths[i]! > 1) {
    heldDepths[i]!--;
    return;
  }
  if (i >= 0) {
    heldSlots.copyWithin(i, i + 1, heldCount);
    heldDepths.copyWithin(i, i + 1, heldCount);
    heldCount--;
  }
  unlockWord(d.region, d.base(slot) + T_LOCK);
}

/** Pops the first pending point if the value has reached it; its fence slot, or -1. */
function popReached(d: Domain, slot: number): number {
  const b = d.base(slot);
  const head = Atomics.load(d.i32, b + T_HEAD);
  if (head === 0) return -1;
  const value = Atomics.load(d.i32, b + T_VALUE);
  const nb = d.base(head - 1);
  if (((Atomics.load(d.i32, nb + P_SEQNO) - value) | 0) > 0) return -1;
  return popHead(d, slot);
}

/** Unlinks and frees the first pending node; returns its fence slot (the list's reference). */
function popHead(d: Domain, slot: number): number {
  const head = d.ld(slot, T_HEAD);
  const nb = d.base(head - 1);
  const next = Atomics.load(d.i32, nb + P_NEXT);
  const fence = Atomics.load(d.i32, nb + P_FENCE);
  const b = d.base(slot);
  Atomics.store(d.i32, b + T_HEAD, next);
  if (next === 0) Atomics.store(d.i32, b + T_TAIL, 0);
  Atomics.sub(d.i32, b + T_PENDING, 1);
  d.free(head - 1);
  return fence;
}

/**
 * `sync_timeline_signal`: adds `n` to the value, then signals the reached points in order. The
 * caller holds the lock; the fences' list references are handed to `toPut` for after unlock.
 */
function advance(d: Domain, slot: number, n: number, toPut: number[]): void {
  const b = d.base(slot);
  Atomics.store(d.i32, b + T_VALUE, (Atomics.load(d.i32, b + T_VALUE) + n) | 0);
  for (;;) {
    // Re-read every time: a callback run by the signal may have changed the list or value.
    const fence = popReached(d, slot);
    if (fence < 0) break;
    toPut.push(fence);
    signalSlot(d, fence, undefined);
  }
}

/** The last handle went away: the kernel's release of the timeline fd. */
function putTimeline(slot: number): void {
  const d = domain();
  if (!d.put(slot)) return;
  const toPut: number[] = [];
  lockTimeline(d, slot);
  try {
    while (d.ld(slot, T_HEAD) !== 0) {
      const fence = popHead(d, slot);
      toPut.push(fence);
      const fb = d.base(fence);
      if ((Atomics.load(d.i32, fb + F.FLAGS) & SIGNALED) === 0) {
        Atomics.store(d.i32, fb + F.ERROR, -ERRNO.ENOENT);
      }
      signalSlot(d, fence, undefined);
    }
  } finally {
    unlockTimeline(d, slot);
  }
  d.free(slot);
  for (const f of toPut) putFence(f);
}

const timelineKind = new HandleKind('sw-sync-timeline', RecordType.SW_SYNC_TIMELINE, putTimeline);

const TOKEN: unique symbol = Symbol('sw-sync-timeline');

function defaultName(): string {
  // The kernel names a timeline after the opening task (its 15-character comm).
  return truncateUtf8(process.title || 'node', 15);
}

function checkU32(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > U32_MAX) {
    throw new DmaBufError('EINVAL', `${what} must be an integer in [0, 2^32)`);
  }
  return v;
}

/**
 * A software timeline (one open of the kernel's `sw_sync` debugfs file).
 *
 * @example
 * ```ts
 * import { SwSyncTimeline } from 'dmabuf';
 * using tl = new SwSyncTimeline('app');
 * using f = tl.createFence(2);
 * tl.inc(1); // value 1: f still pending
 * tl.inc(1); // value 2: f signals
 * await f.ready;
 * ```
 */
export class SwSyncTimeline extends SharedObject {
  /**
   * Creates a timeline with a fresh fence context and value 0. `name` (at most 31 bytes, longer
   * names are cut) names the timeline of its fences; by default the process title, as the
   * kernel uses the opening task's name.
   *
   * @throws {DmaBufError} EINVAL when `name` is not a string; ENOMEM when the region is full.
   */
  constructor(name?: string);
  /** @internal */
  constructor(token: typeof TOKEN, slot: number, gen: number);
  constructor(a?: string | typeof TOKEN, slot?: number, gen?: number) {
    if (a === TOKEN) {
      super(slot as number, gen as number, true);
      return;
    }
    if (a !== undefined && typeof a !== 'string') {
      throw new DmaBufError('EINVAL', 'timeline name must be a string');
    }
    const d = domain();
    const name = truncateUtf8(a ?? defaultName(), SYNC_NAME_MAX_BYTES);
    const nameId = d.intern(name);
    const context = d.allocContexts(1);
    const s = d.alloc(RecordType.SW_SYNC_TIMELINE);
    const b = d.base(s);
    Atomics.store(d.i32, b + T_NAME, nameId);
    Atomics.store(d.i64, (b >> 1) + T_CONTEXT64, context);
    super(s, d.gen(s), true);
  }

  /** @internal */
  override _kind(): HandleKind {
    return timelineKind;
  }

  /**
   * Adopts a timeline handed over by another thread; the result is the same timeline.
   *
   * @throws {DmaBufError} EINVAL for a message that is not a timeline; EBADF when it was already
   *   imported; EXDEV for one of another domain.
   */
  static import(msg: SharedMessage): SwSyncTimeline {
    const d = claim(msg, timelineKind);
    return new SwSyncTimeline(TOKEN, msg.slot, d.gen(msg.slot));
  }

  /**
   * Gives back the reference held by a message that will never be imported.
   *
   * @throws {DmaBufError} EBADF when it was already imported or released.
   */
  static override releaseShared(msg: SharedMessage): void {
    SharedObject.releaseShared(msg, timelineKind);
  }

  /** A second handle to the same timeline (like `dup` of the fd). */
  get(): SwSyncTimeline {
    const d = this._check();
    d.get(this._slot);
    return new SwSyncTimeline(TOKEN, this._slot, this._gen);
  }

  /** The timeline's name (the timeline name of its fences). */
  get name(): string {
    const d = this._check();
    return d.name(d.ld(this._slot, T_NAME));
  }

  /** The fence context of the timeline's points. */
  get context(): bigint {
    const d = this._check();
    return BigInt.asUintN(64, d.ld64(this._slot, T_CONTEXT64));
  }

  /** The current value, as the kernel's int (wraps past INT_MAX). */
  get value(): number {
    const d = this._check();
    return d.ld(this._slot, T_VALUE);
  }

  /** The values of the pending points in list (signalling) order, as u32 (sync/info). */
  pendingPoints(): number[] {
    const d = this._check();
    const out: number[] = [];
    lockTimeline(d, this._slot);
    try {
      for (let n = d.ld(this._slot, T_HEAD); n !== 0; ) {
        const nb = d.base(n - 1);
        out.push(Atomics.load(d.i32, nb + P_SEQNO) >>> 0);
        n = Atomics.load(d.i32, nb + P_NEXT);
      }
    } finally {
      unlockTimeline(d, this._slot);
    }
    return out;
  }

  /**
   * `SW_SYNC_IOC_CREATE_FENCE`: a sync file whose fence signals when the value reaches `value`.
   * `name` is accepted and ignored, as the kernel ignores the struct's name field.
   *
   * @throws {DmaBufError} EINVAL when `value` is not an integer in [0, 2^32); EBADF for a
   *   disposed handle; ENOMEM when the shared region is full.
   */
  createFence(value: number, name?: string): SyncFile {
    void name;
    const f = this.createPoint(value);
    try {
      return SyncFile.create(f);
    } finally {
      f.dispose();
    }
  }

  /**
   * The point fence itself (what `createFence` wraps), as a new handle the caller disposes.
   *
   * @throws {DmaBufError} as {@linkcode SwSyncTimeline.createFence}.
   */
  createPoint(value: number): DmaFence {
    const d = this._check();
    checkU32(value, 'point value');
    const slot = this._slot;
    const seq = value | 0;
    lockTimeline(d, slot);
    try {
      const b = d.base(slot);
      if (((seq - Atomics.load(d.i32, b + T_VALUE)) | 0) <= 0) {
        // Already reached: signalled now, never listed.
        const f = this.#newFence(d, value);
        signalSlot(d, f._slot, undefined);
        return f;
      }
      // Find the place in the sorted list (from the tail when the value is the latest).
      let prev = 0;
      let it = Atomics.load(d.i32, b + T_HEAD);
      const tail = Atomics.load(d.i32, b + T_TAIL);
      if (tail !== 0 && ((seq - d.ld(tail - 1, P_SEQNO)) | 0) > 0) {
        prev = tail;
        it = 0;
      }
      while (it !== 0) {
        const nb = d.base(it - 1);
        const diff = (seq - Atomics.load(d.i32, nb + P_SEQNO)) | 0;
        if (diff === 0) {
          // The same pending value: the same fence.
          const fence = Atomics.load(d.i32, nb + P_FENCE);
          d.get(fence);
          return wrapFence(fence, d.gen(fence), true);
        }
        if (diff < 0) break;
        prev = it;
        it = Atomics.load(d.i32, nb + P_NEXT);
      }
      const f = this.#newFence(d, value);
      let node: number;
      try {
        node = d.alloc(RecordType.EXT);
      } catch (e) {
        f.dispose();
        throw e;
      }
      d.get(f._slot);
      const nb = d.base(node);
      Atomics.store(d.i32, nb + P_FENCE, f._slot);
      Atomics.store(d.i32, nb + P_SEQNO, seq);
      Atomics.store(d.i32, nb + P_NEXT, it);
      const tb = d.base(slot);
      if (prev === 0) Atomics.store(d.i32, tb + T_HEAD, node + 1);
      else d.st(prev - 1, P_NEXT, node + 1);
      if (it === 0) d.st(slot, T_TAIL, node + 1);
      d.add32(slot, T_PENDING, 1);
      return f;
    } finally {
      unlockTimeline(d, slot);
    }
  }

  #newFence(d: Domain, value: number): DmaFence {
    const timelineName = d.name(d.ld(this._slot, T_NAME));
    return new DmaFence(this.context, BigInt(value), {
      driverName: SW_SYNC_DRIVER_NAME,
      timelineName,
    });
  }

  /**
   * `SW_SYNC_IOC_INC`: adds `count` to the value and signals every point it reached, in
   * ascending order, in this thread (this thread's callbacks run inside the call).
   *
   * @throws {DmaBufError} EINVAL when `count` is not an integer in [0, 2^32); EBADF for a
   *   disposed handle.
   */
  inc(count = 1): void {
    const d = this._check();
    checkU32(count, 'increment');
    const slot = this._slot;
    // Our own reference for the duration: a callback may dispose the last handle meanwhile.
    d.get(slot);
    const toPut: number[] = [];
    try {
      lockTimeline(d, slot);
      try {
        let left = count;
        while (left > INT_MAX) {
          advance(d, slot, INT_MAX, toPut);
          left -= INT_MAX;
        }
        advance(d, slot, left, toPut);
      } finally {
        unlockTimeline(d, slot);
      }
    } finally {
      for (const f of toPut) putFence(f);
      putTimeline(slot);
    }
  }

  /**
   * `SW_SYNC_GET_DEADLINE`: the earliest deadline ever set on the sw_sync point in `file`.
   *
   * @throws {DmaBufError} EINVAL for a non-zero `pad`, when `file` is not a sync file, or when
   *   its fence is not a sw_sync point (a merged array, for one); ENOENT when no deadline was
   *   ever set.
   */
  getDeadline(file: unknown, pad = 0): bigint {
    const d = this._check();
    if (pad !== 0) throw new DmaBufError('EINVAL', 'pad must be 0');
    const f = syncFileGetFence(file);
    if (!f) throw new DmaBufError('EINVAL', 'not a sync file');
    try {
      if (!isSwSyncPoint(d, f)) throw new DmaBufError('EINVAL', 'not a sw_sync fence');
      const deadline = f.deadline;
      if (deadline === undefined) throw new DmaBufError('ENOENT', 'no deadline was set');
      return deadline;
    } finally {
      f.dispose();
    }
  }

  /** Same as `dispose()`: the last handle's release fails every pending point with -ENOENT. */
  close(): void {
    this.dispose();
  }
}

/** Whether `fence` is a sw_sync point (a plain fence of the sw_sync driver). */
function isSwSyncPoint(d: Domain, fence: DmaFence): boolean {
  if (kindOf(d, fence._slot) !== FenceKindId.PLAIN) return false;
  const names = d.ld(fence._slot, F.NAMES);
  return names >>> 16 === d.intern(SW_SYNC_DRIVER_NAME);
}
