/**
 * The domain: one shared control region that every thread of a process attaches.
 *
 * It holds what the kernel keeps in global state: the context counter, a name table, the table
 * of threads that take part (each with a mailbox), and a slab of fixed-size records in which
 * every shared object (fence, callback node, ...) keeps its state. A record is named by a
 * (slot, generation) pair: the generation changes when the slot is freed, so a handle that
 * outlives its object is recognised as stale instead of reaching the slot's next tenant (the
 * role RCU and reference counts play for kernel pointers).
 *
 * Every worker reaches the same domain: the main thread (or the first worker that has none)
 * creates it and publishes it with `setEnvironmentData`, so workers started later inherit it;
 * a worker started earlier attaches it from the first shared object it imports.
 *
 * @module
 */
import {
  getEnvironmentData,
  isMainThread,
  setEnvironmentData,
  threadId,
} from 'node:worker_threads';
import { type RegionDescriptor, type SharedRegion, sabBackend } from './backend.js';
import { DmaBufError } from './errno.js';
import {
  breakHeldLocks,
  breakLockWord,
  HELD_SLOTS,
  lockOwnedWord,
  setHeldList,
  tryLockOwnedWord,
  unlockOwnedWord,
} from './lock.js';

const MAGIC = 0x646d6162; // "dmab"
const VERSION = 2;
const ENV_KEY = 'dmabuf:domain';

// Header words.
const H_MAGIC = 0;
const H_VERSION = 1;
const H_ID = 2;
const H_SLAB_LOCK = 3;
const H_FREE_HEAD = 4;
const H_BUMP = 5;
/** Live records counted by threads that have left or have no slot; see T_LIVE for the rest. */
const H_LIVE = 6;
const H_THREAD_LOCK = 7;
const H_NAMES_LOCK = 8;
const H_NAMES_USED = 9;
/** @internal The domain's robust lock words: reaping breaks a dead thread's holds of them. */
export const DOMAIN_LOCK_WORDS = {
  slab: H_SLAB_LOCK,
  threads: H_THREAD_LOCK,
  names: H_NAMES_LOCK,
} as const;
/** First word of the 64-bit context counter (i64 index H_CONTEXT / 2). */
const H_CONTEXT = 16;
/**
 * Words 32..63 are free for objects that need one global word (see {@linkcode Domain.globalWord}):
 * n = 0, 1 the stub fence (slot, lock), n = 2 the ww_mutex stamp counter, n = 20..22 the global
 * dma-buf list (lock, head node, count; dma-buf-list.ts), n = 24..26 the heap
 * registry (lock, head, head generation), n = 28, 29 the dma-buf inode counter, n = 31 the
 * physical page-frame counter of buffer memory.
 */
const H_GLOBALS = 32;
const H_GLOBALS_END = 64;

// Name table: length-prefixed UTF-8 strings, named by their word offset in the table.
const NAMES_BASE = 64;
const NAMES_WORDS = 16384;
/** Longest name we store, in UTF-8 bytes (the kernel's names are short strings too). */
export const MAX_NAME_BYTES = 64;

// Thread table.
/** How many threads can take part in one domain at once. */
export const MAX_THREADS = 256;
const THREADS_BASE = NAMES_BASE + NAMES_WORDS;
const T_WORDS = 16;
const T_STATE = 0;
const T_TID = 1;
const T_LOCK = 2;
const T_HEAD = 3;
const T_TAIL = 4;
const T_DOORBELL = 5;
const T_OVERFLOW = 6;
/** Number of callbacks the thread has pending (lets a broadcast skip idle threads). */
const T_PENDING = 7;
/**
 * Records this thread allocated minus those it freed (either may be negative). Only the thread
 * writes it, with plain stores: a shared counter cost two locked instructions per record. When
 * the thread leaves (or is reaped) the word is folded into H_LIVE, under H_THREAD_LOCK.
 */
const T_LIVE = 8;
/** The thread's held list: the domain lock words it holds (see lock.ts), words 9..15. */
const T_HELD = 9;
if (T_HELD + HELD_SLOTS > T_WORDS) throw new Error('thread entry too small for the held list');
const RING = 256;
const ENTRY_WORDS = 3;
const RINGS_BASE = THREADS_BASE + MAX_THREADS * T_WORDS;
const RECORDS_BASE = RINGS_BASE + MAX_THREADS * RING * ENTRY_WORDS;

/** Size of one record in 32-bit words (96 bytes; 8-byte aligned for 64-bit fields). */
export const RECORD_WORDS = 24;
const INITIAL_RECORDS = 4096;
const REFILL = 64;
const CACHE_HIGH = 512;
const MAX_BYTES = 1 << 30;

// Common record words (the rest belong to the object that owns the record).
/** Word 0: record type in bits 24..27, object flags in the low bits. */
export const R_FLAGS = 0;
/** Word 1: generation; changes every time the slot is freed. Never 0 for a live record. */
export const R_GEN = 1;
/**
 * Word 2: the reference word: a tag of the record's generation in bits 21..30 and the count in
 * bits 0..20 (read the count with {@linkcode refCount}). The tag lets `tryGet` take a reference
 * in one compare-exchange that fails if the slot was freed and reused meanwhile: without it, a
 * reader could increment the next tenant's count, and its undo could drop that tenant's last
 * reference without releasing it (a leak seen under the dma_resv stress test).
 */
export const R_REF = 2;
const REF_COUNT_MASK = (1 << 21) - 1;

/** The tag of generation `gen` in the reference word (never 0, so a freed word matches none). */
function refTag(gen: number): number {
  return ((gen % 1023) + 1) << 21;
}

/** The reference count in a reference word. */
export function refCount(word: number): number {
  return word & REF_COUNT_MASK;
}
/** Word 3: next free slot while the record is free (objects may reuse it while live). */
const R_NEXT = 3;

/** Record types (bits 24..27 of the flags word). */
export const RecordType = {
  FREE: 0,
  FENCE: 1,
  /** A dependent node on a fence's list (dma-fence.ts). */
  NODE: 2,
  /** Overflow storage owned by another record (member lists, fence tables). */
  EXT: 3,
  WW_MUTEX: 4,
  WW_ACQUIRE_CTX: 5,
  DMA_RESV: 6,
  SYNC_FILE: 7,
  SW_SYNC_TIMELINE: 8,
  DRM_SYNCOBJ: 9,
  DMA_BUF: 10,
  DMA_HEAP: 11,
} as const;
export type RecordType = (typeof RecordType)[keyof typeof RecordType];
export const TYPE_SHIFT = 24;
export const TYPE_MASK = 0xf << TYPE_SHIFT;

/** Mailbox message kinds. */
export const Mail = {
  /** A fence with callbacks of the receiving thread has signalled. */
  CALLBACK: 1,
  /** The owner must run the fence's enableSignaling op. */
  ENABLE: 2,
  /** The owner must deliver a deadline hint. */
  DEADLINE: 3,
  /** The owner must run the fence's release op. */
  RELEASE: 4,
} as const;
export type MailHandler = (slot: number, gen: number) => void;

/** A message that attaches a domain in another thread. */
export interface DomainDescriptor {
  readonly id: number;
  readonly region: RegionDescriptor;
}

/**
 * One attached domain. Each thread has its own `Domain` object over the same shared region.
 */
export class Domain {
  readonly region: SharedRegion;
  /** Views of the region; replaced when it grows (read them after `base()`). */
  i32: Int32Array;
  i64: BigInt64Array;
  readonly id: number;
  /** `i32.length`, kept apart: the length of a view on a growable buffer is slow to read. */
  #words: number;
  #cache: number[] = [];
  #threadIndex = -1;
  /** This thread's T_LIVE word, or -1 before it has a thread slot or after it left. */
  #liveWord = -1;
  /**
   * Set when the thread has left (or found no free thread slot): its later allocations count in
   * H_LIVE directly.
   */
  #left = false;
  #handlers = new Map<number, MailHandler>();
  #overflowHandlers: (() => void)[] = [];
  #listening = false;
  #nameCache = new Map<string, number>();
  #nameById = new Map<number, string>();

  private constructor(region: SharedRegion) {
    this.region = region;
    this.i32 = region.i32;
    this.i64 = region.i64;
    this.#words = region.i32.length;
    if (
      Atomics.load(this.i32, H_MAGIC) !== MAGIC ||
      Atomics.load(this.i32, H_VERSION) !== VERSION
    ) {
      throw new DmaBufError('EINVAL', 'not a dmabuf domain region (bad magic or version)');
    }
    this.id = Atomics.load(this.i32, H_ID);
  }

  /** Creates a fresh domain region. */
  static create(): Domain {
    const bytes = RECORDS_BASE * 4 + INITIAL_RECORDS * RECORD_WORDS * 4;
    const region = sabBackend.createRegion(bytes, MAX_BYTES);
    const i32 = region.i32;
    Atomics.store(i32, H_ID, (Math.random() * 0x7fffffff) | 1);
    Atomics.store(i32, H_FREE_HEAD, -1);
    Atomics.store(i32, H_BUMP, 0);
    // Context 0 is reserved for stub fences: the counter starts at 1.
    Atomics.store(region.i64, H_CONTEXT / 2, 1n);
    Atomics.store(i32, H_VERSION, VERSION);
    Atomics.store(i32, H_MAGIC, MAGIC);
    return new Domain(region);
  }

  /** Attaches a domain described by another thread. */
  static attach(desc: DomainDescriptor): Domain {
    const d = new Domain(sabBackend.attachRegion(desc.region));
    if (d.id !== desc.id)
      throw new DmaBufError('EINVAL', 'domain descriptor does not match its region');
    return d;
  }

  /** What another thread needs to attach this domain. */
  descriptor(): DomainDescriptor {
    return { id: this.id, region: this.region.descriptor() };
  }

  // ---- contexts -------------------------------------------------------------------------

  /** Allocates `num` consecutive contexts from the shared counter and returns the first. */
  allocContexts(num: number): bigint {
    return Atomics.add(this.i64, H_CONTEXT / 2, BigInt(num));
  }

  /** The index of a free global word (H_GLOBALS..H_GLOBALS_END) by fixed assignment. */
  globalWord(n: number): number {
    const w = H_GLOBALS + n;
    if (w >= H_GLOBALS_END) throw new RangeError('global word out of range');
    return w;
  }

  // ---- record slab ----------------------------------------------------------------------

  /**
   * Word index of record `slot`. Refreshes this thread's views when the record lies past them
   * (another thread grew the region), so read `i32`/`i64` after calling it.
   */
  base(slot: number): number {
    const w = RECORDS_BASE + slot * RECORD_WORDS;
    if (w + RECORD_WORDS > this.#words) this.#refresh();
    return w;
  }

  /**
   * The 32-bit view, refreshed if needed to cover record `slot`. Use it where the view is an
   * argument evaluated before `base()`: `Atomics.load(d.at32(s), d.base(s) + k)`.
   */
  at32(slot: number): Int32Array {
    this.base(slot);
    return this.i32;
  }

  /** The 64-bit view, refreshed if needed to cover record `slot` (see `at32`). */
  at64(slot: number): BigInt64Array {
    this.base(slot);
    return this.i64;
  }

  /** Word `w` of record `slot` (atomic load; the record's base is computed first). */
  ld(slot: number, w: number): number {
    const b = this.base(slot);
    return Atomics.load(this.i32, b + w);
  }

  /** Stores word `w` of record `slot` (atomic). */
  st(slot: number, w: number, v: number): void {
    const b = this.base(slot);
    Atomics.store(this.i32, b + w, v);
  }

  /** Adds to word `w` of record `slot` (atomic); returns the old value. */
  add32(slot: number, w: number, v: number): number {
    const b = this.base(slot);
    return Atomics.add(this.i32, b + w, v);
  }

  /** 64-bit word `w` (in 64-bit units from the record start) of record `slot` (atomic load). */
  ld64(slot: number, w: number): bigint {
    const b = this.base64(slot);
    return Atomics.load(this.i64, b + w);
  }

  /** Index of the record's first 64-bit word in `i64` (refreshes like `base`). */
  base64(slot: number): number {
    return this.base(slot) >> 1;
  }

  #refresh(): void {
    this.region.refresh();
    this.i32 = this.region.i32;
    this.i64 = this.region.i64;
    this.#words = this.i32.length;
  }

  /** Number of record slots ever handed out (live or free): the range a scan must cover. */
  recordsInUse(): number {
    return Atomics.load(this.i32, H_BUMP);
  }

  /**
   * Number of live records in all threads (for leak checks). Exact when no thread is
   * allocating, freeing or leaving; while they are, a figure that was true a moment ago. Takes
   * no lock, so it never waits for a thread that died holding one.
   */
  liveRecords(): number {
    // Two equal sums in a row: no count moved between them (a thread's count moves into
    // H_LIVE in two steps when it leaves). Under steady traffic, settle for the last sum.
    let last = this.#sumLive();
    for (let i = 0; i < 100; i++) {
      const n = this.#sumLive();
      if (n === last) return n;
      last = n;
    }
    return last;
  }

  #sumLive(): number {
    let n = Atomics.load(this.i32, H_LIVE);
    for (let t = 0; t < MAX_THREADS; t++) {
      const b = THREADS_BASE + t * T_WORDS;
      if (Atomics.load(this.i32, b + T_STATE) !== 0) n += Atomics.load(this.i32, b + T_LIVE);
    }
    return n;
  }

  #reapLater(tid: number): number {
    setTimeout(() => this.reapThread(tid), 1).unref();
    return -1;
  }

  /**
   * Moves thread `t`'s live count into H_LIVE (in two steps: readers see it settle); the
   * caller holds H_THREAD_LOCK, so no other fold or claim runs meanwhile.
   */
  #foldLive(t: number): void {
    const w = THREADS_BASE + t * T_WORDS + T_LIVE;
    Atomics.add(this.i32, H_LIVE, Atomics.exchange(this.i32, w, 0));
  }

  /**
   * Allocates a zeroed record of `type` with reference count 1 and returns its slot; its
   * generation is `gen(slot)`.
   *
   * @throws {DmaBufError} ENOMEM when the region cannot grow any more.
   */
  alloc(type: RecordType): number {
    let slot = this.#cache.pop();
    if (slot === undefined) {
      this.#refill();
      slot = this.#cache.pop();
      if (slot === undefined) throw new DmaBufError('ENOMEM', 'shared record region is full');
    }
    const b = this.base(slot);
    const i32 = this.i32;
    const i64 = this.i64;
    // Plain stores: the record is private to this thread until it is published. Zeroed in
    // 64-bit words by a loop: TypedArray.prototype.fill goes through the runtime and costs
    // more than the rest of an allocation. Records start on an 8-byte boundary.
    i32[b + 3] = 0;
    for (let w = (b + 4) >> 1, end = (b + RECORD_WORDS) >> 1; w < end; w++) i64[w] = 0n;
    // The generation changes only in free(), and this thread owns the free slot.
    i32[b + R_REF] = refTag(i32[b + R_GEN]!) | 1;
    i32[b + R_FLAGS] = type << TYPE_SHIFT;
    this.#countLive(1);
    return slot;
  }

  #countLive(delta: number): void {
    let w = this.#liveWord;
    if (w < 0 && !this.#left) {
      try {
        this.threadIndex();
      } catch {
        // No free thread slot (EMFILE): count in the shared word instead, from now on.
        this.#left = true;
      }
      w = this.#liveWord;
    }
    if (w >= 0) this.i32[w] = this.i32[w]! + delta;
    else Atomics.add(this.i32, H_LIVE, delta);
  }

  /** Frees a record: its generation moves on, so every handle to it becomes stale. */
  free(slot: number): void {
    const b = this.base(slot);
    this.i32[b + R_FLAGS] = 0;
    this.i32[b + R_REF] = 0;
    // The generation moves on last, atomically: that is what makes old handles stale.
    if (Atomics.add(this.i32, b + R_GEN, 1) === 0x7fffffff) Atomics.store(this.i32, b + R_GEN, 1);
    this.#countLive(-1);
    this.#cache.push(slot);
    if (this.#cache.length > CACHE_HIGH) this.#drain(CACHE_HIGH / 2);
  }

  /** Current generation of a slot. */
  gen(slot: number): number {
    const w = this.base(slot) + R_GEN;
    return Atomics.load(this.i32, w);
  }

  /**
   * The generation by a plain read, for checking a handle. Such a check is a snapshot whether
   * the read is atomic or not (the object may be released just after it), and a plain read
   * costs about 1 ns where Node 20's V8, which never inlines `Atomics`, pays a ~10 ns call.
   * Whatever must not act on a released record confirms with an atomic operation after it.
   */
  peekGen(slot: number): number {
    const w = this.base(slot) + R_GEN;
    return this.i32[w]!;
  }

  /** True when (slot, gen) names a live record of `type`. */
  isLive(slot: number, gen: number, type: RecordType): boolean {
    if (!Number.isInteger(slot) || slot < 0 || slot >= Atomics.load(this.i32, H_BUMP)) return false;
    const b = this.base(slot);
    return (
      Atomics.load(this.i32, b + R_GEN) === gen &&
      (Atomics.load(this.i32, b + R_FLAGS) & TYPE_MASK) >>> TYPE_SHIFT === type &&
      refCount(Atomics.load(this.i32, b + R_REF)) > 0
    );
  }

  /**
   * Takes a reference on (slot, gen) unless the object is gone (refcount 0 or slot reused): the
   * `kref_get_unless_zero` + generation re-check that stands in for `get_rcu_safe`.
   */
  tryGet(slot: number, gen: number, type: RecordType): boolean {
    if (!this.isLive(slot, gen, type)) return false;
    const ref = this.base(slot) + R_REF;
    const tag = refTag(gen);
    for (;;) {
      const r = Atomics.load(this.i32, ref);
      // Another generation's tag (the slot was reused) or a count of 0 (being released): gone.
      if ((r & ~REF_COUNT_MASK) !== tag || refCount(r) === 0) return false;
      if (Atomics.compareExchange(this.i32, ref, r, r + 1) === r) break;
    }
    if (this.gen(slot) !== gen) {
      // Only a generation 1023 reuses later can carry the same tag: undo (vanishingly rare).
      this.put(slot);
      return false;
    }
    return true;
  }

  // In get, put and gen the index is computed before the view is read: base() may refresh the
  // views (another thread grew the region), and `Atomics.op(this.i32, this.base(slot))` would
  // evaluate the stale view first and fault on a slot past it.

  /** Adds a reference. */
  get(slot: number): void {
    const w = this.base(slot) + R_REF;
    Atomics.add(this.i32, w, 1);
  }

  /** Drops a reference; returns true when it was the last one (the caller releases). */
  put(slot: number): boolean {
    const w = this.base(slot) + R_REF;
    const prev = refCount(Atomics.sub(this.i32, w, 1));
    if (prev === 0) throw new DmaBufError('EINVAL', 'reference count underflow');
    return prev === 1;
  }

  #refill(): void {
    lockOwnedWord(this.region, H_SLAB_LOCK, threadId);
    try {
      let head = Atomics.load(this.i32, H_FREE_HEAD);
      while (head >= 0 && this.#cache.length < REFILL) {
        this.#cache.push(head);
        head = Atomics.load(this.i32, this.base(head) + R_NEXT);
      }
      Atomics.store(this.i32, H_FREE_HEAD, head);
      if (this.#cache.length > 0) return;
      const first = Atomics.load(this.i32, H_BUMP);
      const want = first + REFILL;
      const bytes = (RECORDS_BASE + want * RECORD_WORDS) * 4;
      if (bytes > this.region.byteLength) {
        const target = Math.min(
          Math.max(bytes, this.region.byteLength * 2),
          this.region.maxByteLength,
        );
        if (target < bytes || !this.region.grow(target)) return;
        this.#refresh();
      }
      for (let s = want - 1; s >= first; s--) {
        Atomics.store(this.i32, this.base(s) + R_GEN, 1);
        this.#cache.push(s);
      }
      Atomics.store(this.i32, H_BUMP, want);
    } finally {
      unlockOwnedWord(this.region, H_SLAB_LOCK);
    }
  }

  #drain(n: number): void {
    lockOwnedWord(this.region, H_SLAB_LOCK, threadId);
    try {
      let head = Atomics.load(this.i32, H_FREE_HEAD);
      for (let i = 0; i < n; i++) {
        const s = this.#cache.pop();
        if (s === undefined) break;
        Atomics.store(this.i32, this.base(s) + R_NEXT, head);
        head = s;
      }
      Atomics.store(this.i32, H_FREE_HEAD, head);
    } finally {
      unlockOwnedWord(this.region, H_SLAB_LOCK);
    }
  }

  /** Returns this thread's cached free slots to the shared list (at thread exit). */
  flushCache(): void {
    this.#drain(this.#cache.length);
  }

  // ---- names ----------------------------------------------------------------------------

  /**
   * Interns a name in the shared table and returns its id (stable in every thread).
   *
   * @throws {DmaBufError} EINVAL when the name is longer than {@linkcode MAX_NAME_BYTES} bytes;
   *   ENOSPC when the table is full.
   */
  intern(name: string): number {
    const cached = this.#nameCache.get(name);
    if (cached !== undefined) return cached;
    const bytes = Buffer.from(name, 'utf8');
    if (bytes.length > MAX_NAME_BYTES) {
      throw new DmaBufError(
        'EINVAL',
        `name longer than ${MAX_NAME_BYTES} bytes: ${name.slice(0, 20)}...`,
      );
    }
    lockOwnedWord(this.region, H_NAMES_LOCK, threadId);
    try {
      const used = Atomics.load(this.i32, H_NAMES_USED);
      for (let off = 0; off < used; ) {
        const s = this.#readName(off);
        if (s === name) {
          this.#remember(name, off);
          return off;
        }
        off += 1 + Math.ceil(Atomics.load(this.i32, NAMES_BASE + off) / 4);
      }
      const words = 1 + Math.ceil(bytes.length / 4);
      if (used + words > NAMES_WORDS) throw new DmaBufError('ENOSPC', 'shared name table is full');
      const padded = new Uint8Array(Math.ceil(bytes.length / 4) * 4);
      padded.set(bytes);
      const w = new Int32Array(padded.buffer);
      for (let i = 0; i < w.length; i++) Atomics.store(this.i32, NAMES_BASE + used + 1 + i, w[i]!);
      Atomics.store(this.i32, NAMES_BASE + used, bytes.length);
      Atomics.store(this.i32, H_NAMES_USED, used + words);
      this.#remember(name, used);
      return used;
    } finally {
      unlockOwnedWord(this.region, H_NAMES_LOCK);
    }
  }

  /** The name with id `id`. */
  name(id: number): string {
    const cached = this.#nameById.get(id);
    if (cached !== undefined) return cached;
    const s = this.#readName(id);
    this.#remember(s, id);
    return s;
  }

  #remember(name: string, id: number): void {
    this.#nameCache.set(name, id);
    this.#nameById.set(id, name);
  }

  #readName(off: number): string {
    const len = Atomics.load(this.i32, NAMES_BASE + off);
    const w = new Int32Array(Math.ceil(len / 4));
    for (let i = 0; i < w.length; i++) w[i] = Atomics.load(this.i32, NAMES_BASE + off + 1 + i);
    return Buffer.from(w.buffer, 0, len).toString('utf8');
  }

  // ---- threads and mailboxes --------------------------------------------------------------

  /**
   * This thread's index in the thread table, registering it on first use. A thread needs one
   * when another thread must run something here: its fence callbacks or its fence ops.
   *
   * @throws {DmaBufError} EMFILE when {@linkcode MAX_THREADS} threads already take part.
   */
  threadIndex(): number {
    if (this.#threadIndex >= 0) return this.#threadIndex;
    lockOwnedWord(this.region, H_THREAD_LOCK, threadId);
    try {
      for (let t = 0; t < MAX_THREADS; t++) {
        const b = THREADS_BASE + t * T_WORDS;
        if (Atomics.load(this.i32, b + T_STATE) === 0) {
          this.i32.fill(0, b, b + T_WORDS);
          Atomics.store(this.i32, b + T_TID, threadId);
          Atomics.store(this.i32, b + T_STATE, 1);
          this.#threadIndex = t;
          this.#liveWord = b + T_LIVE;
          setHeldList(this.region, b + T_HELD);
          break;
        }
      }
    } finally {
      unlockOwnedWord(this.region, H_THREAD_LOCK);
    }
    if (this.#threadIndex < 0) {
      throw new DmaBufError('EMFILE', `more than ${MAX_THREADS} threads in one dmabuf domain`);
    }
    process.once('exit', () => this.#leave());
    return this.#threadIndex;
  }

  /** This thread's index if it has one, else -1 (no registration). */
  peekThreadIndex(): number {
    return this.#threadIndex;
  }

  #leave(): void {
    const t = this.#threadIndex;
    if (t < 0) return;
    const b = THREADS_BASE + t * T_WORDS;
    // Refuse new mail (state 2: leaving, not yet reusable), then handle what is queued: a
    // message may carry a reference (see post) that must not be lost with the thread.
    lockOwnedWord(this.region, b + T_LOCK, threadId);
    Atomics.store(this.i32, b + T_STATE, 2);
    unlockOwnedWord(this.region, b + T_LOCK);
    try {
      this.drainMail();
    } finally {
      this.flushCache();
      lockOwnedWord(this.region, H_THREAD_LOCK, threadId);
      this.#foldLive(t);
      this.#liveWord = -1;
      this.#left = true;
      Atomics.store(this.i32, b + T_STATE, 0);
      unlockOwnedWord(this.region, H_THREAD_LOCK);
      setHeldList(undefined, -1);
      this.#threadIndex = -1;
    }
  }

  /**
   * Cleans up after a thread that ended without leaving (a worker stopped with `terminate()`
   * skips its exit path): frees its thread slot so the table does not fill up, hands every
   * message still queued for it to the reap handler of its kind (a message may carry a
   * reference), and tells the reaped-thread handlers so they can complete what only that thread
   * could have completed. Called in the parent thread when a worker's 'exit' event fires; a
   * thread that left normally has nothing to reap. Returns the freed index, or -1.
   */
  reapThread(tid: number): number {
    if (tid === threadId) return -1;
    const queued: number[] = [];
    // It may have died inside a critical section. First, at once and without taking any lock,
    // break every hold it had: the domain's own tables, its mailbox, and the lock words on its
    // held list. (A half-done slab refill or drain only loses the free slots it was moving.)
    for (const w of Object.values(DOMAIN_LOCK_WORDS)) breakLockWord(this.region, w, tid);
    // Its slot is not reused before it is reaped (state 1 or 2), so it can be found unlocked.
    let t = -1;
    for (let i = 0; i < MAX_THREADS; i++) {
      const b = THREADS_BASE + i * T_WORDS;
      const state = Atomics.load(this.i32, b + T_STATE);
      // State 2: it was leaving when it died.
      if ((state === 1 || state === 2) && Atomics.load(this.i32, b + T_TID) === tid) {
        t = i;
        break;
      }
    }
    if (t < 0 || t === this.#threadIndex) return -1;
    const b = THREADS_BASE + t * T_WORDS;
    breakLockWord(this.region, b + T_LOCK, tid);
    // The listed locks may lie in records past this thread's view of the region.
    this.#refresh();
    breakHeldLocks(this.region, b + T_HELD);
    // Then the table, without ever blocking this thread: another dead thread may hold the
    // table lock, and its own reaping waits in this thread's event loop. Busy: try again soon.
    if (!tryLockOwnedWord(this.region, H_THREAD_LOCK, threadId)) return this.#reapLater(tid);
    try {
      // Refuse new mail, take what is queued, then free the slot.
      if (!tryLockOwnedWord(this.region, b + T_LOCK, threadId)) return this.#reapLater(tid);
      Atomics.store(this.i32, b + T_STATE, 2);
      unlockOwnedWord(this.region, b + T_LOCK);
      for (;;) {
        const head = Atomics.load(this.i32, b + T_HEAD);
        if (head === Atomics.load(this.i32, b + T_TAIL)) break;
        const e = RINGS_BASE + (t * RING + (head % RING)) * ENTRY_WORDS;
        queued.push(
          Atomics.load(this.i32, e),
          Atomics.load(this.i32, e + 1),
          Atomics.load(this.i32, e + 2),
        );
        Atomics.store(this.i32, b + T_HEAD, head + 1);
      }
      this.#foldLive(t);
      Atomics.store(this.i32, b + T_STATE, 0);
    } finally {
      unlockOwnedWord(this.region, H_THREAD_LOCK);
    }
    // Handlers run without the table lock: they may release objects, post, register threads.
    for (let i = 0; i < queued.length; i += 3) {
      try {
        reapHandlers.get(queued[i]!)?.(queued[i + 1]!, queued[i + 2]!);
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    }
    for (const h of reapedHandlers) h(t);
    return t;
  }

  /** Number of threads registered in the thread table (for tests and tools). */
  threadsInUse(): number {
    let n = 0;
    for (let t = 0; t < MAX_THREADS; t++) {
      if (Atomics.load(this.i32, THREADS_BASE + t * T_WORDS + T_STATE) !== 0) n++;
    }
    return n;
  }

  /** Calls `fn` for every registered thread that has callbacks pending (for broadcasts). */
  forEachThread(fn: (t: number) => void): void {
    for (let t = 0; t < MAX_THREADS; t++) {
      const b = THREADS_BASE + t * T_WORDS;
      if (Atomics.load(this.i32, b + T_STATE) === 1 && Atomics.load(this.i32, b + T_PENDING) > 0)
        fn(t);
    }
  }

  /** Marks whether this thread has callbacks pending (broadcasts skip threads without). */
  setPending(on: boolean): void {
    Atomics.store(this.i32, THREADS_BASE + this.threadIndex() * T_WORDS + T_PENDING, on ? 1 : 0);
  }

  /** Registers the handler for one kind of mailbox message in this thread. */
  onMail(kind: number, handler: MailHandler): void {
    this.#handlers.set(kind, handler);
  }

  /** Registers a handler run when this thread's mailbox overflowed (messages were dropped). */
  onMailOverflow(handler: () => void): void {
    this.#overflowHandlers.push(handler);
  }

  /**
   * Sends a message to thread `t` and rings its doorbell. Returns true when the message was
   * queued: it will be handled exactly once (also if the thread leaves first). False when the
   * thread is gone or its ring was full (the receiver then rescans instead).
   */
  post(t: number, kind: number, slot: number, gen: number): boolean {
    const b = THREADS_BASE + t * T_WORDS;
    if (Atomics.load(this.i32, b + T_STATE) !== 1) return false;
    let queued = false;
    lockOwnedWord(this.region, b + T_LOCK, threadId);
    try {
      // Checked again under the lock: a leaving thread drains its ring after refusing mail.
      if (Atomics.load(this.i32, b + T_STATE) !== 1) return false;
      const head = Atomics.load(this.i32, b + T_HEAD);
      const tail = Atomics.load(this.i32, b + T_TAIL);
      if (tail - head >= RING) {
        // Nothing is lost: the receiver rescans all its registrations on overflow.
        Atomics.store(this.i32, b + T_OVERFLOW, 1);
      } else {
        const e = RINGS_BASE + (t * RING + (tail % RING)) * ENTRY_WORDS;
        Atomics.store(this.i32, e, kind);
        Atomics.store(this.i32, e + 1, slot);
        Atomics.store(this.i32, e + 2, gen);
        Atomics.store(this.i32, b + T_TAIL, tail + 1);
        queued = true;
      }
    } finally {
      unlockOwnedWord(this.region, b + T_LOCK);
    }
    Atomics.add(this.i32, b + T_DOORBELL, 1);
    this.region.notify(b + T_DOORBELL);
    return queued;
  }

  /** Runs every message waiting in this thread's mailbox. */
  drainMail(): void {
    const t = this.#threadIndex;
    if (t < 0) return;
    const b = THREADS_BASE + t * T_WORDS;
    for (;;) {
      const head = Atomics.load(this.i32, b + T_HEAD);
      const tail = Atomics.load(this.i32, b + T_TAIL);
      if (head === tail) break;
      const e = RINGS_BASE + (t * RING + (head % RING)) * ENTRY_WORDS;
      const kind = Atomics.load(this.i32, e);
      const slot = Atomics.load(this.i32, e + 1);
      const gen = Atomics.load(this.i32, e + 2);
      Atomics.store(this.i32, b + T_HEAD, head + 1);
      // A throwing handler (a driver op runs in one) must not stop the listener loop or the
      // rest of the ring: its error surfaces as uncaught, after the mail is handled.
      try {
        this.#handlers.get(kind)?.(slot, gen);
      } catch (e) {
        rethrowLater(e);
      }
    }
    if (Atomics.exchange(this.i32, b + T_OVERFLOW, 0) === 1) {
      for (const h of this.#overflowHandlers) {
        try {
          h();
        } catch (e) {
          rethrowLater(e);
        }
      }
    }
  }

  /**
   * Starts this thread's mailbox listener: an async loop on the doorbell word. It does not keep
   * the event loop alive by itself; pending waits and callbacks do that (see waiter.ts).
   */
  listen(): void {
    if (this.#listening) return;
    this.#listening = true;
    const t = this.threadIndex();
    const bell = THREADS_BASE + t * T_WORDS + T_DOORBELL;
    const loop = (): void => {
      for (;;) {
        const v = Atomics.load(this.i32, bell);
        this.drainMail();
        const r = this.region.waitAsync(bell, v, Number.POSITIVE_INFINITY);
        if (typeof r !== 'string') {
          r.then(loop, loop);
          return;
        }
      }
    };
    loop();
  }

  /** The doorbell word of this thread (a sync waiter on several fences sleeps on it). */
  doorbellWord(): number {
    return THREADS_BASE + this.threadIndex() * T_WORDS + T_DOORBELL;
  }
}

function rethrowLater(e: unknown): void {
  queueMicrotask(() => {
    throw e;
  });
}

let current: Domain | undefined;

const reapedHandlers: ((t: number) => void)[] = [];
const reapHandlers = new Map<number, MailHandler>();

/**
 * Registers what to do with a queued message of `kind` whose receiving thread was reaped (the
 * message may carry a reference that must be dropped). Module-level: the parent thread that
 * reaps may never have run the receiver's code.
 */
export function onMailReap(kind: number, handler: MailHandler): void {
  reapHandlers.set(kind, handler);
}

/** Registers `fn(threadIndex)`, run after a thread that ended without leaving was reaped. */
export function onThreadReaped(fn: (t: number) => void): void {
  reapedHandlers.push(fn);
}

/**
 * Watches the workers this thread starts: when one exits, whatever it left registered in the
 * domain (after `terminate()`, everything) is reaped here.
 */
function watchWorkers(): void {
  process.on('worker', (w) => {
    const tid = w.threadId;
    w.once('exit', () => current?.reapThread(tid));
  });
}

function publish(d: Domain): void {
  setEnvironmentData(
    ENV_KEY,
    d.descriptor() as unknown as Parameters<typeof setEnvironmentData>[1],
  );
}

/** The domain of this thread: inherited from the parent thread, or created here. */
export function domain(): Domain {
  if (current) return current;
  const inherited = getEnvironmentData(ENV_KEY) as DomainDescriptor | undefined;
  current = inherited ? Domain.attach(inherited) : Domain.create();
  if (!inherited) publish(current);
  watchWorkers();
  return current;
}

/**
 * Makes sure this thread uses the domain `desc` describes (called when a shared object arrives).
 *
 * @throws {DmaBufError} EXDEV when this thread already belongs to a different domain: the object
 *   is foreign here.
 */
export function adoptDomain(desc: DomainDescriptor): Domain {
  if (current) {
    if (current.id !== desc.id) {
      throw new DmaBufError('EXDEV', 'object belongs to another dmabuf domain (foreign handle)');
    }
    return current;
  }
  current = Domain.attach(desc);
  publish(current);
  watchWorkers();
  return current;
}

// The main thread creates the domain up front so that every worker it starts inherits it.
if (isMainThread) domain();
