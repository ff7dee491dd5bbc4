/**
 * Devices: how an importer reaches memory (`struct device` as the DMA API sees it,
 * kernel/dma/mapping.c, dma-direct and iommu-dma).
 *
 * A device is described by:
 * - `iommu`: behind an IOMMU (device addresses are I/O virtual addresses the IOMMU translates)
 *   or not (device addresses are the memory's physical addresses, dma-direct);
 * - `maxSegmentSize` (`dma_get_max_seg_size`, default 64 KiB as in the kernel);
 * - `coherent`: whether the device snoops CPU caches. A non-coherent device works on its own
 *   copy of each page it maps (its "cache", shared memory): map and `syncSgtableForDevice`
 *   (`dma_sync_sgtable_for_device`) copy CPU writes into it for TO_DEVICE / BIDIRECTIONAL and
 *   hand the pages to the device; its writes stay there (dirty bytes) until unmap or
 *   `syncSgtableForCpu` with FROM_DEVICE / BIDIRECTIONAL writes them back and hands the pages to
 *   the CPU. With the debug mode on, device access to a CPU-owned page and CPU access (through a
 *   `MemoryView`) to a device-owned page report.
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
 * Devices are thread-local objects; `exportPageTable` hands the entries translating given device
 * ranges to another thread ({@linkcode DmaWindow}, used by the DMA engine worker). IOVAs are
 * handed out by a bump allocator and never reused.
 *
 * @module
 */
import { PAGE_SIZE, pageOwners } from './dma-buf-memory.js';
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

/**
 * A non-coherent device's copy of one memory page (its "cache"), in shared memory so that a
 * DMA engine worker uses the same copy: bytes [0, PAGE_SIZE) the data, [PAGE_SIZE, 2 PAGE_SIZE)
 * one dirty byte per data byte, then two words: owned by the device (1) or the CPU (0), and "some
 * byte is dirty".
 */
const CACHE_BYTES = 2 * PAGE_SIZE + 8;
const C_OWNED = (2 * PAGE_SIZE) / 4;
const C_DIRTY = C_OWNED + 1;

interface CachePage {
  readonly buffer: SharedArrayBuffer;
  readonly data: Uint8Array;
  readonly dirty: Uint8Array;
  readonly words: Int32Array;
}

function cachePage(buffer: SharedArrayBuffer): CachePage {
  return {
    buffer,
    data: new Uint8Array(buffer, 0, PAGE_SIZE),
    dirty: new Uint8Array(buffer, PAGE_SIZE, PAGE_SIZE),
    words: new Int32Array(buffer),
  };
}

/** @internal One page of a non-coherent device's mapping, postable: its cache and its memory. */
export interface NcPage {
  readonly cache: SharedArrayBuffer;
  readonly sab: SharedArrayBuffer;
  readonly offset: number;
  /**
   * The page-ownership words of `sab` ({@linkcode pageOwners}): a `SharedArrayBuffer` posted in
   * another message is another object there, so the words travel with the page.
   */
  readonly owners: SharedArrayBuffer;
}

const cacheViews = new WeakMap<SharedArrayBuffer, CachePage>();
function cacheOf(buffer: SharedArrayBuffer): CachePage {
  let c = cacheViews.get(buffer);
  if (!c) {
    c = cachePage(buffer);
    cacheViews.set(buffer, c);
  }
  return c;
}

const ownerViews = new WeakMap<SharedArrayBuffer, Int32Array>();
function ownersOf(p: NcPage): Int32Array {
  let o = ownerViews.get(p.owners);
  if (!o) {
    o = new Int32Array(p.owners);
    ownerViews.set(p.owners, o);
  }
  return o;
}

/** Hands a cache page to the device (1) or the CPU (0); keeps the page-ownership counts. */
function ownPage(c: CachePage, owners: Int32Array, offset: number, device: boolean): void {
  const was = Atomics.exchange(c.words, C_OWNED, device ? 1 : 0) !== 0;
  if (was !== device) Atomics.add(owners, offset / PAGE_SIZE, device ? 1 : -1);
}

/** `arch_sync_dma_for_device` of one page. */
function pageSyncForDevice(
  c: CachePage,
  sab: SharedArrayBuffer,
  owners: Int32Array,
  offset: number,
  dir: DmaDataDirection,
): void {
  if (dir === DmaDataDirection.TO_DEVICE || dir === DmaDataDirection.BIDIRECTIONAL) {
    const mem = new Uint8Array(sab, offset, PAGE_SIZE);
    if (Atomics.load(c.words, C_DIRTY) === 0) c.data.set(mem);
    else for (let i = 0; i < PAGE_SIZE; i++) if (c.dirty[i] === 0) c.data[i] = mem[i]!;
  }
  ownPage(c, owners, offset, true);
}

/** `arch_sync_dma_for_cpu` of one page. */
function pageSyncForCpu(
  c: CachePage,
  sab: SharedArrayBuffer,
  owners: Int32Array,
  offset: number,
  dir: DmaDataDirection,
): void {
  const pull = dir === DmaDataDirection.FROM_DEVICE || dir === DmaDataDirection.BIDIRECTIONAL;
  if (pull && Atomics.exchange(c.words, C_DIRTY, 0) !== 0) {
    const mem = new Uint8Array(sab, offset, PAGE_SIZE);
    for (let i = 0; i < PAGE_SIZE; i++) {
      if (c.dirty[i] !== 0) {
        mem[i] = c.data[i]!;
        c.dirty[i] = 0;
      }
    }
  }
  ownPage(c, owners, offset, false);
}

/**
 * @internal `dma_sync_sgtable_for_cpu` from any thread, over the pages of a mapping made in
 * another one ({@linkcode Device._ncPages}).
 */
export function ncSyncForCpu(pages: readonly NcPage[], dir: DmaDataDirection): void {
  for (const p of pages) pageSyncForCpu(cacheOf(p.cache), p.sab, ownersOf(p), p.offset, dir);
}

/** @internal `dma_sync_sgtable_for_device` from any thread (see {@linkcode ncSyncForCpu}). */
export function ncSyncForDevice(pages: readonly NcPage[], dir: DmaDataDirection): void {
  for (const p of pages) pageSyncForDevice(cacheOf(p.cache), p.sab, ownersOf(p), p.offset, dir);
}

interface Pte {
  readonly sab: SharedArrayBuffer;
  readonly offset: number;
  readonly read: boolean;
  readonly write: boolean;
  /** Shared word [0]: number of mappings using this entry (0: unmapped, faults). */
  readonly count: Int32Array;
  /** The device's copy of the page (non-coherent devices). */
  readonly cache: CachePage | undefined;
}

/** One device page of {@linkcode DmaPageTableDescriptor}. */
export interface DmaPteDescriptor {
  readonly pfn: number;
  readonly sab: SharedArrayBuffer;
  readonly offset: number;
  readonly read: boolean;
  readonly write: boolean;
  readonly count: SharedArrayBuffer;
  readonly cache: SharedArrayBuffer | undefined;
}

/**
 * The postable form of part of a device's page table (see {@linkcode Device.exportPageTable}):
 * what a DMA engine in another thread needs to translate the device addresses of a job.
 */
export interface DmaPageTableDescriptor {
  readonly $dma: 'page-table';
  readonly name: string;
  readonly iommu: boolean;
  readonly ptes: readonly DmaPteDescriptor[];
}

interface Mapped {
  readonly dir: DmaDataDirection;
  /** Device page numbers this mapping installed. */
  readonly pfns: number[];
  /** Physical addresses of the memory pages it covers (non-coherent devices). */
  readonly pages: number[];
}

interface CacheEntry {
  readonly cache: CachePage;
  readonly sab: SharedArrayBuffer;
  readonly offset: number;
  refs: number;
}

/**
 * Device-side access through a page table: the one walk both a {@linkcode Device} and a
 * {@linkcode DmaWindow} use. Faults (`EFAULT`) on an unmapped page or a permission the IOMMU
 * refuses; a non-coherent device reads and writes its cache; with the debug mode on, access to a
 * page the CPU owns (not synced for the device) reports.
 */
function walkPtes(
  name: string,
  iommu: boolean,
  lookup: (pfn: number) => Pte | undefined,
  addr: number,
  length: number,
  writing: boolean,
  fn: (a: Uint8Array, done: number, dirty: Uint8Array | undefined) => void,
): void {
  if (!Number.isSafeInteger(addr) || !Number.isSafeInteger(length) || addr < 0 || length < 0) {
    throw new DmaBufError('EFAULT', `${name}: DMA to bad address ${addr}`);
  }
  let done = 0;
  while (done < length) {
    const at = addr + done;
    const pfn = Math.floor(at / PAGE_SIZE);
    const p = lookup(pfn);
    const what = iommu ? 'IOMMU fault' : 'DMA to unmapped memory';
    if (!p || Atomics.load(p.count, 0) <= 0) {
      throw new DmaBufError('EFAULT', `${name}: ${what} at 0x${at.toString(16)}`);
    }
    if (writing ? !p.write : !p.read) {
      throw new DmaBufError(
        'EFAULT',
        `${name}: ${what}: ${writing ? 'write' : 'read'} not permitted at 0x${at.toString(16)}`,
      );
    }
    const off = at - pfn * PAGE_SIZE;
    const n = Math.min(PAGE_SIZE - off, length - done);
    const c = p.cache;
    if (c) {
      if (dmaDebugEnabled() && Atomics.load(c.words, C_OWNED) === 0) {
        dmaDebugReport(
          `${name}: device ${writing ? 'write' : 'read'} at 0x${at.toString(16)} of memory not synced for the device (the CPU owns it: missing sync for device / DMA_BUF_SYNC_END)`,
        );
      }
      if (writing) Atomics.store(c.words, C_DIRTY, 1);
      fn(c.data.subarray(off, off + n), done, writing ? c.dirty.subarray(off, off + n) : undefined);
    } else {
      fn(new Uint8Array(p.sab, p.offset + off, n), done, undefined);
    }
    done += n;
  }
}

function dmaReadVia(
  name: string,
  iommu: boolean,
  lookup: (pfn: number) => Pte | undefined,
  addr: number,
  length: number,
): Uint8Array {
  const out = new Uint8Array(length);
  walkPtes(name, iommu, lookup, addr, length, false, (a, done) => out.set(a, done));
  return out;
}

function dmaWriteVia(
  name: string,
  iommu: boolean,
  lookup: (pfn: number) => Pte | undefined,
  addr: number,
  data: Uint8Array,
): void {
  walkPtes(name, iommu, lookup, addr, data.length, true, (a, done, dirty) => {
    a.set(data.subarray(done, done + a.length));
    dirty?.fill(1);
  });
}

/**
 * A device's view of memory in another thread (a DMA engine's worker): built from a
 * {@linkcode DmaPageTableDescriptor}, it moves data through device addresses only, with the
 * device's faults, permissions, cache and debug checks. Entries unmapped since the descriptor was
 * made fault (their shared mapping count is 0).
 */
export class DmaWindow {
  readonly name: string;
  readonly iommu: boolean;
  readonly #ptes = new Map<number, Pte>();

  /** @throws {DmaBufError} EINVAL for something that is not a page-table descriptor. */
  constructor(desc: DmaPageTableDescriptor) {
    if (typeof desc !== 'object' || desc === null || desc.$dma !== 'page-table') {
      throw new DmaBufError('EINVAL', 'not a DMA page-table descriptor');
    }
    this.name = desc.name;
    this.iommu = desc.iommu;
    for (const p of desc.ptes) {
      this.#ptes.set(p.pfn, {
        sab: p.sab,
        offset: p.offset,
        read: p.read,
        write: p.write,
        count: new Int32Array(p.count),
        cache: p.cache ? cachePage(p.cache) : undefined,
      });
    }
  }

  /** Reads `length` bytes at device address `addr`. @throws {DmaBufError} EFAULT. */
  dmaRead(addr: number, length: number): Uint8Array {
    return dmaReadVia(this.name, this.iommu, (pfn) => this.#ptes.get(pfn), addr, length);
  }

  /** Writes `data` at device address `addr`. @throws {DmaBufError} EFAULT. */
  dmaWrite(addr: number, data: Uint8Array): void {
    dmaWriteVia(this.name, this.iommu, (pfn) => this.#ptes.get(pfn), addr, data);
  }
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
  /** Non-coherent devices: the cache page of each memory page (by physical address). */
  readonly #caches = new Map<number, CacheEntry>();

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

  /** Number of memory pages the device's cache holds (non-coherent devices; leak checks). */
  get cachedPages(): number {
    return this.#caches.size;
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
    const pages: number[] = [];
    const install = (
      devAddr: number,
      sab: SharedArrayBuffer,
      offset: number,
      phys: number,
    ): void => {
      const pfn = devAddr / PAGE_SIZE;
      const cache = this.coherent ? undefined : this.#cacheGet(phys, sab, offset);
      if (cache) pages.push(phys);
      const old = this.#ptes.get(pfn);
      if (old) Atomics.add(old.count, 0, 1);
      else {
        const count = new Int32Array(new SharedArrayBuffer(4));
        count[0] = 1;
        this.#ptes.set(pfn, { sab, offset, read, write, count, cache });
      }
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
          const phys = first.phys + k * PAGE_SIZE;
          install(phys, first.sab, first.offset + k * PAGE_SIZE, phys);
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
          install(
            iova + k * PAGE_SIZE,
            first.sab,
            first.offset + k * PAGE_SIZE,
            first.phys + k * PAGE_SIZE,
          );
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
    const m: Mapped = { dir, pfns, pages };
    this.#mapped.set(sgt, m);
    // dma_map_*: arch_sync_dma_for_device.
    this.#syncForDevice(m, dir);
  }

  #cacheGet(phys: number, sab: SharedArrayBuffer, offset: number): CachePage {
    let e = this.#caches.get(phys);
    if (!e) {
      // A cold cache line fill: the device's copy starts as the memory's bytes.
      const cache = cachePage(new SharedArrayBuffer(CACHE_BYTES));
      cache.data.set(new Uint8Array(sab, offset, PAGE_SIZE));
      e = { cache, sab, offset, refs: 0 };
      this.#caches.set(phys, e);
    }
    e.refs++;
    return e.cache;
  }

  /** `arch_sync_dma_for_device`: CPU writes reach the device's copy (TO_DEVICE, BIDIRECTIONAL). */
  #syncForDevice(m: Mapped, dir: DmaDataDirection): void {
    for (const phys of m.pages) {
      const e = this.#caches.get(phys);
      if (e) pageSyncForDevice(e.cache, e.sab, pageOwners(e.sab), e.offset, dir);
    }
  }

  /** `arch_sync_dma_for_cpu`: the device's writes reach memory (FROM_DEVICE, BIDIRECTIONAL). */
  #syncForCpu(m: Mapped, dir: DmaDataDirection): void {
    for (const phys of m.pages) {
      const e = this.#caches.get(phys);
      if (e) pageSyncForCpu(e.cache, e.sab, pageOwners(e.sab), e.offset, dir);
    }
  }

  /**
   * @internal The device-cache pages of a table mapped for this (non-coherent) device, in
   * postable form, so that another thread can sync them ({@linkcode ncSyncForCpu},
   * {@linkcode ncSyncForDevice}). Empty for a coherent device.
   */
  _ncPages(sgt: SgTable): NcPage[] {
    const m = this.#mapped.get(sgt);
    if (!m) return [];
    const out: NcPage[] = [];
    for (const phys of m.pages) {
      const e = this.#caches.get(phys);
      if (e) {
        const owners = pageOwners(e.sab).buffer as SharedArrayBuffer;
        out.push({ cache: e.cache.buffer, sab: e.sab, offset: e.offset, owners });
      }
    }
    return out;
  }

  #mappedFor(sgt: SgTable, what: string): Mapped {
    const m = this.#mapped.get(sgt);
    if (!m || sgt._mappedBy !== this) {
      throw new DmaBufError(
        'EINVAL',
        `${this.name}: ${what} of an sg table not mapped for this device`,
      );
    }
    return m;
  }

  /**
   * `dma_sync_sgtable_for_cpu`: hands the table's memory to the CPU. For a non-coherent device
   * the bytes the device wrote reach memory (FROM_DEVICE, BIDIRECTIONAL; TO_DEVICE moves no
   * data) and the CPU owns the pages again. Nothing to do for a coherent device.
   *
   * @throws {DmaBufError} EINVAL for a bad direction or a table not mapped for this device.
   */
  syncSgtableForCpu(sgt: SgTable, dir: DmaDataDirection): void {
    if (!isDmaDirection(dir) || dir === DmaDataDirection.NONE) {
      throw new DmaBufError('EINVAL', `invalid DMA direction ${String(dir)}`);
    }
    this.#syncForCpu(this.#mappedFor(sgt, 'sync for cpu'), dir);
  }

  /**
   * `dma_sync_sgtable_for_device`: hands the table's memory to the device. For a non-coherent
   * device the CPU's writes reach the device's copy (TO_DEVICE, BIDIRECTIONAL; FROM_DEVICE moves
   * no data) and the device owns the pages. Nothing to do for a coherent device.
   *
   * @throws {DmaBufError} EINVAL for a bad direction or a table not mapped for this device.
   */
  syncSgtableForDevice(sgt: SgTable, dir: DmaDataDirection): void {
    if (!isDmaDirection(dir) || dir === DmaDataDirection.NONE) {
      throw new DmaBufError('EINVAL', `invalid DMA direction ${String(dir)}`);
    }
    this.#syncForDevice(this.#mappedFor(sgt, 'sync for device'), dir);
  }

  /**
   * The page-table entries that translate the given device ranges, in postable form (for a DMA
   * engine worker, {@linkcode DmaWindow}). Unmapped pages are left out (they fault there).
   */
  exportPageTable(ranges: Iterable<{ address: number; length: number }>): DmaPageTableDescriptor {
    const ptes = new Map<number, DmaPteDescriptor>();
    for (const r of ranges) {
      if (!Number.isSafeInteger(r.address) || !Number.isSafeInteger(r.length) || r.length <= 0) {
        continue;
      }
      const last = Math.floor((r.address + r.length - 1) / PAGE_SIZE);
      for (let pfn = Math.floor(r.address / PAGE_SIZE); pfn <= last; pfn++) {
        const p = this.#ptes.get(pfn);
        if (!p || ptes.has(pfn)) continue;
        ptes.set(pfn, {
          pfn,
          sab: p.sab,
          offset: p.offset,
          read: p.read,
          write: p.write,
          count: p.count.buffer as SharedArrayBuffer,
          cache: p.cache?.buffer,
        });
      }
    }
    return { $dma: 'page-table', name: this.name, iommu: this.iommu, ptes: [...ptes.values()] };
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
    // dma_unmap_*: arch_sync_dma_for_cpu (moves data for FROM_DEVICE / BIDIRECTIONAL).
    this.#syncForCpu(m, dir);
    for (const phys of m.pages) {
      const e = this.#caches.get(phys);
      if (e && --e.refs === 0) this.#caches.delete(phys);
    }
    for (const pfn of m.pfns) {
      const p = this.#ptes.get(pfn);
      if (p && Atomics.sub(p.count, 0, 1) === 1) this.#ptes.delete(pfn);
    }
    this.#mapped.delete(sgt);
    for (const e of sgt.sgl) {
      e._dmaAddress = 0;
      e._dmaLength = 0;
    }
    sgt._nents = sgt.origNents;
    sgt._mappedBy = undefined;
  }

  /**
   * The device reads `length` bytes at device address `addr` (a copy).
   *
   * @throws {DmaBufError} EFAULT for an unmapped address or (IOMMU) a mapping without read
   *   permission.
   */
  dmaRead(addr: number, length: number): Uint8Array {
    return dmaReadVia(this.name, this.iommu, (pfn) => this.#ptes.get(pfn), addr, length);
  }

  /**
   * The device writes `data` at device address `addr`.
   *
   * @throws {DmaBufError} EFAULT for an unmapped address or (IOMMU) a mapping without write
   *   permission.
   */
  dmaWrite(addr: number, data: Uint8Array): void {
    dmaWriteVia(this.name, this.iommu, (pfn) => this.#ptes.get(pfn), addr, data);
  }
}
