// A worker whose only pending work is one fence operation: `await fence.wait()` (mode 'wait')
// or a callback on the fence (mode 'callback'). Nothing else keeps its event loop alive, so it
// reports a result only if the pending wait or callback kept the thread running until the
// fence was signalled by another thread.
import { parentPort, workerData } from 'node:worker_threads';
import { DmaFence, type SharedMessage } from '../../src/index.js';

const { msg, mode } = workerData as { msg: SharedMessage; mode: 'wait' | 'callback' };
const fence = DmaFence.import(msg);

if (mode === 'wait') {
  const waiting = fence.wait();
  parentPort?.postMessage({ armed: true });
  const remaining = await waiting;
  parentPort?.postMessage({ remaining, status: fence.getStatus() });
  fence.dispose();
} else {
  fence.addCallback((f) => {
    parentPort?.postMessage({ status: f.getStatus() });
  });
  fence.dispose();
  parentPort?.postMessage({ armed: true });
}
