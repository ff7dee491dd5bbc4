// Finding the dma-buf behind a user mapping (seed 002): DmaBuf.fromMapping resolves an mmap'ed
// address (a mapping, its view, or a typed array over it) to the buffer and page offset, so an
// importer of user memory can refuse it (or use the original buffer).
import assert from 'node:assert/strict';
import { afterEach, before, beforeEach, describe, it } from 'node:test';
import { DmaBuf, memoryExporterOps } from '../src/dma-buf.js';
import { BufferMemory, PAGE_SIZE } from '../src/dma-buf-memory.js';
import { DmaBufError } from '../src/substrate/errno.js';
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

function exportBuf(pages: number, separate = false): DmaBuf {
  return DmaBuf.export({
    ops: memoryExporterOps(),
    size: pages * PAGE_SIZE,
    memory: BufferMemory.allocate(pages * PAGE_SIZE, { chunkSize: PAGE_SIZE, separate }),
    expName: 'lookup-test',
    priv: {},
  });
}

/** What a userptr importer does with the lookup: refuse a dma-buf's own mapping. */
function importUserptr(addr: Uint8Array): Uint8Array {
  const hit = DmaBuf.fromMapping(addr);
  if (hit) {
    hit.buf.dispose();
    throw new DmaBufError('EINVAL', 'userptr range is a dma-buf mapping');
  }
  return addr;
}

describe('DmaBuf.fromMapping', () => {
  it('resolves mappings, views and typed arrays to the buffer and page offset', () => {
    const buf = exportBuf(4);
    const other = exportBuf(2, true);
    using m = buf.mmap({ pgoff: 1, length: 3 * PAGE_SIZE });
    using o = other.mmap();
    const refs = buf.refcount;
    const r1 = DmaBuf.fromMapping(m);
    assert.ok(r1);
    assert.equal(r1.buf.ino, buf.ino);
    assert.equal(r1.pgoff, 1);
    assert.equal(r1.offset, PAGE_SIZE);
    assert.equal(buf.refcount, refs + 1, 'a new reference');
    r1.buf.dispose();
    const r2 = DmaBuf.fromMapping(m.view, 2 * PAGE_SIZE + 7);
    assert.equal(r2?.pgoff, 3);
    assert.equal(r2?.offset, 3 * PAGE_SIZE + 7);
    r2?.buf.dispose();
    const u8 = m.u8.subarray(PAGE_SIZE + 5);
    const r3 = DmaBuf.fromMapping(u8, 1);
    assert.equal(r3?.pgoff, 2);
    assert.equal(r3?.offset, 2 * PAGE_SIZE + 6);
    r3?.buf.dispose();
    // A discontiguous mapping: the second piece resolves to the second page.
    const piece = o.chunks[1]!;
    const r4 = DmaBuf.fromMapping(new DataView(piece.buffer, piece.byteOffset + 3, 10));
    assert.equal(r4?.buf.ino, other.ino);
    assert.equal(r4?.offset, PAGE_SIZE + 3);
    r4?.buf.dispose();
    // The page before the mapping (same backing, not mapped) does not resolve.
    assert.equal(DmaBuf.fromMapping(new Uint8Array(u8.buffer, 0, 8)), null);
    assert.equal(buf.refcount, refs);
    assert.throws(() => DmaBuf.fromMapping(m, -1), errno('EINVAL'));
    assert.equal(DmaBuf.fromMapping(m, 3 * PAGE_SIZE), null);
    m.unmap();
    o.unmap();
    buf.dispose();
    other.dispose();
  });

  it('returns null for ordinary memory and for unmapped mappings', () => {
    assert.equal(DmaBuf.fromMapping(new Uint8Array(16)), null);
    assert.equal(DmaBuf.fromMapping(new Uint8Array(new SharedArrayBuffer(16))), null);
    const buf = exportBuf(1);
    const m = buf.mmap();
    const u8 = m.u8;
    assert.throws(() => importUserptr(u8), errno('EINVAL'));
    m.unmap();
    assert.equal(DmaBuf.fromMapping(u8), null);
    assert.equal(DmaBuf.fromMapping(m), null);
    assert.equal(importUserptr(u8), u8);
    buf.dispose();
  });

  it('keeps the buffer alive through the returned reference', () => {
    const buf = exportBuf(1);
    const m = buf.mmap();
    m.set(0, 9);
    const hit = DmaBuf.fromMapping(m.u8);
    assert.ok(hit);
    m.unmap();
    buf.dispose();
    assert.equal(hit.buf.size, PAGE_SIZE);
    using m2 = hit.buf.mmap();
    assert.equal(m2.get(0), 9);
    m2.unmap();
    hit.buf.dispose();
  });
});
