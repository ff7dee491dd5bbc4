// System heap: chunk orders (1 MiB, 64 KiB, 4 KiB, never increasing), pooling of freed chunks,
// zeroing of pooled chunks before reuse, reclaim of the pools under pressure, ENOMEM, and
// accounting back at zero.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { DmaBuf } from '../src/dma-buf.js';
import type { DmaHeap } from '../src/dma-heap.js';
import { createSystemHeap } from '../src/heaps/system-heap.js';
import { assertNoLeak, baseline, errno } from './workers/sync-client.js';

const K = 4096;
const M = 1 << 20;

function sizes(b: DmaBuf): number[] {
  return b.memory.chunks.map((c) => c.length);
}

describe('system heap', () => {
  let start = 0;
  let h: DmaHeap;
  before(() => {
    start = baseline();
    h = createSystemHeap({ name: 's-system', capacity: 4 * M });
  });
  after(async () => {
    const s = h.stats();
    assert.deepEqual([s.bytes, s.buffers], [0, 0]);
    h.remove();
    h.dispose();
    await assertNoLeak(start);
  });

  it('builds buffers from the largest orders first', () => {
    const b = h.allocate(M + 2 * 65536 + 3 * K + 1);
    assert.deepEqual(sizes(b), [M, 65536, 65536, K, K, K, K]);
    for (const c of b.memory.chunks)
      assert.equal(c.phys % c.length, 0, 'chunk aligned to its size');
    assert.equal(h.stats().bytes, b.size);
    b.dispose();
    const small = h.allocate(65536 - K);
    assert.deepEqual(sizes(small), Array(15).fill(K));
    small.dispose();
  });

  it('pools freed chunks and zeroes them before reuse', () => {
    const a = h.allocate(M);
    const phys = a.memory.chunks[0]!.phys;
    const m = a.mmap();
    m.u8.fill(0xee);
    // A stale typed array kept past free (a view cannot be revoked).
    const stale = m.u8;
    m.unmap();
    a.dispose();
    assert.equal(h.stats().pooledBytes >= M, true);
    stale.fill(0x77); // written after free, while pooled
    const b = h.allocate(M);
    assert.equal(b.memory.chunks[0]!.phys, phys, 'the pooled chunk is reused');
    const v = b.mmap();
    assert.ok(
      v.slice().every((x) => x === 0),
      'reused memory is zeroed',
    );
    v.unmap();
    b.dispose();
  });

  it('chunk sizes never increase; falls back to smaller orders when fragmented', () => {
    // Fill the heap with 4 KiB buffers, free every other one: no 64 KiB or 1 MiB run is left.
    const all: DmaBuf[] = [];
    for (let i = 0; i < (4 * M) / K; i++) all.push(h.allocate(K));
    assert.throws(() => h.allocate(K), errno('ENOMEM'));
    for (let i = 0; i < all.length; i += 2) all[i]!.dispose();
    const b = h.allocate(M); // from pooled 4 KiB chunks
    assert.ok(sizes(b).every((s) => s === K));
    assert.equal(sizes(b).length, 256);
    b.dispose();
    for (let i = 1; i < all.length; i += 2) all[i]!.dispose();
    // Pools drained back to the bitmap when larger orders are needed.
    const big = h.allocate(4 * M);
    assert.deepEqual(sizes(big), [M, M, M, M]);
    big.dispose();
  });

  it('ENOMEM frees what it took', () => {
    const a = h.allocate(3 * M);
    const before = h.stats();
    assert.throws(() => h.allocate(2 * M), errno('ENOMEM'));
    assert.equal(h.stats().bytes, before.bytes);
    a.dispose();
    const b = h.allocate(4 * M);
    b.dispose();
  });
});
