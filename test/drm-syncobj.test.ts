// drm_syncobj, binary use and the handle table: the per-ioctl checks and errnos (sync.md §3.4),
// the observed 6.1 results, ports of IGT's syncobj_basic and syncobj_wait in our own words, the
// eventfd equivalent, and waits whose fence appears from another thread.
import assert from 'node:assert/strict';
import { afterEach, before, beforeEach, describe, it } from 'node:test';
import { DmaFence } from '../src/dma-fence.js';
import {
  DRM_CAP_SYNCOBJ,
  DRM_CAP_SYNCOBJ_TIMELINE,
  DRM_SYNCOBJ_CREATE_SIGNALED,
  DRM_SYNCOBJ_FD_TO_HANDLE_FLAGS_IMPORT_SYNC_FILE,
  DRM_SYNCOBJ_HANDLE_TO_FD_FLAGS_EXPORT_SYNC_FILE,
  DRM_SYNCOBJ_WAIT_FLAGS_WAIT_ALL,
  DRM_SYNCOBJ_WAIT_FLAGS_WAIT_AVAILABLE,
  DRM_SYNCOBJ_WAIT_FLAGS_WAIT_DEADLINE,
  DRM_SYNCOBJ_WAIT_FLAGS_WAIT_FOR_SUBMIT,
  DrmFile,
  DrmSyncobj,
  SYNCOBJ_NO_INDEX,
  syncobjTimeoutNs,
} from '../src/drm-syncobj.js';
import { SwSyncTimeline } from '../src/sw-sync.js';
import { SyncFile } from '../src/sync-file.js';
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
/** IGT's UINT64_MAX timeout: as the s64 `timeout_nsec` it is -1, a time long past: a poll. */
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

/** A short absolute timeout, like IGT's short_timeout(). */
function short(ms = 5): bigint {
  return syncobjTimeoutNs(ms);
}

/** IGT's syncobj_attach_sw_sync: a pending sw_sync fence at value 1 goes into the syncobj. */
function attach(h: number): SwSyncTimeline {
  const tl = new SwSyncTimeline();
  using f = tl.createFence(1);
  file.importSyncFile(h, f);
  return tl;
}

/** IGT's syncobj_trigger: attach, then signal it. */
function trigger(h: number): void {
  const tl = attach(h);
  tl.inc(1);
  tl.dispose();
}

/** Runs `fn` and returns its errno name, or 0 on success (like IGT's *_err helpers). */
async function err(fn: () => unknown): Promise<string | number> {
  try {
    await fn();
    return 0;
  } catch (e) {
    return (e as { code?: string }).code ?? String(e);
  }
}

describe('handles (IGT syncobj_basic)', () => {
  it('create: handles from 1, lowest free reused; bad flags EINVAL', () => {
    const a = file.create();
    const b = file.create();
    assert.deepEqual([a, b], [1, 2]);
    file.destroy(a);
    assert.equal(file.create(), 1);
    assert.throws(() => file.create(0xdeadbeef), errno('EINVAL'));
    assert.throws(() => file.create(2), errno('EINVAL'));
    file.destroy(1);
    file.destroy(b);
  });

  it('destroy: pad EINVAL, unknown handle EINVAL (not ENOENT); only that handle goes', () => {
    const h = file.create();
    assert.throws(() => file.destroy(h, 1), errno('EINVAL'));
    assert.throws(() => file.destroy(0), errno('EINVAL'));
    assert.throws(() => file.destroy(0xdeadbeef), errno('EINVAL'));
    const fd = file.handleToSyncobj(h);
    file.destroy(h);
    assert.throws(() => file.destroy(h), errno('EINVAL'), '6.1 observed destroy_again');
    fd.signal();
    fd.dispose();
  });

  it('handle_to_fd / fd_to_handle: pad and flag checks, wrong kinds of fd', () => {
    const h = file.create();
    assert.throws(() => file.handleToFd(h, 0xdeadbeef), errno('EINVAL'));
    assert.throws(() => file.handleToFd(h, 0, 0n, 1), errno('EINVAL'));
    assert.throws(() => file.handleToFd(0), errno('EINVAL'), 'unknown handle without export');
    assert.throws(
      () => file.handleToFd(0, DRM_SYNCOBJ_HANDLE_TO_FD_FLAGS_EXPORT_SYNC_FILE),
      errno('ENOENT'),
      'unknown handle with export',
    );
    assert.throws(() => file.handleToFd(h, 2, 5n), errno('EINVAL'), 'a point needs export');
    assert.throws(() => file.fdToHandle(-1), errno('EINVAL'));
    assert.throws(() => file.fdToHandle(file), errno('EINVAL'), 'the DRM file is no syncobj fd');
    assert.throws(() => file.fdToHandle(-1, 0xdeadbeef), errno('EINVAL'));
    assert.throws(() => file.fdToHandle(-1, 0, 0, 0n, 1), errno('EINVAL'));
    const fd = file.handleToSyncobj(h);
    assert.throws(() => file.fdToHandle(fd, 2, 0, 3n), errno('EINVAL'), 'a point needs import');
    assert.throws(
      () => file.fdToHandle(fd, DRM_SYNCOBJ_FD_TO_HANDLE_FLAGS_IMPORT_SYNC_FILE, h),
      errno('EINVAL'),
      'a syncobj fd is not a sync file',
    );
    fd.dispose();
    assert.throws(() => file.fdToHandle(fd), errno('EBADF'), 'a closed fd');
    file.destroy(h);
  });

  it('test-valid-cycle: every import of an fd is a new handle on the same live object', () => {
    const h = file.create();
    const fd = file.handleToSyncobj(h);
    const h2 = file.fdToHandle(fd);
    const h3 = file.fdToHandle(fd);
    assert.notEqual(h2, h);
    assert.notEqual(h3, h2);
    fd.dispose();
    file.destroy(h);
    file.signal([h2]);
    assert.equal(file.waitSync([h3], 0n), 0, 'signal through one handle is seen by all');
    file.destroy(h2);
    file.destroy(h3);
  });

  it('create-signaled: a new signalled stub, waits succeed at once', () => {
    const h = file.create(DRM_SYNCOBJ_CREATE_SIGNALED);
    assert.equal(file.waitSync([h], 0n), 0);
    using sf = file.exportSyncFile(h);
    const info = sf.info();
    assert.equal(info.name, 'stub-stub0-0');
    assert.equal(info.status, 1);
    using stub = DmaFence.getStub();
    using g = sf.getFence();
    assert.notEqual(g._slot, stub._slot, 'a private stub');
    file.destroy(h);
  });

  it('a closed file drops its handles and refuses further use (EBADF)', () => {
    const f2 = new DrmFile();
    const h = f2.create();
    using fd = f2.handleToSyncobj(h);
    f2.close();
    assert.throws(() => f2.create(), errno('EBADF'));
    fd.signal();
    assert.equal(DrmSyncobj.waitSync([fd], { timeout: 0 }), 0, 'the fd kept the object');
  });

  it('a driver without the features: EOPNOTSUPP before any other check; caps', () => {
    using none = new DrmFile({ syncobj: false });
    using binary = new DrmFile({ timeline: false });
    assert.equal(binary.getCap(DRM_CAP_SYNCOBJ), 1);
    assert.equal(binary.getCap(DRM_CAP_SYNCOBJ_TIMELINE), 0);
    assert.equal(none.getCap(DRM_CAP_SYNCOBJ), 0);
    assert.equal(file.getCap(DRM_CAP_SYNCOBJ_TIMELINE), 1);
    assert.throws(() => none.create(0xdead), errno('EOPNOTSUPP'));
    assert.throws(() => none.destroy(0, 1), errno('EOPNOTSUPP'));
    const h = binary.create();
    assert.throws(() => binary.timelineSignal([h], null, 1), errno('EOPNOTSUPP'));
    assert.throws(() => binary.query([], 9), errno('EOPNOTSUPP'));
    assert.throws(
      () => binary.transfer({ srcHandle: 0, dstHandle: 0, pad: 1 }),
      errno('EOPNOTSUPP'),
    );
    assert.throws(() => binary.eventfd(h, 0n, 99), errno('EOPNOTSUPP'), 'eventfd needs timeline');
    // The timeline wait needs the feature; the binary one does not.
    assert.equal(binary.waitSync([], 0n), SYNCOBJ_NO_INDEX);
    assert.throws(() => binary.timelineWaitSync([h], [1n], 0n), errno('EOPNOTSUPP'));
    binary.destroy(h);
  });
});

describe('observed on 6.1 (kernel-6.1-observed.md)', () => {
  it('replays the recorded syncobj sequence', async () => {
    const h = file.create();
    file.handleToSyncobj(h).dispose();
    assert.equal(await err(() => file.exportSyncFile(h)), 'EINVAL', 'export_sync_file_empty');
    assert.equal(await err(() => file.wait([h], 0n)), 'EINVAL', 'wait_empty_timeout0');
    assert.equal(await err(() => file.wait([h], 0n, FOR_SUBMIT)), 'ETIME');
    file.signal([h]);
    assert.equal(await file.wait([h], 0n), 0, 'wait_after_signal');
    file.reset([h]);
    file.timelineSignal([h], [5n]);
    assert.deepEqual(file.query([h]), [5n]);
    file.timelineSignal([h], [3n]);
    assert.deepEqual(file.query([h]), [5n], 'query_point_after_3');
    assert.equal(await err(() => file.timelineWait([h], [7n], 0n)), 'EINVAL');
    assert.equal(await file.timelineWait([h], [4n], 0n), 0);
    file.destroy(h);
    assert.throws(() => file.destroy(h), errno('EINVAL'));
  });
});

describe('reset and signal (IGT syncobj_wait invalid-reset-* / invalid-signal-*)', () => {
  it('no handles EINVAL; pad EINVAL; any unknown handle ENOENT before anything changes', () => {
    const a = file.create();
    const b = file.create();
    const ops = [
      (hs: number[], pad?: number) => file.reset(hs, pad),
      (hs: number[], pad?: number) => file.signal(hs, pad),
    ];
    for (const op of ops) {
      assert.throws(() => op([]), errno('EINVAL'));
      assert.throws(() => op([a], 1), errno('EINVAL'));
      assert.throws(() => op([0]), errno('ENOENT'));
      assert.throws(() => op([a, 0, b]), errno('ENOENT'));
      assert.throws(() => op('x' as unknown as number[]), errno('EFAULT'));
    }
    assert.throws(() => file.waitSync([a], 0n), errno('EINVAL'), 'nothing was signalled');
    file.destroy(a);
    file.destroy(b);
  });

  it('reset-unsignaled / reset-signaled / reset-multiple-signaled', () => {
    const h = file.create();
    assert.throws(() => file.waitSync([h], 0n), errno('EINVAL'));
    file.reset([h]);
    assert.throws(() => file.waitSync([h], 0n), errno('EINVAL'));
    trigger(h);
    assert.equal(file.waitSync([h], 0n), 0);
    file.reset([h]);
    assert.throws(() => file.waitSync([h], 0n), errno('EINVAL'));
    const hs = [file.create(), file.create(), file.create()];
    for (const x of hs) trigger(x);
    assert.equal(file.waitSync(hs, 0n, WAIT_ALL), 0);
    file.reset(hs);
    for (const x of hs) {
      assert.throws(() => file.waitSync([x], 0n), errno('EINVAL'));
      file.destroy(x);
    }
    file.destroy(h);
  });

  it('signal: EINVAL, then ETIME with WAIT_FOR_SUBMIT, then signalled', () => {
    const h = file.create();
    assert.throws(() => file.waitSync([h], 0n), errno('EINVAL'));
    assert.throws(() => file.waitSync([h], 0n, FOR_SUBMIT), errno('ETIME'));
    file.signal([h]);
    assert.equal(file.waitSync([h], 0n), 0);
    assert.equal(file.waitSync([h], 0n, FOR_SUBMIT), 0);
    file.destroy(h);
  });

  it('signal drops a timeline history; each signal installs a fresh stub', () => {
    const h = file.create();
    file.timelineSignal([h], [3n]);
    assert.deepEqual(file.query([h]), [3n]);
    using before = file.exportSyncFile(h);
    file.signal([h]);
    assert.deepEqual(file.query([h]), [0n]);
    assert.throws(() => file.exportSyncFile(h, 1n), errno('EINVAL'), 'no chain any more');
    using s1 = file.exportSyncFile(h);
    file.signal([h]);
    using s2 = file.exportSyncFile(h);
    using f1 = s1.getFence();
    using f2 = s2.getFence();
    assert.notEqual(f1._slot, f2._slot);
    assert.equal(before.info().numFences, 1, 'the old export is unaffected');
    file.destroy(h);
  });
});

describe('wait checks', () => {
  it('bad flags EINVAL (WAIT_AVAILABLE only for the timeline wait); zero handles succeed', async () => {
    assert.equal(await err(() => file.wait([], 0n, 0xdeadbeef)), 'EINVAL');
    assert.equal(await err(() => file.wait([], 0n, AVAILABLE)), 'EINVAL');
    assert.equal(await file.wait([], 0n), SYNCOBJ_NO_INDEX, 'count 0 is fine (6.4+)');
    assert.equal(file.timelineWaitSync([], null, 0n, AVAILABLE), SYNCOBJ_NO_INDEX);
  });

  it('an unknown handle is ENOENT before any waiting; a bad timeout type EINVAL', async () => {
    const h = file.create(DRM_SYNCOBJ_CREATE_SIGNALED);
    assert.equal(await err(() => file.wait([0], 0n)), 'ENOENT');
    assert.equal(await err(() => file.wait([h, 0x7fff], syncobjTimeoutNs(1000))), 'ENOENT');
    assert.equal(await err(() => file.wait([h], 'soon' as unknown as bigint)), 'EINVAL');
    assert.equal(await err(() => file.wait('h' as unknown as number[], 0n)), 'EFAULT');
    file.destroy(h);
  });

  it('first_signaled: the first satisfied index; with WAIT_ALL the first one before waiting', async () => {
    const hs = [file.create(), file.create(DRM_SYNCOBJ_CREATE_SIGNALED), file.create()];
    const tl = attach(hs[0]!);
    const tl2 = attach(hs[2]!);
    assert.equal(await file.wait(hs, 0n), 1);
    assert.equal(await err(() => file.wait(hs, 0n, WAIT_ALL)), 'ETIME');
    setTimeout(() => {
      tl.inc(1);
      tl2.inc(1);
    }, 5);
    assert.equal(await file.wait(hs, syncobjTimeoutNs(2000), WAIT_ALL), 1);
    file.reset([hs[1]!]);
    const tl3 = attach(hs[1]!);
    setTimeout(() => tl3.inc(1), 5);
    assert.equal(
      await file.wait([hs[1]!], syncobjTimeoutNs(2000), WAIT_ALL),
      SYNCOBJ_NO_INDEX,
      'nothing was satisfied before waiting',
    );
    for (const x of [tl, tl2, tl3]) x.dispose();
    for (const h of hs) file.destroy(h);
  });

  it('timeouts are absolute: 0, a past time and UINT64_MAX (s64 -1) poll once', async () => {
    const h = file.create();
    const tl = attach(h);
    for (const t of [0n, 1n, U64_MAX, syncobjTimeoutNs(0)]) {
      const t0 = performance.now();
      assert.equal(await err(() => file.wait([h], t)), 'ETIME');
      assert.ok(performance.now() - t0 < 50);
    }
    const t0 = performance.now();
    assert.equal(await err(() => file.wait([h], syncobjTimeoutNs(30))), 'ETIME');
    assert.ok(performance.now() - t0 >= 29, 'waited until the deadline');
    tl.dispose();
    file.destroy(h);
  });

  it('WAIT_DEADLINE hands the deadline to every fence before sleeping', async () => {
    const a = file.create();
    const b = file.create();
    const ta = attach(a);
    const tb = attach(b);
    assert.equal(
      await err(() =>
        file.wait([a, b], 0n, DRM_SYNCOBJ_WAIT_FLAGS_WAIT_DEADLINE, { deadlineNs: 4242n }),
      ),
      'ETIME',
    );
    using fa = file.exportSyncFile(a);
    using fb = file.exportSyncFile(b);
    assert.equal(ta.getDeadline(fa), 4242n);
    assert.equal(tb.getDeadline(fb), 4242n);
    ta.dispose();
    tb.dispose();
    file.destroy(a);
    file.destroy(b);
  });

  it('wait-interrupted: an abort gives ERESTARTSYS; restarting with the same deadline is safe', async () => {
    const h = file.create();
    const tl = attach(h);
    const deadline = syncobjTimeoutNs(40);
    const ac = new AbortController();
    setTimeout(() => ac.abort('signal'), 5);
    assert.equal(
      await err(() => file.wait([h], deadline, 0, { signal: ac.signal })),
      'ERESTARTSYS',
    );
    assert.throws(
      () => file.waitSync([h], deadline, 0, { signal: ac.signal }),
      errno('ERESTARTSYS'),
    );
    assert.equal(await err(() => file.wait([h], deadline)), 'ETIME', 'restarted');
    const ac2 = new AbortController();
    setTimeout(() => ac2.abort(), 5);
    assert.equal(
      await err(() =>
        file.wait([h, file.create()], syncobjTimeoutNs(2000), FOR_SUBMIT, { signal: ac2.signal }),
      ),
      'ERESTARTSYS',
    );
    file.destroy(2);
    tl.dispose();
    file.destroy(h);
  });
});

/** IGT syncobj_wait's test-flag bits (their order decides which syncobj gets which mode). */
const T_FOR_SUBMIT = 1 << 0;
const T_ALL = 1 << 1;
const T_UNSUBMITTED = 1 << 2;
const T_SUBMITTED = 1 << 3;
const T_SIGNALED = 1 << 4;

function binaryFlags(t: number): number {
  return (t & T_FOR_SUBMIT ? FOR_SUBMIT : 0) | (t & T_ALL ? WAIT_ALL : 0);
}

/** Puts the modes of `t` on `hs` as IGT does (lowest mode first, the last mode for the rest). */
function setUp(hs: number[], t: number): SwSyncTimeline[] {
  const tls: SwSyncTimeline[] = [];
  let modes = t & (T_UNSUBMITTED | T_SUBMITTED | T_SIGNALED);
  for (const h of hs) {
    const m = modes & -modes;
    if (modes & ~m) modes &= ~m;
    if (m & (T_SUBMITTED | T_SIGNALED)) {
      const tl = attach(h);
      tls.push(tl);
      if (m & T_SIGNALED) tl.inc(1);
    }
  }
  return tls;
}

describe('single-wait and multi-wait matrices (IGT syncobj_wait)', () => {
  it('single-wait: every flag combination on each kind of syncobj', async () => {
    for (let t = 0; t < 32; t++) {
      const modes = t & (T_UNSUBMITTED | T_SUBMITTED | T_SIGNALED);
      if (modes === 0 || (modes & (modes - 1)) !== 0) continue;
      let expect: string | number = 0;
      if (t & T_UNSUBMITTED && !(t & T_FOR_SUBMIT)) expect = 'EINVAL';
      else if (!(t & T_SIGNALED)) expect = 'ETIME';
      const h = file.create();
      const tls = setUp([h], t);
      const flags = binaryFlags(t);
      assert.equal(await err(() => file.wait([h], 0n, flags)), expect, `poll, test flags ${t}`);
      assert.equal(await err(() => file.wait([h], short(), flags)), expect, `short, ${t}`);
      assert.equal(await err(() => file.waitSync([h], short(), flags)), expect, `sync, ${t}`);
      if (expect !== 'ETIME') {
        assert.equal(await err(() => file.wait([h], U64_MAX, flags)), expect, `u64max, ${t}`);
      }
      for (const tl of tls) tl.dispose();
      file.destroy(h);
    }
  });

  it('multi-wait: every flag and mode combination on three syncobjs', async () => {
    for (let t = 0; t < 32; t++) {
      if (!(t & (T_UNSUBMITTED | T_SUBMITTED | T_SIGNALED))) continue;
      let expect: string | number = 0;
      if (t & T_UNSUBMITTED && !(t & T_FOR_SUBMIT)) expect = 'EINVAL';
      else if (t & T_ALL) {
        if (t & (T_UNSUBMITTED | T_SUBMITTED)) expect = 'ETIME';
      } else if (!(t & T_SIGNALED)) expect = 'ETIME';
      const hs = [file.create(), file.create(), file.create()];
      const tls = setUp(hs, t);
      const flags = binaryFlags(t);
      assert.equal(await err(() => file.wait(hs, 0n, flags)), expect, `poll, test flags ${t}`);
      assert.equal(await err(() => file.wait(hs, short(), flags)), expect, `short, ${t}`);
      assert.equal(await err(() => file.waitSync(hs, short(), flags)), expect, `sync, ${t}`);
      for (const tl of tls) tl.dispose();
      for (const h of hs) file.destroy(h);
    }
  });
});

describe('delayed and concurrent changes', () => {
  it('wait-delayed-signal and wait-for-submit-delayed-submit (same thread, timers)', async () => {
    for (const t of [0, T_FOR_SUBMIT, T_ALL, T_ALL | T_FOR_SUBMIT]) {
      const h = file.create();
      let tl: SwSyncTimeline | undefined;
      if (t & T_FOR_SUBMIT) setTimeout(() => trigger(h), 10);
      else {
        tl = attach(h);
        setTimeout(() => tl?.inc(1), 10);
      }
      const first = await file.wait([h], syncobjTimeoutNs(2000), binaryFlags(t));
      assert.equal(first, t & T_ALL ? SYNCOBJ_NO_INDEX : 0);
      tl?.dispose();
      file.destroy(h);
    }
  });

  it('reset-during-wait-for-submit: a reset wakes nobody; the later submit does', async () => {
    const h = file.create();
    setTimeout(() => {
      file.reset([h]);
      trigger(h);
    }, 10);
    assert.equal(await file.wait([h], syncobjTimeoutNs(2000), FOR_SUBMIT), 0);
    file.destroy(h);
  });

  it('snapshot: an entry keeps the fence it captured; reset and resubmit do not touch it', async () => {
    const a = file.create();
    const b = file.create();
    const ta = attach(a);
    const tb = attach(b);
    const waiting = file.wait([a, b], syncobjTimeoutNs(2000), WAIT_ALL);
    await sleep(2);
    ta.inc(1);
    file.reset([a]);
    const never = attach(a);
    await sleep(2);
    tb.inc(1);
    assert.equal(await waiting, SYNCOBJ_NO_INDEX);
    for (const x of [ta, tb, never]) x.dispose();
    file.destroy(a);
    file.destroy(b);
  });

  it('exported sync files are snapshots; syncobj fds are live', () => {
    const h = file.create();
    const tl = attach(h);
    using snap = file.exportSyncFile(h);
    using live = file.handleToSyncobj(h);
    file.reset([h]);
    assert.equal(snap.status(), 0, 'still the old pending fence');
    assert.equal(live.fence(), null, 'the fd sees the reset');
    tl.inc(1);
    assert.equal(snap.status(), 1);
    tl.dispose();
    file.destroy(h);
  });

  it('import replaces the fence; transfer to point 0 replaces it too', () => {
    const a = file.create();
    const b = file.create();
    const tl = new SwSyncTimeline();
    using f = tl.createFence(1);
    assert.throws(() => file.importSyncFile(0, f), errno('ENOENT'));
    assert.throws(
      () => file.fdToHandle(tl, DRM_SYNCOBJ_FD_TO_HANDLE_FLAGS_IMPORT_SYNC_FILE, a),
      errno('EINVAL'),
      'not a sync file',
    );
    file.importSyncFile(a, f);
    file.transfer({ srcHandle: a, dstHandle: b });
    using fb = file.exportSyncFile(b);
    using g = fb.getFence();
    using g0 = f.getFence();
    assert.equal(g._slot, g0._slot, 'the same fence, not flattened');
    tl.dispose();
    assert.equal(fb.status(), -2);
    file.destroy(a);
    file.destroy(b);
  });
});

describe('eventfd', () => {
  it('checks: flags, pad, handle', () => {
    const h = file.create();
    assert.throws(() => file.eventfd(h, 0n, FOR_SUBMIT), errno('EINVAL'));
    assert.throws(() => file.eventfd(h, 0n, 0, undefined, 1), errno('EINVAL'));
    assert.throws(() => file.eventfd(0, 0n), errno('ENOENT'));
    file.destroy(h);
  });

  it('binary: fires when a fence appears and signals; at once when already signalled', async () => {
    const h = file.create();
    const seen: string[] = [];
    const ev = file.eventfd(h, 0n, 0, () => seen.push('signal'));
    const avail = file.eventfd(h, 0n, AVAILABLE, () => seen.push('available'));
    await sleep(2);
    assert.deepEqual(seen, []);
    const tl = attach(h);
    await avail.promise;
    assert.deepEqual(seen, ['available']);
    assert.equal(ev.fired, false);
    tl.inc(1);
    await ev.promise;
    assert.deepEqual(seen, ['available', 'signal']);
    const now = file.eventfd(h, 0n, 0);
    await now.promise;
    assert.equal(now.fired, true);
    tl.dispose();
    file.destroy(h);
  });

  it('binds to the fence present when it resolves (a later reset does not undo it)', async () => {
    const h = file.create();
    const ev = file.eventfd(h, 0n);
    const tl = attach(h);
    file.reset([h]);
    tl.inc(1);
    await ev.promise;
    tl.dispose();
    file.destroy(h);
  });

  it('cancel withdraws it; a released syncobj drops it without firing', async () => {
    const h = file.create();
    let fired = 0;
    const ev = file.eventfd(h, 0n, 0, () => fired++);
    ev.cancel();
    assert.equal(ev.done, true);
    const obj = file.handleToSyncobj(h);
    file.destroy(h);
    const orphan = obj.eventfd(1n, AVAILABLE, () => fired++);
    obj.dispose();
    await sleep(5);
    assert.equal(fired, 0);
    assert.equal(orphan.fired, false);
    const h2 = file.create();
    const tl = attach(h2);
    const pending = file.eventfd(h2, 0n, 0, () => fired++);
    await sleep(2);
    pending.cancel();
    tl.inc(1);
    await sleep(5);
    assert.equal(fired, 0, 'cancelled while waiting for the signal');
    tl.dispose();
    file.destroy(h2);
  });
});

describe('objects and threads', () => {
  it('DrmSyncobj: create, replace, fence(), find with WAIT_FOR_SUBMIT', async () => {
    using o = DrmSyncobj.create();
    assert.equal(o.fence(), null);
    assert.throws(() => o.findFence(), errno('EINVAL'));
    assert.throws(() => o.findFence(0n, AVAILABLE), errno('EINVAL'));
    using f = new DmaFence(DmaFence.contextAlloc(1), 1n);
    setTimeout(() => o.replaceFence(f), 5);
    using found = await o.findFenceAsync(0n, FOR_SUBMIT);
    assert.equal(found._slot, f._slot);
    using g = o.fence();
    assert.equal(g?._slot, f._slot);
    const c0 = o.changes;
    o.reset();
    assert.equal(o.changes, c0 + 1);
    assert.throws(() => DrmSyncobj.create(8), errno('EINVAL'));
    using s = DrmSyncobj.create(DRM_SYNCOBJ_CREATE_SIGNALED, f);
    using sf = s.fence();
    assert.equal(sf?._slot, f._slot, 'the fence is installed after the stub');
  });

  it('stale handles: EBADF everywhere; import of a message twice EBADF', () => {
    const o = DrmSyncobj.create();
    const msg = o.share();
    o.dispose();
    for (const fn of [() => o.signal(), () => o.fence(), () => o.query(), () => o.share()]) {
      assert.throws(fn, errno('EBADF'));
    }
    const o2 = DrmSyncobj.import(msg);
    assert.throws(() => DrmSyncobj.import(msg), errno('EBADF'));
    assert.throws(() => DrmSyncobj.waitSync([o], { timeout: 0 }), errno('EBADF'));
    o2.dispose();
  });

  it('WAIT_FOR_SUBMIT: the fence appears from another thread (async wait here)', async () => {
    await withSyncAgents(1, async ([w]) => {
      const h = file.create();
      using fd = file.handleToSyncobj(h);
      await w!.call('import.syncobj', { name: 's', msg: fd.share() });
      const signalled = w!.call('syncobj.signal', { name: 's', delayMs: 20 });
      assert.equal(await file.wait([h], syncobjTimeoutNs(5000), FOR_SUBMIT), 0);
      await signalled;
      await w!.call('dispose', { name: 's' });
      file.destroy(h);
    });
  });

  it('WAIT_FOR_SUBMIT in a worker (blocking), the submit from here', async () => {
    await withSyncAgents(2, async ([a, b]) => {
      const h = file.create();
      using fd = file.handleToSyncobj(h);
      await a!.call('import.syncobj', { name: 's', msg: fd.share() });
      await b!.call('import.syncobj', { name: 's', msg: fd.share() });
      const wa = a!.call('syncobj.wait', {
        names: ['s'],
        points: ['0'],
        flags: FOR_SUBMIT,
        timeoutMs: 5000,
        sync: true,
      });
      const wb = b!.call('syncobj.wait', {
        names: ['s'],
        points: ['0'],
        flags: FOR_SUBMIT | AVAILABLE,
        timeoutMs: 5000,
      });
      await sleep(20);
      const tl = attach(h);
      assert.equal(await wb, 0, 'available as soon as the fence is there');
      await sleep(5);
      tl.inc(1);
      assert.equal(await wa, 0);
      tl.dispose();
      for (const w of [a!, b!]) await w.call('dispose', { name: 's' });
      file.destroy(h);
    });
  });

  it('snapshot across threads: IGT wait-any/all(-for-submit)-snapshot, the wait in a worker', async () => {
    for (const t of [0, T_ALL, T_FOR_SUBMIT, T_ALL | T_FOR_SUBMIT]) {
      await withSyncAgents(1, async ([w]) => {
        const hs = [file.create(), file.create()];
        const fds = hs.map((h) => file.handleToSyncobj(h));
        for (const [i, fd] of fds.entries()) {
          await w!.call('import.syncobj', { name: `s${i}`, msg: fd.share() });
        }
        const tls: (SwSyncTimeline | undefined)[] = [undefined, undefined, undefined];
        if (!(t & T_FOR_SUBMIT)) {
          tls[0] = attach(hs[0]!);
          tls[1] = attach(hs[1]!);
        }
        const waiting = w!.call<number>('syncobj.wait', {
          names: ['s0', 's1'],
          points: ['0', '0'],
          flags: binaryFlags(t),
          timeoutMs: 3000,
          sync: true,
        });
        await sleep(10);
        if (t & T_ALL) {
          if (!tls[0]) trigger(hs[0]!);
          else tls[0].inc(1);
        } else if (t & T_FOR_SUBMIT) {
          tls[0] = attach(hs[0]!);
        }
        await sleep(10);
        file.reset([hs[0]!]);
        await sleep(10);
        tls[2] = attach(hs[0]!); // never signalled: picking it up would time out
        await sleep(10);
        if (!tls[1]) trigger(hs[1]!);
        else tls[1].inc(1);
        const first = await waiting;
        if (!(t & T_ALL)) assert.equal(first, 1, `test flags ${t}`);
        for (const tl of tls) tl?.dispose();
        for (const fd of fds) fd.dispose();
        for (const h of hs) file.destroy(h);
        await w!.call('dispose', { name: 's0' });
        await w!.call('dispose', { name: 's1' });
      });
    }
  });

  it('IGT wait-(any|all)(-for-submit)-complex: eight syncobjs through every stage', async () => {
    const order = [
      2, 0, 6, 1, 1, 4, 5, 2, 0, 7, 1, 7, 6, 3, 4, 5, 0, 2, 7, 3, 5, 4, 0, 6, 7, 3, 2, 5, 6, 1, 4,
      3,
    ];
    await withSyncAgents(1, async ([w]) => {
      for (const t of [0, T_ALL, T_FOR_SUBMIT, T_ALL | T_FOR_SUBMIT]) {
        const hs = Array.from({ length: 8 }, () => file.create());
        const fds = hs.map((h) => file.handleToSyncobj(h));
        for (const [i, fd] of fds.entries()) {
          await w!.call('import.syncobj', { name: `s${i}`, msg: fd.share() });
        }
        const stage = new Array<number>(8).fill(0);
        const tls: (SwSyncTimeline | undefined)[] = new Array(8).fill(undefined);
        const old: SwSyncTimeline[] = [];
        if (!(t & T_FOR_SUBMIT)) for (let i = 0; i < 8; i++) tls[i] = attach(hs[i]!);
        const waiting = w!.call<number>('syncobj.wait', {
          names: hs.map((_, i) => `s${i}`),
          points: hs.map(() => '0'),
          flags: binaryFlags(t),
          timeoutMs: 3000,
        });
        await sleep(5);
        let first = -1;
        let signalled = 0;
        for (const i of order) {
          switch (stage[i]!++) {
            case 0:
              if (t & T_FOR_SUBMIT) tls[i] = attach(hs[i]!);
              break;
            case 1:
              tls[i]!.inc(1);
              old.push(tls[i]!);
              tls[i] = undefined;
              if (signalled++ === 0) first = i;
              break;
            case 2:
              file.reset([hs[i]!]);
              break;
            case 3:
              tls[i] = attach(hs[i]!);
              break;
            default:
              assert.fail('should not reach this stage');
          }
          if (t & T_ALL ? signalled === 8 : signalled > 0) break;
          await sleep(1);
        }
        const got = await waiting;
        if (t & T_ALL) assert.equal(signalled, 8);
        else assert.equal(got, first, `test flags ${t}`);
        for (const tl of [...tls, ...old]) tl?.dispose();
        for (const fd of fds) fd.dispose();
        for (const [i, h] of hs.entries()) {
          file.destroy(h);
          await w!.call('dispose', { name: `s${i}` });
        }
      }
    });
  });

  it('a sync file exported here and imported into a syncobj in a worker', async () => {
    await withSyncAgents(1, async ([w]) => {
      using o = DrmSyncobj.create();
      const tl = new SwSyncTimeline();
      using f = tl.createFence(1);
      await w!.call('import.syncobj', { name: 's', msg: o.share() });
      await w!.call('import.file', { name: 'f', msg: f.share() });
      await w!.call('syncobj.importFile', { name: 's', file: 'f', point: '0' });
      using sf = o.exportSyncFile();
      using g = sf.getFence();
      using g0 = f.getFence();
      assert.equal(g._slot, g0._slot);
      tl.dispose();
      assert.equal(await DrmSyncobj.wait([o], { timeout: 1000 }), 0);
      await w!.call('dispose', { name: 's' });
      await w!.call('dispose', { name: 'f' });
    });
  });
});

// SyncFile is used through exports above; keep the import for the type checks in helpers.
void SyncFile;
