// dma-buf: export checks, reference counting and release, names and inodes, mmap (bounds,
// overflow, access modes, read-only views), vmap counting, CPU access and SYNC flags with fence
// waits, attach/map/unmap with devices, and the multi-thread life of one buffer.
import assert from 'node:assert/strict';
import { afterEach, before, beforeEach, describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';
import { Device, DmaDataDirection } from '../src/device.js';
import {
  DMA_BUF_SYNC_END,
  DMA_BUF_SYNC_READ,
  DMA_BUF_SYNC_RW,
  DMA_BUF_SYNC_START,
  DMA_BUF_SYNC_WRITE,
  DmaBuf,
  type DmaBufOps,
  dmaBufMapMemory,
  dmaBufUnmapMemory,
  MAP_PRIVATE,
  memoryExporterOps,
  O_NONBLOCK,
  O_RDONLY,
  O_WRONLY,
  PROT_READ,
  PROT_WRITE,
  SEEK_CUR,
  SEEK_END,
  SEEK_SET,
} from '../src/dma-buf.js';
import { BufferMemory, PAGE_SIZE } from '../src/dma-buf-memory.js';
import { setDmaDebug } from '../src/dma-debug.js';
import { DmaFence } from '../src/dma-fence.js';
import { DmaResv, DmaResvUsage } from '../src/dma-resv.js';
import { DmaBufError } from '../src/substrate/errno.js';
import { counters, REGISTERED, registeredOps } from './workers/dmabuf-exporter.js';
import { assertNoLeak, baseline, live, sleep } from './workers/sync-client.js';

function errno(code: string): (e: unknown) => boolean {
  return (e) => e instanceof DmaBufError && e.code === code;
}

let start = 0;
before(() => {
  baseline();
});
beforeEach(() => {
  start = live();
});
afterEach(async () => {
  setDmaDebug(false);
  await assertNoLeak(start);
});

/** Exports a buffer of `size` with memory-backed ops; `calls` records op calls. */
function make(
  size = 4 * PAGE_SIZE,
  opts: { flags?: number; ops?: Partial<DmaBufOps>; memory?: BufferMemory; resv?: DmaResv } = {},
): { buf: DmaBuf; calls: string[] } {
  const calls: string[] = [];
  const base = memoryExporterOps(() => calls.push('release'));
  const ops: DmaBufOps = {
    ...base,
    mmap: (_b, vma) => calls.push(`mmap:${vma.pgoff}:${vma.npages}`),
    vmap: () => calls.push('vmap'),
    vunmap: () => calls.push('vunmap'),
    ...opts.ops,
  } as DmaBufOps;
  const buf = DmaBuf.export({
    ops,
    size,
    memory: opts.memory ?? BufferMemory.allocate(size),
    flags: opts.flags,
    resv: opts.resv,
    expName: 'test',
    priv: calls,
  });
  return { buf, calls };
}

describe('export', () => {
  it('checks the ops as the kernel does', () => {
    const memory = BufferMemory.allocate(PAGE_SIZE);
    const good = memoryExporterOps();
    const bad: unknown[] = [
      null,
      { ...good, map: undefined },
      { ...good, unmap: undefined },
      { ...good, release: undefined },
      { ...good, pin: () => {} },
      { ...good, unpin: () => {} },
      { ...good, mmap: 5 },
    ];
    for (const ops of bad) {
      assert.throws(
        () => DmaBuf.export({ ops: ops as DmaBufOps, size: PAGE_SIZE, memory, priv: 1 }),
        errno('EINVAL'),
      );
    }
    assert.throws(
      () => DmaBuf.export({ ops: good, size: PAGE_SIZE, memory, priv: null }),
      errno('EINVAL'),
    );
    assert.throws(
      () => DmaBuf.export({ ops: good, size: 3 * PAGE_SIZE, memory, priv: 1 }),
      errno('EINVAL'),
      'memory smaller than size',
    );
    assert.throws(() => DmaBuf.export({ ops: good, size: -1, memory, priv: 1 }), errno('EINVAL'));
  });

  it('accepts size 0 and non-page sizes (the kernel does not check size)', () => {
    const a = make(0);
    assert.equal(a.buf.size, 0);
    assert.throws(() => a.buf.mmap(), errno('EINVAL'), 'size 0 cannot be mapped');
    a.buf.dispose();
    const b = make(4097);
    assert.equal(b.buf.size, 4097);
    assert.equal(b.buf.llseek(0, SEEK_END), 4097);
    b.buf.dispose();
  });

  it('keeps flags & (O_ACCMODE | O_NONBLOCK) and derives the mode', () => {
    const { buf } = make(PAGE_SIZE, { flags: O_RDONLY | O_NONBLOCK | 0o2000000 });
    assert.equal(buf.flags, O_RDONLY | O_NONBLOCK);
    assert.equal(buf.mode, 1);
    buf.dispose();
    const w = make(PAGE_SIZE, { flags: O_WRONLY });
    assert.equal(w.buf.mode, 2);
    w.buf.dispose();
    const rw = make(PAGE_SIZE);
    assert.equal(rw.buf.mode, 3);
    rw.buf.dispose();
  });

  it('gives unique, increasing inode numbers and keeps the exporter name', () => {
    const a = make(PAGE_SIZE);
    const b = make(PAGE_SIZE);
    assert.ok(b.buf.ino > a.buf.ino && a.buf.ino >= 1n);
    assert.equal(a.buf.expName, 'test');
    assert.equal(a.buf.priv, a.calls);
    const info = a.buf.info();
    assert.deepEqual(
      [info.size, info.count, info.expName, info.name],
      [PAGE_SIZE, 0, 'test', null],
    );
    a.buf.dispose();
    b.buf.dispose();
  });

  it('creates a resv, or shares the one given', async () => {
    const { buf } = make(PAGE_SIZE);
    assert.ok(buf.resv instanceof DmaResv);
    buf.dispose();
    const resv = new DmaResv();
    const b = make(PAGE_SIZE, { resv });
    const f = new DmaFence(DmaFence.contextAlloc(1), 1n);
    resv.lock();
    resv.reserveFences(1);
    resv.addFence(f, DmaResvUsage.WRITE);
    resv.unlock();
    assert.equal(b.buf.resv.numFences, 1, 'same reservation object');
    f.signal();
    f.dispose();
    b.buf.dispose();
    resv.dispose();
  });
});

describe('references and release', () => {
  it('release runs once, after the last reference (handles and mappings)', () => {
    const { buf, calls } = make();
    const g = buf.get();
    const m = buf.mmap();
    assert.equal(buf.refcount, 3);
    buf.dispose();
    buf.dispose(); // idempotent
    assert.throws(() => buf.size, errno('EBADF'));
    g.dispose();
    assert.deepEqual(calls.filter((c) => c === 'release').length, 0);
    assert.equal(m.get(0), 0, 'the mapping keeps the buffer alive');
    m.unmap();
    assert.deepEqual(calls.filter((c) => c === 'release').length, 1);
    assert.throws(() => m.get(0), errno('EBADF'));
    assert.throws(() => g.size, errno('EBADF'));
  });

  it('a shared message holds a reference until imported or released', () => {
    const { buf, calls } = make();
    const msg = buf.share();
    buf.dispose();
    assert.ok(!calls.includes('release'));
    const b = DmaBuf.import(msg);
    assert.throws(() => DmaBuf.import(msg), errno('EBADF'));
    const msg2 = b.share();
    b.dispose();
    DmaBuf.releaseShared(msg2);
    assert.deepEqual(calls, ['release']);
  });
});

describe('SET_NAME', () => {
  it('takes at most 31 bytes, accepts empty names and renames while attached', () => {
    const { buf } = make();
    assert.equal(buf.name, null);
    buf.setName('a'.repeat(31));
    assert.equal(buf.name, 'a'.repeat(31));
    assert.throws(() => buf.setName('b'.repeat(32)), errno('EINVAL'));
    assert.equal(buf.name, 'a'.repeat(31), 'unchanged after a failure');
    buf.setName('');
    assert.equal(buf.name, '');
    const a = buf.attach(new Device({ name: 'dev' }));
    buf.setName('renamed');
    assert.equal(buf.name, 'renamed');
    buf.detach(a);
    buf.setName('cut\0here');
    assert.equal(buf.name, 'cut');
    buf.dispose();
  });

  it('reads byte names up to the NUL within 32 bytes', () => {
    const { buf } = make();
    const ok = new Uint8Array(32);
    ok.set(Buffer.from('bytes'));
    buf.setName(ok);
    assert.equal(buf.name, 'bytes');
    assert.throws(() => buf.setName(new Uint8Array(32).fill(65)), errno('EINVAL'));
    assert.throws(() => buf.setName(new Uint8Array(3).fill(65)), errno('EFAULT'));
    buf.setName(Buffer.from('é\0'));
    assert.equal(buf.name, 'é');
    buf.dispose();
  });

  it('llseek only allows offset 0 with SEEK_SET / SEEK_END', () => {
    const { buf } = make();
    assert.equal(buf.llseek(0, SEEK_SET), 0);
    assert.throws(() => buf.llseek(0, SEEK_CUR), errno('EINVAL'));
    assert.throws(() => buf.llseek(1, SEEK_SET), errno('EINVAL'));
    buf.dispose();
  });
});

describe('mmap', () => {
  it('maps the same memory: writes through one mapping are seen through another', () => {
    const { buf, calls } = make(4 * PAGE_SIZE);
    using a = buf.mmap();
    using b = buf.mmap({ pgoff: 2, length: 2 * PAGE_SIZE });
    assert.ok(calls.includes('mmap:0:4') && calls.includes('mmap:2:2'));
    a.u8[2 * PAGE_SIZE + 5] = 99;
    assert.equal(b.get(5), 99);
    assert.equal(a.byteLength, 4 * PAGE_SIZE);
    assert.equal(new Uint8Array(buf.memory.chunks[0]!.sab)[2 * PAGE_SIZE + 5], 99);
    buf.dispose();
  });

  it('exposes per-chunk views for discontiguous memory', () => {
    const memory = BufferMemory.allocate(3 * PAGE_SIZE, { chunkSize: PAGE_SIZE, separate: true });
    const { buf } = make(3 * PAGE_SIZE, { memory });
    using m = buf.mmap();
    assert.equal(m.view.contiguous, false);
    assert.throws(() => m.u8, errno('EINVAL'));
    assert.equal(m.chunks.length, 3);
    m.write(PAGE_SIZE - 2, new Uint8Array([1, 2, 3, 4]));
    assert.deepEqual(Array.from(m.slice(PAGE_SIZE - 2, PAGE_SIZE + 2)), [1, 2, 3, 4]);
    buf.dispose();
  });

  it('adjacent chunks of one backing are contiguous', () => {
    const memory = BufferMemory.allocate(3 * PAGE_SIZE, { chunkSize: PAGE_SIZE });
    const { buf } = make(3 * PAGE_SIZE, { memory });
    using m = buf.mmap();
    assert.equal(m.view.contiguous, true);
    assert.equal(m.u8.length, 3 * PAGE_SIZE);
    buf.dispose();
  });

  it('bounds: past the end EINVAL, pgoff wrap EOVERFLOW, partial last page unmappable', () => {
    const { buf } = make(4 * PAGE_SIZE);
    assert.throws(() => buf.mmap({ pgoff: 3, length: 2 * PAGE_SIZE }), errno('EINVAL'));
    assert.throws(() => buf.mmap({ pgoff: 4, length: 1 }), errno('EINVAL'));
    assert.throws(
      () => buf.mmap({ pgoff: (1n << 64n) - 1n, length: PAGE_SIZE }),
      errno('EOVERFLOW'),
    );
    assert.throws(() => buf.mmap({ pgoff: -1 }), errno('EINVAL'));
    assert.throws(() => buf.mmap({ length: 0 }), errno('EINVAL'));
    buf.mmap({ pgoff: 3, length: 1 }).unmap(); // rounded up to one page
    buf.dispose();
    const odd = make(PAGE_SIZE + 1);
    assert.throws(() => odd.buf.mmap({ length: 2 * PAGE_SIZE }), errno('EINVAL'));
    const m = odd.buf.mmap();
    assert.equal(m.byteLength, PAGE_SIZE);
    m.unmap();
    odd.buf.dispose();
  });

  it('no mmap op: EINVAL', () => {
    const { buf } = make(PAGE_SIZE, { ops: { mmap: undefined } });
    assert.throws(() => buf.mmap(), errno('EINVAL'));
    buf.dispose();
  });

  it('the exporter may refuse a mapping', () => {
    const { buf } = make(PAGE_SIZE, {
      ops: {
        mmap: () => {
          throw new DmaBufError('EINVAL', 'no');
        },
      },
    });
    const refs = buf.refcount;
    assert.throws(() => buf.mmap(), errno('EINVAL'));
    assert.equal(buf.refcount, refs, 'no reference left behind');
    buf.dispose();
  });

  it('access modes: read-only export refuses writable shared maps (EACCES), O_WRONLY any map', () => {
    const ro = make(PAGE_SIZE, { flags: O_RDONLY });
    assert.throws(() => ro.buf.mmap({ prot: PROT_READ | PROT_WRITE }), errno('EACCES'));
    assert.throws(
      () => ro.buf.mmap({ prot: PROT_READ | PROT_WRITE, flags: MAP_PRIVATE }),
      errno('EINVAL'),
      'copy-on-write refused',
    );
    ro.buf.dispose();
    const wo = make(PAGE_SIZE, { flags: O_WRONLY });
    assert.throws(() => wo.buf.mmap({ prot: PROT_READ }), errno('EACCES'));
    wo.buf.dispose();
  });

  it('a read-only mapping refuses writes through every path', () => {
    const ro = make(PAGE_SIZE, { flags: O_RDONLY });
    const rw = ro.buf.memory.chunks[0]!;
    new Uint8Array(rw.sab, rw.offset, 4).set([5, 6, 7, 8]);
    using m = ro.buf.mmap();
    assert.equal(m.prot, PROT_READ);
    assert.equal(m.get(1), 6);
    assert.deepEqual(Array.from(m.read(0, new Uint8Array(4))), [5, 6, 7, 8]);
    const copy = m.slice(0, 4);
    copy[0] = 42;
    assert.equal(m.get(0), 5, 'slice is a copy');
    assert.throws(() => m.set(0, 1), errno('EACCES'));
    assert.throws(() => m.write(0, new Uint8Array(1)), errno('EACCES'));
    assert.throws(() => m.u8, errno('EACCES'));
    assert.throws(() => m.chunks, errno('EACCES'));
    assert.throws(() => m.view.u8, errno('EACCES'));
    assert.throws(() => m.mprotect(PROT_READ | PROT_WRITE), errno('EACCES'));
    assert.equal(m.view.writable, false);
    // vmap of a read-only buffer is read-only too.
    const map = ro.buf.vmapUnlocked();
    assert.throws(() => map.vaddr.u8, errno('EACCES'));
    assert.throws(() => map.vaddr.set(0, 1), errno('EACCES'));
    ro.buf.vunmapUnlocked(map);
    assert.equal(m.get(0), 5);
    ro.buf.dispose();
  });

  it('mprotect can drop and restore write on a writable shared mapping', () => {
    const { buf } = make(PAGE_SIZE);
    using m = buf.mmap();
    m.mprotect(PROT_READ);
    assert.throws(() => m.set(0, 1), errno('EACCES'));
    m.mprotect(PROT_READ | PROT_WRITE);
    m.set(0, 1);
    m.mprotect(0);
    assert.throws(() => m.get(0), errno('EFAULT'));
    buf.dispose();
  });
});

describe('vmap', () => {
  it('counts per buffer and calls the exporter on 0->1 and 1->0 only', () => {
    const { buf, calls } = make();
    assert.throws(() => buf.vmap(), errno('EPERM'), 'resv must be held');
    buf.resv.lock();
    const a = buf.vmap();
    const b = buf.vmap();
    assert.equal(a, b);
    assert.equal(buf.vmapCount, 2);
    a.vaddr.set(10, 77);
    buf.vunmap(a);
    assert.deepEqual(
      calls.filter((c) => c.startsWith('v')),
      ['vmap'],
    );
    buf.vunmap(b);
    assert.deepEqual(
      calls.filter((c) => c.startsWith('v')),
      ['vmap', 'vunmap'],
    );
    assert.throws(() => buf.vunmap(a), /BUG/);
    buf.resv.unlock();
    using m = buf.mmap();
    assert.equal(m.get(10), 77);
    buf.dispose();
  });

  it('no vmap op: EINVAL; exporter failure leaves the count at 0', () => {
    const a = make(PAGE_SIZE, { ops: { vmap: undefined } });
    assert.throws(() => a.buf.vmapUnlocked(), errno('EINVAL'));
    a.buf.dispose();
    const b = make(PAGE_SIZE, {
      ops: {
        vmap: () => {
          throw new DmaBufError('ENOMEM', 'x');
        },
      },
    });
    assert.throws(() => b.buf.vmapUnlocked(), errno('ENOMEM'));
    assert.equal(b.buf.vmapCount, 0);
    b.buf.dispose();
  });
});

describe('CPU access and SYNC', () => {
  it('validates SYNC flags as the kernel does', async () => {
    const { buf } = make();
    for (const f of [0, DMA_BUF_SYNC_START, DMA_BUF_SYNC_END, 8, 1 << 30, -1, 2 ** 40, 1.5]) {
      assert.throws(() => buf.syncSync(f), errno('EINVAL'), `flags ${f}`);
    }
    await assert.rejects(buf.sync(DMA_BUF_SYNC_END), errno('EINVAL'));
    buf.syncSync(BigInt(DMA_BUF_SYNC_READ));
    assert.throws(() => buf.syncSync((1n << 63n) | 1n), errno('EINVAL'));
    for (const f of [DMA_BUF_SYNC_READ, DMA_BUF_SYNC_WRITE, DMA_BUF_SYNC_RW]) {
      buf.syncSync(DMA_BUF_SYNC_START | f);
      buf.syncSync(DMA_BUF_SYNC_END | f);
      await buf.sync(f);
    }
    buf.dispose();
  });

  it('maps flags to directions and calls begin/end; end without begin is accepted', () => {
    const seen: string[] = [];
    const { buf } = make(PAGE_SIZE, {
      ops: {
        beginCpuAccess: (_b, dir) => seen.push(`begin:${dir}`),
        endCpuAccess: (_b, dir) => seen.push(`end:${dir}`),
      },
    });
    buf.syncSync(DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ);
    buf.syncSync(DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ);
    buf.syncSync(DMA_BUF_SYNC_START | DMA_BUF_SYNC_WRITE);
    buf.syncSync(DMA_BUF_SYNC_START | DMA_BUF_SYNC_RW);
    assert.deepEqual(seen, ['end:2', 'begin:2', 'begin:1', 'begin:0']);
    assert.throws(() => buf.endCpuAccess(9 as DmaDataDirection), errno('EINVAL'));
    buf.dispose();
  });

  it('begin waits for writers (read intent) or for everything (write intent)', async () => {
    const { buf } = make(PAGE_SIZE);
    const ctx = DmaFence.contextAlloc(2);
    const reader = new DmaFence(ctx, 1n);
    const bookkeep = new DmaFence(ctx + 1n, 1n);
    const resv = buf.resv;
    resv.lock();
    resv.reserveFences(2);
    resv.addFence(reader, DmaResvUsage.READ);
    resv.addFence(bookkeep, DmaResvUsage.BOOKKEEP);
    resv.unlock();
    // A READ fence does not hold back a CPU reader.
    await buf.sync(DMA_BUF_SYNC_READ);
    // A CPU writer waits for it.
    let done = false;
    const p = buf.sync(DMA_BUF_SYNC_WRITE).then(() => {
      done = true;
    });
    await sleep(20);
    assert.equal(done, false);
    reader.signal();
    await p;
    assert.equal(done, true, 'BOOKKEEP fences are never waited for');
    // Interruptible.
    const w = new DmaFence(DmaFence.contextAlloc(1), 1n);
    resv.lock();
    resv.reserveFences(1);
    resv.addFence(w, DmaResvUsage.WRITE);
    resv.unlock();
    const ac = new AbortController();
    const q = buf.sync(DMA_BUF_SYNC_READ, { signal: ac.signal });
    ac.abort();
    await assert.rejects(q, errno('ERESTARTSYS'));
    for (const f of [w, bookkeep]) f.signal();
    for (const f of [reader, bookkeep, w]) f.dispose();
    buf.dispose();
  });

  it('exporter errors from begin are returned as is (no wait)', () => {
    const { buf } = make(PAGE_SIZE, {
      ops: {
        beginCpuAccess: () => {
          throw new DmaBufError('EAGAIN', 'busy');
        },
      },
    });
    assert.throws(() => buf.syncSync(DMA_BUF_SYNC_READ), errno('EAGAIN'));
    buf.dispose();
  });
});

describe('attach and map', () => {
  it('attach calls the exporter first and returns its error verbatim', () => {
    const { buf } = make(PAGE_SIZE, {
      ops: {
        attach: () => {
          throw new DmaBufError('EBUSY', 'storage incompatible');
        },
      },
    });
    assert.throws(() => buf.attach(new Device({ name: 'x' })), errno('EBUSY'));
    assert.equal(buf.attachmentCount, 0);
    assert.throws(() => buf.attach(null as unknown as Device), errno('EINVAL'));
    assert.throws(
      () => buf.attach(new Device({ name: 'x' }), {} as never),
      errno('EINVAL'),
      'importer ops need moveNotify',
    );
    buf.dispose();
  });

  it('maps per device: IOMMU merges, dma-direct does not; every map calls the exporter', () => {
    const memory = BufferMemory.allocate(4 * PAGE_SIZE, { chunkSize: PAGE_SIZE, separate: true });
    let maps = 0;
    const { buf } = make(4 * PAGE_SIZE, {
      memory,
      ops: {
        map: (a, dir) => {
          maps++;
          return dmaBufMapMemory(a, dir);
        },
      },
    });
    const iommu = new Device({ name: 'gpu', iommu: true });
    const direct = new Device({ name: 'dsp' });
    const a = buf.attach(iommu);
    const b = buf.attach(direct);
    assert.equal(buf.attachmentCount, 2);
    assert.throws(() => a.map(DmaDataDirection.BIDIRECTIONAL), errno('EPERM'));
    const sa = a.mapUnlocked(DmaDataDirection.BIDIRECTIONAL);
    const sa2 = a.mapUnlocked(DmaDataDirection.TO_DEVICE);
    assert.notEqual(sa, sa2, 'no caching: a fresh table per map');
    const sb = b.mapUnlocked(DmaDataDirection.TO_DEVICE);
    assert.equal(maps, 3);
    assert.deepEqual([sa.origNents, sa.nents], [4, 1]);
    assert.deepEqual([sb.origNents, sb.nents], [4, 4]);
    assert.equal(sa.contiguousSize(), 4 * PAGE_SIZE);
    assert.equal(sb.contiguousSize(), PAGE_SIZE);
    // The device reads what the CPU wrote, through its addresses only.
    using m = buf.mmap();
    m.write(PAGE_SIZE * 3, new Uint8Array([1, 2, 3]));
    const seg = [...sa.dmaSegments()][0]!;
    assert.deepEqual(Array.from(iommu.dmaRead(seg.address + 3 * PAGE_SIZE, 3)), [1, 2, 3]);
    a.unmapUnlocked(sa, DmaDataDirection.BIDIRECTIONAL);
    a.unmapUnlocked(sa2, DmaDataDirection.TO_DEVICE);
    b.unmapUnlocked(sb, DmaDataDirection.TO_DEVICE);
    assert.equal(iommu.mappedPages + direct.mappedPages, 0);
    buf.detach(a);
    buf.detach(b);
    assert.throws(() => buf.detach(b), errno('EINVAL'));
    assert.throws(() => a.mapUnlocked(DmaDataDirection.TO_DEVICE), errno('EINVAL'));
    buf.dispose();
  });

  it('a null table is ENOMEM; pin-on-map for static importers of a dynamic exporter', () => {
    const seen: string[] = [];
    const { buf } = make(PAGE_SIZE, {
      ops: {
        pin: () => seen.push('pin'),
        unpin: () => seen.push('unpin'),
        map: (a, dir) => {
          seen.push('map');
          return seen.length > 4 ? null : dmaBufMapMemory(a, dir);
        },
        unmap: (a, s, dir) => {
          seen.push('unmap');
          dmaBufUnmapMemory(a, s, dir);
        },
      },
    });
    const a = buf.attach(new Device({ name: 'd' }));
    const s = a.mapUnlocked(DmaDataDirection.TO_DEVICE);
    a.unmapUnlocked(s, DmaDataDirection.TO_DEVICE);
    assert.deepEqual(seen, ['pin', 'map', 'unmap', 'unpin']);
    assert.throws(() => a.mapUnlocked(DmaDataDirection.TO_DEVICE), errno('ENOMEM'));
    assert.deepEqual(seen.slice(4), ['pin', 'map', 'unpin']);
    // A dynamic importer is not pinned on map.
    seen.length = 0;
    const dyn = buf.attach(new Device({ name: 'e' }), { moveNotify: () => {} });
    assert.equal(dyn.dynamic, true);
    buf.detach(a);
    buf.detach(dyn);
    buf.dispose();
  });

  it('static importers: the KERNEL-fence wait after map is interruptible, then succeeds', async () => {
    const { buf } = make(PAGE_SIZE);
    const f = new DmaFence(DmaFence.contextAlloc(1), 1n);
    buf.resv.lock();
    buf.resv.reserveFences(1);
    buf.resv.addFence(f, DmaResvUsage.KERNEL);
    buf.resv.unlock();
    const a = buf.attach(new Device({ name: 'd' }));
    setTimeout(() => f.signal(), 20);
    const t0 = performance.now();
    // The blocking wait would stall the timer: signal from the abort path instead.
    const ac = new AbortController();
    ac.abort();
    assert.throws(
      () => a.mapUnlocked(DmaDataDirection.TO_DEVICE, { signal: ac.signal }),
      errno('ERESTARTSYS'),
    );
    await sleep(30);
    const s = a.mapUnlocked(DmaDataDirection.TO_DEVICE);
    assert.ok(performance.now() - t0 >= 15);
    a.unmapUnlocked(s, DmaDataDirection.TO_DEVICE);
    buf.detach(a);
    f.dispose();
    buf.dispose();
  });

  it('debug mode scrambles the CPU pages of a mapped table until unmap', () => {
    setDmaDebug(true);
    const { buf } = make(PAGE_SIZE);
    const a = buf.attach(new Device({ name: 'd' }));
    const s = a.mapUnlocked(DmaDataDirection.TO_DEVICE);
    assert.throws(() => s.sgl[0]!.page, /DMA-API/);
    assert.ok(s.sgl[0]!.dmaAddress > 0);
    a.unmapUnlocked(s, DmaDataDirection.TO_DEVICE);
    assert.ok(s.sgl[0]!.page.phys > 0);
    buf.detach(a);
    buf.dispose();
  });

  it('release with attachments left warns', async () => {
    const { buf } = make(PAGE_SIZE);
    buf.attach(new Device({ name: 'left' }));
    const warned = new Promise((r) => process.once('warning', r));
    buf.dispose();
    assert.match(String(await warned), /attachment/);
  });
});

describe('selftests/dmabuf-heaps (core parts)', () => {
  // test_alloc_and_import without the heap: mmap, fill under SYNC START|RW ... END, then an
  // importing device attaches, maps and sees the bytes; then everything is torn down in the
  // selftest's order (munmap, unmap, detach, close).
  it('alloc, mmap, sync-bracketed fill, import by a device', () => {
    const size = 4 * PAGE_SIZE;
    const { buf, calls } = make(size);
    const m = buf.mmap();
    buf.syncSync(DMA_BUF_SYNC_START | DMA_BUF_SYNC_RW);
    m.u8.fill(0xff);
    buf.syncSync(DMA_BUF_SYNC_END | DMA_BUF_SYNC_RW);
    const dev = new Device({ name: 'vgem', iommu: true });
    const a = buf.attach(dev);
    const sgt = a.mapUnlocked(DmaDataDirection.BIDIRECTIONAL);
    for (const s of sgt.dmaSegments()) {
      assert.ok(dev.dmaRead(s.address, s.length).every((v) => v === 0xff));
    }
    m.unmap();
    a.unmapUnlocked(sgt, DmaDataDirection.BIDIRECTIONAL);
    buf.detach(a);
    buf.dispose();
    assert.deepEqual(
      calls.filter((c) => c === 'release'),
      ['release'],
    );
  });
});

// ---- threads ------------------------------------------------------------------------------------

interface Reply {
  id?: number;
  ok?: boolean;
  value?: unknown;
  code?: string;
  message?: string;
  ready?: number;
}

class Agent {
  #next = 1;
  #pending = new Map<number, [(v: unknown) => void, (e: Error) => void]>();
  readonly exited: Promise<void>;
  private constructor(readonly worker: Worker) {
    this.exited = new Promise((r) => worker.once('exit', () => r()));
    worker.on('message', (m: Reply) => {
      const p = m.id === undefined ? undefined : this.#pending.get(m.id);
      if (!p || m.id === undefined) return;
      this.#pending.delete(m.id);
      if (m.ok) p[0](m.value);
      else p[1](m.code ? new DmaBufError(m.code as never, m.message ?? '') : new Error(m.message));
    });
  }
  static start(): Promise<Agent> {
    const w = new Worker(new URL('./workers/dmabuf-agent.js', import.meta.url));
    return new Promise((resolve, reject) => {
      w.once('message', () => resolve(new Agent(w)));
      w.once('error', reject);
    });
  }
  call<T = unknown>(op: string, args: Record<string, unknown> = {}): Promise<T> {
    const id = this.#next++;
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(id, [resolve as (v: unknown) => void, reject]);
      this.worker.postMessage({ id, op, ...args });
    });
  }
  async stop(): Promise<void> {
    await this.call('exit');
    await this.exited;
  }
}

describe('threads', () => {
  it('exported in one thread, written in a second, read in a third, released in a fourth', async () => {
    const agents = await Promise.all([0, 1, 2, 3].map(() => Agent.start()));
    const [a, b, c, d] = agents as [Agent, Agent, Agent, Agent];
    try {
      for (const registered of [true, false]) {
        const before = [Atomics.load(counters, 0), Atomics.load(counters, 2)];
        const size = 5 * PAGE_SIZE;
        const ino = await a.call<string>('export', { name: 'x', size, registered, separate: true });
        for (const ag of [b, c, d]) {
          const msg = await a.call('share', { name: 'x' });
          assert.equal(await ag.call('import', { name: 'x', msg }), ino, 'same inode');
        }
        await a.call('dispose', { name: 'x' });
        if (registered) {
          assert.equal(await b.call('write', { name: 'x' }), size);
          await b.call('dispose', { name: 'x' });
          const got = await c.call<number[]>('read', { name: 'x', length: size });
          assert.equal(got.length, size);
          assert.ok(got.every((v, k) => v === ((k * 7 + 3) & 0xff)));
        } else {
          // Thread-local ops run only in the exporting thread (the owner has disposed its
          // handle, but the buffer lives on in the others).
          await assert.rejects(b.call('write', { name: 'x' }), errno('ENOENT'));
          await b.call('dispose', { name: 'x' });
        }
        await c.call('dispose', { name: 'x' });
        const [tidA, tidD] = [await a.call('tid'), await d.call('tid')];
        await d.call('dispose', { name: 'x' });
        const end = Date.now() + 2000;
        const idx = registered ? 0 : 2;
        while (Atomics.load(counters, idx) === before[idx === 0 ? 0 : 1] && Date.now() < end) {
          await sleep(2);
        }
        await sleep(10);
        assert.equal(
          Atomics.load(counters, idx),
          before[idx === 0 ? 0 : 1]! + 1,
          'release ran once',
        );
        // A registered exporter releases in the thread of the last put; a thread-local one in
        // its owner (through the owner's mailbox).
        assert.equal(Atomics.load(counters, idx + 1), registered ? tidD : tidA);
      }
    } finally {
      await Promise.all(agents.map((x) => x.stop()));
    }
  });

  it('a read-only export refuses writes in another thread too', async () => {
    const [a, b] = (await Promise.all([Agent.start(), Agent.start()])) as [Agent, Agent];
    try {
      await a.call('export', { name: 'r', size: PAGE_SIZE, registered: true, readOnly: true });
      await b.call('import', { name: 'r', msg: await a.call('share', { name: 'r' }) });
      assert.deepEqual(await b.call('tryWriteReadOnly', { name: 'r' }), [
        'ok',
        'EACCES',
        'EACCES',
        'EACCES',
        'EACCES',
        'EACCES',
      ]);
      await b.call('dispose', { name: 'r' });
      await a.call('dispose', { name: 'r' });
    } finally {
      await Promise.all([a.stop(), b.stop()]);
    }
  });

  it('a thread without the exporter gets ENOENT for ops it cannot run', async () => {
    const a = await Agent.start();
    try {
      await a.call('export', { name: 'l', size: PAGE_SIZE, registered: false });
      const msg = await a.call('share', { name: 'l' });
      const buf = DmaBuf.import(msg as never);
      assert.throws(() => buf.mmap(), errno('ENOENT'));
      buf.syncSync(DMA_BUF_SYNC_READ); // no begin op: works anywhere
      buf.dispose();
      const reg = DmaBuf.export({
        ops: registeredOps,
        size: PAGE_SIZE,
        memory: BufferMemory.allocate(PAGE_SIZE),
        priv: 1,
      });
      assert.equal(reg.expName, REGISTERED);
      reg.dispose();
      await a.call('dispose', { name: 'l' });
    } finally {
      await a.stop();
    }
  });
});
