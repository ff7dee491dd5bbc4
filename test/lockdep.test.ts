import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';
import {
  dmaFenceBeginSignalling,
  dmaFenceEndSignalling,
  dmaFenceMap,
  dmaFenceMightWait,
  inSignallingSection,
  LockClass,
  type LockdepReport,
  lockAcquire,
  lockdepAttachState,
  lockdepEnable,
  lockdepEnabled,
  lockdepHeldLocks,
  lockdepReports,
  lockdepReset,
  lockdepShareState,
  lockdepStats,
  lockRelease,
  mightSleep,
  withNoSleep,
} from '../src/lockdep.js';
import { DmaBufError } from '../src/substrate/errno.js';

const SEED_CYCLE =
  'dma_fence_map (read, signalling section) -> mutexA -> dma_fence_map (write, wait)';

interface WorkerResult {
  threadId: number;
  reports: LockdepReport[];
  ids: Record<string, number>;
}

function runWorker(data: object): Promise<WorkerResult> {
  return new Promise((resolve, reject) => {
    const w = new Worker(new URL('./workers/lockdep-worker.js', import.meta.url), {
      workerData: data,
    });
    let result: WorkerResult | undefined;
    w.once('message', (m: WorkerResult) => {
      result = m;
    });
    w.once('error', reject);
    w.once('exit', (code) => {
      if (result && code === 0) resolve(result);
      else reject(new Error(`lockdep worker exited with ${code} and no result`));
    });
  });
}

function isDmaBufError(code: string, text?: string): (e: unknown) => boolean {
  return (e) => {
    assert.ok(e instanceof DmaBufError, `expected DmaBufError, got ${String(e)}`);
    assert.equal(e.code, code);
    if (text !== undefined) assert.ok(e.message.includes(text), e.message);
    return true;
  };
}

/** Thread B of the seed: mutex A held across a fence wait (records mutexA -> fence map). */
function waitUnderLock(a: LockClass): void {
  lockAcquire(a);
  try {
    dmaFenceMightWait();
  } finally {
    lockRelease(a);
  }
}

/** Thread A of the seed: takes mutex A on the signalling path (records fence map -> mutexA). */
function sectionTakesLock(a: LockClass): void {
  const cookie = dmaFenceBeginSignalling();
  try {
    lockAcquire(a);
    lockRelease(a);
  } finally {
    dmaFenceEndSignalling(cookie);
  }
}

describe('lockdep', () => {
  beforeEach(() => {
    lockdepEnable(true, 'record');
    lockdepReset();
  });
  afterEach(() => {
    lockdepEnable(true, 'record');
    lockdepReset();
    lockdepEnable(false);
  });

  it('does nothing at all when off', () => {
    lockdepEnable(false);
    assert.equal(lockdepEnabled(), false);
    const before = lockdepStats();
    const a = new LockClass('off-only-lock');
    // The seed deadlock, both halves, plus misuse: none of it is seen.
    waitUnderLock(a);
    sectionTakesLock(a);
    lockRelease(a);
    dmaFenceEndSignalling(false);
    assert.equal(dmaFenceBeginSignalling(), true, 'cookie is the no-op cookie');
    assert.equal(inSignallingSection(), false);
    withNoSleep('callback', () => mightSleep('Atomics.wait'));
    assert.deepEqual(lockdepHeldLocks(), []);
    assert.deepEqual(lockdepReports(), []);
    // No class registered, no edge recorded.
    assert.deepEqual(lockdepStats(), before);
    // Nothing recorded while off, so turning on later does not see the old orders.
    lockdepEnable(true, 'record');
    sectionTakesLock(a);
    assert.deepEqual(lockdepReports(), []);
  });

  it('nests signalling sections with the cookie', () => {
    assert.equal(inSignallingSection(), false);
    const outer = dmaFenceBeginSignalling();
    assert.equal(outer, false);
    assert.equal(inSignallingSection(), true);
    const inner = dmaFenceBeginSignalling();
    assert.equal(inner, true);
    dmaFenceEndSignalling(inner);
    assert.equal(inSignallingSection(), true, 'inner end must not close the outer section');
    assert.deepEqual(lockdepHeldLocks(), ['dma_fence_map']);
    dmaFenceEndSignalling(outer);
    assert.equal(inSignallingSection(), false);
    assert.deepEqual(lockdepReports(), []);
    // A false cookie without a section is unbalanced.
    dmaFenceEndSignalling(false);
    const r = lockdepReports();
    assert.equal(r.length, 1);
    assert.equal(r[0]?.kind, 'unbalanced');
  });

  it('reports the seed ABBA deadlock within one thread (wait first)', () => {
    const a = new LockClass('mutexA');
    waitUnderLock(a);
    assert.deepEqual(lockdepReports(), []);
    sectionTakesLock(a);
    const r = lockdepReports();
    assert.equal(r.length, 1);
    assert.equal(r[0]?.kind, 'deadlock');
    assert.ok(r[0]?.message.includes(SEED_CYCLE), r[0]?.message);
    assert.deepEqual(r[0]?.locks, ['dma_fence_map', 'mutexA']);
    assert.equal(r[0]?.thread, 0);
    assert.equal(inSignallingSection(), false, 'state stays balanced after a report');
  });

  it('reports the seed ABBA deadlock within one thread (section first), throwing', () => {
    lockdepEnable(true, 'throw');
    const a = new LockClass('mutexA');
    sectionTakesLock(a);
    assert.throws(() => waitUnderLock(a), isDmaBufError('EDEADLK', SEED_CYCLE));
    assert.deepEqual(lockdepHeldLocks(), []);
    assert.deepEqual(lockdepReports(), [], 'throw mode does not record');
  });

  it('reports the seed deadlock spanning two worker threads', async () => {
    const one = await runWorker({ op: 'wait-under-lock', lock: 'mutexA' });
    const two = await runWorker({ op: 'section-takes-lock', lock: 'mutexA' });
    assert.notEqual(one.threadId, two.threadId);
    const all = [...one.reports, ...two.reports];
    assert.equal(all.length, 1, JSON.stringify(all));
    assert.deepEqual(one.reports, []);
    const r = two.reports[0];
    assert.equal(r?.kind, 'deadlock');
    assert.equal(r?.thread, two.threadId);
    assert.ok(r?.message.includes(SEED_CYCLE), r?.message);
    assert.deepEqual(lockdepReports(), [], 'the main thread saw nothing');
  });

  it('reports in the main thread an order recorded by a worker', async () => {
    const w = await runWorker({ op: 'section-takes-lock', lock: 'mutexA' });
    assert.deepEqual(w.reports, []);
    lockdepEnable(true, 'throw');
    assert.throws(
      () => waitUnderLock(new LockClass('mutexA')),
      isDmaBufError('EDEADLK', SEED_CYCLE),
    );
  });

  it('allows a bare wait inside a signalling section', () => {
    const cookie = dmaFenceBeginSignalling();
    dmaFenceMightWait();
    assert.equal(inSignallingSection(), true, 'the read hold is retaken after the wait');
    dmaFenceEndSignalling(cookie);
    // A lock held from before the section is not needed by this section's signalling.
    const b = new LockClass('outer-lock');
    lockAcquire(b);
    const c2 = dmaFenceBeginSignalling();
    dmaFenceMightWait();
    dmaFenceEndSignalling(c2);
    lockRelease(b);
    assert.deepEqual(lockdepReports(), []);
    assert.deepEqual(lockdepHeldLocks(), []);
  });

  it('reports a lock taken in a section and held across a wait in it', () => {
    const l = new LockClass('section-lock');
    const cookie = dmaFenceBeginSignalling();
    lockAcquire(l);
    dmaFenceMightWait();
    lockRelease(l);
    dmaFenceEndSignalling(cookie);
    const r = lockdepReports();
    assert.equal(r.length, 1);
    assert.equal(r[0]?.kind, 'deadlock');
    assert.ok(
      r[0]?.message.includes(
        'dma_fence_map (read, signalling section) -> section-lock -> dma_fence_map (write, wait)',
      ),
      r[0]?.message,
    );
    assert.deepEqual(lockdepHeldLocks(), []);
  });

  it('reports a blocking wait inside withNoSleep only', () => {
    mightSleep('outside');
    const cookie = dmaFenceBeginSignalling();
    mightSleep('in a section');
    dmaFenceEndSignalling(cookie);
    assert.deepEqual(lockdepReports(), []);
    const v = withNoSleep('fence callback', () => {
      mightSleep('Atomics.wait on a fence');
      return 7;
    });
    assert.equal(v, 7);
    mightSleep('after the region');
    const r = lockdepReports();
    assert.equal(r.length, 1);
    assert.equal(r[0]?.kind, 'might-sleep');
    assert.ok(r[0]?.message.includes('fence callback'), r[0]?.message);
    assert.ok(r[0]?.message.includes('Atomics.wait on a fence'), r[0]?.message);

    lockdepEnable(true, 'throw');
    assert.throws(
      () => withNoSleep('cb', () => mightSleep('x')),
      isDmaBufError('EDEADLK', 'must not sleep'),
    );
    mightSleep('region ended even though fn threw');
  });

  it('treats atomic lock classes and no-sleep regions as atomic context', () => {
    const spin = new LockClass('spin', { atomic: true });
    lockAcquire(spin);
    mightSleep('under spin');
    assert.equal(dmaFenceBeginSignalling(), true, 'sections are no-ops in atomic context');
    assert.equal(inSignallingSection(), false);
    lockRelease(spin);
    withNoSleep('cb', () => assert.equal(dmaFenceBeginSignalling(), true));
    const r = lockdepReports();
    assert.equal(r.length, 1);
    assert.equal(r[0]?.kind, 'might-sleep');
    assert.deepEqual(r[0]?.locks, ['spin']);
  });

  it('reports an unbalanced release', () => {
    const l = new LockClass('never-taken');
    lockRelease(l);
    const r = lockdepReports();
    assert.equal(r.length, 1);
    assert.equal(r[0]?.kind, 'unbalanced');
    assert.ok(r[0]?.message.includes('never-taken'));
    lockdepEnable(true, 'throw');
    assert.throws(() => lockRelease(l), isDmaBufError('EINVAL', 'never-taken'));
    // Out-of-order release of held locks is fine.
    const a = new LockClass('ooo-a');
    const b = new LockClass('ooo-b');
    lockAcquire(a);
    lockAcquire(b);
    lockRelease(a);
    lockRelease(b);
    assert.deepEqual(lockdepHeldLocks(), []);
  });

  it('reports a plain ABBA between two mutexes and recursive locking', () => {
    const a = new LockClass('abba-a');
    const b = new LockClass('abba-b');
    lockAcquire(a);
    lockAcquire(b);
    lockRelease(b);
    lockRelease(a);
    lockAcquire(b);
    lockAcquire(a);
    lockRelease(a);
    lockRelease(b);
    lockAcquire(a);
    lockAcquire(new LockClass('abba-a')); // same name: same class
    const r = lockdepReports();
    assert.equal(r.length, 2);
    assert.equal(r[0]?.kind, 'deadlock');
    assert.ok(r[0]?.message.includes('abba-b -> abba-a -> abba-b'), r[0]?.message);
    assert.ok(r[1]?.message.includes('recursive locking'), r[1]?.message);
  });

  it('follows lockdep read-lock rules: recursive readers do not close a cycle', () => {
    const x = new LockClass('rw-x');
    const y = new LockClass('rw-y');
    // x held as recursive reader -> y ; y -> x as recursive reader: readers of x do not block
    // each other, so this is not a deadlock.
    lockAcquire(x, { read: 'recursive' });
    lockAcquire(y);
    lockRelease(y);
    lockRelease(x);
    lockAcquire(y);
    lockAcquire(x, { read: 'recursive' });
    lockRelease(x);
    lockRelease(y);
    assert.deepEqual(lockdepReports(), []);
    // The same with a non-recursive reader (like the signalling annotation) is reported.
    const p = new LockClass('rw-p');
    const q = new LockClass('rw-q');
    lockAcquire(p, { read: true });
    lockAcquire(q);
    lockRelease(q);
    lockRelease(p);
    lockAcquire(q);
    lockAcquire(p, { read: true });
    lockRelease(p);
    lockRelease(q);
    const r = lockdepReports();
    assert.equal(r.length, 1);
    assert.ok(r[0]?.message.includes('rw-q -> rw-p (read) -> rw-q'), r[0]?.message);
  });

  it('does not record dependencies for trylocks', () => {
    const a = new LockClass('try-a');
    const b = new LockClass('try-b');
    lockAcquire(a);
    lockAcquire(b, { trylock: true });
    lockRelease(b);
    lockRelease(a);
    lockAcquire(b);
    lockAcquire(a);
    lockRelease(a);
    lockRelease(b);
    assert.deepEqual(lockdepReports(), []);
  });

  it('gives LockClass the same id in every thread', async () => {
    const names = ['ids-one', 'ids-two', 'ids-three'];
    // The worker registers in reverse order; ids must still agree.
    const w = await runWorker({ op: 'ids', names: [...names].reverse() });
    for (const n of names) assert.equal(w.ids[n], new LockClass(n).id, n);
    assert.equal(new LockClass('dma_fence_map').id, dmaFenceMap.id);
    const fresh = new Set(names.map((n) => new LockClass(n).id));
    assert.equal(fresh.size, names.length);
  });

  it('attaches a worker to a state handed over by message', async () => {
    const sab = lockdepShareState();
    assert.ok(sab instanceof SharedArrayBuffer);
    lockdepAttachState(sab); // re-attaching the same state is harmless
    const w = await runWorker({ op: 'ids', names: ['attach-x'], attach: sab });
    assert.equal(w.ids['attach-x'], new LockClass('attach-x').id);
    assert.throws(() => lockdepAttachState(new SharedArrayBuffer(16)), isDmaBufError('EINVAL'));
  });

  it('validates class names and modes', () => {
    assert.throws(() => new LockClass(''), isDmaBufError('EINVAL'));
    assert.throws(() => new LockClass('x'.repeat(200)), isDmaBufError('EINVAL'));
    assert.throws(() => lockdepEnable(true, 'loud' as 'throw'), isDmaBufError('EINVAL'));
  });
});
