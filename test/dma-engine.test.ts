// The DMA engine device: a worker that moves data through sg tables' device addresses only and
// signals a fence; implicit sync through the reservation object; the nents / orig_nents driver
// bug (seed 003); and a buffer filled by an engine in one thread, read through mmap in another,
// released in a third.
import assert from 'node:assert/strict';
import { afterEach, before, beforeEach, describe, it } from 'node:test';
import { DmaDataDirection } from '../src/device.js';
import { DmaEngine } from '../src/devices/dma-engine.js';
import type { DmaBuf, DmaBufMessage } from '../src/dma-buf.js';
import { PAGE_SIZE } from '../src/dma-buf-memory.js';
import { setDmaDebug } from '../src/dma-debug.js';
import { DmaResvUsage } from '../src/dma-resv.js';
import { exportPages } from './buffers.js';
import { RpcAgent } from './worker-rpc.js';
import { counters } from './workers/dmabuf-exporter.js';
import { assertNoLeak, baseline, errno, live } from './workers/sync-client.js';

const { BIDIRECTIONAL, FROM_DEVICE } = DmaDataDirection;

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
  return exportPages(pages, 'engine-test', separate);
}

describe('DmaEngine', () => {
  it('fills and copies through device addresses and signals its fence', async () => {
    for (const iommu of [true, false]) {
      const engine = await DmaEngine.start({ name: 'copy-engine', iommu });
      try {
        const src = exportBuf(3);
        const dst = exportBuf(3, false);
        const sa = src.attach(engine.device);
        const da = dst.attach(engine.device);
        const st = sa.mapUnlocked(BIDIRECTIONAL);
        const dt = da.mapUnlocked(FROM_DEVICE);
        assert.equal(st.nents, iommu ? 1 : 3, 'an IOMMU merges the discontiguous pages');
        const fill = engine.fill(st, [1, 2, 3], { dstResv: src.resv });
        // The fence is in the resv as a WRITE fence: a CPU reader waits for it.
        await src.beginCpuAccess(FROM_DEVICE);
        assert.ok(fill.fence.isSignaled());
        await fill.done;
        const copy = engine.copy(st, dt, {
          length: 2 * PAGE_SIZE + 10,
          srcResv: src.resv,
          dstResv: dst.resv,
        });
        await dst.resv.wait(DmaResvUsage.WRITE);
        await copy.done;
        assert.equal(copy.fence.getStatus(), 1);
        using m = dst.mmap();
        const got = m.slice();
        for (let i = 0; i < got.length; i++) {
          assert.equal(got[i], i < 2 * PAGE_SIZE + 10 ? [1, 2, 3][i % 3] : 0, `byte ${i}`);
        }
        // Behind an IOMMU the engine cannot read through a FROM_DEVICE mapping.
        const denied = engine.copy(dt, st);
        if (iommu) await assert.rejects(denied.done, errno('EFAULT'));
        else await denied.done;
        // Tables not mapped for the engine are refused.
        assert.throws(() => engine.fill(dt, 0, { length: -5 }), errno('EINVAL'));
        for (const j of [fill, copy, denied]) j.fence.dispose();
        sa.unmapUnlocked(st, BIDIRECTIONAL);
        da.unmapUnlocked(dt, FROM_DEVICE);
        src.detach(sa);
        dst.detach(da);
        m.unmap();
        src.dispose();
        dst.dispose();
        assert.equal(engine.device.mappedPages, 0);
      } finally {
        await engine.close();
      }
    }
    await DmaEngine.start({ name: 'closed' }).then(async (e) => {
      await e.close();
      const t = exportBuf(1);
      const a = t.attach(e.device);
      const sgt = a.mapUnlocked(FROM_DEVICE);
      assert.throws(() => e.fill(sgt, 0), errno('ENODEV'));
      a.unmapUnlocked(sgt, FROM_DEVICE);
      t.detach(a);
      t.dispose();
    });
  });

  it('a driver walking orig_nents with DMA addresses faults; debug mode reports the walk', async () => {
    const engine = await DmaEngine.start({ name: 'buggy', iommu: true });
    try {
      const buf = exportBuf(4);
      const a = buf.attach(engine.device);
      const sgt = a.mapUnlocked(FROM_DEVICE);
      assert.equal(sgt.nents, 1);
      assert.equal(sgt.origNents, 4);
      const bad = engine.fill(sgt, 0xee, { walk: 'origNents' });
      await assert.rejects(bad.done, errno('EFAULT'));
      assert.equal(bad.fence.getStatus(), -14);
      bad.fence.dispose();
      // It wrote the first page (entry 0's address with its CPU length), then faulted.
      using m = buf.mmap();
      assert.equal(m.get(0), 0xee);
      assert.equal(m.get(PAGE_SIZE), 0, 'the rest of the buffer holds wrong (old) data');
      setDmaDebug(true);
      assert.throws(
        () => engine.fill(sgt, 0xee, { walk: 'origNents' }),
        (e: unknown) => e instanceof Error && e.message.includes('DMA-API:'),
      );
      const good = engine.fill(sgt, 0xee);
      await good.done;
      good.fence.dispose();
      setDmaDebug(false);
      assert.ok(m.slice().every((b) => b === 0xee));
      a.unmapUnlocked(sgt, FROM_DEVICE);
      buf.detach(a);
      m.unmap();
      buf.dispose();
    } finally {
      await engine.close();
    }
  });
});

const agentScript = new URL('./workers/engine-agent.js', import.meta.url);

describe('across threads', () => {
  it('filled by a device in one thread, read through mmap in another, released in a third', async () => {
    const agents = [
      new RpcAgent(agentScript),
      new RpcAgent(agentScript),
      new RpcAgent(agentScript),
    ];
    const [filler, reader, releaser] = agents as [RpcAgent, RpcAgent, RpcAgent];
    try {
      const ids = await Promise.all(agents.map((a) => a.ready));
      const released = Atomics.load(counters, 0);
      const f = await filler.call<{
        status: number;
        nents: number;
        origNents: number;
        msg: DmaBufMessage;
      }>('fill', { pages: 5, pattern: [9, 8, 7, 6] });
      assert.equal(f.status, 1);
      assert.equal(f.nents, 1);
      assert.equal(f.origNents, 5);
      const r = await reader.call<{ bytes: Uint8Array; msg: DmaBufMessage }>('read', {
        msg: f.msg,
      });
      assert.equal(r.bytes.length, 5 * PAGE_SIZE);
      for (let i = 0; i < r.bytes.length; i++) {
        if (r.bytes[i] !== [9, 8, 7, 6][i % 4]) assert.fail(`byte ${i} is ${r.bytes[i]}`);
      }
      const x = await releaser.call<{ refs: number; threadId: number }>('release', { msg: r.msg });
      assert.equal(x.refs, 1, 'the third thread holds the last reference');
      assert.equal(Atomics.load(counters, 0), released + 1);
      assert.equal(Atomics.load(counters, 1), ids[2], 'released in the third thread');
    } finally {
      await Promise.all(agents.map((a) => a.stop()));
    }
  });
});
