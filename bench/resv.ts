/**
 * Reservation object benchmarks: the uncontended writer path (lock, reserve, add a fence,
 * unlock) in one thread, and K threads locking random sets of 4 of 16 objects through
 * `lockAll` (ww_mutex transactions with EDEADLK back-off).
 *
 * @module
 */
import { DmaFence } from '../src/dma-fence.js';
import { DmaResv, DmaResvUsage } from '../src/dma-resv.js';
import {
  type BenchGroup,
  type BenchOptions,
  type BenchResult,
  byMode,
  measureThroughput,
  runWorkerBench,
} from './harness.js';
import type { ResvContendedData, ResvContendedResult } from './workers/resv-contended.js';

const worker = new URL('./workers/resv-contended.js', import.meta.url);

async function uncontended(opts: BenchOptions): Promise<BenchResult[]> {
  const out: BenchResult[] = [];
  const resv = new DmaResv();
  const ctx = DmaFence.contextAlloc(1);
  const fence = new DmaFence(ctx, 1n);
  try {
    const rate = await measureThroughput(
      () => {
        resv.lock();
        resv.reserveFences(1);
        resv.addFence(fence, DmaResvUsage.WRITE);
        resv.unlock();
      },
      { minMs: byMode(opts, 1500, 400) },
    );
    out.push({
      name: 'resv.lock_add_unlock',
      value: rate,
      unit: 'ops/s',
      note: 'one thread: lock (no ctx), reserveFences(1) (reallocates: unlock shrinks the reservation, as with CONFIG_DEBUG_MUTEXES), addFence(WRITE, same fence: replaced in place), unlock; target >= 1e6',
    });
    let seq = 1n;
    const rateNew = await measureThroughput(
      () => {
        const f = new DmaFence(ctx, ++seq);
        resv.lock();
        resv.reserveFences(1);
        resv.addFence(f, DmaResvUsage.WRITE);
        resv.unlock();
        f.signal();
        f.dispose();
      },
      { minMs: byMode(opts, 1000, 300) },
    );
    out.push({
      name: 'resv.lock_add_unlock.new_fence',
      value: rateNew,
      unit: 'ops/s',
      note: 'as above with a new fence each time (created, added: replaces the previous one of its context, signalled, disposed)',
    });
  } finally {
    fence.dispose();
    resv.dispose();
  }
  return out;
}

async function contended(threads: number, opts: BenchOptions): Promise<BenchResult[]> {
  const objs = Array.from({ length: 16 }, () => new DmaResv());
  const sab = new SharedArrayBuffer(8);
  const durationMs = byMode(opts, 1500, 400);
  try {
    const specs = Array.from({ length: threads }, (_, i) => {
      const data: ResvContendedData = {
        objs: objs.map((o) => o.share()),
        setSize: 4,
        durationMs,
        seed: 0x5eed + i,
        sab,
        threads,
      };
      return { workerData: data };
    });
    const results = await runWorkerBench<ResvContendedResult>(worker, specs, 120_000);
    const acquisitions = results.reduce((n, r) => n + r.acquisitions, 0);
    const backedOff = results.reduce((n, r) => n + r.backedOff, 0);
    const backoffs = results.reduce((n, r) => n + r.backoffs, 0);
    const seconds = Math.max(...results.map((r) => r.elapsedMs)) / 1000;
    const fraction = acquisitions ? backedOff / acquisitions : 0;
    return [
      {
        name: `resv.contended.acquisitions.k${threads}`,
        value: acquisitions / seconds,
        unit: 'sets/s',
        note: `${threads} threads, random sets of 4 of 16 objects via lockAll (sync); ${(fraction * 100).toFixed(1)}% of acquisitions backed off at least once (${backoffs} back-offs in ${acquisitions})`,
      },
      {
        name: `resv.contended.backoff_fraction.k${threads}`,
        value: fraction,
        unit: 'fraction',
        note: 'acquisitions that hit EDEADLK at least once (released everything, slow-locked the contended object, retried)',
      },
    ];
  } finally {
    for (const o of objs) o.dispose();
  }
}

export const resvGroup: BenchGroup = {
  name: 'resv',
  async run(opts: BenchOptions) {
    const out: BenchResult[] = [];
    out.push(...(await uncontended(opts)));
    for (const k of [2, 4]) out.push(...(await contended(k, opts)));
    return out;
  },
};
