// The non-coherent DMA model: a device works on its own copy of the pages it last synced; map /
// unmap directions and dma_sync_sgtable_for_{cpu,device} move data as the kernel's DMA API does;
// DMA_BUF_SYNC START / END run them through a memory exporter; the debug mode reports CPU access
// to device-owned memory and device access to CPU-owned memory.
import assert from 'node:assert/strict';
import { afterEach, before, beforeEach, describe, it } from 'node:test';
import { Device, DmaDataDirection } from '../src/device.js';
import { DmaEngine } from '../src/devices/dma-engine.js';
import {
  DMA_BUF_SYNC_END,
  DMA_BUF_SYNC_READ,
  DMA_BUF_SYNC_RW,
  DMA_BUF_SYNC_START,
  DMA_BUF_SYNC_WRITE,
  type DmaBuf,
} from '../src/dma-buf.js';
import { BufferMemory, PAGE_SIZE } from '../src/dma-buf-memory.js';
import { setDmaDebug } from '../src/dma-debug.js';
import { SgTable } from '../src/scatterlist.js';
import { exportPages } from './buffers.js';
import { assertNoLeak, baseline, errno, live } from './workers/sync-client.js';

const { TO_DEVICE, FROM_DEVICE, BIDIRECTIONAL } = DmaDataDirection;

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

function exportBuf(pages: number, separate = true): DmaBuf {
  return exportPages(pages, 'noncoherent-test', separate);
}

function debugReport(e: unknown): boolean {
  return e instanceof Error && e.message.includes('DMA-API:');
}

describe('the device cache (dma_sync_sgtable_*)', () => {
  it('CPU writes reach the device at map TO_DEVICE and sync for device only', () => {
    for (const iommu of [false, true]) {
      const mem = BufferMemory.allocate(2 * PAGE_SIZE, { chunkSize: PAGE_SIZE, separate: true });
      const cpu = mem.chunks.map((c) => new Uint8Array(c.sab, c.offset, c.length));
      cpu[0]!.fill(1);
      const dev = new Device({ name: 'nc', coherent: false, iommu });
      const sgt = SgTable.fromMemory(mem);
      dev.mapSgtable(sgt, TO_DEVICE);
      const addr = [...sgt.dmaPages()];
      assert.deepEqual([...dev.dmaRead(addr[0]!, 4)], [1, 1, 1, 1]);
      cpu[0]!.fill(2); // not told: the device still sees its copy
      assert.deepEqual([...dev.dmaRead(addr[0]!, 4)], [1, 1, 1, 1]);
      dev.syncSgtableForDevice(sgt, FROM_DEVICE); // FROM_DEVICE moves nothing to the device
      assert.equal(dev.dmaRead(addr[0]!, 1)[0], 1);
      dev.syncSgtableForCpu(sgt, TO_DEVICE);
      dev.syncSgtableForDevice(sgt, TO_DEVICE);
      assert.equal(dev.dmaRead(addr[0]!, 1)[0], 2);
      dev.unmapSgtable(sgt, TO_DEVICE);
      assert.equal(dev.cachedPages, 0);
      assert.equal(dev.mappedPages, 0);
    }
  });

  it('device writes reach memory at sync for cpu / unmap FROM_DEVICE only', () => {
    const mem = BufferMemory.allocate(PAGE_SIZE);
    const cpu = new Uint8Array(mem.chunks[0]!.sab, 0, PAGE_SIZE);
    const dev = new Device({ name: 'nc', coherent: false });
    const sgt = SgTable.fromMemory(mem);
    dev.mapSgtable(sgt, BIDIRECTIONAL);
    const a = sgt.sgl[0]!.dmaAddress;
    dev.dmaWrite(a + 10, Uint8Array.of(7, 8));
    assert.equal(cpu[10], 0);
    cpu[100] = 5; // a CPU write elsewhere in the page survives the write-back (dirty bytes only)
    dev.syncSgtableForCpu(sgt, TO_DEVICE); // TO_DEVICE: no data to the CPU
    assert.equal(cpu[10], 0);
    dev.syncSgtableForDevice(sgt, BIDIRECTIONAL);
    dev.syncSgtableForCpu(sgt, FROM_DEVICE);
    assert.deepEqual([cpu[10], cpu[11], cpu[100]], [7, 8, 5]);
    dev.syncSgtableForDevice(sgt, BIDIRECTIONAL);
    dev.dmaWrite(a, Uint8Array.of(9));
    dev.unmapSgtable(sgt, BIDIRECTIONAL);
    assert.equal(cpu[0], 9);
    // A coherent device writes memory at once.
    const coh = new Device({ name: 'coh' });
    const t2 = SgTable.fromMemory(mem);
    coh.mapSgtable(t2, FROM_DEVICE);
    coh.dmaWrite(t2.sgl[0]!.dmaAddress, Uint8Array.of(42));
    assert.equal(cpu[0], 42);
    assert.throws(() => coh.syncSgtableForCpu(sgt, FROM_DEVICE), errno('EINVAL'));
    coh.unmapSgtable(t2, FROM_DEVICE);
  });
});

describe('DMA_BUF_SYNC through a memory exporter', () => {
  it('START brings device writes to the CPU, END brings CPU writes to the device', () => {
    const buf = exportBuf(2);
    const dev = new Device({ name: 'nc', coherent: false, iommu: true });
    const a = buf.attach(dev);
    const sgt = a.mapUnlocked(BIDIRECTIONAL);
    const base = sgt.sgl[0]!.dmaAddress;
    using m = buf.mmap();
    dev.dmaWrite(base + PAGE_SIZE, Uint8Array.of(0xab));
    assert.equal(m.get(PAGE_SIZE), 0, 'not seen before START');
    buf.syncSync(DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ);
    assert.equal(m.get(PAGE_SIZE), 0xab);
    m.set(0, 0x11);
    assert.equal(dev.dmaRead(base, 1)[0], 0, 'not seen before END');
    buf.syncSync(DMA_BUF_SYNC_END | DMA_BUF_SYNC_WRITE);
    assert.equal(dev.dmaRead(base, 1)[0], 0x11);
    a.unmapUnlocked(sgt, BIDIRECTIONAL);
    buf.detach(a);
    m.unmap();
    buf.dispose();
  });

  it('debug mode reports CPU access the device owns and device access the CPU owns', () => {
    const buf = exportBuf(1);
    const dev = new Device({ name: 'nc', coherent: false });
    const a = buf.attach(dev);
    const sgt = a.mapUnlocked(BIDIRECTIONAL);
    const addr = sgt.sgl[0]!._dmaAddress;
    using m = buf.mmap();
    setDmaDebug(true);
    assert.throws(() => m.get(0), debugReport);
    assert.throws(() => m.write(0, Uint8Array.of(1)), debugReport);
    dev.dmaWrite(addr, Uint8Array.of(3)); // device-owned: fine
    buf.syncSync(DMA_BUF_SYNC_START | DMA_BUF_SYNC_RW);
    assert.equal(m.get(0), 3);
    m.set(1, 4);
    assert.throws(() => dev.dmaRead(addr, 1), debugReport);
    buf.syncSync(DMA_BUF_SYNC_END | DMA_BUF_SYNC_RW);
    assert.deepEqual([...dev.dmaRead(addr, 2)], [3, 4]);
    setDmaDebug(false);
    a.unmapUnlocked(sgt, BIDIRECTIONAL);
    buf.detach(a);
    setDmaDebug(true);
    assert.equal(m.get(1), 4, 'after unmap the CPU owns the memory');
    m.unmap();
    buf.dispose();
  });
});

describe('a non-coherent DMA engine', () => {
  it('fills its copy; the CPU sees it after DMA_BUF_SYNC_START', async () => {
    const engine = await DmaEngine.start({ name: 'nc-engine', coherent: false, iommu: true });
    try {
      const buf = exportBuf(3);
      const a = buf.attach(engine.device);
      const sgt = a.mapUnlocked(BIDIRECTIONAL);
      const job = engine.fill(sgt, 0x5a, { dstResv: buf.resv });
      await job.done;
      assert.equal(job.fence.getStatus(), 1);
      using m = buf.mmap();
      assert.equal(m.get(2 * PAGE_SIZE + 5), 0, 'still in the device copy');
      await buf.sync(DMA_BUF_SYNC_START | DMA_BUF_SYNC_READ);
      assert.ok(m.slice().every((b) => b === 0x5a));
      // The CPU writes without END: the engine copies its stale copy.
      m.write(0, Uint8Array.of(1, 2, 3));
      await buf.sync(DMA_BUF_SYNC_END | DMA_BUF_SYNC_READ); // READ: nothing reaches the device
      const src = exportBuf(1);
      const sa = src.attach(engine.device);
      const st = sa.mapUnlocked(FROM_DEVICE);
      const c1 = engine.copy(sgt, st, { length: 3 });
      await c1.done;
      c1.fence.dispose();
      sa.unmapUnlocked(st, FROM_DEVICE);
      {
        using sm = src.mmap();
        assert.deepEqual([...sm.slice(0, 3)], [0x5a, 0x5a, 0x5a]);
      }
      await buf.sync(DMA_BUF_SYNC_START | DMA_BUF_SYNC_WRITE);
      await buf.sync(DMA_BUF_SYNC_END | DMA_BUF_SYNC_WRITE);
      const st2 = sa.mapUnlocked(FROM_DEVICE);
      const c2 = engine.copy(sgt, st2, { length: 3 });
      await c2.done;
      c2.fence.dispose();
      sa.unmapUnlocked(st2, FROM_DEVICE);
      {
        using sm = src.mmap();
        assert.deepEqual([...sm.slice(0, 3)], [1, 2, 3]);
      }
      // Debug: the engine touching memory the CPU owns reports (the job fails with EINVAL).
      await buf.sync(DMA_BUF_SYNC_START | DMA_BUF_SYNC_RW);
      setDmaDebug(true);
      const bad = engine.fill(sgt, 0);
      await assert.rejects(bad.done, debugReport);
      assert.equal(bad.fence.getStatus(), -22);
      setDmaDebug(false);
      for (const f of [job.fence, bad.fence]) f.dispose();
      a.unmapUnlocked(sgt, BIDIRECTIONAL);
      buf.detach(a);
      src.detach(sa);
      m.unmap();
      buf.dispose();
      src.dispose();
    } finally {
      await engine.close();
    }
  });
});
