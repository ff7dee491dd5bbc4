/**
 * The system heap (drivers/dma-buf/heaps/system_heap.c): buffers built from chunks of order 8,
 * 4 and 0 (1 MiB, 64 KiB, 4 KiB), largest first.
 *
 * ## Kernel rules kept
 * - A chunk size is tried only if it does not exceed the bytes still needed nor the order of the
 *   last chunk obtained: chunk sizes never increase within one allocation.
 * - Orders 8 and 4 fail fast (no reclaim): when no chunk of that order is free the next smaller
 *   order is tried. Order 0 may "reclaim": the pools are drained back to the page bitmap and the
 *   search retried; a failure then frees everything obtained → ENOMEM.
 * - Memory is always zeroed (`__GFP_ZERO`); the buffer's table has one entry per chunk, in
 *   allocation order.
 *
 * ## Deviations
 * - Freed chunks go to per-order pools (as vendor trees' page pools) in the heap's shared arena,
  and the pools are drained back to the page bitmap (the shrinker) when a chunk of some order
  cannot be found while they hold memory, so pooled memory coalesces instead of fragmenting;
 *   from whichever thread releases the buffer; a pooled chunk is cleared when it is handed out
 *   again, never before (a stale view written after free cannot leak into the next user).
 * - Capacity is configured (default 256 MiB; the arena is committed lazily by the OS): past it
 *   the allocation fails with ENOMEM where the kernel would invoke the OOM killer.
 *
 * @module
 */
import type { MemoryChunk } from '../dma-buf-memory.js';
import {
  type Arena,
  DmaHeap,
  type DmaHeapOptions,
  HEAP_ORDERS,
  HeapKind,
  registerHeapKind,
} from '../dma-heap.js';
import { DmaBufError } from '../substrate/errno.js';

/** Default capacity of a system heap. */
export const SYSTEM_HEAP_DEFAULT_CAPACITY = 256 << 20;

/** Takes one chunk of order index `k` (pool first, then the bitmap), or -1. Lock held. */
function takeChunk(arena: Arena, k: number): [number, boolean] {
  const p = arena.poolPop(k);
  if (p >= 0) return [p, false];
  const n = 1 << HEAP_ORDERS[k]!;
  const q = arena.findRun(n, n);
  if (q < 0) return [-1, false];
  return [q, arena.take(q, n)];
}

function allocate(arena: Arena, size: number): MemoryChunk[] {
  const got: [number, number][] = []; // [page, order index]
  const dirty: boolean[] = [];
  let remaining = size / 4096;
  let maxK = 0;
  let drained = false;
  arena.lock();
  try {
    while (remaining > 0) {
      let found = false;
      for (let k = maxK; k < 3; k++) {
        const n = 1 << HEAP_ORDERS[k]!;
        if (n > remaining) continue;
        let [p, pristine] = takeChunk(arena, k);
        if (p < 0 && k < 2 && !drained && arena.pooledPages() > 0) {
          // Free memory sits in the pools as smaller chunks: shrink them so it coalesces.
          drained = true;
          arena.drainPools();
          [p, pristine] = takeChunk(arena, k);
        }
        if (p < 0) continue;
        got.push([p, k]);
        dirty.push(!pristine);
        remaining -= n;
        maxK = k;
        found = true;
        break;
      }
      if (found) continue;
      if (!drained && arena.hasPools()) {
        // Order 0 may reclaim: shrink the pools and retry from the current order.
        drained = true;
        arena.drainPools();
        continue;
      }
      for (const [p, k] of got) arena.poolPush(k, p);
      arena.failed();
      throw new DmaBufError('ENOMEM', `system heap: no memory for ${size} bytes`);
    }
  } finally {
    arena.unlock();
  }
  const chunks = got.map(([p, k]) => arena.chunk(p, 1 << HEAP_ORDERS[k]!));
  chunks.forEach((c, i) => {
    if (dirty[i]) arena.zero(c);
  });
  return chunks;
}

registerHeapKind(HeapKind.SYSTEM, allocate);

/**
 * Creates and registers a system heap (default name `system`).
 *
 * @throws {DmaBufError} EINVAL for a bad name or capacity; EEXIST for a registered name.
 */
export function createSystemHeap(opts: DmaHeapOptions = {}): DmaHeap {
  return DmaHeap._create(
    HeapKind.SYSTEM,
    opts.name ?? 'system',
    opts.capacity ?? SYSTEM_HEAP_DEFAULT_CAPACITY,
    true,
  );
}

/** Chunk sizes (bytes) of a system heap buffer, in table order (for tests and tools). */
export function systemHeapChunkSizes(chunks: readonly MemoryChunk[]): number[] {
  return chunks.map((c) => c.length);
}
