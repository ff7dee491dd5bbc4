/**
 * The memory behind a dma-buf: pages of `SharedArrayBuffer`s, grouped in chunks.
 *
 * A {@linkcode BufferMemory} is an ordered list of chunks `{ sab, offset, length, phys }`, each
 * page-aligned (PAGE_SIZE 4096). The exporter provides the memory; the core never copies it.
 * Chunks may live in different `SharedArrayBuffer`s or be non-adjacent in one (a heap hands out
 * chunks of pooled buffers), which is what makes a scatter/gather table necessary.
 *
 * Each chunk carries a "physical" address: every backing buffer gets a range of page frames
 * from one counter of the domain when it is created ({@linkcode allocBacking}), and a chunk's
 * physical address is its backing's base plus its offset. Two chunks are physically contiguous
 * exactly when they are adjacent in the same backing. Backings are separated by one unused page
 * frame, so different backings are never physically adjacent. A device without an IOMMU sees
 * these addresses.
 *
 * Crossing threads: {@linkcode BufferMemory.descriptor} is the postable form. The
 * `SharedArrayBuffer`s themselves travel in the `postMessage` body (not in the transfer list),
 * so the importing thread gets the same memory, at any size, without a copy. Structured clone
 * keeps identity inside one message, and the descriptor names each backing once anyway.
 *
 * {@linkcode MemoryView} is the access object of mappings (mmap, vmap): reads are always
 * possible; writable typed arrays and write methods exist only on a writable view. A read-only
 * view never hands out a typed array over the memory (cross-process.md: a write into memory
 * mapped read-only kills the process; user code must not hold such an array).
 *
 * This file is the only place that creates the data `SharedArrayBuffer`s of buffers (the
 * substrate's backend creates the control region); a memfd backend will plug in here.
 *
 * @module
 */
import { dmaDebugEnabled, dmaDebugReport } from './dma-debug.js';
import { domain } from './substrate/domain.js';
import { DmaBufError } from './substrate/errno.js';

export const PAGE_SHIFT = 12;
export const PAGE_SIZE = 4096;

/**
 * Global word of the domain holding the physical page-frame counter (see `Domain.globalWord`;
 * n = 0..2 are taken by dma-fence and ww-mutex).
 */
export const PHYS_GLOBAL = 31;
/** First page frame handed out: physical address 1 MiB (0 is never a valid address here). */
const PFN_START = 256;

/** Rounds `n` up to a multiple of PAGE_SIZE. */
export function pageAlign(n: number): number {
  return Math.ceil(n / PAGE_SIZE) * PAGE_SIZE;
}

/** One page-aligned run of a buffer's memory. */
export interface MemoryChunk {
  readonly sab: SharedArrayBuffer;
  /** Byte offset in `sab` (multiple of PAGE_SIZE). */
  readonly offset: number;
  /** Bytes (multiple of PAGE_SIZE, > 0). */
  readonly length: number;
  /** Physical address of the chunk's first byte (multiple of PAGE_SIZE). */
  readonly phys: number;
}

/** One page of memory (the model of `struct page`). */
export interface MemoryPage {
  readonly sab: SharedArrayBuffer;
  /** Byte offset of the page in `sab`. */
  readonly offset: number;
  /** Physical address of the page. */
  readonly phys: number;
}

/** A backing buffer with its physical base address. */
export interface Backing {
  readonly sab: SharedArrayBuffer;
  readonly phys: number;
}

/** The postable form of a {@linkcode BufferMemory}. */
export interface BufferMemoryDescriptor {
  readonly $memory: 'dma-buf-memory';
  readonly sabs: readonly SharedArrayBuffer[];
  /**
   * The page-ownership words of each backing (parallel to `sabs`; see {@linkcode pageOwners}).
   * Optional: a descriptor without them still names the same memory.
   */
  readonly owners?: readonly SharedArrayBuffer[];
  /** `[sab index, offset, length, phys]` per chunk. */
  readonly chunks: readonly (readonly [number, number, number, number])[];
}

/**
 * Creates a backing `SharedArrayBuffer` of `bytes` (rounded up to pages) and gives it a range of
 * physical addresses.
 *
 * @throws {DmaBufError} EINVAL for a size that is not a positive integer.
 */
export function allocBacking(bytes: number): Backing {
  if (!Number.isSafeInteger(bytes) || bytes <= 0) {
    throw new DmaBufError('EINVAL', `backing size must be a positive integer, got ${bytes}`);
  }
  const len = pageAlign(bytes);
  const sab = new SharedArrayBuffer(len);
  const d = domain();
  // One guard frame after every backing: backings are never physically adjacent.
  const frames = len / PAGE_SIZE + 1;
  const prev = Atomics.add(d.i32, d.globalWord(PHYS_GLOBAL), frames) >>> 0;
  pageOwners(sab);
  return { sab, phys: (prev + PFN_START) * PAGE_SIZE };
}

// ---- page ownership (the non-coherent DMA model, dma-debug) ----

const owners = new WeakMap<SharedArrayBuffer, Int32Array>();

/**
 * @internal The page-ownership words of a backing: one 32-bit word per page, counting the
 * non-coherent devices that currently own the page (synced for the device and not yet synced
 * back for the CPU; device.ts keeps them). With the debug mode on, CPU access through a
 * {@linkcode MemoryView} to a page whose count is not 0 reports. The words live in shared memory
 * and travel with {@linkcode BufferMemory.descriptor}, so every thread sees the same counts.
 * Created with the backing by {@linkcode allocBacking}; created on first use for memory from
 * elsewhere (then shared only through descriptors made after that).
 */
export function pageOwners(sab: SharedArrayBuffer): Int32Array {
  let o = owners.get(sab);
  if (!o) {
    o = new Int32Array(
      new SharedArrayBuffer(4 * Math.max(1, Math.ceil(sab.byteLength / PAGE_SIZE))),
    );
    owners.set(sab, o);
  }
  return o;
}

function adoptOwners(sab: SharedArrayBuffer, words: unknown): void {
  if (owners.has(sab) || !(words instanceof SharedArrayBuffer)) return;
  if (words.byteLength < 4 * Math.ceil(sab.byteLength / PAGE_SIZE)) return;
  owners.set(sab, new Int32Array(words));
}

/** True when some page of `sab` bytes [offset, offset + length) is owned by a device. */
function deviceOwned(sab: SharedArrayBuffer, offset: number, length: number): boolean {
  const o = owners.get(sab);
  if (!o || length <= 0) return false;
  const last = Math.floor((offset + length - 1) / PAGE_SIZE);
  for (let p = Math.floor(offset / PAGE_SIZE); p <= last; p++) {
    if (Atomics.load(o, p) !== 0) return true;
  }
  return false;
}

function checkChunk(c: MemoryChunk, i: number): void {
  const ok =
    typeof c === 'object' &&
    c !== null &&
    c.sab instanceof SharedArrayBuffer &&
    Number.isSafeInteger(c.offset) &&
    Number.isSafeInteger(c.length) &&
    Number.isSafeInteger(c.phys) &&
    c.offset >= 0 &&
    c.length > 0 &&
    c.phys > 0 &&
    c.offset % PAGE_SIZE === 0 &&
    c.length % PAGE_SIZE === 0 &&
    c.phys % PAGE_SIZE === 0 &&
    c.offset + c.length <= c.sab.byteLength;
  if (!ok) {
    throw new DmaBufError(
      'EINVAL',
      `memory chunk ${i} must be page-aligned, non-empty, inside its SharedArrayBuffer and have a page-aligned physical address`,
    );
  }
}

/** A located byte range of one chunk. */
export interface MemoryPiece {
  readonly sab: SharedArrayBuffer;
  /** Byte offset in `sab`. */
  readonly offset: number;
  readonly length: number;
}

/** The memory of one buffer: page-aligned chunks of shared memory. */
export class BufferMemory {
  readonly chunks: readonly MemoryChunk[];
  /** Total bytes (a multiple of PAGE_SIZE). */
  readonly byteLength: number;
  /** Start offset (bytes, in the buffer) of each chunk, plus the total at the end. */
  readonly #starts: number[];

  /**
   * Wraps existing chunks (no copy).
   *
   * @throws {DmaBufError} EINVAL when a chunk is not page-aligned, empty, outside its buffer or
   *   without a valid physical address.
   */
  constructor(chunks: readonly MemoryChunk[]) {
    if (!Array.isArray(chunks)) throw new DmaBufError('EINVAL', 'chunks must be an array');
    chunks.forEach(checkChunk);
    this.chunks = Object.freeze(
      chunks.map((c) =>
        // A literal of one shape (not a spread): a spread copy of each chunk, frozen, made every
        // import cost microseconds per chunk.
        Object.freeze({ sab: c.sab, offset: c.offset, length: c.length, phys: c.phys }),
      ),
    );
    const starts: number[] = [];
    let at = 0;
    for (const c of this.chunks) {
      starts.push(at);
      at += c.length;
    }
    starts.push(at);
    this.#starts = starts;
    this.byteLength = at;
  }

  /**
   * Allocates memory for `size` bytes (rounded up to pages). By default one backing holds every
   * chunk, adjacent (physically contiguous). `chunkSize` splits it into chunks of that many
   * bytes (a page multiple); `separate` puts each chunk in its own backing (physically
   * discontiguous, like memory from a fragmented heap).
   *
   * @throws {DmaBufError} EINVAL for a bad size or chunk size.
   */
  static allocate(
    size: number,
    opts: { chunkSize?: number; separate?: boolean } = {},
  ): BufferMemory {
    if (!Number.isSafeInteger(size) || size < 0) {
      throw new DmaBufError('EINVAL', `memory size must be a non-negative integer, got ${size}`);
    }
    const total = pageAlign(size);
    const chunkSize = opts.chunkSize ?? Math.max(total, PAGE_SIZE);
    if (!Number.isSafeInteger(chunkSize) || chunkSize <= 0 || chunkSize % PAGE_SIZE !== 0) {
      throw new DmaBufError('EINVAL', 'chunkSize must be a positive multiple of PAGE_SIZE');
    }
    if (total === 0) return new BufferMemory([]);
    const chunks: MemoryChunk[] = [];
    const shared = opts.separate ? undefined : allocBacking(total);
    for (let off = 0; off < total; off += chunkSize) {
      const length = Math.min(chunkSize, total - off);
      if (shared) {
        chunks.push({ sab: shared.sab, offset: off, length, phys: shared.phys + off });
      } else {
        const b = allocBacking(length);
        chunks.push({ sab: b.sab, offset: 0, length, phys: b.phys });
      }
    }
    return new BufferMemory(chunks);
  }

  /** The postable form (send it in a `postMessage` body). */
  descriptor(): BufferMemoryDescriptor {
    const sabs: SharedArrayBuffer[] = [];
    const index = new Map<SharedArrayBuffer, number>();
    const chunks = this.chunks.map((c): [number, number, number, number] => {
      let i = index.get(c.sab);
      if (i === undefined) {
        i = sabs.length;
        sabs.push(c.sab);
        index.set(c.sab, i);
      }
      return [i, c.offset, c.length, c.phys];
    });
    return {
      $memory: 'dma-buf-memory',
      sabs,
      chunks,
      owners: sabs.map((b) => pageOwners(b).buffer as SharedArrayBuffer),
    };
  }

  /**
   * The memory a descriptor names (same memory, no copy).
   *
   * @throws {DmaBufError} EINVAL for something that is not a valid descriptor.
   */
  static fromDescriptor(desc: BufferMemoryDescriptor): BufferMemory {
    if (
      typeof desc !== 'object' ||
      desc === null ||
      desc.$memory !== 'dma-buf-memory' ||
      !Array.isArray(desc.sabs) ||
      !Array.isArray(desc.chunks)
    ) {
      throw new DmaBufError('EINVAL', 'not a dma-buf memory descriptor');
    }
    if (Array.isArray(desc.owners)) {
      desc.sabs.forEach((sab, i) => {
        if (sab instanceof SharedArrayBuffer) adoptOwners(sab, desc.owners?.[i]);
      });
    }
    return new BufferMemory(
      desc.chunks.map(([i, offset, length, phys]) => {
        const sab = desc.sabs[i];
        if (!(sab instanceof SharedArrayBuffer)) {
          throw new DmaBufError('EINVAL', 'memory descriptor names a missing buffer');
        }
        return { sab, offset, length, phys };
      }),
    );
  }

  /** Number of pages. */
  get pageCount(): number {
    return this.byteLength / PAGE_SIZE;
  }

  /** Every page, in buffer order (the `pages[]` array an exporter builds its table from). */
  pages(): MemoryPage[] {
    const out: MemoryPage[] = [];
    for (const c of this.chunks) {
      for (let o = 0; o < c.length; o += PAGE_SIZE) {
        out.push({ sab: c.sab, offset: c.offset + o, phys: c.phys + o });
      }
    }
    return out;
  }

  /**
   * The pieces (per chunk) that hold bytes `[start, end)` of the buffer.
   *
   * @throws {DmaBufError} EINVAL for a range outside the memory.
   */
  pieces(start: number, end: number): MemoryPiece[] {
    if (
      !Number.isSafeInteger(start) ||
      !Number.isSafeInteger(end) ||
      start < 0 ||
      end < start ||
      end > this.byteLength
    ) {
      throw new DmaBufError('EINVAL', `range [${start}, ${end}) outside the buffer memory`);
    }
    const out: MemoryPiece[] = [];
    for (let i = 0; i < this.chunks.length && start < end; i++) {
      const c = this.chunks[i]!;
      const cs = this.#starts[i]!;
      const ce = this.#starts[i + 1]!;
      if (start >= ce) continue;
      const from = start - cs;
      const len = Math.min(ce, end) - start;
      out.push({ sab: c.sab, offset: c.offset + from, length: len });
      start += len;
    }
    return out;
  }
}

/** Whether a view may write, and how to check it is still valid. */
interface ViewState {
  writable(): boolean;
  readable(): boolean;
  /** Throws (EBADF) when the mapping is gone. */
  check(): void;
}

/**
 * Access to a byte range of buffer memory: the "virtual address" of a mapping.
 *
 * - Reads: `get(i)`, `read(offset, into)`, `slice(start, end)` (a copy).
 * - Writes (writable views only, else `EACCES`): `set(i, v)`, `write(offset, src)`, and the
 *   typed arrays `u8` (when the range is contiguous: one chunk, or adjacent chunks of one
 *   backing) and `chunks` (one `Uint8Array` per piece, always available on a writable view).
 *
 * A read-only view never exposes a typed array over the memory. Typed arrays obtained from a
 * writable view stay usable after the mapping is gone (a view cannot be revoked, as a PTE can
 * be zapped); the view's own methods then throw `EBADF`.
 */
export class MemoryView {
  readonly byteLength: number;
  /** True when the range is one contiguous run of one backing (then `u8` exists). */
  readonly contiguous: boolean;
  readonly #pieces: Uint8Array[];
  readonly #starts: number[];
  readonly #state: ViewState;

  /** @internal */
  constructor(pieces: readonly MemoryPiece[], state: ViewState) {
    this.#state = state;
    this.#pieces = pieces.map((p) => new Uint8Array(p.sab, p.offset, p.length));
    this.#starts = [];
    let at = 0;
    for (const p of pieces) {
      this.#starts.push(at);
      at += p.length;
    }
    this.byteLength = at;
    let contiguous = true;
    for (let i = 1; i < pieces.length; i++) {
      const a = pieces[i - 1]!;
      const b = pieces[i]!;
      if (a.sab !== b.sab || a.offset + a.length !== b.offset) contiguous = false;
    }
    this.contiguous = contiguous;
    if (contiguous && pieces.length > 1) {
      const first = pieces[0]!;
      this.#pieces = [new Uint8Array(first.sab, first.offset, at)];
      this.#starts = [0];
    }
  }

  /** True while the view may be written through. */
  get writable(): boolean {
    return this.#state.writable();
  }

  #read(offset = 0, length = this.byteLength): void {
    this.#state.check();
    if (!this.#state.readable()) throw new DmaBufError('EFAULT', 'mapping is not readable');
    if (dmaDebugEnabled()) this.#cpuCheck(offset, length, 'read');
  }

  #write(offset = 0, length = this.byteLength): void {
    this.#state.check();
    if (!this.#state.writable()) {
      throw new DmaBufError('EACCES', 'mapping is read-only: writes are refused');
    }
    if (dmaDebugEnabled()) this.#cpuCheck(offset, length, 'write');
  }

  /** Debug mode: CPU access to pages a non-coherent device owns (not synced for the CPU). */
  #cpuCheck(offset: number, length: number, what: string): void {
    const end = Math.min(offset + length, this.byteLength);
    for (let i = 0; i < this.#pieces.length; i++) {
      const a = this.#pieces[i]!;
      const s = this.#starts[i]!;
      const from = Math.max(offset, s);
      const to = Math.min(end, s + a.length);
      if (from >= to) continue;
      if (deviceOwned(a.buffer as SharedArrayBuffer, a.byteOffset + from - s, to - from)) {
        dmaDebugReport(
          `CPU ${what} of [${offset}, ${end}) of a mapping while a non-coherent device owns the memory (missing DMA_BUF_SYNC_START / sync for cpu)`,
        );
      }
    }
  }

  /** @internal The pieces of the view (one per contiguous run), for address lookups. */
  _pieces(): readonly Uint8Array[] {
    return this.#pieces;
  }

  #locate(i: number): [Uint8Array, number] {
    if (!Number.isSafeInteger(i) || i < 0 || i >= this.byteLength) {
      throw new DmaBufError('EFAULT', `offset ${i} outside the mapping`);
    }
    let lo = 0;
    let hi = this.#starts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.#starts[mid]! <= i) lo = mid;
      else hi = mid - 1;
    }
    return [this.#pieces[lo]!, i - this.#starts[lo]!];
  }

  #range(offset: number, length: number): void {
    if (
      !Number.isSafeInteger(offset) ||
      offset < 0 ||
      !Number.isSafeInteger(length) ||
      offset + length > this.byteLength
    ) {
      throw new DmaBufError('EFAULT', `range [${offset}, ${offset + length}) outside the mapping`);
    }
  }

  /** The byte at `i`. @throws {DmaBufError} EFAULT outside the view or when not readable. */
  get(i: number): number {
    this.#read(i, 1);
    const [a, k] = this.#locate(i);
    return a[k]!;
  }

  /** Stores a byte. @throws {DmaBufError} EACCES on a read-only view; EFAULT outside it. */
  set(i: number, value: number): void {
    this.#write(i, 1);
    const [a, k] = this.#locate(i);
    a[k] = value;
  }

  /** Copies `into.length` bytes from `offset` into `into`; returns `into`. */
  read(offset: number, into: Uint8Array): Uint8Array {
    this.#read(offset, into.length);
    this.#range(offset, into.length);
    this.#copy(offset, into.length, (a, at, n, done) => into.set(a.subarray(at, at + n), done));
    return into;
  }

  /** Copies `src` into the view at `offset`. @throws {DmaBufError} EACCES on a read-only view. */
  write(offset: number, src: Uint8Array): void {
    this.#write(offset, src.length);
    this.#range(offset, src.length);
    this.#copy(offset, src.length, (a, at, n, done) => a.set(src.subarray(done, done + n), at));
  }

  /** A copy of bytes `[start, end)` (defaults: the whole view). */
  slice(start = 0, end = this.byteLength): Uint8Array {
    if (end < start) end = start;
    return this.read(start, new Uint8Array(end - start));
  }

  #copy(
    offset: number,
    length: number,
    fn: (a: Uint8Array, at: number, n: number, done: number) => void,
  ): void {
    let done = 0;
    while (done < length) {
      const [a, at] = this.#locate(offset + done);
      const n = Math.min(a.length - at, length - done);
      fn(a, at, n, done);
      done += n;
    }
  }

  /**
   * The whole range as one writable `Uint8Array` over the same memory.
   *
   * @throws {DmaBufError} EACCES on a read-only view; EINVAL when the range is not contiguous
   *   (use `chunks`).
   */
  get u8(): Uint8Array {
    this.#write();
    if (!this.contiguous) {
      throw new DmaBufError('EINVAL', 'mapping spans discontiguous chunks: use chunks');
    }
    return this.#pieces[0] ?? new Uint8Array(0);
  }

  /** One writable `Uint8Array` per contiguous piece. @throws {DmaBufError} EACCES when read-only. */
  get chunks(): Uint8Array[] {
    this.#write();
    return [...this.#pieces];
  }
}
