// Worker side of the lock-many stress: lock random overlapping sets of reservation objects in
// random orders (one transaction per round, EDEADLK back-off through drm_exec), bump one counter
// per locked object non-atomically (read, dawdle, write: a lost update proves broken exclusion),
// and publish a fence on each. A "reader" worker walks the same objects without locks meanwhile.
import { parentPort, workerData } from 'node:worker_threads';
import { DmaFence } from '../../src/dma-fence.js';
import { DmaResv, DmaResvUsage } from '../../src/dma-resv.js';
import { lockAll, lockAllAsync } from '../../src/drm-exec.js';
import type { SharedMessage } from '../../src/substrate/handle.js';
import { wwMutexDebugSlowpath } from '../../src/ww-mutex.js';

export interface StressData {
  role: 'locker' | 'reader';
  objs: SharedMessage[];
  counters: SharedArrayBuffer;
  /** Set to 1 by the main thread (reader) or by the last locker to stop the readers. */
  stop: SharedArrayBuffer;
  rounds: number;
  seed: number;
  mode: 'sync' | 'async';
  maxSet: number;
  /** Inject EDEADLK (CONFIG_DEBUG_WW_MUTEX_SLOWPATH) in this worker's transactions. */
  inject: boolean;
}

export interface StressResult {
  rounds: number;
  /** Per object: how many times this worker incremented its counter. */
  tally: number[];
  backoffs: number;
  /** Reader: fences seen, and errors (fences of a wrong usage, dead handles). */
  seen?: number;
  errors?: string[];
}

const data = workerData as StressData;

function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function dawdle(rand: () => number): void {
  // A few microseconds between the read and the write of a counter.
  const n = 20 + Math.floor(rand() * 200);
  let x = 0;
  for (let i = 0; i < n; i++) x += Math.sqrt(i);
  if (x < 0) throw new Error('unreachable');
}

async function locker(objs: DmaResv[]): Promise<StressResult> {
  const rand = rng(data.seed);
  const counters = new Int32Array(data.counters);
  const tally = objs.map(() => 0);
  const stop = new Int32Array(data.stop);
  wwMutexDebugSlowpath(data.inject);
  const fenceCtx = DmaFence.contextAlloc(1);
  let backoffs = 0;
  let seq = 0n;
  // Each round's fence stays unsignalled until the next round has published its own, so that
  // lock-free readers find unsignalled fences to walk.
  let pending: DmaFence | null = null;
  for (let r = 0; r < data.rounds; r++) {
    const k = 2 + Math.floor(rand() * (data.maxSet - 1));
    const set: DmaResv[] = [];
    for (let i = 0; i < k; i++) set.push(objs[Math.floor(rand() * objs.length)]!);
    const exec =
      data.mode === 'sync'
        ? lockAll(set, { numFences: 1 })
        : await lockAllAsync(set, { numFences: 1 });
    const fence = new DmaFence(fenceCtx, ++seq);
    try {
      for (const o of exec.objects) {
        const idx = objs.indexOf(o);
        const v = counters[idx]!;
        dawdle(rand);
        counters[idx] = v + 1;
        tally[idx]!++;
        o.addFence(fence, rand() < 0.5 ? DmaResvUsage.WRITE : DmaResvUsage.READ);
      }
    } finally {
      backoffs += exec.retries;
      exec.dispose();
    }
    pending?.signal();
    pending?.dispose();
    pending = fence;
    if (data.mode === 'async' && (r & 7) === 0) await new Promise((res) => setImmediate(res));
  }
  pending?.signal();
  pending?.dispose();
  Atomics.add(stop, 1, 1);
  return { rounds: data.rounds, tally, backoffs };
}

function reader(objs: DmaResv[]): StressResult {
  const stop = new Int32Array(data.stop);
  const errors: string[] = [];
  let seen = 0;
  let rounds = 0;
  while (Atomics.load(stop, 0) === 0) {
    for (const o of objs) {
      for (const usage of [DmaResvUsage.WRITE, DmaResvUsage.BOOKKEEP]) {
        using it = o.fencesUnlocked(usage);
        for (const f of it) {
          seen++;
          if (it.fenceUsage > usage) errors.push(`usage ${it.fenceUsage} > ${usage}`);
          if (!f.alive) errors.push('dead fence yielded');
          // Reading the fence's state must work: the cursor holds a reference.
          void f.seqno;
        }
      }
      const got = o.getFences(DmaResvUsage.READ);
      seen += got.length;
      for (const f of got) f.dispose();
      o.testSignaled(DmaResvUsage.BOOKKEEP);
    }
    rounds++;
    if (errors.length > 10) break;
  }
  return { rounds, tally: [], backoffs: 0, seen, errors };
}

const objs = data.objs.map((m) => DmaResv.import(m));
try {
  const result = data.role === 'locker' ? await locker(objs) : reader(objs);
  parentPort?.postMessage(result);
} finally {
  for (const o of objs) o.dispose();
}
