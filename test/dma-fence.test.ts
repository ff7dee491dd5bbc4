// dma_fence core, single thread: the kernel's rules (reference/dma-fence.md) and ports of the
// no-hardware cases of the kernel selftest drivers/dma-buf/st-dma-fence.c.
import assert from 'node:assert/strict';
import { afterEach, before, beforeEach, describe, it } from 'node:test';
import {
  DMA_FENCE_FLAG,
  DmaBufError,
  DmaFence,
  type DmaFenceOps,
  lockdepEnable,
  lockdepReports,
  lockdepReset,
  seqnoIsLater,
} from '../src/index.js';
import { ktimeGetNs } from '../src/substrate/clock.js';
import { assertNoLeak, collect, errno, live, sleep } from './fence-harness.js';

const SIGNALED = 1 << DMA_FENCE_FLAG.SIGNALED_BIT;
const TIMESTAMP = 1 << DMA_FENCE_FLAG.TIMESTAMP_BIT;
const ENABLE = 1 << DMA_FENCE_FLAG.ENABLE_SIGNAL_BIT;
const SEQNO64 = 1 << DMA_FENCE_FLAG.SEQNO64_BIT;

/** A fence on a fresh context, like the selftest's mock_fence(). */
function mock(seqno = 1n, ops?: DmaFenceOps): DmaFence {
  return new DmaFence(DmaFence.contextAlloc(1), seqno, ops);
}

let start = 0;
before(() => {
  // The stub lives as long as the domain: create it first so every leak check counts it.
  DmaFence.getStub().dispose();
});
beforeEach(() => {
  start = live();
});
afterEach(async () => {
  await assertNoLeak(start);
});

describe('contexts', () => {
  it('allocates consecutive contexts from one counter, never context 0', () => {
    const a = DmaFence.contextAlloc(1);
    const b = DmaFence.contextAlloc(5);
    const c = DmaFence.contextAlloc(1);
    assert.equal(typeof a, 'bigint');
    assert.ok(a >= 1n);
    assert.equal(b, a + 1n);
    assert.equal(c, b + 5n);
    assert.equal(DmaFence.contextAlloc(), c + 1n);
  });

  it('rejects a count that is not a positive integer with EINVAL', () => {
    for (const n of [0, -1, 1.5, Number.NaN]) {
      assert.throws(() => DmaFence.contextAlloc(n), errno('EINVAL'), String(n));
    }
  });

  it('keeps full 64-bit contexts and seqnos and rejects values outside [0, 2^64)', () => {
    const max = (1n << 64n) - 1n;
    using f = new DmaFence(max, max);
    assert.equal(f.context, max);
    assert.equal(f.seqno, max);
    using g = new DmaFence(1n << 63n, (1n << 32n) + 7n);
    assert.equal(g.context, 1n << 63n);
    assert.equal(g.seqno, (1n << 32n) + 7n);
    assert.throws(() => new DmaFence(-1n, 0n), errno('EINVAL'));
    assert.throws(() => new DmaFence(1n, 1n << 64n), errno('EINVAL'));
    assert.throws(() => new DmaFence(1 as unknown as bigint, 0n), errno('EINVAL'));
  });
});

describe('seqno ordering', () => {
  const two31 = 1n << 31n;
  const two32 = 1n << 32n;

  it('32-bit rule: later by the signed distance of the low 32 bits', () => {
    assert.equal(seqnoIsLater(2n, 1n, false), true);
    assert.equal(seqnoIsLater(1n, 2n, false), false);
    // Wraparound: 0 comes after 0xffffffff.
    assert.equal(seqnoIsLater(0n, two32 - 1n, false), true);
    assert.equal(seqnoIsLater(two32 - 1n, 0n, false), false);
    // A distance just under 2^31 still counts.
    assert.equal(seqnoIsLater(two31 - 1n, 0n, false), true);
    assert.equal(seqnoIsLater(two31 + 1n, 0n, false), false);
  });

  it('32-bit rule: equal is not later, and a gap of exactly 2^31 is neither', () => {
    assert.equal(seqnoIsLater(5n, 5n, false), false);
    assert.equal(seqnoIsLater(two31, 0n, false), false);
    assert.equal(seqnoIsLater(0n, two31, false), false);
    assert.equal(seqnoIsLater(two31 + 10n, 10n, false), false);
    assert.equal(seqnoIsLater(10n, two31 + 10n, false), false);
  });

  it('32-bit rule ignores the high 32 bits; seqno64 compares all 64', () => {
    assert.equal(seqnoIsLater(two32 + 1n, 2n, false), false);
    assert.equal(seqnoIsLater(2n, two32 + 1n, false), true);
    assert.equal(seqnoIsLater(two32 * 5n + 3n, two32 + 3n, false), false);
    assert.equal(seqnoIsLater(two32 + 1n, 2n, true), true);
    assert.equal(seqnoIsLater(2n, two32 + 1n, true), false);
    assert.equal(seqnoIsLater(two31, 0n, true), true);
    assert.equal(seqnoIsLater((1n << 64n) - 1n, 0n, true), true);
    assert.equal(seqnoIsLater(7n, 7n, true), false);
  });

  it('isLater uses the flag of the first fence and refuses different contexts', () => {
    const ctx = DmaFence.contextAlloc(1);
    using lo = new DmaFence(ctx, 2n);
    using hi = new DmaFence(ctx, two32 + 1n);
    using hi64 = new DmaFence(ctx, two32 + 1n, undefined, { seqno64: true });
    assert.equal(hi.seqno64, false);
    assert.equal(hi64.seqno64, true);
    assert.equal((hi64.flags & SEQNO64) !== 0, true);
    assert.equal(hi.isLater(lo), false);
    assert.equal(lo.isLater(hi), true);
    assert.equal(hi64.isLater(lo), true);
    using other = mock(1n);
    assert.throws(() => lo.isLater(other), errno('EINVAL'));
    assert.throws(() => DmaFence.later(lo, other), errno('EINVAL'));
  });

  it('isLaterOrSame: the same fence, or later; two fences with equal seqno are not', () => {
    const ctx = DmaFence.contextAlloc(1);
    using a = new DmaFence(ctx, 3n);
    using b = new DmaFence(ctx, 3n);
    using c = new DmaFence(ctx, 4n);
    using a2 = a.get();
    assert.equal(a.isLaterOrSame(a), true);
    assert.equal(a.isLaterOrSame(a2), true);
    assert.equal(a.isLaterOrSame(b), false);
    assert.equal(c.isLaterOrSame(a), true);
    assert.equal(a.isLaterOrSame(c), false);
  });

  it('later() returns the later fence, or undefined once that one signalled', () => {
    const ctx = DmaFence.contextAlloc(1);
    using a = new DmaFence(ctx, 1n);
    using b = new DmaFence(ctx, 2n);
    assert.equal(DmaFence.later(a, b), b);
    assert.equal(DmaFence.later(b, a), b);
    a.signal();
    assert.equal(DmaFence.later(a, b), b);
    b.signal();
    assert.equal(DmaFence.later(a, b), undefined);
  });
});

describe('signalling', () => {
  it('signal() records a monotonic timestamp and sets SIGNALED and TIMESTAMP', () => {
    using f = mock();
    assert.equal(f.timestamp, undefined);
    assert.equal(f.flags & (SIGNALED | TIMESTAMP), 0);
    const t0 = ktimeGetNs();
    f.signal();
    const t1 = ktimeGetNs();
    const ts = f.timestamp;
    assert.equal(typeof ts, 'bigint');
    assert.ok(ts !== undefined && ts >= t0 && ts <= t1, `${t0} <= ${ts} <= ${t1}`);
    assert.equal(f.flags & (SIGNALED | TIMESTAMP), SIGNALED | TIMESTAMP);
  });

  it('a second signal is EINVAL: no callback reruns and the timestamp does not move', async () => {
    using f = mock();
    let runs = 0;
    f.addCallback(() => runs++);
    f.signal();
    const ts = f.timestamp;
    await sleep(2);
    assert.throws(() => f.signal(), errno('EINVAL'));
    assert.throws(() => f.signalTimestamp(1n), errno('EINVAL'));
    assert.equal(f.checkAndSignal(), true);
    assert.equal(runs, 1);
    assert.equal(f.timestamp, ts);
    assert.equal(f.getStatus(), 1);
  });

  it('signalTimestamp stores the given time and rejects a bad one', () => {
    using f = mock();
    assert.throws(() => f.signalTimestamp(-1n), errno('EINVAL'));
    assert.throws(() => f.signalTimestamp(5 as unknown as bigint), errno('EINVAL'));
    assert.equal(f.isSignaledFlag(), false);
    f.signalTimestamp(12345n);
    assert.equal(f.timestamp, 12345n);
  });

  it('checkAndSignal signals a pending fence and reports false', () => {
    using f = mock();
    assert.equal(f.checkAndSignal(), false);
    assert.equal(f.isSignaledFlag(), true);
    assert.equal(f.checkAndSignal(), true);
  });
});

describe('error and status', () => {
  it('getStatus is 0 pending, 1 signalled, the error when one was set', () => {
    using ok = mock();
    using bad = mock();
    assert.equal(ok.getStatus(), 0);
    bad.setError(-62);
    assert.equal(bad.getStatus(), 0, 'an error alone does not complete the fence');
    assert.equal(bad.error, -62);
    ok.signal();
    bad.signal();
    assert.equal(ok.getStatus(), 1);
    assert.equal(ok.error, 0);
    assert.equal(bad.getStatus(), -62);
  });

  it('setError takes only a negative errno in [-4095, -1]', () => {
    using f = mock();
    for (const e of [0, 1, 22, -4096, -1.5, Number.NaN]) {
      assert.throws(() => f.setError(e), errno('EINVAL'), String(e));
    }
    assert.equal(f.error, 0);
    f.setError(-4095);
    assert.equal(f.error, -4095);
    f.setError(-1);
    assert.equal(f.error, -1);
  });

  it('setError after signal is EINVAL and changes nothing', () => {
    using f = mock();
    f.signal();
    assert.throws(() => f.setError(-5), errno('EINVAL'));
    assert.equal(f.error, 0);
    assert.equal(f.getStatus(), 1);
  });
});

describe('callbacks', () => {
  it('run synchronously inside signal(), in registration order, with the fence', () => {
    using f = mock();
    const order: string[] = [];
    let inSignal = false;
    for (const tag of ['a', 'b', 'c']) {
      f.addCallback((x) => {
        assert.equal(inSignal, true, 'callback runs inside signal()');
        assert.equal(x.getStatus(), 1);
        assert.equal(x.seqno, 1n);
        order.push(tag);
      });
    }
    assert.deepEqual(order, []);
    inSignal = true;
    f.signal();
    inSignal = false;
    assert.deepEqual(order, ['a', 'b', 'c']);
  });

  it('see the error set before signal', () => {
    using f = mock();
    let seen = 0;
    f.addCallback((x) => {
      seen = x.getStatus();
    });
    f.setError(-125);
    f.signal();
    assert.equal(seen, -125);
  });

  it('adding to a signalled fence is ENOENT and never calls the callback', () => {
    using f = mock();
    f.signal();
    let called = false;
    assert.throws(
      () =>
        f.addCallback(() => {
          called = true;
        }),
      errno('ENOENT'),
    );
    assert.equal(called, false);
  });

  it('adding a callback from inside a callback of the same fence is ENOENT', () => {
    using f = mock();
    let inner: unknown;
    f.addCallback((x) => {
      try {
        x.addCallback(() => assert.fail('must not run'));
      } catch (e) {
        inner = e;
      }
    });
    f.signal();
    assert.ok(inner instanceof DmaBufError && inner.code === 'ENOENT');
  });

  it('removeCallback tells whether the callback was still pending', () => {
    using f = mock();
    let a = 0;
    let b = 0;
    const cbA = f.addCallback(() => a++);
    const cbB = f.addCallback(() => b++);
    assert.equal(f.removeCallback(cbA), true);
    assert.equal(f.removeCallback(cbA), false, 'removing twice');
    f.signal();
    assert.equal(a, 0);
    assert.equal(b, 1);
    assert.equal(f.removeCallback(cbB), false, 'already ran');
  });

  it('adding a callback enables signalling', () => {
    using f = mock();
    assert.equal(f.flags & ENABLE, 0);
    const cb = f.addCallback(() => {});
    assert.equal(f.flags & ENABLE, ENABLE);
    f.removeCallback(cb);
  });

  it('rejects a non-function with EINVAL', () => {
    using f = mock();
    assert.throws(() => f.addCallback(42 as unknown as () => void), errno('EINVAL'));
  });

  it('the fence passed to a callback is borrowed: it cannot be disposed', () => {
    using f = mock();
    let err: unknown;
    f.addCallback((x) => {
      try {
        x.dispose();
      } catch (e) {
        err = e;
      }
    });
    f.signal();
    assert.ok(err instanceof DmaBufError && err.code === 'EINVAL', String(err));
    assert.equal(f.getStatus(), 1, 'the handle still holds its reference');
  });

  it('a signal from inside a callback runs the other fence callbacks at once', () => {
    using f = mock();
    using g = mock();
    const order: string[] = [];
    f.addCallback(() => {
      order.push('f1');
      g.signal();
      order.push('f1-end');
    });
    f.addCallback(() => order.push('f2'));
    g.addCallback(() => order.push('g'));
    f.signal();
    assert.deepEqual(order, ['f1', 'g', 'f1-end', 'f2']);
  });
});

describe('waits in one thread', () => {
  it('timeout 0 polls: 0 while pending, 1 once signalled (sync and async)', async () => {
    using f = mock();
    assert.equal(f.waitSync({ timeout: 0 }), 0);
    assert.equal(await f.wait({ timeout: 0 }), 0);
    assert.equal(f.flags & ENABLE, ENABLE, 'even a polling wait enables signalling');
    f.signal();
    assert.equal(f.waitSync({ timeout: 0 }), 1);
    assert.equal(await f.wait({ timeout: 0 }), 1);
  });

  it('an already signalled fence returns the whole timeout (Infinity by default)', async () => {
    using f = mock();
    f.signal();
    assert.equal(f.waitSync({ timeout: 250 }), 250);
    assert.equal(await f.wait({ timeout: 250 }), 250);
    assert.equal(f.waitSync(), Number.POSITIVE_INFINITY);
    assert.equal(await f.wait(), Number.POSITIVE_INFINITY);
  });

  it('rejects a negative or NaN timeout with EINVAL', async () => {
    using f = mock();
    for (const t of [-1, Number.NaN]) {
      assert.throws(() => f.waitSync({ timeout: t }), errno('EINVAL'));
      await assert.rejects(f.wait({ timeout: t }), errno('EINVAL'));
    }
    f.signal();
    assert.throws(() => f.waitSync({ timeout: -1 }), errno('EINVAL'), 'also when signalled');
  });

  it('times out with 0 (sync and async)', async () => {
    using f = mock();
    const t0 = performance.now();
    assert.equal(f.waitSync({ timeout: 30 }), 0);
    assert.ok(performance.now() - t0 >= 25);
    assert.equal(await f.wait({ timeout: 30 }), 0);
    assert.ok(performance.now() - t0 >= 55);
    assert.equal(f.isSignaledFlag(), false);
  });

  it('an async wait never blocks the event loop and returns the remaining time', async () => {
    using f = mock();
    let ticksSeen = 0;
    const timer = setInterval(() => {
      ticksSeen++;
      if (ticksSeen === 5) f.signal();
    }, 5);
    try {
      const r = await f.wait({ timeout: 10_000 });
      assert.ok(r > 0 && r <= 10_000, `remaining ${r}`);
      assert.ok(ticksSeen >= 5, 'the timer kept ticking while waiting');
    } finally {
      clearInterval(timer);
    }
  });

  it('an aborted wait throws ERESTARTSYS with the reason as cause', async () => {
    using f = mock();
    const ac = new AbortController();
    setTimeout(() => ac.abort('stop'), 10);
    await assert.rejects(f.wait({ timeout: 10_000, signal: ac.signal }), (e: unknown) => {
      assert.ok(e instanceof DmaBufError);
      assert.equal(e.code, 'ERESTARTSYS');
      assert.equal(e.errno, 512);
      assert.equal(e.cause, 'stop');
      return true;
    });
    assert.throws(() => f.waitSync({ signal: ac.signal }), errno('ERESTARTSYS'));
    await assert.rejects(f.wait({ signal: ac.signal }), errno('ERESTARTSYS'));
    assert.equal(f.isSignaledFlag(), false);
  });

  it('a signalled fence wins over a pending abort (default_wait checks the bit first)', async () => {
    using f = mock();
    f.signal();
    const signal = AbortSignal.abort('late');
    assert.equal(f.waitSync({ timeout: 100, signal }), 100);
    assert.equal(await f.wait({ timeout: 100, signal }), 100);
    assert.equal(await f.wait({ timeout: 0, signal }), 1);
    assert.deepEqual(await DmaFence.waitAny([f], { timeout: 100, signal }), {
      remaining: 100,
      index: 0,
    });
    assert.deepEqual(DmaFence.waitAnySync([f], { timeout: 100, signal }), {
      remaining: 100,
      index: 0,
    });
  });

  it('a wait with an unused AbortSignal completes normally', async () => {
    using f = mock();
    const ac = new AbortController();
    setTimeout(() => f.signal(), 5);
    const r = await f.wait({ timeout: 5000, signal: ac.signal });
    assert.ok(r > 0);
    ac.abort();
  });
});

describe('waitAny in one thread', () => {
  it('rejects an empty list and a negative timeout with EINVAL', async () => {
    using f = mock();
    assert.throws(() => DmaFence.waitAnySync([]), errno('EINVAL'));
    await assert.rejects(DmaFence.waitAny([]), errno('EINVAL'));
    assert.throws(() => DmaFence.waitAnySync([f], { timeout: -1 }), errno('EINVAL'));
    await assert.rejects(DmaFence.waitAny([f], { timeout: -1 }), errno('EINVAL'));
  });

  it('timeout 0 polls: the lowest signalled index with 1, or 0 and -1', async () => {
    using a = mock();
    using b = mock();
    using c = mock();
    assert.deepEqual(DmaFence.waitAnySync([a, b, c], { timeout: 0 }), { remaining: 0, index: -1 });
    c.signal();
    b.signal();
    assert.deepEqual(DmaFence.waitAnySync([a, b, c], { timeout: 0 }), { remaining: 1, index: 1 });
    assert.deepEqual(await DmaFence.waitAny([a, c, b], { timeout: 0 }), {
      remaining: 1,
      index: 1,
    });
  });

  it('returns the whole timeout when one fence is already signalled at registration', async () => {
    using a = mock();
    using b = mock();
    using c = mock();
    b.signal();
    c.signal();
    assert.deepEqual(DmaFence.waitAnySync([a, b, c], { timeout: 500 }), {
      remaining: 500,
      index: 1,
    });
    assert.deepEqual(await DmaFence.waitAny([a, c, b], { timeout: 500 }), {
      remaining: 500,
      index: 1,
    });
  });

  it('times out with remaining 0 and index -1', async () => {
    using a = mock();
    using b = mock();
    assert.deepEqual(DmaFence.waitAnySync([a, b], { timeout: 20 }), { remaining: 0, index: -1 });
    assert.deepEqual(await DmaFence.waitAny([a, b], { timeout: 20 }), { remaining: 0, index: -1 });
  });

  it('wakes promptly when this thread signals one of the fences', async () => {
    using a = mock();
    using b = mock();
    let later = false;
    setTimeout(() => {
      b.signal();
      setTimeout(() => {
        later = true;
      }, 500);
    }, 10);
    const r = await DmaFence.waitAny([a, b], { timeout: 20_000 });
    assert.equal(r.index, 1);
    assert.ok(r.remaining > 0);
    // The wait must notice the signal at once, not at its next periodic re-check (1 s).
    assert.equal(later, false, 'waitAny resolved only after a timer set 500 ms after the signal');
  });

  it('is interruptible and leaves no callbacks behind', async () => {
    using a = mock();
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 10);
    await assert.rejects(
      DmaFence.waitAny([a], { timeout: 10_000, signal: ac.signal }),
      errno('ERESTARTSYS'),
    );
    // The waiter's callbacks were removed: dropping the last reference is silent.
    let ran = false;
    a.addCallback(() => {
      ran = true;
    });
    a.signal();
    assert.equal(ran, true);
  });
});

describe('driver ops', () => {
  it('reports the names until signal, then detached-driver / signaled-timeline', () => {
    using f = mock(7n, { driverName: 'drv', timelineName: 'ring0' });
    assert.equal(f.driverName, 'drv');
    assert.equal(f.timelineName, 'ring0');
    assert.equal(f.describe(), 'drv ring0 seq 7 unsignalled');
    f.signal();
    assert.equal(f.driverName, 'detached-driver');
    assert.equal(f.timelineName, 'signaled-timeline');
    assert.equal(f.describe(), 'detached-driver signaled-timeline seq 7 signalled');
    using plain = mock();
    assert.equal(plain.driverName, 'dma_fence');
    assert.equal(plain.timelineName, 'unbound');
  });

  it('requires both names, each at most 64 bytes', () => {
    const ctx = DmaFence.contextAlloc(1);
    assert.throws(
      () => new DmaFence(ctx, 1n, { driverName: 'x' } as unknown as DmaFenceOps),
      errno('EINVAL'),
    );
    assert.throws(
      () => new DmaFence(ctx, 1n, { driverName: 'x'.repeat(65), timelineName: 't' }),
      errno('EINVAL'),
    );
    using ok = new DmaFence(ctx, 1n, { driverName: 'é'.repeat(32), timelineName: 't' });
    assert.equal(ok.driverName, 'é'.repeat(32));
  });

  it('enableSignaling runs once, in this thread, before the first wait sleeps', async () => {
    const calls: string[] = [];
    let fence: DmaFence | undefined;
    const f = mock(1n, {
      driverName: 'd',
      timelineName: 't',
      enableSignaling(x) {
        calls.push(x.isSignaledFlag() ? 'signalled' : 'pending');
        setTimeout(() => fence?.signal(), 5);
        return true;
      },
    });
    fence = f;
    try {
      assert.deepEqual(calls, []);
      assert.equal(f.isSignaled(), false, 'polling does not enable signalling');
      assert.deepEqual(calls, []);
      const cb = f.addCallback(() => {});
      assert.deepEqual(calls, ['pending']);
      f.enableSwSignaling();
      f.removeCallback(cb);
      assert.ok((await f.wait({ timeout: 5000 })) > 0);
      assert.deepEqual(calls, ['pending']);
    } finally {
      f.dispose();
    }
  });

  it('enableSignaling returning false signals the fence (with its error)', async () => {
    using f = mock(1n, {
      driverName: 'd',
      timelineName: 't',
      enableSignaling(x) {
        x.setError(-61);
        return false;
      },
    });
    let called = false;
    assert.throws(
      () =>
        f.addCallback(() => {
          called = true;
        }),
      errno('ENOENT'),
    );
    assert.equal(called, false);
    assert.equal(f.getStatus(), -61);
    using g = mock(1n, { driverName: 'd', timelineName: 't', enableSignaling: () => false });
    assert.equal(g.waitSync({ timeout: 0 }), 1);
    using h = mock(1n, { driverName: 'd', timelineName: 't', enableSignaling: () => false });
    assert.equal(await h.wait({ timeout: 50 }), 50);
  });

  it('the signaled poll signals the fence (isSignaled, getStatus) but waits ignore it', () => {
    let done = false;
    let polls = 0;
    using f = mock(1n, {
      driverName: 'd',
      timelineName: 't',
      signaled(x) {
        polls++;
        if (done) x.setError(-5);
        return done;
      },
    });
    let ran = 0;
    f.addCallback(() => ran++);
    assert.equal(f.isSignaled(), false);
    assert.equal(f.getStatus(), 0);
    done = true;
    assert.equal(f.waitSync({ timeout: 0 }), 0, 'default wait tests only the bit');
    assert.equal(f.isSignaledFlag(), false, 'isSignaledFlag does not poll');
    const before = polls;
    assert.equal(f.isSignaled(), true);
    assert.equal(polls, before + 1);
    assert.equal(ran, 1);
    assert.equal(f.getStatus(), -5);
    assert.equal(f.isSignaled(), true);
    assert.equal(polls, before + 1, 'never polled again once signalled');
  });

  it('release runs once, when the last reference is gone, with a usable fence', () => {
    const seen: string[] = [];
    const f = mock(9n, {
      driverName: 'd',
      timelineName: 't',
      release(x) {
        seen.push(`seq ${x.seqno} signalled ${x.isSignaledFlag()}`);
      },
    });
    const g = f.get();
    f.dispose();
    assert.deepEqual(seen, []);
    g.signal();
    g.dispose();
    assert.deepEqual(seen, ['seq 9 signalled true']);
    g.dispose();
    assert.deepEqual(seen, ['seq 9 signalled true']);
    assert.throws(() => g.seqno, errno('EBADF'));
  });

  it('setDeadline keeps the earliest deadline and stops after signal', () => {
    const got: bigint[] = [];
    using f = mock(1n, {
      driverName: 'd',
      timelineName: 't',
      setDeadline(_x, ns) {
        got.push(ns);
      },
    });
    assert.equal(f.deadline, undefined);
    f.setDeadline(1000n);
    f.setDeadline(500n);
    f.setDeadline(2000n);
    assert.equal(f.deadline, 500n);
    assert.ok(got.length >= 2);
    assert.equal(got[0], 1000n);
    assert.equal(got.at(-1), 500n, 'the op sees the earliest deadline');
    assert.ok(
      got.every((ns) => ns === 1000n || ns === 500n),
      got.join(),
    );
    assert.throws(() => f.setDeadline(-1n), errno('EINVAL'));
    assert.throws(() => f.setDeadline(5 as unknown as bigint), errno('EINVAL'));
    f.signal();
    const n = got.length;
    f.setDeadline(1n);
    assert.equal(got.length, n, 'no deadline after signal');
  });
});

describe('stub fences', () => {
  it('getStub: one shared signalled fence on context 0, same timestamp every call', async () => {
    const a = DmaFence.getStub();
    await sleep(2);
    const b = DmaFence.getStub();
    try {
      assert.equal(a.isSignaledFlag(), true);
      assert.equal(a.context, 0n);
      assert.equal(a.seqno, 0n);
      assert.equal(a.getStatus(), 1);
      assert.equal(a.timestamp, b.timestamp);
      assert.equal(a._slot, b._slot);
      assert.throws(() => a.addCallback(() => {}), errno('ENOENT'));
      assert.equal(a.waitSync({ timeout: 0 }), 1);
    } finally {
      a.dispose();
      b.dispose();
    }
    using c = DmaFence.getStub();
    assert.equal(c.isSignaledFlag(), true, 'disposing stub handles never frees it');
  });

  it('64 stub references are all signalled (selftest test_stub)', () => {
    const stubs: DmaFence[] = [];
    try {
      for (let i = 0; i < 64; i++) {
        const s = DmaFence.getStub();
        stubs.push(s);
        assert.equal(s.isSignaled(), true);
      }
    } finally {
      for (const s of stubs) s.dispose();
    }
  });

  it('allocatePrivateStub: a new signalled fence with the given timestamp', () => {
    const n = live();
    using p = DmaFence.allocatePrivateStub(42n);
    assert.equal(live(), n + 1);
    assert.equal(p.isSignaledFlag(), true);
    assert.equal(p.timestamp, 42n);
    assert.equal(p.context, 0n);
    assert.equal(p.seqno, 0n);
    using stub = DmaFence.getStub();
    assert.notEqual(p._slot, stub._slot);
    const t0 = ktimeGetNs();
    using q = DmaFence.allocatePrivateStub();
    assert.ok((q.timestamp ?? 0n) >= t0);
  });
});

describe('references and handles', () => {
  it('get() adds a reference; the fence lives until the last one is disposed', () => {
    const n = live();
    const f = mock();
    const g = f.get();
    assert.notEqual(f, g);
    assert.equal(live(), n + 1);
    f.dispose();
    assert.equal(g.getStatus(), 0);
    assert.throws(() => f.getStatus(), errno('EBADF'), 'disposed handle');
    f.dispose();
    assert.equal(live(), n + 1, 'dispose is idempotent');
    g.put();
    assert.equal(live(), n);
    assert.throws(() => g.seqno, errno('EBADF'));
    assert.equal(g.alive, false);
  });

  it('a stale handle (slot reused by a new fence) is EBADF and never reaches the new one', () => {
    const f = mock(1n);
    const g = f.get();
    const slot = f._slot;
    f.dispose();
    g.dispose();
    const fresh: DmaFence[] = [];
    try {
      // Slots are reused last-in first-out: the next fences take the freed slot back.
      for (let i = 0; i < 4 && !fresh.some((x) => x._slot === slot); i++) fresh.push(mock(2n));
      const reuse = fresh.find((x) => x._slot === slot);
      assert.ok(reuse, 'the slot was reused');
      assert.throws(() => g.seqno, errno('EBADF'));
      assert.throws(() => g.signal(), errno('EBADF'));
      assert.throws(() => g.share(), errno('EBADF'));
      assert.equal(reuse.isSignaledFlag(), false);
      assert.equal(reuse.seqno, 2n);
    } finally {
      for (const x of fresh) x.dispose();
    }
  });

  it('every method of a disposed handle throws EBADF', async () => {
    const f = mock();
    const keep = f.get();
    f.dispose();
    try {
      const calls: [string, () => unknown][] = [
        ['signal', () => f.signal()],
        ['setError', () => f.setError(-5)],
        ['getStatus', () => f.getStatus()],
        ['addCallback', () => f.addCallback(() => {})],
        ['waitSync', () => f.waitSync({ timeout: 0 })],
        ['share', () => f.share()],
        ['get', () => f.get()],
        ['context', () => f.context],
        ['timestamp', () => f.timestamp],
        ['setDeadline', () => f.setDeadline(1n)],
        ['enableSwSignaling', () => f.enableSwSignaling()],
      ];
      for (const [name, fn] of calls) assert.throws(fn, errno('EBADF'), name);
      await assert.rejects(f.wait({ timeout: 0 }), errno('EBADF'));
      assert.throws(() => DmaFence.waitAnySync([keep, f]), errno('EBADF'));
      assert.equal(keep.isSignaledFlag(), false);
    } finally {
      keep.dispose();
    }
  });

  it('using disposes at the end of the block', () => {
    const n = live();
    let escaped: DmaFence | undefined;
    {
      using f = mock();
      escaped = f;
      assert.equal(live(), n + 1);
    }
    assert.equal(live(), n);
    assert.throws(() => escaped?.seqno, errno('EBADF'));
  });

  it('dropping the last reference with callbacks pending signals -EDEADLK and runs them', () => {
    const f = mock();
    const seen: number[] = [];
    f.addCallback((x) => seen.push(x.getStatus()));
    f.addCallback((x) => seen.push(x.error));
    f.dispose();
    assert.deepEqual(seen, [-35, -35]);
  });

  it('dropping the last reference without callbacks frees the fence unsignalled', () => {
    const states: string[] = [];
    const ops: DmaFenceOps = {
      driverName: 'd',
      timelineName: 't',
      release(x) {
        states.push(`${x.isSignaledFlag()} ${x.error}`);
      },
    };
    const f = mock(1n, ops);
    f.dispose();
    // A callback that was added and removed again leaves nothing pending either.
    const g = mock(1n, ops);
    g.removeCallback(g.addCallback(() => {}));
    g.dispose();
    assert.deepEqual(states, ['false 0', 'false 0']);
  });

  it('share/import in one thread gives the same fence; a message imports once', () => {
    using f = mock(77n);
    const msg = f.share();
    const g = DmaFence.import(msg);
    try {
      assert.equal(g.context, f.context);
      assert.equal(g.seqno, 77n);
      g.signal();
      assert.equal(f.isSignaledFlag(), true);
      assert.throws(() => DmaFence.import(msg), errno('EBADF'));
      assert.throws(() => DmaFence.releaseShared(msg), errno('EBADF'));
    } finally {
      g.dispose();
    }
    const unused = f.share();
    DmaFence.releaseShared(unused);
    assert.throws(() => DmaFence.import(unused), errno('EBADF'));
    assert.throws(() => DmaFence.import({} as never), errno('EINVAL'));
    assert.throws(() => DmaFence.import({ ...unused, $dmabuf: 'dma-buf' }), errno('EINVAL'));
  });

  it('a message whose fence is gone cannot be imported', () => {
    const f = mock();
    const msg = f.share();
    DmaFence.releaseShared(msg);
    f.dispose();
    const copy = { ...msg, claim: new SharedArrayBuffer(4) };
    assert.throws(() => DmaFence.import(copy), errno('EBADF'));
  });

  it('a handle dropped without dispose is reclaimed after garbage collection', async () => {
    const n = live();
    (() => {
      const f = mock();
      const g = f.get();
      g.signal();
    })();
    assert.equal(live(), n + 1);
    await collect();
    assert.equal(live(), n, 'the safety net gave the references back');
  });

  it('an unsignalled fence dropped without dispose is reclaimed too (with -EDEADLK callbacks)', async () => {
    const n = live();
    const seen: number[] = [];
    (() => {
      const f = mock();
      f.addCallback((x) => seen.push(x.getStatus()));
    })();
    await collect();
    assert.equal(live(), n);
    assert.deepEqual(seen, [-35]);
  });
});

describe('selftest ports (st-dma-fence.c)', () => {
  it('sanitycheck: enable, signal, put', () => {
    const f = mock();
    f.enableSwSignaling();
    f.signal();
    f.dispose();
  });

  it('signaling: not signalled at creation, then signalled after checkAndSignal', () => {
    using f = mock();
    f.enableSwSignaling();
    assert.equal(f.isSignaled(), false);
    assert.equal(f.checkAndSignal(), false);
    assert.equal(f.isSignaled(), true);
    assert.equal(f.isSignaledFlag(), true);
    assert.equal(f.driverName, 'detached-driver', 'ops are detached at signal');
  });

  it('add_callback: the callback runs on signal', () => {
    using f = mock();
    let seen = false;
    f.addCallback(() => {
      seen = true;
    });
    f.signal();
    assert.equal(seen, true);
  });

  it('late_add_callback: adding after signal fails and the callback never runs', () => {
    using f = mock();
    f.enableSwSignaling();
    f.signal();
    let seen = false;
    assert.throws(
      () =>
        f.addCallback(() => {
          seen = true;
        }),
      errno('ENOENT'),
    );
    assert.equal(f.checkAndSignal(), true);
    assert.equal(seen, false);
  });

  it('rm_callback: a removed callback does not run', () => {
    using f = mock();
    let seen = false;
    const cb = f.addCallback(() => {
      seen = true;
    });
    assert.equal(f.removeCallback(cb), true);
    f.signal();
    assert.equal(seen, false);
  });

  it('late_rm_callback: removal after the callback ran fails', () => {
    using f = mock();
    let seen = false;
    const cb = f.addCallback(() => {
      seen = true;
    });
    f.signal();
    assert.equal(seen, true);
    assert.equal(f.removeCallback(cb), false);
  });

  it('status: 0 on creation, non-zero after signal', () => {
    using f = mock();
    f.enableSwSignaling();
    assert.equal(f.getStatus(), 0);
    f.signal();
    assert.notEqual(f.getStatus(), 0);
  });

  it('error: -EIO is hidden until signal, then reported', () => {
    using f = mock();
    f.enableSwSignaling();
    f.setError(-5);
    assert.equal(f.getStatus(), 0);
    f.signal();
    assert.equal(f.getStatus(), -5);
  });

  it('wait: timeout 0 gives 0 before signal and 1 after', () => {
    using f = mock();
    f.enableSwSignaling();
    assert.equal(f.waitSync({ timeout: 0 }), 0);
    f.signal();
    assert.equal(f.waitSync({ timeout: 0 }), 1);
  });

  it('wait_timeout: a short wait times out, a timer signal ends a long one', async () => {
    using f = mock();
    f.enableSwSignaling();
    assert.equal(await f.wait({ timeout: 1 }), 0);
    const t = setTimeout(() => f.signal(), 1);
    try {
      assert.notEqual(await f.wait({ timeout: 5000 }), 0);
    } finally {
      clearTimeout(t);
    }
  });
});

describe('signalling annotations', () => {
  afterEach(() => {
    lockdepEnable(false);
    lockdepReset();
  });

  it('a blocking wait inside a fence callback is reported as might-sleep', () => {
    lockdepEnable(true, 'record');
    using f = mock();
    using other = mock();
    other.signal();
    f.addCallback(() => {
      other.waitSync({ timeout: 0 });
    });
    f.signal();
    const r = lockdepReports();
    assert.ok(
      r.some((x) => x.kind === 'might-sleep' && x.message.includes('dma_fence_wait')),
      JSON.stringify(r),
    );
  });

  it('an async wait started in a callback is not a might-sleep', async () => {
    lockdepEnable(true, 'record');
    using f = mock();
    using other = mock();
    other.signal();
    let p: Promise<number> | undefined;
    f.addCallback(() => {
      p = other.wait({ timeout: 10 });
    });
    f.signal();
    assert.equal(await p, 10);
    assert.deepEqual(
      lockdepReports().filter((x) => x.kind === 'might-sleep'),
      [],
    );
  });
});
