// Worker for the multi-thread heap tests: { op, msg, byte } in, { ok, value } or { ok: false,
// code } out. Ops: 'fill' (import, mmap, fill with byte, unmap, dispose), 'read' (import, mmap,
// return the distinct byte values), 'release' (import, dispose), 'alloc' (import a heap,
// allocate, share the buffer back).
import { parentPort } from 'node:worker_threads';
import { DmaBuf, type DmaBufMessage } from '../../src/dma-buf.js';
import { DmaHeap, type DmaHeapMessage, dmaHeapNames } from '../../src/dma-heap.js';
import '../../src/heaps/system-heap.js';
import '../../src/heaps/cma-heap.js';
import '../../src/udmabuf.js';
import { DmaBufError } from '../../src/substrate/errno.js';

const port = parentPort;
if (!port) throw new Error('heap-agent must run in a worker');

type Req = { op: string; msg?: unknown; byte?: number; len?: number };

function run(r: Req): unknown {
  switch (r.op) {
    case 'alloc': {
      const heap = DmaHeap.import(r.msg as DmaHeapMessage);
      try {
        const buf = heap.allocate(r.len ?? 4096);
        const m = buf.share();
        buf.dispose();
        return m;
      } finally {
        heap.dispose();
      }
    }
    case 'fill': {
      const buf = DmaBuf.import(r.msg as DmaBufMessage);
      const map = buf.mmap();
      for (const a of map.chunks) a.fill(r.byte ?? 0);
      map.unmap();
      const m = buf.share();
      buf.dispose();
      return m;
    }
    case 'read': {
      const buf = DmaBuf.import(r.msg as DmaBufMessage);
      const map = buf.mmap();
      const seen = new Set(map.slice());
      map.unmap();
      const m = buf.share();
      buf.dispose();
      return { values: [...seen], msg: m };
    }
    case 'release': {
      DmaBuf.import(r.msg as DmaBufMessage).dispose();
      return null;
    }
    default:
      throw new Error(`unknown op ${r.op}`);
  }
}

port.on('message', (r: Req) => {
  try {
    port.postMessage({ ok: true, value: run(r) });
  } catch (e) {
    port.postMessage({
      ok: false,
      code: e instanceof DmaBufError ? e.code : String(e),
      message: `${String(e)} names=${dmaHeapNames().join(',')}`,
    });
  }
});
