// A driver thread that creates a fence with ops, hands it over, and exits without signalling it:
// the fence must complete with -ENODEV so that waiters elsewhere wake up.
import { parentPort } from 'node:worker_threads';
import { DmaFence } from '../../src/index.js';

const fence = new DmaFence(DmaFence.contextAlloc(1), 1n, {
  driverName: 'vanishing',
  timelineName: 'ring',
  enableSignaling: () => true,
});
parentPort?.postMessage(fence.share());
fence.dispose();
// Exit once the message is out; the thread leaves normally (no terminate()).
parentPort?.close();
