// Ports of the no-hardware cases of tools/testing/selftests/dmabuf-heaps/dmabuf-heap.c (every
// test_* that needs no vgem, run on a system and a CMA heap) and of
// tools/testing/selftests/drivers/dma-buf/udmabuf.c (6.1), plus the 6.1 observed rows of both
// (kernel-6.1-observed.md) that the other files do not pin: lseek, mmap bounds, SYNC flags,
// SET_NAME, and udmabuf's END before any START (EINVAL: no `ubuf->sg` yet).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Device, DmaDataDirection } from '../src/device.js';
import {
  DMA_BUF_SYNC_END,
  DMA_BUF_SYNC_READ,
  DMA_BUF_SYNC_RW,
  DMA_BUF_SYNC_START,
  DMA_BUF_SYNC_WRITE,
  type DmaBuf,
  O_CLOEXEC,
  O_RDWR,
  SEEK_CUR,
  SEEK_END,
  SEEK_SET,
} from '../src/dma-buf.js';
import { PAGE_SIZE } from '../src/dma-buf-memory.js';
import { DMA_HEAP_IOCTL_ALLOC, type DmaHeap, dmaHeapFind } from '../src/dma-heap.js';
import { createCmaHeap } from '../src/heaps/cma-heap.js';
import { createSystemHeap } from '../src/heaps/system-heap.js';
import { F_SEAL_SHRINK, MemFd } from '../src/memfd.js';
import { PinAccount, UDMABUF_CREATE, udmabufCreate, udmabufIoctl } from '../src/udmabuf.js';
import { assertNoLeak, baseline, errno } from './workers/sync-client.js';

const ONE_MEG = 1 << 20;
const RW = O_RDWR | O_CLOEXEC;
/** `_IOWR('H', 0, struct)` for a struct of `size` bytes (older / newer ABI of the selftest). */
const allocCmd = (size: number): number => (0xc0004800 | (size << 16)) >>> 0;

/** The observed 6.1 rows every exporter shares (heap[system], heap[reserved], udmabuf). */
function observedRows(b: DmaBuf): void {
  assert.equal(b.llseek(0, SEEK_END), 16384);
  assert.equal(b.llseek(0, SEEK_SET), 0);
  assert.throws(() => b.llseek(0, SEEK_CUR), errno('EINVAL'));
  assert.throws(() => b.llseek(1, SEEK_SET), errno('EINVAL'));
  const m = b.mmap();
  b.syncSync(DMA_BUF_SYNC_START | DMA_BUF_SYNC_RW);
  m.set(0, 0xa5);
  b.syncSync(DMA_BUF_SYNC_END | DMA_BUF_SYNC_RW);
  assert.equal(m.get(0), 0xa5);
  m.unmap();
  assert.throws(() => b.mmap({ length: 5 * PAGE_SIZE }), errno('EINVAL'), 'mmap_oversize');
  assert.throws(() => b.mmap({ pgoff: 4, length: PAGE_SIZE }), errno('EINVAL'), 'mmap_past_end');
  assert.throws(() => b.syncSync(0x100 | DMA_BUF_SYNC_RW), errno('EINVAL'), 'sync_badflag');
  assert.throws(() => b.syncSync(DMA_BUF_SYNC_START), errno('EINVAL'), 'sync_start_noRW');
  b.syncSync(DMA_BUF_SYNC_END | DMA_BUF_SYNC_RW); // sync_end_without_start (after a START)
  b.setName('probe-name');
  assert.throws(() => b.setName('x'.repeat(99)), errno('EINVAL'));
  assert.equal(b.info().name, 'probe-name');
  assert.equal(b.info().size, 16384);
  assert.equal(b.info().count, 0, 'fdinfo count: one reference');
}

describe('selftests/dmabuf-heaps (no-hardware cases)', () => {
  let start = 0;
  let heaps: DmaHeap[] = [];
  before(() => {
    start = baseline();
    heaps = [
      createSystemHeap({ name: 'st-system', capacity: 8 << 20 }),
      createCmaHeap({ name: 'st-reserved', capacity: 4 << 20 }),
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

  it('dmabuf_heap_open: a missing heap is not found', () => {
    assert.equal(dmaHeapFind('st-no-such-heap'), undefined);
  });

  for (const name of ['st-system', 'st-reserved']) {
    it(`test_alloc_and_import (${name}): mmap, SYNC-bracketed fill, a device imports it`, () => {
      const h = dmaHeapFind(name);
      assert.ok(h);
      const buf = h.allocate(ONE_MEG, RW);
      assert.equal(buf.size, ONE_MEG);
      const m = buf.mmap();
      buf.syncSync(DMA_BUF_SYNC_START | DMA_BUF_SYNC_RW);
      for (const c of m.chunks) c.fill(1);
      buf.syncSync(DMA_BUF_SYNC_END | DMA_BUF_SYNC_RW);
      // The vgem import replaced by a device that attaches and reads through its table.
      const dev = new Device({ name: 'importer', iommu: true });
      const a = buf.attach(dev);
      const sgt = a.mapUnlocked(DmaDataDirection.BIDIRECTIONAL);
      let seen = 0;
      for (const s of sgt.dmaSegments()) {
        assert.ok(dev.dmaRead(s.address, s.length).every((v) => v === 1));
        seen += s.length;
      }
      assert.equal(seen, ONE_MEG);
      m.unmap();
      a.unmapUnlocked(sgt, DmaDataDirection.BIDIRECTIONAL);
      buf.detach(a);
      buf.dispose();
      assert.equal(h.stats().buffers, 0);
    });

    it(`test_alloc_zeroed (${name}): 32 dirtied 4 KiB buffers, freed, come back zeroed`, () => {
      const h = dmaHeapFind(name)!;
      for (const round of [0, 1]) {
        const bufs: DmaBuf[] = [];
        for (let i = 0; i < 32; i++) {
          const b = h.allocate(4096, RW);
          const m = b.mmap();
          b.syncSync(DMA_BUF_SYNC_START | DMA_BUF_SYNC_RW);
          if (round === 1) {
            const got = m.slice();
            for (let j = 0; j < got.length; j++) {
              if (got[j] !== 0) assert.fail(`buffer ${i} byte ${j} is ${got[j]}`);
            }
          }
          m.u8.fill(0xff);
          b.syncSync(DMA_BUF_SYNC_END | DMA_BUF_SYNC_RW);
          m.unmap();
          bufs.push(b);
        }
        for (const b of bufs) b.dispose();
      }
      assert.equal(h.stats().buffers, 0);
    });

    it(`test_alloc_compat / test_alloc_newer (${name}): other struct sizes work`, () => {
      const h = dmaHeapFind(name)!;
      // Older ABI: { len, fd, fd_flags } (16 bytes), no heap_flags: the kernel zero-fills them.
      const older = { len: ONE_MEG, fd: 0, fdFlags: RW };
      const b1 = h.ioctl(allocCmd(16), older);
      assert.equal(older.fd, b1);
      assert.equal(b1.size, ONE_MEG);
      // Newer ABI: an extra field (32 bytes) the kernel ignores.
      const newer = { len: ONE_MEG, fd: 0, fdFlags: RW, heapFlags: 0, garbage4: 0xffffffff };
      const b2 = h.ioctl(allocCmd(32), newer);
      assert.equal(newer.fd, b2);
      assert.equal(b2.size, ONE_MEG);
      b1.dispose();
      b2.dispose();
      const b3 = h.ioctl(DMA_HEAP_IOCTL_ALLOC, { len: 1, fdFlags: RW });
      assert.equal(b3.size, 4096);
      b3.dispose();
      assert.equal(h.stats().buffers, 0);
    });

    it(`test_alloc_errors (${name}): invalid heap flags, fd flags, both`, () => {
      const h = dmaHeapFind(name)!;
      assert.throws(() => h.allocate(ONE_MEG, ~0 >>> 0, 0), errno('EINVAL'));
      assert.throws(() => h.allocate(ONE_MEG, RW, (1n << 64n) - 1n), errno('EINVAL'));
      assert.throws(() => h.allocate(ONE_MEG, ~0 >>> 0, (1n << 64n) - 1n), errno('EINVAL'));
      assert.equal(h.stats().buffers, 0);
    });

    it(`observed 6.1 rows (${name})`, () => {
      const h = dmaHeapFind(name)!;
      const b = h.allocate(16384, RW);
      observedRows(b);
      assert.equal(b.info().expName, name);
      b.dispose();
    });
  }
});

describe('selftests/drivers/dma-buf/udmabuf (6.1)', () => {
  let start = 0;
  let acct: PinAccount;
  before(() => {
    start = baseline();
    acct = PinAccount.create({ limit: 1 << 20 });
  });
  after(async () => {
    assert.equal(acct.pinnedBytes, 0);
    acct.dispose();
    await assertNoLeak(start);
  });

  it('the selftest: bad offset, bad size, not a memfd fail; a sealed memfd works', () => {
    const page = PAGE_SIZE;
    const size = page * 64;
    // memfd_create(MFD_ALLOW_SEALING); ftruncate(size); F_ADD_SEALS(F_SEAL_SHRINK)
    const m2 = MemFd.create(size, { allowSealing: true });
    m2.addSeals(F_SEAL_SHRINK);
    const opts = { account: acct };
    // "should fail (offset not page aligned)"
    assert.throws(
      () => udmabufIoctl(UDMABUF_CREATE, { memfd: m2, offset: page / 2, size: page }, opts),
      errno('EINVAL'),
    );
    // "should fail (size not multiple of page)"
    assert.throws(
      () => udmabufIoctl(UDMABUF_CREATE, { memfd: m2, offset: 0, size: page / 2 }, opts),
      errno('EINVAL'),
    );
    // "should fail (not memfd)": memfd = 0.
    assert.throws(
      () => udmabufIoctl(UDMABUF_CREATE, { memfd: 0, offset: 0, size: page }, opts),
      (e: unknown) => (e as { code?: string }).code === 'EBADFD',
    );
    // "should work"
    const b = udmabufIoctl(UDMABUF_CREATE, { memfd: m2, offset: 0, size }, opts);
    assert.equal(b.size, size);
    assert.equal(acct.pinnedBytes, size);
    b.dispose();
    assert.equal(acct.pinnedBytes, 0);
  });

  it('SYNC END before any START is EINVAL (no ubuf->sg yet); after a START it works', () => {
    const m = MemFd.create(16384);
    m.addSeals(F_SEAL_SHRINK);
    const b = udmabufCreate({ memfd: m, offset: 0, size: 16384 }, { account: acct });
    assert.throws(() => b.syncSync(DMA_BUF_SYNC_END | DMA_BUF_SYNC_WRITE), errno('EINVAL'));
    assert.throws(() => b.endCpuAccess(DmaDataDirection.TO_DEVICE), errno('EINVAL'));
    b.syncSync(DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ);
    b.syncSync(DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ);
    b.syncSync(DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ); // END twice: no pairing state
    observedRows(b);
    assert.equal(b.info().expName, 'udmabuf');
    b.dispose();
  });
});
