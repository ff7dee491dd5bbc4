/**
 * One side of a fence ping-pong between two worker threads: hop k is fence k, signalled by one
 * side and waited on by the other, so each hop measures signal-to-wake latency through the
 * whole fence path (shared record, waiter, wake-up), timed like the raw baselines.
 *
 * @module
 */
import { parentPort, workerData } from 'node:worker_threads';
import { DmaFence, type SharedMessage } from '../../src/index.js';
import { warmUpFenceWaits } from './fence-warmup.js';
import { awaitWaiter } from './handshake.js';

/** `workerData` of this worker. */
export interface FencePingPongData {
  role: 0 | 1;
  mode: 'sync' | 'async' | 'sync-sleep';
  hops: number;
  warmup: number;
  sleepMs: number;
  /** 16 bytes: Int32 sleep slot at 0, Int32 start barrier at 4, Int32 "waiting for hop" at 8. */
  sab: SharedArrayBuffer;
  /** One message per fence; fence k carries hop k + 1. */
  fences: SharedMessage[];
}

const data = workerData as FencePingPongData;
const fences = data.fences.map((m) => DmaFence.import(m));
const sleepWord = new Int32Array(data.sab, 0, 1);
const ready = new Int32Array(data.sab, 4, 1);
const waiting = new Int32Array(data.sab, 8, 1);
const total = data.warmup + data.hops;
const latenciesUs = new Float64Array(data.hops);

function signal(hop: number): void {
  if (data.mode === 'sync-sleep') Atomics.wait(sleepWord, 0, 0, data.sleepMs);
  else awaitWaiter(waiting, hop);
  fences[hop - 1]!.signal();
}

async function run(): Promise<void> {
  await warmUpFenceWaits(true);
  // Both sides warm up before the first hop so neither times the other's warm-up.
  Atomics.add(ready, 0, 1);
  Atomics.notify(ready, 0);
  while (Atomics.load(ready, 0) < 2) Atomics.wait(ready, 0, 1, 1000);
  if (data.role === 0) signal(1);
  for (let i = 0; i < total; i++) {
    const hop = data.role === 0 ? 2 * i + 2 : 2 * i + 1;
    const f = fences[hop - 1]!;
    Atomics.store(waiting, 0, hop);
    if (data.mode === 'async') await f.wait({ timeout: 20_000 });
    else f.waitSync({ timeout: 20_000 });
    const now = process.hrtime.bigint();
    // Signal-to-wake: from the fence's own signal timestamp (taken on the shared monotonic
    // clock at the instant it signals) to the waiter running again.
    const signalledAt = f.timestamp;
    if (signalledAt === undefined) throw new Error(`fence ping-pong: hop ${hop} timed out`);
    const k = i - data.warmup;
    if (k >= 0) latenciesUs[k] = Number(now - signalledAt) / 1000;
    if (hop + 1 <= fences.length) signal(hop + 1);
  }
  for (const f of fences) f.dispose();
  parentPort?.postMessage({ latenciesUs }, [latenciesUs.buffer]);
}

run().catch((e: unknown) => {
  throw e;
});
