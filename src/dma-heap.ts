/**
 * dma-buf heaps (drivers/dma-buf/dma-heap.c, include/uapi/linux/dma-heap.h): a registry of
 * named allocators and the `DMA_HEAP_IOCTL_ALLOC` uAPI, plus the shared arena both heaps build
 * on (see `heaps/system-heap.ts`, `heaps/cma-heap.ts`).
 *
 * ## Design: where a heap's state lives
 *
 * A heap is one DMA_HEAP record of the domain (identity, name, reference count, link of the
 * domain-wide registry list) plus one **arena**: a backing `SharedArrayBuffer` from
 * {@linkcode allocBacking} whose first pages are the heap's control block (lock word, page
 * bitmap, free-chunk pools, accounting) and whose remaining pages are the memory handed out.
 * The arena is self-describing: every chunk of a heap buffer points into it, so whichever thread
 * drops a buffer's last reference frees its chunks through `chunk.sab` alone, under the arena's
 * lock, with no routing. Any thread that imported the heap (`DmaHeap.import`) allocates from the
 * same arena. The first data page is 1 MiB-aligned in physical address space, so a chunk of
 * order n is physically aligned to its size, like the buddy allocator's pages.
 *
 * References: the creating handle, the registry (until {@linkcode DmaHeap.remove}), every
 * imported handle and every live buffer hold one on the record; the record goes when the last
 * is gone, so a heap outlives its buffers.
 *
 * Exporter ops are registered (`registerDmaBufExporter`) under each heap's name in every thread
 * that loads this module (for the heaps already listed) and on create/import/
 * {@linkcode dmaHeapSyncExporters}: they then run in whichever thread operates on the buffer.
 *
 * ## Kernel rules kept
 * - ALLOC: `_IOC_NR(cmd) >= 1` → EINVAL (not ENOTTY); `fd != 0` → EINVAL; `fd_flags` outside
 *   `O_CLOEXEC | O_ACCMODE` → EINVAL; `heap_flags != 0` → EINVAL; `PAGE_ALIGN(len) == 0` (len 0,
 *   or within a page of 2^64) → EINVAL; the heap's error unchanged (ENOMEM); never E2BIG.
 * - The buffer's size is `PAGE_ALIGN(len)`, its access mode `fd_flags & O_ACCMODE`, its
 *   `exp_name` the heap's name. Memory is always zeroed.
 * - Registration: empty name → EINVAL; a name already registered (in any thread) → EEXIST (≥ 6.1).
 * - mmap: MAP_PRIVATE → EINVAL (CMA's explicit check; the system heap's remap fails likewise).
 *
 * ## Deviations
 * - Heaps can be removed ({@linkcode DmaHeap.remove}; the kernel never unregisters) so that a
 *   program can end with no shared record left.
 * - A buffer released by a finalizer in a thread that never held its memory cannot find its
 *   arena (the core passes empty memory): a warning is emitted and the chunks stay allocated.
 *
 * @module
 */
import {
  DmaBuf,
  type DmaBufOps,
  dmaBufBeginCpuAccessMemory,
  dmaBufEndCpuAccessMemory,
  dmaBufMapMemory,
  dmaBufUnmapMemory,
  MAP_SHARED,
  O_ACCMODE,
  O_CLOEXEC,
  O_RDWR,
  registerDmaBufExporter,
} from './dma-buf.js';
import {
  allocBacking,
  BufferMemory,
  type MemoryChunk,
  PAGE_SIZE,
  pageAlign,
} from './dma-buf-memory.js';
import type { SharedRegion } from './substrate/backend.js';
import { domain, RecordType } from './substrate/domain.js';
import { DmaBufError } from './substrate/errno.js';
import { claim, HandleKind, type SharedMessage, SharedObject } from './substrate/handle.js';
import { lockWord, unlockWord } from './substrate/lock.js';

// ---- uAPI -------------------------------------------------------------------------------------

/** `DMA_HEAP_IOCTL_ALLOC` = `_IOWR('H', 0, struct dma_heap_allocation_data)`. */
export const DMA_HEAP_IOCTL_ALLOC = 0xc0184800;
/** `DMA_HEAP_VALID_FD_FLAGS`. */
export const DMA_HEAP_VALID_FD_FLAGS = O_CLOEXEC | O_ACCMODE;
/** `DMA_HEAP_VALID_HEAP_FLAGS`: no heap flag exists. */
export const DMA_HEAP_VALID_HEAP_FLAGS = 0n;

/** `struct dma_heap_allocation_data`. `fd` is filled with the buffer on success. */
export interface DmaHeapAllocationData {
  len: number | bigint;
  /** Must be 0 on input. */
  fd?: number | DmaBuf;
  fdFlags: number;
  heapFlags?: number | bigint;
}

const U64 = 1n << 64n;

// ---- arena layout -----------------------------------------------------------------------------

/** Chunk orders of the system heap, largest first (1 MiB, 64 KiB, 4 KiB). */
export const HEAP_ORDERS = [8, 4, 0] as const;
const MAGIC = 0x68656170; // "heap"
export const HeapKind = { SYSTEM: 1, CMA: 2 } as const;
export type HeapKind = (typeof HeapKind)[keyof typeof HeapKind];

const A_MAGIC = 0;
const A_KIND = 1;
const A_LOCK = 2;
const A_PAGES = 3;
const A_DATA = 4; // data offset (bytes) / PAGE_SIZE
const A_HW = 5; // high-water mark: pages at or past it were never handed out (still zero)
const A_SLOT = 6;
const A_GEN = 7;
const A_BITMAP = 8; // word index of the bitmap
const A_LIVE_PAGES = 9;
const A_LIVE_BUFS = 10;
const A_POOLED_PAGES = 11;
const A_TOTAL_ALLOCS = 12;
const A_FAILED = 13;
const A_POOL_TOP = 16; // + order index (0..2): entries in each pool
const A_POOL_BASE = 20; // + order index: word index of each pool's stack
const A_POOL_CAP = 24; // + order index
const A_HEADER_WORDS = 32;
const MIB = 1 << 20;

/** A heap's arena: the control block and the memory, in one shared buffer. */
export class Arena {
  readonly sab: SharedArrayBuffer;
  readonly i32: Int32Array;
  readonly phys: number;
  readonly pages: number;
  readonly dataOffset: number;
  readonly kind: HeapKind;
  readonly #bitmap: number;

  private constructor(sab: SharedArrayBuffer, phys: number) {
    this.sab = sab;
    this.phys = phys;
    const head = new Int32Array(sab, 0, A_HEADER_WORDS);
    if (Atomics.load(head, A_MAGIC) !== MAGIC) throw new DmaBufError('EINVAL', 'not a heap arena');
    this.dataOffset = Atomics.load(head, A_DATA) * PAGE_SIZE;
    this.i32 = new Int32Array(sab, 0, this.dataOffset / 4);
    this.pages = Atomics.load(head, A_PAGES);
    this.kind = Atomics.load(head, A_KIND) as HeapKind;
    this.#bitmap = Atomics.load(head, A_BITMAP);
  }

  /** Creates an arena of `capacity` bytes of memory (rounded up to pages). */
  static create(kind: HeapKind, capacity: number, pools: boolean): Arena {
    const pages = pageAlign(capacity) / PAGE_SIZE;
    const bitmapWords = Math.ceil(pages / 32);
    let words = A_HEADER_WORDS + bitmapWords;
    const caps = pools ? HEAP_ORDERS.map((o) => Math.floor(pages / (1 << o))) : [0, 0, 0];
    const bases: number[] = [];
    for (const c of caps) {
      bases.push(words);
      words += c;
    }
    const header = pageAlign(words * 4);
    // One MiB of slack so the first data page can be 1 MiB-aligned physically.
    const backing = allocBacking(header + MIB + pages * PAGE_SIZE);
    let data = header;
    while ((backing.phys + data) % MIB !== 0) data += PAGE_SIZE;
    const i32 = new Int32Array(backing.sab, 0, data / 4);
    i32[A_KIND] = kind;
    i32[A_PAGES] = pages;
    i32[A_DATA] = data / PAGE_SIZE;
    i32[A_BITMAP] = A_HEADER_WORDS;
    for (let k = 0; k < 3; k++) {
      i32[A_POOL_BASE + k] = bases[k]!;
      i32[A_POOL_CAP + k] = caps[k]!;
    }
    Atomics.store(i32, A_MAGIC, MAGIC);
    return new Arena(backing.sab, backing.phys);
  }

  /** The arena a chunk (or a shared arena buffer) belongs to. */
  static of(sab: SharedArrayBuffer, phys: number): Arena {
    let a = arenas.get(sab);
    if (!a) {
      a = new Arena(sab, phys);
      arenas.set(sab, a);
    }
    return a;
  }

  /** Arena from a chunk: its physical base is the chunk's minus its offset. */
  static ofChunk(c: MemoryChunk): Arena {
    return Arena.of(c.sab, c.phys - c.offset);
  }

  get slot(): number {
    return Atomics.load(this.i32, A_SLOT);
  }
  get gen(): number {
    return Atomics.load(this.i32, A_GEN);
  }

  /** @internal */
  bind(slot: number, gen: number): void {
    Atomics.store(this.i32, A_SLOT, slot);
    Atomics.store(this.i32, A_GEN, gen);
  }

  lock(): void {
    // The lock functions take a region; the arena words act as one.
    lockWord(this.#region(), A_LOCK);
  }
  unlock(): void {
    unlockWord(this.#region(), A_LOCK);
  }
  #regionCache: LockRegion | undefined;
  #region(): SharedRegion {
    if (!this.#regionCache) {
      const i32 = this.i32;
      this.#regionCache = {
        i32,
        wait: (index: number, value: number, timeout: number) =>
          Atomics.wait(i32, index, value, timeout),
        notify: (index: number, count?: number) => Atomics.notify(i32, index, count),
      };
    }
    // lockWord only uses i32, wait and notify.
    return this.#regionCache as unknown as SharedRegion;
  }

  // ---- page bitmap (caller holds the lock) ----

  #isFree(p: number): boolean {
    return (this.i32[this.#bitmap + (p >>> 5)]! & (1 << (p & 31))) === 0;
  }

  #mark(p: number, n: number, used: boolean): void {
    for (let i = p; i < p + n; ) {
      const w = this.#bitmap + (i >>> 5);
      if ((i & 31) === 0 && i + 32 <= p + n) {
        this.i32[w] = used ? -1 : 0;
        i += 32;
        continue;
      }
      if (used) this.i32[w]! |= 1 << (i & 31);
      else this.i32[w]! &= ~(1 << (i & 31));
      i++;
    }
  }

  /** First page of a free run of `n` pages starting at a multiple of `align` pages, or -1. */
  findRun(n: number, align: number): number {
    const pages = this.pages;
    let start = 0;
    while (start + n <= pages) {
      let bad = -1;
      for (let i = start; i < start + n; ) {
        const w = this.i32[this.#bitmap + (i >>> 5)]!;
        if ((i & 31) === 0 && i + 32 <= start + n) {
          if (w !== 0) {
            bad = i + (31 - Math.clz32(w & -w));
            break;
          }
          i += 32;
          continue;
        }
        if (!this.#isFree(i)) {
          bad = i;
          break;
        }
        i++;
      }
      if (bad < 0) return start;
      start = Math.floor(bad / align + 1) * align;
    }
    return -1;
  }

  /** Marks pages used; returns whether the run was pristine (past the high-water mark). */
  take(p: number, n: number): boolean {
    this.#mark(p, n, true);
    const hw = this.i32[A_HW]!;
    if (p + n > hw) this.i32[A_HW] = p + n;
    return p >= hw;
  }

  /** Returns pages to the bitmap. */
  give(p: number, n: number): void {
    this.#mark(p, n, false);
  }

  // ---- pools (system heap; caller holds the lock) ----

  poolPop(k: number): number {
    const top = this.i32[A_POOL_TOP + k]!;
    if (top === 0) return -1;
    this.i32[A_POOL_TOP + k] = top - 1;
    this.i32[A_POOLED_PAGES]! -= 1 << HEAP_ORDERS[k]!;
    return this.i32[this.i32[A_POOL_BASE + k]! + top - 1]!;
  }

  poolPush(k: number, p: number): void {
    const top = this.i32[A_POOL_TOP + k]!;
    if (top >= this.i32[A_POOL_CAP + k]!) {
      this.give(p, 1 << HEAP_ORDERS[k]!);
      return;
    }
    this.i32[this.i32[A_POOL_BASE + k]! + top] = p;
    this.i32[A_POOL_TOP + k] = top + 1;
    this.i32[A_POOLED_PAGES]! += 1 << HEAP_ORDERS[k]!;
  }

  /** Returns every pooled chunk to the bitmap (the pool shrinker). */
  drainPools(): void {
    for (let k = 0; k < 3; k++) {
      for (let p = this.poolPop(k); p >= 0; p = this.poolPop(k)) this.give(p, 1 << HEAP_ORDERS[k]!);
    }
  }

  /** Pages held by the pools (lock held). */
  pooledPages(): number {
    return this.i32[A_POOLED_PAGES]!;
  }

  hasPools(): boolean {
    return this.i32[A_POOL_CAP + 2]! > 0;
  }

  // ---- chunks and accounting ----

  chunk(p: number, n: number): MemoryChunk {
    const offset = this.dataOffset + p * PAGE_SIZE;
    return { sab: this.sab, offset, length: n * PAGE_SIZE, phys: this.phys + offset };
  }

  pageOf(c: MemoryChunk): number {
    return (c.offset - this.dataOffset) / PAGE_SIZE;
  }

  /** Zeroes a chunk (outside the lock: the chunk is the caller's). */
  zero(c: MemoryChunk): void {
    new Uint8Array(this.sab, c.offset, c.length).fill(0);
  }

  account(pages: number, bufs: number): void {
    Atomics.add(this.i32, A_LIVE_PAGES, pages);
    Atomics.add(this.i32, A_LIVE_BUFS, bufs);
    if (bufs > 0) Atomics.add(this.i32, A_TOTAL_ALLOCS, 1);
  }

  failed(): void {
    Atomics.add(this.i32, A_FAILED, 1);
  }

  stats(): DmaHeapStats {
    const i32 = this.i32;
    let used = 0;
    for (let w = 0; w < Math.ceil(this.pages / 32); w++) {
      let x = Atomics.load(i32, this.#bitmap + w);
      while (x !== 0) {
        x &= x - 1;
        used++;
      }
    }
    return {
      capacity: this.pages * PAGE_SIZE,
      bytes: Atomics.load(i32, A_LIVE_PAGES) * PAGE_SIZE,
      buffers: Atomics.load(i32, A_LIVE_BUFS),
      pooledBytes: Atomics.load(i32, A_POOLED_PAGES) * PAGE_SIZE,
      usedBytes: used * PAGE_SIZE,
      allocations: Atomics.load(i32, A_TOTAL_ALLOCS),
      failures: Atomics.load(i32, A_FAILED),
    };
  }
}

/** The part of a SharedRegion the lock functions use. */
interface LockRegion {
  i32: Int32Array;
  wait(index: number, value: number, timeout: number): string;
  notify(index: number, count?: number): number;
}

const arenas = new WeakMap<SharedArrayBuffer, Arena>();

/** Accounting of one heap (all threads). */
export interface DmaHeapStats {
  /** Bytes of memory the heap manages. */
  capacity: number;
  /** Bytes of live buffers. */
  bytes: number;
  /** Live buffers. */
  buffers: number;
  /** Bytes in the free-chunk pools (system heap). */
  pooledBytes: number;
  /** Bytes taken from the page bitmap (live + pooled). */
  usedBytes: number;
  /** Successful allocations so far. */
  allocations: number;
  /** Allocations that failed with ENOMEM. */
  failures: number;
}

/** What a heap implementation returns: the chunks of one buffer (zeroed). */
export type HeapAllocator = (arena: Arena, size: number) => MemoryChunk[];

const allocators = new Map<HeapKind, HeapAllocator>();

/** @internal Heap implementations register their allocator here (module load). */
export function registerHeapKind(kind: HeapKind, allocate: HeapAllocator): void {
  allocators.set(kind, allocate);
}

/**
 * Frees a buffer's chunks into their arena: to the per-order pools when the arena has them
 * (system heap), else straight back to the page bitmap (CMA). Runs in any thread.
 */
function arenaFree(arena: Arena, chunks: readonly MemoryChunk[]): void {
  const pools = arena.hasPools();
  arena.lock();
  try {
    for (const c of chunks) {
      const pages = c.length / PAGE_SIZE;
      if (pools) arena.poolPush(pages >= 256 ? 0 : pages >= 16 ? 1 : 2, arena.pageOf(c));
      else arena.give(arena.pageOf(c), pages);
    }
  } finally {
    arena.unlock();
  }
}

// ---- registry record --------------------------------------------------------------------------

const W_NAME = 3;
const W_NEXT = 4; // next slot + 1 in the registry list
const W_NEXTGEN = 5;
const W_LISTED = 6;
/** Domain global words (Domain.globalWord) of the registry: list lock and list head (slot + 1). */
const G_LOCK = 24;
const G_HEAD = 25;
const G_HEADGEN = 26;

function putHeap(slot: number): void {
  const d = domain();
  if (d.put(slot)) d.free(slot);
}

const heapKind = new HandleKind('dma-heap', RecordType.DMA_HEAP, putHeap);
const ADOPT: unique symbol = Symbol('adopt-dma-heap');

function regionOfDomain(): SharedRegion {
  return domain().region;
}

/** Walks the registry list (lock held by the caller): [slot, gen, name]. */
function* listed(): Generator<[number, number, string]> {
  const d = domain();
  let s = Atomics.load(d.i32, d.globalWord(G_HEAD)) - 1;
  let g = Atomics.load(d.i32, d.globalWord(G_HEADGEN));
  while (s >= 0) {
    const b = d.base(s);
    yield [s, g, d.name(Atomics.load(d.i32, b + W_NAME))];
    const nb = d.base(s);
    const ns = Atomics.load(d.i32, nb + W_NEXT) - 1;
    g = Atomics.load(d.i32, nb + W_NEXTGEN);
    s = ns;
  }
}

function withList<T>(fn: () => T): T {
  const d = domain();
  const r = regionOfDomain();
  lockWord(r, d.globalWord(G_LOCK));
  try {
    return fn();
  } finally {
    unlockWord(r, d.globalWord(G_LOCK));
  }
}

/** Names of every registered heap (all threads), in registration order. */
export function dmaHeapNames(): string[] {
  return withList(() => [...listed()].map(([, , n]) => n)).reverse();
}

/**
 * Registers the heap exporter ops in this thread under every registered heap's name, so that
 * this thread can run the ops of heap buffers it receives. Called at module load, on create and
 * import; call it in a thread that loaded this module before a heap was added elsewhere.
 */
export function dmaHeapSyncExporters(): void {
  for (const n of dmaHeapNames()) {
    try {
      registerDmaBufExporter(n, opsFor(n));
    } catch {
      // Another exporter owns the name here: its buffers keep their own ops.
    }
  }
}

const localHeaps = new Map<string, DmaHeap>();

/** The heap named `name` known in this thread (created or imported here), or undefined. */
export function dmaHeapFind(name: string): DmaHeap | undefined {
  const h = localHeaps.get(name);
  return h?.alive ? h : undefined;
}

/** The postable form of a heap. */
export interface DmaHeapMessage extends SharedMessage {
  readonly arena: SharedArrayBuffer;
  readonly phys: number;
}

/** Options common to heap creation. */
export interface DmaHeapOptions {
  name?: string;
  /** Bytes of memory the heap manages. */
  capacity?: number;
}

/** A dma-buf heap handle (`struct dma_heap` / an open `/dev/dma_heap/<name>`). */
export class DmaHeap extends SharedObject {
  readonly arena: Arena;
  readonly #name: string;

  /** @internal */
  constructor(token: typeof ADOPT, slot: number, gen: number, arena: Arena, name: string) {
    if (token !== ADOPT) throw new TypeError('use createSystemHeap() / createCmaHeap()');
    super(slot, gen, true);
    this.arena = arena;
    this.#name = name;
  }

  /** @internal */
  override _kind(): HandleKind {
    return heapKind;
  }

  /**
   * `dma_heap_add`: creates a heap of `kind` and registers it.
   *
   * @throws {DmaBufError} EINVAL for an empty or non-string name or a bad capacity; EEXIST when
   *   the name is registered (any thread).
   * @internal use `createSystemHeap` / `createCmaHeap`.
   */
  static _create(kind: HeapKind, name: string, capacity: number, pools: boolean): DmaHeap {
    if (typeof name !== 'string' || name.length === 0) {
      throw new DmaBufError('EINVAL', 'heap name must be a non-empty string');
    }
    if (!Number.isSafeInteger(capacity) || capacity <= 0) {
      throw new DmaBufError('EINVAL', `heap capacity must be a positive integer, got ${capacity}`);
    }
    if (!allocators.has(kind)) throw new DmaBufError('EINVAL', 'unknown heap kind');
    const d = domain();
    const nameId = d.intern(name);
    const arena = Arena.create(kind, capacity, pools);
    arenas.set(arena.sab, arena);
    const slot = withList(() => {
      for (const [, , n] of listed()) {
        if (n === name) throw new DmaBufError('EEXIST', `heap '${name}' already exists`);
      }
      const s = d.alloc(RecordType.DMA_HEAP);
      const b = d.base(s);
      Atomics.store(d.i32, b + W_NAME, nameId);
      Atomics.store(d.i32, b + W_NEXT, Atomics.load(d.i32, d.globalWord(G_HEAD)));
      Atomics.store(d.i32, b + W_NEXTGEN, Atomics.load(d.i32, d.globalWord(G_HEADGEN)));
      Atomics.store(d.i32, b + W_LISTED, 1);
      d.get(s); // the registry's reference
      Atomics.store(d.i32, d.globalWord(G_HEADGEN), d.gen(s));
      Atomics.store(d.i32, d.globalWord(G_HEAD), s + 1);
      return s;
    });
    const gen = d.gen(slot);
    arena.bind(slot, gen);
    registerDmaBufExporter(name, opsFor(name));
    const h = new DmaHeap(ADOPT, slot, gen, arena, name);
    localHeaps.set(name, h);
    return h;
  }

  /**
   * Adopts a heap shared by another thread; it becomes findable here by name.
   *
   * @throws {DmaBufError} EINVAL for a bad message; EBADF when it was imported or the heap gone.
   */
  static import(msg: DmaHeapMessage): DmaHeap {
    const d = claim(msg, heapKind);
    const name = d.name(Atomics.load(d.i32, d.base(msg.slot) + W_NAME));
    let arena: Arena;
    try {
      if (!(msg.arena instanceof SharedArrayBuffer)) throw new DmaBufError('EINVAL', 'no arena');
      arena = Arena.of(msg.arena, msg.phys);
    } catch (e) {
      putHeap(msg.slot);
      throw e;
    }
    dmaHeapSyncExporters();
    const h = new DmaHeap(ADOPT, msg.slot, msg.gen, arena, name);
    localHeaps.set(name, h);
    return h;
  }

  /** Gives back the reference of a message that will never be imported. */
  static override releaseShared(msg: SharedMessage): void {
    SharedObject.releaseShared(msg, heapKind);
  }

  override share(): DmaHeapMessage {
    const m = super.share();
    return { ...m, arena: this.arena.sab, phys: this.arena.phys };
  }

  /** The heap's name (`dma_heap_get_name`). */
  get name(): string {
    this._check();
    return this.#name;
  }

  /** Which implementation backs the heap. */
  get kind(): HeapKind {
    return this.arena.kind;
  }

  /** Accounting (all threads). */
  stats(): DmaHeapStats {
    this._check();
    return this.arena.stats();
  }

  /**
   * Unregisters the heap (deviation: the kernel never does). Its name becomes free; the heap
   * lives on while handles or buffers hold it. Idempotent.
   */
  remove(): void {
    const d = this._check();
    const slot = this._slot;
    const dropped = withList(() => {
      if (Atomics.load(d.i32, d.base(slot) + W_LISTED) === 0) return false;
      // Unlink.
      const headW = d.globalWord(G_HEAD);
      const headGenW = d.globalWord(G_HEADGEN);
      const next = Atomics.load(d.i32, d.base(slot) + W_NEXT);
      const nextGen = Atomics.load(d.i32, d.base(slot) + W_NEXTGEN);
      if (Atomics.load(d.i32, headW) - 1 === slot) {
        Atomics.store(d.i32, headW, next);
        Atomics.store(d.i32, headGenW, nextGen);
      } else {
        for (const [s] of listed()) {
          const b = d.base(s);
          if (Atomics.load(d.i32, b + W_NEXT) - 1 === slot) {
            Atomics.store(d.i32, b + W_NEXT, next);
            Atomics.store(d.i32, b + W_NEXTGEN, nextGen);
            break;
          }
        }
      }
      Atomics.store(d.i32, d.base(slot) + W_LISTED, 0);
      return true;
    });
    if (dropped) putHeap(slot);
  }

  /**
   * `dma_heap_buffer_alloc`: a zeroed buffer of `PAGE_ALIGN(len)` bytes exported with access
   * mode `fdFlags & O_ACCMODE` (default `O_RDWR | O_CLOEXEC`).
   *
   * @throws {DmaBufError} EINVAL for bad flags or a length that aligns to 0; ENOMEM.
   */
  allocate(len: number | bigint, fdFlags = O_RDWR | O_CLOEXEC, heapFlags: number | bigint = 0n) {
    const size = checkAlloc(len, 0, fdFlags, heapFlags);
    return this.#allocate(size, fdFlags);
  }

  #allocate(size: bigint, fdFlags: number): DmaBuf {
    const d = this._check();
    const arena = this.arena;
    if (size > BigInt(arena.pages * PAGE_SIZE)) {
      arena.failed();
      throw new DmaBufError('ENOMEM', `heap '${this.#name}' cannot hold ${size} bytes`);
    }
    const bytes = Number(size);
    const chunks = allocators.get(arena.kind)!(arena, bytes);
    arena.account(bytes / PAGE_SIZE, 1);
    d.get(this._slot); // the buffer's reference on its heap
    try {
      return DmaBuf.export({
        ops: opsFor(this.#name),
        expName: this.#name,
        size: bytes,
        memory: new BufferMemory(chunks),
        flags: fdFlags & O_ACCMODE,
        priv: { heap: this.#name },
      });
    } catch (e) {
      arenaFree(arena, chunks);
      arena.account(-bytes / PAGE_SIZE, -1);
      putHeap(this._slot);
      throw e;
    }
  }

  /**
   * `DMA_HEAP_IOCTL_ALLOC` with the kernel's dispatch and validation order; on success
   * `data.fd` holds the buffer and it is returned.
   *
   * @throws {DmaBufError} EINVAL (see the module doc); ENOMEM.
   */
  ioctl(cmd: number, data: DmaHeapAllocationData): DmaBuf {
    this._check();
    if (!Number.isInteger(cmd) || (cmd & 0xff) >= 1) {
      throw new DmaBufError('EINVAL', `unknown dma-heap ioctl nr ${cmd & 0xff}`);
    }
    if (typeof data !== 'object' || data === null) throw new DmaBufError('EFAULT', 'no data');
    const fd = data.fd ?? 0;
    const size = checkAlloc(data.len, fd, data.fdFlags, data.heapFlags ?? 0n);
    const buf = this.#allocate(size, data.fdFlags);
    data.fd = buf;
    return buf;
  }
}

function checkAlloc(
  len: number | bigint,
  fd: number | DmaBuf,
  fdFlags: number,
  heapFlags: number | bigint,
): bigint {
  if (fd !== 0) throw new DmaBufError('EINVAL', 'fd must be 0 on input');
  if (!Number.isInteger(fdFlags) || (fdFlags & ~DMA_HEAP_VALID_FD_FLAGS) !== 0 || fdFlags < 0) {
    throw new DmaBufError('EINVAL', 'fd_flags outside O_CLOEXEC | O_ACCMODE');
  }
  let hf: bigint;
  if (typeof heapFlags === 'bigint') hf = heapFlags;
  else if (Number.isSafeInteger(heapFlags)) hf = BigInt(heapFlags);
  else throw new DmaBufError('EINVAL', 'heap_flags must be an integer');
  if ((hf & ~DMA_HEAP_VALID_HEAP_FLAGS) !== 0n) {
    throw new DmaBufError('EINVAL', 'unknown heap flags');
  }
  let l: bigint;
  if (typeof len === 'bigint') l = len;
  else if (Number.isSafeInteger(len)) l = BigInt(len);
  else throw new DmaBufError('EINVAL', 'len must be an integer');
  l = BigInt.asUintN(64, l);
  const aligned = ((l + BigInt(PAGE_SIZE - 1)) & ~BigInt(PAGE_SIZE - 1)) % U64;
  if (aligned === 0n) throw new DmaBufError('EINVAL', 'len aligns to 0');
  return aligned;
}

// ---- exporter ops -----------------------------------------------------------------------------

function releaseHeapBuffer(buf: DmaBuf): void {
  const chunks = buf.memory.chunks;
  const first = chunks[0];
  if (!first) {
    process.emitWarning(
      `heap buffer '${buf.expName}' released without its memory: chunks stay allocated`,
      'DmaHeapWarning',
    );
    return;
  }
  const arena = Arena.ofChunk(first);
  const pages = buf.memory.byteLength / PAGE_SIZE;
  arenaFree(arena, chunks);
  arena.account(-pages, -1);
  const d = domain();
  if (d.gen(arena.slot) === arena.gen) putHeap(arena.slot);
}

/** The exporter ops of every heap buffer (registered under each heap's name). */
export const heapOps: DmaBufOps = {
  map: dmaBufMapMemory,
  unmap: dmaBufUnmapMemory,
  release: releaseHeapBuffer,
  mmap: (_buf, vma) => {
    if ((vma.flags & MAP_SHARED) === 0) {
      throw new DmaBufError('EINVAL', 'heap buffers need MAP_SHARED');
    }
  },
  vmap: () => {},
  vunmap: () => {},
  // system_heap_dma_buf_begin/end_cpu_access: sync every mapped attachment (any thread).
  beginCpuAccess: dmaBufBeginCpuAccessMemory,
  endCpuAccess: dmaBufEndCpuAccessMemory,
};

/**
 * One ops object per heap name (the core identifies a registered exporter by its ops object, so
 * every name needs its own), the same object for a name in this thread forever.
 */
const opsByName = new Map<string, DmaBufOps>();
function opsFor(name: string): DmaBufOps {
  let ops = opsByName.get(name);
  if (!ops) {
    ops = { ...heapOps };
    opsByName.set(name, ops);
  }
  return ops;
}

dmaHeapSyncExporters();
