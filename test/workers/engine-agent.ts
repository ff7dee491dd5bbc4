// A worker for the multi-thread DMA engine test: fills a buffer with an engine in this thread,
// reads one through mmap, or releases one. { id, op, ...args } in, { id, ok, value } out.
import { threadId } from 'node:worker_threads';
import { DmaDataDirection } from '../../src/device.js';
import { DmaEngine } from '../../src/devices/dma-engine.js';
import {
  DMA_BUF_SYNC_END,
  DMA_BUF_SYNC_READ,
  DMA_BUF_SYNC_START,
  DmaBuf,
  type DmaBufMessage,
} from '../../src/dma-buf.js';
import { BufferMemory, PAGE_SIZE } from '../../src/dma-buf-memory.js';
import { type RpcRequest, serveRpc } from '../worker-rpc.js';
import { REGISTERED, registeredOps } from './dmabuf-exporter.js';

type Req = RpcRequest;

async function run(r: Req): Promise<unknown> {
  switch (r.op) {
    case 'fill': {
      const pages = r.pages as number;
      const buf = DmaBuf.export({
        ops: registeredOps,
        expName: REGISTERED,
        size: pages * PAGE_SIZE,
        memory: BufferMemory.allocate(pages * PAGE_SIZE, { chunkSize: PAGE_SIZE, separate: true }),
        priv: {},
      });
      const engine = await DmaEngine.start({ name: 'engine', coherent: false, iommu: true });
      try {
        const a = buf.attach(engine.device);
        const sgt = a.mapUnlocked(DmaDataDirection.FROM_DEVICE);
        const job = engine.fill(sgt, Uint8Array.from(r.pattern as number[]), {
          dstResv: buf.resv,
        });
        await job.done;
        const status = job.fence.getStatus();
        const nents = sgt.nents;
        job.fence.dispose();
        // Unmap FROM_DEVICE: the non-coherent engine's writes reach memory.
        a.unmapUnlocked(sgt, DmaDataDirection.FROM_DEVICE);
        buf.detach(a);
        const msg = buf.share();
        buf.dispose();
        return { status, nents, origNents: sgt.origNents, msg };
      } finally {
        await engine.close();
      }
    }
    case 'read': {
      const buf = DmaBuf.import(r.msg as DmaBufMessage);
      await buf.sync(DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ);
      const m = buf.mmap();
      const bytes = m.slice();
      m.unmap();
      buf.syncSync(DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ);
      const msg = buf.share();
      buf.dispose();
      return { bytes, msg };
    }
    case 'release': {
      const buf = DmaBuf.import(r.msg as DmaBufMessage);
      const refs = buf.refcount;
      buf.dispose();
      return { refs, threadId };
    }
    default:
      throw new Error(`unknown op ${r.op}`);
  }
}

serveRpc(run);
