// A driver thread that creates fences with ops, hands them over and then stays busy until it is
// terminated: its fences can never be armed, and its thread slot must not leak.
import { parentPort } from 'node:worker_threads';
import { DmaFence } from '../../src/index.js';

const ctx = DmaFence.contextAlloc(1);
const ops = { driverName: 'doomed', timelineName: 'ring', enableSignaling: () => true };
const a = new DmaFence(ctx, 1n, ops);
const b = new DmaFence(ctx, 2n, { driverName: 'doomed', timelineName: 'ring', release: () => {} });
const msgs = [a.share(), b.share()];
// The messages carry their own references: drop ours before anything can terminate us. The
// thread still owns the fences (their ops live here); references a terminated thread still
// holds would be lost with it (see the README).
a.dispose();
b.dispose();
parentPort?.postMessage(msgs);
setInterval(() => {}, 1000);
