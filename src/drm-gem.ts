/**
 * A DRM-like device with GEM buffer objects (drivers/gpu/drm/drm_gem.c, drm_file.c,
 * drm_vma_manager.c), the object side of PRIME (`drm-prime.ts`).
 *
 * - {@linkcode DrmDevice}: a device (thread-local, like any device here) with a `Device` for DMA
 *   attachments and a fake-offset space for mmap (`drm_vma_offset_manager`).
 * - {@linkcode DrmGemFile}: one open of the device (`struct drm_file`): GEM handles (from 1,
 *   per file), the PRIME lookup caches (dma-buf ↔ handle), and mmap through the device node.
 * - {@linkcode GemObject}: a buffer object (`struct drm_gem_object`) backed by shared memory
 *   (shmem-like), or by an imported dma-buf (`import_attach`).
 *
 * Lifetimes: an object lives while it has handles in some file of its device. When the last
 * handle goes, its exported dma-buf reference (`obj->dma_buf`) is dropped and an imported
 * object unmaps, detaches and puts its dma-buf (`drm_prime_gem_destroy`). The memory itself is
 * shared and stays valid for every dma-buf that still holds it.
 *
 * mmap through the device: {@linkcode DrmGemFile.mapOffset} (`DRM_IOCTL_MODE_MAP_DUMB` /
 * `GEM_MMAP_OFFSET`) gives the object's fake offset and allows this file to map it; then
 * {@linkcode DrmGemFile.mmap} looks the offset up (`drm_gem_mmap`): no object there, or a range
 * past its end → `EINVAL`; a file that was not given the offset → `EACCES`. An imported object
 * forwards the mapping to its exporter (`dma_buf_mmap(obj->dma_buf, vma, 0)`), which applies the
 * dma-buf's own rules (a writable shared mapping of a read-only dma-buf → `EACCES`); the
 * exporter side never forwards again (see `drm-prime.ts`), so the loop of seed 000 cannot occur.
 *
 * @module
 */

import { Device, DmaDataDirection } from './device.js';
import {
  type DmaBuf,
  type DmaBufAttachment,
  type DmaBufMapping,
  MAP_PRIVATE,
  MAP_SHARED,
  PROT_READ,
  PROT_WRITE,
} from './dma-buf.js';
import { BufferMemory, MemoryView, PAGE_SHIFT, PAGE_SIZE, pageAlign } from './dma-buf-memory.js';
import { DmaResv } from './dma-resv.js';
import type { SgTable } from './scatterlist.js';
import { DmaBufError } from './substrate/errno.js';

/** @internal The exported GEM objects of this thread, by dma-buf inode (drm-prime.ts). */
export const gemExportedHere = new Map<bigint, GemObject>();

/** First page of the fake mmap offsets (`DRM_FILE_PAGE_OFFSET_START`). */
export const DRM_FILE_PAGE_OFFSET_START = (0xffffffffn >> BigInt(PAGE_SHIFT)) + 1n;

/** What an imported object keeps (`obj->import_attach` and its table). */
export interface GemImportAttach {
  readonly buf: DmaBuf;
  readonly attach: DmaBufAttachment;
  readonly sgt: SgTable;
}

/** Counters of an object (for tests and debugging). */
export interface GemObjectStats {
  /** Mappings made by the dma-buf's exporter `mmap` op for this object (any importer). */
  exporterMmaps: number;
  /** Mappings made through a device node (native or forwarded). */
  deviceMmaps: number;
}

const TOKEN: unique symbol = Symbol('gem');

/** A GEM buffer object (thread-local). */
export class GemObject {
  readonly dev: DrmDevice;
  readonly size: number;
  readonly memory: BufferMemory;
  /** The reservation object: its own, or the imported dma-buf's (shared). */
  readonly resv: DmaResv;
  /** `obj->import_attach`: set for an object imported from another exporter. */
  readonly importAttach: GemImportAttach | undefined;
  readonly stats: GemObjectStats = { exporterMmaps: 0, deviceMmaps: 0 };
  /** @internal `obj->dma_buf` of an exported object (a reference while it has handles). */
  _dmaBuf: DmaBuf | undefined;
  /** @internal */ _handleCount = 0;
  /** @internal First page of its fake offset. */ _vmaStart: bigint | undefined;
  /** @internal Files allowed to map the offset. */ readonly _allowed = new Set<DrmGemFile>();

  /** @internal */
  constructor(
    token: typeof TOKEN,
    dev: DrmDevice,
    size: number,
    memory: BufferMemory,
    resv: DmaResv,
    importAttach: GemImportAttach | undefined,
  ) {
    if (token !== TOKEN) throw new TypeError('use DrmGemFile.create() or PRIME import');
    this.dev = dev;
    this.size = size;
    this.memory = memory;
    this.resv = resv;
    this.importAttach = importAttach;
  }

  /** @internal An object over an imported dma-buf (takes over the given references). */
  static _imported(dev: DrmDevice, imp: GemImportAttach, resv: DmaResv): GemObject {
    return new GemObject(TOKEN, dev, imp.buf.size, imp.buf.memory, resv, imp);
  }

  /** Handles in all files of its device. */
  get handleCount(): number {
    return this._handleCount;
  }

  /** The dma-buf this object was exported as, if any (borrowed). */
  get dmaBuf(): DmaBuf | undefined {
    return this.importAttach?.buf ?? this._dmaBuf;
  }

  /** @internal The last handle is gone: drop the export and the import (`drm_gem_object_free`). */
  _free(): void {
    const exported = this._dmaBuf;
    this._dmaBuf = undefined;
    if (exported) {
      for (const [ino, o] of this.dev._exported) if (o === this) this.dev._exported.delete(ino);
      for (const [ino, o] of gemExportedHere) if (o === this) gemExportedHere.delete(ino);
      exported.dispose();
    }
    if (this._vmaStart !== undefined) this.dev._offsets.delete(this._vmaStart);
    this._allowed.clear();
    const imp = this.importAttach;
    if (imp) {
      try {
        imp.attach.unmapUnlocked(imp.sgt, DmaDataDirection.BIDIRECTIONAL);
      } finally {
        imp.buf.detach(imp.attach);
        imp.buf.dispose();
      }
    }
    this.resv.dispose();
  }
}

/** How to create a {@linkcode DrmDevice}. */
export interface DrmDeviceInit {
  name: string;
  /** Behind an IOMMU (default false). */
  iommu?: boolean;
}

/** A DRM device (thread-local). */
export class DrmDevice {
  readonly name: string;
  /** The device DMA attachments of imports are made for. */
  readonly device: Device;
  /** @internal Objects by first fake page. */ readonly _offsets = new Map<bigint, GemObject>();
  /** @internal */ _nextPage = DRM_FILE_PAGE_OFFSET_START;
  /** @internal Exported objects by dma-buf inode (the self-import lookup). */
  readonly _exported = new Map<bigint, GemObject>();

  /** @throws {DmaBufError} EINVAL for a missing name. */
  constructor(init: DrmDeviceInit) {
    if (typeof init !== 'object' || init === null || typeof init.name !== 'string') {
      throw new DmaBufError('EINVAL', 'a DRM device needs a name');
    }
    this.name = init.name;
    this.device = new Device({ name: init.name, iommu: init.iommu ?? false });
  }

  /** Opens the device node: a new file with its own handle space. */
  open(): DrmGemFile {
    return new DrmGemFile(TOKEN, this);
  }
}

/** A CPU mapping made through a device node (native GEM or forwarded to a dma-buf). */
export interface GemMapping extends Disposable {
  readonly view: MemoryView;
  readonly prot: number;
  readonly byteLength: number;
  readonly mapped: boolean;
  get(i: number): number;
  set(i: number, v: number): void;
  unmap(): void;
}

class ShmemMapping implements GemMapping {
  readonly view: MemoryView;
  readonly prot: number;
  readonly byteLength: number;
  #mapped = true;

  constructor(memory: BufferMemory, start: number, length: number, prot: number) {
    this.prot = prot;
    this.byteLength = length;
    this.view = new MemoryView(memory.pieces(start, start + length), {
      writable: () => this.#mapped && (this.prot & PROT_WRITE) !== 0,
      readable: () => (this.prot & PROT_READ) !== 0,
      check: () => {
        if (!this.#mapped) throw new DmaBufError('EBADF', 'mapping was unmapped');
      },
    });
  }
  get mapped(): boolean {
    return this.#mapped;
  }
  get(i: number): number {
    return this.view.get(i);
  }
  set(i: number, v: number): void {
    this.view.set(i, v);
  }
  unmap(): void {
    this.#mapped = false;
  }
  [Symbol.dispose](): void {
    this.unmap();
  }
}

/** Options of {@linkcode DrmGemFile.mmap}. */
export interface GemMmapOptions {
  /** Bytes (default: the whole object from the offset). */
  length?: number;
  /** `PROT_*` (default read-write; for an import, the dma-buf's default). */
  prot?: number;
  /** `MAP_SHARED` (default) or `MAP_PRIVATE`. */
  flags?: number;
}

/** Result of {@linkcode DrmGemFile.createDumb}. */
export interface DrmDumb {
  readonly handle: number;
  readonly pitch: number;
  readonly size: number;
}

/** An open of a {@linkcode DrmDevice} (`struct drm_file`): handles and PRIME caches. */
export class DrmGemFile implements Disposable {
  readonly dev: DrmDevice;
  readonly #handles = new Map<number, GemObject>();
  #nextHandle = 1;
  /** PRIME caches: by dma-buf inode and by handle; each entry holds a dma-buf reference. */
  readonly #primeByIno = new Map<bigint, { handle: number; buf: DmaBuf }>();
  readonly #primeByHandle = new Map<number, bigint>();
  #closed = false;

  /** @internal */
  constructor(token: typeof TOKEN, dev: DrmDevice) {
    if (token !== TOKEN) throw new TypeError('use DrmDevice.open()');
    this.dev = dev;
  }

  #check(): void {
    if (this.#closed) throw new DmaBufError('EBADF', 'DRM file is closed');
  }

  /**
   * Creates a shmem-backed object of `size` bytes (rounded up to pages) and returns its handle.
   *
   * @throws {DmaBufError} EINVAL for a size that is not a positive integer.
   */
  create(size: number): number {
    this.#check();
    if (!Number.isSafeInteger(size) || size <= 0) {
      throw new DmaBufError('EINVAL', 'GEM object size must be a positive integer');
    }
    const aligned = pageAlign(size);
    const obj = new GemObject(
      TOKEN,
      this.dev,
      aligned,
      BufferMemory.allocate(aligned),
      new DmaResv(),
      undefined,
    );
    return this._addHandle(obj);
  }

  /**
   * `DRM_IOCTL_MODE_CREATE_DUMB` (vgem's rules): pitch = width × ⌈bpp/8⌉, size = pitch × height
   * rounded up to pages.
   *
   * @throws {DmaBufError} EINVAL for non-positive dimensions.
   */
  createDumb(width: number, height: number, bpp: number): DrmDumb {
    for (const v of [width, height, bpp]) {
      if (!Number.isSafeInteger(v) || v <= 0) throw new DmaBufError('EINVAL', 'bad dumb buffer');
    }
    const pitch = width * Math.ceil(bpp / 8);
    const handle = this.create(pitch * height);
    return { handle, pitch, size: pageAlign(pitch * height) };
  }

  /**
   * The object of `handle` (`drm_gem_object_lookup`), borrowed.
   *
   * @throws {DmaBufError} ENOENT for an unknown handle.
   */
  lookup(handle: number): GemObject {
    this.#check();
    const obj = this.#handles.get(handle);
    if (!obj) throw new DmaBufError('ENOENT', `no GEM handle ${handle}`);
    return obj;
  }

  /** Handles of this file. */
  get handles(): number[] {
    return [...this.#handles.keys()];
  }

  /**
   * `DRM_IOCTL_GEM_CLOSE`: deletes the handle and its PRIME cache entries; the last handle of an
   * object frees it.
   *
   * @throws {DmaBufError} EINVAL for an unknown handle.
   */
  close(handle: number): void {
    this.#check();
    const obj = this.#handles.get(handle);
    if (!obj) throw new DmaBufError('EINVAL', `no GEM handle ${handle}`);
    this.#handles.delete(handle);
    const ino = this.#primeByHandle.get(handle);
    if (ino !== undefined) {
      this.#primeByHandle.delete(handle);
      const e = this.#primeByIno.get(ino);
      this.#primeByIno.delete(ino);
      e?.buf.dispose();
    }
    obj._allowed.delete(this);
    if (--obj._handleCount === 0) obj._free();
  }

  /**
   * `DRM_IOCTL_MODE_MAP_DUMB` / `GEM_MMAP_OFFSET`: the object's fake mmap offset (bytes), and
   * this file may map it from now on.
   *
   * @throws {DmaBufError} ENOENT for an unknown handle.
   */
  mapOffset(handle: number): bigint {
    const obj = this.lookup(handle);
    if (obj._vmaStart === undefined) {
      obj._vmaStart = this.dev._nextPage;
      this.dev._nextPage += BigInt(Math.max(1, Math.ceil(obj.size / PAGE_SIZE)));
      this.dev._offsets.set(obj._vmaStart, obj);
    }
    obj._allowed.add(this);
    return obj._vmaStart << BigInt(PAGE_SHIFT);
  }

  /**
   * `mmap` on the device node at a fake offset (`drm_gem_mmap`). Imported objects forward to
   * their dma-buf (`dma_buf_mmap`); native objects map their memory.
   *
   * @throws {DmaBufError} EINVAL for an unaligned offset, no object there, a range past its end,
   *   bad prot/flags, or a writable private mapping; EACCES when this file may not map the
   *   object, or (forwarded) for a writable shared mapping of a read-only dma-buf.
   */
  mmap(offset: bigint | number, opts: GemMmapOptions = {}): GemMapping {
    this.#check();
    let off: bigint;
    if (typeof offset === 'bigint') off = offset;
    else if (Number.isSafeInteger(offset)) off = BigInt(offset);
    else throw new DmaBufError('EINVAL', 'offset must be an integer');
    if (off < 0n || off % BigInt(PAGE_SIZE) !== 0n) {
      throw new DmaBufError('EINVAL', 'offset must be page-aligned');
    }
    const page = off >> BigInt(PAGE_SHIFT);
    let obj: GemObject | undefined;
    let start = 0n;
    for (const [s, o] of this.dev._offsets) {
      if (page >= s && page < s + BigInt(Math.ceil(o.size / PAGE_SIZE))) {
        obj = o;
        start = s;
        break;
      }
    }
    if (!obj) throw new DmaBufError('EINVAL', 'no GEM object at this offset');
    const pgoff = Number(page - start);
    const objPages = Math.ceil(obj.size / PAGE_SIZE);
    const length = opts.length ?? (objPages - pgoff) * PAGE_SIZE;
    if (!Number.isSafeInteger(length) || length <= 0) {
      throw new DmaBufError('EINVAL', 'mmap length must be a positive integer');
    }
    const npages = Math.ceil(length / PAGE_SIZE);
    if (pgoff + npages > objPages) throw new DmaBufError('EINVAL', 'mapping past the object');
    if (!obj._allowed.has(this)) {
      throw new DmaBufError('EACCES', 'this file was not granted the object (drm_vma_node)');
    }
    const flags = opts.flags ?? MAP_SHARED;
    if (flags !== MAP_SHARED && flags !== MAP_PRIVATE) {
      throw new DmaBufError('EINVAL', 'flags must be MAP_SHARED or MAP_PRIVATE');
    }
    const imp = obj.importAttach;
    if (imp) {
      // The importer's mmap: hand the vma to the exporter, one hop (seed 000).
      const m: DmaBufMapping = imp.buf.mmap({
        pgoff: BigInt(pgoff),
        length: npages * PAGE_SIZE,
        flags,
        ...(opts.prot === undefined ? {} : { prot: opts.prot }),
      });
      obj.stats.deviceMmaps++;
      return m;
    }
    const prot = opts.prot ?? PROT_READ | PROT_WRITE;
    if (!Number.isInteger(prot) || (prot & ~(PROT_READ | PROT_WRITE)) !== 0) {
      throw new DmaBufError('EINVAL', 'bad prot');
    }
    if (flags === MAP_PRIVATE && prot & PROT_WRITE) {
      throw new DmaBufError('EINVAL', 'copy-on-write mappings are not supported');
    }
    obj.stats.deviceMmaps++;
    return new ShmemMapping(obj.memory, pgoff * PAGE_SIZE, npages * PAGE_SIZE, prot);
  }

  /** Closes every handle and the file. Idempotent. */
  dispose(): void {
    if (this.#closed) return;
    for (const h of [...this.#handles.keys()]) this.close(h);
    this.#closed = true;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  // ---- PRIME caches (drm-prime.ts) ----

  /** @internal Adds a handle for `obj`. */
  _addHandle(obj: GemObject): number {
    this.#check();
    const h = this.#nextHandle++;
    this.#handles.set(h, obj);
    obj._handleCount++;
    return h;
  }

  /** @internal The cached handle of the dma-buf with inode `ino`. */
  _primeHandleOf(ino: bigint): number | undefined {
    return this.#primeByIno.get(ino)?.handle;
  }

  /** @internal The cached dma-buf of `handle` (borrowed). */
  _primeBufOf(handle: number): DmaBuf | undefined {
    const ino = this.#primeByHandle.get(handle);
    return ino === undefined ? undefined : this.#primeByIno.get(ino)?.buf;
  }

  /** @internal Caches (buf ↔ handle); takes a reference on `buf`. */
  _primeAdd(handle: number, buf: DmaBuf): void {
    const ino = buf.ino;
    if (this.#primeByIno.has(ino) || this.#primeByHandle.has(handle)) return;
    this.#primeByIno.set(ino, { handle, buf: buf.get() });
    this.#primeByHandle.set(handle, ino);
  }
}
