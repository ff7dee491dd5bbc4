// Worker of dma-buf-bufinfo.test: exports a named buffer and keeps it until told to drop it.
import { parentPort } from 'node:worker_threads';
import { DmaBuf } from '../../src/dma-buf.js';
import { BufferMemory } from '../../src/dma-buf-memory.js';
import { REGISTERED, registeredOps } from './dmabuf-exporter.js';

const port = parentPort;
if (!port) throw new Error('worker only');
let buf: DmaBuf | undefined;
port.on('message', (m: { op: string }) => {
  if (m.op === 'export') {
    buf = DmaBuf.export({
      ops: registeredOps,
      size: 3 * 4096,
      memory: BufferMemory.allocate(3 * 4096),
      expName: REGISTERED,
      priv: {},
    });
    buf.setName('worker-buf');
    port.postMessage({ op: 'exported', ino: buf.ino });
  } else if (m.op === 'drop') {
    buf?.dispose();
    port.postMessage({ op: 'dropped' });
  }
});
port.postMessage({ op: 'ready' });
