import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DmaFence } from '../src/dma-fence.js';
import { DmaFenceArray } from '../src/dma-fence-array.js';
import { DmaFenceChain } from '../src/dma-fence-chain.js';
import { domain } from '../src/substrate/domain.js';
import { DmaBufError } from '../src/substrate/errno.js';
import {
  type ContainerWorker,
  closeWorkers,
  disposeAll,
  leakGuard,
  range,
  rng,
  same,
  seedFromEnv,
  shuffle,
  startWorkers,
  until,
} from './workers/containers-pool.js';

/** The kernel selftest's CHAIN_SZ. */
const CHAIN_SZ = 4 << 10;

function err(code: string): (e: unknown) => boolean {
  return (e) => {
    assert.ok(e instanceof DmaBufError, `expected DmaBufError, got ${String(e)}`);
    assert.equal(e.code, code);
    return true;
  };
}

/** `struct fence_chains`: one fence and one chain node per point. */
interface Chains {
  fences: DmaFence[];
  chains: DmaFenceChain[];
  tail: DmaFenceChain;
}

function chainsInit(count: number, seqnoOf: (i: number) => number): Chains {
  const ctx = DmaFence.contextAlloc(1);
  const fences: DmaFence[] = [];
  const chains: DmaFenceChain[] = [];
  let tail: DmaFenceChain | null = null;
  for (let i = 0; i < count; i++) {
    const f = new DmaFence(ctx, BigInt(i + 1));
    fences.push(f);
    tail = DmaFenceChain.create(tail, f, BigInt(seqnoOf(i)));
    chains.push(tail);
  }
  return { fences, chains, tail: tail! };
}

function chainsFini(fc: Chains): void {
  for (const f of fc.fences) {
    f.checkAndSignal();
    f.dispose();
  }
  for (const c of fc.chains) c.dispose();
}

const seqnoInc = (i: number): number => i + 1;
const seqnoInc2 = (i: number): number => 2 * i + 2;

/** findSeqno that must succeed; returns the found fence handle (or null). */
function find(head: DmaFence, seqno: number): DmaFence | null {
  return DmaFenceChain.findSeqno(head, BigInt(seqno)).fence;
}

describe('dma_fence_chain', () => {
  leakGuard();

  describe('kernel selftests (st-dma-fence-chain.c)', () => {
    it('sanitycheck', () => {
      const f = new DmaFence(DmaFence.contextAlloc(1), 1n);
      const chain = DmaFenceChain.create(null, f, 1n);
      f.signal();
      f.dispose();
      assert.equal(chain.isSignaled(), true);
      assert.equal(chain.driverName, 'detached-driver');
      assert.equal(chain.timelineName, 'signaled-timeline');
      chain.dispose();
    });

    it('find_seqno', () => {
      const fc = chainsInit(64, seqnoInc);
      try {
        const zero = find(fc.tail, 0);
        assert.ok(same(zero, fc.tail), 'find_seqno(0) is a no-op');
        zero?.dispose();
        for (let i = 0; i < fc.chains.length; i++) {
          const f = find(fc.tail, i + 1);
          assert.ok(same(f, fc.chains[i]), `find_seqno(${i + 1}) from the tail`);
          const self = find(f!, i + 1);
          assert.ok(same(self, fc.chains[i]), `find self ${i + 1}`);
          self?.dispose();
          assert.throws(() => find(f!, i + 2), err('EINVAL'), `future point ${i + 2}`);
          const before = find(f!, i);
          if (i > 0) assert.ok(same(before, fc.chains[i - 1]), `find previous ${i}`);
          else assert.ok(same(before, f), 'seqno 0 from a node is that node');
          before?.dispose();
          f?.dispose();
        }
      } finally {
        chainsFini(fc);
      }
    });

    it('find_signaled', () => {
      const fc = chainsInit(2, seqnoInc);
      try {
        fc.fences[0]!.signal();
        const f = find(fc.tail, 1);
        // The kernel accepts the node itself or nothing; walking collects it here.
        assert.equal(f, null, `expected the signalled point to be collected, got ${f?.seqno}`);
      } finally {
        chainsFini(fc);
      }
    });

    it('find_out_of_order', () => {
      const fc = chainsInit(3, seqnoInc);
      try {
        fc.fences[1]!.signal();
        // Point 2 signalled but point 1 did not: waiting for 2 means waiting for 1.
        const f = find(fc.tail, 2);
        assert.ok(same(f, fc.chains[0]), `got point ${f?.seqno}`);
        f?.dispose();
      } finally {
        chainsFini(fc);
      }
    });

    it('find_gap', () => {
      const fc = chainsInit(64, seqnoInc2);
      try {
        for (let i = 0; i < fc.chains.length; i++) {
          const f = find(fc.tail, 2 * i + 1);
          assert.ok(same(f, fc.chains[i]), `find_seqno(${2 * i + 1}) gave ${f?.seqno}`);
          const self = find(f!, 2 * i + 2);
          assert.ok(same(self, fc.chains[i]), 'find self');
          disposeAll(self, f);
        }
      } finally {
        chainsFini(fc);
      }
    });

    it('find_race: 4 workers look up and signal points of one chain concurrently', async () => {
      const seed = seedFromEnv();
      const len = 1024;
      const fc = chainsInit(len, seqnoInc);
      const ws = startWorkers(4);
      try {
        const results = await Promise.all(
          ws.map((w, k) =>
            w.call('findRace', {
              tail: fc.tail.share(),
              fences: fc.fences.map((f) => f.share()),
              seed: seed + k,
              iterations: 1500,
            }),
          ),
        );
        for (const r of results) {
          assert.deepEqual(r.problems, [], `seed ${seed}`);
          assert.ok(r.found + r.gone === 1500);
        }
        const count = fc.fences.filter((f) => f.isSignaledFlag()).length;
        assert.ok(count > 0 && count < len, `completed ${count} points`);
        // The chain is still whole: arming it and signalling the rest completes the tail.
        const done = fc.tail.wait({ timeout: 30_000 });
        for (const f of fc.fences) f.checkAndSignal();
        assert.ok((await done) > 0);
      } finally {
        chainsFini(fc);
        await closeWorkers(ws);
      }
    });

    it('signal_forward', () => {
      const fc = chainsInit(64, seqnoInc);
      try {
        for (let i = 0; i < fc.chains.length; i++) {
          fc.fences[i]!.signal();
          assert.equal(fc.chains[i]!.isSignaled(), true, `chain[${i}] not signalled`);
          if (i + 1 < fc.chains.length) {
            assert.equal(fc.chains[i + 1]!.isSignaled(), false, `chain[${i + 1}] signalled`);
          }
        }
      } finally {
        chainsFini(fc);
      }
    });

    it('signal_backward', () => {
      const fc = chainsInit(64, seqnoInc);
      try {
        for (let i = fc.chains.length - 1; i >= 0; i--) {
          fc.fences[i]!.signal();
          if (i > 0) assert.equal(fc.chains[i]!.isSignaled(), false, `chain[${i}] signalled`);
        }
        for (let i = 0; i < fc.chains.length; i++) {
          assert.equal(fc.chains[i]!.isSignaled(), true, `chain[${i}] not signalled`);
        }
      } finally {
        chainsFini(fc);
      }
    });

    /** A worker blocks on the tail while this thread signals the points in `order`. */
    async function waitWhileSignalling(order: (fc: Chains) => number[]): Promise<void> {
      const fc = chainsInit(CHAIN_SZ, seqnoInc);
      const [w] = startWorkers(1) as [ContainerWorker];
      try {
        let ready!: () => void;
        const isReady = new Promise<void>((res) => {
          ready = res;
        });
        const waiter = w.call(
          'wait',
          { fence: fc.tail.share(), sync: true, arm: true, readyFirst: true },
          () => ready(),
        );
        await isReady;
        for (const i of order(fc)) {
          assert.equal(fc.tail.isSignaledFlag(), false, 'the tail completed early');
          fc.fences[i]!.signal();
        }
        const r = await waiter;
        assert.ok(r.remaining > 0, 'the waiter timed out');
        assert.equal(r.kind, 'DmaFenceChain');
        assert.equal(r.status, 1);
      } finally {
        chainsFini(fc);
        await closeWorkers([w]);
      }
    }

    it('wait_forward', async () => {
      await waitWhileSignalling((fc) => range(fc.fences.length));
    });

    it('wait_backward', async () => {
      await waitWhileSignalling((fc) => range(fc.fences.length).reverse());
    });

    it('wait_random', async () => {
      const seed = seedFromEnv();
      await waitWhileSignalling((fc) => shuffle(range(fc.fences.length), rng(seed)));
    });
  });

  it('continues the timeline of a chain prev with a higher seqno, else opens a new one', () => {
    const ctx = DmaFence.contextAlloc(1);
    const fs = range(5).map((i) => new DmaFence(ctx, BigInt(i + 1)));
    const plain = new DmaFence(ctx, 9n);
    const c1 = DmaFenceChain.create(null, fs[0]!, 10n);
    const c2 = DmaFenceChain.create(c1, fs[1]!, 20n);
    const low = DmaFenceChain.create(c2, fs[2]!, 15n);
    const eq = DmaFenceChain.create(c2, fs[3]!, 20n);
    const afterPlain = DmaFenceChain.create(plain, fs[4]!, 3n);
    try {
      assert.equal(c1.seqno64, true, 'chains order on 64 bits');
      assert.equal(c1.driverName, 'dma_fence_chain');
      assert.equal(c1.timelineName, 'unbound');
      assert.notEqual(c1.context, ctx);
      assert.equal(c1.prevSeqno, 0n);
      assert.equal(c2.context, c1.context);
      assert.equal(c2.seqno, 20n);
      assert.equal(c2.prevSeqno, 10n);
      // Not later: new context, seqno clamped up to prev's, no prev point.
      for (const c of [low, eq]) {
        assert.notEqual(c.context, c2.context);
        assert.equal(c.seqno, 20n);
        assert.equal(c.prevSeqno, 0n);
      }
      // A plain prev: a new context and the seqno as given.
      assert.notEqual(afterPlain.context, plain.context);
      assert.equal(afterPlain.seqno, 3n);
      assert.equal(afterPlain.prevSeqno, 0n);
    } finally {
      for (const f of [...fs, plain]) f.signal();
      disposeAll(afterPlain, eq, low, c2, c1, fs, plain);
    }
  });

  it('uses the full 64-bit seqno (no 32-bit wrap)', () => {
    const ctx = DmaFence.contextAlloc(1);
    const f1 = new DmaFence(ctx, 1n);
    const f2 = new DmaFence(ctx, 2n);
    const f3 = new DmaFence(ctx, 3n);
    const big = (1n << 63n) + 5n;
    const max = (1n << 64n) - 1n;
    const a = DmaFenceChain.create(null, f1, big);
    const b = DmaFenceChain.create(a, f2, max);
    // 2^32 + 1 would be "earlier" than 2^63 + 5 with the 32-bit rule's low bits; not on 64.
    const c = DmaFenceChain.create(b, f3, (1n << 32n) + 1n);
    try {
      assert.equal(a.seqno, big);
      assert.equal(b.context, a.context);
      assert.equal(b.prevSeqno, big);
      assert.equal(c.seqno, max);
      assert.notEqual(c.context, b.context);
      const found = DmaFenceChain.findSeqno(b, big + 1n).fence;
      assert.ok(same(found, b));
      found?.dispose();
      assert.throws(() => DmaFenceChain.create(null, f1, 1n << 64n), err('EINVAL'));
    } finally {
      for (const f of [f1, f2, f3]) f.signal();
      disposeAll(c, b, a, f1, f2, f3);
    }
  });

  it('rejects a chain node as contained fence; accepts an array', async () => {
    const ctx = DmaFence.contextAlloc(2);
    const f = new DmaFence(ctx, 1n);
    const g = new DmaFence(ctx + 1n, 1n);
    const c = DmaFenceChain.create(null, f, 1n);
    const arr = DmaFenceArray.create([f, g], DmaFence.contextAlloc(1), 1n, false);
    const before = domain().liveRecords();
    assert.throws(() => DmaFenceChain.create(null, c, 2n), err('EINVAL'));
    assert.throws(() => DmaFenceChain.create(c, null as unknown as DmaFence, 2n), err('EINVAL'));
    assert.equal(domain().liveRecords(), before);
    const withArray = DmaFenceChain.create(c, arr, 2n);
    try {
      const p = withArray.wait({ timeout: 10_000 });
      g.signal();
      assert.equal(withArray.isSignaledFlag(), false);
      f.signal();
      assert.ok((await p) > 0);
    } finally {
      disposeAll(withArray, arr, c, f, g);
    }
  });

  it('never propagates errors of contained fences', () => {
    const fc = chainsInit(3, seqnoInc);
    try {
      fc.tail.enableSwSignaling();
      fc.fences[1]!.setError(-62);
      for (const f of fc.fences) f.signal();
      assert.equal(fc.tail.isSignaledFlag(), true);
      assert.equal(fc.tail.error, 0);
      assert.equal(fc.tail.getStatus(), 1);
      assert.equal(fc.chains[1]!.getStatus(), 1);
    } finally {
      chainsFini(fc);
    }
  });

  it('keeps one dependent per node, re-armed on the next pending fence', () => {
    const fc = chainsInit(4, seqnoInc);
    try {
      const d = domain();
      const before = d.liveRecords();
      fc.tail.enableSwSignaling();
      assert.equal(d.liveRecords(), before + 1, 'arming hangs exactly one dependent');
      for (const i of [3, 0, 2]) {
        fc.fences[i]!.signal();
        assert.equal(fc.tail.isSignaledFlag(), false);
        assert.equal(d.liveRecords(), before + 1, `re-armed once after point ${i + 1}`);
      }
      fc.fences[1]!.signal();
      assert.equal(fc.tail.isSignaledFlag(), true);
      assert.equal(d.liveRecords(), before, 'no dependent left once complete');
    } finally {
      chainsFini(fc);
    }
  });

  it('completes after the contained fence signal, never inside it (deferred)', () => {
    const fc = chainsInit(2, seqnoInc);
    const seen: string[] = [];
    try {
      fc.fences[0]!.signal();
      fc.tail.addCallback(() => seen.push('chain'));
      fc.fences[1]!.addCallback(() =>
        seen.push(`fence (chain signalled: ${fc.tail.isSignaledFlag()})`),
      );
      fc.fences[1]!.signal();
      assert.deepEqual(seen, ['fence (chain signalled: false)', 'chain']);
    } finally {
      chainsFini(fc);
    }
  });

  it('a plain prev fence must complete too', () => {
    const ctx = DmaFence.contextAlloc(1);
    const plain = new DmaFence(ctx, 1n);
    const f = new DmaFence(ctx, 2n);
    const c = DmaFenceChain.create(plain, f, 2n);
    try {
      c.enableSwSignaling();
      f.signal();
      assert.equal(c.isSignaledFlag(), false);
      assert.equal(c.isSignaled(), false);
      const p = DmaFenceChain.walk(c);
      assert.ok(same(p, plain), 'walk returns the pending plain prev');
      p?.dispose();
      plain.signal();
      assert.equal(c.isSignaledFlag(), true);
    } finally {
      disposeAll(c, plain, f);
    }
  });

  it('walking unlinks signalled predecessors and frees nodes only they held', () => {
    const fc = chainsInit(5, seqnoInc);
    const d = domain();
    try {
      // Keep only the tail's handle among the nodes.
      for (const c of fc.chains.slice(0, 4)) c.dispose();
      for (const i of [0, 1, 2]) fc.fences[i]!.signal();
      const before = d.liveRecords();
      const seen: bigint[] = [];
      for (const link of DmaFenceChain.iterate(fc.tail)) seen.push(link.seqno);
      assert.deepEqual(seen, [5n, 4n], 'head, then the pending predecessors');
      assert.equal(d.liveRecords(), before - 3, 'the three signalled nodes were released');
      const p4 = fc.tail.prev() as DmaFenceChain;
      assert.equal(p4.seqno, 4n);
      assert.equal(p4.prev(), null, 'point 4 now starts the chain');
      assert.equal(p4.prevSeqno, 3n, 'prevSeqno keeps the original point');
      p4.dispose();
    } finally {
      for (const f of fc.fences) f.checkAndSignal();
      disposeAll(fc.fences, fc.tail);
    }
  });

  it('iterate: handles belong to the iteration; break releases the cursor', () => {
    const fc = chainsInit(4, seqnoInc);
    try {
      const kept: DmaFence[] = [];
      let lent: DmaFence | undefined;
      for (const link of DmaFenceChain.iterate(fc.tail)) {
        lent = link;
        kept.push(link.get());
        if (link.seqno === 2n) break;
      }
      assert.deepEqual(
        kept.map((f) => f.seqno),
        [4n, 3n, 2n],
      );
      assert.throws(() => lent!.seqno, err('EBADF'), 'the yielded handle was disposed');
      disposeAll(kept);
      // Not a chain: only the fence itself.
      const only = [...DmaFenceChain.iterate(fc.fences[0]!)].length;
      assert.equal(only, 1);
      assert.equal(DmaFenceChain.walk(fc.fences[0]!), null);
      // Arguments are checked at the call, not at the first step.
      const gone = fc.chains[0]!.get();
      gone.dispose();
      assert.throws(() => DmaFenceChain.iterate(gone), err('EBADF'));
    } finally {
      chainsFini(fc);
    }
  });

  it('contained(): the node fence, or the fence itself', () => {
    const fc = chainsInit(2, seqnoInc);
    try {
      const c = fc.tail.contained();
      assert.ok(same(c, fc.fences[1]));
      const s = DmaFenceChain.contained(fc.tail);
      assert.ok(same(s, fc.fences[1]));
      const p = DmaFenceChain.contained(fc.fences[0]!);
      assert.ok(same(p, fc.fences[0]));
      disposeAll(c, s, p);
      assert.ok(DmaFenceChain.isChain(fc.tail));
      assert.ok(!DmaFenceChain.isChain(fc.fences[0]!));
      assert.throws(() => DmaFenceChain.findSeqno(fc.fences[0]!, 1n), err('EINVAL'));
      const z = DmaFenceChain.findSeqno(fc.fences[0]!, 0n).fence;
      assert.ok(same(z, fc.fences[0]), 'seqno 0 is a no-op even for a plain fence');
      z?.dispose();
    } finally {
      chainsFini(fc);
    }
  });

  it('forwards deadlines to every pending contained fence', () => {
    const fc = chainsInit(3, seqnoInc);
    try {
      fc.fences[0]!.signal();
      fc.tail.setDeadline(1234n);
      assert.deepEqual(
        fc.fences.map((f) => f.deadline),
        [undefined, 1234n, 1234n],
      );
    } finally {
      chainsFini(fc);
    }
  });

  it('releases a 100k-link chain iteratively', () => {
    const d = domain();
    const before = d.liveRecords();
    const ctx = DmaFence.contextAlloc(1);
    let tail: DmaFenceChain | null = null;
    const n = 100_000;
    for (let i = 0; i < n; i++) {
      const f = new DmaFence(ctx, BigInt(i + 1));
      const next = DmaFenceChain.create(tail, f, BigInt(i + 1));
      f.dispose();
      tail?.dispose();
      tail = next;
    }
    assert.equal(d.liveRecords(), before + 2 * n);
    // The whole history is held through the tail only: dropping it must not recurse.
    tail!.dispose();
    assert.equal(d.liveRecords(), before);
  });

  it('completes and collects a 100k-link chain of signalled points', async () => {
    const d = domain();
    const before = d.liveRecords();
    const ctx = DmaFence.contextAlloc(1);
    let tail: DmaFenceChain | null = null;
    const n = 100_000;
    for (let i = 0; i < n; i++) {
      const f = new DmaFence(ctx, BigInt(i + 1));
      f.signal();
      const next = DmaFenceChain.create(tail, f, BigInt(i + 1));
      f.dispose();
      tail?.dispose();
      tail = next;
    }
    // Arming walks (and frees) the whole signalled history in one loop.
    assert.ok((await tail!.wait({ timeout: 30_000 })) > 0);
    assert.equal(d.liveRecords(), before + 2, 'only the tail and its fence are left');
    tail!.dispose();
  });

  describe('across threads', () => {
    it('points owned and signalled by 4 workers in random order; async and sync waiters', async () => {
      const seed = seedFromEnv();
      const rand = rng(seed);
      const ws = startWorkers(5);
      const fences: DmaFence[] = [];
      const chains: DmaFenceChain[] = [];
      try {
        const per = 16;
        const made = await Promise.all(
          ws.slice(0, 4).map((w) => w.call('create', { n: per, ops: true })),
        );
        const owned = made.map((m) => m.fences.map((x: never) => DmaFence.import(x)));
        // Point i comes from worker i % 4.
        let tail: DmaFenceChain | null = null;
        for (let i = 0; i < 4 * per; i++) {
          const f = owned[i % 4][Math.floor(i / 4)] as DmaFence;
          fences.push(f);
          tail = DmaFenceChain.create(tail, f, BigInt(i + 1));
          chains.push(tail);
        }
        const head = tail!;
        const mid = DmaFenceChain.findSeqno(head, 32n).fence!;
        assert.ok(same(mid, chains[31]));
        let ready!: () => void;
        const isReady = new Promise<void>((res) => {
          ready = res;
        });
        // Worker 4 blocks on point 32.
        const waiter = ws[4]!.call(
          'wait',
          { fence: mid.share(), sync: true, arm: true, readyFirst: true },
          () => ready(),
        );
        mid.dispose();
        await isReady;
        let called = 0;
        head.addCallback(() => {
          called++;
        });
        const waitTail = head.wait({ timeout: 30_000 });
        const signals = ws.slice(0, 4).map((w, k) =>
          w.call('signal', {
            order: shuffle(range(per), rand),
            seed: seed + k,
            maxPauseMs: 2,
            errors: { 3: -125 },
          }),
        );
        assert.ok((await waitTail) > 0, `tail wait timed out (seed ${seed})`);
        await Promise.all(signals);
        const w = await waiter;
        assert.equal(w.remaining > 0, true);
        assert.equal(w.status, 1, 'no error propagation through a chain');
        assert.ok(await until(() => called === 1, 10_000), 'tail callback did not run');
        assert.equal(head.getStatus(), 1);
        // Every point is complete.
        assert.ok(chains.every((c) => c.isSignaled()));
        // A blocking wait on a completed chain returns at once.
        assert.ok(head.waitSync({ timeout: 0 }) > 0);
      } finally {
        disposeAll(chains, fences);
        await closeWorkers(ws);
      }
    });

    it('a worker signals points of a main-thread chain while this thread blocks on it', async () => {
      const seed = seedFromEnv();
      const ws = startWorkers(4);
      const all: DmaFence[] = [];
      const chains: DmaFenceChain[] = [];
      try {
        const made = await Promise.all(ws.map((w) => w.call('create', { n: 64, ops: false })));
        for (const m of made) for (const x of m.fences) all.push(DmaFence.import(x));
        const order = shuffle(all, rng(seed));
        let tail: DmaFenceChain | null = null;
        for (const [i, f] of order.entries()) {
          tail = DmaFenceChain.create(tail, f, BigInt(i + 1));
          chains.push(tail);
        }
        tail!.enableSwSignaling();
        const signals = ws.map((w, k) =>
          w.call('signal', {
            order: shuffle(range(64), rng(seed + k)),
            seed: seed + k,
            maxPauseMs: 1,
          }),
        );
        assert.ok(tail!.waitSync({ timeout: 30_000 }) > 0, `sync wait timed out (seed ${seed})`);
        await Promise.all(signals);
      } finally {
        disposeAll(chains, all);
        await closeWorkers(ws);
      }
    });
  });
});
