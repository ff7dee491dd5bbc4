/**
 * dma_fence benchmarks: cross-thread signal-to-wake latency against the raw Atomics and
 * MessagePort baselines of the same run, in-thread fence throughput, and memory per live fence.
 *
 * @module
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { DmaFence, type SharedMessage } from '../src/index.js';
import { domain } from '../src/substrate/domain.js';
import { compareLatency, rawAtomicsLongWait, rawAtomicsPingPong } from './baselines.js';
import {
  type BenchGroup,
  type BenchOptions,
  type BenchResult,
  byMode,
  latencyResults,
  measureThroughput,
  runWorkerBench,
} from './harness.js';
import type { FenceLongWaitData, FenceLongWaitResult } from './workers/fence-longwait.js';
import type { FencePingPongData } from './workers/fence-pingpong.js';

const worker = new URL('./workers/fence-pingpong.js', import.meta.url);
const longWaitWorker = new URL('./workers/fence-longwait.js', import.meta.url);

/** One ping-pong run: returns the pooled one-way latencies (µs) of both sides. */
export async function pingPong(
  mode: FencePingPongData['mode'],
  hops: number,
  warmup: number,
): Promise<number[]> {
  const n = 2 * (hops + warmup) + 1;
  const ctx = DmaFence.contextAlloc(1);
  const fences = Array.from({ length: n }, (_, i) => new DmaFence(ctx, BigInt(i + 1)));
  const sab = new SharedArrayBuffer(16);
  const spec = (role: 0 | 1) => {
    const data: FencePingPongData = {
      role,
      mode,
      hops,
      warmup,
      sleepMs: 2,
      sab,
      fences: fences.map((f): SharedMessage => f.share()),
    };
    return { workerData: data };
  };
  try {
    const results = await runWorkerBench<{ latenciesUs: Float64Array }>(
      worker,
      [spec(0), spec(1)],
      120_000,
    );
    return results.flatMap((r) => Array.from(r.latenciesUs));
  } finally {
    for (const f of fences) f.dispose();
  }
}

/**
 * Long-wait latency, one direction, fence hops interleaved in blocks with raw Atomics hops
 * by the same two threads (see workers/fence-longwait.ts): `fence.signal_wake.longwait` against
 * `atomics.longwait_oneway` of the same run.
 */
async function longWait(hops: number): Promise<BenchResult[]> {
  const warmup = 40;
  const total = 2 * (hops + warmup);
  const ctx = DmaFence.contextAlloc(1);
  const fences = Array.from({ length: total }, (_, i) => new DmaFence(ctx, BigInt(i + 1)));
  const sab = new SharedArrayBuffer(16 + 8 * total);
  const spec = (role: 0 | 1) => {
    const data: FenceLongWaitData = {
      role,
      hops,
      warmup: 2 * warmup,
      sleepMs: 2,
      block: 10,
      sab,
      fences: fences.map((f): SharedMessage => f.share()),
    };
    return { workerData: data };
  };
  try {
    const [, res] = await runWorkerBench<FenceLongWaitResult>(
      longWaitWorker,
      [spec(0), spec(1)],
      120_000,
    );
    if (!res) throw new Error('fence long-wait bench: no result from the waiter');
    const how = 'one direction, signaller sleeps 2 ms before each signal: the waiter is asleep';
    const raw = latencyResults('atomics.longwait_oneway', Array.from(res.rawUs), how);
    const fence = latencyResults(
      'fence.signal_wake.longwait',
      Array.from(res.fenceUs),
      `${how}; waitSync, interleaved in blocks of 10 hops with the raw Atomics.wait/notify baseline`,
    );
    return [
      raw.p50,
      raw.p99,
      ...compareLatency(fence, { ...raw, samplesUs: Array.from(res.rawUs) }),
    ];
  } finally {
    for (const f of fences) f.dispose();
  }
}

/** Allocates `count` live fences and reports shared and heap bytes per fence. */
function memoryPerFence(count: number): BenchResult[] {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const d = domain();
  gc();
  const heap0 = process.memoryUsage().heapUsed;
  const live0 = d.liveRecords();
  const ctx = DmaFence.contextAlloc(1);
  const fences: DmaFence[] = new Array(count);
  for (let i = 0; i < count; i++) fences[i] = new DmaFence(ctx, BigInt(i + 1));
  gc();
  const heapPer = (process.memoryUsage().heapUsed - heap0) / count;
  const records = d.liveRecords() - live0;
  const sharedPer = (records * 96) / count;
  for (const f of fences) f.dispose();
  const leaked = d.liveRecords() - live0;
  return [
    {
      name: 'fence.memory.per_live_fence',
      value: sharedPer + heapPer,
      unit: 'bytes',
      note: `${count} live fences: ${sharedPer.toFixed(0)} B shared record + ${heapPer.toFixed(0)} B heap (handle, array slot, safety-net entry); target <= 256; leaked records after dispose: ${leaked}`,
    },
  ];
}

export const fenceGroup: BenchGroup = {
  name: 'fence',
  async run(opts: BenchOptions) {
    const out: BenchResult[] = [];
    const hops = byMode(opts, 5_000, 1_000);
    const warmup = byMode(opts, 500, 200);

    const raw = await rawAtomicsPingPong({ ...opts, fresh: true });
    const sync = latencyResults(
      'fence.signal_wake.sync',
      await pingPong('sync', hops, warmup),
      'waitSync: adaptive spin, then futex',
    );
    out.push(...compareLatency(sync, raw));

    const asyncLat = latencyResults(
      'fence.signal_wake.async',
      await pingPong('async', hops, warmup),
      'await wait(): Atomics.waitAsync, never blocks the loop',
    );
    out.push(...compareLatency(asyncLat, raw));

    out.push(...(await longWait(byMode(opts, 600, 150))));

    const rawLong = await rawAtomicsLongWait({ ...opts, fresh: true });
    const longHops = byMode(opts, 400, 100);
    const long = latencyResults(
      'fence.signal_wake.longwait_pingpong',
      await pingPong('sync-sleep', longHops, 10),
      'ping-pong, each side sleeps 2 ms before it signals; includes how soon the signaller is back asleep in its own next wait, which on these VMs delays the wake-up',
    );
    out.push(...compareLatency(long, rawLong));

    const ctx = DmaFence.contextAlloc(1);
    let seq = 0n;
    const noop = (): void => {};
    const rate = await measureThroughput(
      () => {
        const f = new DmaFence(ctx, ++seq);
        f.addCallback(noop);
        f.signal();
        f.dispose();
      },
      { minMs: byMode(opts, 1500, 400) },
    );
    out.push({
      name: 'fence.create_cb_signal_dispose',
      value: rate,
      unit: 'ops/s',
      note: 'one thread: new fence, addCallback, signal (callback runs), dispose; target >= 2e6',
    });

    out.push(...memoryPerFence(byMode(opts, 1_000_000, 200_000)));
    return out;
  },
};
