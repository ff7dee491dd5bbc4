// dma_fence across worker threads: sharing, callbacks in the registering thread, waits from any
// thread, driver ops in the owner, reference counting, signalling annotations, the selftest's
// signal/callback race, mailbox overflow and a multi-worker stress run.
import assert from 'node:assert/strict';
import { afterEach, before, beforeEach, describe, it } from 'node:test';
import { threadId, Worker } from 'node:worker_threads';
import {
  DmaFence,
  ERRNO,
  LockClass,
  type LockdepReport,
  lockAcquire,
  lockdepEnable,
  lockdepReports,
  lockdepReset,
  lockRelease,
  type SharedMessage,
} from '../src/index.js';
import { ktimeGetNs } from '../src/substrate/clock.js';
import { domain } from '../src/substrate/domain.js';
import {
  Agent,
  type AgentEvent,
  assertNoLeak,
  errno,
  live,
  sleep,
  until,
  withAgents,
} from './fence-harness.js';

interface Info {
  context: string;
  seqno: string;
  signaled: boolean;
  timestamp: string;
  status: number;
  driver: string;
  timeline: string;
  deadline: string;
}

let start = 0;
before(() => {
  DmaFence.getStub().dispose();
});
beforeEach(() => {
  start = live();
});
afterEach(async () => {
  await assertNoLeak(start);
});

/** Lets a worker exit by itself (so it leaves the domain cleanly); terminates it if it hangs. */
async function exitOrTerminate(w: Worker): Promise<void> {
  const t = setTimeout(() => void w.terminate(), 3000);
  try {
    if (w.threadId >= 0) await new Promise((r) => w.once('exit', r));
  } finally {
    clearTimeout(t);
  }
}

function tags(events: AgentEvent[], kind = 'cb'): string[] {
  return events.filter((e) => e.kind === kind).map((e) => e.tag ?? '');
}

describe('sharing across workers', () => {
  it('contexts come from one counter shared by every thread', async () => {
    await withAgents(4, async (agents) => {
      const counts = Array.from({ length: 40 }, (_, i) => 1 + (i % 4));
      const ranges: [bigint, bigint][] = [];
      const mine = (async () => {
        for (const n of counts) {
          const first = DmaFence.contextAlloc(n);
          ranges.push([first, first + BigInt(n)]);
          await sleep(0);
        }
      })();
      const theirs = await Promise.all(agents.map((a) => a.call<string[]>('contexts', { counts })));
      await mine;
      for (const list of theirs) {
        list.forEach((s, i) => {
          const first = BigInt(s);
          ranges.push([first, first + BigInt(counts[i]!)]);
        });
      }
      ranges.sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0));
      for (let i = 1; i < ranges.length; i++) {
        assert.equal(ranges[i]![0], ranges[i - 1]![1], 'ranges are disjoint and contiguous');
      }
      assert.ok(ranges[0]![0] >= 1n, 'context 0 is never allocated');
    });
  });

  it('share() + import() in another worker gives the same fence, both ways', async () => {
    await withAgents(1, async ([a]) => {
      const ctx = DmaFence.contextAlloc(1);
      const seqno = (1n << 40n) + 5n;
      const f = new DmaFence(ctx, seqno, undefined, { seqno64: true });
      try {
        await a!.call('import', { name: 'f', msg: f.share() });
        const info = await a!.call<Info>('info', { name: 'f' });
        assert.equal(info.context, String(ctx));
        assert.equal(info.seqno, String(seqno));
        assert.equal(info.signaled, false);
        assert.equal((await a!.call<{ result: number }>('signal', { name: 'f' })).result, 0);
        assert.equal(f.isSignaledFlag(), true);
        const after = await a!.call<Info>('info', { name: 'f' });
        assert.equal(after.timestamp, String(f.timestamp), 'one timestamp for every thread');
        assert.equal(f.getStatus(), 1);
      } finally {
        f.dispose();
      }
      // The other way round: a fence created in the worker, signalled here.
      const msg = await a!.call<SharedMessage>('create', {
        name: 'g',
        context: String(ctx),
        seqno: '9',
      });
      const g = DmaFence.import(msg);
      try {
        assert.equal(g.context, ctx);
        assert.equal(g.seqno, 9n);
        g.setError(-62);
        g.signal();
        const info = await a!.call<Info>('info', { name: 'g' });
        assert.equal(info.signaled, true);
        assert.equal(info.status, -62);
        assert.equal(info.timestamp, String(g.timestamp));
        assert.equal(info.driver, 'detached-driver');
        assert.equal(info.timeline, 'signaled-timeline');
      } finally {
        g.dispose();
      }
    });
  });

  it('a message can be imported once, whichever worker tries first', async () => {
    await withAgents(2, async ([a, b]) => {
      using f = new DmaFence(DmaFence.contextAlloc(1), 1n);
      const msg = f.share();
      const results = await Promise.all([
        a!.call<number | string>('tryImport', { name: 'f', msg }),
        b!.call<number | string>('tryImport', { name: 'f', msg }),
      ]);
      assert.deepEqual([...results].sort(), [0, 'EBADF'].sort());
      assert.throws(() => DmaFence.import(msg), errno('EBADF'));
      assert.equal(await a!.call('importTwice', { name: 'h', msg: f.share() }), 'EBADF');
    });
  });

  it('the stub is the same fence with the same timestamp in every thread', async () => {
    await withAgents(2, async (agents) => {
      using s = DmaFence.getStub();
      const got = await Promise.all(
        agents.map((a) => a.call<{ ts: string; context: string; slot: number }>('stub')),
      );
      for (const g of got) {
        assert.equal(g.ts, String(s.timestamp));
        assert.equal(g.context, '0');
        assert.equal(g.slot, s._slot);
      }
    });
  });
});

describe('callbacks across threads', () => {
  it('run in the thread that registered them, in order; the signaller runs its own inside signal()', async () => {
    await withAgents(2, async ([a, b]) => {
      const f = new DmaFence(DmaFence.contextAlloc(1), 1n);
      const mainSeen: number[] = [];
      try {
        await a!.call('import', { name: 'f', msg: f.share() });
        await b!.call('import', { name: 'f', msg: f.share() });
        for (const t of ['b1', 'b2', 'b3']) {
          assert.equal(await b!.call('addCallback', { name: 'f', tag: t }), 0);
        }
        assert.equal(await a!.call('addCallback', { name: 'f', tag: 'a1' }), 0);
        assert.equal(await a!.call('addCallback', { name: 'f', tag: 'a2' }), 0);
        f.addCallback(() => mainSeen.push(threadId));
        const sig = await a!.call<{ result: number; during: string[] }>('signal', { name: 'f' });
        assert.equal(sig.result, 0);
        assert.deepEqual(sig.during, ['a1', 'a2'], "A's callbacks ran inside its signal()");
        const evB = await b!.waitEvents(3);
        assert.deepEqual(tags(evB), ['b1', 'b2', 'b3']);
        for (const e of evB) {
          assert.equal(e.thread, b!.threadId);
          assert.equal(e.inSignal, false);
          assert.equal(e.status, 1);
        }
        assert.ok(await until(() => mainSeen.length === 1));
        assert.deepEqual(mainSeen, [threadId]);
        const evA = await a!.events();
        assert.ok(evA.every((e) => e.thread === a!.threadId && e.inSignal === true));
      } finally {
        f.dispose();
      }
    });
  });

  it('a callback removed in its thread never runs; adding after signal is ENOENT', async () => {
    await withAgents(1, async ([b]) => {
      using f = new DmaFence(DmaFence.contextAlloc(1), 1n);
      await b!.call('import', { name: 'f', msg: f.share() });
      await b!.call('addCallback', { name: 'f', tag: 'x' });
      await b!.call('addCallback', { name: 'f', tag: 'y' });
      assert.equal(await b!.call('removeCallback', { name: 'f', tag: 'x' }), true);
      f.signal();
      assert.deepEqual(tags(await b!.waitEvents(1)), ['y']);
      assert.equal(await b!.call('removeCallback', { name: 'f', tag: 'y' }), false);
      assert.equal(await b!.call('addCallback', { name: 'f', tag: 'z' }), 'ENOENT');
      await sleep(20);
      assert.deepEqual(await b!.events(), []);
    });
  });

  it('more than 256 notifications queued for a busy thread all run (mailbox overflow)', async () => {
    await withAgents(1, async ([b]) => {
      const n = 700;
      const ctx = DmaFence.contextAlloc(1);
      const fences = Array.from({ length: n }, (_, i) => new DmaFence(ctx, BigInt(i + 1)));
      try {
        await b!.call('importMany', { prefix: 'f', msgs: fences.map((f) => f.share()) });
        await b!.call('addCallbackMany', { prefix: 'f', n });
        // Keep B's event loop busy while every fence signals: its mailbox ring (256) overflows.
        const sab = new SharedArrayBuffer(8);
        const w = new Int32Array(sab);
        const blocked = b!.call('block', { sab });
        assert.ok(await until(() => Atomics.load(w, 1) === 1));
        for (const f of fences) f.signal();
        Atomics.store(w, 0, 1);
        Atomics.notify(w, 0);
        await blocked;
        const ev = await b!.waitEvents(n);
        assert.equal(ev.length, n);
        assert.deepEqual(new Set(tags(ev)).size, n, 'each callback ran exactly once');
        assert.ok(ev.every((e) => e.status === 1 && e.thread === b!.threadId));
      } finally {
        for (const f of fences) f.dispose();
      }
    });
  });
});

describe('waits across threads', () => {
  it('a worker blocks in waitSync until another thread signals', async () => {
    await withAgents(1, async ([a]) => {
      using f = new DmaFence(DmaFence.contextAlloc(1), 1n);
      await a!.call('import', { name: 'f', msg: f.share() });
      const waiting = a!.call<number>('waitSync', { name: 'f', timeout: 20_000 });
      await sleep(30);
      f.signal();
      const r = await waiting;
      assert.ok(r > 0 && r <= 20_000, String(r));
      assert.equal(await a!.call('waitSync', { name: 'f', timeout: 0 }), 1);
    });
  });

  it('a sleeping waiter wakes after the signal time: SIGNALED, then the timestamp, then the wake-up', async () => {
    await withAgents(1, async ([a]) => {
      for (let i = 1; i <= 20; i++) {
        using f = new DmaFence(DmaFence.contextAlloc(1), 1n);
        await a!.call('import', { name: 'f', msg: f.share() });
        const waiting = a!.call<{ r: number; woke: string; ts: string }>('waitSyncStamped', {
          name: 'f',
          timeout: 20_000,
        });
        await sleep(3);
        const before = ktimeGetNs();
        f.signal();
        const after = ktimeGetNs();
        const { r, woke, ts } = await waiting;
        assert.ok(r > 0 && r <= 20_000, String(r));
        const t = BigInt(ts);
        assert.ok(t >= before && t <= after, 'the timestamp is taken inside signal()');
        assert.ok(BigInt(woke) >= t, 'the waiter runs after the signal time');
        await a!.call('dispose', { name: 'f' });
      }
    });
  });

  it('timeouts and aborts in a worker', async () => {
    await withAgents(1, async ([a]) => {
      using f = new DmaFence(DmaFence.contextAlloc(1), 1n);
      await a!.call('import', { name: 'f', msg: f.share() });
      assert.equal(await a!.call('waitSync', { name: 'f', timeout: 0 }), 0);
      assert.equal(await a!.call('waitSync', { name: 'f', timeout: 15 }), 0);
      assert.equal(await a!.call('wait', { name: 'f', timeout: 15 }), 0);
      assert.equal(await a!.call('wait', { name: 'f', abortAfter: 10 }), 'ERESTARTSYS');
      assert.equal(await a!.call('waitSync', { name: 'f', timeout: -1 }), 'EINVAL');
      assert.equal(f.isSignaledFlag(), false);
      const p = a!.call<number>('wait', { name: 'f', timeout: 20_000, abortAfter: 15_000 });
      await sleep(10);
      f.signal();
      assert.ok((await p) > 0);
    });
  });

  it('an async wait here never blocks the event loop while a worker signals', async () => {
    await withAgents(1, async ([a]) => {
      const msg = await a!.call<SharedMessage>('create', {
        name: 'f',
        context: String(DmaFence.contextAlloc(1)),
        seqno: '1',
      });
      using f = DmaFence.import(msg);
      let n = 0;
      const timer = setInterval(() => {
        n++;
        if (n === 3) void a!.call('signal', { name: 'f' });
      }, 5);
      try {
        const r = await f.wait({ timeout: 20_000 });
        assert.ok(r > 0);
        assert.ok(n >= 3, 'timers kept running during the wait');
      } finally {
        clearInterval(timer);
      }
    });
  });

  it('waitAny / waitAnySync in a worker: lowest signalled index, whole timeout if already signalled', async () => {
    await withAgents(1, async ([a]) => {
      const ctx = DmaFence.contextAlloc(1);
      const fs = [1n, 2n, 3n].map((s) => new DmaFence(ctx, s));
      try {
        for (let i = 0; i < 3; i++) await a!.call('import', { name: `f${i}`, msg: fs[i]!.share() });
        const names = ['f0', 'f1', 'f2'];
        assert.deepEqual(await a!.call('waitAnySync', { names, timeout: 10 }), {
          remaining: 0,
          index: -1,
        });
        const sync = a!.call<{ remaining: number; index: number }>('waitAnySync', {
          names,
          timeout: 20_000,
        });
        await sleep(20);
        fs[2]!.signal();
        const r = await sync;
        assert.equal(r.index, 2);
        assert.ok(r.remaining > 0);
        const asyncWait = a!.call<{ remaining: number; index: number }>('waitAny', {
          names: ['f0', 'f1'],
          timeout: 20_000,
        });
        await sleep(20);
        fs[1]!.signal();
        const r2 = await asyncWait;
        assert.equal(r2.index, 1);
        assert.ok(r2.remaining > 0);
        assert.deepEqual(await a!.call('waitAnySync', { names, timeout: 300 }), {
          remaining: 300,
          index: 1,
        });
        assert.deepEqual(await a!.call('waitAny', { names, timeout: 0 }), {
          remaining: 1,
          index: 1,
        });
      } finally {
        for (const f of fs) f.dispose();
      }
    });
  });

  for (const mode of ['wait', 'callback'] as const) {
    it(`a pending ${mode === 'wait' ? 'async wait' : 'callback'} keeps its worker alive until the fence signals`, async () => {
      const f = new DmaFence(DmaFence.contextAlloc(1), 1n);
      const w = new Worker(new URL('./workers/fence-wait-only.js', import.meta.url), {
        workerData: { msg: f.share(), mode },
      });
      try {
        const seen: { exited: boolean; result?: { remaining?: number; status: number } } = {
          exited: false,
        };
        const armed = new Promise<void>((resolve) => {
          w.on('message', (m: { armed?: boolean; remaining?: number; status: number }) => {
            if (m.armed) resolve();
            else seen.result = m;
          });
        });
        const exit = new Promise<number>((r) => w.once('exit', r));
        void exit.then(() => {
          seen.exited = true;
        });
        await armed;
        await sleep(300);
        assert.equal(seen.exited, false, 'the worker must not exit while its fence is pending');
        assert.ok(seen.result === undefined, 'no result before the signal');
        f.signal();
        assert.equal(await exit, 0);
        // (Read through a function: the assertion above narrowed `seen.result` to undefined.)
        const result = (): { remaining?: number; status: number } | undefined => seen.result;
        assert.equal(result()?.status, 1);
        if (mode === 'wait') assert.equal(result()?.remaining, Number.POSITIVE_INFINITY);
      } finally {
        await w.terminate();
        f.dispose();
      }
    });
  }
});

describe('driver ops across threads', () => {
  it('enableSignaling runs once, in the owner, for a waiter in another worker', async () => {
    await withAgents(2, async ([owner, waiter]) => {
      const msg = await owner!.call<SharedMessage>('create', {
        name: 'f',
        context: String(DmaFence.contextAlloc(1)),
        seqno: '1',
        ops: { enable: 'timer', timerMs: 30 },
      });
      using f = DmaFence.import(msg);
      await waiter!.call('import', { name: 'f', msg: f.share() });
      const p1 = waiter!.call<number>('waitSync', { name: 'f', timeout: 20_000 });
      const p2 = f.wait({ timeout: 20_000 });
      assert.ok((await p1) > 0);
      assert.ok((await p2) > 0);
      const ev = await owner!.events();
      assert.deepEqual(
        ev.map((e) => [e.kind, e.thread, e.status]),
        [['enable', owner!.threadId, 0]],
        'exactly one enable, in the owner, while the fence was pending',
      );
      assert.deepEqual(await waiter!.events(), []);
    });
  });

  it('enableSignaling returning false signals the fence for the remote waiter', async () => {
    await withAgents(2, async ([owner, waiter]) => {
      for (const mode of ['false', 'error'] as const) {
        const msg = await owner!.call<SharedMessage>('create', {
          name: mode,
          context: String(DmaFence.contextAlloc(1)),
          seqno: '1',
          ops: { enable: mode },
        });
        await waiter!.call('import', { name: mode, msg });
        const r = await waiter!.call<number>('waitSync', { name: mode, timeout: 20_000 });
        assert.ok(r > 0);
        assert.equal(await waiter!.call('status', { name: mode }), mode === 'error' ? -5 : 1);
        assert.equal(await waiter!.call('addCallback', { name: mode, tag: 'late' }), 'ENOENT');
        const ev = await owner!.events();
        assert.deepEqual(tags(ev, 'enable'), [mode]);
      }
    });
  });

  it("a driver op that throws does not stop the owner's mailbox", async () => {
    await withAgents(1, async ([owner]) => {
      const ctx = DmaFence.contextAlloc(1);
      const msg = await owner!.call<SharedMessage>('create', {
        name: 'bad',
        context: String(ctx),
        seqno: '1',
        ops: { enable: 'throw' },
      });
      using bad = DmaFence.import(msg);
      bad.enableSwSignaling();
      const ev = await owner!.waitEvents(2);
      assert.deepEqual(
        ev.map((e) => e.kind),
        ['enable', 'uncaught'],
      );
      // Later messages to that thread are still handled.
      using g = new DmaFence(ctx, 2n);
      await owner!.call('import', { name: 'g', msg: g.share() });
      await owner!.call('addCallback', { name: 'g', tag: 'after' });
      g.signal();
      assert.deepEqual(tags(await owner!.waitEvents(1)), ['after']);
      bad.signal();
    });
  });

  it('the signaled poll runs only in the owner', async () => {
    await withAgents(1, async ([owner]) => {
      const msg = await owner!.call<SharedMessage>('create', {
        name: 'f',
        context: String(DmaFence.contextAlloc(1)),
        seqno: '1',
        ops: { signaled: true },
      });
      using f = DmaFence.import(msg);
      assert.equal(f.isSignaled(), false, 'another thread sees only the flag');
      assert.equal(f.getStatus(), 0);
      assert.deepEqual(await owner!.events(), []);
      assert.equal(await owner!.call('isSignaled', { name: 'f' }), true);
      assert.deepEqual(tags(await owner!.events(), 'signaled'), ['f']);
      assert.equal(f.isSignaledFlag(), true);
      assert.equal(f.getStatus(), 1);
    });
  });

  it('release runs once, in the owner, when the last reference in any thread is gone', async () => {
    await withAgents(2, async ([owner, other]) => {
      const msg = await owner!.call<SharedMessage>('create', {
        name: 'f',
        context: String(DmaFence.contextAlloc(1)),
        seqno: '1',
        ops: { release: true },
      });
      const f = DmaFence.import(msg);
      await other!.call('import', { name: 'f', msg: f.share() });
      await owner!.call('signal', { name: 'f' });
      await owner!.call('dispose', { name: 'f' });
      await other!.call('dispose', { name: 'f' });
      assert.deepEqual(await owner!.events(), [], 'main still holds a reference');
      f.dispose();
      const ev = await owner!.waitEvents(1);
      assert.deepEqual(
        ev.map((e) => [e.kind, e.thread, e.status]),
        [['release', owner!.threadId, 1]],
      );
      await sleep(20);
      assert.deepEqual(await owner!.events(), [], 'only once');
    });
  });

  it('setDeadline from another worker reaches the owner; earliest kept; none after signal', async () => {
    await withAgents(2, async ([owner, other]) => {
      const msg = await owner!.call<SharedMessage>('create', {
        name: 'f',
        context: String(DmaFence.contextAlloc(1)),
        seqno: '1',
        ops: { deadline: true },
      });
      using f = DmaFence.import(msg);
      await other!.call('import', { name: 'f', msg: f.share() });
      for (const ns of ['5000', '3000', '9000'])
        await other!.call('setDeadline', { name: 'f', ns });
      assert.equal(f.deadline, 3000n);
      // One message per call; each delivers the earliest deadline known at that time.
      const ev = await owner!.waitEvents(3);
      assert.equal(ev.length, 3);
      assert.ok(ev.every((e) => e.kind === 'deadline' && e.thread === owner!.threadId));
      assert.ok(
        ev.every((e) => e.value === '5000' || e.value === '3000'),
        ev.map((e) => e.value).join(),
      );
      assert.equal(ev.at(-1)?.value, '3000');
      f.signal();
      await other!.call('setDeadline', { name: 'f', ns: '1' });
      await sleep(20);
      assert.deepEqual(await owner!.events(), []);
    });
  });
});

describe('reference counting across threads', () => {
  it('the last reference dropped in any thread with callbacks pending elsewhere signals -EDEADLK', async () => {
    await withAgents(2, async ([a, b]) => {
      for (const lastIn of ['main', 'worker'] as const) {
        const f = new DmaFence(DmaFence.contextAlloc(1), 1n);
        await a!.call('import', { name: 'f', msg: f.share() });
        await b!.call('import', { name: 'f', msg: f.share() });
        await b!.call('addCallback', { name: 'f', tag: 'b1' });
        await b!.call('addCallback', { name: 'f', tag: 'b2' });
        await b!.call('dispose', { name: 'f' });
        if (lastIn === 'main') {
          await a!.call('dispose', { name: 'f' });
          f.dispose();
        } else {
          f.dispose();
          await a!.call('dispose', { name: 'f' });
        }
        const ev = await b!.waitEvents(2);
        assert.deepEqual(tags(ev), ['b1', 'b2']);
        for (const e of ev) {
          assert.equal(e.status, -35, `callback sees -EDEADLK (last reference in ${lastIn})`);
          assert.equal(e.error, -35);
        }
        await assertNoLeak(start);
      }
    });
  });

  it('a remote callback can read its fence even if the signaller dropped it at once', async () => {
    await withAgents(1, async ([b]) => {
      const f = new DmaFence(DmaFence.contextAlloc(1), 1n);
      await b!.call('import', { name: 'f', msg: f.share() });
      await b!.call('addCallback', { name: 'f', tag: 'b' });
      await b!.call('dispose', { name: 'f' });
      f.setError(-125);
      f.signal();
      f.dispose();
      const ev = await b!.waitEvents(1);
      assert.equal(ev[0]?.status, -125);
    });
  });

  it('without callbacks the last reference frees the fence silently', async () => {
    await withAgents(1, async ([owner]) => {
      const msg = await owner!.call<SharedMessage>('create', {
        name: 'f',
        context: String(DmaFence.contextAlloc(1)),
        seqno: '1',
        ops: { release: true },
      });
      const f = DmaFence.import(msg);
      f.removeCallback(f.addCallback(() => {}));
      await owner!.call('dispose', { name: 'f' });
      f.dispose();
      const ev = await owner!.waitEvents(1);
      assert.deepEqual(
        ev.map((e) => [e.kind, e.status, e.error]),
        [['release', 0, 0]],
        'released unsignalled, without error',
      );
    });
  });
});

describe('signalling annotations across threads', () => {
  afterEach(() => {
    lockdepEnable(false);
    lockdepReset();
  });

  it("reports the seed's ABBA: a waiter holds lock A, the signalling side takes A", async () => {
    await withAgents(1, async ([waiter]) => {
      lockdepEnable(true, 'record');
      await waiter!.call('lockdep', { on: true });
      using f = new DmaFence(DmaFence.contextAlloc(1), 1n);
      await waiter!.call('import', { name: 'f', msg: f.share() });
      // Thread B: holds A across a fence wait.
      assert.equal(
        await waiter!.call('waitUnderLock', { name: 'f', lock: 'fenceTestMutexA', timeout: 0 }),
        0,
      );
      // Thread A: its signalling path (a fence callback runs inside signal()) takes A.
      const a = new LockClass('fenceTestMutexA');
      f.addCallback(() => {
        lockAcquire(a);
        lockRelease(a);
      });
      f.signal();
      const all: LockdepReport[] = [
        ...lockdepReports(),
        ...(await waiter!.call<LockdepReport[]>('reports')),
      ];
      const dl = all.filter((r) => r.kind === 'deadlock');
      assert.ok(dl.length >= 1, JSON.stringify(all));
      assert.ok(dl.some((r) => r.locks.includes('fenceTestMutexA')));
      await waiter!.call('lockdep', { on: false });
    });
  });

  it('a blocking wait in a callback delivered through the mailbox is a might-sleep', async () => {
    await withAgents(1, async ([b]) => {
      await b!.call('lockdep', { on: true });
      const ctx = DmaFence.contextAlloc(1);
      using f = new DmaFence(ctx, 1n);
      using g = new DmaFence(ctx, 2n);
      await b!.call('import', { name: 'f', msg: f.share() });
      await b!.call('import', { name: 'g', msg: g.share() });
      await b!.call('addCallback', { name: 'f', tag: 'w', waitIn: 'g' });
      f.signal();
      await b!.waitEvents(1);
      const r = await b!.call<LockdepReport[]>('reports');
      assert.ok(
        r.some((x) => x.kind === 'might-sleep' && x.thread === b!.threadId),
        JSON.stringify(r),
      );
      await b!.call('lockdep', { on: false });
    });
  });
});

describe('races', () => {
  it('race_signal_callback: callbacks added while the other thread signals are never lost', async () => {
    for (const before of [false, true]) {
      const shared = new SharedArrayBuffer(6 * 4);
      const context = String(DmaFence.contextAlloc(1));
      const workers = [0, 1].map(
        (id) =>
          new Worker(new URL('./workers/fence-race.js', import.meta.url), {
            workerData: { id, before, shared, context },
          }),
      );
      try {
        const results = workers.map(
          (w) =>
            new Promise<{ pass: number; miss: number; err: string }>((resolve, reject) => {
              w.once('message', resolve);
              w.once('error', reject);
            }),
        );
        // Race for a while once both threads run (starting a worker can take long under load).
        assert.ok(await until(() => Atomics.load(new Int32Array(shared), 5) === 2, 10_000));
        await sleep(400);
        Atomics.store(new Int32Array(shared), 0, 1);
        const got = await Promise.all(results);
        for (const g of got) {
          assert.equal(g.err, '');
          assert.ok(g.pass > 0);
        }
      } finally {
        Atomics.store(new Int32Array(shared), 0, 1);
        await Promise.all(workers.map((w) => exitOrTerminate(w)));
      }
    }
  });
});

describe('stress', () => {
  it('4 workers: thousands of fences signalled in one, waited on and called back in three', async () => {
    const signaller = await Agent.start('fence-stress.js');
    const waiters = await Promise.all([0, 1, 2].map(() => Agent.start('fence-stress.js')));
    const all = [signaller, ...waiters];
    try {
      let callbacks = 0;
      let asyncWaits = 0;
      let syncWaits = 0;
      const batches = 5;
      const n = 400;
      for (let b = 0; b < batches; b++) {
        const msgs = await signaller.call<SharedMessage[][]>('batch', {
          n,
          waiters: waiters.length,
        });
        await Promise.all(waiters.map((w, i) => w.call('prepare', { msgs: msgs[i], seed: b })));
        const [sig, ...sync] = await Promise.all([
          signaller.call<{ signalled: number; errors: string[] }>('signal', { seed: 100 + b }),
          ...waiters.map((w) => w.call<{ waits: number; errors: string[] }>('syncwaits')),
        ]);
        assert.deepEqual(sig?.errors, []);
        assert.equal(sig?.signalled, n);
        for (const s of sync) {
          assert.deepEqual(s.errors, []);
          syncWaits += s.waits;
        }
        const fin = await Promise.all(
          waiters.map((w) =>
            w.call<{ errors: string[]; callbacks: number; asyncWaits: number }>('finish'),
          ),
        );
        for (const r of fin) {
          assert.deepEqual(r.errors, []);
          callbacks += r.callbacks;
          asyncWaits += r.asyncWaits;
        }
        const own = await signaller.call<{ ownCallbacks: number; ownCallbacksRun: number }>(
          'dispose',
        );
        assert.equal(own.ownCallbacksRun, own.ownCallbacks);
      }
      // Sanity of the mix itself (so the run really exercised every path).
      assert.ok(callbacks > 1000, `callbacks ${callbacks}`);
      assert.ok(asyncWaits > 1000, `async waits ${asyncWaits}`);
      assert.ok(syncWaits > 500, `sync waits ${syncWaits}`);
    } finally {
      await Promise.all(all.map((a) => a.stop()));
    }
  });
});

describe('owner thread exit', () => {
  it('fences whose owner thread exits complete with -ENODEV and wake their waiters', async () => {
    const w = new Worker(new URL('./workers/fence-owner-exit.js', import.meta.url));
    const msg = await new Promise<SharedMessage>((resolve, reject) => {
      w.once('message', resolve);
      w.once('error', reject);
    });
    using f = DmaFence.import(msg);
    const remaining = await f.wait({ timeout: 5000 });
    assert.ok(remaining > 0, 'the waiter woke before its timeout');
    assert.equal(f.getStatus(), -ERRNO.ENODEV);
    await exitOrTerminate(w);
  });
});

describe('terminated worker', () => {
  it('is reaped: its fences that need its ops fail with -ENODEV, its thread slot is freed', async () => {
    const d = domain();
    const threads = d.threadsInUse();
    const w = new Worker(new URL('./workers/fence-terminated.js', import.meta.url));
    const [ma, mb] = await new Promise<SharedMessage[]>((resolve, reject) => {
      w.once('message', resolve);
      w.once('error', reject);
    });
    using a = DmaFence.import(ma!);
    using b = DmaFence.import(mb!);
    assert.equal(d.threadsInUse(), threads + 1);
    const waiting = a.wait({ timeout: 5000 });
    await w.terminate();
    assert.ok((await waiting) > 0, 'the waiter woke');
    assert.equal(a.getStatus(), -ERRNO.ENODEV);
    // A fence that only had a release op can still be signalled by anyone.
    assert.equal(b.isSignaledFlag(), false);
    b.signal();
    await until(() => d.threadsInUse() === threads, 3000);
    assert.equal(d.threadsInUse(), threads, 'thread slot reaped');
  });
});
