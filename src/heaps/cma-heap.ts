/**
 * The CMA heap (drivers/dma-buf/heaps/cma_heap.c; the ION CMA heap of seed 001): one physically
 * contiguous chunk per buffer from a fixed-size area.
 *
 * ## Kernel rules kept
 * - `size = PAGE_ALIGN(len)`; the start is aligned to `2^min(get_order(size), 8)` pages
 *   (`CONFIG_CMA_ALIGNMENT` 8: 1 MiB), physically.
 * - First fit; an exhausted or fragmented area → ENOMEM, never a fallback to other memory.
 * - Zeroed on allocate; freed ranges go straight back to the area.
 * - mmap needs MAP_SHARED (else EINVAL).
 *
 * Default capacity 32 MiB (the "reserved" area of the 6.1 probe). Name default `reserved`.
 *
 * @module
 */
import type { MemoryChunk } from '../dma-buf-memory.js';
import {
  type Arena,
  DmaHeap,
  type DmaHeapOptions,
  HeapKind,
  registerHeapKind,
} from '../dma-heap.js';
import { DmaBufError } from '../substrate/errno.js';

/** Default capacity of a CMA heap. */
export const CMA_HEAP_DEFAULT_CAPACITY = 32 << 20;
/** `CONFIG_CMA_ALIGNMENT`. */
export const CMA_ALIGNMENT = 8;

/** `get_order(size)`: smallest order whose pages cover `size` bytes. */
export function getOrder(size: number): number {
  let order = 0;
  while (4096 * 2 ** order < size) order++;
  return order;
}

function allocate(arena: Arena, size: number): MemoryChunk[] {
  const pages = size / 4096;
  const align = 1 << Math.min(getOrder(size), CMA_ALIGNMENT);
  let p: number;
  let pristine: boolean;
  arena.lock();
  try {
    p = arena.findRun(pages, align);
    if (p < 0) {
      arena.failed();
      throw new DmaBufError('ENOMEM', `CMA heap: no contiguous range of ${size} bytes`);
    }
    pristine = arena.take(p, pages);
  } finally {
    arena.unlock();
  }
  const c = arena.chunk(p, pages);
  if (!pristine) arena.zero(c);
  return [c];
}

registerHeapKind(HeapKind.CMA, allocate);

/**
 * Creates and registers a CMA heap (default name `reserved`, 32 MiB).
 *
 * @throws {DmaBufError} EINVAL for a bad name or capacity; EEXIST for a registered name.
 */
export function createCmaHeap(opts: DmaHeapOptions = {}): DmaHeap {
  return DmaHeap._create(
    HeapKind.CMA,
    opts.name ?? 'reserved',
    opts.capacity ?? CMA_HEAP_DEFAULT_CAPACITY,
    false,
  );
}
