/**
 * One side of a timeline-syncobj ping-pong between two worker threads: both share one timeline
 * syncobj; hop k is point k, made available by one side and waited on by the other.
 *
 * Modes:
 * - `host`: the signaller calls `timelineSignal(k)` (DRM_IOCTL_SYNCOBJ_TIMELINE_SIGNAL); the
 *   waiter waits with WAIT_FOR_SUBMIT for the point to appear and be signalled (Vulkan's host
 *   signal / host wait on a timeline semaphore). Latency runs from a stamp the signaller takes
 *   just before the call (so it includes building the chain link) to the waiter running again.
 * - `fence`: points are submitted ahead wrapping pending fences (GPU work queued; role 0 keeps
 *   16 points in flight, so that the waiter's chain walks stay short as in real use); the
 *   signaller signals fence k and the waiter waits on point k, which completes through the
 *   chain. Latency runs from that fence's signal timestamp, like the dma_fence ping-pong.
 *
 * @module
 */
import { parentPort, workerData } from 'node:worker_threads';
import { DmaFence } from '../../src/dma-fence.js';
import { DRM_SYNCOBJ_WAIT_FLAGS_WAIT_FOR_SUBMIT, DrmSyncobj } from '../../src/drm-syncobj.js';
import type { SharedMessage } from '../../src/substrate/handle.js';
import { awaitWaiter } from './handshake.js';

/** `workerData` of this worker. */
export interface SyncobjPingPongData {
  role: 0 | 1;
  mode: 'host' | 'fence';
  hops: number;
  warmup: number;
  /** Int32 start barrier at 0, Int32 "waiting for point" at 4, then one BigInt64 stamp per point from byte 8. */
  sab: SharedArrayBuffer;
  syncobj: SharedMessage;
  /** `fence` mode: fence k - 1 is the fence of point k. */
  fences: SharedMessage[];
}

const data = workerData as SyncobjPingPongData;
const tl = DrmSyncobj.import(data.syncobj);
const fences = data.fences.map((m) => DmaFence.import(m));
const ready = new Int32Array(data.sab, 0, 1);
const waiting = new Int32Array(data.sab, 4, 1);
const stamps = new BigInt64Array(data.sab, 8);
const total = data.warmup + data.hops;
const latenciesUs = new Float64Array(data.hops);
const FOR_SUBMIT = DRM_SYNCOBJ_WAIT_FLAGS_WAIT_FOR_SUBMIT;

const AHEAD = 16;
let submitted = 0;

/** Role 0 alone submits points, in order, up to `upTo` (a monotonic timeline). */
function submitUpTo(upTo: number): void {
  while (submitted < Math.min(upTo, fences.length)) {
    submitted++;
    tl.addPoint(fences[submitted - 1]!, BigInt(submitted));
  }
}

function signal(point: number): void {
  awaitWaiter(waiting, point);
  if (data.mode === 'host') {
    Atomics.store(stamps, point, process.hrtime.bigint());
    tl.timelineSignal(BigInt(point));
  } else {
    if (data.role === 0) submitUpTo(point + AHEAD);
    fences[point - 1]!.signal();
  }
}

/** Runs the paths locally first so that the timed hops run optimised code. */
function warmUp(): void {
  using local = DrmSyncobj.create();
  const ctx = DmaFence.contextAlloc(1);
  for (let p = 1; p <= 20_000; p++) {
    if (data.mode === 'host') {
      local.timelineSignal(BigInt(p));
    } else {
      using f = new DmaFence(ctx, BigInt(p));
      local.addPoint(f, BigInt(p));
      f.signal();
    }
    DrmSyncobj.waitSync([local], { points: [BigInt(p)], flags: FOR_SUBMIT, timeout: 1000 });
  }
}

function run(): void {
  warmUp();
  if (data.mode === 'fence' && data.role === 0) submitUpTo(AHEAD);
  Atomics.add(ready, 0, 1);
  Atomics.notify(ready, 0);
  while (Atomics.load(ready, 0) < 2) Atomics.wait(ready, 0, 1, 1000);
  if (data.role === 0) signal(1);
  const points = [0n];
  const opts = { points, flags: FOR_SUBMIT, timeout: 20_000 };
  for (let i = 0; i < total; i++) {
    const point = data.role === 0 ? 2 * i + 2 : 2 * i + 1;
    points[0] = BigInt(point);
    Atomics.store(waiting, 0, point);
    DrmSyncobj.waitSync([tl], opts);
    const now = process.hrtime.bigint();
    const from = data.mode === 'host' ? Atomics.load(stamps, point) : fences[point - 1]!.timestamp;
    if (from === undefined) throw new Error(`syncobj ping-pong: point ${point} not signalled`);
    const k = i - data.warmup;
    if (k >= 0) latenciesUs[k] = Number(now - from) / 1000;
    if (point + 1 <= 2 * total + 1) signal(point + 1);
  }
  for (const f of fences) f.dispose();
  tl.dispose();
  parentPort?.postMessage({ latenciesUs }, [latenciesUs.buffer]);
}

run();
