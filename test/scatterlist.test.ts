// Scatter/gather tables, devices and the IOMMU model: building tables from pages (merging,
// max_segment), mapping for dma-direct and IOMMU devices (nents <= origNents), the iterators,
// drm_prime_get_contiguous_size, and seed 003's bug class (walking DMA fields over origNents).
import assert from 'node:assert/strict';
import { afterEach, describe, it } from 'node:test';
import { Device, DmaDataDirection } from '../src/device.js';
import { BufferMemory, PAGE_SIZE } from '../src/dma-buf-memory.js';
import { dmaDebugReports, setDmaDebug } from '../src/dma-debug.js';
import { DMA_MAPPING_ERROR, SgTable } from '../src/scatterlist.js';
import { DmaBufError } from '../src/substrate/errno.js';

function errno(code: string): (e: unknown) => boolean {
  return (e) => e instanceof DmaBufError && e.code === code;
}

afterEach(() => {
  setDmaDebug(false);
});

describe('building tables', () => {
  it('merges physically contiguous pages into one entry', () => {
    const mem = BufferMemory.allocate(4 * PAGE_SIZE, { chunkSize: PAGE_SIZE });
    assert.equal(mem.chunks.length, 4);
    const sgt = SgTable.fromMemory(mem);
    assert.equal(sgt.origNents, 1);
    assert.equal(sgt.nents, 1);
    assert.equal(sgt.sgl[0]?.length, 4 * PAGE_SIZE);
  });

  it('keeps discontiguous pages apart', () => {
    const mem = BufferMemory.allocate(3 * PAGE_SIZE, { chunkSize: PAGE_SIZE, separate: true });
    const sgt = SgTable.fromMemory(mem);
    assert.equal(sgt.origNents, 3);
    const phys = [...sgt.cpuEntries()].map((e) => e.phys);
    assert.ok(phys[1]! > phys[0]! + PAGE_SIZE, 'separate backings are not adjacent');
  });

  it('splits at max_segment (rounded down to pages), refuses one below PAGE_SIZE', () => {
    const mem = BufferMemory.allocate(5 * PAGE_SIZE);
    const sgt = SgTable.fromPages(mem.pages(), 0, 5 * PAGE_SIZE, 2 * PAGE_SIZE + 100);
    assert.deepEqual(
      sgt.sgl.map((e) => e.length),
      [2 * PAGE_SIZE, 2 * PAGE_SIZE, PAGE_SIZE],
    );
    assert.throws(
      () => SgTable.fromPages(mem.pages(), 0, PAGE_SIZE, PAGE_SIZE - 1),
      errno('EINVAL'),
    );
  });

  it('applies offset to the first entry and size to the last', () => {
    const mem = BufferMemory.allocate(2 * PAGE_SIZE, { chunkSize: PAGE_SIZE, separate: true });
    const sgt = SgTable.fromPages(mem.pages(), 100, PAGE_SIZE, 0xffffffff);
    assert.deepEqual(
      sgt.sgl.map((e) => [e.offset, e.length]),
      [
        [100, PAGE_SIZE - 100],
        [0, 100],
      ],
    );
    assert.throws(() => SgTable.fromPages(mem.pages(), 0, 3 * PAGE_SIZE), errno('EINVAL'));
  });

  it('page iterator counts round-up pages per entry and honours pgoffset', () => {
    const mem = BufferMemory.allocate(3 * PAGE_SIZE, { chunkSize: PAGE_SIZE, separate: true });
    const sgt = SgTable.fromMemory(mem);
    const pages = [...sgt.pages()];
    assert.equal(pages.length, 3);
    assert.deepEqual(
      [...sgt.pages(1)].map((p) => p.page.phys),
      pages.slice(1).map((p) => p.page.phys),
    );
  });
});

describe('mapping for devices', () => {
  it('dma-direct: device addresses are physical, nents = origNents, no merging', () => {
    const dev = new Device({ name: 'direct' });
    const mem = BufferMemory.allocate(3 * PAGE_SIZE, { chunkSize: PAGE_SIZE, separate: true });
    const sgt = SgTable.fromMemory(mem);
    dev.mapSgtable(sgt, DmaDataDirection.BIDIRECTIONAL);
    assert.equal(sgt.nents, 3);
    for (const e of sgt.cpuEntries()) assert.equal(e.dmaAddress, e.phys);
    assert.equal(sgt.contiguousSize(), PAGE_SIZE);
    dev.unmapSgtable(sgt, DmaDataDirection.BIDIRECTIONAL);
    assert.equal(dev.mappedPages, 0);
  });

  it('IOMMU: 4 scattered pages become 1 DMA segment (seed 003), contiguous for the device', () => {
    const dev = new Device({ name: 'iommu', iommu: true });
    const mem = BufferMemory.allocate(4 * PAGE_SIZE, { chunkSize: PAGE_SIZE, separate: true });
    const sgt = SgTable.fromMemory(mem);
    assert.equal(sgt.origNents, 4);
    dev.mapSgtable(sgt, DmaDataDirection.TO_DEVICE);
    assert.equal(sgt.nents, 1);
    assert.equal(sgt.origNents, 4);
    assert.deepEqual(
      [...sgt.dmaSegments()].map((s) => s.length),
      [4 * PAGE_SIZE],
    );
    assert.equal(sgt.contiguousSize(), 4 * PAGE_SIZE);
    const addrs = sgt.dmaAddrArray(4);
    assert.ok(Array.isArray(addrs));
    assert.equal(sgt.dmaAddrArray(3), -1);
    // Entries past nents: DMA_MAPPING_ERROR, length 0.
    assert.equal(sgt.sgl[1]?.dmaAddress, DMA_MAPPING_ERROR);
    assert.equal(sgt.sgl[1]?.dmaLength, 0);
    dev.unmapSgtable(sgt, DmaDataDirection.TO_DEVICE);
    assert.equal(sgt.nents, 4);
    assert.equal(dev.mappedPages, 0);
  });

  it('IOMMU merging stops at maxSegmentSize', () => {
    const dev = new Device({ name: 'iommu', iommu: true, maxSegmentSize: 2 * PAGE_SIZE });
    const mem = BufferMemory.allocate(5 * PAGE_SIZE, { chunkSize: PAGE_SIZE, separate: true });
    const sgt = SgTable.fromMemory(mem);
    dev.mapSgtable(sgt, DmaDataDirection.BIDIRECTIONAL);
    assert.equal(sgt.nents, 3);
    assert.deepEqual(
      [...sgt.dmaSegments()].map((s) => s.length),
      [2 * PAGE_SIZE, 2 * PAGE_SIZE, PAGE_SIZE],
    );
    // Segments are still adjacent in IOVA space: the whole buffer is contiguous to the device.
    assert.equal(sgt.contiguousSize(), 5 * PAGE_SIZE);
    dev.unmapSgtable(sgt, DmaDataDirection.BIDIRECTIONAL);
  });

  it('refuses NONE / bad directions, double map, unmap with another direction', () => {
    const dev = new Device({ name: 'd' });
    const sgt = SgTable.fromMemory(BufferMemory.allocate(PAGE_SIZE));
    assert.throws(() => dev.mapSgtable(sgt, DmaDataDirection.NONE), errno('EINVAL'));
    assert.throws(() => dev.mapSgtable(sgt, 7 as DmaDataDirection), errno('EINVAL'));
    dev.mapSgtable(sgt, DmaDataDirection.TO_DEVICE);
    assert.throws(() => dev.mapSgtable(sgt, DmaDataDirection.TO_DEVICE), errno('EINVAL'));
    assert.throws(() => dev.unmapSgtable(sgt, DmaDataDirection.FROM_DEVICE), errno('EINVAL'));
    dev.unmapSgtable(sgt, DmaDataDirection.TO_DEVICE);
    assert.throws(() => dev.unmapSgtable(sgt, DmaDataDirection.TO_DEVICE), errno('EINVAL'));
    assert.throws(() => new Device({ name: 'x', maxSegmentSize: 100 }), errno('EINVAL'));
  });
});

describe('devices move data through device addresses', () => {
  function filled(pages: number): BufferMemory {
    const mem = BufferMemory.allocate(pages * PAGE_SIZE, { chunkSize: PAGE_SIZE, separate: true });
    mem.chunks.forEach((c, i) => {
      new Uint8Array(c.sab, c.offset, c.length).fill(i + 1);
    });
    return mem;
  }

  it('walking nents DMA segments reads the whole buffer (IOMMU and direct)', () => {
    for (const iommu of [true, false]) {
      const dev = new Device({ name: 'rd', iommu });
      const sgt = SgTable.fromMemory(filled(4));
      dev.mapSgtable(sgt, DmaDataDirection.BIDIRECTIONAL);
      const parts: number[] = [];
      for (const s of sgt.dmaSegments()) {
        const data = dev.dmaRead(s.address, s.length);
        for (let p = 0; p < data.length; p += PAGE_SIZE) parts.push(data[p]!);
      }
      assert.deepEqual(parts, [1, 2, 3, 4]);
      dev.unmapSgtable(sgt, DmaDataDirection.BIDIRECTIONAL);
    }
  });

  it('the seed 003 bug: walking origNents DMA entries faults on the IOMMU device', () => {
    const dev = new Device({ name: 'buggy', iommu: true });
    const sgt = SgTable.fromMemory(filled(4));
    dev.mapSgtable(sgt, DmaDataDirection.BIDIRECTIONAL);
    assert.throws(() => {
      for (let i = 0; i < sgt.origNents; i++) {
        const e = sgt.sgl[i]!;
        dev.dmaRead(e.dmaAddress, e.dmaLength || 1);
      }
    }, errno('EFAULT'));
    dev.unmapSgtable(sgt, DmaDataDirection.BIDIRECTIONAL);
  });

  it('the seed 003 bug: walking nents CPU entries misses pages (wrong data)', () => {
    const dev = new Device({ name: 'buggy', iommu: true });
    const sgt = SgTable.fromMemory(filled(4));
    dev.mapSgtable(sgt, DmaDataDirection.BIDIRECTIONAL);
    let bytes = 0;
    for (let i = 0; i < sgt.nents; i++) bytes += sgt.sgl[i]!.length;
    assert.equal(bytes, PAGE_SIZE, 'only the first of 4 pages');
    dev.unmapSgtable(sgt, DmaDataDirection.BIDIRECTIONAL);
  });

  it('the debug mode reports DMA fields read past nents', () => {
    setDmaDebug(true);
    const dev = new Device({ name: 'dbg', iommu: true });
    const sgt = SgTable.fromMemory(filled(2));
    dev.mapSgtable(sgt, DmaDataDirection.BIDIRECTIONAL);
    const before = dmaDebugReports();
    assert.throws(() => sgt.sgl[1]!.dmaAddress, /DMA-API/);
    assert.equal(dmaDebugReports(), before + 1);
    assert.equal(sgt.sgl[0]!.dmaLength, 2 * PAGE_SIZE);
    dev.unmapSgtable(sgt, DmaDataDirection.BIDIRECTIONAL);
  });

  it('the debug mode reports entries longer than the device supports', () => {
    setDmaDebug(true);
    const dev = new Device({ name: 'small', maxSegmentSize: PAGE_SIZE });
    const sgt = SgTable.fromMemory(BufferMemory.allocate(2 * PAGE_SIZE));
    assert.throws(() => dev.mapSgtable(sgt, DmaDataDirection.TO_DEVICE), /DMA-API/);
  });

  it('IOMMU permissions follow the direction; unmapped addresses fault', () => {
    const dev = new Device({ name: 'perm', iommu: true });
    const sgt = SgTable.fromMemory(filled(1));
    dev.mapSgtable(sgt, DmaDataDirection.TO_DEVICE);
    const a = sgt.sgl[0]!.dmaAddress;
    assert.equal(dev.dmaRead(a, 1)[0], 1);
    assert.throws(() => dev.dmaWrite(a, new Uint8Array([9])), errno('EFAULT'));
    dev.unmapSgtable(sgt, DmaDataDirection.TO_DEVICE);
    assert.throws(() => dev.dmaRead(a, 1), errno('EFAULT'));
    dev.mapSgtable(sgt, DmaDataDirection.FROM_DEVICE);
    const b = sgt.sgl[0]!.dmaAddress;
    dev.dmaWrite(b, new Uint8Array([42]));
    assert.equal(new Uint8Array(sgt.sgl[0]!.page.sab)[sgt.sgl[0]!.page.offset], 42);
    assert.throws(() => dev.dmaRead(b, 1), errno('EFAULT'));
    dev.unmapSgtable(sgt, DmaDataDirection.FROM_DEVICE);
  });
});
