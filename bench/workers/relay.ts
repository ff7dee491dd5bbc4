/**
 * One hop of the buffer hand-off relay (see bench/dmabuf.ts): whatever arrives on `inPort` goes
 * on to `outPort`. A dma-buf is imported (this thread now holds the same buffer) and shared on;
 * an ArrayBuffer is either re-posted (structured clone: a copy per hop) or transferred (moved).
 *
 * @module
 */
import { type MessagePort, workerData } from 'node:worker_threads';
import { DmaBuf, type DmaBufMessage, dmaHeapSyncExporters } from '../../src/index.js';

/** `workerData` of a relay hop. */
export interface RelayData {
  mode: 'dmabuf' | 'clone' | 'transfer';
  inPort: MessagePort;
  outPort: MessagePort;
}

const { mode, inPort, outPort } = workerData as RelayData;
// The heaps' exporters must be known here for the buffer's ops (mmap, release) to run here.
dmaHeapSyncExporters();

inPort.on('message', (m: DmaBufMessage | ArrayBuffer | 'stop') => {
  if (m === 'stop') {
    outPort.postMessage('stop');
    inPort.close();
    outPort.close();
    return;
  }
  if (mode === 'dmabuf') {
    const buf = DmaBuf.import(m as DmaBufMessage);
    outPort.postMessage(buf.share());
    buf.dispose();
  } else if (mode === 'clone') {
    outPort.postMessage(m);
  } else {
    outPort.postMessage(m, [m as ArrayBuffer]);
  }
});
