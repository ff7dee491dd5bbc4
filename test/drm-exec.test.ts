// drm_exec / lockAll: locking sets of reservation objects in one transaction with EDEADLK
// back-off; duplicates; interruption; and the multi-worker stress: N threads lock overlapping
// random sets in random orders for thousands of rounds without deadlock or lost update.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DmaFence } from '../src/dma-fence.js';
import { DmaResv, DmaResvUsage } from '../src/dma-resv.js';
import {
  DRM_EXEC_IGNORE_DUPLICATES,
  DRM_EXEC_INTERRUPTIBLE_WAIT,
  DrmExec,
  lockAll,
  lockAllAsync,
} from '../src/drm-exec.js';
import { WwAcquireCtx, wwMutexDebugSlowpath } from '../src/ww-mutex.js';
import { errno, leakGuard, rng, runWorkers, seed, sleep } from './workers/resv-pool.js';
import type { StressData, StressResult } from './workers/resv-stress.js';

function objects(n: number): DmaResv[] {
  return Array.from({ length: n }, () => new DmaResv());
}

function disposeAll(objs: { dispose(): void }[]): void {
  for (const o of objs) o.dispose();
}

describe('drm_exec: one thread', () => {
  leakGuard();

  it('locks a set with duplicates once each, reserves, and unlocks everything on dispose', () => {
    const objs = objects(3);
    try {
      {
        using exec = lockAll([objs[0]!, objs[1]!, objs[0]!, objs[2]!, objs[1]!], { numFences: 2 });
        assert.equal(exec.objects.length, 3, 'duplicates are locked once');
        assert.ok(exec.ticket?.isDone, 'the acquire phase is over');
        for (const o of objs) {
          assert.ok(o.held());
          assert.equal(o.lockingCtx(), exec.ticket);
          assert.ok(o.maxFences - o.numFences >= 2);
        }
      }
      for (const o of objs) assert.equal(o.isLocked(), false);
      using empty = lockAll([]);
      assert.equal(empty.objects.length, 0);
    } finally {
      disposeAll(objs);
    }
  });

  it('the drm_exec loop: EALREADY is an error without IGNORE_DUPLICATES', () => {
    const [a] = objects(1);
    try {
      using exec = new DrmExec(0);
      assert.throws(
        () =>
          exec.untilAllLocked((e) => {
            e.lockObj(a!);
            e.lockObj(a!);
          }),
        errno('EALREADY'),
      );
      exec.fini();
      assert.equal(a!.isLocked(), false);
      assert.throws(() => exec.lockObj(a!), errno('EINVAL'), 'used after fini');
      using outside = new DrmExec(DRM_EXEC_IGNORE_DUPLICATES);
      assert.throws(() => outside.lockObj(a!), errno('EINVAL'), 'outside the loop');
      assert.throws(() => new DrmExec(8), errno('EINVAL'));
    } finally {
      a!.dispose();
    }
  });

  it('retries with the contended object first when a lock backs off (injected EDEADLK)', () => {
    const objs = objects(8);
    wwMutexDebugSlowpath(true);
    let retries = 0;
    try {
      for (let round = 0; round < 30; round++) {
        let passes = 0;
        using exec = new DrmExec(DRM_EXEC_IGNORE_DUPLICATES);
        exec.untilAllLocked((e) => {
          passes++;
          if (passes > 1) {
            // A retried pass starts with nothing but the contended object about to be locked.
            assert.notEqual(e.contended, null);
            assert.equal(e.objects.length, 0);
          }
          e.prepareArray(objs, 1);
        });
        assert.equal(exec.objects.length, objs.length);
        assert.equal(exec.retries, passes - 1);
        retries += exec.retries;
        for (const o of objs) assert.ok(o.held());
      }
    } finally {
      wwMutexDebugSlowpath(false);
      disposeAll(objs);
    }
    assert.ok(retries > 0, 'the injection made the loop back off');
  });

  it('unlockObj unlocks and forgets one object', () => {
    const objs = objects(2);
    try {
      using exec = lockAll(objs);
      exec.unlockObj(objs[0]!);
      assert.equal(objs[0]!.isLocked(), false);
      assert.equal(exec.objects.length, 1);
      assert.throws(() => exec.unlockObj(objs[0]!), errno('EINVAL'));
    } finally {
      disposeAll(objs);
    }
  });

  it('two transactions of one thread (async) on overlapping sets both complete', async () => {
    const objs = objects(6);
    try {
      const s = seed();
      const rand = rng(s);
      const counters = new Int32Array(objs.length);
      const tally = new Int32Array(objs.length);
      let backoffs = 0;
      const task = async (): Promise<void> => {
        for (let r = 0; r < 150; r++) {
          const set = Array.from({ length: 3 }, () => objs[Math.floor(rand() * objs.length)]!);
          const exec = await lockAllAsync(set);
          try {
            for (const o of exec.objects) {
              const i = objs.indexOf(o);
              const v = counters[i]!;
              if (rand() < 0.3) await sleep(0);
              counters[i] = v + 1;
              tally[i]!++;
            }
          } finally {
            backoffs += exec.retries;
            exec.dispose();
          }
        }
      };
      await Promise.all([task(), task(), task()]);
      assert.deepEqual(Array.from(counters), Array.from(tally), `seed ${s}: lost update`);
      assert.ok(counters.reduce((a, b) => a + b, 0) >= 450, `seed ${s}`);
      assert.ok(backoffs >= 0);
    } finally {
      disposeAll(objs);
    }
  });

  it('an aborted lockAllAsync fails with EINTR and leaves nothing locked', async () => {
    const objs = objects(3);
    try {
      objs[1]!.lock();
      const ac = new AbortController();
      const pending = lockAllAsync(objs, { signal: ac.signal });
      await sleep(5);
      ac.abort();
      await assert.rejects(pending, errno('EINTR'));
      assert.equal(objs[0]!.isLocked(), false);
      assert.equal(objs[2]!.isLocked(), false);
      objs[1]!.unlock();
      // An already aborted signal fails the blocking form before it blocks.
      objs[2]!.lock();
      assert.throws(() => lockAll(objs, { signal: ac.signal }), errno('EINTR'));
      objs[2]!.unlock();
      assert.ok(objs.every((o) => !o.isLocked()));
      using ok = lockAll(objs, { signal: ac.signal });
      assert.equal(ok.objects.length, 3, 'free locks are taken even with an aborted signal');
      assert.equal(ok.flags & DRM_EXEC_INTERRUPTIBLE_WAIT, DRM_EXEC_INTERRUPTIBLE_WAIT);
    } finally {
      disposeAll(objs);
    }
  });

  it('a younger transaction backs off and waits in the slow path for an older holder', async () => {
    const objs = objects(2);
    try {
      using ctx = new WwAcquireCtx();
      objs[1]!.lock(ctx); // an older transaction holds objs[1]
      const pending = lockAllAsync([objs[0]!, objs[1]!]);
      await sleep(5);
      // The younger one took objs[0], met the older holder of objs[1], released everything and
      // now waits for objs[1] alone: the older transaction can take objs[0] at once.
      assert.equal(objs[0]!.isLocked(), false);
      assert.ok(objs[0]!.trylock());
      objs[0]!.unlock();
      objs[0]!.lock(ctx);
      objs[0]!.unlock();
      objs[1]!.unlock();
      ctx.fini();
      using exec = await pending;
      assert.equal(exec.objects.length, 2);
      assert.ok(exec.retries >= 1);
    } finally {
      disposeAll(objs);
    }
  });
});

describe('drm_exec: threads', () => {
  leakGuard();

  it('stress: 5 threads lock overlapping random sets of 16 objects in random orders, no deadlock, no lost update', async () => {
    const s = seed();
    const objs = objects(16);
    const counters = new SharedArrayBuffer(4 * objs.length);
    const stop = new SharedArrayBuffer(8);
    const base = { objs: [], counters, stop, maxSet: 5 };
    const lockers: StressData[] = [
      { ...base, role: 'locker', rounds: 2000, seed: s, mode: 'sync', inject: false },
      { ...base, role: 'locker', rounds: 2000, seed: s + 1, mode: 'sync', inject: true },
      { ...base, role: 'locker', rounds: 1200, seed: s + 2, mode: 'async', inject: false },
      { ...base, role: 'locker', rounds: 2000, seed: s + 3, mode: 'sync', inject: false },
    ];
    const reader: StressData = {
      ...base,
      role: 'reader',
      rounds: 0,
      seed: s + 4,
      mode: 'sync',
      inject: false,
    };
    const all = [...lockers, reader].map((d) => ({ ...d, objs: objs.map((o) => o.share()) }));
    // The reader runs until every locker is done.
    const watcher = setInterval(() => {
      const st = new Int32Array(stop);
      if (Atomics.load(st, 1) === lockers.length) Atomics.store(st, 0, 1);
    }, 5);
    let results: StressResult[];
    try {
      results = await runWorkers<StressResult>('resv-stress.js', all, 60_000);
    } finally {
      clearInterval(watcher);
    }
    try {
      const c = new Int32Array(counters);
      const totals = objs.map((_, i) => results.reduce((n, r) => n + (r.tally[i] ?? 0), 0));
      assert.deepEqual(Array.from(c), totals, `seed ${s}: lost updates (mutual exclusion broken)`);
      const rounds = results.reduce((n, r) => n + r.rounds, 0);
      assert.ok(rounds >= 7200, `seed ${s}: rounds ${rounds}`);
      const backoffs = results.reduce((n, r) => n + r.backoffs, 0);
      assert.ok(backoffs > 0, `seed ${s}: contention must have made someone back off`);
      const r = results[results.length - 1]!;
      assert.deepEqual(r.errors, [], `seed ${s}: the unlocked reader saw bad fences`);
      assert.ok((r.seen ?? 0) > 0);
      for (const o of objs) {
        assert.equal(o.isLocked(), false);
        assert.ok(o.testSignaled(DmaResvUsage.BOOKKEEP), 'every published fence signalled');
      }
    } finally {
      disposeAll(objs);
    }
  });

  it('a fence added under lockAll in one thread is waited for through the objects in another', async () => {
    const objs = objects(2);
    const f = new DmaFence(DmaFence.contextAlloc(1), 1n);
    try {
      {
        using exec = lockAll(objs, { numFences: 1 });
        for (const o of exec.objects) o.addFence(f, DmaResvUsage.WRITE);
      }
      assert.equal(objs[0]!.testSignaled(DmaResvUsage.WRITE), false);
      setTimeout(() => f.signal(), 10);
      assert.ok((await objs[1]!.wait(DmaResvUsage.READ, { timeout: 2000 })) > 0);
      assert.ok(objs.every((o) => o.testSignaled(DmaResvUsage.BOOKKEEP)));
    } finally {
      f.dispose();
      disposeAll(objs);
    }
  });
});
