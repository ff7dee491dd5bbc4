/**
 * dma_resv: reservation objects (drivers/dma-buf/dma-resv.c, include/linux/dma-resv.h).
 *
 * A reservation object is a ww_mutex of class `reservation_ww_class` plus a list of fences, each
 * tagged with a usage. Writers (holders of the lock) reserve slots, add, replace and copy fences;
 * readers in any thread iterate, collect, test and wait on the fences without the lock. It is the
 * vehicle of implicit synchronisation: a writer in one worker adds its fence, readers in other
 * workers wait for it through the reservation object alone.
 *
 * Usages, in order KERNEL < WRITE < READ < BOOKKEEP: a query for usage U sees every fence whose
 * usage is <= U. {@linkcode dmaResvUsageRw} gives the usage to wait for before a new access.
 *
 * ## Shared layout
 *
 * The object is one DMA_RESV record: the mutex words (see ww-mutex.ts), then the published list
 * pointer (slot + 1, generation) and a version word. The fence list is a chain of EXT records: a
 * header (`num_fences`, `max_fences`, next chunk, 9 entries) and chunks of 10 entries. An entry
 * is two words: `(fence slot << 2) | usage` (the kernel packs the usage into the pointer's low
 * bits too) and the fence's generation. The list holds one reference on each fence of
 * `[0, num_fences)`.
 *
 * ## Readers without the lock (the kernel's RCU, adapted)
 *
 * - Publication: a writer builds a new list completely, then publishes it under the version word
 *   (odd while the two pointer words change, then even again): readers snapshot `(version,
 *   list)` consistently, like a seqlock on the pointer. A reader compares the version to its
 *   snapshot to learn that the list was replaced (the kernel compares the list pointer) and
 *   restarts.
 * - Lifetime: list records are reference counted. The object holds one reference on its current
 *   list; a reader takes one (`tryGet`, which refuses a freed or reused record) for the duration
 *   of one iterator step and puts it afterwards. Whoever puts the last reference frees the list's
 *   records, so a list is never freed while a reader is reading it, and a reader never blocks a
 *   writer. Fence references are not tied to list records: a writer moves or drops them when it
 *   replaces the list, and readers only ever take their own (`tryGet` on the fence's slot and
 *   generation, the kernel's `dma_fence_get_rcu`); a failure restarts the walk.
 * - In-place changes (add, replace) write the entry's first word, then its generation word;
 *   readers read the generation first. A reader racing with the change sees the old entry, the
 *   new one, or the new slot with the old generation, which names no live fence except the new
 *   one itself, so `tryGet` fails and the walk restarts. Appends write the entry before the new
 *   `num_fences` is published, as the kernel does; entries appended after a reader's snapshot
 *   are not visited in that pass.
 *
 * ## Deviations and choices
 *
 * - The kernel's BUG (adding a fence without a reserved slot, or before any reservation) throws
 *   a plain `Error` whose message starts with `BUG:`, not a `DmaBufError`: it is a programming
 *   error, not an errno. The debug behaviour of `CONFIG_DEBUG_MUTEXES` is always on: `unlock()`
 *   shrinks `max_fences` to `num_fences`, so every locked section must reserve what it adds.
 * - The kernel's lockdep assertions (`dma_resv_assert_held`) are checks here: calling a
 *   lock-only function without holding the lock in this thread throws `EPERM`.
 * - Adding a container (array, chain) warns (`process.emitWarning`) as the kernel's WARN_ON does,
 *   and stores it. `getSingleton` then fails with `EINVAL` when several fences must be combined,
 *   because this project's arrays reject container members.
 * - Capacities are rounded up to what the records hold (9 + 10k entries), as the kernel rounds
 *   to the allocator's bucket size.
 * - Times are milliseconds; one jiffy is 1 ms (`wait(usage, { timeout: 0 })` waits up to 1 ms).
 *   An aborted wait throws `ERESTARTSYS`, as `DmaFence.wait` does.
 * - `copyFences` reads the source at BOOKKEEP (every usage), as the kernel does since v6.0;
 *   v5.19 copied READ and below only.
 *
 * Kernel versions: the replacement rule of `addFence` is the v6.7 one (95ba893c9f4f, also in 6.6
 * stable): same context, old usage >= new, and the new fence later than *or the same as* the old
 * one. Earlier 6.x kernels (a3f7c10a269d5) required "later", so re-adding one fence took a new
 * slot; 5.19 replaced any fence of the same context. `replaceFences` takes one reference per
 * replaced slot (an early version took none). The unlocked walk restarts when taking a reference
 * fails (an early version ended the walk there). `setDeadline` exists since about v6.4.
 *
 * @module
 */

import { DmaFence, F, FenceKindId, isSignaledSlot, putFence, wrapFence } from './dma-fence.js';
import { DmaFenceArray } from './dma-fence-array.js';
import { kindOf } from './dma-fence-containers.js';
import { type Domain, domain, RecordType } from './substrate/domain.js';
import { DmaBufError } from './substrate/errno.js';
import { claim, HandleKind, type SharedMessage, SharedObject } from './substrate/handle.js';
import { waitUntil } from './substrate/waiter.js';
import {
  checkCtxArg,
  MUTEX_OFF,
  MUTEX_WORDS,
  needCtx,
  registerMutexOwner,
  WW_OK,
  type WwAcquireCtx,
  WwClass,
  type WwLockOptions,
  wwError,
  wwHeldBySelf,
  wwInit,
  wwIsLocked,
  wwLock,
  wwLockAsync,
  wwLockingCtx,
  wwTrylock,
  wwUnlock,
} from './ww-mutex.js';

// ---- usages -----------------------------------------------------------------------------------

/** `enum dma_resv_usage`: how a fence is used. Lower values are stronger. */
export const DmaResvUsage = {
  /** Kernel memory management (moves, clears): everybody waits for these. */
  KERNEL: 0,
  /** Implicit-sync write. */
  WRITE: 1,
  /** Implicit-sync read. */
  READ: 2,
  /** No implicit sync (preemption fences, page-table updates, explicit-sync work). */
  BOOKKEEP: 3,
} as const;
export type DmaResvUsage = (typeof DmaResvUsage)[keyof typeof DmaResvUsage];

const USAGE_NAMES = ['kernel', 'write', 'read', 'bookkeep'] as const;

/**
 * The usage to wait for before a new access (`dma_resv_usage_rw`): a write must wait for every
 * read and write (READ), a read only for writes (WRITE). KERNEL fences are always included.
 */
export function dmaResvUsageRw(write: boolean): DmaResvUsage {
  return write ? DmaResvUsage.READ : DmaResvUsage.WRITE;
}

function checkUsage(u: unknown): DmaResvUsage {
  if (u !== 0 && u !== 1 && u !== 2 && u !== 3) {
    throw new DmaBufError('EINVAL', 'usage must be a DmaResvUsage (0..3)');
  }
  return u;
}

// ---- record layout ------------------------------------------------------------------------------

/** Resv record words after the mutex. */
const RV_LIST = MUTEX_OFF + MUTEX_WORDS; // list header slot + 1 (0: no list)
const RV_LISTGEN = RV_LIST + 1;
const RV_VER = RV_LIST + 2; // odd while the pointer changes

/** List header (EXT): num_fences, max_fences, next chunk (slot + 1), then 9 entries. */
const L_NUM = 3;
const L_MAX = 4;
const L_NEXT = 5;
const L_FIRST = 6;
const HEAD_ENTRIES = 9;
/** List chunk (EXT): next chunk, then 10 entries. */
const K_NEXT = 3;
const K_FIRST = 4;
const CHUNK_ENTRIES = 10;
/** Larger reservations fail with ENOMEM up front (the region could not hold them anyway). */
const MAX_RESERVE = 1 << 24;

/** Word index of entry `i` of list `list` (views refreshed: read `d.i32` after calling). */
function entryAt(d: Domain, list: number, i: number): number {
  if (i < HEAD_ENTRIES) return d.base(list) + L_FIRST + 2 * i;
  let j = i - HEAD_ENTRIES;
  let c = d.ld(list, L_NEXT) - 1;
  while (j >= CHUNK_ENTRIES) {
    c = d.ld(c, K_NEXT) - 1;
    j -= CHUNK_ENTRIES;
  }
  return d.base(c) + K_FIRST + 2 * j;
}

/** Writes entry `i`: first word, then generation (readers read the generation first). */
function setEntry(d: Domain, list: number, i: number, w0: number, gen: number): void {
  const w = entryAt(d, list, i);
  Atomics.store(d.i32, w, w0);
  Atomics.store(d.i32, w + 1, gen);
}

function allocList(d: Domain, cap: number): number {
  const chunks = cap <= HEAD_ENTRIES ? 0 : Math.ceil((cap - HEAD_ENTRIES) / CHUNK_ENTRIES);
  const head = d.alloc(RecordType.EXT);
  let prev = head;
  try {
    for (let k = 0; k < chunks; k++) {
      const c = d.alloc(RecordType.EXT);
      d.st(prev, prev === head ? L_NEXT : K_NEXT, c + 1);
      prev = c;
    }
  } catch (e) {
    freeListRecords(d, head);
    throw e;
  }
  d.st(head, L_MAX, HEAD_ENTRIES + chunks * CHUNK_ENTRIES);
  return head;
}

function freeListRecords(d: Domain, head: number): void {
  let c = d.ld(head, L_NEXT) - 1;
  d.free(head);
  while (c >= 0) {
    const next = d.ld(c, K_NEXT) - 1;
    d.free(c);
    c = next;
  }
}

/** Drops one reference on a list's records (not on its fences). */
function putList(d: Domain, head: number): void {
  if (d.put(head)) freeListRecords(d, head);
}

/** Drops the list's references on its fences `[0, num)`. */
function putListFences(d: Domain, list: number): void {
  const num = d.ld(list, L_NUM);
  for (let i = 0; i < num; i++) {
    const w = entryAt(d, list, i);
    putFence(Atomics.load(d.i32, w) >>> 2);
  }
}

/** Publishes `list` (-1: none) as the object's list. Caller holds the lock. */
function publish(d: Domain, slot: number, list: number): void {
  const gen = list >= 0 ? d.gen(list) : 0;
  const b = d.base(slot);
  const i32 = d.i32;
  Atomics.add(i32, b + RV_VER, 1);
  Atomics.store(i32, b + RV_LISTGEN, gen);
  Atomics.store(i32, b + RV_LIST, list + 1);
  Atomics.add(i32, b + RV_VER, 1);
}

function currentList(d: Domain, slot: number): number {
  return d.ld(slot, RV_LIST) - 1;
}

function roundupPow2(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/** `dma_fence_is_later_or_same(fence, old)` on records (fence's seqno width decides). */
function laterOrSame(d: Domain, fence: number, old: number): boolean {
  if (fence === old) return true;
  const ob = d.base(old);
  const fb = d.base(fence);
  const i32 = d.i32;
  const aLo = i32[fb + 2 * F.SEQNO64]!;
  const bLo = i32[ob + 2 * F.SEQNO64]!;
  if ((i32[fb + F.FLAGS]! & 1) !== 0) {
    const aHi = i32[fb + 2 * F.SEQNO64 + 1]! >>> 0;
    const bHi = i32[ob + 2 * F.SEQNO64 + 1]! >>> 0;
    return aHi !== bHi ? aHi > bHi : aLo >>> 0 > bLo >>> 0;
  }
  return ((aLo - bLo) | 0) > 0;
}

function sameContext(d: Domain, a: number, b: number): boolean {
  const ab = d.base(a);
  const bb = d.base(b);
  const i32 = d.i32;
  const k = 2 * F.CONTEXT64;
  return i32[ab + k] === i32[bb + k] && i32[ab + k + 1] === i32[bb + k + 1];
}

function contextOfSlot(d: Domain, s: number): bigint {
  const b64 = d.base64(s);
  return BigInt.asUintN(64, Atomics.load(d.i64, b64 + F.CONTEXT64));
}

// ---- release --------------------------------------------------------------------------------------

/** Last reference gone (`dma_resv_fini`): drop the fences, the list, the record. */
function releaseResv(d: Domain, slot: number): void {
  const list = currentList(d, slot);
  if (list >= 0) {
    putListFences(d, list);
    publish(d, slot, -1);
    putList(d, list);
  }
  d.free(slot);
}
registerMutexOwner(RecordType.DMA_RESV, releaseResv);

/** @internal What the last reference of a reservation object releases (for drm-exec.ts). */
export const resvRelease: (d: Domain, slot: number) => void = releaseResv;

const resvKind = new HandleKind('dma-resv', RecordType.DMA_RESV, (slot) => {
  const d = domain();
  if (d.put(slot)) releaseResv(d, slot);
});

// ---- cursors ----------------------------------------------------------------------------------------

/**
 * The unlocked walk (`dma_resv_iter_first_unlocked` / `_next_unlocked`): holds a reference on
 * the current fence between steps, a reference on the list only during a step.
 */
class UnlockedCursor {
  readonly d: Domain;
  readonly slot: number;
  readonly usage: number;
  ver = 0;
  list = -1;
  listGen = 0;
  holding = false;
  num = 0;
  index = 0;
  fence = -1;
  fenceGen = 0;
  fenceUsage = 0;
  restarted = false;

  constructor(d: Domain, slot: number, usage: number) {
    this.d = d;
    this.slot = slot;
    this.usage = usage;
  }

  /** Snapshots (version, list) consistently: a seqlock read of the two pointer words. */
  #snapshot(): void {
    const d = this.d;
    const done = (): boolean => {
      const b = d.base(this.slot);
      const i32 = d.i32;
      const v = Atomics.load(i32, b + RV_VER);
      if ((v & 1) !== 0) return false;
      const l = Atomics.load(i32, b + RV_LIST);
      const g = Atomics.load(i32, b + RV_LISTGEN);
      if (Atomics.load(i32, b + RV_VER) !== v) return false;
      this.ver = v;
      this.list = l - 1;
      this.listGen = g;
      return true;
    };
    if (done()) return;
    // A writer is between the two pointer stores (it never blocks there): spin, then poll.
    const b = d.base(this.slot);
    const target = { region: d.region, index: b + RV_VER, sleepers: -1 };
    while (!waitUntil(target, done, 1)) {
      /* the writer was preempted mid-publish; look again */
    }
  }

  #dropList(): void {
    if (this.holding) {
      this.holding = false;
      putList(this.d, this.list);
    }
  }

  #dropFence(): void {
    if (this.fence >= 0) {
      const f = this.fence;
      this.fence = -1;
      putFence(f);
    }
  }

  #holdList(): boolean {
    if (this.holding) return true;
    if (this.list < 0 || !this.d.tryGet(this.list, this.listGen, RecordType.EXT)) return false;
    this.holding = true;
    return true;
  }

  #restart(): void {
    this.#dropList();
    this.#snapshot();
    this.num = this.#holdList() ? this.d.ld(this.list, L_NUM) : 0;
    this.index = 0;
    this.restarted = true;
  }

  #changed(): boolean {
    return this.d.ld(this.slot, RV_VER) !== this.ver;
  }

  #walk(): void {
    const d = this.d;
    for (;;) {
      this.#dropFence();
      if (this.index >= this.num) return;
      if (!this.#holdList()) {
        // The list was retired since the snapshot: the version check restarts us.
        this.index = this.num;
        return;
      }
      const w = entryAt(d, this.list, this.index++);
      const gen = Atomics.load(d.i32, w + 1);
      const w0 = Atomics.load(d.i32, w);
      const s = w0 >>> 2;
      if (!d.tryGet(s, gen, RecordType.FENCE)) {
        this.#restart();
        continue;
      }
      this.fence = s;
      this.fenceGen = gen;
      this.fenceUsage = w0 & 3;
      if (this.usage >= this.fenceUsage && !isSignaledSlot(d, s, gen)) return;
    }
  }

  /** First unsignalled fence with usage <= filter; false when none. */
  first(): boolean {
    try {
      do {
        this.#restart();
        this.#walk();
      } while (this.#changed());
    } finally {
      this.#dropList();
    }
    return this.fence >= 0;
  }

  /** Next one; false at the end. */
  next(): boolean {
    this.restarted = false;
    let restart = this.#changed();
    try {
      do {
        if (restart) this.#restart();
        this.#walk();
        restart = true;
      } while (this.#changed());
    } finally {
      this.#dropList();
    }
    return this.fence >= 0;
  }

  /** Drops the reference on the current fence (`dma_resv_iter_end`). */
  end(): void {
    this.#dropFence();
    this.#dropList();
  }

  /** `num_fences` of the current list, read consistently. */
  count(): number {
    try {
      for (;;) {
        this.#restart();
        if (!this.#changed()) return this.num;
      }
    } finally {
      this.#dropList();
    }
  }
}

/** The locked walk (`dma_resv_iter_first` / `_next`): every fence, signalled or not, no refs. */
class LockedCursor {
  readonly d: Domain;
  readonly slot: number;
  readonly usage: number;
  list = -1;
  index = 0;
  fence = -1;
  fenceGen = 0;
  fenceUsage = 0;
  restarted = false;

  constructor(d: Domain, slot: number, usage: number) {
    this.d = d;
    this.slot = slot;
    this.usage = usage;
  }

  first(): boolean {
    assertHeld(this.d, this.slot);
    this.index = 0;
    this.list = currentList(this.d, this.slot);
    const r = this.next();
    this.restarted = true;
    return r;
  }

  next(): boolean {
    const d = this.d;
    assertHeld(d, this.slot);
    this.restarted = false;
    for (;;) {
      if (this.list < 0 || this.index >= d.ld(this.list, L_NUM)) {
        this.fence = -1;
        return false;
      }
      const w = entryAt(d, this.list, this.index++);
      const w0 = Atomics.load(d.i32, w);
      this.fenceGen = Atomics.load(d.i32, w + 1);
      this.fence = w0 >>> 2;
      this.fenceUsage = w0 & 3;
      if (this.fenceUsage <= this.usage) return true;
    }
  }

  get num(): number {
    return this.list < 0 ? 0 : this.d.ld(this.list, L_NUM);
  }

  end(): void {
    this.fence = -1;
  }
}

/**
 * A cursor over a reservation object's fences (`struct dma_resv_iter`), iterable with
 * `for...of`. Each yielded fence is a borrowed handle, valid until the next step: call `get()`
 * on it to keep it. Leaving a loop early (`break`, `return`, a throw) ends the cursor; a cursor
 * driven by hand must be ended with `end()` or `using`.
 *
 * @example
 * ```ts
 * using it = resv.fencesUnlocked(DmaResvUsage.READ);
 * const kept: DmaFence[] = [];
 * for (const f of it) {
 *   if (it.isRestarted) { for (const k of kept) k.dispose(); kept.length = 0; }
 *   kept.push(f.get());
 * }
 * ```
 */
export class DmaResvIter implements IterableIterator<DmaFence>, Disposable {
  /** The usage filter: fences with usage <= this are visited. */
  readonly usage: DmaResvUsage;
  /** True for the unlocked form (skips signalled fences, may restart). */
  readonly unlocked: boolean;
  #c: UnlockedCursor | LockedCursor;
  #owner: DmaResv;
  #started = false;
  #ended = false;
  #fence: DmaFence | null = null;

  /** @internal */
  constructor(owner: DmaResv, c: UnlockedCursor | LockedCursor, unlocked: boolean) {
    this.#owner = owner;
    this.#c = c;
    this.unlocked = unlocked;
    this.usage = c.usage as DmaResvUsage;
  }

  /** The current fence (borrowed), or null before the first step and at the end. */
  get fence(): DmaFence | null {
    return this.#fence;
  }

  /** Usage of the current fence (`dma_resv_iter_usage`). */
  get fenceUsage(): DmaResvUsage {
    return this.#c.fenceUsage as DmaResvUsage;
  }

  /**
   * True when the current fence is the first of a (re)started pass
   * (`dma_resv_iter_is_restarted`): accumulating callers discard what they gathered.
   */
  get isRestarted(): boolean {
    return this.#c.restarted;
  }

  /** Number of list entries of the current pass (the snapshot count when unlocked). */
  get numFences(): number {
    return this.#c.num;
  }

  next(): IteratorResult<DmaFence> {
    if (this.#ended) return { done: true, value: undefined };
    const c = this.#c;
    let ok: boolean;
    try {
      // The object must outlive the walk: a disposed handle ends it with EBADF.
      this.#owner._check();
      ok = this.#started ? c.next() : c.first();
    } catch (e) {
      this.end();
      throw e;
    }
    this.#started = true;
    if (!ok) {
      this.end();
      return { done: true, value: undefined };
    }
    this.#fence = wrapFence(c.fence, c.fenceGen, false);
    return { done: false, value: this.#fence };
  }

  /** Ends the walk early (called by `for...of` on `break`). */
  return(): IteratorResult<DmaFence> {
    this.end();
    return { done: true, value: undefined };
  }

  /** Drops the reference held on the current fence (`dma_resv_iter_end`). Idempotent. */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#fence = null;
    this.#c.end();
  }

  [Symbol.iterator](): this {
    return this;
  }

  [Symbol.dispose](): void {
    this.end();
  }
}

// ---- helpers on records --------------------------------------------------------------------------------

function assertHeld(d: Domain, slot: number): void {
  if (!wwHeldBySelf(d, slot)) {
    throw new DmaBufError('EPERM', 'the reservation lock must be held by this thread');
  }
}

function checkResv(r: unknown, what: string): Domain {
  if (!(r instanceof DmaResv)) throw new DmaBufError('EINVAL', `${what} must be a DmaResv`);
  return r._check();
}

function checkFenceArg(f: unknown, what: string): Domain {
  if (!(f instanceof DmaFence)) throw new DmaBufError('EINVAL', `${what} must be a DmaFence`);
  return f._check();
}

function checkTimeout(t: unknown): number {
  const timeout = t ?? Number.POSITIVE_INFINITY;
  if (typeof timeout !== 'number' || Number.isNaN(timeout) || timeout < 0) {
    throw new DmaBufError('EINVAL', 'timeout must be a number >= 0 (ms) or Infinity');
  }
  return timeout;
}

/** Collects references to the unsignalled fences (`dma_resv_get_fences`), as (slot, gen) pairs. */
function collect(d: Domain, slot: number, usage: number): number[] {
  const out: number[] = [];
  const c = new UnlockedCursor(d, slot, usage);
  try {
    for (let ok = c.first(); ok; ok = c.next()) {
      if (c.restarted) {
        for (let i = 0; i < out.length; i += 2) putFence(out[i]!);
        out.length = 0;
      }
      d.get(c.fence);
      out.push(c.fence, c.fenceGen);
    }
  } catch (e) {
    for (let i = 0; i < out.length; i += 2) putFence(out[i]!);
    throw e;
  } finally {
    c.end();
  }
  return out;
}

// ---- the handle ---------------------------------------------------------------------------------------

const ADOPT_RESV: unique symbol = Symbol('adopt-resv');

/** Options of `wait` / `waitSync`. */
export interface DmaResvWaitOptions {
  /** Milliseconds; `Infinity` (the default) waits forever; 0 waits up to one tick (1 ms). */
  timeout?: number;
  /** Makes the wait interruptible: an abort throws `ERESTARTSYS`. */
  signal?: AbortSignal;
}

/**
 * A reservation object (`struct dma_resv`) shared between threads.
 *
 * @example
 * ```ts
 * using resv = new DmaResv();
 * resv.lock();
 * resv.reserveFences(1);
 * resv.addFence(fence, DmaResvUsage.WRITE);
 * resv.unlock();
 * // any thread, no lock:
 * await resv.wait(dmaResvUsageRw(false)); // a reader waits for the writers
 * ```
 */
export class DmaResv extends SharedObject {
  /** `dma_resv_usage_rw`. */
  static usageRw(write: boolean): DmaResvUsage {
    return dmaResvUsageRw(write);
  }

  /** Creates an unlocked object with no fences (`dma_resv_init`). */
  constructor();
  /** @internal */
  constructor(adopt: typeof ADOPT_RESV, slot: number, gen: number, owned: boolean);
  constructor(a?: typeof ADOPT_RESV, b?: number, c?: number, e?: boolean) {
    if (a === ADOPT_RESV) {
      super(b as number, c as number, e as boolean);
      return;
    }
    const d = domain();
    const slot = d.alloc(RecordType.DMA_RESV);
    wwInit(d, slot, WwClass.reservation);
    super(slot, d.gen(slot), true);
  }

  /** @internal */
  override _kind(): HandleKind {
    return resvKind;
  }

  /**
   * Adopts an object handed over by another thread (see `share()`): the same object.
   *
   * @throws {DmaBufError} EINVAL for a message that is not a reservation object; EBADF when it
   *   was already imported or the object is gone; EXDEV for another domain's object.
   */
  static import(msg: SharedMessage): DmaResv {
    claim(msg, resvKind);
    return new DmaResv(ADOPT_RESV, msg.slot, msg.gen, true);
  }

  /** Gives back the reference of a message that will never be imported. */
  static override releaseShared(msg: SharedMessage): void {
    SharedObject.releaseShared(msg, resvKind);
  }

  /** A new reference to the same object, as a new handle. */
  get(): DmaResv {
    const d = this._check();
    d.get(this._slot);
    return new DmaResv(ADOPT_RESV, this._slot, this._gen, true);
  }

  // ---- locking ----

  /**
   * Locks the object (`dma_resv_lock`): without `ctx` like a plain mutex; with one as part of a
   * transaction.
   *
   * @throws {DmaBufError} EDEADLK: back off (release every lock of `ctx`, `lockSlow` this one,
   *   retry); EALREADY: `ctx` already holds it; EINVAL/EPERM for misuse (see ww-mutex.ts).
   */
  lock(ctx?: WwAcquireCtx | null): void {
    const d = this._check();
    const r = wwLock(d, this._slot, checkCtxArg(ctx), false, releaseResv);
    if (r !== WW_OK) throw wwError(r, 'dma_resv_lock');
  }

  /**
   * Locks without blocking the event loop; interruptible when `opts.signal` is given
   * (`dma_resv_lock_interruptible`).
   *
   * @throws {DmaBufError} as `lock`, plus EINTR when the signal aborts.
   */
  async lockAsync(ctx?: WwAcquireCtx | null, opts?: WwLockOptions): Promise<void> {
    const d = this._check();
    const r = await wwLockAsync(d, this._slot, checkCtxArg(ctx), false, releaseResv, opts?.signal);
    if (r !== WW_OK) throw wwError(r, 'dma_resv_lock_interruptible');
  }

  /** `dma_resv_lock_interruptible` (see {@linkcode DmaResv.lockAsync}). */
  lockInterruptible(ctx: WwAcquireCtx | null, opts: WwLockOptions): Promise<void> {
    return this.lockAsync(ctx, opts);
  }

  /**
   * The slow path after EDEADLK (`dma_resv_lock_slow`): with every lock of `ctx` released,
   * blocks until this object is locked.
   *
   * @throws {DmaBufError} EINVAL when `ctx` still holds locks or contended on another object.
   */
  lockSlow(ctx: WwAcquireCtx): void {
    const d = this._check();
    const r = wwLock(d, this._slot, needCtx(ctx, 'lockSlow'), true, releaseResv);
    if (r !== WW_OK) throw wwError(r, 'dma_resv_lock_slow');
  }

  /**
   * `dma_resv_lock_slow_interruptible`, without blocking the event loop.
   *
   * @throws {DmaBufError} EINTR when the signal aborts; EINVAL as `lockSlow`.
   */
  async lockSlowAsync(ctx: WwAcquireCtx, opts?: WwLockOptions): Promise<void> {
    const d = this._check();
    const c = needCtx(ctx, 'lockSlow');
    const r = await wwLockAsync(d, this._slot, c, true, releaseResv, opts?.signal);
    if (r !== WW_OK) throw wwError(r, 'dma_resv_lock_slow_interruptible');
  }

  /** `dma_resv_lock_slow_interruptible` (see {@linkcode DmaResv.lockSlowAsync}). */
  lockSlowInterruptible(ctx: WwAcquireCtx, opts: WwLockOptions): Promise<void> {
    return this.lockSlowAsync(ctx, opts);
  }

  /** Locks if free (`dma_resv_trylock`, no context, no deadlock logic). */
  trylock(): boolean {
    const d = this._check();
    return wwTrylock(d, this._slot, null, releaseResv);
  }

  /** True while any thread holds the lock (`dma_resv_is_locked`). */
  isLocked(): boolean {
    return wwIsLocked(this._check(), this._slot);
  }

  /**
   * The context holding the lock, or null when unlocked or locked without one
   * (`dma_resv_locking_ctx`). A context of this thread comes back as its own handle, another
   * thread's as a borrowed handle.
   */
  lockingCtx(): WwAcquireCtx | null {
    return wwLockingCtx(this._check(), this._slot);
  }

  /** True when this thread holds the lock (`dma_resv_held`). */
  held(): boolean {
    return wwHeldBySelf(this._check(), this._slot);
  }

  /**
   * `dma_resv_assert_held`.
   *
   * @throws {DmaBufError} EPERM when this thread does not hold the lock.
   */
  assertHeld(): void {
    assertHeld(this._check(), this._slot);
  }

  /**
   * Unlocks (`dma_resv_unlock`). First shrinks the reserved slots to the fences present (the
   * kernel's debug `dma_resv_reset_max_fences`, modelled always).
   *
   * @throws {DmaBufError} EPERM when this thread does not hold the lock.
   */
  unlock(): void {
    const d = this._check();
    if (wwHeldBySelf(d, this._slot)) {
      const list = currentList(d, this._slot);
      if (list >= 0) d.st(list, L_MAX, d.ld(list, L_NUM));
    }
    wwUnlock(d, this._slot, releaseResv);
  }

  // ---- writers (lock held) ----

  /**
   * Makes sure `n` more fences can be added while the lock is held (`dma_resv_reserve_fences`).
   * Not cumulative: `reserveFences(1)` twice still guarantees one free slot. Signalled fences are
   * pruned when the list is reallocated. Reservations end at `unlock()`.
   *
   * @throws {DmaBufError} EPERM without the lock; EINVAL for a bad `n`; ENOMEM when the shared
   *   region cannot hold the list (the object is unchanged then).
   */
  reserveFences(n: number): void {
    const d = this._check();
    const slot = this._slot;
    assertHeld(d, slot);
    if (!Number.isInteger(n) || n < 0) {
      throw new DmaBufError('EINVAL', 'reserveFences needs an integer count >= 0');
    }
    const old = currentList(d, slot);
    const num = old >= 0 ? d.ld(old, L_NUM) : 0;
    const max = old >= 0 ? d.ld(old, L_MAX) : 0;
    let cap: number;
    if (old >= 0 && max > 0) {
      if (num + n <= max) return;
      cap = Math.max(num + n, max * 2);
    } else {
      cap = Math.max(4, roundupPow2(n));
    }
    if (cap > MAX_RESERVE) throw new DmaBufError('ENOMEM', `cannot reserve ${n} fence slots`);
    const list = allocList(d, cap);
    // The references of the kept fences move to the new list; signalled ones are dropped after
    // the new list is visible (readers see the same unsignalled set in both).
    let j = 0;
    const pruned: number[] = [];
    for (let i = 0; i < num; i++) {
      const w = entryAt(d, old, i);
      const w0 = Atomics.load(d.i32, w);
      const gen = Atomics.load(d.i32, w + 1);
      if (isSignaledSlot(d, w0 >>> 2, gen)) pruned.push(w0 >>> 2);
      else setEntry(d, list, j++, w0, gen);
    }
    d.st(list, L_NUM, j);
    publish(d, slot, list);
    for (const p of pruned) putFence(p);
    if (old >= 0) putList(d, old);
  }

  /**
   * Adds `fence` with `usage` (`dma_resv_add_fence`, v6.7+ rules): takes its own reference; the
   * first slot holding a fence of the same context with usage >= `usage` that `fence` is later
   * than or the same as, or holding any signalled fence, is overwritten; otherwise the fence is
   * appended to a reserved slot.
   *
   * @throws {DmaBufError} EPERM without the lock; EINVAL for a bad fence or usage.
   * @throws {Error} `BUG:` when a slot was needed and none was reserved since the lock was taken
   *   (the kernel's BUG_ON).
   */
  addFence(fence: DmaFence, usage: DmaResvUsage): void {
    const d = this._check();
    const slot = this._slot;
    assertHeld(d, slot);
    checkUsage(usage);
    checkFenceArg(fence, 'fence');
    const fs = fence._slot;
    const fg = fence._gen;
    const kind = kindOf(d, fs);
    if (kind === FenceKindId.ARRAY || kind === FenceKindId.CHAIN) {
      process.emitWarning(
        'dma_resv_add_fence: containers should not be added, add their fences individually',
        { code: 'DMABUF_WARN_ON' },
      );
    }
    const list = currentList(d, slot);
    if (list < 0) {
      throw new Error('BUG: dma_resv_add_fence without dma_resv_reserve_fences (no fence list)');
    }
    const num = d.ld(list, L_NUM);
    const w0 = (fs << 2) | usage;
    for (let i = 0; i < num; i++) {
      const w = entryAt(d, list, i);
      const old0 = Atomics.load(d.i32, w);
      const oldGen = Atomics.load(d.i32, w + 1);
      const old = old0 >>> 2;
      if (
        (sameContext(d, old, fs) && (old0 & 3) >= usage && laterOrSame(d, fs, old)) ||
        isSignaledSlot(d, old, oldGen)
      ) {
        d.get(fs);
        setEntry(d, list, i, w0, fg);
        putFence(old);
        return;
      }
    }
    if (num >= d.ld(list, L_MAX)) {
      throw new Error(
        'BUG: dma_resv_add_fence without a reserved slot (reserveFences since the lock was taken)',
      );
    }
    d.get(fs);
    setEntry(d, list, num, w0, fg);
    // The entry is written before the count that makes it visible (smp_store_mb).
    d.st(list, L_NUM, num + 1);
  }

  /**
   * Replaces every fence of `context` by `replacement` with `usage`
   * (`dma_resv_replace_fences`); one reference per replaced slot. No reservation needed; adds
   * nothing when no fence matches.
   *
   * @throws {DmaBufError} EPERM without the lock; EINVAL for bad arguments.
   */
  replaceFences(context: bigint, replacement: DmaFence, usage: DmaResvUsage): void {
    const d = this._check();
    const slot = this._slot;
    assertHeld(d, slot);
    if (typeof context !== 'bigint') throw new DmaBufError('EINVAL', 'context must be a bigint');
    checkUsage(usage);
    checkFenceArg(replacement, 'replacement');
    const list = currentList(d, slot);
    if (list < 0) return;
    const rs = replacement._slot;
    const w0 = (rs << 2) | usage;
    const num = d.ld(list, L_NUM);
    for (let i = 0; i < num; i++) {
      const w = entryAt(d, list, i);
      const old = Atomics.load(d.i32, w) >>> 2;
      if (contextOfSlot(d, old) !== context) continue;
      d.get(rs);
      setEntry(d, list, i, w0, replacement._gen);
      putFence(old);
    }
  }

  /**
   * Replaces this object's fences by a copy of `src`'s unsignalled fences with their usages
   * (`dma_resv_copy_fences`); `src` is read without its lock. The new list has about no spare
   * slots: reserve before adding. When `src` has none, this object ends with no list.
   *
   * @throws {DmaBufError} EPERM without this object's lock; EINVAL when `src` is not a DmaResv;
   *   ENOMEM when the region is full (nothing changes then).
   */
  copyFences(src: DmaResv): void {
    const d = this._check();
    const slot = this._slot;
    assertHeld(d, slot);
    checkResv(src, 'src');
    let list = -1;
    let n = 0;
    const c = new UnlockedCursor(d, src._slot, DmaResvUsage.BOOKKEEP);
    try {
      for (let ok = c.first(); ok; ok = c.next()) {
        if (c.restarted) {
          if (list >= 0) {
            putListFences(d, list);
            freeListRecords(d, list);
            list = -1;
          }
          list = allocList(d, c.num);
          n = 0;
        }
        d.get(c.fence);
        setEntry(d, list, n++, (c.fence << 2) | c.fenceUsage, c.fenceGen);
        d.st(list, L_NUM, n);
      }
    } catch (e) {
      if (list >= 0) {
        putListFences(d, list);
        freeListRecords(d, list);
      }
      throw e;
    } finally {
      c.end();
    }
    const old = currentList(d, slot);
    publish(d, slot, list);
    if (old >= 0) {
      putListFences(d, old);
      putList(d, old);
    }
  }

  // ---- readers ----

  /**
   * The locked walk (`dma_resv_for_each_fence`): every fence with usage <= `usage`, signalled
   * ones included, in list order; no references taken (valid while locked).
   *
   * @throws {DmaBufError} EPERM without the lock (at the first step); EINVAL for a bad usage.
   */
  fences(usage: DmaResvUsage): DmaResvIter {
    const d = this._check();
    checkUsage(usage);
    return new DmaResvIter(this, new LockedCursor(d, this._slot, usage), false);
  }

  /**
   * The unlocked walk (`dma_resv_for_each_fence_unlocked`), usable from any thread without the
   * lock: unsignalled fences with usage <= `usage`. It restarts when the list is reallocated
   * (or a fence dies under it): check `isRestarted` when accumulating.
   *
   * @throws {DmaBufError} EINVAL for a bad usage.
   */
  fencesUnlocked(usage: DmaResvUsage): DmaResvIter {
    const d = this._check();
    checkUsage(usage);
    return new DmaResvIter(this, new UnlockedCursor(d, this._slot, usage), true);
  }

  /**
   * The unsignalled fences with usage <= `usage`, in list order, as new handles the caller
   * disposes (`dma_resv_get_fences`; duplicates possible). No lock needed.
   *
   * @throws {DmaBufError} EINVAL for a bad usage.
   */
  getFences(usage: DmaResvUsage): DmaFence[] {
    const d = this._check();
    checkUsage(usage);
    const pairs = collect(d, this._slot, usage);
    const out: DmaFence[] = [];
    for (let i = 0; i < pairs.length; i += 2) out.push(wrapFence(pairs[i]!, pairs[i + 1]!, true));
    return out;
  }

  /**
   * One fence standing for every unsignalled fence with usage <= `usage`
   * (`dma_resv_get_singleton`): null when there is none, that very fence when there is one, a new
   * fence array (fresh context, seqno 1, signal on all) otherwise. Do not add the result back
   * into a reservation object. The caller disposes it.
   *
   * @throws {DmaBufError} EINVAL for a bad usage, or when a container must go into the array.
   */
  getSingleton(usage: DmaResvUsage): DmaFence | null {
    const fences = this.getFences(usage);
    if (fences.length === 0) return null;
    if (fences.length === 1) return fences[0]!;
    try {
      return DmaFenceArray.create(fences, DmaFence.contextAlloc(1), 1n, false);
    } finally {
      for (const f of fences) f.dispose();
    }
  }

  /**
   * True when every fence with usage <= `usage` has signalled (`dma_resv_test_signaled`); true
   * for an empty object. No lock needed.
   *
   * @throws {DmaBufError} EINVAL for a bad usage.
   */
  testSignaled(usage: DmaResvUsage): boolean {
    const d = this._check();
    checkUsage(usage);
    const c = new UnlockedCursor(d, this._slot, usage);
    try {
      return !c.first();
    } finally {
      c.end();
    }
  }

  /**
   * Waits for every fence with usage <= `usage` (`dma_resv_wait_timeout`) without blocking the
   * event loop. The timeout is one budget shared by all fences; 0 is replaced by one tick
   * (1 ms). Resolves to the remaining budget (> 0) or 0 on timeout. No lock needed (it may be
   * held).
   *
   * @throws {DmaBufError} EINVAL for a bad usage or timeout; ERESTARTSYS when `opts.signal`
   *   aborts.
   */
  async wait(usage: DmaResvUsage, opts: DmaResvWaitOptions = {}): Promise<number> {
    const d = this._check();
    checkUsage(usage);
    const timeout = checkTimeout(opts.timeout);
    let ret = timeout === 0 ? 1 : timeout;
    const c = new UnlockedCursor(d, this._slot, usage);
    try {
      for (let ok = c.first(); ok; ok = c.next()) {
        const f = wrapFence(c.fence, c.fenceGen, false);
        ret = await f.wait({ timeout: ret, signal: opts.signal });
        if (ret <= 0) return ret;
      }
    } finally {
      c.end();
    }
    return ret;
  }

  /**
   * The blocking form of {@linkcode DmaResv.wait}.
   *
   * @throws {DmaBufError} EINVAL for a bad usage or timeout; ERESTARTSYS when `opts.signal` was
   *   already aborted.
   */
  waitSync(usage: DmaResvUsage, opts: DmaResvWaitOptions = {}): number {
    const d = this._check();
    checkUsage(usage);
    const timeout = checkTimeout(opts.timeout);
    let ret = timeout === 0 ? 1 : timeout;
    const c = new UnlockedCursor(d, this._slot, usage);
    try {
      for (let ok = c.first(); ok; ok = c.next()) {
        const f = wrapFence(c.fence, c.fenceGen, false);
        ret = f.waitSync({ timeout: ret, signal: opts.signal });
        if (ret <= 0) return ret;
      }
    } finally {
      c.end();
    }
    return ret;
  }

  /**
   * Passes a deadline hint to every unsignalled fence with usage <= `usage`
   * (`dma_resv_set_deadline`). No lock needed.
   *
   * @throws {DmaBufError} EINVAL for a bad usage or deadline.
   */
  setDeadline(usage: DmaResvUsage, deadlineNs: bigint): void {
    const d = this._check();
    checkUsage(usage);
    if (typeof deadlineNs !== 'bigint' || deadlineNs < 0n) {
      throw new DmaBufError('EINVAL', 'deadline must be a bigint >= 0 (monotonic ns)');
    }
    const c = new UnlockedCursor(d, this._slot, usage);
    try {
      for (let ok = c.first(); ok; ok = c.next()) {
        wrapFence(c.fence, c.fenceGen, false).setDeadline(deadlineNs);
      }
    } finally {
      c.end();
    }
  }

  /**
   * One line per fence with usage <= READ, signalled ones included (`dma_resv_describe`):
   * `"\t<usage> fence:<driver> <timeline> seq <seqno> <un>signalled\n"`.
   *
   * @throws {DmaBufError} EPERM without the lock.
   */
  describe(): string {
    const d = this._check();
    assertHeld(d, this._slot);
    let out = '';
    const c = new LockedCursor(d, this._slot, DmaResvUsage.READ);
    for (let ok = c.first(); ok; ok = c.next()) {
      const f = wrapFence(c.fence, c.fenceGen, false);
      out += `\t${USAGE_NAMES[c.fenceUsage]} fence:${f.describe()}\n`;
    }
    return out;
  }

  /** Number of fences in the list, signalled ones included (the kernel's `num_fences`). */
  get numFences(): number {
    const d = this._check();
    const c = new UnlockedCursor(d, this._slot, DmaResvUsage.BOOKKEEP);
    return c.count();
  }

  /** Slots reserved in the list (the kernel's `max_fences`); meaningful while locked. */
  get maxFences(): number {
    const d = this._check();
    const list = currentList(d, this._slot);
    return list < 0 ? 0 : d.ld(list, L_MAX);
  }
}
