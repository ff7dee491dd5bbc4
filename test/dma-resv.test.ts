// dma_resv: unit tests of each rule (usages, reservation, replacement, iterators, queries,
// waits), the no-hardware cases of drivers/dma-buf/st-dma-resv.c retold, and implicit
// synchronisation between threads through a reservation object alone.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DmaFence } from '../src/dma-fence.js';
import { DmaFenceArray } from '../src/dma-fence-array.js';
import { DmaResv, DmaResvUsage, dmaResvUsageRw, resvRelease } from '../src/dma-resv.js';
import { domain } from '../src/substrate/domain.js';
import { WwAcquireCtx, wwUnlock } from '../src/ww-mutex.js';
import type { ImplicitData, ImplicitResult } from './workers/resv-implicit.js';
import { bug, errno, leakGuard, runWorkers, sleep } from './workers/resv-pool.js';

const USAGES = [
  DmaResvUsage.KERNEL,
  DmaResvUsage.WRITE,
  DmaResvUsage.READ,
  DmaResvUsage.BOOKKEEP,
] as const;
const NAMES = ['kernel', 'write', 'read', 'bookkeep'];

function same(a: DmaFence | null | undefined, b: DmaFence): boolean {
  return !!a && a._slot === b._slot && a._gen === b._gen;
}

/** The (fence, usage) pairs of the locked walk at `usage`, as [seqno, usage] for short asserts. */
function entries(resv: DmaResv, usage: DmaResvUsage = DmaResvUsage.BOOKKEEP): [bigint, number][] {
  const out: [bigint, number][] = [];
  const it = resv.fences(usage);
  for (const f of it) out.push([f.seqno, it.fenceUsage]);
  return out;
}

/** Runs `fn` with `resv` locked, always unlocking. */
function locked<T>(resv: DmaResv, fn: () => T): T {
  resv.lock();
  try {
    return fn();
  } finally {
    resv.unlock();
  }
}

describe('dma_resv: st-dma-resv.c', () => {
  leakGuard();

  it('sanitycheck: a signalled fence, then lock and unlock an empty object', () => {
    const f = new DmaFence(DmaFence.contextAlloc(1), 0n);
    f.signal();
    f.dispose();
    using resv = new DmaResv();
    resv.lock();
    assert.ok(resv.isLocked());
    resv.unlock();
    assert.ok(!resv.isLocked());
  });

  for (const usage of USAGES) {
    it(`signaling (${NAMES[usage]}): testSignaled follows the fence`, () => {
      using f = new DmaFence(DmaFence.contextAlloc(1), 0n);
      using resv = new DmaResv();
      resv.lock();
      resv.reserveFences(1);
      resv.addFence(f, usage);
      assert.equal(resv.testSignaled(usage), false, 'unexpectedly signalled');
      f.signal();
      assert.equal(resv.testSignaled(usage), true, 'not reporting signalled');
      resv.unlock();
    });

    it(`for_each (${NAMES[usage]}): the locked walk yields the fence with its usage`, () => {
      using f = new DmaFence(DmaFence.contextAlloc(1), 0n);
      using resv = new DmaResv();
      resv.lock();
      resv.reserveFences(1);
      resv.addFence(f, usage);
      let found = 0;
      const it = resv.fences(usage);
      for (const fence of it) {
        found++;
        assert.ok(same(fence, f), 'unexpected fence');
        assert.equal(it.fenceUsage, usage, 'unexpected fence usage');
        assert.equal(it.isRestarted, found === 1);
      }
      assert.equal(found, 1);
      f.signal();
      assert.equal(entries(resv, usage).length, 1, 'the locked walk includes signalled fences');
      resv.unlock();
    });

    it(`for_each_unlocked (${NAMES[usage]}): restarts when the list is replaced`, () => {
      using f = new DmaFence(DmaFence.contextAlloc(1), 0n);
      using resv = new DmaResv();
      locked(resv, () => {
        resv.reserveFences(1);
        resv.addFence(f, usage);
      });
      let steps = 0;
      let restarts = 0;
      const it = resv.fencesUnlocked(usage);
      for (const fence of it) {
        steps++;
        assert.ok(same(fence, f));
        assert.equal(it.fenceUsage, usage);
        if (it.isRestarted) restarts++;
        assert.ok(steps === 1 ? it.isRestarted : true, 'no restart flag on the first fence');
        if (steps === 1) {
          // Reallocate the list under the walker (the kernel test pokes the cursor instead).
          locked(resv, () => resv.reserveFences(1));
        }
        assert.ok(steps <= 2, 'more than one fence found');
      }
      assert.equal(steps, 2, 'the replaced list restarts the walk');
      assert.equal(restarts, 2);
      f.signal();
    });

    it(`get_fences (${NAMES[usage]}): returns the fence with a reference`, () => {
      using f = new DmaFence(DmaFence.contextAlloc(1), 0n);
      using resv = new DmaResv();
      locked(resv, () => {
        resv.reserveFences(1);
        resv.addFence(f, usage);
      });
      const got = resv.getFences(usage);
      assert.equal(got.length, 1);
      assert.ok(same(got[0], f));
      for (const g of got) g.dispose();
      f.signal();
      assert.deepEqual(resv.getFences(usage), [], 'signalled fences are not returned');
    });
  }
});

describe('dma_resv: usages', () => {
  leakGuard();

  it('a query for usage U sees every fence with usage <= U', () => {
    using resv = new DmaResv();
    const ctx = DmaFence.contextAlloc(4);
    const fences = USAGES.map((u) => new DmaFence(ctx + BigInt(u), BigInt(u)));
    try {
      locked(resv, () => {
        resv.reserveFences(4);
        for (const u of USAGES) resv.addFence(fences[u]!, u);
        for (const q of USAGES) {
          assert.deepEqual(
            entries(resv, q).map(([s]) => Number(s)),
            USAGES.filter((u) => u <= q),
          );
        }
      });
      for (const q of USAGES) {
        const got = resv.getFences(q);
        assert.equal(got.length, q + 1);
        for (const g of got) g.dispose();
      }
    } finally {
      for (const f of fences) f.dispose();
    }
  });

  it('usageRw: a write waits for reads (READ), a read for writes (WRITE)', () => {
    assert.equal(dmaResvUsageRw(true), DmaResvUsage.READ);
    assert.equal(dmaResvUsageRw(false), DmaResvUsage.WRITE);
    assert.equal(DmaResv.usageRw(true), DmaResvUsage.READ);
  });

  it('rejects bad usages', () => {
    using resv = new DmaResv();
    using f = new DmaFence(DmaFence.contextAlloc(1), 1n);
    assert.throws(() => resv.fencesUnlocked(4 as DmaResvUsage), errno('EINVAL'));
    assert.throws(() => resv.testSignaled(-1 as DmaResvUsage), errno('EINVAL'));
    locked(resv, () => {
      resv.reserveFences(1);
      assert.throws(() => resv.addFence(f, 1.5 as DmaResvUsage), errno('EINVAL'));
      assert.throws(() => resv.addFence({} as DmaFence, 1), errno('EINVAL'));
    });
  });
});

describe('dma_resv: reservations', () => {
  leakGuard();

  it('adding with no reservation is the kernel BUG; so is adding after unlock without a new one', () => {
    using resv = new DmaResv();
    const ctx = DmaFence.contextAlloc(3);
    using a = new DmaFence(ctx, 1n);
    using b = new DmaFence(ctx + 1n, 1n);
    using c = new DmaFence(ctx + 2n, 1n);
    resv.lock();
    assert.throws(() => resv.addFence(a, DmaResvUsage.WRITE), bug, 'no list at all');
    resv.reserveFences(1);
    resv.addFence(a, DmaResvUsage.WRITE);
    resv.unlock();
    assert.equal(resv.maxFences, 1, 'unlock shrinks max_fences to num_fences (debug reset)');
    resv.lock();
    assert.throws(() => resv.addFence(b, DmaResvUsage.WRITE), bug, 'reservation ended at unlock');
    assert.equal(resv.numFences, 1, 'nothing changed');
    // A fence that replaces an existing slot needs no reservation.
    using a2 = new DmaFence(ctx, 2n);
    resv.addFence(a2, DmaResvUsage.WRITE);
    assert.deepEqual(entries(resv), [[2n, 1]]);
    resv.reserveFences(2);
    resv.addFence(b, DmaResvUsage.READ);
    resv.addFence(c, DmaResvUsage.READ);
    resv.unlock();
  });

  it('reservations are not cumulative', () => {
    using resv = new DmaResv();
    const ctx = DmaFence.contextAlloc(12);
    const fs = Array.from({ length: 12 }, (_, i) => new DmaFence(ctx + BigInt(i), 1n));
    try {
      resv.lock();
      resv.reserveFences(1);
      const max = resv.maxFences;
      resv.reserveFences(1);
      assert.equal(resv.maxFences, max, 'a second reserve(1) with one free slot changes nothing');
      // Fill every slot the allocation gave (it may round up, like kmalloc), then one more.
      for (let i = 0; i < max; i++) {
        resv.reserveFences(1);
        resv.addFence(fs[i]!, DmaResvUsage.READ);
      }
      assert.equal(resv.maxFences, max, 'no reallocation while slots were free');
      assert.throws(() => resv.addFence(fs[max]!, DmaResvUsage.READ), bug);
      resv.reserveFences(2);
      assert.ok(resv.maxFences >= Math.max(max + 2, 2 * max), 'grows to max(num + n, 2 * max)');
      resv.addFence(fs[max]!, DmaResvUsage.READ);
      resv.addFence(fs[max + 1]!, DmaResvUsage.READ);
      assert.equal(resv.numFences, max + 2);
      resv.unlock();
    } finally {
      for (const f of fs) f.dispose();
    }
  });

  it('capacity: at least 4 (power of two of n) for a new list, rounded up to what records hold', () => {
    using resv = new DmaResv();
    locked(resv, () => {
      resv.reserveFences(1);
      assert.ok(resv.maxFences >= 4);
      assert.equal(resv.numFences, 0);
    });
    using big = new DmaResv();
    locked(big, () => {
      big.reserveFences(30);
      assert.ok(big.maxFences >= 32, `max ${big.maxFences}`);
      assert.throws(() => big.reserveFences(-1), errno('EINVAL'));
      assert.throws(() => big.reserveFences(1.5), errno('EINVAL'));
      assert.throws(() => big.reserveFences(2 ** 30), errno('ENOMEM'));
      assert.ok(big.maxFences >= 32, 'a failed reservation leaves the object unchanged');
    });
  });

  it('reallocation prunes signalled fences and keeps the order of the others', () => {
    using resv = new DmaResv();
    const ctx = DmaFence.contextAlloc(4);
    const fs = Array.from({ length: 4 }, (_, i) => new DmaFence(ctx + BigInt(i), BigInt(i)));
    try {
      locked(resv, () => {
        resv.reserveFences(4);
        for (const [i, f] of fs.entries()) resv.addFence(f, i % 2 ? DmaResvUsage.READ : 1);
      });
      fs[1]!.signal();
      fs[2]!.signal();
      locked(resv, () => {
        assert.equal(resv.numFences, 4, 'signalled fences stay until the list is rebuilt');
        resv.reserveFences(1);
        assert.deepEqual(entries(resv), [
          [0n, 1],
          [3n, 2],
        ]);
      });
    } finally {
      for (const f of fs) f.dispose();
    }
  });

  it('writers need the lock; a lock of another thread does not count', () => {
    using resv = new DmaResv();
    using f = new DmaFence(DmaFence.contextAlloc(1), 1n);
    assert.throws(() => resv.reserveFences(1), errno('EPERM'));
    assert.throws(() => resv.addFence(f, 1), errno('EPERM'));
    assert.throws(() => resv.replaceFences(0n, f, 1), errno('EPERM'));
    assert.throws(() => resv.copyFences(resv), errno('EPERM'));
    assert.throws(() => resv.describe(), errno('EPERM'));
    assert.throws(() => resv.assertHeld(), errno('EPERM'));
    assert.throws(() => resv.fences(1).next(), errno('EPERM'));
    assert.throws(() => resv.unlock(), errno('EPERM'));
  });
});

describe('dma_resv: add_fence replacement (v6.7+)', () => {
  leakGuard();

  function scenario(steps: [ctx: number, seq: number, usage: DmaResvUsage][]): [bigint, number][] {
    using resv = new DmaResv();
    const base = DmaFence.contextAlloc(2);
    const made = new Map<string, DmaFence>();
    const fence = (c: number, s: number): DmaFence => {
      const key = `${c}:${s}`;
      let f = made.get(key);
      if (!f) {
        f = new DmaFence(base + BigInt(c), BigInt(s));
        made.set(key, f);
      }
      return f;
    };
    try {
      return locked(resv, () => {
        resv.reserveFences(steps.length);
        for (const [c, s, u] of steps) resv.addFence(fence(c, s), u);
        const it = resv.fences(DmaResvUsage.BOOKKEEP);
        const out: [bigint, number][] = [];
        for (const f of it) out.push([(f.context - base) * 100n + f.seqno, it.fenceUsage]);
        return out;
      });
    } finally {
      for (const f of made.values()) f.dispose();
    }
  }

  it('a later fence of the same context replaces one of the same or a weaker usage', () => {
    assert.deepEqual(
      scenario([
        [0, 1, DmaResvUsage.WRITE],
        [0, 2, DmaResvUsage.WRITE],
      ]),
      [[2n, 1]],
    );
    // READ then a later WRITE: promoted in place.
    assert.deepEqual(
      scenario([
        [0, 1, DmaResvUsage.READ],
        [0, 2, DmaResvUsage.WRITE],
      ]),
      [[2n, 1]],
    );
  });

  it('WRITE then a later READ of the same context keeps both entries', () => {
    assert.deepEqual(
      scenario([
        [0, 1, DmaResvUsage.WRITE],
        [0, 2, DmaResvUsage.READ],
      ]),
      [
        [1n, 1],
        [2n, 2],
      ],
    );
  });

  it('an earlier fence of the same context does not replace a later one', () => {
    assert.deepEqual(
      scenario([
        [0, 2, DmaResvUsage.WRITE],
        [0, 1, DmaResvUsage.WRITE],
      ]),
      [
        [2n, 1],
        [1n, 1],
      ],
    );
  });

  it('the same fence re-added: replaced in place, promoted, or a second entry when degraded', () => {
    assert.deepEqual(
      scenario([
        [0, 1, DmaResvUsage.READ],
        [0, 1, DmaResvUsage.READ],
      ]),
      [[1n, 2]],
      're-adding one fence does not eat a slot (later-or-same)',
    );
    assert.deepEqual(
      scenario([
        [0, 1, DmaResvUsage.BOOKKEEP],
        [0, 1, DmaResvUsage.READ],
      ]),
      [[1n, 2]],
    );
    assert.deepEqual(
      scenario([
        [0, 1, DmaResvUsage.WRITE],
        [0, 1, DmaResvUsage.READ],
      ]),
      [
        [1n, 1],
        [1n, 2],
      ],
    );
  });

  it('other contexts append; a signalled slot of any context is recycled', () => {
    using resv = new DmaResv();
    const ctx = DmaFence.contextAlloc(3);
    using a = new DmaFence(ctx, 1n);
    using b = new DmaFence(ctx + 1n, 1n);
    using c = new DmaFence(ctx + 2n, 7n);
    resv.lock();
    resv.reserveFences(2);
    resv.addFence(a, DmaResvUsage.KERNEL);
    resv.addFence(b, DmaResvUsage.BOOKKEEP);
    a.signal();
    resv.addFence(c, DmaResvUsage.READ);
    assert.deepEqual(entries(resv), [
      [7n, 2],
      [1n, 3],
    ]);
    resv.unlock();
  });

  it('compares 32-bit seqnos with wrap-around, 64-bit ones plainly', () => {
    assert.deepEqual(
      scenario([
        [0, 0xffffffff, DmaResvUsage.WRITE],
        [0, 0x100000001, DmaResvUsage.WRITE],
      ]).length,
      1,
      '0x1_0000_0001 is later than 0xffff_ffff on 32 bits',
    );
    using resv = new DmaResv();
    const ctx = DmaFence.contextAlloc(1);
    using old = new DmaFence(ctx, 0x2_0000_0000n, undefined, { seqno64: true });
    using next = new DmaFence(ctx, 0x1_0000_0001n, undefined, { seqno64: true });
    locked(resv, () => {
      resv.reserveFences(2);
      resv.addFence(old, 1);
      resv.addFence(next, 1);
      assert.equal(resv.numFences, 2, 'an earlier 64-bit seqno does not replace');
    });
  });

  it('warns when a container is added, and stores it', async () => {
    using resv = new DmaResv();
    const ctx = DmaFence.contextAlloc(2);
    using a = new DmaFence(ctx, 1n);
    using b = new DmaFence(ctx + 1n, 1n);
    using arr = DmaFenceArray.create([a, b], DmaFence.contextAlloc(1), 1n, false);
    const warnings: string[] = [];
    const onWarning = (w: Error): void => {
      warnings.push(w.message);
    };
    process.on('warning', onWarning);
    try {
      locked(resv, () => {
        resv.reserveFences(1);
        resv.addFence(arr, DmaResvUsage.WRITE);
      });
      await sleep(1);
      assert.ok(
        warnings.some((w) => w.includes('containers')),
        warnings.join(),
      );
      assert.equal(resv.numFences, 1);
    } finally {
      process.off('warning', onWarning);
      a.signal();
      b.signal();
    }
  });
});

describe('dma_resv: replace, copy, singleton', () => {
  leakGuard();

  it('replaceFences replaces every fence of a context, needs no reservation, adds nothing on no match', () => {
    using resv = new DmaResv();
    const ctx = DmaFence.contextAlloc(3);
    using a1 = new DmaFence(ctx, 1n);
    using a2 = new DmaFence(ctx, 2n);
    using b = new DmaFence(ctx + 1n, 1n);
    using r = new DmaFence(ctx + 2n, 9n);
    resv.lock();
    resv.reserveFences(3);
    resv.addFence(a1, DmaResvUsage.WRITE);
    resv.addFence(b, DmaResvUsage.READ);
    resv.addFence(a2, DmaResvUsage.BOOKKEEP);
    resv.unlock();
    resv.lock();
    resv.replaceFences(ctx, r, DmaResvUsage.KERNEL);
    assert.deepEqual(entries(resv), [
      [9n, 0],
      [1n, 2],
      [9n, 0],
    ]);
    resv.replaceFences(ctx + 5n, r, DmaResvUsage.READ);
    assert.equal(resv.numFences, 3);
    resv.unlock();
    a1.signal();
    a2.signal();
    assert.equal(resv.testSignaled(DmaResvUsage.BOOKKEEP), false, 'the replacement is waited for');
    using empty = new DmaResv();
    locked(empty, () => empty.replaceFences(ctx, r, DmaResvUsage.KERNEL));
    assert.equal(empty.numFences, 0);
  });

  it('copyFences replaces the destination wholesale with the unsignalled fences of the source', () => {
    using src = new DmaResv();
    using dst = new DmaResv();
    const ctx = DmaFence.contextAlloc(4);
    const fs = Array.from({ length: 4 }, (_, i) => new DmaFence(ctx + BigInt(i), BigInt(i)));
    try {
      locked(src, () => {
        src.reserveFences(3);
        src.addFence(fs[0]!, DmaResvUsage.KERNEL);
        src.addFence(fs[1]!, DmaResvUsage.READ);
        src.addFence(fs[2]!, DmaResvUsage.BOOKKEEP);
      });
      locked(dst, () => {
        dst.reserveFences(1);
        dst.addFence(fs[3]!, DmaResvUsage.WRITE);
      });
      fs[1]!.signal();
      locked(dst, () => {
        dst.copyFences(src);
        assert.deepEqual(entries(dst), [
          [0n, 0],
          [2n, 3],
        ]);
        assert.throws(() => dst.copyFences({} as DmaResv), errno('EINVAL'));
      });
      // The old destination fence was dropped: only fs[3]'s own handle holds it now.
      locked(dst, () => {
        dst.reserveFences(1);
        dst.addFence(fs[3]!, DmaResvUsage.WRITE);
      });
      using empty = new DmaResv();
      locked(dst, () => dst.copyFences(empty));
      assert.equal(dst.numFences, 0);
      assert.equal(dst.maxFences, 0, 'copying an empty object leaves no list');
      locked(dst, () => assert.throws(() => dst.addFence(fs[0]!, 1), bug));
    } finally {
      for (const f of fs) f.dispose();
    }
  });

  it('getSingleton: null for none, the fence itself for one, a signal-on-all array for several', async () => {
    using resv = new DmaResv();
    assert.equal(resv.getSingleton(DmaResvUsage.BOOKKEEP), null);
    const ctx = DmaFence.contextAlloc(3);
    using a = new DmaFence(ctx, 1n);
    using b = new DmaFence(ctx + 1n, 1n);
    using c = new DmaFence(ctx + 2n, 1n);
    locked(resv, () => {
      resv.reserveFences(3);
      resv.addFence(a, DmaResvUsage.WRITE);
      resv.addFence(b, DmaResvUsage.READ);
      resv.addFence(c, DmaResvUsage.BOOKKEEP);
    });
    const one = resv.getSingleton(DmaResvUsage.WRITE);
    assert.ok(same(one, a), 'a single fence is returned as itself');
    one?.dispose();
    const arr = resv.getSingleton(DmaResvUsage.READ);
    try {
      assert.ok(arr instanceof DmaFenceArray);
      assert.equal(arr.numFences, 2);
      assert.equal(arr.signalOnAny, false);
      assert.equal(arr.seqno, 1n);
      assert.ok(arr.context > ctx + 2n, 'a fresh context');
      a.signal();
      assert.equal(arr.isSignaled(), false);
      b.signal();
      assert.equal((await arr.wait({ timeout: 1000 })) > 0, true);
    } finally {
      arr?.dispose();
    }
  });
});

describe('dma_resv: unlocked readers', () => {
  leakGuard();

  it('skips signalled fences, holds a reference on the current one, and can end early', () => {
    using resv = new DmaResv();
    const ctx = DmaFence.contextAlloc(3);
    const fs = Array.from({ length: 3 }, (_, i) => new DmaFence(ctx + BigInt(i), 1n));
    try {
      locked(resv, () => {
        resv.reserveFences(3);
        for (const f of fs) resv.addFence(f, DmaResvUsage.READ);
      });
      fs[1]!.signal();
      const seen: bigint[] = [];
      for (const f of resv.fencesUnlocked(DmaResvUsage.READ)) seen.push(f.context - ctx);
      assert.deepEqual(seen, [0n, 2n]);
      // The cursor's reference keeps a fence alive that everyone else dropped.
      const it = resv.fencesUnlocked(DmaResvUsage.READ);
      const first = it.next();
      assert.equal(first.done, false);
      locked(resv, () => {
        resv.replaceFences(ctx, fs[2]!, DmaResvUsage.READ);
      });
      fs[0]!.dispose();
      assert.ok(first.value!.alive, 'the cursor still holds the replaced fence');
      assert.throws(() => first.value!.dispose(), errno('EINVAL'), 'yielded handles are borrowed');
      it.end();
      it.end();
      assert.equal(it.next().done, true);
      // Breaking out of for...of ends the cursor too.
      for (const f of resv.fencesUnlocked(DmaResvUsage.READ)) {
        assert.ok(f.alive);
        break;
      }
    } finally {
      for (const f of fs) f.dispose();
    }
  });

  it('entries appended after the snapshot are not visited in that pass', () => {
    using resv = new DmaResv();
    const ctx = DmaFence.contextAlloc(2);
    using a = new DmaFence(ctx, 1n);
    using b = new DmaFence(ctx + 1n, 1n);
    // A lock-free reader may walk while the lock holder appends into reserved slots.
    resv.lock();
    resv.reserveFences(2);
    resv.addFence(a, DmaResvUsage.READ);
    const it = resv.fencesUnlocked(DmaResvUsage.READ);
    const seen: DmaFence[] = [];
    for (const f of it) {
      seen.push(f);
      if (seen.length === 1) resv.addFence(b, DmaResvUsage.READ);
    }
    resv.unlock();
    assert.equal(seen.length, 1, 'the append is neither visited nor a restart');
    assert.equal(resv.numFences, 2);
  });

  it('wait: shared budget, 0 means one tick, Infinity forever, abort interrupts', async () => {
    using resv = new DmaResv();
    assert.equal(await resv.wait(DmaResvUsage.BOOKKEEP, { timeout: 0 }), 1, 'empty: one tick left');
    assert.equal(await resv.wait(DmaResvUsage.BOOKKEEP), Number.POSITIVE_INFINITY);
    const ctx = DmaFence.contextAlloc(2);
    using a = new DmaFence(ctx, 1n);
    using b = new DmaFence(ctx + 1n, 1n);
    locked(resv, () => {
      resv.reserveFences(2);
      resv.addFence(a, DmaResvUsage.WRITE);
      resv.addFence(b, DmaResvUsage.READ);
    });
    const t0 = performance.now();
    assert.equal(await resv.wait(DmaResvUsage.READ, { timeout: 0 }), 0, 'timeout 0 waits a tick');
    assert.equal(resv.waitSync(DmaResvUsage.READ, { timeout: 0 }), 0);
    assert.ok(performance.now() - t0 >= 1.5, 'each waited about one tick');
    // Only WRITE-level fences count for a WRITE query.
    setTimeout(() => a.signal(), 30);
    const left = await resv.wait(DmaResvUsage.WRITE, { timeout: 2000 });
    assert.ok(left > 0 && left < 2000);
    // The budget is shared: b never signals, so the total stays within the timeout.
    const t1 = performance.now();
    assert.equal(await resv.wait(DmaResvUsage.READ, { timeout: 40 }), 0);
    assert.ok(performance.now() - t1 < 1000);
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 10);
    await assert.rejects(resv.wait(DmaResvUsage.READ, { signal: ac.signal }), errno('ERESTARTSYS'));
    assert.throws(() => resv.waitSync(DmaResvUsage.READ, { timeout: -1 }), errno('EINVAL'));
    b.signal();
    assert.ok(resv.waitSync(DmaResvUsage.BOOKKEEP, { timeout: 100 }) > 0);
  });

  it('setDeadline reaches every unsignalled fence of the usage', () => {
    using resv = new DmaResv();
    const ctx = DmaFence.contextAlloc(2);
    using a = new DmaFence(ctx, 1n);
    using b = new DmaFence(ctx + 1n, 1n);
    locked(resv, () => {
      resv.reserveFences(2);
      resv.addFence(a, DmaResvUsage.WRITE);
      resv.addFence(b, DmaResvUsage.BOOKKEEP);
    });
    resv.setDeadline(DmaResvUsage.READ, 1234n);
    assert.equal(a.deadline, 1234n);
    assert.equal(b.deadline, undefined);
    assert.throws(() => resv.setDeadline(DmaResvUsage.READ, -1n), errno('EINVAL'));
  });

  it('describe lists fences up to READ, signalled ones included', () => {
    using resv = new DmaResv();
    const ctx = DmaFence.contextAlloc(3);
    using a = new DmaFence(ctx, 1n, { driverName: 'drv', timelineName: 'tl' });
    using b = new DmaFence(ctx + 1n, 2n);
    using c = new DmaFence(ctx + 2n, 3n);
    resv.lock();
    resv.reserveFences(3);
    resv.addFence(a, DmaResvUsage.KERNEL);
    resv.addFence(b, DmaResvUsage.READ);
    resv.addFence(c, DmaResvUsage.BOOKKEEP);
    b.signal();
    assert.equal(
      resv.describe(),
      '\tkernel fence:drv tl seq 1 unsignalled\n' +
        '\tread fence:detached-driver signaled-timeline seq 2 signalled\n',
    );
    resv.unlock();
  });
});

describe('dma_resv: objects', () => {
  leakGuard();

  it('lock wrappers: trylock, lockingCtx, held, contexts', () => {
    using resv = new DmaResv();
    assert.ok(resv.trylock());
    assert.equal(resv.trylock(), false);
    assert.ok(resv.held());
    assert.equal(resv.lockingCtx(), null, 'locked without a context');
    resv.unlock();
    using ctx = new WwAcquireCtx();
    resv.lock(ctx);
    assert.equal(resv.lockingCtx(), ctx);
    assert.throws(() => resv.lock(ctx), errno('EALREADY'));
    resv.unlock();
    ctx.fini();
  });

  it('share/import gives the same object; dispose drops every fence', () => {
    const live = domain().liveRecords();
    const resv = new DmaResv();
    const f = new DmaFence(DmaFence.contextAlloc(1), 1n);
    const other = DmaResv.import(resv.share());
    other.lock();
    other.reserveFences(1);
    other.addFence(f, DmaResvUsage.WRITE);
    other.unlock();
    assert.equal(resv.numFences, 1);
    resv.dispose();
    assert.throws(() => resv.numFences, errno('EBADF'));
    assert.equal(other.numFences, 1);
    other.dispose();
    f.dispose();
    assert.equal(domain().liveRecords(), live);
    using third = new DmaResv();
    const msg = third.share();
    assert.throws(() => DmaFence.import(msg as never), errno('EINVAL'));
    DmaResv.releaseShared(msg);
    assert.throws(() => DmaResv.import(msg), errno('EBADF'));
  });

  it('an object whose last handle goes away while locked lives until the unlock', () => {
    const live = domain().liveRecords();
    const resv = new DmaResv();
    const slot = resv._slot;
    const f = new DmaFence(DmaFence.contextAlloc(1), 1n);
    resv.lock();
    resv.reserveFences(1);
    resv.addFence(f, DmaResvUsage.WRITE);
    resv.dispose();
    f.dispose();
    assert.equal(
      domain().liveRecords(),
      live + 3,
      'the lock keeps the object, its list, the fence',
    );
    // No handle is left: unlock through the core, as a holder that kept only the lock would.
    wwUnlock(domain(), slot, resvRelease);
    assert.equal(domain().liveRecords(), live);
  });
});

describe('dma_resv: implicit sync between threads', () => {
  leakGuard();

  it('readers in other threads wait for a writer through the reservation object alone', async () => {
    using resv = new DmaResv();
    const shared = new SharedArrayBuffer(4 * 67);
    const base = { mode: 'simple', resv: resv.share(), shared, rounds: 150, readers: 3 } as const;
    const datas: ImplicitData[] = [
      { ...base, role: 'writer', id: 1, async: false },
      { ...base, role: 'reader', id: 2, async: false, resv: resv.share() },
      { ...base, role: 'reader', id: 3, async: true, resv: resv.share() },
      { ...base, role: 'reader', id: 4, async: false, resv: resv.share() },
    ];
    const results = await runWorkers<ImplicitResult>('resv-implicit.js', datas);
    for (const r of results)
      assert.equal(r.torn, 0, 'a reader saw a payload before its writer finished');
    const waited = results.reduce((n, r) => n + r.waited, 0);
    assert.ok(waited > 0, 'readers actually had to wait sometimes');
  });

  it('writers and readers collect dependencies under the lock (dma_resv_usage_rw) and never overlap', async () => {
    using resv = new DmaResv();
    const shared = new SharedArrayBuffer(4 * 67);
    const datas: ImplicitData[] = [];
    const roles: ['writer' | 'reader', boolean][] = [
      ['writer', false],
      ['writer', true],
      ['reader', false],
      ['reader', true],
      ['reader', false],
    ];
    for (const [i, [role, async]] of roles.entries()) {
      datas.push({
        mode: 'collect',
        role,
        id: i + 1,
        resv: resv.share(),
        shared,
        rounds: 120,
        readers: 3,
        async,
        parties: roles.length,
      });
    }
    const results = await runWorkers<ImplicitResult>('resv-implicit.js', datas);
    for (const r of results) assert.equal(r.torn, 0, 'a reader overlapped a writer');
    assert.ok(results.reduce((n, r) => n + r.waited, 0) > 0, 'dependencies were really waited for');
    // Everything signalled in the end.
    assert.ok(resv.testSignaled(DmaResvUsage.BOOKKEEP));
  });
});
