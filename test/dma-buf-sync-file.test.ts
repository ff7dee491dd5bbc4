// The implicit-sync bridge: DMA_BUF_IOCTL_EXPORT_SYNC_FILE / IMPORT_SYNC_FILE (flag validation,
// which fences a reader or a writer gets, the stub for an idle buffer, unwrapping of containers,
// read-only buffers taking write fences) and the explicit/implicit handshake across threads.
import assert from 'node:assert/strict';
import { afterEach, before, beforeEach, describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';
import {
  DMA_BUF_SYNC_END,
  DMA_BUF_SYNC_READ,
  DMA_BUF_SYNC_RW,
  DMA_BUF_SYNC_WRITE,
  DmaBuf,
  O_RDONLY,
} from '../src/dma-buf.js';
import { BufferMemory } from '../src/dma-buf-memory.js';
import { exportSyncFile, importSyncFile } from '../src/dma-buf-sync-file.js';
import { DmaFence } from '../src/dma-fence.js';
import { DmaFenceArray } from '../src/dma-fence-array.js';
import { DmaResvUsage } from '../src/dma-resv.js';
import { SyncFile } from '../src/sync-file.js';
import { inbox } from './worker-rpc.js';
import { REGISTERED, registeredOps } from './workers/dmabuf-exporter.js';
import { assertNoLeak, baseline, errno, live } from './workers/sync-client.js';

function newBuf(flags?: number): DmaBuf {
  return DmaBuf.export({
    ops: registeredOps,
    size: 4096,
    memory: BufferMemory.allocate(4096),
    expName: REGISTERED,
    priv: {},
    ...(flags === undefined ? {} : { flags }),
  });
}

function fence(): DmaFence {
  return new DmaFence(DmaFence.contextAlloc(1), 1n);
}

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

describe('EXPORT_SYNC_FILE', () => {
  it('rejects flags outside RW and flags without READ/WRITE (EINVAL)', () => {
    using buf = newBuf();
    for (const f of [0, DMA_BUF_SYNC_END, DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ, 0x100, -1, 1.5]) {
      assert.throws(() => exportSyncFile(buf, f), errno('EINVAL'), String(f));
    }
    assert.throws(() => exportSyncFile(buf, 1n << 40n), errno('EINVAL'));
  });

  it('an idle buffer exports the signalled stub (observed: status 1, one fence, stub)', () => {
    using buf = newBuf();
    using file = exportSyncFile(buf, DMA_BUF_SYNC_RW);
    assert.equal(file.status(), 1);
    using f = file.getFence();
    using stub = DmaFence.getStub();
    assert.equal(f._slot, stub._slot);
  });

  it('READ gets the writers only, WRITE gets readers and writers; BOOKKEEP never', () => {
    using buf = newBuf();
    using w = fence();
    using r = fence();
    using k = fence();
    using bk = fence();
    const resv = buf.resv;
    resv.lock();
    resv.reserveFences(4);
    resv.addFence(w, DmaResvUsage.WRITE);
    resv.addFence(r, DmaResvUsage.READ);
    resv.addFence(bk, DmaResvUsage.BOOKKEEP);
    resv.unlock();
    {
      using rf = exportSyncFile(buf, DMA_BUF_SYNC_READ);
      using f = rf.getFence();
      assert.equal(f._slot, w._slot, 'a reader waits for the single writer itself');
    }
    {
      using wf = exportSyncFile(buf, DMA_BUF_SYNC_WRITE);
      using f = wf.getFence();
      assert.ok(f instanceof DmaFenceArray, 'several fences collapse into an array');
      assert.equal((f as DmaFenceArray).numFences, 2);
      w.signal();
      assert.equal(wf.status(), 0);
      r.signal();
      assert.equal(wf.status(), 1);
    }
    {
      using rw = exportSyncFile(buf, DMA_BUF_SYNC_RW);
      assert.equal(rw.status(), 1, 'only the bookkeep fence is left: nothing to wait for');
    }
    bk.signal();
    k.signal();
  });

  it('a bad buffer handle is EBADF', () => {
    const buf = newBuf();
    buf.dispose();
    assert.throws(() => exportSyncFile(buf, DMA_BUF_SYNC_READ), errno('EBADF'));
  });
});

describe('IMPORT_SYNC_FILE', () => {
  it('validates flags and the file (EINVAL, not EBADF, for a non sync file)', () => {
    using buf = newBuf();
    using f = fence();
    using file = SyncFile.create(f);
    for (const fl of [0, DMA_BUF_SYNC_END | DMA_BUF_SYNC_WRITE, 8]) {
      assert.throws(() => importSyncFile(buf, file, fl), errno('EINVAL'));
    }
    assert.throws(() => importSyncFile(buf, {} as SyncFile, DMA_BUF_SYNC_WRITE), errno('EINVAL'));
    const gone = SyncFile.create(f);
    gone.dispose();
    assert.throws(() => importSyncFile(buf, gone, DMA_BUF_SYNC_WRITE), errno('EINVAL'));
    assert.equal(buf.resv.numFences, 0);
    f.signal();
  });

  it('WRITE adds a write fence (readers then wait), READ a read fence (only writers wait)', () => {
    using buf = newBuf();
    using w = fence();
    using r = fence();
    using wf = SyncFile.create(w);
    using rf = SyncFile.create(r);
    assert.equal(importSyncFile(buf, wf, DMA_BUF_SYNC_WRITE), 1);
    assert.equal(buf.resv.testSignaled(DmaResvUsage.WRITE), false);
    w.signal();
    assert.equal(importSyncFile(buf, rf, DMA_BUF_SYNC_READ), 1);
    assert.equal(buf.resv.testSignaled(DmaResvUsage.WRITE), true, 'readers do not wait for reads');
    assert.equal(buf.resv.testSignaled(DmaResvUsage.READ), false, 'writers do');
    using back = exportSyncFile(buf, DMA_BUF_SYNC_READ);
    assert.equal(back.status(), 1);
    r.signal();
  });

  it('RW counts as WRITE usage', () => {
    using buf = newBuf();
    using w = fence();
    using wf = SyncFile.create(w);
    importSyncFile(buf, wf, DMA_BUF_SYNC_RW);
    assert.equal(buf.resv.testSignaled(DmaResvUsage.WRITE), false);
    w.signal();
  });

  it('unwraps containers and adds every leaf', () => {
    using buf = newBuf();
    using a = fence();
    using b = fence();
    using arr = DmaFenceArray.create([a, b], DmaFence.contextAlloc(1), 1n, false);
    using file = SyncFile.create(arr);
    assert.equal(importSyncFile(buf, file, DMA_BUF_SYNC_WRITE), 2);
    const got = buf.resv.getFences(DmaResvUsage.WRITE);
    assert.deepEqual(
      got.map((f) => f._slot).sort(),
      [a._slot, b._slot].sort(),
      'leaves, not the array',
    );
    for (const g of got) g.dispose();
    a.signal();
    b.signal();
  });

  it('a read-only buffer still takes write fences', () => {
    using buf = newBuf(O_RDONLY);
    using w = fence();
    using wf = SyncFile.create(w);
    assert.equal(importSyncFile(buf, wf, DMA_BUF_SYNC_WRITE), 1);
    w.signal();
  });
});

describe('explicit/implicit handshake across threads', () => {
  it('a writer job in this thread, a reader in a worker, then a writer waits for the reader', async () => {
    const worker = new Worker(new URL('./workers/prime-implicit.js', import.meta.url));
    const next = inbox(worker);
    try {
      await next('ready');
      using buf = newBuf();
      using job = fence();
      {
        using jf = SyncFile.create(job);
        importSyncFile(buf, jf, DMA_BUF_SYNC_WRITE);
      }
      worker.postMessage({ op: 'import', buf: buf.share() });
      assert.equal((await next('exported')).status, 0, 'the reader must wait for our write');
      {
        using map = buf.mmap();
        map.set(0, 0xa5);
      }
      job.signal();
      assert.equal((await next('read')).value, 0xa5);
      assert.equal((await next('reading')).added, 1);
      using wr = exportSyncFile(buf, DMA_BUF_SYNC_WRITE);
      assert.equal(wr.status(), 0, 'a writer waits for the worker read');
      using rd = exportSyncFile(buf, DMA_BUF_SYNC_READ);
      assert.equal(rd.status(), 1, 'another reader does not');
      worker.postMessage({ op: 'finish' });
      await wr.wait();
      assert.equal(wr.status(), 1);
      await next('done');
    } finally {
      await worker.terminate();
    }
  });
});
