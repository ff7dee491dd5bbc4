import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DmaFence } from '../src/dma-fence.js';
import { DmaFenceArray } from '../src/dma-fence-array.js';
import { DmaFenceChain } from '../src/dma-fence-chain.js';
import { isContainer } from '../src/dma-fence-containers.js';
import { domain } from '../src/substrate/domain.js';
import { DmaBufError } from '../src/substrate/errno.js';
import {
  closeWorkers,
  disposeAll,
  leakGuard,
  range,
  rawError,
  rng,
  same,
  seedFromEnv,
  shuffle,
  startWorkers,
  tick,
  until,
} from './workers/containers-pool.js';

const ENODATA = -61;
const ETIME = -62;
const ECANCELED = -125;

function einval(e: unknown): boolean {
  assert.ok(e instanceof DmaBufError, `expected DmaBufError, got ${String(e)}`);
  assert.equal(e.code, 'EINVAL');
  return true;
}

/** n pending fences, each on its own new context. */
function fences(n: number): DmaFence[] {
  const ctx = DmaFence.contextAlloc(n);
  return range(n).map((i) => new DmaFence(ctx + BigInt(i), 1n));
}

function array(members: DmaFence[], any = false): DmaFenceArray {
  return DmaFenceArray.create(members, DmaFence.contextAlloc(1), 1n, any);
}

describe('dma_fence_array', () => {
  leakGuard();

  it('creates an array fence with its own names, context, seqno and members', () => {
    const fs = fences(3);
    const ctx = DmaFence.contextAlloc(1);
    const a = DmaFenceArray.create(fs, ctx, 7n, false);
    try {
      assert.ok(a instanceof DmaFenceArray);
      assert.equal(a.driverName, 'dma_fence_array');
      assert.equal(a.timelineName, 'unbound');
      assert.equal(a.context, ctx);
      assert.equal(a.seqno, 7n);
      assert.equal(a.seqno64, false, 'arrays order seqnos on 32 bits');
      assert.equal(a.numFences, 3);
      assert.equal(a.signalOnAny, false);
      assert.ok(DmaFenceArray.isArray(a));
      assert.ok(!DmaFenceArray.isArray(fs[0]!));
      assert.ok(isContainer(a));
      assert.ok(!isContainer(fs[0]!));
      const got = a.fences();
      assert.deepEqual(
        got.map((f, i) => same(f, fs[i])),
        [true, true, true],
      );
      disposeAll(got);
      const m1 = a.member(1);
      assert.ok(same(m1, fs[1]));
      m1.dispose();
      assert.throws(() => a.member(3), einval);
      assert.equal(a.isSignaled(), false);
    } finally {
      disposeAll(a, fs);
    }
  });

  it('holds its own references: the caller may drop its member handles', () => {
    const fs = fences(2);
    const a = array(fs);
    const live = domain().liveRecords();
    const [f0, f1] = fs as [DmaFence, DmaFence];
    const keep0 = f0.get();
    disposeAll(fs);
    assert.equal(domain().liveRecords(), live, 'members must stay alive inside the array');
    a.enableSwSignaling();
    keep0.signal();
    assert.equal(a.isSignaledFlag(), false);
    const m1 = a.member(1);
    m1.signal();
    m1.dispose();
    assert.equal(a.isSignaledFlag(), true);
    keep0.dispose();
    a.dispose();
    assert.throws(
      () => f1.seqno,
      (e: unknown) => e instanceof DmaBufError && e.code === 'EBADF',
    );
  });

  it('signal on all: completes only with the last member, once armed', () => {
    const fs = fences(4);
    const a = array(fs);
    try {
      a.enableSwSignaling();
      for (const i of [2, 0, 3]) {
        fs[i]!.signal();
        assert.equal(a.isSignaledFlag(), false, `signalled after member ${i}`);
        assert.equal(a.isSignaled(), false);
        assert.equal(a.getStatus(), 0);
      }
      fs[1]!.signal();
      assert.equal(a.isSignaledFlag(), true);
      assert.equal(a.getStatus(), 1);
      assert.equal(rawError(a), 0, 'the pending marker is cleared at completion');
      assert.equal(a.driverName, 'detached-driver');
      assert.equal(a.timelineName, 'signaled-timeline');
    } finally {
      disposeAll(a, fs);
    }
  });

  it('signal on any: completes with the first member', () => {
    const fs = fences(3);
    const a = array(fs, true);
    try {
      assert.equal(a.signalOnAny, true);
      a.enableSwSignaling();
      assert.equal(a.isSignaledFlag(), false);
      fs[1]!.signal();
      assert.equal(a.isSignaledFlag(), true);
      assert.equal(a.getStatus(), 1);
      // The remaining members still hold the array until they signal (kernel lifetime).
      fs[0]!.signal();
      fs[2]!.signal();
    } finally {
      disposeAll(a, fs);
    }
  });

  it('is not armed before signalling is enabled, and polling alone completes it', () => {
    const fs = fences(2);
    const a = array(fs);
    try {
      fs[0]!.signal();
      fs[1]!.signal();
      // Nothing was armed: the flag stays clear until someone polls or arms.
      assert.equal(a.isSignaledFlag(), false);
      assert.equal(a.isSignaled(), true);
      assert.equal(a.isSignaledFlag(), true);
      assert.equal(rawError(a), 0);
    } finally {
      disposeAll(a, fs);
    }
  });

  it('poll path with signal-on-any: one signalled member is enough', () => {
    const fs = fences(3);
    const a = array(fs, true);
    try {
      assert.equal(a.isSignaled(), false);
      fs[2]!.signal();
      assert.equal(a.isSignaled(), true);
      fs[0]!.signal();
      fs[1]!.signal();
    } finally {
      disposeAll(a, fs);
    }
  });

  it('propagates the first member error (in signalling order) and ignores later ones', () => {
    const fs = fences(3);
    const a = array(fs);
    try {
      a.enableSwSignaling();
      fs[2]!.setError(ENODATA);
      fs[2]!.signal();
      assert.equal(a.isSignaledFlag(), false);
      assert.equal(a.error, ENODATA, 'the error is recorded before completion');
      fs[0]!.setError(ECANCELED);
      fs[0]!.signal();
      fs[1]!.signal();
      assert.equal(a.isSignaledFlag(), true);
      assert.equal(a.error, ENODATA);
      assert.equal(a.getStatus(), ENODATA);
    } finally {
      disposeAll(a, fs);
    }
  });

  it('ignores member errors after completion (signal on any)', () => {
    const fs = fences(2);
    const a = array(fs, true);
    try {
      a.enableSwSignaling();
      fs[0]!.signal();
      assert.equal(a.getStatus(), 1);
      fs[1]!.setError(ETIME);
      fs[1]!.signal();
      assert.equal(a.error, 0);
      assert.equal(a.getStatus(), 1);
      assert.equal(rawError(a), 0);
    } finally {
      disposeAll(a, fs);
    }
  });

  it('takes the error of members already signalled when it is armed', () => {
    const fs = fences(3);
    fs[1]!.setError(ETIME);
    fs[1]!.signal();
    const a = array(fs);
    try {
      a.enableSwSignaling();
      assert.equal(a.isSignaledFlag(), false);
      assert.equal(a.error, ETIME);
      fs[0]!.setError(ENODATA);
      fs[0]!.signal();
      fs[2]!.signal();
      assert.equal(a.getStatus(), ETIME);
    } finally {
      disposeAll(a, fs);
    }
  });

  it('keeps the first failing member (member order) when completed by polling alone', () => {
    // Deviation from v6.17, which drops the errors on this path (see dma-fence-array.ts).
    const fs = fences(3);
    const a = array(fs);
    try {
      fs[2]!.setError(ECANCELED);
      fs[2]!.signal();
      fs[0]!.signal();
      fs[1]!.setError(ENODATA);
      fs[1]!.signal();
      assert.equal(a.isSignaled(), true);
      assert.equal(a.getStatus(), ENODATA);
    } finally {
      disposeAll(a, fs);
    }
  });

  it('never shows its pending marker: error 0 and status 0 while pending', () => {
    const fs = fences(2);
    const a = array(fs);
    try {
      assert.equal(rawError(a), 1, 'the marker is in place while pending');
      assert.equal(a.error, 0);
      assert.equal(a.getStatus(), 0);
      a.enableSwSignaling();
      fs[0]!.signal();
      assert.equal(a.error, 0);
      fs[1]!.signal();
      assert.equal(rawError(a), 0);
      assert.equal(a.getStatus(), 1);
    } finally {
      disposeAll(a, fs);
    }
  });

  it('signals at once when armed over already-signalled members', () => {
    const fs = fences(3);
    for (const f of fs) f.signal();
    const a = array(fs);
    try {
      a.enableSwSignaling();
      assert.equal(a.isSignaledFlag(), true);
      assert.equal(rawError(a), 0);
    } finally {
      disposeAll(a, fs);
    }
  });

  it('signal on any over a signalled first member arms no later member', () => {
    const fs = fences(2);
    fs[0]!.signal();
    const a = array(fs, true);
    a.enableSwSignaling();
    assert.equal(a.isSignaledFlag(), true);
    // Had member 1 been armed, its dependent would hold the array: it must go away now.
    const before = domain().liveRecords();
    a.dispose();
    assert.equal(domain().liveRecords(), before - 1);
    fs[1]!.signal();
    disposeAll(fs);
  });

  it('completes after the member signal, never inside it (deferred)', () => {
    const fs = fences(2);
    const a = array(fs);
    const seen: string[] = [];
    try {
      a.addCallback(() => seen.push('array'));
      fs[0]!.signal();
      fs[1]!.addCallback(() => {
        seen.push(`member (array signalled: ${a.isSignaledFlag()}, polled: ${a.isSignaled()})`);
      });
      fs[1]!.signal();
      assert.equal(a.isSignaledFlag(), true);
      assert.deepEqual(seen, ['member (array signalled: false, polled: false)', 'array']);
    } finally {
      disposeAll(a, fs);
    }
  });

  it('waits: timeout 0 polls, a wait resolves once the last member signals', async () => {
    const fs = fences(2);
    const a = array(fs);
    try {
      assert.equal(a.waitSync({ timeout: 0 }), 0);
      const p = a.wait({ timeout: 10_000 });
      fs[0]!.signal();
      await tick();
      fs[1]!.signal();
      assert.ok((await p) > 0);
      assert.equal(a.waitSync({ timeout: 0 }), 1);
    } finally {
      disposeAll(a, fs);
    }
  });

  it('rejects containers, empty lists and bad arguments', () => {
    const fs = fences(2);
    const inner = array(fs);
    const chain = DmaFenceChain.create(null, fs[0]!, 1n);
    const before = domain().liveRecords();
    try {
      assert.throws(() => array([fs[1]!, inner]), einval);
      assert.throws(() => array([chain]), einval);
      assert.throws(() => array([]), einval);
      assert.throws(
        () => DmaFenceArray.create(fs, DmaFence.contextAlloc(1), 1n << 32n, false),
        einval,
      );
      assert.throws(() => DmaFenceArray.create(fs, -1n, 1n, false), einval);
      assert.throws(() => DmaFenceArray.create(fs, 1n, 1n, 1 as unknown as boolean), einval);
      assert.throws(
        () => DmaFenceArray.create([fs[0]!, null as unknown as DmaFence], 1n, 1n, false),
        einval,
      );
      assert.equal(domain().liveRecords(), before, 'a rejected create allocates nothing');
    } finally {
      disposeAll(chain, inner, fs);
    }
  });

  it('first/next follow dma_fence_array_first/next', () => {
    const fs = fences(3);
    const a = array(fs);
    try {
      assert.equal(DmaFenceArray.first(null), null);
      const self = DmaFenceArray.first(fs[0]!);
      assert.ok(same(self, fs[0]), 'a non-array is its own first');
      self?.dispose();
      assert.equal(DmaFenceArray.next(fs[0]!, 0), null);
      const f0 = DmaFenceArray.first(a);
      assert.ok(same(f0, fs[0]));
      f0?.dispose();
      for (let i = 0; i < 3; i++) {
        const m = DmaFenceArray.next(a, i);
        assert.ok(same(m, fs[i]));
        m?.dispose();
      }
      assert.equal(DmaFenceArray.next(a, 3), null);
      assert.equal(DmaFenceArray.next(a, -1), null);
    } finally {
      disposeAll(a, fs);
    }
  });

  it('matchContext: a fence by its context, an array by all its members', () => {
    const ctx = DmaFence.contextAlloc(2);
    const f1 = new DmaFence(ctx, 1n);
    const f2 = new DmaFence(ctx, 2n);
    const g = new DmaFence(ctx + 1n, 1n);
    const same2 = array([f1, f2]);
    const mixed = array([f1, g]);
    try {
      assert.equal(DmaFenceArray.matchContext(f1, ctx), true);
      assert.equal(DmaFenceArray.matchContext(g, ctx), false);
      assert.equal(DmaFenceArray.matchContext(same2, ctx), true);
      assert.equal(DmaFenceArray.matchContext(same2, same2.context), false);
      assert.equal(DmaFenceArray.matchContext(mixed, ctx), false);
    } finally {
      for (const f of [f1, f2, g]) f.signal();
      disposeAll(same2, mixed, f1, f2, g);
    }
  });

  it('forwards deadlines to every member', () => {
    const fs = fences(3);
    const a = array(fs);
    try {
      a.setDeadline(5000n);
      a.setDeadline(9000n);
      assert.deepEqual(
        fs.map((f) => f.deadline),
        [5000n, 5000n, 5000n],
      );
    } finally {
      disposeAll(a, fs);
    }
  });

  it('handles many members (order, completion, release) and repeated members', () => {
    const seed = seedFromEnv();
    const rand = rng(seed);
    const fs = fences(67);
    const withDup = [...fs, fs[5]!, fs[5]!];
    const a = array(withDup);
    try {
      assert.equal(a.numFences, 69);
      const got = a.fences();
      assert.ok(
        got.every((f, i) => same(f, withDup[i])),
        `members out of order (seed ${seed})`,
      );
      disposeAll(got);
      a.enableSwSignaling();
      const order = shuffle(range(67), rand);
      for (const [k, i] of order.entries()) {
        assert.equal(a.isSignaledFlag(), false, `early completion (seed ${seed})`);
        fs[i]!.signal();
        if (k < 66) assert.equal(a.isSignaledFlag(), false);
      }
      assert.equal(a.isSignaledFlag(), true);
    } finally {
      disposeAll(a, fs);
    }
  });

  it('runs callbacks of the array in this thread after a member signals', async () => {
    const fs = fences(1);
    const a = array(fs);
    let ran = 0;
    try {
      a.addCallback((f) => {
        ran++;
        assert.ok(f.isSignaledFlag());
      });
      fs[0]!.signal();
      assert.equal(ran, 1);
      assert.throws(
        () => a.addCallback(() => {}),
        (e: unknown) => e instanceof DmaBufError && e.code === 'ENOENT',
      );
    } finally {
      disposeAll(a, fs);
    }
  });

  describe('across threads', () => {
    it('members owned and signalled by 4 workers in random order; waits async', async () => {
      const seed = seedFromEnv();
      const rand = rng(seed);
      const ws = startWorkers(4);
      const members: DmaFence[] = [];
      let all: DmaFenceArray | undefined;
      let any: DmaFenceArray | undefined;
      try {
        const made = await Promise.all(ws.map((w) => w.call('create', { n: 6, ops: true })));
        for (const m of made) for (const msg of m.fences) members.push(DmaFence.import(msg));
        // Interleave the workers' fences so that completion order is not by worker.
        const mixed = shuffle(members, rand);
        all = array(mixed);
        any = array(mixed, true);
        const cb: string[] = [];
        all.addCallback(() => cb.push('all'));
        const waitAll = all.wait({ timeout: 30_000 });
        const waitAny = any.wait({ timeout: 30_000 });
        // Arming the all-array asks each worker (by mailbox) to run its enableSignaling op for
        // each of its members; wait until they all did, before any member signals.
        const deadline = Date.now() + 10_000;
        for (;;) {
          const stats = await Promise.all(ws.map((w) => w.call('stats')));
          if (stats.every((s) => s.enabled === 6)) break;
          assert.ok(
            Date.now() < deadline,
            `enable ops not run in the workers: ${JSON.stringify(stats)}`,
          );
          await new Promise((res) => setTimeout(res, 5));
        }
        const signals = ws.map((w, k) =>
          w.call('signal', {
            order: shuffle(range(6), rand),
            seed: seed + k,
            maxPauseMs: 3,
            errors: k === 2 ? { 4: ETIME } : {},
          }),
        );
        assert.ok((await waitAny) > 0, `any-array did not complete (seed ${seed})`);
        assert.ok((await waitAll) > 0, `all-array did not complete (seed ${seed})`);
        await Promise.all(signals);
        assert.equal(all.getStatus(), ETIME, 'the one failing member gives its error');
        // The callback was queued by the worker that completed the array; it runs from this
        // thread's mailbox, in no fixed order with the wait's wake-up.
        await until(() => cb.length > 0, 10_000);
        assert.deepEqual(cb, ['all']);
      } finally {
        disposeAll(all, any, members);
        await closeWorkers(ws);
      }
    });

    it('waits synchronously while 4 workers signal; a worker waits on a main-thread array', async () => {
      const seed = seedFromEnv();
      const rand = rng(seed);
      const ws = startWorkers(5);
      const members: DmaFence[] = [];
      let a: DmaFenceArray | undefined;
      try {
        const made = await Promise.all(
          ws.slice(0, 4).map((w) => w.call('create', { n: 5, ops: false })),
        );
        for (const m of made) for (const msg of m.fences) members.push(DmaFence.import(msg));
        a = array(shuffle(members, rand));
        // Worker 4 waits (blocking its thread) on the array built here.
        let ready!: () => void;
        const isReady = new Promise<void>((res) => {
          ready = res;
        });
        const waiter = ws[4]!.call(
          'wait',
          { fence: a.share(), sync: true, arm: true, readyFirst: true },
          () => ready(),
        );
        await isReady;
        const signals = ws
          .slice(0, 4)
          .map((w, k) =>
            w.call('signal', { order: shuffle(range(5), rand), seed: seed + k, maxPauseMs: 2 }),
          );
        // Block this thread too; the workers signal meanwhile.
        const r = a.waitSync({ timeout: 30_000 });
        assert.ok(r > 0, `sync wait timed out (seed ${seed})`);
        await Promise.all(signals);
        const w = await waiter;
        assert.equal(w.signalled, true);
        assert.equal(w.status, 1);
        assert.equal(w.kind, 'DmaFenceArray');
        assert.equal(a.getStatus(), 1);
      } finally {
        disposeAll(a, members);
        await closeWorkers(ws);
      }
    });
  });
});
