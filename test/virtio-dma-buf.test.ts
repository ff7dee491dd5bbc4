// virtio dma-bufs (virtio_dma_buf.c; seed 003): export checks, is_virtio_dma_buf by ops
// identity, get_uuid, and the virtio-gpu UUID round trip: assignment queued at export, get_uuid
// waiting for it, ENODEV without the feature, and a device in another thread resolving the UUID
// back to the same buffer (both ways).
import assert from 'node:assert/strict';
import { afterEach, before, beforeEach, describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';
import { Device } from '../src/device.js';
import {
  DmaBuf,
  type DmaBufAttachment,
  dmaBufMapMemory,
  dmaBufUnmapMemory,
} from '../src/dma-buf.js';
import { BufferMemory } from '../src/dma-buf-memory.js';
import {
  isVirtioDmaBuf,
  type VirtioDmaBufOps,
  VirtioGpuDevice,
  VirtioHost,
  VirtioUuidState,
  virtioDmaBufAttach,
  virtioDmaBufExport,
  virtioDmaBufGetUuid,
  virtioGpuUuidState,
} from '../src/virtio-dma-buf.js';
import { inbox } from './worker-rpc.js';
import { REGISTERED, registeredOps } from './workers/dmabuf-exporter.js';
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

function ops(extra: Partial<VirtioDmaBufOps> = {}): VirtioDmaBufOps {
  return {
    attach: virtioDmaBufAttach,
    map: dmaBufMapMemory,
    unmap: dmaBufUnmapMemory,
    release() {},
    getUuid: async () => '12345678-1234-1234-1234-123456789abc',
    ...extra,
  };
}

function exp(o: VirtioDmaBufOps): DmaBuf {
  return virtioDmaBufExport({ ops: o, size: 4096, memory: BufferMemory.allocate(4096), priv: {} });
}

describe('virtio_dma_buf', () => {
  it('export refuses ops without virtioDmaBufAttach or getUuid (EINVAL)', () => {
    assert.throws(() => exp(null as unknown as VirtioDmaBufOps), errno('EINVAL'));
    assert.throws(() => exp(ops({ attach: () => {} })), errno('EINVAL'));
    assert.throws(() => exp(ops({ attach: undefined })), errno('EINVAL'));
    assert.throws(
      () => exp(ops({ getUuid: undefined as unknown as VirtioDmaBufOps['getUuid'] })),
      errno('EINVAL'),
    );
  });

  it('is decided by the attach op identity; get_uuid of a non-virtio buffer is EINVAL', async () => {
    using v = exp(ops());
    assert.equal(isVirtioDmaBuf(v), true);
    assert.equal(await virtioDmaBufGetUuid(v), '12345678-1234-1234-1234-123456789abc');
    // Same shape, another attach function, exported directly: not virtio.
    const fake = { ...ops(), attach: (b: DmaBuf, a: DmaBufAttachment) => virtioDmaBufAttach(b, a) };
    using f = DmaBuf.export({
      ops: fake,
      size: 4096,
      memory: BufferMemory.allocate(4096),
      priv: {},
    });
    assert.equal(isVirtioDmaBuf(f), false);
    await assert.rejects(virtioDmaBufGetUuid(f), errno('EINVAL'));
    using plain = DmaBuf.export({
      ops: registeredOps,
      size: 4096,
      memory: BufferMemory.allocate(4096),
      expName: REGISTERED,
      priv: {},
    });
    assert.equal(isVirtioDmaBuf(plain), false);
  });

  it('virtioDmaBufAttach calls deviceAttach and returns its error', () => {
    let calls = 0;
    using v = exp(
      ops({
        deviceAttach: () => {
          if (++calls === 2) throw new Error('refused');
        },
      }),
    );
    const dev = new Device({ name: 'virtio0' });
    const a = v.attach(dev);
    assert.equal(calls, 1);
    assert.throws(() => v.attach(dev), /refused/);
    assert.equal(v.attachmentCount, 1);
    v.detach(a);
  });
});

describe('virtio-gpu UUIDs', () => {
  it('assignment is queued at export; get_uuid waits for it', async () => {
    const host = new VirtioHost({ latencyMs: 20 });
    const dev = new VirtioGpuDevice(host.connect());
    try {
      using buf = dev.export(8192);
      assert.equal(buf.expName, 'virtio-gpu');
      assert.equal(isVirtioDmaBuf(buf), true);
      assert.equal(virtioGpuUuidState(buf), VirtioUuidState.INITIALIZING, 'export does not wait');
      const uuid = await virtioDmaBufGetUuid(buf);
      assert.match(uuid, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
      assert.equal(virtioGpuUuidState(buf), VirtioUuidState.OK);
      assert.equal(await virtioDmaBufGetUuid(buf), uuid, 'stable');
      using same = await dev.importByUuid(uuid);
      assert.equal(same.ino, buf.ino, 'the UUID resolves to the same buffer');
      await assert.rejects(dev.importByUuid(randomish()), errno('ENOENT'));
    } finally {
      dev.close();
      host.close();
    }
  });

  it('without RESOURCE_ASSIGN_UUID get_uuid is ENODEV; a released buffer no longer resolves', async () => {
    const host = new VirtioHost();
    const noFeature = new VirtioGpuDevice(host.connect(), { assignUuid: false });
    const dev = new VirtioGpuDevice(host.connect());
    try {
      using buf = noFeature.export(4096);
      assert.equal(virtioGpuUuidState(buf), VirtioUuidState.ERR);
      await assert.rejects(virtioDmaBufGetUuid(buf), errno('ENODEV'));
      const b2 = dev.export(4096);
      const uuid = await virtioDmaBufGetUuid(b2);
      b2.dispose();
      await assert.rejects(dev.importByUuid(uuid), errno('ENOENT'));
      assert.throws(() => dev.export(0), errno('EINVAL'));
    } finally {
      noFeature.close();
      dev.close();
      host.close();
    }
  });

  it('a device in another thread resolves the UUID to the same buffer, and back', async () => {
    const host = new VirtioHost({ latencyMs: 5 });
    const dev = new VirtioGpuDevice(host.connect());
    const worker = new Worker(new URL('./workers/prime-virtio.js', import.meta.url));
    const next = inbox(worker);
    try {
      await next('ready');
      const ch = host.connect();
      worker.postMessage({ op: 'connect', channel: ch }, [ch.port]);
      await next('connected');
      using buf = dev.export(4096);
      {
        using m = buf.mmap();
        m.set(0, 0x77);
      }
      const uuid = await virtioDmaBufGetUuid(buf);
      worker.postMessage({ op: 'resolve', uuid });
      const r = await next('resolved');
      assert.equal(r.ino, buf.ino);
      assert.equal(r.virtio, true);
      assert.equal(r.uuid, uuid);
      assert.equal(r.byte, 0x77);
      using theirs = await dev.importByUuid(String(r.myUuid));
      assert.equal(theirs.ino, r.myIno, 'the worker buffer resolves here too');
      assert.equal(await virtioDmaBufGetUuid(theirs), r.myUuid);
      worker.postMessage({ op: 'unknown' });
      assert.equal((await next('unknown')).code, 'ENOENT');
      worker.postMessage({ op: 'finish' });
      await next('done');
    } finally {
      await worker.terminate();
      dev.close();
      host.close();
    }
  });
});

function randomish(): string {
  return 'ffffffff-ffff-4fff-8fff-ffffffffffff';
}
