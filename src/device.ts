/**
 * Devices: how an importer reaches memory (`struct device` as the DMA API sees it,
 * kernel/dma/mapping.c, dma-direct and iommu-dma).
 *
 * A device is described by:
 * - `iommu`: behind an IOMMU (device addresses are I/O virtual addresses the IOMMU translates)
 *   or not (device addresses are the memory's physical addresses, dma-direct);
 * - `maxSegmentSize` (`dma_get_max_seg_size`, default 64 KiB as in the kernel);
 * - `coherent`: whether the device snoops CPU caches (stored now; the non-coherent cache model
 *   comes later).
 *
 * `mapSgtable` (`dma_map_sgtable`) fills the DMA view of a table and sets `nents`:
 * - dma-direct: one segment per CPU entry at its physical address, `nents = origNents`;
 * - IOMMU: one IOVA range for the whole table, each entry at the next page-aligned IOVA; adjacent
 *   entries merge into one segment while the segment stays within `maxSegmentSize`, so
 *   `nents <= origNents` (seed 003's example: 4 physical pages → 1 DMA segment). Unused entries
 *   get `DMA_MAPPING_ERROR` and length 0, as iommu-dma leaves them.
 *
 * The device keeps a page table (the IOMMU's, or for dma-direct the dma-debug record of what is
 * mapped): `dmaRead` / `dmaWrite` move data through device addresses only, page by page. An
 * address that is not mapped faults (`EFAULT`); with an IOMMU, a write through a `TO_DEVICE`
 * mapping or a read through a `FROM_DEVICE` one also faults (IOMMU permissions). This is what a
 * DMA engine device will use.
 *
 * Devices are thread-local objects for now (a device shared with a DMA engine worker comes with
 * the engine). IOVAs are handed out by a bump allocator and never reused.
 *
 * @module
 */
import { PAGE_SIZE } from './dma-buf-memory.js';
import { dmaDebugEnabled, dmaDebugReport } from './dma-debug.js';
import { DMA_MAPPING_ERROR, type SgTable } from './scatterlist.js';
import { DmaBufError } from './substrate/errno.js';

/** `enum dma_data_direction`. */
export const DmaDataDirection = {
  BIDIRECTIONAL: 0,
  TO_DEVICE: 1,
  FROM_DEVICE: 2,
  NONE: 3,
} as const;
export type DmaDataDirection = (typeof DmaDataDirection)[keyof typeof DmaDataDirection];

/** True for 0..3 (`valid_dma_direction` additionally refuses NONE for mappings). */
export function isDmaDirection(dir: unknown): dir is DmaDataDirection {
  return dir === 0 || dir === 1 || dir === 2 || dir === 3;
}

/** The kernel's default maximum segment size (`dma_get_max_seg_size` without parameters). */
export const DEFAULT_MAX_SEGMENT_SIZE = 65536;
const IOVA_BASE = 0x1_0000_0000;

/** How to create a {@linkcode Device}. */
export interface DeviceInit {
  name: string;
  /** Behind an IOMMU (default false). */
  iommu?: boolean;
  /** Bytes, at least PAGE_SIZE (default 64 KiB). */
  maxSegmentSize?: number;
  /** Coherent with the CPU caches (default true). */
  coherent?: boolean;
}

interface Pte {
  readonly sab: SharedArrayBuffer;
  readonly offset: number;
  readonly read: boolean;
  readonly write: boolean;
  count: number;
}

interface Mapped {
  readonly dir: DmaDataDirection;
  /** Device page numbers this mapping installed. */
  readonly pfns: number[];
}

/** A device that reaches memory by DMA. */
export class Device {
  readonly name: string;
  readonly iommu: boolean;
  readonly maxSegmentSize: number;
  readonly coherent: boolean;
  #nextIova = IOVA_BASE;
  readonly #ptes = new Map<number, Pte>();
  readonly #mapped = new WeakMap<SgTable, Mapped>();

  /**
   * @throws {DmaBufError} EINVAL for a missing name or a maximum segment size below PAGE_SIZE.
   */
  constructor(init: DeviceInit) {
    if (typeof init !== 'object' || init === null || typeof init.name !== 'string') {
      throw new DmaBufError('EINVAL', 'a device needs a name');
    }
    const max = init.maxSegmentSize ?? DEFAULT_MAX_SEGMENT_SIZE;
    if (!Number.isSafeInteger(max) || max < PAGE_SIZE) {
      throw new DmaBufError('EINVAL', `maxSegmentSize must be an integer >= ${PAGE_SIZE}`);
    }
    this.name = init.name;
    this.iommu = init.iommu ?? false;
    this.maxSegmentSize = max;
    this.coherent = init.coherent ?? true;
  }

  /** Number of device pages currently mapped (for leak checks). */
  get mappedPages(): number {
    return this.#ptes.size;
  }

  /**
   * `dma_map_sgtable(dev, sgt, dir, 0)`: maps the `origNents` CPU entries, sets the DMA view and
   * `nents`. Returns nothing (the kernel returns 0, never a count).
   *
   * @throws {DmaBufError} EINVAL for a bad or NONE direction, or a table that is already mapped;
   *   with the debug mode on, EINVAL (DMA-API) for an entry longer than `maxSegmentSize`.
   */
  mapSgtable(sgt: SgTable, dir: DmaDataDirection): void {
    if (!isDmaDirection(dir) || dir === DmaDataDirection.NONE) {
      throw new DmaBufError('EINVAL', `invalid DMA direction ${String(dir)}`);
    }
    if (sgt._mappedBy !== undefined) {
      throw new DmaBufError('EINVAL', 'sg table is already mapped');
    }
    if (dmaDebugEnabled()) {
      for (const e of sgt.cpuEntries()) {
        if (e.length > this.maxSegmentSize) {
          dmaDebugReport(
            `${this.name}: mapping sg segment longer than device claims to support [len=${e.length}] [max=${this.maxSegmentSize}]`,
          );
        }
      }
    }
    const read = dir !== DmaDataDirection.FROM_DEVICE || !this.iommu;
    const write = dir !== DmaDataDirection.TO_DEVICE || !this.iommu;
    const pfns: number[] = [];
    const install = (devAddr: number, sab: SharedArrayBuffer, offset: number): void => {
      const pfn = devAddr / PAGE_SIZE;
      const old = this.#ptes.get(pfn);
      if (old) old.count++;
      else this.#ptes.set(pfn, { sab, offset, read, write, count: 1 });
      pfns.push(pfn);
    };
    const entries = sgt.sgl;
    if (!this.iommu) {
      for (const e of entries) {
        e._dmaAddress = e.phys;
        e._dmaLength = e.length;
        const first = e.page;
        const pages = Math.ceil((e.offset + e.length) / PAGE_SIZE);
        for (let k = 0; k < pages; k++) {
          install(first.phys + k * PAGE_SIZE, first.sab, first.offset + k * PAGE_SIZE);
        }
      }
      sgt._nents = entries.length;
    } else {
      // One IOVA range; each entry at the next page-aligned address.
      let iova = this.#nextIova;
      const addrs: number[] = [];
      for (const e of entries) {
        addrs.push(iova + e.offset);
        const first = e.page;
        const pages = Math.ceil((e.offset + e.length) / PAGE_SIZE);
        for (let k = 0; k < pages; k++) {
          install(iova + k * PAGE_SIZE, first.sab, first.offset + k * PAGE_SIZE);
        }
        iova += pages * PAGE_SIZE;
      }
      this.#nextIova = iova + PAGE_SIZE; // a guard page between mappings
      // __finalise_sg: merge while contiguous in IOVA space and within the maximum segment.
      const segs: [number, number][] = [];
      entries.forEach((e, i) => {
        const a = addrs[i]!;
        const last = segs[segs.length - 1];
        if (last && last[0] + last[1] === a && last[1] + e.length <= this.maxSegmentSize) {
          last[1] += e.length;
        } else segs.push([a, e.length]);
      });
      entries.forEach((e, i) => {
        const s = segs[i];
        e._dmaAddress = s ? s[0] : DMA_MAPPING_ERROR;
        e._dmaLength = s ? s[1] : 0;
      });
      sgt._nents = segs.length;
    }
    sgt._mappedBy = this;
    this.#mapped.set(sgt, { dir, pfns });
  }

  /**
   * `dma_unmap_sgtable`: removes the table's device mapping (walks `origNents`); `nents`
   * returns to `origNents`.
   *
   * @throws {DmaBufError} EINVAL when the table is not mapped for this device or `dir` differs
   *   from the mapping's direction (dma-debug's check, always on here).
   */
  unmapSgtable(sgt: SgTable, dir: DmaDataDirection): void {
    const m = this.#mapped.get(sgt);
    if (!m || sgt._mappedBy !== this) {
      throw new DmaBufError('EINVAL', `${this.name}: sg table is not mapped for this device`);
    }
    if (m.dir !== dir) {
      throw new DmaBufError(
        'EINVAL',
        `${this.name}: unmap direction ${dir} differs from map direction ${m.dir}`,
      );
    }
    for (const pfn of m.pfns) {
      const p = this.#ptes.get(pfn);
      if (p && --p.count === 0) this.#ptes.delete(pfn);
    }
    this.#mapped.delete(sgt);
    for (const e of sgt.sgl) {
      e._dmaAddress = 0;
      e._dmaLength = 0;
    }
    sgt._nents = sgt.origNents;
    sgt._mappedBy = undefined;
  }

  #walk(
    addr: number,
    length: number,
    writing: boolean,
    fn: (a: Uint8Array, done: number) => void,
  ): void {
    if (!Number.isSafeInteger(addr) || !Number.isSafeInteger(length) || addr < 0 || length < 0) {
      throw new DmaBufError('EFAULT', `${this.name}: DMA to bad address ${addr}`);
    }
    let done = 0;
    while (done < length) {
      const at = addr + done;
      const pfn = Math.floor(at / PAGE_SIZE);
      const p = this.#ptes.get(pfn);
      const what = this.iommu ? 'IOMMU fault' : 'DMA to unmapped memory';
      if (!p) {
        throw new DmaBufError('EFAULT', `${this.name}: ${what} at 0x${at.toString(16)}`);
      }
      if (writing ? !p.write : !p.read) {
        throw new DmaBufError(
          'EFAULT',
          `${this.name}: ${what}: ${writing ? 'write' : 'read'} not permitted at 0x${at.toString(16)}`,
        );
      }
      const off = at - pfn * PAGE_SIZE;
      const n = Math.min(PAGE_SIZE - off, length - done);
      fn(new Uint8Array(p.sab, p.offset + off, n), done);
      done += n;
    }
  }

  /**
   * The device reads `length` bytes at device address `addr` (a copy).
   *
   * @throws {DmaBufError} EFAULT for an unmapped address or (IOMMU) a mapping without read
   *   permission.
   */
  dmaRead(addr: number, length: number): Uint8Array {
    const out = new Uint8Array(length);
    this.#walk(addr, length, false, (a, done) => out.set(a, done));
    return out;
  }

  /**
   * The device writes `data` at device address `addr`.
   *
   * @throws {DmaBufError} EFAULT for an unmapped address or (IOMMU) a mapping without write
   *   permission.
   */
  dmaWrite(addr: number, data: Uint8Array): void {
    this.#walk(addr, data.length, true, (a, done) => a.set(data.subarray(done, done + a.length)));
  }
}
