/**
 * The implicit-sync bridge of a dma-buf (`DMA_BUF_IOCTL_EXPORT_SYNC_FILE`,
 * `DMA_BUF_IOCTL_IMPORT_SYNC_FILE`, include/uapi/linux/dma-buf.h, drivers/dma-buf/dma-buf.c).
 *
 * An explicit-sync user (sync_file, syncobj) and an implicit-sync user (the buffer's reservation
 * object) share one buffer through these two calls:
 * - {@linkcode exportSyncFile}: a sync file that signals when the given access may start. With
 *   `DMA_BUF_SYNC_WRITE` in `flags` it waits for every KERNEL, WRITE and READ fence (a writer
 *   waits for readers and writers); with `DMA_BUF_SYNC_READ` only for KERNEL and WRITE fences.
 *   The fences are collapsed into one (`dma_resv_get_singleton`): none → the always-signalled
 *   stub fence (never an error), one → that fence, several → a new fence array.
 * - {@linkcode importSyncFile}: adds the sync file's fence as a WRITE fence (`DMA_BUF_SYNC_WRITE`
 *   in `flags`) or a READ fence (otherwise). Containers are unwrapped (modern kernels): every
 *   leaf is added individually after reserving that many slots under the resv lock; an empty
 *   container adds nothing.
 *
 * Kernel rules kept: flags with a bit outside `DMA_BUF_SYNC_RW` → `EINVAL`; flags without READ or
 * WRITE → `EINVAL`; a file that is not a sync file → `EINVAL` (not `EBADF`); the access mode of
 * the buffer is not checked (a read-only dma-buf may still receive write fences).
 *
 * @module
 */

import { DMA_BUF_SYNC_RW, DMA_BUF_SYNC_WRITE, DmaBuf } from './dma-buf.js';
import { DmaFence } from './dma-fence.js';
import { unwrap } from './dma-fence-unwrap.js';
import { DmaResvUsage, dmaResvUsageRw } from './dma-resv.js';
import { DmaBufError } from './substrate/errno.js';
import { SyncFile } from './sync-file.js';

function checkFlags(flags: unknown): number {
  let f: number;
  if (typeof flags === 'bigint') {
    if (flags < 0n || flags > 0xffffffffn) throw new DmaBufError('EINVAL', 'bad sync file flags');
    f = Number(flags);
  } else if (typeof flags === 'number' && Number.isInteger(flags) && flags >= 0) {
    f = flags;
  } else {
    throw new DmaBufError('EINVAL', 'sync file flags must be a non-negative integer');
  }
  if (f > 0xffffffff || (f & ~DMA_BUF_SYNC_RW) !== 0) {
    throw new DmaBufError('EINVAL', 'sync file flags outside DMA_BUF_SYNC_RW');
  }
  if ((f & DMA_BUF_SYNC_RW) === 0) {
    throw new DmaBufError('EINVAL', 'sync file flags need DMA_BUF_SYNC_READ and/or _WRITE');
  }
  return f;
}

function checkBuf(buf: unknown): DmaBuf {
  if (!(buf instanceof DmaBuf)) throw new DmaBufError('EBADF', 'not a dma-buf');
  buf._check();
  return buf;
}

/**
 * `DMA_BUF_IOCTL_EXPORT_SYNC_FILE`: a new sync file (the caller disposes it) whose fence signals
 * when an access of kind `flags` may start.
 *
 * @throws {DmaBufError} EBADF for a disposed or stale buffer or a non-buffer; EINVAL for bad flags;
 *   ENOMEM when the shared region is full.
 */
export function exportSyncFile(buf: DmaBuf, flags: number | bigint): SyncFile {
  const b = checkBuf(buf);
  const f = checkFlags(flags);
  const usage = dmaResvUsageRw((f & DMA_BUF_SYNC_WRITE) !== 0);
  const fence = b.resv.getSingleton(usage) ?? DmaFence.getStub();
  try {
    return SyncFile.create(fence);
  } finally {
    fence.dispose();
  }
}

/**
 * `DMA_BUF_IOCTL_IMPORT_SYNC_FILE`: adds the fences of `file` to the buffer's reservation object
 * as WRITE fences (`DMA_BUF_SYNC_WRITE` in `flags`) or READ fences. Takes the resv lock (the
 * caller must not hold it). Returns the number of fences added.
 *
 * @throws {DmaBufError} EBADF for a bad buffer; EINVAL for bad flags or a `file` that is not a
 *   live sync file; ENOMEM when no slots can be reserved.
 */
export function importSyncFile(buf: DmaBuf, file: SyncFile, flags: number | bigint): number {
  const b = checkBuf(buf);
  const f = checkFlags(flags);
  if (!(file instanceof SyncFile) || !file.alive) {
    throw new DmaBufError('EINVAL', 'not a sync file');
  }
  const usage = (f & DMA_BUF_SYNC_WRITE) !== 0 ? DmaResvUsage.WRITE : DmaResvUsage.READ;
  const fence = file.getFence();
  const leaves: DmaFence[] = [];
  try {
    for (const leaf of unwrap(fence)) leaves.push(leaf.get());
    if (leaves.length === 0) return 0;
    const resv = b.resv;
    resv.lock();
    try {
      resv.reserveFences(leaves.length);
      for (const leaf of leaves) resv.addFence(leaf, usage);
    } finally {
      resv.unlock();
    }
    return leaves.length;
  } finally {
    for (const l of leaves) l.dispose();
    fence.dispose();
  }
}

/** `struct dma_buf_export_sync_file` / `dma_buf_import_sync_file` ioctl helpers as one object. */
export const DmaBufSyncFile = { exportSyncFile, importSyncFile } as const;
