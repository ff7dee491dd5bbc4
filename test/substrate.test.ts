// The substrate: the domain's record slab (generations, growth seen by other threads), the
// shared name table, domain attachment errors, the mailbox ring, the SharedArrayBuffer backend,
// the lock word, the waiter, the GC safety net, the clock and errno.
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';
import { DmaBufError, DmaFence, ERRNO, errnoName, type SharedMessage } from '../src/index.js';
import { sabBackend } from '../src/substrate/backend.js';
import { ktimeGetNs } from '../src/substrate/clock.js';
import {
  DOMAIN_LOCK_WORDS,
  Domain,
  domain,
  MAX_NAME_BYTES,
  R_FLAGS,
  R_GEN,
  R_REF,
  RECORD_WORDS,
  RecordType,
  refCount,
  TYPE_MASK,
  TYPE_SHIFT,
} from '../src/substrate/domain.js';
import { SafetyNet } from '../src/substrate/lifetime.js';
import {
  lockOwnedWord,
  lockWord,
  tryLockWord,
  unlockOwnedWord,
  unlockWord,
} from '../src/substrate/lock.js';
import {
  keepAlive,
  setSpinBudgetMs,
  spinBudgetMs,
  waitFor,
  waitUntil,
  waitUntilAsync,
} from '../src/substrate/waiter.js';
import {
  Agent,
  assertNoLeak,
  collect,
  errno,
  live,
  sleep,
  until,
  withAgents,
} from './fence-harness.js';

let start = 0;
beforeEach(() => {
  start = live();
});
afterEach(async () => {
  await assertNoLeak(start);
});

describe('record slab', () => {
  it('alloc gives a live record with reference 1 and a non-zero generation; free makes it stale', () => {
    const d = domain();
    const n = d.liveRecords();
    const s = d.alloc(RecordType.EXT);
    const gen = d.gen(s);
    const b = d.base(s);
    assert.notEqual(gen, 0);
    assert.equal(refCount(Atomics.load(d.i32, b + R_REF)), 1);
    assert.equal((Atomics.load(d.i32, b + R_FLAGS) & TYPE_MASK) >>> TYPE_SHIFT, RecordType.EXT);
    assert.equal(d.isLive(s, gen, RecordType.EXT), true);
    assert.equal(d.isLive(s, gen, RecordType.FENCE), false, 'wrong type');
    assert.equal(d.isLive(s, gen + 1, RecordType.EXT), false, 'wrong generation');
    assert.equal(d.liveRecords(), n + 1);
    assert.equal(d.put(s), true);
    d.free(s);
    assert.equal(d.liveRecords(), n);
    assert.notEqual(d.gen(s), gen);
    assert.equal(d.isLive(s, gen, RecordType.EXT), false);
    assert.equal(d.tryGet(s, gen, RecordType.EXT), false, 'no reference on a freed record');
  });

  it('tryGet takes a reference only on a live record; put reports the last one', () => {
    const d = domain();
    const s = d.alloc(RecordType.EXT);
    const gen = d.gen(s);
    const word = Atomics.load(d.i32, d.base(s) + R_REF);
    assert.equal(d.tryGet(s, gen, RecordType.EXT), true);
    assert.equal(refCount(Atomics.load(d.i32, d.base(s) + R_REF)), 2);
    assert.equal(d.tryGet(s, gen + 1, RecordType.EXT), false);
    assert.equal(d.put(s), false);
    assert.equal(d.put(s), true);
    assert.throws(() => d.put(s), errno('EINVAL'), 'underflow');
    Atomics.store(d.i32, d.base(s) + R_REF, word);
    assert.equal(d.put(s), true);
    d.free(s);
  });

  it('isLive rejects slots out of range', () => {
    const d = domain();
    for (const s of [-1, 1.5, Number.NaN, 1 << 29]) {
      assert.equal(d.isLive(s, 1, RecordType.FENCE), false, String(s));
    }
  });

  it('a reused slot is zeroed and has a new generation; the generation wraps to 1, never 0', () => {
    const d = domain();
    const s = d.alloc(RecordType.EXT);
    const b = d.base(s);
    d.i32.fill(-1, b + 3, b + RECORD_WORDS);
    Atomics.store(d.i32, b + R_GEN, 0x7fffffff);
    d.put(s);
    d.free(s);
    assert.equal(d.gen(s), 1, 'wrapped past 0x7fffffff to 1');
    const again = d.alloc(RecordType.EXT);
    try {
      assert.equal(again, s, 'slots are reused last-in first-out');
      const b2 = d.base(again);
      assert.deepEqual(
        [...d.i32.subarray(b2 + 3, b2 + RECORD_WORDS)],
        Array(RECORD_WORDS - 3).fill(0),
      );
      assert.equal(d.gen(again), 1);
    } finally {
      d.put(again);
      d.free(again);
    }
  });

  it('live records and slots allocated by another worker are seen here', async () => {
    await withAgents(1, async ([a]) => {
      const d = domain();
      const n = d.liveRecords();
      const got = await a!.call<[number, number][]>('slabAlloc', { n: 10 });
      assert.equal(d.liveRecords(), n + 10);
      for (const [s, gen] of got) assert.equal(d.isLive(s, gen, RecordType.EXT), true);
      assert.equal(new Set(got.map(([s]) => s)).size, 10);
      await a!.call('slabFree', { slots: got.map(([s]) => s) });
      assert.equal(d.liveRecords(), n);
      for (const [s, gen] of got) assert.equal(d.isLive(s, gen, RecordType.EXT), false);
    });
  });

  it('a record is counted once wherever it is freed, also after the thread that made it is gone', async () => {
    const d = domain();
    const n = d.liveRecords();
    // Records made in a worker and freed here: the worker's count goes up, ours down.
    await withAgents(1, async ([a]) => {
      const got = await a!.call<[number, number][]>('slabAlloc', { n: 7 });
      assert.equal(d.liveRecords(), n + 7);
      for (const [s] of got) if (d.put(s)) d.free(s);
      assert.equal(d.liveRecords(), n);
    });
    // The worker left normally: its count was folded into the domain's, and nothing moved.
    assert.equal(d.liveRecords(), n);
    // Same with a worker that is terminated instead: the thread that reaps it folds its count.
    const threads = d.threadsInUse();
    const b = await Agent.start();
    const got = await b.call<[number, number][]>('slabAlloc', { n: 5 });
    assert.equal(d.liveRecords(), n + 5);
    await b.worker.terminate();
    await until(() => d.threadsInUse() === threads, 3000);
    assert.equal(d.liveRecords(), n + 5, 'the terminated thread still counts what it left');
    for (const [s] of got) if (d.put(s)) d.free(s);
    assert.equal(d.liveRecords(), n);
  });

  it('growth past the initial 4096 records in another worker is seen by this thread', async () => {
    await withAgents(1, async ([a]) => {
      const d = domain();
      const viewBefore = d.i32.length;
      const bytesBefore = d.region.byteLength;
      const got = await a!.call<[number, number][]>('slabAlloc', { n: 5000 });
      try {
        const [high, highGen] = got.reduce((m, x) => (x[0] > m[0] ? x : m));
        assert.ok(high >= 4096, `highest slot ${high}`);
        assert.ok(d.region.byteLength > bytesBefore, 'the region grew');
        assert.equal(d.i32.length, viewBefore, 'this thread has not looked yet');
        // The first access here is through gen(): it must see the grown region.
        assert.equal(d.gen(high), highGen);
        assert.ok(d.i32.length > viewBefore, 'views were refreshed');
        assert.equal(d.isLive(high, highGen, RecordType.EXT), true);
        // A fence created there past the initial records imports and works here.
        const msg = await a!.call<SharedMessage>('create', {
          name: 'high',
          context: String(DmaFence.contextAlloc(1)),
          seqno: '42',
        });
        assert.ok(msg.slot >= 4096, `fence slot ${msg.slot}`);
        using f = DmaFence.import(msg);
        assert.equal(f.seqno, 42n);
        f.signal();
        await a!.call('dispose', { name: 'high' });
      } finally {
        await a!.call('slabFree', { slots: got.map(([s]) => s) });
      }
    });
  });

  it('get/put/gen of a slot past this thread view do not fault', async () => {
    // Same as above but through get/put first (each must refresh before indexing).
    await withAgents(1, async ([a]) => {
      const d = domain();
      const got = await a!.call<[number, number][]>('slabAlloc', { untilBytes: d.i32.length * 4 });
      try {
        const [high] = got.reduce((m, x) => (x[0] > m[0] ? x : m));
        assert.ok(d.region.byteLength > d.i32.length * 4, 'this thread view is behind');
        d.get(high);
        assert.equal(d.put(high), false);
      } finally {
        await a!.call('slabFree', { slots: got.map(([s]) => s) });
      }
    });
  });
});

describe('names', () => {
  it('interning gives the same id in every thread and reads back across threads', async () => {
    await withAgents(2, async ([a, b]) => {
      const d = domain();
      const mine = d.intern('substrate-alpha');
      const [ta] = await a!.call<number[]>('intern', { names: ['substrate-alpha'] });
      assert.equal(ta, mine);
      const [beta] = await a!.call<number[]>('intern', { names: ['substrate-beta-ünï-✓'] });
      assert.equal(d.name(beta!), 'substrate-beta-ünï-✓');
      assert.equal(d.intern('substrate-beta-ünï-✓'), beta);
      assert.equal(await b!.call('name', { nameId: beta }), 'substrate-beta-ünï-✓');
    });
  });

  it('concurrent interning of one new name by several workers agrees on one id', async () => {
    await withAgents(4, async (agents) => {
      const names = Array.from({ length: 30 }, (_, i) => `race-name-${i}`);
      const ids = await Promise.all(agents.map((a) => a.call<number[]>('intern', { names })));
      for (const list of ids) assert.deepEqual(list, ids[0]);
      assert.equal(new Set(ids[0]).size, names.length);
      assert.deepEqual(
        names.map((n) => domain().intern(n)),
        ids[0],
      );
    });
  });

  it('names are limited to 64 UTF-8 bytes', () => {
    const d = domain();
    assert.equal(MAX_NAME_BYTES, 64);
    const ok = 'n'.repeat(64);
    assert.equal(d.name(d.intern(ok)), ok);
    assert.throws(() => d.intern('n'.repeat(65)), errno('EINVAL'));
    assert.throws(() => d.intern('é'.repeat(33)), errno('EINVAL'), '66 bytes');
    assert.equal(d.name(d.intern('é'.repeat(32))), 'é'.repeat(32));
    assert.equal(d.name(d.intern('')), '');
  });
});

describe('domains', () => {
  it('a fence message from another domain is EXDEV', () => {
    const other = Domain.create();
    assert.notEqual(other.id, domain().id);
    const msg: SharedMessage = {
      $dmabuf: 'dma-fence',
      domain: other.descriptor(),
      slot: 0,
      gen: 1,
      claim: new SharedArrayBuffer(4),
    };
    assert.throws(() => DmaFence.import(msg), errno('EXDEV'));
    assert.throws(() => DmaFence.releaseShared(msg), errno('EXDEV'));
  });

  it('attach checks the descriptor and the region', () => {
    const d = domain();
    const desc = d.descriptor();
    const same = Domain.attach(desc);
    assert.equal(same.id, d.id);
    assert.throws(() => Domain.attach({ ...desc, id: desc.id ^ 2 }), errno('EINVAL'));
    assert.throws(
      () => Domain.attach({ id: 1, region: { backend: 'sab', buffer: new SharedArrayBuffer(64) } }),
      errno('EINVAL'),
    );
  });

  it('contexts are a 64-bit counter', () => {
    const d = Domain.create();
    assert.equal(d.allocContexts(1), 1n, 'a new domain starts at 1');
    // Put the counter just below 2^32: allocation must not wrap at 32 bits.
    Atomics.store(d.i64, 16 / 2, (1n << 32n) - 1n);
    assert.equal(d.allocContexts(2), (1n << 32n) - 1n);
    assert.equal(d.allocContexts(1), (1n << 32n) + 1n);
  });

  it('globalWord hands out the fixed global words and refuses beyond them', () => {
    const d = Domain.create();
    assert.equal(d.globalWord(0), 32);
    assert.equal(d.globalWord(31), 63);
    assert.throws(() => d.globalWord(32), RangeError);
  });
});

describe('mailbox', () => {
  it('delivers messages in order and reports overflow past 256 queued', () => {
    const d = Domain.create();
    const t = d.threadIndex();
    const got: [number, number][] = [];
    let overflows = 0;
    d.onMail(7, (slot, gen) => got.push([slot, gen]));
    d.onMailOverflow(() => overflows++);
    const queued: boolean[] = [];
    for (let i = 0; i < 300; i++) queued.push(d.post(t, 7, i, i * 2));
    assert.equal(queued.filter(Boolean).length, 256);
    assert.ok(queued.slice(0, 256).every(Boolean));
    assert.ok(queued.slice(256).every((q) => !q));
    d.drainMail();
    assert.equal(got.length, 256);
    assert.deepEqual(got[0], [0, 0]);
    assert.deepEqual(got[255], [255, 510]);
    assert.equal(overflows, 1);
    d.drainMail();
    assert.equal(got.length, 256);
    assert.equal(overflows, 1, 'the overflow is reported once');
    // The ring wraps around correctly afterwards.
    for (let i = 0; i < 10; i++) assert.equal(d.post(t, 7, 1000 + i, 0), true);
    d.drainMail();
    assert.deepEqual(
      got.slice(256).map(([s]) => s),
      Array.from({ length: 10 }, (_, i) => 1000 + i),
    );
  });

  it('a message to a thread slot nobody holds is refused', () => {
    const d = Domain.create();
    assert.equal(d.post(200, 7, 1, 1), false);
  });
});

describe('backend', () => {
  it('regions align, grow in place up to their maximum and never shrink', () => {
    const r = sabBackend.createRegion(100, 1000);
    assert.equal(r.byteLength, 104);
    assert.equal(r.maxByteLength, 1000);
    assert.equal(r.i32.length, 26);
    assert.equal(r.grow(50), true);
    assert.equal(r.byteLength, 104);
    assert.equal(r.grow(400), true);
    assert.ok(r.byteLength >= 400);
    assert.equal(r.i32.length, r.byteLength / 4, 'grow refreshes this thread view');
    assert.equal(r.grow(2000), false);
    assert.throws(
      () => sabBackend.attachRegion({ backend: 'memfd', buffer: new SharedArrayBuffer(8) }),
      TypeError,
    );
  });

  it('a region grown in another worker is seen here after refresh', async () => {
    await withAgents(1, async ([a]) => {
      const r = sabBackend.createRegion(64, 1 << 20);
      const oldLen = r.i32.length;
      const bytes = await a!.call<number>('regionGrow', {
        desc: r.descriptor(),
        bytes: 8192,
        index: 2000,
        value: 77,
      });
      assert.ok(bytes >= 8192);
      assert.equal(r.byteLength, bytes, 'the size is shared at once');
      assert.equal(r.i32.length, oldLen, 'views are fixed until refresh');
      r.refresh();
      assert.equal(r.i32.length, bytes / 4);
      assert.equal(r.i64.length, bytes / 8);
      assert.equal(Atomics.load(r.i32, 2000), 77);
      assert.equal(Atomics.load(r.i64, 1001), 77n << 32n);
    });
  });

  it('wait / waitAsync / notify on a word', async () => {
    await withAgents(1, async ([a]) => {
      const r = sabBackend.createRegion(64, 64);
      assert.equal(r.wait(0, 1, 10), 'not-equal');
      assert.equal(r.wait(0, 0, 5), 'timed-out');
      // Wait first, then have the worker store and notify.
      const p = r.waitAsync(3, 0, 10_000);
      assert.notEqual(typeof p, 'string');
      await a!.call('setWordLater', { desc: r.descriptor(), index: 3, value: 1, ms: 5 });
      assert.equal(await p, 'ok');
      assert.equal(Atomics.load(r.i32, 3), 1);
    });
  });
});

describe('lock word', () => {
  it('excludes each other across 4 workers', async () => {
    await withAgents(4, async (agents) => {
      const r = sabBackend.createRegion(64, 64);
      const n = 20_000;
      await Promise.all(
        agents.map((a) => a.call('lockCount', { desc: r.descriptor(), lock: 0, counter: 4, n })),
      );
      assert.equal(Atomics.load(r.i32, 4), 4 * n);
      assert.equal(Atomics.load(r.i32, 0), 0, 'left unlocked');
    });
  });

  it('tryLockWord fails while held', () => {
    const r = sabBackend.createRegion(64, 64);
    assert.equal(tryLockWord(r, 1), true);
    assert.equal(tryLockWord(r, 1), false);
    unlockWord(r, 1);
    lockWord(r, 1);
    assert.equal(tryLockWord(r, 1), false);
    unlockWord(r, 1);
    assert.equal(Atomics.load(r.i32, 1), 0);
  });
});

describe('waiter', () => {
  it('waitUntil: done at once, timeout, or woken by another worker', async () => {
    await withAgents(1, async ([a]) => {
      const r = sabBackend.createRegion(64, 64);
      const target = { region: r, index: 2, sleepers: 3 };
      assert.equal(
        waitUntil(target, () => true, 0),
        true,
      );
      assert.equal(
        waitUntil(target, () => false, 0),
        false,
      );
      assert.equal(
        waitUntil(target, () => Atomics.load(r.i32, 2) === 1, 10),
        false,
      );
      await a!.call('setWordLater', { desc: r.descriptor(), index: 2, value: 1, ms: 20 });
      assert.equal(
        waitUntil(target, () => Atomics.load(r.i32, 2) === 1, 20_000),
        true,
      );
      assert.equal(Atomics.load(r.i32, 3), 0, 'sleepers count back to 0');
    });
  });

  it('waitFor: the time left when done, 0 on timeout, Infinity stays Infinity', async () => {
    await withAgents(1, async ([a]) => {
      const r = sabBackend.createRegion(64, 64);
      const target = { region: r, index: 2, sleepers: 3 };
      assert.equal(
        waitFor(target, () => true, Number.POSITIVE_INFINITY),
        Number.POSITIVE_INFINITY,
      );
      assert.equal(
        waitFor(target, () => true, 50),
        50,
      );
      assert.ok(waitFor(target, () => true, 0) > 0, 'done with no time is still done');
      assert.equal(
        waitFor(target, () => false, 0),
        0,
      );
      assert.equal(
        waitFor(target, () => false, 5),
        0,
      );
      assert.equal(Atomics.load(r.i32, 3), 0, 'a timed-out waiter leaves the sleepers word');
      await a!.call('setWordLater', { desc: r.descriptor(), index: 2, value: 1, ms: 20 });
      const left = waitFor(target, () => Atomics.load(r.i32, 2) === 1, 10_000);
      assert.ok(left > 0 && left < 10_000 - 10, String(left));
      assert.equal(Atomics.load(r.i32, 3), 0);
      Atomics.store(r.i32, 2, 0);
      await a!.call('setWordLater', { desc: r.descriptor(), index: 2, value: 1, ms: 20 });
      const inf = waitFor(target, () => Atomics.load(r.i32, 2) === 1, Number.POSITIVE_INFINITY);
      assert.equal(inf, Number.POSITIVE_INFINITY);
    });
  });

  it('a marked target sets its bit instead of counting, and leaves it set', async () => {
    await withAgents(1, async ([a]) => {
      const r = sabBackend.createRegion(64, 64);
      // The bit lives in the watched word itself, as a fence's WAITERS bit does.
      const target = { region: r, index: 2, sleepers: 2, mark: 1 << 5 };
      setSpinBudgetMs(0);
      try {
        assert.equal(
          waitUntil(target, () => false, 5),
          false,
        );
        assert.equal(Atomics.load(r.i32, 2), 1 << 5, 'set on the way to sleep, kept on timeout');
        await a!.call('setWordLater', { desc: r.descriptor(), index: 2, value: 1, ms: 20 });
        assert.equal(
          waitUntil(target, () => (Atomics.load(r.i32, 2) & 1) === 1, 10_000),
          true,
        );
        assert.equal(Atomics.load(r.i32, 3), 0, 'nothing counted elsewhere');
      } finally {
        setSpinBudgetMs(Number.POSITIVE_INFINITY);
      }
    });
  });

  it('the spin adapts: none after long waits, the full budget again after short ones', () => {
    const r = sabBackend.createRegion(64, 64);
    const target = { region: r, index: 2, sleepers: 3 };
    for (let i = 0; i < 6; i++) waitUntil(target, () => false, 3);
    assert.equal(spinBudgetMs(), 0, 'long waits: sleep at once');
    // Waits that end at the second look (no notify needed: the waiter never sleeps).
    for (let i = 0; i < 60; i++) {
      let polls = 0;
      assert.equal(
        waitUntil(target, () => ++polls > 1, 1000),
        true,
      );
    }
    assert.ok(spinBudgetMs() > 0, 'short waits: spin before sleeping');
  });

  it('waitUntilAsync: abort throws ERESTARTSYS and releases its keep-alive', async () => {
    const r = sabBackend.createRegion(64, 64);
    const target = { region: r, index: 2, sleepers: 3 };
    const before = keepAlive.count;
    const ac = new AbortController();
    const p = waitUntilAsync(target, () => false, 10_000, ac.signal);
    assert.equal(keepAlive.count, before + 1);
    ac.abort('why');
    await assert.rejects(p, errno('ERESTARTSYS'));
    assert.equal(keepAlive.count, before);
    assert.equal(Atomics.load(r.i32, 3), 0);
    assert.equal(await waitUntilAsync(target, () => false, 15), false);
    assert.equal(keepAlive.count, before);
  });
});

describe('safety net', () => {
  it('gives back the reference of every lost handle, also of the newest cohort', async () => {
    const released: number[] = [];
    const net = new SafetyNet((slot, gen) => released.push(slot * 10 + gen));
    const keep = { _cohort: undefined, _cohortIndex: 0 };
    net.track(keep, 9, 9);
    (() => {
      for (let i = 0; i < 3; i++) net.track({ _cohort: undefined, _cohortIndex: 0 }, i, 1);
    })();
    await collect();
    assert.deepEqual(released, [], 'a cohort with one live handle stays');
    net.untrack(keep);
    await collect();
    assert.deepEqual(released.sort(), [1, 11, 21]);
    assert.equal(net.reclaimed, 3);
  });
});

describe('clock and errno', () => {
  it('one monotonic nanosecond clock for every thread', async () => {
    await withAgents(1, async ([a]) => {
      const t0 = ktimeGetNs();
      const there = BigInt(await a!.call<string>('now'));
      const t1 = ktimeGetNs();
      assert.ok(t0 <= there && there <= t1, `${t0} <= ${there} <= ${t1}`);
      await sleep(2);
      assert.ok(ktimeGetNs() > t1);
    });
  });

  it('DmaBufError carries the errno name, number and negative value', () => {
    const e = new DmaBufError('EDEADLK', 'x', { cause: 1 });
    assert.equal(e.code, 'EDEADLK');
    assert.equal(e.errno, 35);
    assert.equal(e.negative, -35);
    assert.equal(e.cause, 1);
    assert.ok(e.message.startsWith('EDEADLK'));
    assert.equal(errnoName(-22), 'EINVAL');
    assert.equal(errnoName(512), 'ERESTARTSYS');
    assert.equal(errnoName(9999), undefined);
    assert.equal(ERRNO.EXDEV, 18);
    assert.equal(ERRNO.ENOENT, 2);
    assert.equal(ERRNO.EBADF, 9);
  });
});

/** Starts a worker that takes a lock (see workers/lock-holder.ts) and resolves once it holds it. */
async function startLockHolder(what: string | { fence: SharedMessage }): Promise<Worker> {
  const w = new Worker(new URL('./workers/lock-holder.js', import.meta.url), { workerData: what });
  await new Promise((resolve, reject) => {
    w.once('message', resolve);
    w.once('error', reject);
  });
  return w;
}

describe('threads leaving the domain', () => {
  it('a worker terminated while it holds a fence lock: reaping releases it, the fence signals', async () => {
    const d = domain();
    const threads = d.threadsInUse();
    using f = new DmaFence(DmaFence.contextAlloc(1), 1n);
    const w = await startLockHolder({ fence: f.share() });
    await w.terminate();
    await until(() => d.threadsInUse() === threads, 3000);
    // The worker's reference to the fence is lost with it (a known limit); its lock is not.
    f.signal();
    assert.equal(f.isSignaledFlag(), true);
    const extra = d.put(f._slot);
    assert.equal(extra, false, 'the worker still counted one reference');
  });

  it('reaping never blocks its thread: with the table lock held elsewhere it comes back later', async () => {
    const d = domain();
    const threads = d.threadsInUse();
    const w = await startLockHolder('names');
    // Another thread (say, one that died too and whose own exit is still queued) holds the
    // table: the reaper here must not wait for it, since that would stop this event loop.
    lockOwnedWord(d.region, DOMAIN_LOCK_WORDS.threads, 999_999);
    try {
      await w.terminate();
      await sleep(20);
      assert.equal(d.threadsInUse(), threads + 1, 'not reaped while the table is held');
    } finally {
      unlockOwnedWord(d.region, DOMAIN_LOCK_WORDS.threads);
    }
    await until(() => d.threadsInUse() === threads, 3000);
    assert.equal(d.threadsInUse(), threads, 'reaped once the table was free');
    assert.equal(d.name(d.intern('after-reap')), 'after-reap');
  });

  for (const which of ['threads', 'slab', 'names'] as const) {
    it(`a worker terminated while it holds the domain's ${which} lock does not block the others`, async () => {
      const d = domain();
      const threads = d.threadsInUse();
      const w = await startLockHolder(which);
      await w.terminate();
      // Reaping breaks the dead thread's hold; every table works again.
      await until(() => d.threadsInUse() === threads, 3000);
      assert.equal(d.threadsInUse(), threads);
      assert.ok(d.liveRecords() >= 0);
      const s = d.alloc(RecordType.EXT);
      assert.equal(d.put(s), true);
      d.free(s);
      assert.equal(d.name(d.intern(`after-${which}`)), `after-${which}`);
    });
  }

  it('a worker that exits handles the notifications still queued for it', async () => {
    await withAgents(1, async ([a]) => {
      const f = new DmaFence(DmaFence.contextAlloc(1), 1n);
      await a!.call('import', { name: 'f', msg: f.share() });
      await a!.call('addCallback', { name: 'f', tag: 'x' });
      const sab = new SharedArrayBuffer(8);
      const w = new Int32Array(sab);
      void a!.call('blockThenExit', { sab }).catch(() => undefined);
      assert.ok(await until(() => Atomics.load(w, 1) === 1));
      // The notification (and the reference it carries) waits in the blocked worker's ring.
      f.signal();
      Atomics.store(w, 0, 1);
      Atomics.notify(w, 0);
      assert.equal(await a!.exit, 0);
      f.dispose();
      await assertNoLeak(start);
    });
  });

  it('a fence whose owner has left is freed when its last reference goes', async () => {
    await withAgents(1, async ([a]) => {
      const msg = await a!.call<SharedMessage>('create', {
        name: 'f',
        context: String(DmaFence.contextAlloc(1)),
        seqno: '1',
        ops: { release: true },
      });
      const f = DmaFence.import(msg);
      await a!.stop();
      assert.equal(f.isSignaledFlag(), false);
      f.signal();
      f.dispose();
      await assertNoLeak(start);
    });
  });
});
