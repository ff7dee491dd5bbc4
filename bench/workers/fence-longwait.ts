/**
 * Long-wait latency: how long a thread asleep in a fence wait takes to run again once the
 * fence signals, against a raw `Atomics.wait`/`Atomics.notify` measured by the same two
 * threads in the same run.
 *
 * One direction only: role 0 sleeps `sleepMs`, signals, and goes straight back to sleep; role 1
 * waits. The hops alternate in blocks between the raw protocol and a fence, so both see the
 * same machine (these VMs drift by 2-3x within a minute). Why one direction: on these VMs a
 * thread woken by `notify` runs only once its waker stops running (a 10 µs busy loop after the
 * notify adds ~12 µs), so in a ping-pong the figure includes how fast the signaller gets back
 * to sleep in its own next wait. Here the signaller does the same thing after either signal,
 * so the difference is the fence: its signal path after the timestamp and its waiter.
 *
 * @module
 */
import { parentPort, workerData } from 'node:worker_threads';
import { DmaFence, type SharedMessage } from '../../src/index.js';
import { warmUpFenceWaits } from './fence-warmup.js';

/** `workerData` of this worker. */
export interface FenceLongWaitData {
  /** 0 signals, 1 waits. */
  role: 0 | 1;
  /** Timed hops per protocol. */
  hops: number;
  /** Untimed hops (both protocols) before timing starts. */
  warmup: number;
  /** The signaller's sleep before each signal, ms. */
  sleepMs: number;
  /** Hops per block of one protocol. */
  block: number;
  /**
   * Zeroed: Int32 start barrier, Int32 sleep slot, Int32 raw turn, a spare word, then one
   * BigInt64 stamp per hop (a waiter that fell behind still times each hop from its own
   * signal, as a fence's own timestamp does).
   */
  sab: SharedArrayBuffer;
  /** One fence per hop (only fence hops use theirs). */
  fences: SharedMessage[];
}

/** What the waiter posts back (the signaller posts empty arrays). */
export interface FenceLongWaitResult {
  rawUs: Float64Array;
  fenceUs: Float64Array;
}

const STALL_MS = 20_000;
const data = workerData as FenceLongWaitData;
const fences = data.fences.map((m) => DmaFence.import(m));
const barrier = new Int32Array(data.sab, 0, 1);
const sleepWord = new Int32Array(data.sab, 4, 1);
const turn = new Int32Array(data.sab, 8, 1);
const total = fences.length;
const stamps = new BigInt64Array(data.sab, 16, total);

const isRaw = (k: number): boolean => Math.floor(k / data.block) % 2 === 0;

function signaller(): void {
  for (let k = 0; k < total; k++) {
    Atomics.wait(sleepWord, 0, 0, data.sleepMs);
    if (isRaw(k)) {
      Atomics.store(stamps, k, process.hrtime.bigint());
      Atomics.store(turn, 0, k + 1);
      Atomics.notify(turn, 0);
    } else {
      fences[k]!.signal();
    }
  }
}

function waiter(): FenceLongWaitResult {
  const raw: number[] = [];
  const fence: number[] = [];
  for (let k = 0; k < total; k++) {
    let us: number;
    if (isRaw(k)) {
      let v = Atomics.load(turn, 0);
      while (v < k + 1) {
        if (Atomics.wait(turn, 0, v, STALL_MS) === 'timed-out') throw new Error('peer silent');
        v = Atomics.load(turn, 0);
      }
      us = Number(process.hrtime.bigint() - Atomics.load(stamps, k)) / 1000;
    } else {
      const f = fences[k]!;
      if (f.waitSync({ timeout: STALL_MS }) === 0) throw new Error('peer silent');
      const now = process.hrtime.bigint();
      us = Number(now - (f.timestamp ?? now)) / 1000;
    }
    if (k >= data.warmup) (isRaw(k) ? raw : fence).push(us);
  }
  return { rawUs: Float64Array.from(raw), fenceUs: Float64Array.from(fence) };
}

await warmUpFenceWaits(false);
Atomics.add(barrier, 0, 1);
Atomics.notify(barrier, 0);
for (let v = Atomics.load(barrier, 0); v < 2; v = Atomics.load(barrier, 0)) {
  Atomics.wait(barrier, 0, v, 1000);
}
const result =
  data.role === 0
    ? (signaller(), { rawUs: new Float64Array(), fenceUs: new Float64Array() })
    : waiter();
for (const f of fences) f.dispose();
parentPort?.postMessage(result);
