// GEM objects and PRIME (drm_gem.c, drm_prime.c; seed 000): handles, dumb buffers, mmap through
// the device node, export (RDWR/read-only, same dma-buf twice), import (same handle twice,
// self-import gives the original object), mmap forwarding of imports without recursion, and two
// devices in two threads sharing buffers both ways under implicit sync.
import assert from 'node:assert/strict';
import { afterEach, before, beforeEach, describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';
import {
  DMA_BUF_SYNC_READ,
  DMA_BUF_SYNC_WRITE,
  DmaBuf,
  type DmaBufMessage,
  FMODE_READ,
  FMODE_WRITE,
  MAP_PRIVATE,
  O_CLOEXEC,
  PROT_READ,
  PROT_WRITE,
} from '../src/dma-buf.js';
import { BufferMemory } from '../src/dma-buf-memory.js';
import { exportSyncFile, importSyncFile } from '../src/dma-buf-sync-file.js';
import { DmaFence } from '../src/dma-fence.js';
import { DrmDevice } from '../src/drm-gem.js';
import {
  DRM_CLOEXEC,
  DRM_GEM_EXPORTER,
  DRM_RDWR,
  isGemPrimeDmaBuf,
  primeFdToHandle,
  primeHandleToFd,
} from '../src/drm-prime.js';
import { SyncFile } from '../src/sync-file.js';
import { inbox } from './worker-rpc.js';
import { REGISTERED, registeredOps } from './workers/dmabuf-exporter.js';
import { assertNoLeak, baseline, errno, live } from './workers/sync-client.js';

let start = 0;
before(() => {
  baseline();
});
beforeEach(() => {
  start = live();
});
afterEach(async () => {
  await assertNoLeak(start);
});

describe('GEM', () => {
  it('handles from 1 per file, dumb buffers (vgem pitch/size), close and lookup errors', () => {
    const dev = new DrmDevice({ name: 'card0' });
    using f = dev.open();
    using g = dev.open();
    const d = f.createDumb(64, 64, 32);
    assert.deepEqual(d, { handle: 1, pitch: 256, size: 16384 });
    assert.equal(g.create(100), 1, 'handles are per file');
    assert.equal(g.lookup(1).size, 4096);
    assert.throws(() => f.create(0), errno('EINVAL'));
    assert.throws(() => f.createDumb(0, 1, 32), errno('EINVAL'));
    assert.throws(() => f.lookup(9), errno('ENOENT'));
    assert.throws(() => f.close(9), errno('EINVAL'));
    f.close(1);
    assert.throws(() => f.lookup(1), errno('ENOENT'));
    assert.throws(() => f.close(1), errno('EINVAL'));
  });

  it('mmap through the device: offsets, access, ranges', () => {
    const dev = new DrmDevice({ name: 'card0' });
    using f = dev.open();
    using g = dev.open();
    const h = f.create(8192);
    const off = f.mapOffset(h);
    assert.ok(off >= 0x1_0000_0000n, 'fake offsets start past 4 GiB');
    assert.equal(f.mapOffset(h), off, 'one offset per object');
    assert.throws(() => f.mapOffset(42), errno('ENOENT'));
    using m = f.mmap(off);
    m.set(4096, 7);
    using m2 = f.mmap(off + 4096n, { length: 4096, prot: PROT_READ });
    assert.equal(m2.get(0), 7, 'the same memory');
    assert.throws(() => m2.set(0, 1));
    assert.throws(() => g.mmap(off), errno('EACCES'), 'another file was not granted the offset');
    assert.throws(() => f.mmap(off + 1n), errno('EINVAL'));
    assert.throws(() => f.mmap(off + 8192n), errno('EINVAL'), 'no object there');
    assert.throws(() => f.mmap(off, { length: 3 * 4096 }), errno('EINVAL'), 'past the end');
    assert.throws(() => f.mmap(off, { flags: MAP_PRIVATE }), errno('EINVAL'));
    assert.throws(() => f.mmap(0n), errno('EINVAL'));
  });
});

describe('PRIME export', () => {
  it('flags, unknown handle, same dma-buf twice, mode fixed by the first export', () => {
    const dev = new DrmDevice({ name: 'card0' });
    using f = dev.open();
    const h = f.create(4096);
    assert.throws(() => primeHandleToFd(f, h, 0x4), errno('EINVAL'));
    assert.throws(() => primeHandleToFd(f, 99, DRM_RDWR), errno('ENOENT'));
    assert.equal(DRM_CLOEXEC, O_CLOEXEC);
    using a = primeHandleToFd(f, h, 0);
    using b = primeHandleToFd(f, h, DRM_RDWR | DRM_CLOEXEC);
    assert.equal(a.ino, b.ino, 'exporting twice gives the same dma-buf');
    assert.equal(a.mode, FMODE_READ, 'read-only without DRM_RDWR; a later RDWR does not upgrade');
    assert.equal(a.expName, DRM_GEM_EXPORTER);
    assert.ok(isGemPrimeDmaBuf(a));
    assert.ok(a.resv.alive);
    const h2 = f.create(4096);
    using c = primeHandleToFd(f, h2, DRM_RDWR);
    assert.equal(c.mode, FMODE_READ | FMODE_WRITE);
    assert.notEqual(c.ino, a.ino);
    // The object's reservation object is the dma-buf's.
    using fe = new DmaFence(DmaFence.contextAlloc(1), 1n);
    {
      using sf = SyncFile.create(fe);
      importSyncFile(c, sf, DMA_BUF_SYNC_WRITE);
    }
    assert.equal(f.lookup(h2).resv.numFences, 1);
    fe.signal();
  });

  it('ops identity, not the name, makes a GEM dma-buf', () => {
    using other = DmaBuf.export({
      ops: registeredOps,
      size: 4096,
      memory: BufferMemory.allocate(4096),
      expName: REGISTERED,
      priv: {},
    });
    assert.equal(isGemPrimeDmaBuf(other), false);
  });
});

describe('PRIME import', () => {
  it('round trip in the exporting file gives the same handle; another file the same object', () => {
    const dev = new DrmDevice({ name: 'card0' });
    using f = dev.open();
    using g = dev.open();
    const h = f.create(4096);
    using buf = primeHandleToFd(f, h, DRM_RDWR);
    assert.equal(primeFdToHandle(f, buf), h);
    const hg = primeFdToHandle(g, buf);
    assert.equal(g.lookup(hg), f.lookup(h), 'self-import returns the original object');
    assert.equal(primeFdToHandle(g, buf), hg, 'same handle again');
    assert.equal(buf.attachmentCount, 0, 'no attachment for a self-import');
    assert.throws(() => primeFdToHandle(f, {} as DmaBuf), errno('EINVAL'));
    const gone = buf.get();
    gone.dispose();
    assert.throws(() => primeFdToHandle(f, gone), errno('EBADF'));
  });

  it('a foreign buffer: attached once, same handle twice, re-export gives the original', () => {
    const devA = new DrmDevice({ name: 'card0' });
    const devB = new DrmDevice({ name: 'card1' });
    using fa = devA.open();
    using fb = devB.open();
    const ha = fa.create(8192);
    using buf = primeHandleToFd(fa, ha, DRM_RDWR);
    const hb = primeFdToHandle(fb, buf);
    assert.equal(primeFdToHandle(fb, buf), hb);
    const ob = fb.lookup(hb);
    assert.ok(ob.importAttach, 'imported through an attachment');
    assert.notEqual(ob, fa.lookup(ha));
    assert.equal(buf.attachmentCount, 1);
    assert.equal(ob.resv._slot, buf.resv._slot, 'the import shares the resv');
    using re = primeHandleToFd(fb, hb, 0);
    assert.equal(re.ino, buf.ino, 're-export of an import is the original dma-buf');
    // Back into A: A's original object (self-import), not an import of an import.
    using fa2 = devA.open();
    const back = primeFdToHandle(fa2, re);
    assert.equal(fa2.lookup(back), fa.lookup(ha));
    fb.close(hb);
    assert.equal(buf.attachmentCount, 0, 'closing the last handle detaches');
  });

  it('mmap of an import forwards to the exporter once (no loop); RO import refuses writes', () => {
    const devA = new DrmDevice({ name: 'card0' });
    const devB = new DrmDevice({ name: 'card1' });
    using fa = devA.open();
    using fb = devB.open();
    const ha = fa.create(4096);
    const oa = fa.lookup(ha);
    using ma = fa.mmap(fa.mapOffset(ha));
    ma.set(0, 0x5a);
    using ro = primeHandleToFd(fa, ha, 0);
    const hb = primeFdToHandle(fb, ro);
    const off = fb.mapOffset(hb);
    assert.throws(() => fb.mmap(off, { prot: PROT_READ | PROT_WRITE }), errno('EACCES'));
    using mb = fb.mmap(off);
    assert.equal(mb.prot, PROT_READ);
    assert.equal(mb.get(0), 0x5a, 'the exporter memory');
    assert.equal(oa.stats.exporterMmaps, 1, 'forwarded once to the exporter');
    assert.equal(fb.lookup(hb).stats.deviceMmaps, 1);
    ma.set(0, 0x5b);
    assert.equal(mb.get(0), 0x5b);
    // The same through the dma-buf itself.
    using mc = ro.mmap();
    assert.equal(mc.get(0), 0x5b);
    assert.equal(oa.stats.exporterMmaps, 2);
  });

  it('RDWR import maps writable through the importer', () => {
    const devA = new DrmDevice({ name: 'card0' });
    const devB = new DrmDevice({ name: 'card1' });
    using fa = devA.open();
    using fb = devB.open();
    const ha = fa.create(4096);
    using buf = primeHandleToFd(fa, ha, DRM_RDWR);
    const hb = primeFdToHandle(fb, buf);
    using mb = fb.mmap(fb.mapOffset(hb), { prot: PROT_READ | PROT_WRITE });
    mb.set(3, 9);
    using ma = fa.mmap(fa.mapOffset(ha));
    assert.equal(ma.get(3), 9);
  });
});

describe('two devices in two threads', () => {
  it('share buffers both ways and render under implicit sync', async () => {
    const worker = new Worker(new URL('./workers/prime-agent.js', import.meta.url));
    const next = inbox(worker);
    try {
      await next('ready');
      const dev = new DrmDevice({ name: 'card0' });
      using file = dev.open();
      const h = file.create(4096);
      using buf = primeHandleToFd(file, h, DRM_RDWR);
      using job = new DmaFence(DmaFence.contextAlloc(1), 1n);
      {
        using jf = SyncFile.create(job);
        importSyncFile(buf, jf, DMA_BUF_SYNC_WRITE);
      }
      worker.postMessage({ op: 'render', buf: buf.share() });
      assert.equal((await next('waiting')).status, 0, 'the worker waits for our render');
      using m = file.mmap(file.mapOffset(h));
      m.set(0, 0x11);
      job.signal();
      const r = await next('rendered');
      assert.equal(r.seen, 0x11);
      assert.equal(r.sameHandle, true);
      assert.equal(r.imported, true);
      assert.equal(r.reexportSame, true);
      assert.equal(r.attachments, 1);
      // Its buffer, read-only, into our device.
      const theirs = DmaBuf.import(r.out as DmaBufMessage);
      const ht = primeFdToHandle(file, theirs);
      assert.equal(primeFdToHandle(file, theirs), ht);
      const ot = file.mapOffset(ht);
      assert.throws(() => file.mmap(ot, { prot: PROT_READ | PROT_WRITE }), errno('EACCES'));
      {
        using mt = file.mmap(ot);
        assert.equal(mt.get(0), 0x33);
      }
      // Implicit sync on our buffer: the worker's write fence.
      using rd = exportSyncFile(buf, DMA_BUF_SYNC_READ);
      assert.equal(rd.status(), 0, 'we wait for the worker render');
      worker.postMessage({ op: 'signal' });
      await rd.wait();
      assert.equal(m.get(1), 0x22, 'the worker rendered into our object');
      file.close(ht);
      theirs.dispose();
      worker.postMessage({ op: 'finish' });
      await next('done');
    } finally {
      await worker.terminate();
    }
  });
});
