/**
 * Raw baselines, measured in the same run as the benchmarks that compare against them.
 *
 * - Thread-to-thread one-way latency: Atomics.wait/notify on a SharedArrayBuffer (busy ping-pong
 *   and with the waiter surely asleep), and postMessage on a MessageChannel. These are the floor
 *   and the usual alternative for anything that signals between threads (fences, sync objects).
 * - Buffer hand-off cost: structuredClone, postMessage with transfer, postMessage with a copy.
 *   These are what sharing a buffer through SharedArrayBuffer memory avoids.
 *
 * Every function memoizes its result per (function, arguments, quick/full) for the whole
 * process, so several groups can ask for the same baseline and it is measured once; pass
 * `fresh: true` to measure again (e.g. to interleave with your own measurement on a noisy box).
 *
 * @module
 */
import { MessageChannel } from 'node:worker_threads';
import {
  type BenchResult,
  byMode,
  formatBytes,
  latencyResults,
  nextMessage,
  runWorkerBench,
  type Summary,
  sampleTimes,
  summarize,
  type WorkerSpec,
  withBaseline,
  withWorkers,
} from './harness.js';
import type { EchoData, PingPongData, PingPongMode, PingPongResult } from './workers/protocol.js';

const PINGPONG_URL = new URL('./workers/pingpong.js', import.meta.url);
const ECHO_URL = new URL('./workers/echo.js', import.meta.url);

/** Buffer sizes for the hand-off baselines: a page-ish, a medium and a large buffer. */
export const HANDOFF_SIZES: readonly number[] = [4 << 10, 1 << 20, 32 << 20];

/** Options of every baseline (a `BenchOptions` fits). */
export interface BaselineOptions {
  /** Fewer samples. */
  quick?: boolean;
  /** Measure again instead of reusing this run's earlier measurement. */
  fresh?: boolean;
}

/** A one-way latency baseline: results `<name>.p50` and `<name>.p99` in microseconds. */
export interface LatencyBaseline {
  p50: BenchResult;
  p99: BenchResult;
  summary: Summary;
  /** Every timed one-way hop, microseconds, both directions. */
  samplesUs: number[];
  /** Atomics modes: share of hops on which the receiver was blocked in `Atomics.wait`. */
  asleepFraction?: number;
}

const cache = new Map<string, Promise<unknown>>();

function memo<T>(key: string, opts: BaselineOptions, measure: () => Promise<T>): Promise<T> {
  const k = `${key}:${opts.quick ? 'quick' : 'full'}`;
  const hit = opts.fresh ? undefined : cache.get(k);
  if (hit) return hit as Promise<T>;
  const p = measure();
  cache.set(k, p);
  p.catch(() => {
    if (cache.get(k) === p) cache.delete(k);
  });
  return p;
}

/** Runs two `pingpong` workers against each other and pools both directions' hops. */
async function pingPong(
  name: string,
  mode: PingPongMode,
  hops: number,
  warmup: number,
  sleepMs = 0,
): Promise<LatencyBaseline> {
  const base = { mode, hops, warmup, sleepMs };
  let specs: WorkerSpec[];
  if (mode === 'port') {
    const { port1, port2 } = new MessageChannel();
    const a: PingPongData = { ...base, role: 0, port: port1 };
    const b: PingPongData = { ...base, role: 1, port: port2 };
    specs = [
      { workerData: a, transferList: [port1] },
      { workerData: b, transferList: [port2] },
    ];
  } else {
    const sab = new SharedArrayBuffer(16);
    const a: PingPongData = { ...base, role: 0, sab };
    const b: PingPongData = { ...base, role: 1, sab };
    specs = [{ workerData: a }, { workerData: b }];
  }
  const results = await runWorkerBench<PingPongResult>(PINGPONG_URL, specs);
  const samplesUs = results.flatMap((r) => Array.from(r.latenciesUs));
  if (mode === 'port') return { ...latencyResults(name, samplesUs), samplesUs };
  const asleepFraction = results.reduce((n, r) => n + r.asleep, 0) / samplesUs.length;
  const note = `receiver blocked in futex on ${(asleepFraction * 100).toFixed(0)}% of hops`;
  return { ...latencyResults(name, samplesUs, note), samplesUs, asleepFraction };
}

/**
 * One-way latency of Atomics.store + Atomics.notify to the other thread's return from
 * Atomics.wait, two workers ping-ponging back to back (`atomics.pingpong.p50/.p99`, us).
 * The receiver may or may not be asleep yet when the signal comes; the note says how often it
 * was. This is the floor for any Atomics-based signalling primitive.
 */
export function rawAtomicsPingPong(opts: BaselineOptions = {}): Promise<LatencyBaseline> {
  return memo('atomics.pingpong', opts, () =>
    pingPong('atomics.pingpong', 'atomics', byMode(opts, 10_000, 2_000), byMode(opts, 1_000, 300)),
  );
}

/**
 * Like {@linkcode rawAtomicsPingPong}, but each side sleeps ~2 ms before signalling, so the
 * receiver is really asleep in the futex: the cost of waking a sleeping thread
 * (`atomics.longwait.p50/.p99`, us).
 */
export function rawAtomicsLongWait(opts: BaselineOptions = {}): Promise<LatencyBaseline> {
  return memo('atomics.longwait', opts, () =>
    pingPong('atomics.longwait', 'atomics-sleep', byMode(opts, 500, 120), byMode(opts, 10, 5), 2),
  );
}

/**
 * One-way latency of postMessage between two workers over a MessageChannel, from just before
 * `postMessage` to the receiver's 'message' handler (`port.pingpong.p50/.p99`, us).
 */
export function messagePortPingPong(opts: BaselineOptions = {}): Promise<LatencyBaseline> {
  return memo('port.pingpong', opts, () =>
    pingPong('port.pingpong', 'port', byMode(opts, 5_000, 1_000), byMode(opts, 500, 200)),
  );
}

/**
 * Compares a latency measured like the baselines (p50/p99 results from `latencyResults`) with
 * a baseline: `[p50 vs baseline p50, p99 vs baseline p99]`, each with `ratio = value / baseline`.
 */
export function compareLatency(
  mine: { p50: BenchResult; p99: BenchResult },
  baseline: LatencyBaseline,
): BenchResult[] {
  return [withBaseline(mine.p50, baseline.p50), withBaseline(mine.p99, baseline.p99)];
}

/** A buffer of `bytes` with every page touched, so that no first-touch faults are timed. */
function filledBuffer(bytes: number): ArrayBuffer {
  const buf = new ArrayBuffer(bytes);
  new Uint8Array(buf).fill(0x5a);
  return buf;
}

/**
 * Median-per-operation result; the note adds mean, p99 and, for copying operations, the
 * implied bandwidth (`copiedBytes` per median operation).
 */
function costResult(name: string, samplesUs: readonly number[], copiedBytes = 0): BenchResult {
  const s = summarize(samplesUs);
  const bw = copiedBytes ? `; ${(copiedBytes / (s.p50 * 1e3)).toFixed(2)} GB/s copied` : '';
  const note = `median of n=${s.n}; mean ${s.mean.toFixed(1)}; p99 ${s.p99.toFixed(1)}${bw}`;
  return { name, value: s.p50, unit: 'us', note };
}

/**
 * Sampling effort for the hand-off costs: time-based, with fewer required samples for large
 * buffers (a 32 MiB copy into fresh memory costs 100+ ms on a small VM: page faults).
 */
function costSampling(bytes: number, opts: BaselineOptions) {
  const large = bytes >= 16 << 20;
  return {
    minMs: byMode(opts, large ? 150 : 250, large ? 50 : 80),
    minSamples: byMode(opts, large ? 7 : 15, large ? 3 : 5),
    maxSamples: 20_000,
    warmup: large ? 1 : bytes >= 1 << 20 ? 20 : 100,
  };
}

/**
 * Microseconds to `structuredClone` an ArrayBuffer of `bytes` on one thread (a full copy into
 * fresh memory): `clone.structured.<size>`, median.
 */
export function structuredCloneCost(
  bytes: number,
  opts: BaselineOptions = {},
): Promise<BenchResult> {
  return memo(`clone.structured.${bytes}`, opts, async () => {
    const src = filledBuffer(bytes);
    const samples = await sampleTimes(() => structuredClone(src), costSampling(bytes, opts));
    return costResult(`clone.structured.${formatBytes(bytes)}`, samples, bytes);
  });
}

/** Times round trips of an ArrayBuffer to an echo worker and back, moved or copied. */
async function echoRoundTrip(
  name: string,
  bytes: number,
  transfer: boolean,
  opts: BaselineOptions,
) {
  const data: EchoData = { transfer };
  return withWorkers(ECHO_URL, [{ workerData: data }], async ([worker]) => {
    if (!worker) throw new Error('echo worker did not start');
    let buf = filledBuffer(bytes);
    const samples = await sampleTimes(
      async () => {
        worker.postMessage(buf, transfer ? [buf] : []);
        buf = await nextMessage<ArrayBuffer>(worker);
      },
      costSampling(bytes, opts),
    );
    if (buf.byteLength !== bytes) throw new Error(`echo returned ${buf.byteLength} bytes`);
    // A copy each way when not transferring.
    return costResult(name, samples, transfer ? 0 : 2 * bytes);
  });
}

/**
 * Microseconds to hand an ArrayBuffer of `bytes` to a worker and get it back, both ways by
 * postMessage with `transfer` (a move: no copy, cost independent of size):
 * `transfer.roundtrip.<size>`, median.
 */
export function transferCost(bytes: number, opts: BaselineOptions = {}): Promise<BenchResult> {
  return memo(`transfer.roundtrip.${bytes}`, opts, () =>
    echoRoundTrip(`transfer.roundtrip.${formatBytes(bytes)}`, bytes, true, opts),
  );
}

/**
 * Microseconds to hand a copy of an ArrayBuffer of `bytes` to a worker and a copy back, both
 * ways by plain postMessage (structured clone): `postclone.roundtrip.<size>`, median.
 */
export function postCloneRoundTrip(
  bytes: number,
  opts: BaselineOptions = {},
): Promise<BenchResult> {
  return memo(`postclone.roundtrip.${bytes}`, opts, () =>
    echoRoundTrip(`postclone.roundtrip.${formatBytes(bytes)}`, bytes, false, opts),
  );
}
