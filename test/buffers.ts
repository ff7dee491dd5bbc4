// A test buffer: `pages` pages of fresh memory exported with the generic memory exporter ops,
// one chunk per page (in separate backings unless `separate` is false).
import { DmaBuf, memoryExporterOps } from '../src/dma-buf.js';
import { BufferMemory, PAGE_SIZE } from '../src/dma-buf-memory.js';

export function exportPages(pages: number, expName: string, separate = true): DmaBuf {
  return DmaBuf.export({
    ops: memoryExporterOps(),
    size: pages * PAGE_SIZE,
    memory: BufferMemory.allocate(pages * PAGE_SIZE, { chunkSize: PAGE_SIZE, separate }),
    expName,
    priv: {},
  });
}
