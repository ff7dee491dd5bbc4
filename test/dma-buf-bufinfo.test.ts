// debugfs bufinfo, sysfs stats and per-exporter/per-heap totals over the global list of live
// buffers, checked against what the test created (in this thread and in a worker).
import assert from 'node:assert/strict';
import { afterEach, before, beforeEach, describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';
import { Device } from '../src/device.js';
import { DmaBuf, O_NONBLOCK, O_RDONLY, O_RDWR } from '../src/dma-buf.js';
import {
  dmaBufDebugInfo,
  dmaBufDebugShow,
  dmaBufExporterTotals,
  dmaBufHeapTotals,
  dmaBufSysfsRead,
  dmaBufSysfsStats,
} from '../src/dma-buf-bufinfo.js';
import { dmaBufListCount } from '../src/dma-buf-list.js';
import { BufferMemory } from '../src/dma-buf-memory.js';
import { DmaFence } from '../src/dma-fence.js';
import { DmaResvUsage } from '../src/dma-resv.js';
import { createSystemHeap } from '../src/heaps/system-heap.js';
import { domain } from '../src/substrate/domain.js';
import { REGISTERED, registeredOps } from './workers/dmabuf-exporter.js';
import { assertNoLeak, baseline, live } from './workers/sync-client.js';

function newBuf(size: number, flags = O_RDWR, expName = REGISTERED): DmaBuf {
  return DmaBuf.export({
    ops: registeredOps,
    size,
    memory: BufferMemory.allocate(size),
    expName,
    flags,
    priv: {},
  });
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

describe('bufinfo', () => {
  it('lists every buffer with its fields, fences and devices, newest first, and the totals', () => {
    const before = dmaBufDebugInfo();
    using a = newBuf(8192);
    using b = newBuf(4096, O_RDONLY | O_NONBLOCK);
    b.setName('second');
    using f1 = new DmaFence(DmaFence.contextAlloc(1), 7n);
    using f2 = new DmaFence(DmaFence.contextAlloc(1), 3n);
    const resv = a.resv;
    resv.lock();
    resv.reserveFences(2);
    resv.addFence(f1, DmaResvUsage.WRITE);
    resv.addFence(f2, DmaResvUsage.BOOKKEEP);
    resv.unlock();
    const dev = new Device({ name: 'gpu0' });
    const att = a.attach(dev);
    using _extra = a.get();

    const info = dmaBufDebugInfo();
    assert.equal(info.totalObjects, before.totalObjects + 2);
    assert.equal(info.totalBytes, before.totalBytes + 12288);
    const [eb, ea] = info.buffers;
    assert.ok(ea && eb);
    assert.equal(eb.ino, b.ino, 'newest first');
    assert.equal(ea.ino, a.ino);
    assert.deepEqual(
      { size: ea.size, flags: ea.flags, mode: ea.mode, count: ea.count, name: ea.name },
      { size: 8192, flags: O_RDWR, mode: 3, count: 2, name: null },
    );
    assert.equal(ea.expName, REGISTERED);
    assert.deepEqual(ea.devices, ['gpu0']);
    assert.equal(ea.attachments, 1);
    assert.equal(ea.fences.length, 1, 'bookkeep fences are not listed');
    assert.equal(ea.fences[0]?.usage, 'write');
    assert.equal(ea.fences[0]?.seqno, 7n);
    assert.equal(ea.fences[0]?.signaled, false);
    assert.deepEqual(
      { flags: eb.flags, mode: eb.mode, count: eb.count, name: eb.name, devices: eb.devices },
      { flags: O_RDONLY | O_NONBLOCK, mode: 1, count: 1, name: 'second', devices: [] },
    );

    const text = dmaBufDebugShow();
    assert.ok(
      text.startsWith(
        '\nDma-buf Objects:\nsize    \tflags   \tmode    \tcount   \texp_name\tino     \tname\n',
      ),
    );
    const pad = (n: bigint | number): string => String(n).padStart(8, '0');
    assert.ok(
      text.includes(
        `00004096\t00000800\t00000001\t00000001\t${REGISTERED}\t${pad(b.ino)}\tsecond\n\tAttached Devices:\nTotal 0 devices attached\n\n`,
      ),
      text,
    );
    assert.ok(
      text.includes(
        `00008192\t00000002\t00000003\t00000002\t${REGISTERED}\t${pad(a.ino)}\t<none>\n\twrite fence:${f1.describe()}\n\tAttached Devices:\n\tgpu0\nTotal 1 devices attached\n\n`,
      ),
      text,
    );
    assert.ok(text.endsWith(`\nTotal ${info.totalObjects} objects, ${info.totalBytes} bytes\n`));

    a.detach(att);
    assert.deepEqual(dmaBufDebugInfo().buffers[1]?.devices, []);
    f1.signal();
    f2.signal();
    const after = dmaBufDebugInfo().buffers[1];
    assert.equal(after?.fences[0]?.signaled, true, 'signalled fences are still described');
  });

  it('released buffers leave the list; the list count follows', () => {
    const n = dmaBufListCount(domain());
    const a = newBuf(4096);
    assert.equal(dmaBufListCount(domain()), n + 1);
    const ino = a.ino;
    a.dispose();
    assert.equal(dmaBufListCount(domain()), n);
    assert.ok(!dmaBufDebugInfo().buffers.some((e) => e.ino === ino));
    assert.equal(dmaBufSysfsRead(ino, 'size'), null);
  });

  it('sees buffers of another thread', async () => {
    const w = new Worker(new URL('./workers/prime-bufinfo.js', import.meta.url));
    const next = (op: string): Promise<Record<string, unknown>> =>
      new Promise((resolve) => {
        const on = (m: Record<string, unknown>): void => {
          if (m.op !== op) return;
          w.off('message', on);
          resolve(m);
        };
        w.on('message', on);
      });
    try {
      const ready = next('ready');
      await ready;
      const exported = next('exported');
      w.postMessage({ op: 'export' });
      const ino = (await exported).ino as bigint;
      const e = dmaBufDebugInfo().buffers.find((x) => x.ino === ino);
      assert.ok(e, 'the worker buffer is listed');
      assert.equal(e.name, 'worker-buf');
      assert.equal(e.size, 3 * 4096);
      assert.equal(e.count, 1, 'the walk does not count its own reference');
      assert.equal(dmaBufSysfsRead(ino, 'size'), `${3 * 4096}\n`);
      assert.equal(dmaBufSysfsRead(ino, 'exporter_name'), `${REGISTERED}\n`);
      const dropped = next('dropped');
      w.postMessage({ op: 'drop' });
      await dropped;
      assert.ok(!dmaBufDebugInfo().buffers.some((x) => x.ino === ino));
    } finally {
      await w.terminate();
    }
  });
});

describe('stats', () => {
  it('per-buffer sysfs stats and per-exporter totals', () => {
    const t0 = dmaBufExporterTotals().get('stats-exp') ?? { buffers: 0, bytes: 0 };
    using a = newBuf(4096, O_RDWR, 'stats-exp');
    using b = newBuf(12288, O_RDWR, 'stats-exp');
    const s = dmaBufSysfsStats();
    assert.deepEqual(
      s.filter((x) => x.ino === a.ino || x.ino === b.ino),
      [
        { ino: b.ino, exporterName: 'stats-exp', size: 12288 },
        { ino: a.ino, exporterName: 'stats-exp', size: 4096 },
      ],
    );
    assert.deepEqual(dmaBufExporterTotals().get('stats-exp'), {
      buffers: t0.buffers + 2,
      bytes: t0.bytes + 16384,
    });
  });

  it('per-heap totals count the heap buffers alive', () => {
    const heap = createSystemHeap({ name: 'bufinfo-heap', capacity: 1 << 20 });
    try {
      assert.deepEqual(dmaBufHeapTotals().get('bufinfo-heap'), { buffers: 0, bytes: 0 });
      const a = heap.allocate(4096);
      const b = heap.allocate(3 * 4096);
      assert.deepEqual(dmaBufHeapTotals().get('bufinfo-heap'), { buffers: 2, bytes: 4 * 4096 });
      const e = dmaBufDebugInfo().buffers.find((x) => x.ino === b.ino);
      assert.equal(e?.expName, 'bufinfo-heap');
      a.dispose();
      b.dispose();
      assert.deepEqual(dmaBufHeapTotals().get('bufinfo-heap'), { buffers: 0, bytes: 0 });
    } finally {
      heap.remove();
      heap.dispose();
    }
  });
});
