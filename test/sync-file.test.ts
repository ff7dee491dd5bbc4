// sync_file: creation, names, merge (the kernel's one-fence-per-context rule), info (count-only,
// too-small and full requests, the header-status rule), poll readiness, waits, deadlines, and
// sharing with another thread. Observed 6.1 results are quoted from kernel-6.1-observed.md.
import assert from 'node:assert/strict';
import { afterEach, before, beforeEach, describe, it } from 'node:test';
import { DmaFence } from '../src/dma-fence.js';
import { DmaFenceArray } from '../src/dma-fence-array.js';
import { DmaFenceChain } from '../src/dma-fence-chain.js';
import { SwSyncTimeline } from '../src/sw-sync.js';
import { POLLIN, SyncFile } from '../src/sync-file.js';
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

/** A fence with given driver/timeline names on a fresh context. */
function named(seqno: bigint, driver = 'drv', timeline = 'tl', ctx?: bigint): DmaFence {
  return new DmaFence(ctx ?? DmaFence.contextAlloc(1), seqno, {
    driverName: driver,
    timelineName: timeline,
  });
}

describe('create and names', () => {
  it('holds its own fence reference: the caller may drop its handle', () => {
    const f = named(3n);
    const ctx = f.context;
    const file = SyncFile.create(f);
    f.dispose();
    using g = file.getFence();
    assert.equal(g.context, ctx);
    assert.equal(g.seqno, 3n);
    file.dispose();
  });

  it('derives the name as <driver>-<timeline><context>-<seqno>', () => {
    using f = named(7n, 'mydrv', 'ring');
    using file = SyncFile.create(f);
    assert.equal(file.name, `mydrv-ring${f.context}-7`);
  });

  it('keeps the real names after the fence signalled (6.1 observed: sw_sync-dmabuf_probe1-1)', () => {
    using f = named(1n, 'sw_sync', 'dmabuf_probe');
    using file = SyncFile.create(f);
    f.signal();
    assert.equal(file.name, `sw_sync-dmabuf_probe${f.context}-1`);
    const info = file.info();
    assert.equal(info.fences[0]?.driverName, 'sw_sync');
    assert.equal(info.fences[0]?.objName, 'dmabuf_probe');
  });

  it('prints the seqno as a signed 64-bit number', () => {
    using f = named((1n << 64n) - 1n);
    using file = SyncFile.create(f);
    assert.ok(file.name.endsWith('--1'), file.name);
  });

  it('names a stub fence stub-stub0-0 (6.1 observed for idle exports)', () => {
    using stub = DmaFence.getStub();
    using file = SyncFile.create(stub);
    const info = file.info();
    assert.equal(info.name, 'stub-stub0-0');
    assert.equal(info.status, 1);
    assert.deepEqual(
      info.fences.map((e) => [e.objName, e.driverName, e.status, e.timestampNs > 0n]),
      [['stub', 'stub', 1, true]],
    );
  });

  it('rejects what is not a fence handle with EINVAL and stale handles with EBADF', () => {
    assert.throws(() => SyncFile.create({} as DmaFence), errno('EINVAL'));
    const f = named(1n);
    f.dispose();
    assert.throws(() => SyncFile.create(f), errno('EBADF'));
    assert.throws(
      () => new (SyncFile as unknown as new () => SyncFile)(),
      errno('EINVAL'),
      'the constructor is internal',
    );
  });

  it('gives EBADF on every use of a disposed handle; dispose is idempotent', () => {
    using f = named(1n);
    const file = SyncFile.create(f);
    file.dispose();
    file.dispose();
    assert.throws(() => file.name, errno('EBADF'));
    assert.throws(() => file.info(), errno('EBADF'));
    assert.throws(() => file.getFence(), errno('EBADF'));
    assert.throws(() => file.poll(), errno('EBADF'));
    assert.throws(() => file.ready, errno('EBADF'));
    assert.throws(() => file.merge(file), errno('EBADF'));
  });

  it('get() is a second handle on the same sync file (dup)', () => {
    using f = named(1n);
    const a = SyncFile.create(f);
    const b = a.get();
    a.dispose();
    assert.equal(b.name, `drv-tl${f.context}-1`);
    b.dispose();
  });
});

describe('merge', () => {
  it('keeps one fence per context, the later one (6.1 observed m12 / m22dup)', () => {
    const ctx = DmaFence.contextAlloc(1);
    using f1 = named(1n, 'sw_sync', 'p', ctx);
    using f2 = named(2n, 'sw_sync', 'p', ctx);
    using a = SyncFile.create(f1);
    using b = SyncFile.create(f2);
    using m = a.merge(b, 'm12');
    const info = m.info();
    assert.equal(info.name, 'm12');
    assert.equal(info.numFences, 1);
    using g = m.getFence();
    assert.equal(g._slot, f2._slot, 'a single pending survivor is the fence itself');
    using m2 = b.merge(a, 'm21');
    using g2 = m2.getFence();
    assert.equal(g2._slot, f2._slot, 'the order of the inputs does not matter');
  });

  it('merging a file with itself gives the same single fence (6.1 observed m11)', () => {
    using f = named(1n);
    using a = SyncFile.create(f);
    using m = a.merge(a, 'm11');
    assert.equal(m.info().numFences, 1);
    using g = m.getFence();
    assert.equal(g._slot, f._slot);
  });

  it('merges two timelines into an array sorted by context (6.1 observed mx)', () => {
    using hi = named(1n, 'd', 'hi');
    using lo = named(1n, 'd', 'lo');
    // `lo` has the higher context (allocated later): the array puts `hi` first.
    using a = SyncFile.create(lo);
    using b = SyncFile.create(hi);
    using m = a.merge(b, 'mx');
    const info = m.info();
    assert.equal(info.numFences, 2);
    assert.deepEqual(
      info.fences.map((e) => e.objName),
      ['hi', 'lo'],
    );
    using g = m.getFence();
    assert.ok(DmaFenceArray.isArray(g));
    assert.notEqual(g.context, hi.context);
    assert.notEqual(g.context, lo.context);
    assert.equal(g.seqno, 1n);
  });

  it('drops signalled fences, errors included; all signalled gives a fresh stub with status 1', () => {
    using ok = named(1n);
    using bad = named(1n);
    bad.setError(-5);
    ok.signal();
    bad.signal();
    using a = SyncFile.create(ok);
    using b = SyncFile.create(bad);
    assert.equal(b.status(), -5);
    using m = a.merge(b, '');
    const info = m.info();
    assert.equal(info.status, 1, 'the error is lost');
    assert.equal(info.name, 'stub-stub0-0', 'an empty name is derived from the fence');
    assert.equal(info.numFences, 1);
    using g = m.getFence();
    assert.equal(g.context, 0n);
    const ts = g.timestamp!;
    assert.ok(ts === ok.timestamp || ts === bad.timestamp, 'a timestamp of the inputs');
    assert.ok(ts >= ok.timestamp! && ts >= bad.timestamp!, 'the latest one');
    using stub = DmaFence.getStub();
    assert.notEqual(g._slot, stub._slot, 'a private stub, not the global one');
  });

  it('keeps the pending survivor when merged with a signalled fence (6.1 observed ms)', () => {
    using done = named(1n);
    using pending = named(1n);
    done.signal();
    using fd = SyncFile.create(done);
    using fp = SyncFile.create(pending);
    using m = SyncFile.merge(fd, fp, 'ms');
    assert.equal(m.info().numFences, 1);
    using g = m.getFence();
    assert.equal(g._slot, pending._slot);
  });

  it('flattens arrays and chains from earlier merges', () => {
    const ctxs = [DmaFence.contextAlloc(1), DmaFence.contextAlloc(1), DmaFence.contextAlloc(1)];
    const fs = ctxs.map((c) => named(1n, 'd', 't', c));
    const files = fs.map((f) => SyncFile.create(f));
    using ab = files[0]!.merge(files[1]!);
    using abc = ab.merge(files[2]!);
    assert.equal(abc.info().numFences, 3);
    using g = abc.getFence();
    assert.ok(DmaFenceArray.isArray(g));
    for (const m of (g as DmaFenceArray).fences()) {
      assert.ok(!DmaFenceArray.isArray(m), 'no nesting');
      m.dispose();
    }
    for (const x of [...fs, ...files]) x.dispose();
  });

  it('checks flags and pad (EINVAL) before the second file (ENOENT), and the name type', () => {
    using f = named(1n);
    using a = SyncFile.create(f);
    assert.throws(() => a.merge(a, 'x', { flags: 1 }), errno('EINVAL'));
    assert.throws(() => a.merge(a, 'x', { pad: 1 }), errno('EINVAL'));
    assert.throws(() => a.merge(null, 'x', { flags: 1 }), errno('EINVAL'));
    assert.throws(() => a.merge(null), errno('ENOENT'));
    assert.throws(() => a.merge(-1), errno('ENOENT'));
    assert.throws(() => a.merge(f), errno('ENOENT'), 'a fence is not a sync file');
    assert.throws(() => a.merge(a, 3 as unknown as string), errno('EINVAL'));
  });

  it('cuts the merge name to 31 bytes without splitting a character', () => {
    using f = named(1n);
    using a = SyncFile.create(f);
    using m = a.merge(a, 'x'.repeat(40));
    assert.equal(m.name, 'x'.repeat(31));
    using u = a.merge(a, `${'x'.repeat(30)}é`);
    assert.equal(u.name, 'x'.repeat(30));
  });

  it('leaves both inputs unchanged', () => {
    using f1 = named(1n);
    using f2 = named(1n);
    using a = SyncFile.create(f1);
    using b = SyncFile.create(f2);
    const before = [a.name, b.name];
    using m = a.merge(b, 'm');
    assert.equal(m.info().numFences, 2);
    assert.deepEqual([a.name, b.name], before);
    assert.equal(a.info().numFences, 1);
  });
});

describe('info', () => {
  it('checks flags and pad first (EINVAL)', () => {
    using f = named(1n);
    using file = SyncFile.create(f);
    assert.throws(() => file.info({ flags: 1 }), errno('EINVAL'));
    assert.throws(() => file.info({ pad: 2 }), errno('EINVAL'));
    assert.throws(() => file.info({ numFences: -1 }), errno('EINVAL'));
    assert.throws(() => file.info({ numFences: 1.5 }), errno('EINVAL'));
  });

  it('count-only request: the count and the status of the whole fence, no entries', () => {
    using a = named(1n);
    using b = named(1n);
    using fa = SyncFile.create(a);
    using fb = SyncFile.create(b);
    using m = fa.merge(fb, 'mx');
    a.signal();
    const info = m.info({ numFences: 0 });
    assert.deepEqual(info, { name: 'mx', status: 0, flags: 0, numFences: 2, fences: [] });
    b.signal();
    assert.equal(m.info({ numFences: 0 }).status, 1);
  });

  it('too small a request is EINVAL with nothing filled (6.1 observed)', () => {
    using a = named(1n);
    using b = named(1n);
    using fa = SyncFile.create(a);
    using fb = SyncFile.create(b);
    using m = fa.merge(fb, 'mx');
    assert.throws(() => m.info({ numFences: 1 }), errno('EINVAL'));
    const big = m.info({ numFences: 10 });
    assert.equal(big.numFences, 2, 'rewritten to the real count');
    assert.equal(big.fences.length, 2);
  });

  it('header status is the first non-positive entry, not the minimum', () => {
    const c1 = DmaFence.contextAlloc(1);
    const c2 = DmaFence.contextAlloc(1);
    // Entries come sorted by context: c1 first.
    {
      using pending = named(1n, 'd', 'a', c1);
      using failed = named(1n, 'd', 'b', c2);
      using fp = SyncFile.create(pending);
      using ff = SyncFile.create(failed);
      using m = fp.merge(ff);
      failed.setError(-22);
      failed.signal();
      assert.equal(m.info().status, 0, 'pending then error: 0');
      assert.deepEqual(
        m.info().fences.map((e) => e.status),
        [0, -22],
      );
    }
    {
      using failed = named(2n, 'd', 'a', c1);
      using pending = named(2n, 'd', 'b', c2);
      using ff = SyncFile.create(failed);
      using fp = SyncFile.create(pending);
      using m = ff.merge(fp);
      failed.setError(-22);
      failed.signal();
      assert.equal(m.info().status, -22, 'error then pending: the error');
      pending.signal();
      assert.equal(m.info().status, -22);
      assert.equal(m.info({ numFences: 0 }).status, -22, 'the array adopted the error');
    }
  });

  it('reports timestamps only for signalled fences, flags always 0', () => {
    using f = named(1n);
    using file = SyncFile.create(f);
    assert.equal(file.info().fences[0]?.timestampNs, 0n);
    f.signalTimestamp(12345n);
    const e = file.info().fences[0]!;
    assert.equal(e.timestampNs, 12345n);
    assert.equal(e.flags, 0);
    assert.equal(e.status, 1);
  });

  it('cuts long names to 31 bytes', () => {
    using f = named(1n, 'd'.repeat(40), 't'.repeat(40));
    using file = SyncFile.create(f);
    const info = file.info();
    assert.equal(Buffer.byteLength(info.name), 31);
    assert.equal(info.fences[0]?.driverName, 'd'.repeat(31));
    assert.equal(info.fences[0]?.objName, 't'.repeat(31));
    assert.ok(file.name.length > 31, 'the name itself is not cut');
  });

  it('unwraps a chain: one entry per pending point, fewer once points signal', () => {
    const ctx = DmaFence.contextAlloc(1);
    using j1 = named(1n, 'd', 't', ctx);
    using j2 = named(2n, 'd', 't', ctx);
    using p1 = DmaFenceChain.create(null, j1, 1n);
    using p2 = DmaFenceChain.create(p1, j2, 2n);
    using file = SyncFile.create(p2);
    assert.equal(file.info({ numFences: 0 }).numFences, 2);
    assert.equal(file.info().fences.length, 2);
    j1.signal();
    assert.equal(file.info().numFences, 1, 'the signalled link was collected');
  });
});

describe('poll and readiness', () => {
  it('POLLIN only once signalled (6.1 observed poll 0x0 then 0x1)', () => {
    using f = named(1n);
    using file = SyncFile.create(f);
    assert.equal(file.poll(), 0);
    f.signal();
    assert.equal(file.poll(), POLLIN);
  });

  it('POLLIN and a resolved ready for an errored fence: the status carries the error', async () => {
    using f = named(1n);
    using file = SyncFile.create(f);
    const ready = file.ready;
    assert.equal(file.ready, ready, 'the same promise every time');
    f.setError(-125);
    f.signal();
    await ready;
    assert.equal(file.poll(), POLLIN);
    assert.equal(file.status(), -125);
  });

  it('ready resolves at once for a signalled fence', async () => {
    using f = named(1n);
    f.signal();
    using file = SyncFile.create(f);
    await file.ready;
  });

  it('ready stays pending while unsignalled; dispose drops the wait without leaking', async () => {
    const f = named(1n);
    const file = SyncFile.create(f);
    let done = false;
    void file.ready.then(() => {
      done = true;
    });
    await sleep(5);
    assert.equal(done, false);
    file.dispose();
    f.signal();
    await sleep(5);
    assert.equal(done, false, 'disposed: the promise stays pending');
    f.dispose();
  });

  it('status: 0 pending, 1 signalled, -errno failed', () => {
    using f = named(1n);
    using file = SyncFile.create(f);
    assert.equal(file.status(), 0);
    f.signal();
    assert.equal(file.status(), 1);
  });
});

describe('wait and deadline', () => {
  it('wait with a timeout: false on timeout, true once signalled', async () => {
    using f = named(1n);
    using file = SyncFile.create(f);
    assert.equal(await file.wait({ timeout: 0 }), false);
    assert.equal(await file.wait({ timeout: 10 }), false);
    assert.equal(file.waitSync({ timeout: 5 }), false);
    setTimeout(() => f.signal(), 5);
    assert.equal(await file.wait({ timeout: 2000 }), true);
    assert.equal(file.waitSync({ timeout: 0 }), true);
  });

  it('wait rejects a negative timeout (EINVAL) and an abort (ERESTARTSYS)', async () => {
    using f = named(1n);
    using file = SyncFile.create(f);
    await assert.rejects(file.wait({ timeout: -1 }), errno('EINVAL'));
    const ac = new AbortController();
    const p = file.wait({ signal: ac.signal });
    ac.abort();
    await assert.rejects(p, errno('ERESTARTSYS'));
  });

  it('set_deadline passes the hint on (earliest kept); pad must be 0; any value is fine', () => {
    using f = named(1n);
    using file = SyncFile.create(f);
    assert.throws(() => file.setDeadline(5n, 1), errno('EINVAL'));
    assert.throws(() => file.setDeadline(-1n), errno('EINVAL'));
    file.setDeadline(1000n);
    file.setDeadline(2000n);
    assert.equal(f.deadline, 1000n);
    file.setDeadline(0n);
    assert.equal(f.deadline, 0n);
    file.setDeadline((1n << 64n) - 1n);
    assert.equal(f.deadline, 0n);
  });

  it('set_deadline on a merged file reaches every member', () => {
    using a = named(1n);
    using b = named(1n);
    using fa = SyncFile.create(a);
    using fb = SyncFile.create(b);
    using m = fa.merge(fb);
    m.setDeadline(777n);
    assert.equal(a.deadline, 777n);
    assert.equal(b.deadline, 777n);
  });
});

describe('sharing between threads', () => {
  it('a shared sync file is the same one in the other thread, and the message is one-shot', async () => {
    await withSyncAgents(1, async ([w]) => {
      using f = named(4n, 'drv', 'shared');
      using file = SyncFile.create(f);
      const msg = file.share();
      await w!.call('import.file', { name: 'f', msg });
      assert.throws(() => SyncFile.import(msg), errno('EBADF'));
      const waiting = w!.call<{ ok: boolean; status: number }>('file.wait', {
        name: 'f',
        timeout: 5000,
      });
      await sleep(5);
      f.setError(-62);
      f.signal();
      assert.deepEqual(await waiting, { ok: true, status: -62 });
      const info = await w!.call<{ name: string }>('file.info', { name: 'f' });
      assert.equal(info.name, file.info().name);
      await w!.call('dispose', { name: 'f' });
    });
  });

  it('a merge made in a worker comes back as the same fences', async () => {
    await withSyncAgents(1, async ([w]) => {
      using tl = new SwSyncTimeline('w');
      await w!.call('import.timeline', { name: 'tl', msg: tl.share() });
      await w!.call('timeline.createFence', { name: 'tl', value: 1, as: 'a' });
      await w!.call('timeline.createFence', { name: 'tl', value: 3, as: 'b' });
      const msg = await w!.call<never>('file.merge', { a: 'a', b: 'b', mergeName: 'wm' });
      using m = SyncFile.import(msg);
      assert.equal(m.info().numFences, 1);
      using g = m.getFence();
      assert.equal(g.seqno, 3n);
      const ready = w!.call('file.ready', { name: 'b' });
      tl.inc(3);
      assert.equal(await ready, 1);
      await m.ready;
    });
  });

  it('releaseShared gives back an unimported message', () => {
    using f = named(1n);
    using file = SyncFile.create(f);
    const msg = file.share();
    SyncFile.releaseShared(msg);
    assert.throws(() => SyncFile.releaseShared(msg), errno('EBADF'));
    assert.throws(() => SyncFile.import({ ...msg, $dmabuf: 'x' }), errno('EINVAL'));
  });

  it('handles dropped without dispose are reclaimed by the safety net', async () => {
    const gc = (globalThis as { gc?: () => void }).gc;
    assert.ok(gc, 'run with --expose-gc');
    using f = named(1n);
    // Handles are registered in cohorts of 64: drop more than one cohort's worth so that at
    // least one whole cohort is unreachable whatever earlier handles still share one.
    (() => {
      for (let i = 0; i < 130; i++) SyncFile.create(f);
    })();
    for (let i = 0; i < 10 && live() > start + 1 + 66; i++) {
      gc();
      await sleep(5);
    }
    assert.ok(live() <= start + 1 + 66, `reclaimed: ${live() - start - 1} of 130 left`);
    // The net holds on to the cohort it is filling: fill it up so that it moves on, then the
    // last dropped handles go as well.
    for (let i = 0; i < 70; i++) SyncFile.create(f).dispose();
    for (let i = 0; i < 20 && live() !== start + 1; i++) {
      gc();
      await sleep(5);
    }
    assert.equal(live(), start + 1, 'only the fence is left');
  });
});
