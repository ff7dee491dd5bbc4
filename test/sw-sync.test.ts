// sw_sync timelines: the kernel's rules (sync.md §2), the observed 6.1 results, ports of the
// kernel selftests tools/testing/selftests/sync/ (sync_alloc, sync_fence, sync_merge, sync_wait,
// sync_stress_*) and of IGT's tests/sw_sync.c, in our own words, with worker threads standing
// in for the threads and forked processes.
import assert from 'node:assert/strict';
import { afterEach, before, beforeEach, describe, it } from 'node:test';
import { DmaFence } from '../src/dma-fence.js';
import { SW_SYNC_DRIVER_NAME, SwSyncTimeline } from '../src/sw-sync.js';
import { SyncFile } from '../src/sync-file.js';
import {
  assertNoLeak,
  baseline,
  errno,
  live,
  sleep,
  withSyncAgents,
} from './workers/sync-client.js';

let start = 0;
before(() => {
  baseline();
});
beforeEach(() => {
  start = live();
});
afterEach(async () => {
  await assertNoLeak(start);
});

const ACTIVE = 0;
const SIGNALED = 1;

/** libsync's sync_fence_count_status: entries of the file with this status. */
function countStatus(file: SyncFile, status: number): number {
  return file.info().fences.filter((e) => e.status === status).length;
}

/** libsync's sync_wait with timeout 0: true when signalled. */
function done(file: SyncFile): boolean {
  return file.waitSync({ timeout: 0 });
}

describe('timeline', () => {
  it('starts at value 0 with a fresh context and its name', () => {
    using a = new SwSyncTimeline('a');
    using b = new SwSyncTimeline('b');
    assert.equal(a.value, 0);
    assert.equal(a.name, 'a');
    assert.equal(b.context, a.context + 1n);
    assert.ok(a.context > 0n);
  });

  it('names itself after the process by default, and cuts names to 31 bytes', () => {
    using a = new SwSyncTimeline();
    assert.equal(a.name, process.title.slice(0, 15));
    using b = new SwSyncTimeline('n'.repeat(40));
    assert.equal(b.name, 'n'.repeat(31));
    assert.throws(() => new SwSyncTimeline(3 as unknown as string), errno('EINVAL'));
  });

  it('points are sw_sync fences on the timeline context with the value as seqno', () => {
    using tl = new SwSyncTimeline('app');
    using f = tl.createFence(3);
    using g = f.getFence();
    assert.equal(g.context, tl.context);
    assert.equal(g.seqno, 3n);
    assert.equal(g.driverName, SW_SYNC_DRIVER_NAME);
    assert.equal(g.timelineName, 'app');
    assert.equal(f.name, `sw_sync-app${tl.context}-3`);
  });

  it('rejects bad values and increments with EINVAL, a disposed timeline with EBADF', () => {
    const tl = new SwSyncTimeline();
    for (const v of [-1, 2 ** 32, 1.5, Number.NaN, '1']) {
      assert.throws(() => tl.createFence(v as number), errno('EINVAL'), String(v));
      assert.throws(() => tl.inc(v as number), errno('EINVAL'), String(v));
    }
    tl.dispose();
    // IGT alloc_fence_invalid_timeline
    assert.throws(() => tl.createFence(0), errno('EBADF'));
    assert.throws(() => tl.inc(1), errno('EBADF'));
  });
});

describe('signalling rules', () => {
  it('a value already reached is signalled at creation (6.1 observed created_already_passed)', () => {
    using tl = new SwSyncTimeline();
    using zero = tl.createFence(0);
    assert.equal(zero.status(), 1);
    tl.inc(1);
    using one = tl.createFence(1);
    const info = one.info();
    assert.equal(info.status, 1);
    assert.ok(info.fences[0]!.timestampNs > 0n);
    assert.deepEqual(tl.pendingPoints(), [], 'never listed');
  });

  it('signals every reached point in ascending order, whatever the creation order', () => {
    using tl = new SwSyncTimeline();
    const order: number[] = [];
    const files = [5, 3, 9, 1, 4].map((v) => tl.createFence(v));
    const fences = files.map((f) => f.getFence());
    for (const f of fences) f.addCallback((x) => order.push(Number(x.seqno)));
    assert.deepEqual(tl.pendingPoints(), [1, 3, 4, 5, 9]);
    tl.inc(4);
    assert.deepEqual(order, [1, 3, 4]);
    assert.deepEqual(tl.pendingPoints(), [5, 9]);
    tl.inc(10);
    assert.deepEqual(order, [1, 3, 4, 5, 9]);
    for (const x of [...files, ...fences]) x.dispose();
  });

  it('the same pending value gives the same fence, so merges collapse it', () => {
    using tl = new SwSyncTimeline();
    using a = tl.createFence(2);
    using b = tl.createFence(2, 'ignored name');
    using fa = a.getFence();
    using fb = b.getFence();
    assert.equal(fa._slot, fb._slot);
    using m = a.merge(b, 'm22dup');
    assert.equal(m.info().numFences, 1);
    assert.deepEqual(tl.pendingPoints(), [2]);
  });

  it('inc(0) only re-checks; values wrap as an int32', () => {
    using tl = new SwSyncTimeline();
    tl.inc(0);
    assert.equal(tl.value, 0);
    tl.inc(0x7fffffff);
    assert.equal(tl.value, 0x7fffffff);
    tl.inc(1);
    assert.equal(tl.value, -0x80000000);
  });

  it('a point more than 2^31 ahead counts as reached and signals at creation', () => {
    using tl = new SwSyncTimeline();
    using near = tl.createFence(0x7fffffff);
    using far = tl.createFence(0x80000000);
    using farther = tl.createFence(0x80000001);
    assert.equal(near.status(), 0);
    assert.equal(far.status(), 1, 'exactly 2^31 ahead is not later');
    assert.equal(farther.status(), 1);
  });

  it('applies increments above INT_MAX in INT_MAX steps (6.1 observed inc_0x80000000)', () => {
    using tl = new SwSyncTimeline();
    tl.inc(2);
    using f10 = tl.createFence(10);
    tl.inc(0x80000000);
    assert.equal(f10.status(), 1);
    assert.equal(tl.value, (2 + 0x80000000) | 0);
    // One step of 2^32 - 1 would move the value back by one and signal nothing; in steps, the
    // first one passes both points.
    using t2 = new SwSyncTimeline();
    using a = t2.createFence(100);
    using b = t2.createFence(0x7fff0000);
    t2.inc(0xffffffff);
    assert.equal(a.status(), 1);
    assert.equal(b.status(), 1);
    assert.equal(t2.value, -1);
  });

  it('a callback run by inc may create points and increment again: order still holds', () => {
    using tl = new SwSyncTimeline();
    const seen: number[] = [];
    using f1 = tl.createFence(1);
    using f3 = tl.createFence(3);
    const nested: SyncFile[] = [];
    using g1 = f1.getFence();
    using g3 = f3.getFence();
    g1.addCallback(() => {
      seen.push(1);
      nested.push(tl.createFence(2));
      tl.inc(1); // reaches 2 from inside the signalling of 1
    });
    g3.addCallback(() => seen.push(3));
    tl.inc(1);
    assert.equal(tl.value, 2);
    assert.equal(nested[0]!.status(), 1);
    assert.deepEqual(seen, [1]);
    tl.inc(1);
    assert.deepEqual(seen, [1, 3]);
    for (const n of nested) n.dispose();
  });
});

describe('timeline release', () => {
  it('pending points fail with -ENOENT, in ascending order (6.1 observed status -2)', () => {
    const tl = new SwSyncTimeline('dmabuf_probe');
    const files = [3, 1, 2].map((v) => tl.createFence(v));
    const fences = files.map((f) => f.getFence());
    const seen: [number, number][] = [];
    for (const f of fences) f.addCallback((x) => seen.push([Number(x.seqno), x.getStatus()]));
    tl.dispose();
    assert.deepEqual(seen, [
      [1, -2],
      [2, -2],
      [3, -2],
    ]);
    const info = files[1]!.info();
    assert.equal(info.name, `sw_sync-dmabuf_probe${fences[1]!.context}-1`);
    assert.equal(info.status, -2);
    assert.ok(info.fences[0]!.timestampNs > 0n);
    for (const x of [...files, ...fences]) x.dispose();
  });

  it('IGT timeline_closed / timeline_closed_signaled', () => {
    const tl = new SwSyncTimeline();
    using f = tl.createFence(1);
    tl.close();
    assert.equal(done(f), true, 'waiting on it succeeds');
    assert.equal(f.status(), -2);
    const t2 = new SwSyncTimeline();
    using g = t2.createFence(1);
    t2.inc(1);
    t2.close();
    assert.equal(done(g), true);
    assert.equal(g.status(), 1);
  });

  it('the timeline goes away with its last handle only', () => {
    const tl = new SwSyncTimeline();
    const dup = tl.get();
    using f = tl.createFence(1);
    tl.dispose();
    assert.equal(f.status(), 0, 'another handle keeps it open');
    dup.inc(1);
    assert.equal(f.status(), 1);
    dup.dispose();
  });

  it('a fence outlives its timeline', () => {
    const tl = new SwSyncTimeline();
    const f = tl.createFence(0);
    tl.dispose();
    assert.equal(f.status(), 1);
    f.dispose();
  });

  it('disposing the last handle from a callback run by inc is safe', () => {
    const tl = new SwSyncTimeline();
    using a = tl.createFence(1);
    using b = tl.createFence(5);
    using ga = a.getFence();
    ga.addCallback(() => tl.dispose());
    tl.inc(1);
    assert.equal(b.status(), -2, 'released after the inc: pending points failed');
  });
});

describe('deadline (SW_SYNC_GET_DEADLINE)', () => {
  it('ENOENT before any deadline; then the earliest one', () => {
    using tl = new SwSyncTimeline();
    using f = tl.createFence(1);
    assert.throws(() => tl.getDeadline(f), errno('ENOENT'));
    f.setDeadline(5000n);
    f.setDeadline(9000n);
    f.setDeadline(3000n);
    assert.equal(tl.getDeadline(f), 3000n);
  });

  it('EINVAL for a non-zero pad, something not a sync file, or a fence not of sw_sync', () => {
    using tl = new SwSyncTimeline();
    using t2 = new SwSyncTimeline();
    using a = tl.createFence(1);
    using b = t2.createFence(1);
    assert.throws(() => tl.getDeadline(a, 1), errno('EINVAL'));
    assert.throws(() => tl.getDeadline(null), errno('EINVAL'));
    using m = a.merge(b);
    m.setDeadline(1n);
    assert.throws(
      () => tl.getDeadline(m),
      errno('EINVAL'),
      'a merged array is not a sw_sync point',
    );
    using other = new DmaFence(DmaFence.contextAlloc(1), 1n);
    using of = SyncFile.create(other);
    assert.throws(() => tl.getDeadline(of), errno('EINVAL'));
    assert.equal(tl.getDeadline(b), 1n, 'any sw_sync point will do, as in the kernel');
  });
});

describe('selftests/sync ports', () => {
  it('sync_alloc: timeline, fence, and a fence on a bad timeline', () => {
    const tl = new SwSyncTimeline();
    const f = tl.createFence(1);
    f.dispose();
    tl.dispose();
    assert.throws(() => tl.createFence(1), errno('EBADF'));
  });

  it('sync_fence one_timeline_wait: signals exactly when the value reaches it', () => {
    using tl = new SwSyncTimeline();
    using valid = tl.createFence(5);
    assert.equal(done(valid), false);
    tl.inc(1);
    assert.equal(done(valid), false);
    tl.inc(3);
    assert.equal(done(valid), false);
    tl.inc(1);
    assert.equal(done(valid), true);
    tl.inc(1);
    assert.equal(done(valid), true, 'stays signalled');
  });

  it('sync_fence one_timeline_merge: merging points of one timeline keeps the last', () => {
    using tl = new SwSyncTimeline();
    using a = tl.createFence(1);
    using b = tl.createFence(2);
    using c = tl.createFence(3);
    using ab = a.merge(b, 'ab');
    using d = c.merge(ab, 'd');
    for (const x of [a, b, c, d]) assert.equal(countStatus(x, ACTIVE), 1);
    tl.inc(1);
    assert.equal(countStatus(a, SIGNALED), 1);
    assert.equal(countStatus(d, ACTIVE), 1);
    tl.inc(1);
    assert.equal(countStatus(b, SIGNALED), 1);
    assert.equal(countStatus(d, ACTIVE), 1);
    tl.inc(1);
    assert.equal(countStatus(c, SIGNALED), 1);
    assert.equal(countStatus(d, SIGNALED), 1);
    assert.equal(countStatus(d, ACTIVE), 0);
  });

  it('sync_merge merge_same_fence', () => {
    using tl = new SwSyncTimeline();
    using f = tl.createFence(5);
    using m = f.merge(f);
    assert.equal(countStatus(m, ACTIVE), 1);
    tl.inc(5);
    assert.equal(countStatus(m, SIGNALED), 1);
  });

  it('sync_wait multi_timeline_wait: a merge of three timelines', () => {
    const tls = [new SwSyncTimeline(), new SwSyncTimeline(), new SwSyncTimeline()];
    const fs = tls.map((t) => t.createFence(5));
    using ab = fs[0]!.merge(fs[1]!);
    using m = fs[2]!.merge(ab);
    assert.equal(countStatus(m, ACTIVE), 3);
    assert.equal(done(m), false);
    tls[0]!.inc(5);
    assert.deepEqual([countStatus(m, ACTIVE), countStatus(m, SIGNALED)], [2, 1]);
    tls[1]!.inc(5);
    assert.deepEqual([countStatus(m, ACTIVE), countStatus(m, SIGNALED)], [1, 2]);
    tls[2]!.inc(5);
    assert.deepEqual([countStatus(m, ACTIVE), countStatus(m, SIGNALED)], [0, 3]);
    assert.equal(m.waitSync({ timeout: 100 }), true);
    for (const x of [...fs, ...tls]) x.dispose();
  });

  it('sync_stress_merge: random merges never hold more fences than timelines', () => {
    const ntl = 8;
    const tls = Array.from({ length: ntl }, () => new SwSyncTimeline());
    let seed = 7;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    let merged = tls[0]!.createFence(1);
    const maxOn = new Array<number>(ntl).fill(1);
    for (let i = 0; i < 200; i++) {
      const t = rand(ntl);
      const v = 1 + rand(50);
      maxOn[t] = Math.max(maxOn[t]!, v);
      using f = tls[t]!.createFence(v);
      const next = merged.merge(f);
      merged.dispose();
      merged = next;
      assert.ok(merged.info().numFences <= ntl);
    }
    // Reaching every timeline's highest point signals the merge; not one less.
    for (let t = 0; t < ntl; t++) tls[t]!.inc(maxOn[t]! - (t === 0 ? 1 : 0));
    assert.equal(done(merged), false);
    tls[0]!.inc(1);
    assert.equal(done(merged), true);
    merged.dispose();
    for (const t of tls) t.dispose();
  });
});

describe('IGT sw_sync ports', () => {
  it('alloc_fence, alloc_merge_fence', () => {
    using t0 = new SwSyncTimeline();
    using t1 = new SwSyncTimeline();
    using a = t0.createFence(1);
    using b = t1.createFence(1);
    using m = b.merge(a);
    assert.equal(m.info().numFences, 2);
  });

  it('sync_busy: waits time out until the value reaches the point; prime increments', () => {
    using tl = new SwSyncTimeline();
    using f = tl.createFence(5);
    assert.equal(f.waitSync({ timeout: 0 }), false);
    tl.inc(1);
    assert.equal(f.waitSync({ timeout: 0 }), false);
    tl.inc(4);
    assert.equal(f.waitSync({ timeout: 0 }), true);
    tl.inc(5);
    assert.equal(f.waitSync({ timeout: 0 }), true);
    let seqno = 10;
    for (const prime of [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61]) {
      seqno += prime;
      using fp = tl.createFence(seqno);
      tl.inc(prime);
      assert.equal(fp.waitSync({ timeout: 0 }), true);
    }
  });

  it('sync_merge_invalid: merging with something not a sync file fails', () => {
    using tl = new SwSyncTimeline();
    using f = tl.createFence(1);
    assert.throws(() => f.merge(-1), errno('ENOENT'));
    assert.throws(() => f.merge(tl), errno('ENOENT'), 'a timeline is not a sync file');
  });

  it('sync_merge and sync_merge_same', () => {
    using tl = new SwSyncTimeline();
    const fs = [1, 2, 3].map((v) => tl.createFence(v));
    using m01 = fs[0]!.merge(fs[1]!);
    using m = fs[2]!.merge(m01);
    for (const x of [...fs, m]) assert.equal(countStatus(x, ACTIVE), 1);
    for (let i = 0; i < 3; i++) {
      tl.inc(1);
      assert.equal(countStatus(fs[i]!, SIGNALED), 1);
      assert.equal(countStatus(m, i < 2 ? ACTIVE : SIGNALED), 1);
    }
    using same = fs[0]!.merge(fs[0]!);
    assert.equal(countStatus(same, SIGNALED), 1);
    for (const x of fs) x.dispose();
  });

  it('sync_expired_merge: merging signalled fences gives a signalled fence', () => {
    using tl = new SwSyncTimeline();
    using a = tl.createFence(1);
    using b = tl.createFence(2);
    tl.inc(2);
    using m = a.merge(b);
    assert.equal(done(m), true);
    assert.equal(m.info().numFences, 1);
  });

  it('sync_busy_fork(_unixsocket): another thread advances the timeline it was handed', async () => {
    await withSyncAgents(1, async ([w]) => {
      using tl = new SwSyncTimeline();
      using f = tl.createFence(1);
      assert.equal(done(f), false);
      await w!.call('import.timeline', { name: 'tl', msg: tl.share() });
      const inc = w!.call('timeline.inc', { name: 'tl', n: 1, delayMs: 20 });
      assert.equal(await f.wait({ timeout: 2000 }), true);
      await inc;
      assert.equal(tl.value, 1, 'the same timeline');
      await w!.call('dispose', { name: 'tl' });
    });
  });

  it('sync_multi_consumer: consumers wait in workers, the producer advances here', async () => {
    const threads = 3;
    const iters = 150;
    await withSyncAgents(threads, async (ws) => {
      using tl = new SwSyncTimeline();
      const sab = new SharedArrayBuffer(8);
      const shared = new Int32Array(sab);
      for (const w of ws) await w.call('import.timeline', { name: 'tl', msg: tl.share() });
      const results = ws.map((w, index) =>
        w.call<number>('consumer', { timeline: 'tl', threads, index, iters, sab }),
      );
      for (let i = 0; i < threads * iters; i++) {
        // sem_wait: a consumer saw its point.
        for (;;) {
          const v = Atomics.load(shared, 1);
          if (v > 0 && Atomics.compareExchange(shared, 1, v, v - 1) === v) break;
          Atomics.wait(shared, 1, v, 5000);
        }
        Atomics.add(shared, 0, 1);
        tl.inc(1);
      }
      assert.deepEqual(await Promise.all(results), [0, 0, 0]);
      assert.equal(Atomics.load(shared, 0), threads * iters);
      for (const w of ws) await w.call('dispose', { name: 'tl' });
    });
  });

  it('sync_multi_consumer_producer / sync_stress_parallelism: threads take turns', async () => {
    const threads = 3;
    const iters = 150;
    await withSyncAgents(threads, async (ws) => {
      using tl = new SwSyncTimeline();
      const sab = new SharedArrayBuffer(8);
      for (const w of ws) await w.call('import.timeline', { name: 'tl', msg: tl.share() });
      const results = await Promise.all(
        ws.map((w, index) =>
          w.call<number>('consumerProducer', { timeline: 'tl', threads, index, iters, sab }),
        ),
      );
      assert.deepEqual(results, [0, 0, 0]);
      assert.equal(tl.value, threads * iters);
      for (const w of ws) await w.call('dispose', { name: 'tl' });
    });
  });
});

describe('threads', () => {
  it('a timeline advanced in one worker wakes waiters in the others and here', async () => {
    await withSyncAgents(3, async ([a, b, c]) => {
      using tl = new SwSyncTimeline('x');
      for (const w of [a!, b!, c!])
        await w.call('import.timeline', { name: 'tl', msg: tl.share() });
      await a!.call('timeline.createFence', { name: 'tl', value: 2, as: 'f' });
      await b!.call('timeline.createFence', { name: 'tl', value: 3, as: 'f' });
      using mine = tl.createFence(3);
      const wa = a!.call<{ ok: boolean; status: number }>('file.wait', {
        name: 'f',
        timeout: 5000,
        sync: true,
      });
      const wb = b!.call<{ ok: boolean; status: number }>('file.wait', {
        name: 'f',
        timeout: 5000,
      });
      await sleep(10);
      await c!.call('timeline.inc', { name: 'tl', n: 2 });
      assert.deepEqual(await wa, { ok: true, status: 1 });
      assert.equal(mine.status(), 0);
      await c!.call('timeline.inc', { name: 'tl', n: 1 });
      assert.deepEqual(await wb, { ok: true, status: 1 });
      await mine.ready;
      assert.equal(tl.value, 3);
      for (const w of [a!, b!, c!]) await w.call('dispose', { name: 'tl' });
    });
  });

  it('the same pending value created in two threads is one fence', async () => {
    await withSyncAgents(1, async ([w]) => {
      using tl = new SwSyncTimeline();
      await w!.call('import.timeline', { name: 'tl', msg: tl.share() });
      using here = tl.createFence(7);
      const msg = await w!.call<never>('timeline.createFence', { name: 'tl', value: 7 });
      using there = SyncFile.import(msg);
      using a = here.getFence();
      using b = there.getFence();
      assert.equal(a._slot, b._slot);
      await w!.call('dispose', { name: 'tl' });
    });
  });

  it('releasing the last handle in a worker fails the points waited on here', async () => {
    await withSyncAgents(1, async ([w]) => {
      const tl = new SwSyncTimeline();
      using f = tl.createFence(4);
      await w!.call('import.timeline', { name: 'tl', msg: tl.share() });
      tl.dispose();
      const waited = f.wait({ timeout: 5000 });
      await w!.call('dispose', { name: 'tl' });
      assert.equal(await waited, true);
      assert.equal(f.status(), -2);
    });
  });
});
