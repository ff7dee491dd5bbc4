// A worker of the multi-thread pipeline test (test/dma-buf-pipeline.test.ts): allocates from a
// heap, fills with a non-coherent DMA engine (keeping the device mapping), reads and writes
// through mmap inside SYNC brackets, releases. { id, op, ...args } in, { id, ok, value } out.
import { threadId } from 'node:worker_threads';
import { DmaDataDirection } from '../../src/device.js';
import { DmaEngine } from '../../src/devices/dma-engine.js';
import {
  DMA_BUF_SYNC_END,
  DMA_BUF_SYNC_READ,
  DMA_BUF_SYNC_START,
  DMA_BUF_SYNC_WRITE,
  DmaBuf,
  type DmaBufAttachment,
  type DmaBufMessage,
  dmaBufNoncoherentMappings,
  memoryExporterOps,
} from '../../src/dma-buf.js';
import { BufferMemory, PAGE_SIZE } from '../../src/dma-buf-memory.js';
import { setDmaDebug } from '../../src/dma-debug.js';
import { DmaHeap, type DmaHeapMessage, dmaHeapSyncExporters } from '../../src/dma-heap.js';
import '../../src/heaps/system-heap.js';
import type { SgTable } from '../../src/scatterlist.js';
import { type RpcRequest, serveRpc } from '../worker-rpc.js';

type Req = RpcRequest;

const { BIDIRECTIONAL, FROM_DEVICE } = DmaDataDirection;
let held: DmaBuf | undefined;
let filler: { engine: DmaEngine; buf: DmaBuf; a: DmaBufAttachment; sgt: SgTable } | undefined;

async function run(r: Req): Promise<unknown> {
  switch (r.op) {
    case 'alloc': {
      const heap = DmaHeap.import(r.heap as DmaHeapMessage);
      try {
        const buf = heap.allocate(r.len as number);
        const msg = buf.share();
        const out = { msg, size: buf.size, expName: buf.expName, threadId };
        buf.dispose();
        return out;
      } finally {
        heap.dispose();
      }
    }
    case 'fill': {
      const buf = DmaBuf.import(r.msg as DmaBufMessage);
      const engine = await DmaEngine.start({ name: 'pipe-engine', coherent: false, iommu: true });
      const a = buf.attach(engine.device);
      const sgt = a.mapUnlocked(BIDIRECTIONAL);
      const job = engine.fill(sgt, Uint8Array.from(r.pattern as number[]), {
        dstResv: buf.resv,
      });
      await job.done;
      const status = job.fence.getStatus();
      job.fence.dispose();
      filler = { engine, buf, a, sgt };
      // The mapping stays: the device's writes sit in its copy until someone syncs for the CPU.
      return { status, nents: sgt.nents, origNents: sgt.origNents, msg: buf.share(), threadId };
    }
    case 'copy-out': {
      // The engine reads the buffer through its (still live) mapping into a private buffer.
      if (!filler) throw new Error('no fill');
      const { engine, sgt } = filler;
      const len = r.length as number;
      const out = DmaBuf.export({
        ops: memoryExporterOps(),
        size: PAGE_SIZE,
        memory: BufferMemory.allocate(PAGE_SIZE),
        priv: {},
      });
      const oa = out.attach(engine.device);
      const ot = oa.mapUnlocked(FROM_DEVICE);
      const job = engine.copy(sgt, ot, { length: len });
      await job.done;
      job.fence.dispose();
      oa.unmapUnlocked(ot, FROM_DEVICE); // FROM_DEVICE unmap: the copy reaches memory
      out.detach(oa);
      const m = out.mmap();
      const bytes = m.slice(0, len);
      m.unmap();
      out.dispose();
      return bytes;
    }
    case 'teardown': {
      if (!filler) throw new Error('no fill');
      const { engine, buf, a, sgt } = filler;
      filler = undefined;
      a.unmapUnlocked(sgt, BIDIRECTIONAL);
      buf.detach(a);
      const left = dmaBufNoncoherentMappings(buf);
      buf.dispose();
      await engine.close();
      return { left, mappedPages: engine.device.mappedPages, cached: engine.device.cachedPages };
    }
    case 'read': {
      const buf = DmaBuf.import(r.msg as DmaBufMessage);
      const ncMappings = dmaBufNoncoherentMappings(buf);
      const m = buf.mmap();
      const before = m.slice(0, 64);
      // dma-debug: CPU access to pages the (other thread's) device owns reports.
      setDmaDebug(true);
      let reported = '';
      try {
        m.get(0);
      } catch (e) {
        reported = e instanceof Error ? e.message : String(e);
      }
      try {
        await buf.sync(DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ);
        m.get(0); // the CPU owns the pages again: no report
      } finally {
        setDmaDebug(false);
      }
      const bytes = m.slice();
      buf.syncSync(DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ);
      // Write [1, 2, 3, 4] inside a WRITE bracket, then [5, 6] after it (never told with END).
      await buf.sync(DMA_BUF_SYNC_START | DMA_BUF_SYNC_WRITE);
      m.write(0, Uint8Array.of(1, 2, 3, 4));
      buf.syncSync(DMA_BUF_SYNC_END | DMA_BUF_SYNC_WRITE);
      m.write(4, Uint8Array.of(5, 6));
      m.unmap();
      const msg = buf.share();
      buf.dispose();
      return { ncMappings, before, reported, bytes, msg, threadId };
    }
    case 'hold': {
      // Keep a handle in this thread (no device mapping exists yet); share another reference.
      held = DmaBuf.import(r.msg as DmaBufMessage);
      return held.share();
    }
    case 'read-held': {
      // The device mapping was made in another thread after this thread got the buffer: no
      // message told this thread about it, yet SYNC START finds it.
      if (!held) throw new Error('nothing held');
      const buf = held;
      held = undefined;
      const m = buf.mmap();
      const before = m.slice(0, 64);
      buf.syncSync(DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ);
      const bytes = m.slice();
      buf.syncSync(DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ);
      m.unmap();
      buf.dispose();
      return { before, bytes };
    }
    case 'release': {
      dmaHeapSyncExporters(); // the heap's exporter runs here: release happens in this thread
      const heap = DmaHeap.import(r.heap as DmaHeapMessage);
      const buf = DmaBuf.import(r.msg as DmaBufMessage);
      const refs = buf.refcount;
      const ncMappings = dmaBufNoncoherentMappings(buf);
      buf.dispose();
      const stats = heap.stats();
      heap.dispose();
      return { refs, ncMappings, bytes: stats.bytes, buffers: stats.buffers, threadId };
    }
    default:
      throw new Error(`unknown op ${r.op}`);
  }
}

serveRpc(run);
