// Timeline syncobjs: points as dma_fence_chain links, QUERY, TIMELINE_SIGNAL, TRANSFER,
// TIMELINE_WAIT with WAIT_FOR_SUBMIT / WAIT_AVAILABLE, and IGT's syncobj_timeline tests in our
// own words; timelines signalled in one worker and waited on in others.
import assert from 'node:assert/strict';
import { afterEach, before, beforeEach, describe, it } from 'node:test';
import { DmaFence } from '../src/dma-fence.js';
import { DmaFenceChain } from '../src/dma-fence-chain.js';
import {
  DRM_SYNCOBJ_QUERY_FLAGS_LAST_SUBMITTED,
  DRM_SYNCOBJ_WAIT_FLAGS_WAIT_ALL,
  DRM_SYNCOBJ_WAIT_FLAGS_WAIT_AVAILABLE,
  DRM_SYNCOBJ_WAIT_FLAGS_WAIT_FOR_SUBMIT,
  DrmFile,
  DrmSyncobj,
  SYNCOBJ_NO_INDEX,
  syncobjTimeoutNs,
} from '../src/drm-syncobj.js';
import { SwSyncTimeline } from '../src/sw-sync.js';
import {
  assertNoLeak,
  baseline,
  errno,
  live,
  sleep,
  withSyncAgents,
} from './workers/sync-client.js';

const WAIT_ALL = DRM_SYNCOBJ_WAIT_FLAGS_WAIT_ALL;
const FOR_SUBMIT = DRM_SYNCOBJ_WAIT_FLAGS_WAIT_FOR_SUBMIT;
const AVAILABLE = DRM_SYNCOBJ_WAIT_FLAGS_WAIT_AVAILABLE;
const U64_MAX = (1n << 64n) - 1n;

let start = 0;
let file: DrmFile;
before(() => {
  baseline();
});
beforeEach(() => {
  start = live();
  file = new DrmFile();
});
afterEach(async () => {
  assert.equal(file.handleCount, 0, 'the test destroyed its handles');
  file.close();
  await assertNoLeak(start);
});

async function err(fn: () => unknown): Promise<string | number> {
  try {
    await fn();
    return 0;
  } catch (e) {
    return (e as { code?: string }).code ?? String(e);
  }
}

/** IGT's syncobj_attach_sw_sync: a pending sw_sync fence at `point` (0: the binary fence). */
function attach(h: number, point: bigint): SwSyncTimeline {
  const tl = new SwSyncTimeline();
  using f = tl.createFence(1);
  if (point === 0n) file.importSyncFile(h, f);
  else {
    const tmp = file.create();
    file.importSyncFile(tmp, f);
    file.transfer({ dstHandle: h, dstPoint: point, srcHandle: tmp }); // binary_to_timeline
    file.destroy(tmp);
  }
  return tl;
}

function trigger(h: number, point: bigint): void {
  const tl = attach(h, point);
  tl.inc(1);
  tl.dispose();
}

/** A pending sw_sync fence of `tl` at `value` becomes point `point` of `h`. */
function submit(h: number, tl: SwSyncTimeline, value: number, point: bigint): void {
  using f = tl.createFence(value);
  const tmp = file.create();
  file.importSyncFile(tmp, f);
  file.transfer({ dstHandle: h, dstPoint: point, srcHandle: tmp });
  file.destroy(tmp);
}

function query(h: number, flags = 0): bigint {
  return file.query([h], flags)[0]!;
}

describe('argument checks (IGT invalid-*)', () => {
  it('timeline wait: bad flags EINVAL, zero handles 0, illegal handle ENOENT', async () => {
    assert.equal(await err(() => file.timelineWait([], null, 0n, 0xdeadbeef)), 'EINVAL');
    assert.equal(await file.timelineWait([], null, 0n), SYNCOBJ_NO_INDEX);
    assert.equal(await err(() => file.timelineWait([0], null, 0n)), 'ENOENT');
  });

  it('query: zero handles EINVAL, illegal handle ENOENT (also among good ones), bad flags EINVAL', () => {
    assert.throws(() => file.query([]), errno('EINVAL'));
    assert.throws(() => file.query([0]), errno('ENOENT'));
    const a = file.create();
    const b = file.create();
    file.timelineSignal([a, b], [1n, 1n]);
    assert.equal(file.timelineWaitSync([a], [1n], 0n), 0);
    assert.throws(() => file.query([a, 0, b]), errno('ENOENT'));
    assert.throws(() => file.query([0], 0xdeadbeef), errno('EINVAL'), 'flags before handles');
    file.destroy(a);
    file.destroy(b);
  });

  it('timeline signal: zero handles EINVAL, illegal handle ENOENT, flags EINVAL, short points EFAULT', () => {
    assert.throws(() => file.timelineSignal([], null), errno('EINVAL'));
    assert.throws(() => file.timelineSignal([0], null), errno('ENOENT'));
    assert.throws(
      () => file.timelineSignal([1], [0n]),
      errno('ENOENT'),
      'invalid-signal-illegal-point',
    );
    assert.throws(() => file.timelineSignal([0], null, 0xdeadbeef), errno('EINVAL'));
    const a = file.create();
    assert.throws(() => file.timelineSignal([a, 0], [1n, 1n]), errno('ENOENT'));
    assert.throws(() => file.timelineSignal([a], []), errno('EFAULT'));
    assert.throws(() => file.timelineSignal([a], [-1n]), errno('EINVAL'));
    assert.equal(query(a), 0n, 'nothing happened');
    file.destroy(a);
  });

  it('transfer: pad EINVAL, illegal handles ENOENT, flags beyond WAIT_FOR_SUBMIT EINVAL', () => {
    assert.throws(
      () => file.transfer({ srcHandle: 0, dstHandle: 0, pad: 0xdeadbeef }),
      errno('EINVAL'),
    );
    assert.throws(
      () => file.transfer({ srcHandle: 0, dstHandle: 0, srcPoint: 1n }),
      errno('ENOENT'),
    );
    const a = file.create();
    assert.throws(() => file.transfer({ srcHandle: 0, dstHandle: a }), errno('ENOENT'));
    assert.throws(
      () => file.transfer({ srcHandle: 0, dstHandle: a, flags: WAIT_ALL }),
      errno('EINVAL'),
      'flags are checked before the source handle',
    );
    assert.throws(
      () => file.transfer({ srcHandle: a, dstHandle: a, srcPoint: 1n, dstPoint: 2n }),
      errno('EINVAL'),
      'no such point',
    );
    file.destroy(a);
  });

  it('invalid-transfer-non-existent-point: a point covered by a later one transfers fine', () => {
    const h = file.create();
    file.timelineSignal([h], [63n]);
    file.transfer({ srcHandle: h, dstHandle: h, srcPoint: 63n, dstPoint: 74n });
    assert.equal(query(h), 74n);
    file.destroy(h);
  });
});

describe('points and queries', () => {
  it('signal: EINVAL unsubmitted, ETIME with WAIT_FOR_SUBMIT, then both succeed', async () => {
    const h = file.create();
    assert.equal(await err(() => file.timelineWait([h], [1n], 0n)), 'EINVAL');
    assert.equal(await err(() => file.timelineWait([h], [1n], 0n, FOR_SUBMIT)), 'ETIME');
    file.timelineSignal([h], [1n]);
    assert.equal(await file.timelineWait([h], [1n], 0n), 0);
    assert.equal(await file.timelineWait([h], [1n], 0n, FOR_SUBMIT), 0);
    file.destroy(h);
  });

  it('signal-array: several timelines at once, point 0 for a binary one', () => {
    const hs = [file.create(), file.create(), file.create(), file.create()];
    file.timelineSignal(hs, [1n, 1n, 1n, 0n]);
    assert.equal(file.timelineWaitSync(hs.slice(0, 3), [1n, 1n, 1n], 0n), 0);
    assert.equal(file.waitSync([hs[3]!], 0n), 0);
    for (const h of hs) file.destroy(h);
  });

  it('signal-point-0: a point-0 signal works for timeline and binary waits', () => {
    const h = file.create();
    file.timelineSignal([h], [0n]);
    assert.equal(file.timelineWaitSync([h], [0n], 0n), 0);
    assert.equal(file.waitSync([h], 0n, FOR_SUBMIT), 0);
    file.destroy(h);
  });

  it('timeline signal at point 0 still chains: a point-0 wait keeps waiting for the old fence', () => {
    const h = file.create();
    const tl = attach(h, 0n);
    file.timelineSignal([h], [0n]);
    assert.throws(() => file.timelineWaitSync([h], [0n], 0n), errno('ETIME'));
    file.signal([h]);
    assert.equal(file.timelineWaitSync([h], [0n], 0n), 0, 'a binary signal does not chain');
    tl.dispose();
    file.destroy(h);
  });

  it('host-signal-points: QUERY follows host signals; submit and signal waits succeed', () => {
    const h = file.create();
    let value = 0n;
    let seed = 1;
    for (let i = 0; i < 100; i++) {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      value += BigInt(seed);
      file.timelineSignal([h], [value]);
      const q = query(h);
      assert.equal(q, value);
      assert.equal(file.timelineWaitSync([h], [q], 0n, FOR_SUBMIT), 0);
      assert.equal(file.timelineWaitSync([h], [q - 1n], 0n, WAIT_ALL), 0);
    }
    file.destroy(h);
  });

  it('QUERY reports the highest point known complete; LAST_SUBMITTED the newest', () => {
    const h = file.create();
    assert.deepEqual(file.query([h]), [0n], 'empty');
    const tl = new SwSyncTimeline();
    submit(h, tl, 1, 1n);
    submit(h, tl, 2, 2n);
    submit(h, tl, 3, 3n);
    assert.equal(query(h), 0n);
    assert.equal(query(h, DRM_SYNCOBJ_QUERY_FLAGS_LAST_SUBMITTED), 3n);
    tl.inc(2);
    assert.equal(query(h), 2n);
    tl.inc(1);
    assert.equal(query(h), 3n);
    file.signal([h]);
    assert.equal(query(h), 0n, 'a binary signal drops the history');
    assert.equal(query(h, DRM_SYNCOBJ_QUERY_FLAGS_LAST_SUBMITTED), 0n);
    tl.dispose();
    file.destroy(h);
  });

  it('device-signal-unordered: out-of-order signals keep QUERY monotonic', () => {
    const h = file.create();
    const tl = new SwSyncTimeline();
    const indices = [0, 2, 1, 4, 3];
    // Point i+1 gets the fence signalled at step indices.indexOf(i)+1.
    for (let i = 0; i < 5; i++) submit(h, tl, indices.indexOf(i) + 1, BigInt(i + 1));
    const signalled = new Array<boolean>(5).fill(false);
    let value = 0n;
    for (let i = 0; i < 5; i++) {
      tl.inc(1);
      signalled[indices[i]!] = true;
      let min = 0n;
      for (let j = 0; j < 5 && signalled[j]; j++) min = BigInt(j);
      const q = query(h);
      assert.ok(q >= min && q >= value, `step ${i}: ${q}`);
      value = q > value ? q : value;
      assert.equal(file.timelineWaitSync([h], [q], 0n, FOR_SUBMIT), 0);
      assert.equal(file.timelineWaitSync([h], [q], 0n, WAIT_ALL), 0);
    }
    tl.dispose();
    file.destroy(h);
  });

  it('device-submit-unordered: unordered points are accepted; QUERY and waits still work', () => {
    const h = file.create();
    const tl = new SwSyncTimeline();
    const points = [1n, 5n, 3n, 6n, 7n];
    for (const [i, p] of points.entries()) submit(h, tl, i + 1, p);
    tl.inc(3);
    const q = query(h);
    assert.equal(q, 5n);
    assert.equal(file.timelineWaitSync([h], [q], 0n, FOR_SUBMIT), 0);
    assert.equal(file.timelineWaitSync([h], [q], 0n, WAIT_ALL), 0);
    tl.dispose();
    file.destroy(h);
  });

  it('host-signal-ordered: a host point ahead of pending device points', () => {
    const h = file.create();
    const tl = new SwSyncTimeline();
    for (let i = 0; i < 5; i++) submit(h, tl, i + 1, BigInt(i + 1));
    tl.inc(3);
    assert.equal(query(h), 3n);
    file.timelineSignal([h], [8n]);
    assert.equal(query(h), 3n, 'point 8 waits for points 4 and 5');
    tl.inc(5);
    assert.equal(query(h), 8n);
    tl.dispose();
    file.destroy(h);
  });

  it('a non-increasing point opens a new context; QUERY may then say 0 (no error)', () => {
    const h = file.create();
    const tl = new SwSyncTimeline();
    submit(h, tl, 1, 5n);
    submit(h, tl, 2, 3n);
    assert.equal(query(h, DRM_SYNCOBJ_QUERY_FLAGS_LAST_SUBMITTED), 5n, 'clamped up to 5');
    assert.equal(query(h), 0n);
    using sf = file.exportSyncFile(h, 4n);
    using g = sf.getFence();
    assert.ok(DmaFenceChain.isChain(g));
    assert.equal(g.seqno, 5n, 'every later lookup resolves to the newest node');
    tl.inc(2);
    assert.equal(query(h), 5n);
    tl.dispose();
    file.destroy(h);
  });

  it('32bits-limit: points past 2^31 compare as 64-bit; QUERY never goes back', () => {
    const h = file.create();
    const tl = new SwSyncTimeline();
    const limit = (1n << 31n) - 1n;
    const points = [1n, 5n, limit + 5n, limit + 6n, limit * 2n];
    for (const [i, p] of points.entries()) submit(h, tl, i + 1, p);
    let last = 0n;
    for (let i = 0; i < points.length; i++) {
      tl.inc(1);
      const v = query(h);
      assert.ok(last <= v);
      assert.equal(v, points[i]);
      last = v;
    }
    tl.dispose();
    file.destroy(h);
  });

  it('signalled points are collected from the chain; a collected point reads as the stub', () => {
    const h = file.create();
    for (let p = 1n; p <= 50n; p++) file.timelineSignal([h], [p]);
    using sf = file.exportSyncFile(h, 10n);
    using g = sf.getFence();
    using stub = DmaFence.getStub();
    assert.equal(g._slot, stub._slot);
    using head = file.exportSyncFile(h);
    assert.equal(head.info().numFences, 1, 'one link left');
    file.destroy(h);
  });
});

describe('transfer', () => {
  it('transfer-timeline-point: binary to point, point to point', () => {
    const tl = new SwSyncTimeline();
    const h = file.create();
    {
      using f = tl.createFence(1);
      const tmp = file.create();
      file.importSyncFile(tmp, f);
      file.transfer({ dstHandle: h, dstPoint: 1n, srcHandle: tmp });
      file.destroy(tmp);
    }
    assert.equal(query(h), 0n);
    assert.throws(() => file.timelineWaitSync([h], [1n], 0n, WAIT_ALL), errno('ETIME'));
    tl.inc(1);
    assert.equal(query(h), 1n);
    assert.equal(file.timelineWaitSync([h], [1n], 0n, WAIT_ALL), 0, 'satisfied before waiting');
    file.timelineSignal([h], [2n]);
    file.transfer({ dstHandle: h, dstPoint: 3n, srcHandle: h, srcPoint: 2n });
    assert.equal(query(h), 3n);
    file.destroy(h);
    tl.dispose();
  });

  it('to a point: flattened with unwrap-merge (signalled parts and their errors dropped)', () => {
    const src = file.create();
    const dst = file.create();
    const tl = new SwSyncTimeline();
    submit(src, tl, 1, 1n);
    submit(src, tl, 2, 2n);
    file.transfer({ dstHandle: dst, dstPoint: 1n, srcHandle: src, srcPoint: 2n });
    using sf = file.exportSyncFile(dst, 1n);
    using g = sf.getFence();
    using contained = (g as DmaFenceChain).contained();
    assert.ok(!DmaFenceChain.isChain(contained), 'the chain of the source was flattened');
    assert.equal(contained.seqno, 2n, 'one pending fence per context, the later one');
    const bad = new DmaFence(DmaFence.contextAlloc(1), 1n);
    bad.setError(-5);
    bad.signal();
    const b = file.create();
    using bf = DrmSyncobj.create();
    bf.replaceFence(bad);
    const bh = file.getHandle(bf);
    file.transfer({ dstHandle: b, dstPoint: 1n, srcHandle: bh });
    using bs = file.exportSyncFile(b, 1n);
    assert.equal(bs.status(), 1, 'the error is gone');
    file.transfer({ dstHandle: b, srcHandle: bh });
    using bs0 = file.exportSyncFile(b);
    assert.equal(bs0.status(), -5, 'to point 0: the fence itself, error kept');
    bad.dispose();
    tl.dispose();
    for (const h of [src, dst, b, bh]) file.destroy(h);
  });

  it('with WAIT_FOR_SUBMIT waits for the source point (transferAsync); without: EINVAL', async () => {
    const src = file.create();
    const dst = file.create();
    assert.throws(
      () => file.transfer({ srcHandle: src, srcPoint: 1n, dstHandle: dst, dstPoint: 1n }),
      errno('EINVAL'),
    );
    setTimeout(() => file.timelineSignal([src], [1n]), 10);
    await file.transferAsync({
      srcHandle: src,
      srcPoint: 1n,
      dstHandle: dst,
      dstPoint: 1n,
      flags: FOR_SUBMIT,
    });
    assert.equal(query(dst), 1n);
    for (const h of [src, dst]) file.destroy(h);
  });
});

/** IGT syncobj_timeline's test-flag bits. */
const T_FOR_SUBMIT = 1 << 0;
const T_ALL = 1 << 1;
const T_AVAILABLE = 1 << 2;
const T_UNSUBMITTED = 1 << 3;
const T_SUBMITTED = 1 << 4;
const T_SIGNALED = 1 << 5;

function flagsFor(t: number): number {
  return (
    (t & T_FOR_SUBMIT ? FOR_SUBMIT : 0) |
    (t & T_AVAILABLE ? AVAILABLE : 0) |
    (t & T_ALL ? WAIT_ALL : 0)
  );
}

function setUp(hs: number[], points: bigint[], t: number): SwSyncTimeline[] {
  const tls: SwSyncTimeline[] = [];
  let modes = t & (T_UNSUBMITTED | T_SUBMITTED | T_SIGNALED);
  for (const [i, h] of hs.entries()) {
    const m = modes & -modes;
    if (modes & ~m) modes &= ~m;
    if (m & (T_SUBMITTED | T_SIGNALED)) {
      const tl = attach(h, points[i]!);
      tls.push(tl);
      if (m & T_SIGNALED) tl.inc(1);
    }
  }
  return tls;
}

describe('wait matrices (IGT single-wait-* / multi-wait-*)', () => {
  it('single-wait: every combination of flags and state', async () => {
    for (let t = 0; t < 64; t++) {
      const modes = t & (T_UNSUBMITTED | T_SUBMITTED | T_SIGNALED);
      if (modes === 0 || (modes & (modes - 1)) !== 0) continue;
      let expect: string | number = 0;
      if (t & T_UNSUBMITTED && !(t & (T_FOR_SUBMIT | T_AVAILABLE))) expect = 'EINVAL';
      else if (!(t & T_SIGNALED) && !(t & T_SUBMITTED && t & T_AVAILABLE)) expect = 'ETIME';
      const h = file.create();
      const tls = setUp([h], [1n], t);
      const fl = flagsFor(t);
      assert.equal(await err(() => file.timelineWait([h], [1n], 0n, fl)), expect, `poll ${t}`);
      assert.equal(
        await err(() => file.timelineWait([h], [1n], syncobjTimeoutNs(5), fl)),
        expect,
        `short ${t}`,
      );
      assert.equal(
        await err(() => file.timelineWaitSync([h], [1n], syncobjTimeoutNs(5), fl)),
        expect,
        `sync ${t}`,
      );
      if (expect !== 'ETIME') {
        assert.equal(await err(() => file.timelineWait([h], [1n], U64_MAX, fl)), expect);
      }
      for (const tl of tls) tl.dispose();
      file.destroy(h);
    }
  });

  it('multi-wait: five syncobjs, timeline and binary, every combination', async () => {
    let seed = 3;
    const rand = (): bigint => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return BigInt(1 + (seed % 1000));
    };
    for (let t = 0; t < 64; t++) {
      if (!(t & (T_UNSUBMITTED | T_SUBMITTED | T_SIGNALED))) continue;
      let expect: string | number = 0;
      if (t & T_UNSUBMITTED && !(t & (T_FOR_SUBMIT | T_AVAILABLE))) expect = 'EINVAL';
      else if (t & T_ALL) {
        if (t & (T_UNSUBMITTED | T_SUBMITTED)) expect = 'ETIME';
        if (!(t & T_UNSUBMITTED) && t & T_SUBMITTED && t & T_AVAILABLE) expect = 0;
      } else if (!(t & T_SIGNALED) && !(t & T_SUBMITTED && t & T_AVAILABLE)) expect = 'ETIME';
      const points = [rand(), 0n, rand(), rand(), 0n];
      const hs = points.map(() => file.create());
      const tls = setUp(hs, points, t);
      const fl = flagsFor(t);
      assert.equal(await err(() => file.timelineWait(hs, points, 0n, fl)), expect, `poll ${t}`);
      assert.equal(
        await err(() => file.timelineWaitSync(hs, points, syncobjTimeoutNs(5), fl)),
        expect,
        `short ${t}`,
      );
      for (const tl of tls) tl.dispose();
      for (const h of hs) file.destroy(h);
    }
  });

  it('WAIT_AVAILABLE: returns once the point exists, signalled or not', async () => {
    const h = file.create();
    const tl = new SwSyncTimeline();
    setTimeout(() => submit(h, tl, 1, 2n), 5);
    assert.equal(await file.timelineWait([h], [2n], syncobjTimeoutNs(2000), AVAILABLE), 0);
    assert.equal(await err(() => file.timelineWait([h], [2n], 0n)), 'ETIME');
    assert.equal(await file.timelineWait([h], [1n], 0n, AVAILABLE), 0, 'covered by point 2');
    tl.dispose();
    file.destroy(h);
  });
});

describe('delayed and concurrent (IGT wait-*-delayed-*, reset-during-wait-for-submit)', () => {
  it('wait-delayed-signal / wait-for-submit-delayed-submit, all four variants', async () => {
    for (const t of [0, T_FOR_SUBMIT, T_ALL, T_ALL | T_FOR_SUBMIT]) {
      const h = file.create();
      let tl: SwSyncTimeline | undefined;
      if (t & T_FOR_SUBMIT) setTimeout(() => trigger(h, 1n), 10);
      else {
        tl = attach(h, 1n);
        setTimeout(() => tl?.inc(1), 10);
      }
      await file.timelineWait([h], [1n], syncobjTimeoutNs(2000), flagsFor(t));
      tl?.dispose();
      file.destroy(h);
    }
  });

  it('reset-during-wait-for-submit', async () => {
    const h = file.create();
    setTimeout(() => {
      file.reset([h]);
      trigger(h, 1n);
    }, 10);
    assert.equal(await file.timelineWait([h], [1n], syncobjTimeoutNs(2000), FOR_SUBMIT), 0);
    file.destroy(h);
  });

  it('eventfd on a timeline point: available, then signalled; a point already passed fires', async () => {
    const h = file.create();
    const tl = new SwSyncTimeline();
    const seen: string[] = [];
    const a = file.eventfd(h, 3n, AVAILABLE, () => seen.push('avail'));
    const s = file.eventfd(h, 3n, 0, () => seen.push('signal'));
    submit(h, tl, 1, 2n);
    await sleep(2);
    assert.deepEqual(seen, []);
    submit(h, tl, 2, 3n);
    await a.promise;
    assert.deepEqual(seen, ['avail']);
    tl.inc(1);
    await sleep(2);
    assert.deepEqual(seen, ['avail'], 'point 3 waits for its own fence');
    tl.inc(1);
    await s.promise;
    assert.deepEqual(seen, ['avail', 'signal']);
    await file.eventfd(h, 1n).promise;
    tl.dispose();
    file.destroy(h);
  });
});

describe('threads', () => {
  it('a timeline signalled in one worker wakes waiters in two others (blocking and async)', async () => {
    await withSyncAgents(3, async ([sig, wa, wb]) => {
      using tl = DrmSyncobj.create();
      for (const w of [sig!, wa!, wb!])
        await w.call('import.syncobj', { name: 't', msg: tl.share() });
      const n = 20;
      const blocking = (async () => {
        for (let p = 1; p <= n; p++) {
          await wa!.call('syncobj.wait', {
            names: ['t'],
            points: [String(p)],
            flags: FOR_SUBMIT,
            timeoutMs: 5000,
            sync: true,
          });
        }
      })();
      const asyncWaits = (async () => {
        for (let p = 2; p <= n; p += 2) {
          await wb!.call('syncobj.wait', {
            names: ['t'],
            points: [String(p)],
            flags: FOR_SUBMIT | WAIT_ALL,
            timeoutMs: 5000,
          });
        }
      })();
      const events: Promise<void>[] = [];
      for (let p = 5; p <= n; p += 5) events.push(tl.eventfd(BigInt(p), 0).promise);
      for (let p = 1; p <= n; p++) {
        await sig!.call('syncobj.timelineSignal', { name: 't', point: String(p) });
        if (p % 4 === 0) await sleep(1);
      }
      await Promise.all([blocking, asyncWaits, ...events]);
      assert.equal(tl.query(), BigInt(n));
      assert.equal(await wa!.call('syncobj.query', { name: 't' }), String(n));
      for (const w of [sig!, wa!, wb!]) await w.call('dispose', { name: 't' });
    });
  });

  it('a multi-entry wait in a worker across two timelines fed from two other threads', async () => {
    await withSyncAgents(2, async ([w, s]) => {
      using t1 = DrmSyncobj.create();
      using t2 = DrmSyncobj.create();
      for (const a of [w!, s!]) {
        await a.call('import.syncobj', { name: 't1', msg: t1.share() });
        await a.call('import.syncobj', { name: 't2', msg: t2.share() });
      }
      const all = w!.call<number>('syncobj.wait', {
        names: ['t1', 't2'],
        points: ['3', '4'],
        flags: FOR_SUBMIT | WAIT_ALL,
        timeoutMs: 5000,
        sync: true,
      });
      await sleep(5);
      const tl = new SwSyncTimeline();
      using f = tl.createFence(1);
      t1.addPoint(
        (() => {
          const g = f.getFence();
          queueMicrotask(() => g.dispose());
          return g;
        })(),
        3n,
      );
      await s!.call('syncobj.timelineSignal', { name: 't2', point: '4', delayMs: 5 });
      await sleep(5);
      tl.inc(1);
      assert.equal(await all, -1, 'WAIT_ALL: nothing was satisfied before waiting');
      tl.dispose();
      for (const a of [w!, s!]) {
        await a.call('dispose', { name: 't1' });
        await a.call('dispose', { name: 't2' });
      }
    });
  });

  it('eventfds registered in a worker fire there when points appear from here', async () => {
    await withSyncAgents(1, async ([w]) => {
      using tl = DrmSyncobj.create();
      await w!.call('import.syncobj', { name: 't', msg: tl.share() });
      await w!.call('syncobj.eventfd', { name: 't', point: '2', flags: AVAILABLE, tag: 'a2' });
      await w!.call('syncobj.eventfd', { name: 't', point: '3', flags: 0, tag: 's3' });
      tl.timelineSignal(2n);
      assert.deepEqual(await w!.call('events', { n: 1 }), ['a2']);
      tl.timelineSignal(3n);
      assert.deepEqual(await w!.call('events', { n: 1 }), ['s3']);
      await w!.call('dispose', { name: 't' });
    });
  });
});
