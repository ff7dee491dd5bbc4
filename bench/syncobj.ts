/**
 * drm_syncobj benchmarks: cross-thread signal-to-wake latency through a timeline syncobj,
 * compared with the dma_fence ping-pong (`fence.signal_wake.sync`) measured in the same run,
 * by the same method (two workers, one hop at a time, blocking waits, pooled one-way latencies).
 *
 * - `syncobj.timeline.signal_wake`: points are submitted ahead wrapping pending fences (queued
 *   work); one side signals the fence of point k, the other is in TIMELINE_WAIT on point k
 *   (WAIT_FOR_SUBMIT), which completes through its chain link. From the fence's signal
 *   timestamp to the waiter running again, exactly like the fence figure. Target: at most 1.5x.
 * - `syncobj.timeline.host_signal_wake`: one side adds point k with TIMELINE_SIGNAL, the other
 *   waits for it with WAIT_FOR_SUBMIT (a host signal and a host wait). There is no fence
 *   timestamp at the signal instant (the point wraps the old stub fence), so it runs from a
 *   stamp taken just before the call: building and publishing the chain link is included.
 *
 * Reading the ratios: when both sides catch each other while spinning, the fence figure is well
 * under a microsecond, and a timeline point adds the completion of its chain link (walking,
 * references, a second signal: a few microseconds), so the ratio is far above 1.5 there. When
 * the waiter is asleep in the futex (a loaded machine, or peers slower than the spin budget),
 * the wake-up dominates both and the ratio is close to 1.
 *
 * @module
 */
import { DmaFence } from '../src/dma-fence.js';
import { DrmSyncobj } from '../src/drm-syncobj.js';
import { pingPong as fencePingPong } from './fence.js';
import {
  type BenchGroup,
  type BenchOptions,
  type BenchResult,
  byMode,
  latencyResults,
  runWorkerBench,
  withBaseline,
} from './harness.js';
import type { SyncobjPingPongData } from './workers/syncobj-pingpong.js';

const worker = new URL('./workers/syncobj-pingpong.js', import.meta.url);

/** One syncobj ping-pong run: the pooled one-way latencies (us) of both sides. */
async function syncobjPingPong(
  mode: SyncobjPingPongData['mode'],
  hops: number,
  warmup: number,
): Promise<number[]> {
  const n = 2 * (hops + warmup) + 1;
  const ctx = DmaFence.contextAlloc(1);
  const fences =
    mode === 'fence' ? Array.from({ length: n }, (_, i) => new DmaFence(ctx, BigInt(i + 1))) : [];
  const tl = DrmSyncobj.create();
  const sab = new SharedArrayBuffer(8 + 8 * (n + 1));
  const spec = (role: 0 | 1) => {
    const data: SyncobjPingPongData = {
      role,
      mode,
      hops,
      warmup,
      sab,
      syncobj: tl.share(),
      fences: fences.map((f) => f.share()),
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
    tl.dispose();
  }
}

function compare(
  mine: { p50: BenchResult; p99: BenchResult },
  base: { p50: BenchResult; p99: BenchResult },
): BenchResult[] {
  return [withBaseline(mine.p50, base.p50), withBaseline(mine.p99, base.p99)];
}

export const syncobjGroup: BenchGroup = {
  name: 'syncobj',
  async run(opts: BenchOptions) {
    const hops = byMode(opts, 5_000, 1_000);
    const warmup = byMode(opts, 500, 200);
    // The dma_fence figure of this run, measured the same way (fence.signal_wake.sync).
    const fence = latencyResults(
      'fence.signal_wake.sync',
      await fencePingPong('sync', hops, warmup),
      'reference for the syncobj ratios (same run)',
    );
    const viaFence = latencyResults(
      'syncobj.timeline.signal_wake',
      await syncobjPingPong('fence', hops, warmup),
      'fence of point k signals -> TIMELINE_WAIT(k, WAIT_FOR_SUBMIT) wakes (blocking); from the fence timestamp; target ratio <= 1.5',
    );
    const host = latencyResults(
      'syncobj.timeline.host_signal_wake',
      await syncobjPingPong('host', hops, warmup),
      'TIMELINE_SIGNAL(k) -> TIMELINE_WAIT(k, WAIT_FOR_SUBMIT) wakes (blocking); from before the signal call',
    );
    return [...compare(viaFence, fence), ...compare(host, fence)];
  },
};
