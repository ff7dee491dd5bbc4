// The multi-worker pipeline: a buffer allocated from a heap in one thread, filled by the
// DMA engine device in a second (a non-coherent engine behind an IOMMU, whose mapping stays live),
// read through mmap inside DMA_BUF_SYNC brackets in a third, released in a fourth; heap accounting
// back at zero and no live shared record at the end. SYNC in the reader's thread syncs the device
// mapping made in the filler's thread, both ways (START: device writes reach the CPU; END: CPU
// writes reach the device; CPU writes not told with END stay unseen by the device).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { DmaBufMessage } from '../src/dma-buf.js';
import { PAGE_SIZE } from '../src/dma-buf-memory.js';
import type { DmaHeap } from '../src/dma-heap.js';
import { createSystemHeap } from '../src/heaps/system-heap.js';
import { RpcAgent } from './worker-rpc.js';
import { assertNoLeak, baseline } from './workers/sync-client.js';

const agentScript = new URL('./workers/pipeline-agent.js', import.meta.url);

const PATTERN = [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77];
const LEN = (1 << 20) + 65536 + 3 * PAGE_SIZE - 100; // 1 MiB + 64 KiB + 3 pages after PAGE_ALIGN

function assertPattern(bytes: Uint8Array, what: string): void {
  for (let i = 0; i < bytes.length; i++) {
    if (bytes[i] !== PATTERN[i % PATTERN.length]) assert.fail(`${what}: byte ${i} is ${bytes[i]}`);
  }
}

describe('dma-buf pipeline across four threads', () => {
  let start = 0;
  let heap: DmaHeap;
  let agents: RpcAgent[] = [];
  before(async () => {
    start = baseline();
    heap = createSystemHeap({ name: 'pipeline-system', capacity: 8 << 20 });
    agents = [
      new RpcAgent(agentScript),
      new RpcAgent(agentScript),
      new RpcAgent(agentScript),
      new RpcAgent(agentScript),
    ];
    await Promise.all(agents.map((a) => a.ready));
  });
  after(async () => {
    await Promise.all(agents.map((a) => a.stop()));
    heap.remove();
    heap.dispose();
    await assertNoLeak(start);
  });

  it('heap alloc (1) → DMA engine fill (2) → mmap read with SYNC (3) → release (4)', async () => {
    const [t1, t2, t3, t4] = agents as [RpcAgent, RpcAgent, RpcAgent, RpcAgent];
    const ids = await Promise.all(agents.map((a) => a.ready));
    assert.equal(new Set(ids).size, 4);

    // 1: allocate from the heap (shared to that thread).
    const al = await t1.call<{ msg: DmaBufMessage; size: number; expName: string }>('alloc', {
      heap: heap.share(),
      len: LEN,
    });
    const size = (1 << 20) + 65536 + 3 * PAGE_SIZE;
    assert.equal(al.size, size);
    assert.equal(al.expName, 'pipeline-system');
    assert.deepEqual([heap.stats().bytes, heap.stats().buffers], [size, 1]);

    // 2: the engine fills it through the device addresses of its table; the mapping stays.
    const f = await t2.call<{
      status: number;
      nents: number;
      origNents: number;
      msg: DmaBufMessage;
    }>('fill', { msg: al.msg, pattern: PATTERN });
    assert.equal(f.status, 1, 'the job fence signalled without error');
    // Fresh heap: the 1 MiB, 64 KiB and 4 KiB chunks are physically adjacent (one CPU entry).
    assert.ok(f.origNents >= 1 && f.origNents <= 3);
    assert.ok(f.nents >= 1 && f.nents <= f.origNents);

    // 3: read through mmap; the device's writes appear only after SYNC_START.
    const r = await t3.call<{
      ncMappings: number;
      before: Uint8Array;
      reported: string;
      bytes: Uint8Array;
      msg: DmaBufMessage;
    }>('read', { msg: f.msg });
    assert.match(r.reported, /DMA-API:/, 'debug mode reports CPU access to device-owned pages');
    assert.equal(r.ncMappings, 1, 'the reader sees the filler thread`s live device mapping');
    assert.ok(
      r.before.every((b) => b === 0),
      'before SYNC_START the CPU sees memory, not the device copy',
    );
    assert.equal(r.bytes.length, size);
    assertPattern(r.bytes, 'after SYNC_START');

    // The reader's END|WRITE reached the engine's copy; its write after END did not.
    const seen = await t2.call<Uint8Array>('copy-out', { length: 8 });
    assert.deepEqual([...seen], [1, 2, 3, 4, PATTERN[4], PATTERN[5], PATTERN[6], PATTERN[0]]);
    const td = await t2.call<{ left: number; mappedPages: number; cached: number }>('teardown');
    assert.deepEqual(td, { left: 0, mappedPages: 0, cached: 0 });

    // 4: the last reference goes in the fourth thread: release runs there, memory goes back.
    const x = await t4.call<{
      refs: number;
      ncMappings: number;
      bytes: number;
      buffers: number;
      threadId: number;
    }>('release', { msg: r.msg, heap: heap.share() });
    assert.equal(x.refs, 1, 'the fourth thread holds the last reference');
    assert.equal(x.ncMappings, 0);
    assert.deepEqual([x.bytes, x.buffers], [0, 0], 'accounting at zero right after release');
    assert.deepEqual([heap.stats().bytes, heap.stats().buffers], [0, 0]);
  });

  it('SYNC_START in a thread that got the buffer before the device mapping existed', async () => {
    const [t1, t2, t3, t4] = agents as [RpcAgent, RpcAgent, RpcAgent, RpcAgent];
    const al = await t1.call<{ msg: DmaBufMessage }>('alloc', {
      heap: heap.share(),
      len: 5 * 4096,
    });
    const second = await t3.call<DmaBufMessage>('hold', { msg: al.msg });
    const f = await t2.call<{ status: number; msg: DmaBufMessage }>('fill', {
      msg: second,
      pattern: PATTERN,
    });
    assert.equal(f.status, 1);
    const r = await t3.call<{ before: Uint8Array; bytes: Uint8Array }>('read-held');
    assert.ok(r.before.every((b) => b === 0));
    assertPattern(r.bytes, 'after SYNC_START');
    await t2.call('teardown');
    const x = await t4.call<{ refs: number; bytes: number }>('release', {
      msg: f.msg,
      heap: heap.share(),
    });
    assert.equal(x.refs, 1);
    assert.equal(x.bytes, 0);
    assert.equal(heap.stats().buffers, 0);
  });
});
