// Worker of drm-prime.test: a second DRM device in another thread. It imports the main
// thread's dma-buf through PRIME, waits for the main thread's rendering (implicit sync), reads
// through a device-node mapping (forwarded to the exporter), renders into it under its own write
// fence, and exports one of its own objects (read-only) back.
import { parentPort } from 'node:worker_threads';
import {
  DMA_BUF_SYNC_READ,
  DMA_BUF_SYNC_WRITE,
  DmaBuf,
  type DmaBufMessage,
} from '../../src/dma-buf.js';
import { exportSyncFile, importSyncFile } from '../../src/dma-buf-sync-file.js';
import { DmaFence } from '../../src/dma-fence.js';
import { DrmDevice } from '../../src/drm-gem.js';
import { primeFdToHandle, primeHandleToFd } from '../../src/drm-prime.js';
import { SyncFile } from '../../src/sync-file.js';

const port = parentPort;
if (!port) throw new Error('worker only');
const dev = new DrmDevice({ name: 'card1' });
const file = dev.open();
let job: DmaFence | undefined;
const bufs: DmaBuf[] = [];

port.on('message', async (m: { op: string; buf?: DmaBufMessage }) => {
  try {
    if (m.op === 'render' && m.buf) {
      const buf = DmaBuf.import(m.buf);
      bufs.push(buf);
      const h = primeFdToHandle(file, buf);
      const again = primeFdToHandle(file, buf);
      const obj = file.lookup(h);
      // Implicit sync: wait for the main thread's writer.
      {
        using ready = exportSyncFile(buf, DMA_BUF_SYNC_READ);
        port.postMessage({ op: 'waiting', status: ready.status() });
        await ready.wait();
      }
      const off = file.mapOffset(h);
      using map = file.mmap(off);
      const seen = map.get(0);
      // Our own rendering, announced as a write fence.
      job = new DmaFence(DmaFence.contextAlloc(1), 1n);
      {
        using jf = SyncFile.create(job);
        importSyncFile(buf, jf, DMA_BUF_SYNC_WRITE);
      }
      map.set(1, 0x22);
      // Re-export of the import: the original dma-buf.
      using re = primeHandleToFd(file, h, 2);
      // One of ours, read-only.
      const mine = file.create(4096);
      using mm = file.mmap(file.mapOffset(mine));
      mm.set(0, 0x33);
      const out = primeHandleToFd(file, mine, 0);
      port.postMessage({
        op: 'rendered',
        seen,
        sameHandle: h === again,
        imported: obj.importAttach !== undefined,
        reexportSame: re.ino === buf.ino,
        attachments: buf.attachmentCount,
        out: out.share(),
      });
      out.dispose();
    } else if (m.op === 'signal') {
      job?.signal();
      port.postMessage({ op: 'signalled' });
    } else if (m.op === 'finish') {
      job?.dispose();
      file.dispose();
      for (const b of bufs) b.dispose();
      port.postMessage({ op: 'done' });
    }
  } catch (e) {
    port.postMessage({ op: 'error', message: String((e as Error).stack ?? e) });
  }
});
port.postMessage({ op: 'ready' });
