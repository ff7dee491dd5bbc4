// CMA heap: one physically contiguous chunk per buffer, aligned to min(order, 8), first fit,
// ENOMEM when exhausted or fragmented (no fallback), zeroed on allocate, accounting at zero.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { DmaBuf } from '../src/dma-buf.js';
import type { DmaHeap } from '../src/dma-heap.js';
import { createCmaHeap, getOrder } from '../src/heaps/cma-heap.js';
import { assertNoLeak, baseline, errno } from './workers/sync-client.js';

const K = 4096;
const M = 1 << 20;

describe('CMA heap', () => {
  let start = 0;
  let h: DmaHeap;
  before(() => {
    start = baseline();
    h = createCmaHeap({ name: 'c-reserved', capacity: 4 * M });
  });
  after(async () => {
    const s = h.stats();
    assert.deepEqual([s.bytes, s.buffers, s.usedBytes], [0, 0, 0]);
    h.remove();
    h.dispose();
    await assertNoLeak(start);
  });

  it('get_order', () => {
    assert.deepEqual([getOrder(1), getOrder(K), getOrder(K + 1), getOrder(M)], [0, 0, 1, 8]);
  });

  it('hands out one contiguous, aligned chunk', () => {
    const a = h.allocate(3 * K);
    assert.equal(a.memory.chunks.length, 1);
    assert.equal(a.memory.chunks[0]!.phys % (4 * K), 0);
    const b = h.allocate(2 * M + K);
    assert.equal(b.memory.chunks.length, 1);
    assert.equal(b.memory.chunks[0]!.phys % M, 0, 'aligned to 1 MiB (CONFIG_CMA_ALIGNMENT 8)');
    const m = b.mmap();
    assert.equal(m.view.contiguous, true);
    m.unmap();
    for (const x of [a, b]) x.dispose();
  });

  it('ENOMEM when exhausted or fragmented; freed ranges return', () => {
    const bufs: DmaBuf[] = [];
    for (let i = 0; i < 4; i++) bufs.push(h.allocate(M));
    assert.throws(() => h.allocate(K), errno('ENOMEM'));
    bufs[1]!.dispose();
    bufs[3]!.dispose();
    // 2 MiB free, but not contiguous.
    assert.throws(() => h.allocate(2 * M), errno('ENOMEM'));
    const one = h.allocate(M);
    one.dispose();
    bufs[0]!.dispose();
    bufs[2]!.dispose();
    const all = h.allocate(4 * M);
    all.dispose();
    assert.throws(() => h.allocate(1 << 30), errno('ENOMEM'));
  });

  it('zeroes reused memory', () => {
    const a = h.allocate(64 * K);
    const m = a.mmap();
    m.u8.fill(0x33);
    m.unmap();
    const phys = a.memory.chunks[0]!.phys;
    a.dispose();
    const b = h.allocate(64 * K);
    assert.equal(b.memory.chunks[0]!.phys, phys);
    const v = b.mmap();
    assert.ok(v.slice().every((x) => x === 0));
    v.unmap();
    b.dispose();
  });
});
