// Worker side of the implicit-synchronisation tests: writers and readers of one shared payload
// that coordinate only through a reservation object's fences, as drivers do for dma-bufs.
//
// 'collect' mode (the kernel pattern): under the lock, a writer collects every fence at
// dma_resv_usage_rw(true) (READ: readers and earlier writers) and adds its WRITE fence; a reader
// collects dma_resv_usage_rw(false) (WRITE) as a singleton and adds its READ fence. After unlocking
// each waits for what it collected, touches the payload, and signals its fence. A reader that ever
// sees a half-written payload proves a broken rule.
//
// 'simple' mode: one writer adds a WRITE fence and announces the round; readers wait for it
// through the reservation object alone (`wait` / `waitSync`) and must then see the full payload.
import { parentPort, workerData } from 'node:worker_threads';
import { DmaFence } from '../../src/dma-fence.js';
import { DmaResv, DmaResvUsage, dmaResvUsageRw } from '../../src/dma-resv.js';
import type { SharedMessage } from '../../src/substrate/handle.js';

export interface ImplicitData {
  mode: 'collect' | 'simple';
  role: 'writer' | 'reader';
  id: number;
  resv: SharedMessage;
  /** Words 0..63: payload; word 64: announced round; word 65: acknowledgements; 66: start barrier. */
  shared: SharedArrayBuffer;
  /** 'collect' mode: how many workers take part (they start together). */
  parties?: number;
  rounds: number;
  readers: number;
  async: boolean;
}

export interface ImplicitResult {
  torn: number;
  rounds: number;
  waited: number;
}

export const PAYLOAD_WORDS = 64;
const ROUND = 64;
const ACKS = 65;
/** Start barrier ('collect' mode): number of workers ready. */
const START = 66;

const data = workerData as ImplicitData;
const shared = new Int32Array(data.shared);

function dawdle(): void {
  let x = 0;
  for (let i = 0; i < 30; i++) x += Math.sqrt(i);
  if (x < 0) throw new Error('unreachable');
}

function writePayload(value: number): void {
  for (let w = 0; w < PAYLOAD_WORDS; w++) {
    shared[w] = value;
    dawdle();
  }
}

/** Number of words that differ from the first one (0 for a consistent payload). */
function readPayload(): { first: number; torn: number } {
  const first = shared[0]!;
  let torn = 0;
  for (let w = 1; w < PAYLOAD_WORDS; w++) {
    if (shared[w] !== first) torn++;
    dawdle();
  }
  return { first, torn };
}

async function waitFence(f: DmaFence): Promise<void> {
  if (data.async) await f.wait();
  else f.waitSync();
}

async function lock(resv: DmaResv): Promise<void> {
  if (data.async) await resv.lockAsync();
  else resv.lock();
}

async function collectWriter(resv: DmaResv): Promise<ImplicitResult> {
  const ctx = DmaFence.contextAlloc(1);
  let waited = 0;
  for (let r = 1; r <= data.rounds; r++) {
    await lock(resv);
    const deps = resv.getFences(dmaResvUsageRw(true));
    resv.reserveFences(1);
    const fence = new DmaFence(ctx, BigInt(r));
    resv.addFence(fence, DmaResvUsage.WRITE);
    resv.unlock();
    for (const dep of deps) {
      if (!dep.isSignaled()) waited++;
      await waitFence(dep);
      dep.dispose();
    }
    writePayload(data.id * 1_000_000 + r);
    fence.signal();
    fence.dispose();
  }
  return { torn: 0, rounds: data.rounds, waited };
}

async function collectReader(resv: DmaResv): Promise<ImplicitResult> {
  const ctx = DmaFence.contextAlloc(1);
  let torn = 0;
  let waited = 0;
  for (let r = 1; r <= data.rounds; r++) {
    await lock(resv);
    const dep = resv.getSingleton(dmaResvUsageRw(false));
    resv.reserveFences(1);
    const fence = new DmaFence(ctx, BigInt(r));
    resv.addFence(fence, DmaResvUsage.READ);
    resv.unlock();
    if (dep) {
      if (!dep.isSignaled()) waited++;
      await waitFence(dep);
      dep.dispose();
    }
    torn += readPayload().torn;
    fence.signal();
    fence.dispose();
  }
  return { torn, rounds: data.rounds, waited };
}

async function simpleWriter(resv: DmaResv): Promise<ImplicitResult> {
  const ctx = DmaFence.contextAlloc(1);
  for (let r = 1; r <= data.rounds; r++) {
    // Every reader has checked the previous round.
    while (Atomics.load(shared, ACKS) < (r - 1) * data.readers) {
      Atomics.wait(shared, ACKS, Atomics.load(shared, ACKS), 5);
    }
    resv.lock();
    resv.reserveFences(1);
    const fence = new DmaFence(ctx, BigInt(r));
    resv.addFence(fence, DmaResvUsage.WRITE);
    resv.unlock();
    Atomics.store(shared, ROUND, r);
    Atomics.notify(shared, ROUND);
    // Take a while before completing, so that readers really find the fence pending.
    const until = performance.now() + 0.5;
    while (performance.now() < until) dawdle();
    writePayload(r);
    fence.signal();
    fence.dispose();
  }
  return { torn: 0, rounds: data.rounds, waited: 0 };
}

async function simpleReader(resv: DmaResv): Promise<ImplicitResult> {
  let torn = 0;
  let waited = 0;
  for (let r = 1; r <= data.rounds; r++) {
    while (Atomics.load(shared, ROUND) < r)
      Atomics.wait(shared, ROUND, Atomics.load(shared, ROUND), 5);
    if (!resv.testSignaled(DmaResvUsage.WRITE)) waited++;
    const left = data.async
      ? await resv.wait(dmaResvUsageRw(false), { timeout: 10_000 })
      : resv.waitSync(dmaResvUsageRw(false), { timeout: 10_000 });
    if (left <= 0) throw new Error('implicit-sync wait timed out');
    const { first, torn: t } = readPayload();
    torn += t + (first === r ? 0 : 1);
    Atomics.add(shared, ACKS, 1);
    Atomics.notify(shared, ACKS);
  }
  return { torn, rounds: data.rounds, waited };
}

const resv = DmaResv.import(data.resv);
try {
  let result: ImplicitResult;
  if (data.mode === 'collect') {
    // Start together: a worker that starts late would otherwise find everyone else done, and
    // nothing would overlap.
    Atomics.add(shared, START, 1);
    Atomics.notify(shared, START);
    for (
      let v = Atomics.load(shared, START);
      v < (data.parties ?? 1);
      v = Atomics.load(shared, START)
    ) {
      Atomics.wait(shared, START, v, 100);
    }
    result = data.role === 'writer' ? await collectWriter(resv) : await collectReader(resv);
  } else {
    result = data.role === 'writer' ? await simpleWriter(resv) : await simpleReader(resv);
  }
  parentPort?.postMessage(result);
} finally {
  resv.dispose();
}
