// Worker of the implicit-sync handshake (dma-buf-sync-file.test): an explicit-sync user in
// another thread. It imports the buffer, exports a READ sync file from it, waits, reads, then
// attaches its own READ fence (a "reader job") and signals it when told to.
import { parentPort } from 'node:worker_threads';
import { DMA_BUF_SYNC_READ, DmaBuf, type DmaBufMessage } from '../../src/dma-buf.js';
import { exportSyncFile, importSyncFile } from '../../src/dma-buf-sync-file.js';
import { DmaFence } from '../../src/dma-fence.js';
import { SyncFile } from '../../src/sync-file.js';
import './dmabuf-exporter.js';

const port = parentPort;
if (!port) throw new Error('worker only');
let buf: DmaBuf | undefined;
let job: DmaFence | undefined;

port.on('message', async (m: { op: string; buf?: DmaBufMessage }) => {
  try {
    if (m.op === 'import' && m.buf) {
      buf = DmaBuf.import(m.buf);
      using file = exportSyncFile(buf, DMA_BUF_SYNC_READ);
      port.postMessage({ op: 'exported', status: file.status() });
      await file.wait();
      using map = buf.mmap();
      port.postMessage({ op: 'read', value: map.get(0) });
      job = new DmaFence(DmaFence.contextAlloc(1), 1n);
      using jf = SyncFile.create(job);
      const n = importSyncFile(buf, jf, DMA_BUF_SYNC_READ);
      port.postMessage({ op: 'reading', added: n });
    } else if (m.op === 'finish') {
      job?.signal();
      job?.dispose();
      buf?.dispose();
      port.postMessage({ op: 'done' });
    }
  } catch (e) {
    port.postMessage({ op: 'error', message: String(e) });
  }
});
port.postMessage({ op: 'ready' });
