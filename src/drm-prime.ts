/**
 * PRIME: GEM objects as dma-bufs and back (drivers/gpu/drm/drm_prime.c).
 *
 * - {@linkcode primeHandleToFd} (`DRM_IOCTL_PRIME_HANDLE_TO_FD`): flags other than
 *   `DRM_CLOEXEC | DRM_RDWR` → `EINVAL`; unknown handle → `ENOENT`; without `DRM_RDWR` the
 *   export is read-only. A handle already in this file's cache gives its dma-buf; an imported
 *   object gives back the **original** dma-buf (never a wrapper); an object exported before
 *   gives the same dma-buf (same inode; the first export's mode stays).
 * - {@linkcode primeFdToHandle} (`DRM_IOCTL_PRIME_FD_TO_HANDLE`): a dma-buf this file already
 *   knows gives the cached handle (repeated imports: the same handle); a dma-buf exported by
 *   this device gives the original object (a new handle in another file of the device, no
 *   attachment); any other is attached (static) and mapped `DMA_BIDIRECTIONAL`, and the object
 *   shares the dma-buf's reservation object.
 *
 * The GEM exporter ops are registered under `"drm"` (the exporter name vgem shows), so any
 * thread can attach, map and mmap a GEM dma-buf. The exporter's `mmap` maps the memory itself
 * and never forwards: with the two rules above, an importer's device mmap reaches the exporter in
 * one hop and cannot loop back (seed 000).
 *
 * @module
 */

import { DmaDataDirection } from './device.js';
import {
  DmaBuf,
  type DmaBufOps,
  dmaBufBeginCpuAccessMemory,
  dmaBufEndCpuAccessMemory,
  dmaBufMapMemory,
  dmaBufUnmapMemory,
  O_CLOEXEC,
  O_RDONLY,
  O_RDWR,
  registerDmaBufExporter,
} from './dma-buf.js';
import { type DrmDevice, type DrmGemFile, GemObject, gemExportedHere } from './drm-gem.js';
import { DmaBufError } from './substrate/errno.js';

/** `DRM_CLOEXEC` (= `O_CLOEXEC`). */
export const DRM_CLOEXEC = O_CLOEXEC;
/** `DRM_RDWR` (= `O_RDWR`). */
export const DRM_RDWR = O_RDWR;
/** The exporter name of GEM dma-bufs. */
export const DRM_GEM_EXPORTER = 'drm';

const exportedHere = gemExportedHere;

/** `drm_gem_prime_dmabuf_ops` (registered: they run in any thread). */
export const drmGemPrimeOps: DmaBufOps = {
  attach() {},
  detach() {},
  map: dmaBufMapMemory,
  unmap: dmaBufUnmapMemory,
  release(buf: DmaBuf) {
    const obj = exportedHere.get(buf.ino);
    if (obj) {
      exportedHere.delete(buf.ino);
      obj.dev._exported.delete(buf.ino);
    }
  },
  mmap(buf: DmaBuf) {
    // `drm_gem_prime_mmap`: the object's own mmap; it never goes back to a dma-buf.
    const obj = exportedHere.get(buf.ino);
    if (obj?.importAttach) {
      throw new Error('BUG: an imported GEM object was exported as a wrapper (mmap loop)');
    }
    if (obj) obj.stats.exporterMmaps++;
  },
  vmap() {},
  vunmap() {},
  beginCpuAccess: dmaBufBeginCpuAccessMemory,
  endCpuAccess: dmaBufEndCpuAccessMemory,
};
registerDmaBufExporter(DRM_GEM_EXPORTER, drmGemPrimeOps);

/** True when `buf` was exported by the GEM PRIME ops (ops identity). */
export function isGemPrimeDmaBuf(buf: DmaBuf): boolean {
  try {
    return buf._opsFor('map') === drmGemPrimeOps;
  } catch {
    return false;
  }
}

function checkFile(file: DrmGemFile): void {
  if (typeof file !== 'object' || file === null || typeof file._addHandle !== 'function') {
    throw new DmaBufError('EBADF', 'not a DRM file');
  }
}

/**
 * `drm_gem_prime_export`/`drm_gem_prime_handle_to_dmabuf` without the file caches: the
 * object's dma-buf (borrowed), exported now if it has none.
 *
 * @throws {DmaBufError} ENOENT when the object has no handles left.
 */
export function drmGemPrimeExport(obj: GemObject, flags: number): DmaBuf {
  const existing = obj.dmaBuf;
  if (existing) return existing;
  if (obj.handleCount === 0) throw new DmaBufError('ENOENT', 'object has no handles');
  const buf = DmaBuf.export({
    ops: drmGemPrimeOps,
    size: obj.size,
    memory: obj.memory,
    flags: flags & DRM_RDWR ? O_RDWR : O_RDONLY,
    resv: obj.resv,
    expName: DRM_GEM_EXPORTER,
    priv: obj,
  });
  obj._dmaBuf = buf;
  exportedHere.set(buf.ino, obj);
  obj.dev._exported.set(buf.ino, obj);
  return buf;
}

/**
 * `DRM_IOCTL_PRIME_HANDLE_TO_FD`: the dma-buf of `handle`, as a new handle the caller disposes.
 *
 * @throws {DmaBufError} EINVAL for bad flags; ENOENT for an unknown handle; EBADF for a closed
 *   file.
 */
export function primeHandleToFd(file: DrmGemFile, handle: number, flags = 0): DmaBuf {
  checkFile(file);
  if (!Number.isInteger(flags) || (flags & ~(DRM_CLOEXEC | DRM_RDWR)) !== 0) {
    throw new DmaBufError('EINVAL', 'PRIME flags other than DRM_CLOEXEC | DRM_RDWR');
  }
  const obj = file.lookup(handle);
  const cached = file._primeBufOf(handle);
  if (cached) return cached.get();
  const buf = drmGemPrimeExport(obj, flags);
  file._primeAdd(handle, buf);
  return buf.get();
}

/**
 * `drm_gem_prime_import_dev`: the object for `buf` on `dev` (a new object, or this device's
 * original one). The caller adds a handle.
 *
 * @throws {DmaBufError} what attach and map throw.
 */
export function drmGemPrimeImport(dev: DrmDevice, buf: DmaBuf): GemObject {
  if (isGemPrimeDmaBuf(buf)) {
    const orig = dev._exported.get(buf.ino);
    if (orig && orig.handleCount > 0) return orig;
  }
  // The object's own reference: the attachment lives on it (`get_dma_buf` in the import).
  const own = buf.get();
  let attach: ReturnType<typeof own.attach>;
  let sgt: ReturnType<typeof attach.mapUnlocked>;
  try {
    attach = own.attach(dev.device);
    try {
      sgt = attach.mapUnlocked(DmaDataDirection.BIDIRECTIONAL);
    } catch (e) {
      own.detach(attach);
      throw e;
    }
  } catch (e) {
    own.dispose();
    throw e;
  }
  return GemObject._imported(dev, { buf: own, attach, sgt }, own.resv.get());
}

/**
 * `DRM_IOCTL_PRIME_FD_TO_HANDLE`: the handle of `buf` in `file`.
 *
 * @throws {DmaBufError} EINVAL when `buf` is not a dma-buf; EBADF for a disposed one; what
 *   import throws.
 */
export function primeFdToHandle(file: DrmGemFile, buf: DmaBuf): number {
  checkFile(file);
  if (!(buf instanceof DmaBuf)) throw new DmaBufError('EINVAL', 'not a dma-buf');
  buf._check();
  const cached = file._primeHandleOf(buf.ino);
  if (cached !== undefined) return cached;
  const obj = drmGemPrimeImport(file.dev, buf);
  const handle = file._addHandle(obj);
  file._primeAdd(handle, buf);
  return handle;
}
