// dma-heap: registry (names, EEXIST, EINVAL), the ALLOC uAPI validation order (ports of the
// no-hardware cases of tools/testing/selftests/dmabuf-heaps), sizes, access modes, and the
// multi-thread life of a heap buffer: allocated in one thread, filled in a second, read through
// mmap in a third, released in a fourth, accounting back at zero.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';
import {
  type DmaBufMessage,
  MAP_PRIVATE,
  O_CLOEXEC,
  O_RDONLY,
  O_RDWR,
  O_WRONLY,
  PROT_READ,
  PROT_WRITE,
  SEEK_END,
} from '../src/dma-buf.js';
import {
  DMA_HEAP_IOCTL_ALLOC,
  type DmaHeap,
  dmaHeapFind,
  dmaHeapNames,
  HeapKind,
} from '../src/dma-heap.js';
import { createCmaHeap } from '../src/heaps/cma-heap.js';
import { createSystemHeap } from '../src/heaps/system-heap.js';
import { assertNoLeak, baseline, errno } from './workers/sync-client.js';

const RW = O_RDWR | O_CLOEXEC;

function agent(): {
  call: (op: string, args: Record<string, unknown>) => Promise<unknown>;
  close: () => Promise<number>;
} {
  const w = new Worker(new URL('./workers/heap-agent.js', import.meta.url));
  return {
    call: (op, args) =>
      new Promise((resolve, reject) => {
        w.once('message', (r: { ok: boolean; value?: unknown; code?: string }) => {
          if (r.ok) resolve(r.value);
          else reject(new Error(`${r.code}: ${(r as { message?: string }).message}`));
        });
        w.postMessage({ op, ...args });
      }),
    close: () => w.terminate(),
  };
}

describe('dma-heap registry', () => {
  let start = 0;
  before(() => {
    start = baseline();
  });
  after(async () => {
    await assertNoLeak(start);
  });

  it('registers by name, refuses duplicates and empty names, removes', () => {
    const sys = createSystemHeap({ name: 't-system', capacity: 1 << 20 });
    const cma = createCmaHeap({ name: 't-cma', capacity: 1 << 20 });
    assert.equal(sys.name, 't-system');
    assert.equal(sys.kind, HeapKind.SYSTEM);
    assert.equal(cma.kind, HeapKind.CMA);
    assert.ok(dmaHeapNames().includes('t-system'));
    assert.equal(dmaHeapFind('t-cma'), cma);
    assert.throws(() => createCmaHeap({ name: 't-system', capacity: 4096 }), errno('EEXIST'));
    assert.throws(() => createSystemHeap({ name: '', capacity: 4096 }), errno('EINVAL'));
    assert.throws(() => createSystemHeap({ name: 'x', capacity: 0 }), errno('EINVAL'));
    sys.remove();
    sys.remove(); // idempotent
    assert.ok(!dmaHeapNames().includes('t-system'));
    const again = createSystemHeap({ name: 't-system', capacity: 4096 });
    for (const h of [sys, cma, again]) {
      h.remove();
      h.dispose();
    }
    assert.throws(() => sys.stats(), errno('EBADF'));
  });
});

describe('DMA_HEAP_IOCTL_ALLOC', () => {
  let start = 0;
  let heaps: DmaHeap[] = [];
  before(() => {
    start = baseline();
    heaps = [
      createSystemHeap({ name: 'u-system', capacity: 4 << 20 }),
      createCmaHeap({ name: 'u-reserved', capacity: 4 << 20 }),
    ];
  });
  after(async () => {
    for (const h of heaps) {
      assert.deepEqual([h.stats().bytes, h.stats().buffers], [0, 0]);
      h.remove();
      h.dispose();
    }
    await assertNoLeak(start);
  });

  for (const idx of [0, 1]) {
    it(`validates in the kernel's order (heap ${idx})`, () => {
      const h = heaps[idx]!;
      // Wrong nr → EINVAL (not ENOTTY), any type/size.
      assert.throws(
        () => h.ioctl(DMA_HEAP_IOCTL_ALLOC + 1, { len: 4096, fdFlags: RW }),
        errno('EINVAL'),
      );
      assert.throws(() => h.ioctl(0xc0184801, { len: 4096, fdFlags: RW }), errno('EINVAL'));
      // fd must be 0 on input.
      assert.throws(
        () => h.ioctl(DMA_HEAP_IOCTL_ALLOC, { len: 4096, fd: 3, fdFlags: RW }),
        errno('EINVAL'),
      );
      // fd_flags outside O_CLOEXEC | O_ACCMODE; heap flags.
      assert.throws(() => h.allocate(4096, RW | 0o4000), errno('EINVAL'));
      assert.throws(() => h.allocate(4096, RW, 1n), errno('EINVAL'));
      assert.throws(() => h.allocate(4096, RW, 1n << 63n), errno('EINVAL'));
      // len 0 and lengths that wrap when page-aligned.
      assert.throws(() => h.allocate(0), errno('EINVAL'));
      assert.throws(() => h.allocate((1n << 64n) - 1n), errno('EINVAL'));
      assert.throws(() => h.allocate((1n << 64n) - 4095n), errno('EINVAL'));
      // Huge → ENOMEM, never E2BIG.
      assert.throws(() => h.allocate(1n << 40n), errno('ENOMEM'));
      assert.throws(() => h.allocate(8 << 20), errno('ENOMEM'));
      assert.equal(h.stats().failures >= 2, true);
      assert.equal(h.stats().buffers, 0);
      // Successful ioctl fills fd.
      const data: { len: number; fdFlags: number; fd?: unknown } = { len: 1, fdFlags: RW };
      const b = h.ioctl(DMA_HEAP_IOCTL_ALLOC, data as never);
      assert.equal(data.fd, b);
      assert.equal(b.size, 4096); // PAGE_ALIGN(1)
      assert.equal(b.llseek(0, SEEK_END), 4096);
      assert.equal(b.expName, h.name);
      assert.equal(h.stats().bytes, 4096);
      assert.equal(h.stats().buffers, 1);
      b.dispose();
      assert.equal(h.stats().bytes, 0);
    });

    it(`access modes and mmap rules (heap ${idx})`, () => {
      const h = heaps[idx]!;
      const ro = h.allocate(16384, O_RDONLY);
      assert.throws(() => ro.mmap({ prot: PROT_READ | PROT_WRITE }), errno('EACCES'));
      ro.mmap({ prot: PROT_READ }).unmap();
      ro.dispose();
      const wo = h.allocate(16384, O_WRONLY);
      assert.throws(() => wo.mmap({ prot: PROT_WRITE }), errno('EACCES'));
      wo.dispose();
      const accmode3 = h.allocate(4096, 3 | O_CLOEXEC);
      accmode3.dispose();
      const b = h.allocate(16384);
      assert.equal(b.info().size, 16384);
      assert.throws(() => b.mmap({ flags: MAP_PRIVATE, prot: PROT_READ }), errno('EINVAL'));
      assert.throws(() => b.mmap({ length: 5 * 4096 }), errno('EINVAL'));
      assert.throws(() => b.mmap({ pgoff: 4, length: 4096 }), errno('EINVAL'));
      const m = b.mmap();
      assert.ok(m.slice().every((x) => x === 0));
      m.set(0, 0xa5);
      assert.equal(m.get(0), 0xa5);
      m.unmap();
      b.syncSync(0 /* START */ | 3);
      b.syncSync(4 | 3);
      b.dispose();
    });
  }

  it('a buffer lives across four threads; accounting returns to zero', async () => {
    const h = heaps[0]!;
    const a = [agent(), agent(), agent(), agent()];
    try {
      const allocMsg = (await a[0]!.call('alloc', {
        msg: h.share(),
        len: (1 << 20) + 65536 + 3 * 4096,
      })) as DmaBufMessage;
      assert.equal(h.stats().buffers, 1);
      const filled = (await a[1]!.call('fill', { msg: allocMsg, byte: 0x5a })) as DmaBufMessage;
      const read = (await a[2]!.call('read', { msg: filled })) as {
        values: number[];
        msg: DmaBufMessage;
      };
      assert.deepEqual(read.values, [0x5a]);
      await a[3]!.call('release', { msg: read.msg });
      assert.equal(h.stats().bytes, 0);
      assert.equal(h.stats().buffers, 0);
      assert.ok(h.stats().pooledBytes > 0);
      // The pooled chunks come back zeroed.
      const again = h.allocate((1 << 20) + 65536 + 3 * 4096);
      const m = again.mmap();
      assert.ok(m.slice().every((x) => x === 0));
      m.unmap();
      again.dispose();
    } finally {
      for (const w of a) await w.close();
    }
  });
});
