// ww_mutex: unit tests of each rule, and the no-hardware cases of kernel/locking/test-ww_mutex.c
// (mutual exclusion, AA, ABBA, cycles, stress) retold with worker threads.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  dmaFenceBeginSignalling,
  dmaFenceEndSignalling,
  dmaFenceMightWait,
  lockdepEnable,
  lockdepHeldLocks,
  lockdepReports,
  lockdepReset,
} from '../src/lockdep.js';
import { domain } from '../src/substrate/domain.js';
import { DmaBufError } from '../src/substrate/errno.js';
import {
  WwAcquireCtx,
  WwClass,
  WwMutex,
  wwMutexDebugSlowpath,
  wwStampAfter,
} from '../src/ww-mutex.js';
import { errno, leakGuard, runWorkers, seed, sleep, until } from './workers/resv-pool.js';
import type { WwClassSpec, WwWorkerData, WwWorkerResult } from './workers/resv-ww.js';

const WD: WwClassSpec = { name: 'test_wd_class', waitDie: true };
const WW: WwClassSpec = { name: 'test_ww_class', waitDie: false };
const wdClass = new WwClass(WD.name, { waitDie: true });
const wwClass = new WwClass(WW.name, { waitDie: false });

function classOf(spec: WwClassSpec): WwClass {
  return spec.waitDie ? wdClass : wwClass;
}

/** Locks `m` with `ctx` and reports the errno code instead of throwing ('' on success). */
function tryLock(m: WwMutex, ctx: WwAcquireCtx | null): string {
  try {
    m.lock(ctx);
    return '';
  } catch (e) {
    if (e instanceof DmaBufError) return e.code;
    throw e;
  }
}

async function tryLockAsync(
  m: WwMutex,
  ctx: WwAcquireCtx | null,
  signal?: AbortSignal,
): Promise<string> {
  try {
    await m.lockAsync(ctx, { signal });
    return '';
  } catch (e) {
    if (e instanceof DmaBufError) return e.code;
    throw e;
  }
}

describe('ww_mutex: classes and contexts', () => {
  leakGuard();

  it('stamps come from one counter and compare wrap-safely', () => {
    using a = new WwAcquireCtx(wdClass);
    using b = new WwAcquireCtx(wwClass);
    assert.ok(b.stamp > a.stamp || wwStampAfter(b.stamp, a.stamp), 'later context is younger');
    assert.ok(wwStampAfter(b.stamp, a.stamp));
    assert.ok(!wwStampAfter(a.stamp, b.stamp));
    assert.ok(!wwStampAfter(a.stamp, a.stamp));
    // Across the 31-bit wrap: 1 is younger than 0x7fffffff.
    assert.ok(wwStampAfter(1, 0x7fffffff));
    assert.ok(!wwStampAfter(0x7fffffff, 1));
    assert.equal(a.class, wdClass);
    assert.equal(WwClass.reservation.name, 'reservation_ww_class');
    assert.equal(WwClass.reservation.isWaitDie, true, 'reservation_ww_class is Wait-Die');
  });

  it('rejects bad class names and a name reused with the other algorithm', () => {
    assert.throws(() => new WwClass(''), errno('EINVAL'));
    assert.throws(() => new WwClass('x'.repeat(65)), errno('EINVAL'));
    assert.throws(() => new WwClass(WD.name, { waitDie: false }), errno('EINVAL'));
    assert.equal(new WwClass(WD.name).isWaitDie, true);
  });

  it('a context and a mutex of different classes do not mix', () => {
    using m = new WwMutex(wdClass);
    using ctx = new WwAcquireCtx(wwClass);
    assert.throws(() => m.lock(ctx), errno('EINVAL'));
    assert.throws(() => m.trylock(ctx), errno('EINVAL'));
    assert.equal(m.isLocked(), false);
  });

  it('counts acquired locks, marks done, refuses fini with locks and twice', () => {
    using a = new WwMutex(wdClass);
    using b = new WwMutex(wdClass);
    const ctx = new WwAcquireCtx(wdClass);
    a.lock(ctx);
    b.lock(ctx);
    assert.equal(ctx.acquired, 2);
    assert.equal(a.ctx, ctx, 'the holder context is this very handle');
    ctx.done();
    assert.ok(ctx.isDone);
    using c = new WwMutex(wdClass);
    assert.throws(() => c.lock(ctx), errno('EINVAL'), 'locking after done()');
    assert.throws(() => ctx.fini(), errno('EBUSY'));
    a.unlock();
    b.unlock();
    assert.equal(ctx.acquired, 0);
    assert.equal(a.ctx, null);
    ctx.fini();
    assert.throws(() => ctx.fini(), errno('EINVAL'));
    ctx.dispose();
    assert.throws(() => ctx.acquired, errno('EBADF'));
  });

  it('a context disposed while holding locks lives on until they are unlocked', () => {
    const live = domain().liveRecords();
    using m = new WwMutex(wdClass);
    const ctx = new WwAcquireCtx(wdClass);
    m.lock(ctx);
    ctx.dispose();
    assert.equal(domain().liveRecords(), live + 2, 'the context record is pinned by the lock');
    assert.notEqual(m.ctx, null);
    m.unlock();
    assert.equal(domain().liveRecords(), live + 1);
  });

  it('shares contexts and mutexes with share()/import()', () => {
    using m = new WwMutex(wdClass);
    using ctx = new WwAcquireCtx(wdClass);
    using m2 = WwMutex.import(m.share());
    using ctx2 = WwAcquireCtx.import(ctx.share());
    assert.equal(ctx2.stamp, ctx.stamp);
    m2.lock(ctx);
    assert.ok(m.isLocked());
    assert.equal(m.class, wdClass);
    m.unlock();
    const msg = m.share();
    WwMutex.releaseShared(msg);
    assert.throws(() => WwMutex.import(msg), errno('EBADF'));
    const ctxMsg = ctx.share();
    assert.throws(() => WwMutex.import(ctxMsg), errno('EINVAL'));
    WwAcquireCtx.releaseShared(ctxMsg);
  });
});

describe('ww_mutex: single-thread rules', () => {
  leakGuard();

  for (const trylock of [false, true]) {
    it(`AA: a context cannot take its lock twice (initial ${trylock ? 'trylock' : 'lock'})`, () => {
      // test_aa
      using m = new WwMutex(wdClass);
      using ctx = new WwAcquireCtx(wdClass);
      if (trylock) assert.ok(m.trylock(ctx));
      else m.lock(ctx);
      assert.equal(m.trylock(), false, 'trylock without context fails');
      assert.equal(
        m.trylock(ctx),
        false,
        'trylock with the holding context returns 0, not EALREADY',
      );
      assert.throws(() => m.lock(ctx), errno('EALREADY'));
      assert.equal(ctx.acquired, 1, 'EALREADY changes nothing');
      m.unlock();
      ctx.fini();
    });
  }

  it('without a context a ww_mutex is a plain mutex', () => {
    using m = new WwMutex(wdClass);
    m.lock();
    assert.ok(m.isLocked());
    assert.ok(m.isHeld());
    assert.equal(m.ctx, null, 'locked without a context: no ctx');
    assert.throws(() => m.lock(), errno('EDEADLK'), 'blocking relock by the holder thread');
    m.unlock();
    assert.throws(() => m.unlock(), errno('EPERM'), 'unlock of an unlocked mutex');
    assert.ok(m.trylock());
    m.unlock();
  });

  it('the first lock of a context never fails with EDEADLK; lockSlow only with nothing held', () => {
    using a = new WwMutex(wdClass);
    using b = new WwMutex(wdClass);
    using ctx = new WwAcquireCtx(wdClass);
    a.lock(ctx);
    assert.throws(() => b.lockSlow(ctx), errno('EINVAL'));
    a.unlock();
    b.lockSlow(ctx);
    b.unlock();
    assert.throws(() => b.lockSlow(null as unknown as WwAcquireCtx), errno('EINVAL'));
    assert.throws(() => a.lock({} as WwAcquireCtx), errno('EINVAL'));
  });

  it('Wait-Die: the younger context dies at an older holder, the older one waits', async () => {
    using a = new WwMutex(wdClass);
    using b = new WwMutex(wdClass);
    using old = new WwAcquireCtx(wdClass);
    using young = new WwAcquireCtx(wdClass);
    a.lock(old);
    b.lock(young);
    // The older one waits for the younger (asynchronously: same thread).
    const oldWaits = tryLockAsync(b, old);
    await sleep(5);
    assert.equal(await tryLockAsync(a, young), 'EDEADLK', 'younger requester with locks dies');
    // Back off: release everything, slow-lock the contended lock, retry the rest.
    b.unlock();
    assert.equal(await oldWaits, '');
    const slow = a.lockSlowAsync(young);
    await sleep(2);
    a.unlock();
    b.unlock();
    await slow;
    assert.equal(a.ctx, young);
    assert.equal(tryLock(b, young), '');
    a.unlock();
    b.unlock();
  });

  it('Wait-Die: a younger context holding locks dies when an older one is already queued', async () => {
    using a = new WwMutex(wdClass);
    using b = new WwMutex(wdClass);
    using c = new WwMutex(wdClass);
    using old = new WwAcquireCtx(wdClass);
    using young = new WwAcquireCtx(wdClass);
    a.lock(); // a plain holder: nobody dies because of it
    b.lock(old);
    c.lock(young);
    const oldWaits = tryLockAsync(a, old);
    await sleep(2);
    assert.equal(await tryLockAsync(a, young), 'EDEADLK', 'an older waiter is queued ahead');
    a.unlock();
    assert.equal(await oldWaits, '');
    a.unlock();
    b.unlock();
    c.unlock();
  });

  it('Wait-Die: a waiting younger context is told to die when an older one queues ahead', async () => {
    using a = new WwMutex(wdClass);
    using b = new WwMutex(wdClass);
    using c = new WwMutex(wdClass);
    using old = new WwAcquireCtx(wdClass);
    using young = new WwAcquireCtx(wdClass);
    a.lock();
    b.lock(old);
    c.lock(young);
    const youngWaits = tryLockAsync(a, young);
    await sleep(2);
    const oldWaits = tryLockAsync(a, old);
    assert.equal(await youngWaits, 'EDEADLK');
    a.unlock();
    assert.equal(await oldWaits, '');
    for (const m of [a, b, c]) m.unlock();
  });

  it('a context that holds nothing waits instead of dying', async () => {
    using a = new WwMutex(wdClass);
    using old = new WwAcquireCtx(wdClass);
    using young = new WwAcquireCtx(wdClass);
    a.lock(old);
    const waits = tryLockAsync(a, young);
    await sleep(5);
    a.unlock();
    assert.equal(await waits, '');
    a.unlock();
  });

  it('Wound-Wait: the older requester wounds the younger holder, which dies when it contends', async () => {
    using a = new WwMutex(wwClass);
    using b = new WwMutex(wwClass);
    using old = new WwAcquireCtx(wwClass);
    using young = new WwAcquireCtx(wwClass);
    a.lock(old);
    b.lock(young);
    // The younger one waits for the older (no death in Wound-Wait while not wounded).
    const youngWaits = tryLockAsync(a, young);
    await sleep(2);
    assert.equal(young.wounded, false);
    // The older one asks for b: wounds the holder and waits; the wounded waiter is woken to die.
    const oldWaits = tryLockAsync(b, old);
    assert.equal(await youngWaits, 'EDEADLK');
    assert.equal(young.wounded, true);
    b.unlock();
    assert.equal(await oldWaits, '');
    a.unlock();
    b.unlock();
    // Taking a lock with nothing held clears the wound.
    a.lock(young);
    assert.equal(young.wounded, false);
    a.unlock();
  });

  it('Wound-Wait: a wounded context that never contends again completes', async () => {
    using a = new WwMutex(wwClass);
    using b = new WwMutex(wwClass);
    using c = new WwMutex(wwClass);
    using old = new WwAcquireCtx(wwClass);
    using young = new WwAcquireCtx(wwClass);
    a.lock(old);
    b.lock(young);
    const oldWaits = tryLockAsync(b, old);
    await sleep(2);
    assert.equal(young.wounded, true);
    assert.equal(tryLock(c, young), '', 'an uncontended lock succeeds although wounded');
    c.unlock();
    b.unlock();
    assert.equal(await oldWaits, '');
    a.unlock();
    b.unlock();
  });

  it('interruptible locks: EINTR on abort, checked before the kill check; a free lock still locks', async () => {
    using a = new WwMutex(wdClass);
    using b = new WwMutex(wdClass);
    using old = new WwAcquireCtx(wdClass);
    using young = new WwAcquireCtx(wdClass);
    a.lock(old);
    const ac = new AbortController();
    const waiting = tryLockAsync(a, null, ac.signal);
    await sleep(2);
    ac.abort();
    assert.equal(await waiting, 'EINTR');
    // Already aborted, lock free: the fast path wins, as in the kernel.
    assert.equal(await tryLockAsync(b, young, ac.signal), '');
    // Aborted and it would have to die: EINTR comes first.
    assert.equal(await tryLockAsync(a, young, ac.signal), 'EINTR');
    await assert.rejects(a.lockInterruptible(young, { signal: ac.signal }), errno('EINTR'));
    b.unlock();
    a.unlock();
    // Nothing is left queued: the lock is free and takes the fast path.
    assert.ok(a.trylock());
    a.unlock();
  });

  it('after EDEADLK the contended lock comes first and everything must be released', async () => {
    using a = new WwMutex(wdClass);
    using b = new WwMutex(wdClass);
    using c = new WwMutex(wdClass);
    using old = new WwAcquireCtx(wdClass);
    using young = new WwAcquireCtx(wdClass);
    a.lock(old);
    b.lock(young);
    assert.equal(await tryLockAsync(a, young), 'EDEADLK');
    assert.throws(() => c.lock(young), errno('EINVAL'), 'another lock before the contended one');
    b.unlock();
    assert.throws(() => c.lockSlow(young), errno('EINVAL'), 'lockSlow on another lock');
    const slow = a.lockSlowAsync(young);
    a.unlock();
    await slow;
    b.lock(young);
    a.unlock();
    b.unlock();
  });

  it('injects EDEADLK like CONFIG_DEBUG_WW_MUTEX_SLOWPATH and the back-off loop still completes', () => {
    const locks = Array.from({ length: 6 }, () => new WwMutex(wdClass));
    let injected = 0;
    try {
      for (let round = 0; round < 40; round++) {
        const ctx = new WwAcquireCtx(wdClass, { debugSlowpath: true });
        let contended: WwMutex | null = null;
        for (;;) {
          const held: WwMutex[] = [];
          if (contended) held.push(contended);
          let failed: WwMutex | null = null;
          for (const m of locks) {
            if (m === contended) continue;
            const r = tryLock(m, ctx);
            if (r === 'EDEADLK') {
              failed = m;
              break;
            }
            assert.equal(r, '');
            held.push(m);
          }
          if (!failed) {
            assert.equal(ctx.acquired, locks.length);
            for (const m of held) m.unlock();
            break;
          }
          assert.equal(failed.isLocked(), false, 'an injected EDEADLK releases the lock');
          injected++;
          for (const m of held) m.unlock();
          contended = failed;
          contended.lockSlow(ctx);
        }
        ctx.fini();
        ctx.dispose();
      }
    } finally {
      for (const m of locks) m.dispose();
    }
    assert.ok(injected > 0, 'some EDEADLK were injected');
    // The thread-wide switch works too.
    wwMutexDebugSlowpath(true);
    try {
      using ctx = new WwAcquireCtx(wdClass);
      using a = new WwMutex(wdClass);
      a.lock(ctx);
      a.unlock();
    } finally {
      wwMutexDebugSlowpath(false);
    }
  });

  it('unlock by a thread that does not hold the lock is EPERM', async () => {
    using m = new WwMutex(wdClass);
    using ctx = new WwAcquireCtx(wdClass);
    for (const holder of [null, ctx]) {
      m.lock(holder);
      const [r] = await runWorkers<WwWorkerResult>('resv-ww.js', [
        { scenario: 'unlock', cls: WD, lock: m.share() } satisfies WwWorkerData,
      ]);
      assert.equal(r?.result, -1, 'EPERM');
      assert.ok(m.isHeld());
      m.unlock();
    }
  });

  it('a lock held by one thread blocks another thread until released', async () => {
    using m = new WwMutex(wdClass);
    m.lock();
    const flags = new SharedArrayBuffer(16);
    // The worker tries to take the lock: it must block until we unlock.
    const run = runWorkers<WwWorkerResult>('resv-ww.js', [
      { scenario: 'mutex', cls: WD, lock: m.share(), flags, trylock: true } satisfies WwWorkerData,
    ]);
    const f = new Int32Array(flags);
    assert.ok(await until(() => Atomics.load(f, 0) === 1));
    Atomics.store(f, 1, 1);
    Atomics.notify(f, 1);
    await sleep(20);
    assert.equal(Atomics.load(f, 2), 0, 'the worker must not get the lock while we hold it');
    m.unlock();
    const [r] = await run;
    assert.equal(r?.result, 0);
    assert.equal(Atomics.load(f, 2), 1);
  });
});

describe('ww_mutex: lock debugging', () => {
  leakGuard();

  it('context locks are one nested hold of the class; the acquire class lives with the context', () => {
    lockdepReset();
    lockdepEnable(true, 'record');
    try {
      using a = new WwMutex(wdClass);
      using b = new WwMutex(wdClass);
      const ctx = new WwAcquireCtx(wdClass);
      assert.deepEqual(lockdepHeldLocks(), [`${WD.name}_acquire`]);
      a.lock(ctx);
      b.lock(ctx);
      assert.deepEqual(lockdepHeldLocks(), [`${WD.name}_acquire`, WD.name]);
      a.unlock();
      assert.deepEqual(lockdepHeldLocks(), [`${WD.name}_acquire`, WD.name]);
      b.unlock();
      ctx.fini();
      ctx.dispose();
      assert.deepEqual(lockdepHeldLocks(), []);
      assert.deepEqual(lockdepReports(), []);
    } finally {
      lockdepEnable(false);
      lockdepReset();
    }
  });

  it('the fence signalling checker knows ww_mutexes: lock in a signalling path + wait under it', () => {
    lockdepReset();
    lockdepEnable(true, 'record');
    try {
      using m = new WwMutex(wdClass);
      // A signalling path takes the lock...
      const cookie = dmaFenceBeginSignalling();
      m.lock();
      m.unlock();
      dmaFenceEndSignalling(cookie);
      // ...and elsewhere someone waits for a fence while holding it: a possible deadlock.
      m.lock();
      dmaFenceMightWait();
      m.unlock();
      const reports = lockdepReports();
      assert.equal(reports.length, 1, JSON.stringify(reports));
      assert.equal(reports[0]!.kind, 'deadlock');
      assert.ok(reports[0]!.locks.includes(WD.name), reports[0]!.message);
    } finally {
      lockdepEnable(false);
      lockdepReset();
    }
  });
});

describe('ww_mutex: threads (test-ww_mutex.c)', () => {
  leakGuard();

  for (const spec of [WW, WD]) {
    const kind = spec.waitDie ? 'wait-die' : 'wound-wait';

    for (const flags of [0, 1, 2, 3]) {
      const trylock = (flags & 1) !== 0;
      const withCtx = (flags & 2) !== 0;
      it(`${kind}: mutual exclusion (${trylock ? 'trylock' : 'lock'}, ${withCtx ? 'ctx' : 'no ctx'})`, async () => {
        using m = new WwMutex(classOf(spec));
        using ctx = new WwAcquireCtx(classOf(spec));
        const sab = new SharedArrayBuffer(16);
        const f = new Int32Array(sab);
        const run = runWorkers<WwWorkerResult>('resv-ww.js', [
          {
            scenario: 'mutex',
            cls: spec,
            lock: m.share(),
            flags: sab,
            trylock,
          } satisfies WwWorkerData,
        ]);
        assert.ok(await until(() => Atomics.load(f, 0) === 1));
        m.lock(withCtx ? ctx : null);
        Atomics.store(f, 1, 1);
        Atomics.notify(f, 1);
        await sleep(15);
        const early = Atomics.load(f, 2);
        m.unlock();
        ctx.fini();
        const [r] = await run;
        assert.equal(early, 0, 'mutual exclusion failure');
        assert.equal(r?.result, 0);
      });
    }

    for (let i = 0; i < 4; i++) {
      const trylock = (i & 1) !== 0;
      const resolve = (i & 2) !== 0;
      it(`${kind}: ABBA (${trylock ? 'trylock' : 'lock'}, ${resolve ? 'resolved' : 'detected'})`, async () => {
        using a = new WwMutex(classOf(spec));
        using b = new WwMutex(classOf(spec));
        const flags = new SharedArrayBuffer(8);
        const base = { scenario: 'abba', cls: spec, flags, trylock, resolve } as const;
        const [ra, rb] = await runWorkers<WwWorkerResult>('resv-ww.js', [
          {
            ...base,
            first: a.share(),
            second: b.share(),
            mine: 0,
            other: 1,
          } satisfies WwWorkerData,
          {
            ...base,
            first: b.share(),
            second: a.share(),
            mine: 1,
            other: 0,
          } satisfies WwWorkerData,
        ]);
        if (resolve) {
          assert.equal(ra?.result, 0, 'A failed to resolve the ABBA deadlock');
          assert.equal(rb?.result, 0, 'B failed to resolve the ABBA deadlock');
        } else {
          assert.ok(
            ra?.result === -35 || rb?.result === -35,
            `ABBA deadlock missed: ${ra?.result}, ${rb?.result}`,
          );
        }
        assert.equal(a.isLocked() || b.isLocked(), false);
      });
    }

    it(`${kind}: cycles of 2 to 4 threads are resolved`, async () => {
      for (let n = 2; n <= 4; n++) {
        const locks = Array.from({ length: n }, () => new WwMutex(classOf(spec)));
        try {
          const flags = new SharedArrayBuffer(4 * n);
          const results = await runWorkers<WwWorkerResult>(
            'resv-ww.js',
            locks.map(
              (m, i): WwWorkerData => ({
                scenario: 'cycle',
                cls: spec,
                own: m.share(),
                next: locks[(i + 1) % n]!.share(),
                flags,
                index: i,
                count: n,
              }),
            ),
          );
          for (const [i, r] of results.entries()) {
            assert.equal(r.result, 0, `cycle of ${n}: thread ${i} got ${r.result}`);
          }
        } finally {
          for (const m of locks) m.dispose();
        }
      }
    });

    it(`${kind}: stress (in order, reorder, one) on 16 locks with 6 threads`, async () => {
      const s = seed();
      const locks = Array.from({ length: 16 }, () => new WwMutex(classOf(spec)));
      const owners = new SharedArrayBuffer(4 * locks.length);
      try {
        const modes = ['inorder', 'reorder', 'one', 'inorder', 'reorder', 'one'] as const;
        const results = await runWorkers<WwWorkerResult>(
          'resv-ww.js',
          modes.map(
            (mode, i): WwWorkerData => ({
              scenario: 'stress',
              cls: spec,
              locks: locks.map((m) => m.share()),
              owners,
              mode,
              durationMs: 400,
              id: i + 1,
              seed: s + i,
            }),
          ),
        );
        let rounds = 0;
        for (const [i, r] of results.entries()) {
          assert.equal(r.result, 0, `seed ${s}: worker ${i} (${modes[i]}) failed with ${r.result}`);
          assert.equal(r.violations, 0, `seed ${s}: mutual exclusion violated`);
          assert.ok((r.rounds ?? 0) > 0, `seed ${s}: worker ${i} made no progress`);
          rounds += r.rounds ?? 0;
        }
        assert.ok(rounds > 20);
        for (const m of locks) assert.equal(m.isLocked(), false);
      } finally {
        for (const m of locks) m.dispose();
      }
    });
  }
});
