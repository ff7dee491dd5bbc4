/**
 * One thread of the contended reservation benchmark: for a fixed time, lock a random set of
 * `setSize` distinct objects out of the shared ones with `lockAll` (one ww transaction, EDEADLK
 * back-off), then unlock. Counts acquisitions (sets locked), transactions that backed off at least
 * once, and back-offs in total.
 *
 * @module
 */
import { parentPort, workerData } from 'node:worker_threads';
import { DmaResv } from '../../src/dma-resv.js';
import { lockAll } from '../../src/drm-exec.js';
import type { SharedMessage } from '../../src/substrate/handle.js';

/** `workerData` of this worker. */
export interface ResvContendedData {
  objs: SharedMessage[];
  setSize: number;
  durationMs: number;
  seed: number;
  /** Int32 word 0: start barrier (workers count in, then wait for it to reach `threads`). */
  sab: SharedArrayBuffer;
  threads: number;
}

/** What each worker reports. */
export interface ResvContendedResult {
  acquisitions: number;
  backedOff: number;
  backoffs: number;
  elapsedMs: number;
}

const data = workerData as ResvContendedData;
const objs = data.objs.map((m) => DmaResv.import(m));

let a = data.seed >>> 0;
function rand(): number {
  a = (a + 0x6d2b79f5) >>> 0;
  let t = a;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}

function pick(): DmaResv[] {
  const idx: number[] = [];
  while (idx.length < data.setSize) {
    const i = Math.floor(rand() * objs.length);
    if (!idx.includes(i)) idx.push(i);
  }
  return idx.map((i) => objs[i]!);
}

function run(ms: number): ResvContendedResult {
  let acquisitions = 0;
  let backedOff = 0;
  let backoffs = 0;
  const start = performance.now();
  const end = start + ms;
  while ((acquisitions & 15) !== 0 || performance.now() < end) {
    const exec = lockAll(pick());
    if (exec.retries > 0) backedOff++;
    backoffs += exec.retries;
    exec.fini();
    acquisitions++;
  }
  return { acquisitions, backedOff, backoffs, elapsedMs: performance.now() - start };
}

// Warm up alone (optimised code), then start together.
run(Math.min(200, data.durationMs / 4));
const barrier = new Int32Array(data.sab);
Atomics.add(barrier, 0, 1);
Atomics.notify(barrier, 0);
while (Atomics.load(barrier, 0) < data.threads)
  Atomics.wait(barrier, 0, Atomics.load(barrier, 0), 10);
const result = run(data.durationMs);
for (const o of objs) o.dispose();
parentPort?.postMessage(result);
