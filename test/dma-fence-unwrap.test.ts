import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DmaFence } from '../src/dma-fence.js';
import { DmaFenceArray } from '../src/dma-fence-array.js';
import { DmaFenceChain } from '../src/dma-fence-chain.js';
import { isContainer } from '../src/dma-fence-containers.js';
import { DmaFenceUnwrap, dedupArray, unwrap, unwrapMerge } from '../src/dma-fence-unwrap.js';
import { domain } from '../src/substrate/domain.js';
import { DmaBufError } from '../src/substrate/errno.js';
import {
  closeWorkers,
  disposeAll,
  leakGuard,
  range,
  rng,
  same,
  seedFromEnv,
  shuffle,
  startWorkers,
} from './workers/containers-pool.js';

/** The kernel selftest's mock_fence: a pending fence on a new context, seqno 1. */
function mock(): DmaFence {
  const f = new DmaFence(DmaFence.contextAlloc(1), 1n);
  f.enableSwSignaling();
  return f;
}

function mockOn(context: bigint, seqno: bigint, seqno64 = false): DmaFence {
  const f = new DmaFence(context, seqno, undefined, { seqno64 });
  f.enableSwSignaling();
  return f;
}

/** mock_array: all-signal array on a new context, seqno 1. */
function mockArray(...fs: DmaFence[]): DmaFenceArray {
  return DmaFenceArray.create(fs, DmaFence.contextAlloc(1), 1n, false);
}

/** mock_chain: a node with seqno 1. */
function mockChain(prev: DmaFence | null, f: DmaFence): DmaFenceChain {
  return DmaFenceChain.create(prev, f, 1n);
}

/** The leaves of `head`, as records compared with `same`, in iteration order. */
function leaves(head: DmaFence | null): DmaFence[] {
  const out: DmaFence[] = [];
  for (const f of unwrap(head)) out.push(f.get());
  return out;
}

/** Asserts that `head` unwraps to exactly `expected`, in that order. */
function assertLeaves(head: DmaFence | null, expected: DmaFence[], what: string): void {
  const got = leaves(head);
  try {
    assert.equal(got.length, expected.length, `${what}: ${got.length} leaves`);
    for (let i = 0; i < expected.length; i++) {
      assert.ok(same(got[i], expected[i]), `${what}: unexpected leaf ${i}`);
    }
  } finally {
    disposeAll(got);
  }
}

/** Asserts that `head` unwraps to exactly the fences of `expected`, in any order. */
function assertLeafSet(head: DmaFence | null, expected: DmaFence[], what: string): void {
  const got = leaves(head);
  try {
    assert.equal(got.length, expected.length, `${what}: ${got.length} leaves`);
    for (const e of expected)
      assert.ok(
        got.some((g) => same(g, e)),
        `${what}: a fence not seen`,
      );
  } finally {
    disposeAll(got);
  }
}

describe('dma_fence_unwrap', () => {
  leakGuard();

  describe('kernel selftests (st-dma-fence-unwrap.c)', () => {
    it('sanitycheck', () => {
      const f = mock();
      const array = mockArray(f);
      const chain = mockChain(null, array);
      disposeAll(chain, array);
      f.signal();
      f.dispose();
    });

    it('unwrap_array', () => {
      const f1 = mock();
      const f2 = mock();
      const array = mockArray(f1, f2);
      try {
        assertLeafSet(array, [f1, f2], 'array');
      } finally {
        f1.signal();
        f2.signal();
        disposeAll(array, f1, f2);
      }
    });

    it('unwrap_chain', () => {
      const f1 = mock();
      const f2 = mock();
      const chain = mockChain(f1, f2);
      try {
        assertLeaves(chain, [f2, f1], 'chain');
      } finally {
        f1.signal();
        f2.signal();
        disposeAll(chain, f1, f2);
      }
    });

    it('unwrap_chain_array', () => {
      const f1 = mock();
      const f2 = mock();
      const array = mockArray(f1, f2);
      const chain = mockChain(null, array);
      try {
        assertLeafSet(chain, [f1, f2], 'chain of array');
      } finally {
        f1.signal();
        f2.signal();
        disposeAll(chain, array, f1, f2);
      }
    });

    it('unwrap_merge', () => {
      const f1 = mock();
      const f2 = mock();
      const f3 = unwrapMerge(f1, f2);
      try {
        assertLeafSet(f3, [f1, f2], 'merge');
      } finally {
        f1.signal();
        f2.signal();
        disposeAll(f3, f1, f2);
      }
    });

    it('unwrap_merge_duplicate', () => {
      const f1 = mock();
      const f2 = unwrapMerge(f1, f1);
      try {
        assert.ok(same(f2, f1), 'merging a fence with itself gives that fence');
        assertLeaves(f2, [f1], 'merge duplicate');
      } finally {
        f1.signal();
        disposeAll(f2, f1);
      }
    });

    it('unwrap_merge_seqno', () => {
      const ctx0 = DmaFence.contextAlloc(1);
      const ctx1 = DmaFence.contextAlloc(1);
      const f1 = mockOn(ctx1, 1n);
      const f2 = mockOn(ctx1, 2n);
      const f3 = mockOn(ctx0, 1n);
      const f4 = unwrapMerge(f1, f2, f3);
      try {
        // Sorted by context; the later fence of ctx1 only.
        assertLeaves(f4, [f3, f2], 'merge seqno');
      } finally {
        for (const f of [f1, f2, f3]) f.signal();
        disposeAll(f4, f1, f2, f3);
      }
    });

    it('unwrap_merge_order', () => {
      const f1 = mock();
      const f2 = mock();
      const a1 = mockArray(f1, f2);
      const c1 = mockChain(null, f1);
      const c2 = mockChain(c1, f2);
      // The chain holds the same fences as a1, in the opposite order.
      const a2 = unwrapMerge(a1, c2);
      try {
        assertLeaves(a2, [f1, f2], 'merge order');
      } finally {
        f1.signal();
        f2.signal();
        disposeAll(a2, c2, c1, a1, f1, f2);
      }
    });

    it('unwrap_merge_complex', () => {
      const f1 = mock();
      const f2 = mock();
      const f3 = unwrapMerge(f1, f2);
      // The same fences, reversed.
      const f4 = mockArray(f2, f1);
      const stub = DmaFence.getStub();
      // Signalled fences are filtered, the two arrays merged.
      const f5 = unwrapMerge(f3, f4, stub);
      try {
        assertLeafSet(f5, [f1, f2], 'merge complex');
      } finally {
        f1.signal();
        f2.signal();
        disposeAll(f5, stub, f4, f3, f1, f2);
      }
    });

    it('unwrap_merge_complex_seqno', () => {
      const ctx0 = DmaFence.contextAlloc(1);
      const ctx1 = DmaFence.contextAlloc(1);
      const f1 = mockOn(ctx0, 2n);
      const f2 = mockOn(ctx1, 1n);
      const f3 = mockOn(ctx0, 1n);
      const f4 = mockOn(ctx1, 2n);
      const f5 = mockArray(f1, f2);
      const f6 = mockArray(f3, f4);
      const f7 = unwrapMerge(f5, f6);
      try {
        assertLeaves(f7, [f1, f4], 'merge complex seqno');
      } finally {
        for (const f of [f1, f2, f3, f4]) f.signal();
        disposeAll(f7, f6, f5, f1, f2, f3, f4);
      }
    });
  });

  it('unwrap: nothing for null, the fence itself for a plain fence', () => {
    const f = mock();
    try {
      assert.deepEqual([...unwrap(null)], []);
      assert.deepEqual([...unwrap(undefined)], []);
      assertLeaves(f, [f], 'plain');
    } finally {
      f.signal();
      f.dispose();
    }
  });

  it('unwrap: yielded handles belong to the iteration', () => {
    const f1 = mock();
    const f2 = mock();
    const a = mockArray(f1, f2);
    try {
      let first: DmaFence | undefined;
      for (const leaf of unwrap(a)) {
        first ??= leaf;
        assert.ok(leaf.alive);
      }
      assert.equal(first?.alive, false);
      assert.throws(
        () => first!.seqno,
        (e: unknown) => e instanceof DmaBufError && e.code === 'EBADF',
      );
      // Breaking out early releases the cursor (the leak guard checks it).
      for (const leaf of unwrap(a)) if (leaf) break;
    } finally {
      f1.signal();
      f2.signal();
      disposeAll(a, f1, f2);
    }
  });

  it('unwrap: skips (and collects) signalled chain points, descends into arrays at any point', () => {
    const [f1, f2, f3, f4] = [mock(), mock(), mock(), mock()];
    const arr = mockArray(f3, f4);
    const c1 = DmaFenceChain.create(null, f1, 1n);
    const c2 = DmaFenceChain.create(c1, f2, 2n);
    const c3 = DmaFenceChain.create(c2, arr, 3n);
    try {
      assertLeaves(c3, [f3, f4, f2, f1], 'chain with array head');
      f2.signal();
      assertLeaves(c3, [f3, f4, f1], 'signalled point 2 skipped');
      // A chain whose prev is an array (not a chain node) reaches its members too.
      const c4 = DmaFenceChain.create(arr, f1, 1n);
      assertLeaves(c4, [f1, f3, f4], 'array as prev');
      c4.dispose();
    } finally {
      for (const f of [f1, f2, f3, f4]) f.checkAndSignal();
      disposeAll(c3, c2, c1, arr, f1, f2, f3, f4);
    }
  });

  it('merge: all signalled gives a private stub with the latest timestamp', () => {
    const [a, b, c] = [mock(), mock(), mock()];
    a.signalTimestamp(100n);
    b.setError(-62);
    b.signalTimestamp(300n);
    c.signalTimestamp(200n);
    const arr = mockArray(a, c);
    const m = unwrapMerge(arr, b);
    const stub = DmaFence.getStub();
    try {
      assert.ok(m.isSignaledFlag());
      assert.equal(m.context, 0n);
      assert.equal(m.seqno, 0n);
      assert.equal(m.timestamp, 300n);
      assert.equal(m.error, 0, 'errors of signalled inputs are dropped');
      assert.ok(!same(m, stub), 'a private stub, not the shared one');
      assert.ok(!isContainer(m));
    } finally {
      disposeAll(stub, m, arr, a, b, c);
    }
  });

  it('merge of nothing (or only nulls) is a stub with timestamp 0', () => {
    const m1 = unwrapMerge();
    const m2 = DmaFenceUnwrap.merge(null, undefined);
    try {
      for (const m of [m1, m2]) {
        assert.ok(m.isSignaledFlag());
        assert.equal(m.timestamp, 0n);
      }
    } finally {
      disposeAll(m1, m2);
    }
  });

  it('merge: a single pending leaf is returned as is; failed signalled ones are dropped', () => {
    const [p, s1, s2] = [mock(), mock(), mock()];
    s1.setError(-125);
    s1.signal();
    s2.signal();
    const arr = mockArray(s1, p, s2);
    const m = unwrapMerge(s1, arr, null, s2);
    try {
      assert.ok(same(m, p));
      assert.equal(m.error, 0);
      assert.equal(DmaFenceArray.isArray(m), false);
    } finally {
      p.signal();
      disposeAll(m, arr, p, s1, s2);
    }
  });

  it('merge: a flat array, sorted by context, never a chain or a nested container', () => {
    const ctx = DmaFence.contextAlloc(4);
    // Contexts deliberately out of order.
    const f = [3, 1, 0, 2].map((k) => mockOn(ctx + BigInt(k), 1n));
    const inner = mockArray(f[0]!, f[1]!);
    const c1 = DmaFenceChain.create(null, f[2]!, 1n);
    const c2 = DmaFenceChain.create(c1, inner, 2n);
    const m = unwrapMerge(c2, f[3]!, inner);
    try {
      assert.ok(DmaFenceArray.isArray(m));
      const a = m as DmaFenceArray;
      assert.equal(a.numFences, 4);
      assert.equal(a.signalOnAny, false);
      assert.equal(a.seqno, 1n);
      assert.ok(a.context > ctx + 3n, 'a fresh context');
      const ms = a.fences();
      assert.deepEqual(
        ms.map((x) => x.context - ctx),
        [0n, 1n, 2n, 3n],
      );
      assert.ok(ms.every((x) => !isContainer(x)));
      disposeAll(ms);
      // Merging the merge again flattens it: same leaves, a new array.
      const again = unwrapMerge(m, f[0]!);
      assertLeaves(again, [f[2]!, f[1]!, f[3]!, f[0]!], 'merge of a merge');
      again.dispose();
    } finally {
      for (const x of f) x.signal();
      disposeAll(m, c2, c1, inner, f);
    }
  });

  it('merge keeps the later fence per context by the kernel seqno order (32-bit wrap, 64-bit)', () => {
    const ctx = DmaFence.contextAlloc(2);
    const old32 = mockOn(ctx, 0xffff_ffffn);
    const wrapped32 = mockOn(ctx, 1n);
    const big64 = mockOn(ctx + 1n, 0xffff_ffffn, true);
    const small64 = mockOn(ctx + 1n, 1n, true);
    const m32 = unwrapMerge(old32, wrapped32);
    const m64 = unwrapMerge(small64, big64);
    try {
      assert.ok(same(m32, wrapped32), '1 follows 0xffffffff on 32 bits');
      assert.ok(same(m64, big64), 'no wrap with 64-bit seqnos');
    } finally {
      for (const f of [old32, wrapped32, big64, small64]) f.signal();
      disposeAll(m32, m64, old32, wrapped32, big64, small64);
    }
  });

  it('dedupArray sorts by context, keeps the latest of each, disposes the rest', () => {
    const ctx = DmaFence.contextAlloc(2);
    const a1 = mockOn(ctx + 1n, 1n);
    const a3 = mockOn(ctx + 1n, 3n);
    const b2 = mockOn(ctx, 2n);
    const b1 = mockOn(ctx, 1n);
    const list = [a1.get(), b1.get(), a3.get(), b2.get()];
    const dropped = [list[0]!, list[1]!];
    try {
      assert.equal(dedupArray([]), 0, 'an empty list stays empty');
      assert.equal(dedupArray(list), 2);
      assert.equal(list.length, 2);
      assert.ok(same(list[0], b2) && same(list[1], a3));
      assert.ok(
        dropped.every((h) => !h.alive),
        'dropped handles are disposed',
      );
    } finally {
      for (const f of [a1, a3, b2, b1]) f.signal();
      disposeAll(list, a1, a3, b2, b1);
    }
  });

  it('rejects what is not a fence', () => {
    const before = domain().liveRecords();
    assert.throws(
      () => unwrapMerge({} as DmaFence),
      (e: unknown) => e instanceof DmaBufError && e.code === 'EINVAL',
    );
    assert.throws(
      () => unwrap(42 as unknown as DmaFence),
      (e: unknown) => e instanceof DmaBufError && e.code === 'EINVAL',
    );
    const f = mock();
    f.dispose();
    assert.throws(
      () => unwrap(f),
      (e: unknown) => e instanceof DmaBufError && e.code === 'EBADF',
    );
    // An iterator that is never started holds no reference (the leak guard checks it).
    const g = mock();
    void unwrap(g);
    g.signal();
    g.dispose();
    assert.equal(domain().liveRecords(), before);
  });

  it('merges fences of 4 workers, waited on here and in a worker while they signal', async () => {
    const seed = seedFromEnv();
    const rand = rng(seed);
    const ws = startWorkers(5);
    const imported: DmaFence[] = [];
    let merged: DmaFence | undefined;
    try {
      const made = await Promise.all(ws.slice(0, 4).map((w) => w.call('create', { n: 3 })));
      for (const m of made) for (const x of m.fences) imported.push(DmaFence.import(x));
      // Three fences per worker timeline: only each timeline's latest (seqno 3) is kept.
      const parts = shuffle(imported, rand);
      const half = mockArray(...parts.slice(0, 6));
      merged = unwrapMerge(half, ...parts.slice(6));
      half.dispose();
      assert.ok(DmaFenceArray.isArray(merged));
      const ms = (merged as DmaFenceArray).fences();
      assert.deepEqual(
        ms.map((x) => x.seqno),
        [3n, 3n, 3n, 3n],
      );
      assert.deepEqual(
        ms.map((x) => x.context),
        made.map((m) => m.context as bigint).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)),
      );
      disposeAll(ms);
      let ready!: () => void;
      const isReady = new Promise<void>((res) => {
        ready = res;
      });
      const waiter = ws[4]!.call(
        'wait',
        { fence: merged.share(), sync: true, arm: true, readyFirst: true },
        () => ready(),
      );
      await isReady;
      const here = merged.wait({ timeout: 30_000 });
      const signals = ws
        .slice(0, 4)
        .map((w, k) =>
          w.call('signal', { order: shuffle(range(3), rand), seed: seed + k, maxPauseMs: 2 }),
        );
      assert.ok((await here) > 0, `merged wait timed out (seed ${seed})`);
      await Promise.all(signals);
      const w = await waiter;
      assert.equal(w.status, 1);
      assert.equal(w.kind, 'DmaFenceArray');
    } finally {
      disposeAll(merged, imported);
      await closeWorkers(ws);
    }
  });
});
