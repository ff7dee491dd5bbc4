/**
 * A memfd-like shared memory object with seals (mm/memfd.c, `memfd_create`, `F_ADD_SEALS`): the
 * user memory udmabuf imports.
 *
 * The object is one backing `SharedArrayBuffer` ({@linkcode allocBacking}): a header page (size,
 * capacity, seals, pinned-page count, lock) followed by `capacity` bytes of data. Every thread
 * that receives the object (`share()` / {@linkcode MemFd.fromShared}) or a buffer made from it
 * sees the same header, so seals and pins hold across threads.
 *
 * Rules kept (memfd / fcntl):
 * - Created without `allowSealing` (MFD_ALLOW_SEALING) the object carries `F_SEAL_SEAL` only.
 * - `addSeals`: unknown bits → EINVAL; `F_SEAL_SEAL` set → EPERM; `F_SEAL_WRITE` while pages
 *   are pinned → EBUSY.
 * - `truncate`: shrinking under `F_SEAL_SHRINK` or growing under `F_SEAL_GROW` → EPERM.
 * - `write`: under `F_SEAL_WRITE` or `F_SEAL_FUTURE_WRITE` → EPERM.
 *
 * Deviation: the object has a fixed capacity (its size at creation unless `capacity` is given);
 * growing past it → ENOSPC.
 *
 * @module
 */
import { allocBacking, PAGE_SIZE, pageAlign } from './dma-buf-memory.js';
import { DmaBufError } from './substrate/errno.js';

export const F_SEAL_SEAL = 0x1;
export const F_SEAL_SHRINK = 0x2;
export const F_SEAL_GROW = 0x4;
export const F_SEAL_WRITE = 0x8;
export const F_SEAL_FUTURE_WRITE = 0x10;
const ALL_SEALS = 0x1f;

const MAGIC = 0x6d656d66; // "memf"
const M_MAGIC = 0;
const M_SIZE = 1;
const M_CAPACITY = 2;
const M_SEALS = 3;
const M_PINNED = 4;
const M_LOCK = 5;
const M_PFN = 6; // physical frame of the header page

/** The postable form of a memfd. */
export interface MemFdMessage {
  readonly $memfd: 'memfd';
  readonly sab: SharedArrayBuffer;
}

/** Options of {@linkcode MemFd.create}. */
export interface MemFdOptions {
  /** MFD_ALLOW_SEALING (default true). */
  allowSealing?: boolean;
  /** Largest size the object can grow to (default: the initial size). */
  capacity?: number;
}

const known = new WeakMap<SharedArrayBuffer, MemFd>();

/** A memfd: sealable shared memory. */
export class MemFd {
  readonly sab: SharedArrayBuffer;
  readonly #i32: Int32Array;

  private constructor(sab: SharedArrayBuffer) {
    this.sab = sab;
    this.#i32 = new Int32Array(sab, 0, 16);
    if (Atomics.load(this.#i32, M_MAGIC) !== MAGIC) throw new DmaBufError('EINVAL', 'not a memfd');
  }

  /**
   * `memfd_create` + `ftruncate(size)`.
   *
   * @throws {DmaBufError} EINVAL for a bad size or capacity.
   */
  static create(size: number, opts: MemFdOptions = {}): MemFd {
    const capacity = opts.capacity ?? size;
    if (!Number.isSafeInteger(size) || size < 0 || !Number.isSafeInteger(capacity)) {
      throw new DmaBufError('EINVAL', 'memfd size must be a non-negative integer');
    }
    if (capacity < size) throw new DmaBufError('EINVAL', 'capacity smaller than size');
    const b = allocBacking(PAGE_SIZE + Math.max(pageAlign(capacity), PAGE_SIZE));
    const i32 = new Int32Array(b.sab, 0, 16);
    i32[M_SIZE] = size;
    i32[M_CAPACITY] = pageAlign(capacity);
    i32[M_SEALS] = opts.allowSealing === false ? F_SEAL_SEAL : 0;
    i32[M_PFN] = b.phys / PAGE_SIZE;
    Atomics.store(i32, M_MAGIC, MAGIC);
    const m = new MemFd(b.sab);
    known.set(b.sab, m);
    return m;
  }

  /** The memfd whose buffer this is (any thread). @throws {DmaBufError} EINVAL otherwise. */
  static of(sab: SharedArrayBuffer): MemFd {
    let m = known.get(sab);
    if (!m) {
      m = new MemFd(sab);
      known.set(sab, m);
    }
    return m;
  }

  /** Adopts a memfd shared by another thread (same memory). */
  static fromShared(msg: MemFdMessage): MemFd {
    if (typeof msg !== 'object' || msg === null || msg.$memfd !== 'memfd') {
      throw new DmaBufError('EINVAL', 'not a memfd message');
    }
    return MemFd.of(msg.sab);
  }

  share(): MemFdMessage {
    return { $memfd: 'memfd', sab: this.sab };
  }

  /** Bytes (`st_size`). */
  get size(): number {
    return Atomics.load(this.#i32, M_SIZE);
  }

  get capacity(): number {
    return Atomics.load(this.#i32, M_CAPACITY);
  }

  /** `F_GET_SEALS`. */
  get seals(): number {
    return Atomics.load(this.#i32, M_SEALS);
  }

  /** Pages pinned by udmabufs (all threads). */
  get pinnedPages(): number {
    return Atomics.load(this.#i32, M_PINNED);
  }

  /** Physical address of data byte 0. */
  get phys(): number {
    return Atomics.load(this.#i32, M_PFN) * PAGE_SIZE + PAGE_SIZE;
  }

  /** Byte offset of data byte 0 in `sab`. */
  get dataOffset(): number {
    return PAGE_SIZE;
  }

  #locked<T>(fn: () => T): T {
    while (Atomics.compareExchange(this.#i32, M_LOCK, 0, 1) !== 0) {
      // A few loads and stores under it (the inode lock).
    }
    try {
      return fn();
    } finally {
      Atomics.store(this.#i32, M_LOCK, 0);
    }
  }

  /** Runs `fn` with the seals stable (udmabuf: seal check + pin). @internal */
  _withLock<T>(fn: () => T): T {
    return this.#locked(fn);
  }

  /** @internal Adds (or removes, negative) pinned pages. Lock held or not. */
  _pin(pages: number): void {
    Atomics.add(this.#i32, M_PINNED, pages);
  }

  /**
   * `fcntl(F_ADD_SEALS)`.
   *
   * @throws {DmaBufError} EINVAL for unknown bits; EPERM when sealing is sealed; EBUSY for
   *   F_SEAL_WRITE while pages are pinned.
   */
  addSeals(seals: number): void {
    if (!Number.isInteger(seals) || (seals & ~ALL_SEALS) !== 0) {
      throw new DmaBufError('EINVAL', 'unknown seals');
    }
    this.#locked(() => {
      const cur = Atomics.load(this.#i32, M_SEALS);
      if (cur & F_SEAL_SEAL) throw new DmaBufError('EPERM', 'seals are sealed');
      if (seals & F_SEAL_WRITE && !(cur & F_SEAL_WRITE) && this.pinnedPages > 0) {
        throw new DmaBufError('EBUSY', 'pages are pinned: F_SEAL_WRITE refused');
      }
      Atomics.store(this.#i32, M_SEALS, cur | seals);
    });
  }

  /**
   * `ftruncate`.
   *
   * @throws {DmaBufError} EPERM against SHRINK/GROW seals; ENOSPC past the capacity; EINVAL.
   */
  truncate(size: number): void {
    if (!Number.isSafeInteger(size) || size < 0) throw new DmaBufError('EINVAL', 'bad size');
    this.#locked(() => {
      const cur = this.size;
      const seals = this.seals;
      if (size < cur && seals & F_SEAL_SHRINK) throw new DmaBufError('EPERM', 'F_SEAL_SHRINK');
      if (size > cur && seals & F_SEAL_GROW) throw new DmaBufError('EPERM', 'F_SEAL_GROW');
      if (size > this.capacity) throw new DmaBufError('ENOSPC', 'past the memfd capacity');
      if (size < cur) new Uint8Array(this.sab, PAGE_SIZE + size, cur - size).fill(0);
      Atomics.store(this.#i32, M_SIZE, size);
    });
  }

  /**
   * `pwrite`.
   *
   * @throws {DmaBufError} EPERM under a write seal; EFAULT past the size.
   */
  write(offset: number, src: Uint8Array): void {
    if (this.seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)) {
      throw new DmaBufError('EPERM', 'memfd is write-sealed');
    }
    this.#range(offset, src.length);
    new Uint8Array(this.sab, PAGE_SIZE + offset, src.length).set(src);
  }

  /** `pread`: a copy. @throws {DmaBufError} EFAULT past the size. */
  read(offset: number, length: number): Uint8Array {
    this.#range(offset, length);
    return new Uint8Array(this.sab, PAGE_SIZE + offset, length).slice();
  }

  #range(offset: number, length: number): void {
    if (
      !Number.isSafeInteger(offset) ||
      !Number.isSafeInteger(length) ||
      offset < 0 ||
      length < 0 ||
      offset + length > this.size
    ) {
      throw new DmaBufError('EFAULT', 'range outside the memfd');
    }
  }
}
