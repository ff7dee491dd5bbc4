// Port of the kernel selftest's race_signal_callback (st-dma-fence.c) to two workers.
//
// Each of the two threads repeatedly: creates a fence and publishes it in a shared slot; takes a
// reference to the other thread's published fence the way get_rcu_safe does (a generation-
// checked get-unless-zero); signals its own fence either before or after adding a callback to
// the other's; and, when the callback was added, waits for that fence and then for the callback,
// which must run (in this thread, delivered through its mailbox). Then it unpublishes and drops
// its own fence.
import { parentPort, workerData } from 'node:worker_threads';
import { type DmaFence, putFence, wrapFence } from '../../src/dma-fence.js';
import { DmaFence as Fence } from '../../src/index.js';
import { domain, RecordType } from '../../src/substrate/domain.js';

interface Job {
  id: 0 | 1;
  before: boolean;
  /** Words: [stop, slot0+1, gen0, slot1+1, gen1, started] */
  shared: SharedArrayBuffer;
  context: string;
}

const job = workerData as Job;
const w = new Int32Array(job.shared);
const d = domain();
const mine = 1 + job.id * 2;
const theirs = 1 + (1 - job.id) * 2;
const stopped = (): boolean => Atomics.load(w, 0) !== 0;

/** get_rcu_safe: a reference to the other thread's current fence, or undefined. */
function getOther(): DmaFence | undefined {
  for (;;) {
    const s = Atomics.load(w, theirs);
    if (s === 0) return undefined;
    const gen = Atomics.load(w, theirs + 1);
    if (d.tryGet(s - 1, gen, RecordType.FENCE)) {
      // Re-read the published pointer: if it changed meanwhile, drop and retry.
      if (Atomics.load(w, theirs) === s && Atomics.load(w, theirs + 1) === gen) {
        return wrapFence(s - 1, gen, true);
      }
      putFence(s - 1);
      continue;
    }
    if (Atomics.load(w, theirs) === s) return undefined;
  }
}

Atomics.add(w, 5, 1);
let pass = 0;
let miss = 0;
let err = '';
const ctx = BigInt(job.context);
while (!err && !stopped()) {
  const f1 = new Fence(ctx, BigInt(pass + 1));
  f1.enableSwSignaling();
  Atomics.store(w, mine + 1, f1._gen);
  Atomics.store(w, mine, f1._slot + 1);

  let f2: DmaFence | undefined;
  do {
    f2 = getOther();
  } while (!f2 && !stopped());

  if (job.before) f1.signal();
  let seen = false;
  let added = false;
  if (f2) {
    try {
      f2.addCallback(() => {
        seen = true;
      });
      added = true;
    } catch {
      miss++;
    }
  } else {
    miss++;
  }
  if (!job.before) f1.signal();

  if (added && f2) {
    f2.waitSync({ timeout: 10_000 });
    // The callback runs in this thread, from its event loop: let the mailbox deliver it.
    for (let i = 0; i < 10_000 && !seen; i++) await new Promise((r) => setImmediate(r));
    if (!seen) {
      err = `callback not seen on thread ${job.id}, pass ${pass} (${miss} misses), signalled ${f2.isSignaledFlag()}`;
    }
  }
  f2?.dispose();
  Atomics.store(w, mine, 0);
  f1.dispose();
  pass++;
}
parentPort?.postMessage({ pass, miss, err });
