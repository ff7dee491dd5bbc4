/**
 * Scatter/gather tables (include/linux/scatterlist.h, lib/scatterlist.c, the sgtable helpers of
 * drm_prime.c).
 *
 * A table lists a buffer's memory twice:
 * - the CPU view, `origNents` entries: each a first page (a `SharedArrayBuffer` page with its
 *   physical address), an offset into that page and a length;
 * - the device view after `Device.mapSgtable`, `nents` DMA segments: a device address and a
 *   length, stored in the first `nents` entries. An IOMMU may merge adjacent entries, so
 *   `nents <= origNents`; entries from `nents` on carry `DMA_MAPPING_ERROR` and length 0.
 *
 * Walk CPU pages over `origNents` ({@linkcode SgTable.cpuEntries}, {@linkcode SgTable.pages}) and
 * device addresses over `nents` ({@linkcode SgTable.dmaSegments}, {@linkcode SgTable.dmaPages}):
 * seed 003's bug class is mixing the two. A device that walks `origNents` DMA entries reads the
 * error address (and faults); a CPU walk over `nents` misses pages. With the debug mode on
 * (dma-debug.ts), reading DMA fields past `nents` of a mapped table reports at once.
 *
 * Deviation: the kernel chains tables across allocation chunks and requires walking with
 * `sg_next`; here `sgl` is one array (index order is the chain order), which is what the
 * iterators walk.
 *
 * @module
 */
import type { BufferMemory, MemoryPage } from './dma-buf-memory.js';
import { PAGE_SIZE } from './dma-buf-memory.js';
import { dmaDebugEnabled, dmaDebugReport } from './dma-debug.js';
import { DmaBufError } from './substrate/errno.js';

/** `(dma_addr_t)~0` (as a double it rounds to 2^64; no valid address comes near it). */
export const DMA_MAPPING_ERROR = 2 ** 64 - 1;
/** `UINT_MAX`: the unlimited segment size of `sg_alloc_table_from_pages`. */
export const SG_MAX_SEGMENT_UNLIMITED = 0xffffffff;

/** One entry (`struct scatterlist`). */
export class SgEntry {
  readonly #page: MemoryPage;
  /** Offset of the data in the first page. */
  readonly offset: number;
  /** Bytes (CPU view). */
  readonly length: number;
  /** @internal */ _dmaAddress = 0;
  /** @internal */ _dmaLength = 0;
  /** @internal */ _table: SgTable | undefined;
  /** @internal */ _index: number;

  /** @internal */
  constructor(page: MemoryPage, offset: number, length: number, index: number) {
    this.#page = page;
    this.offset = offset;
    this.length = length;
    this._index = index;
  }

  /**
   * The first page (`sg_page`). With the debug mode on, a table handed out by a dma-buf map has
   * its pages scrambled: importers must not touch them (reports).
   */
  get page(): MemoryPage {
    if (this._table?._scrambled) {
      dmaDebugReport(
        `sg entry ${this._index}: importer read a CPU page of a dma-buf mapping (use DMA addresses only)`,
      );
    }
    return this.#page;
  }

  /** Physical address of the data (`sg_phys`). */
  get phys(): number {
    return this.page.phys + this.offset;
  }

  #checkDma(): void {
    const t = this._table;
    if (t && dmaDebugEnabled() && t.mapped && this._index >= t.nents) {
      dmaDebugReport(
        `sg entry ${this._index} read as a DMA segment but the table has only ${t.nents} (nents) after mapping (orig_nents ${t.origNents})`,
      );
    }
  }

  /** `sg_dma_address`: valid for the first `nents` entries of a mapped table. */
  get dmaAddress(): number {
    this.#checkDma();
    return this._dmaAddress;
  }

  /** `sg_dma_len`: valid for the first `nents` entries of a mapped table. */
  get dmaLength(): number {
    this.#checkDma();
    return this._dmaLength;
  }
}

/** One page of a table's CPU view, as the page iterator yields it. */
export interface SgPageIter {
  readonly page: MemoryPage;
  /** Index of the page in the walk (from the table start, including `pgoffset`). */
  readonly index: number;
}

/** A DMA segment. */
export interface SgDmaSegment {
  readonly address: number;
  readonly length: number;
}

/** `struct sg_table`. */
export class SgTable {
  /** The entries (the kernel's `sgl` chain, flattened). */
  readonly sgl: readonly SgEntry[];
  /** Number of CPU entries as built. */
  readonly origNents: number;
  /** @internal */ _nents: number;
  /** @internal Set while mapped for a device (device.ts). */
  _mappedBy: object | undefined;
  /** @internal */ _scrambled = false;

  /** @internal Use {@linkcode SgTable.fromPages} / {@linkcode SgTable.fromMemory}. */
  constructor(entries: SgEntry[]) {
    for (const e of entries) e._table = this;
    this.sgl = Object.freeze(entries);
    this.origNents = entries.length;
    this._nents = entries.length;
  }

  /** Number of DMA segments (equal to `origNents` until mapped). */
  get nents(): number {
    return this._nents;
  }

  /** True while the table is mapped for a device. */
  get mapped(): boolean {
    return this._mappedBy !== undefined;
  }

  /** Total bytes of the CPU view. */
  get byteLength(): number {
    let n = 0;
    for (const e of this.sgl) n += e.length;
    return n;
  }

  /**
   * `sg_alloc_table_from_pages_segment`: entries over `pages`, starting `offset` bytes into the
   * first page, covering `size` bytes. Physically consecutive pages merge into one entry until
   * it would reach `maxSegment` (rounded down to pages).
   *
   * @throws {DmaBufError} EINVAL when `maxSegment` < PAGE_SIZE, `offset` is outside the first
   *   page, or `size` does not fit in the pages.
   */
  static fromPages(
    pages: readonly MemoryPage[],
    offset: number,
    size: number,
    maxSegment: number = SG_MAX_SEGMENT_UNLIMITED,
  ): SgTable {
    if (!Number.isSafeInteger(maxSegment)) {
      throw new DmaBufError('EINVAL', 'maxSegment must be an integer');
    }
    const maxSeg = Math.floor(maxSegment / PAGE_SIZE) * PAGE_SIZE;
    if (maxSeg < PAGE_SIZE) {
      throw new DmaBufError('EINVAL', `max_segment ${maxSegment} is below PAGE_SIZE`);
    }
    const n = pages.length;
    if (
      !Number.isSafeInteger(offset) ||
      !Number.isSafeInteger(size) ||
      offset < 0 ||
      offset >= PAGE_SIZE ||
      size < 0 ||
      offset + size > n * PAGE_SIZE
    ) {
      throw new DmaBufError('EINVAL', 'offset/size do not fit the pages');
    }
    const entries: SgEntry[] = [];
    let cur = 0;
    while (cur < n) {
      // Extend the chunk while pages are physically consecutive and below max_segment.
      let j = cur + 1;
      let segLen = PAGE_SIZE;
      while (j < n && segLen < maxSeg && mergeable(pages[j - 1]!, pages[j]!)) {
        j++;
        segLen += PAGE_SIZE;
      }
      const chunkSize = (j - cur) * PAGE_SIZE - offset;
      entries.push(new SgEntry(pages[cur]!, offset, Math.min(size, chunkSize), entries.length));
      size -= chunkSize;
      offset = 0;
      cur = j;
    }
    return new SgTable(entries);
  }

  /**
   * A table over all of a buffer's memory (an exporter's `map` starts here), `size` bytes
   * (default: all of it), entries up to `maxSegment`.
   */
  static fromMemory(
    memory: BufferMemory,
    opts: { size?: number; maxSegment?: number } = {},
  ): SgTable {
    return SgTable.fromPages(
      memory.pages(),
      0,
      opts.size ?? memory.byteLength,
      opts.maxSegment ?? SG_MAX_SEGMENT_UNLIMITED,
    );
  }

  /** `for_each_sgtable_sg`: every CPU entry (`origNents`). */
  *cpuEntries(): IterableIterator<SgEntry> {
    for (let i = 0; i < this.origNents; i++) yield this.sgl[i]!;
  }

  /** `for_each_sgtable_dma_sg`: every DMA segment (`nents`). */
  *dmaSegments(): IterableIterator<SgDmaSegment> {
    for (let i = 0; i < this._nents; i++) {
      const e = this.sgl[i]!;
      yield { address: e.dmaAddress, length: e.dmaLength };
    }
  }

  /**
   * `for_each_sgtable_page`: every PAGE_SIZE page of the CPU view, starting `pgoffset` pages in.
   * An entry covers round-up(offset + length) / PAGE_SIZE pages.
   */
  *pages(pgoffset = 0): IterableIterator<SgPageIter> {
    let index = 0;
    for (const e of this.cpuEntries()) {
      const count = Math.ceil((e.offset + e.length) / PAGE_SIZE);
      const first = e.page;
      for (let k = 0; k < count; k++, index++) {
        if (index < pgoffset) continue;
        yield {
          index,
          page: {
            sab: first.sab,
            offset: first.offset + k * PAGE_SIZE,
            phys: first.phys + k * PAGE_SIZE,
          },
        };
      }
    }
  }

  /** `for_each_sgtable_dma_page`: the device address of every page of the DMA view. */
  *dmaPages(pgoffset = 0): IterableIterator<number> {
    let index = 0;
    for (const s of this.dmaSegments()) {
      const count = Math.ceil(s.length / PAGE_SIZE);
      for (let k = 0; k < count; k++, index++) {
        if (index >= pgoffset) yield s.address + k * PAGE_SIZE;
      }
    }
  }

  /**
   * `drm_prime_get_contiguous_size`: from the first DMA segment, the bytes the device sees
   * contiguously (stops at the first gap or zero length).
   */
  contiguousSize(): number {
    let expected = -1;
    let size = 0;
    for (const s of this.dmaSegments()) {
      if (s.length === 0) break;
      if (expected !== -1 && s.address !== expected) break;
      expected = s.address + s.length;
      size += s.length;
    }
    return size;
  }

  /**
   * `drm_prime_sg_to_dma_addr_array`: one device address per page, at most `max` of them.
   * Returns the array, or -1 when it would need more than `max` entries (the kernel's -1).
   */
  dmaAddrArray(max: number): number[] | -1 {
    const out: number[] = [];
    for (const a of this.dmaPages()) {
      if (out.length >= max) return -1;
      out.push(a);
    }
    return out;
  }
}

function mergeable(a: MemoryPage, b: MemoryPage): boolean {
  return a.phys + PAGE_SIZE === b.phys && a.sab === b.sab && a.offset + PAGE_SIZE === b.offset;
}
