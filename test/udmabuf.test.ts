// udmabuf (ports of the no-hardware cases of the udmabuf selftest) and pin accounting: seals,
// alignment, limits, the list form, EBADFD, aliasing with the memfd, pinning only the imported
// range against a memlock-like limit, unpinning at release, all-or-nothing failures.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { DmaBuf, MAP_PRIVATE, MAP_SHARED, PROT_READ, SEEK_END } from '../src/dma-buf.js';
import { createSystemHeap } from '../src/heaps/system-heap.js';
import {
  F_SEAL_FUTURE_WRITE,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  F_SEAL_WRITE,
  MemFd,
} from '../src/memfd.js';
import {
  PinAccount,
  UDMABUF_CREATE,
  UDMABUF_CREATE_LIST,
  udmabufCreate,
  udmabufCreateList,
  udmabufIoctl,
  udmabufParams,
} from '../src/udmabuf.js';
import { assertNoLeak, baseline, errno } from './workers/sync-client.js';

const K = 4096;

function sealed(size: number): MemFd {
  const m = MemFd.create(size);
  m.addSeals(F_SEAL_SHRINK);
  return m;
}

describe('memfd seals', () => {
  it('follow fcntl rules', () => {
    const m = MemFd.create(4 * K, { capacity: 8 * K });
    m.truncate(8 * K);
    m.truncate(4 * K);
    assert.throws(() => m.truncate(16 * K), errno('ENOSPC'));
    assert.throws(() => m.addSeals(0x100), errno('EINVAL'));
    m.addSeals(F_SEAL_SHRINK | F_SEAL_GROW);
    assert.throws(() => m.truncate(K), errno('EPERM'));
    assert.throws(() => m.truncate(8 * K), errno('EPERM'));
    m.addSeals(F_SEAL_SEAL);
    assert.throws(() => m.addSeals(F_SEAL_WRITE), errno('EPERM'));
    const n = MemFd.create(K, { allowSealing: false });
    assert.equal(n.seals, F_SEAL_SEAL);
    const w = MemFd.create(K);
    w.addSeals(F_SEAL_FUTURE_WRITE);
    assert.throws(() => w.write(0, new Uint8Array(1)), errno('EPERM'));
  });
});

describe('udmabuf', () => {
  let start = 0;
  let acct: PinAccount;
  before(() => {
    start = baseline();
    acct = PinAccount.create({ limit: 64 * K });
  });
  after(async () => {
    assert.equal(acct.pinnedBytes, 0);
    acct.dispose();
    await assertNoLeak(start);
  });

  it('validates in the kernel order', () => {
    const opts = { account: acct };
    const plain = MemFd.create(16 * K);
    assert.throws(
      () => udmabufCreate({ memfd: plain, offset: 0, size: 4 * K }, opts),
      errno('EINVAL'),
    );
    plain.addSeals(F_SEAL_SHRINK);
    // Alignment before the memfd is even looked at.
    assert.throws(() => udmabufCreate({ memfd: 'x', offset: 1, size: K }, opts), errno('EINVAL'));
    assert.throws(
      () => udmabufCreate({ memfd: 'x', offset: 0, size: K + 1 }, opts),
      errno('EINVAL'),
    );
    assert.throws(() => udmabufCreate({ memfd: plain, offset: 0, size: 0 }, opts), errno('EINVAL'));
    // Not a memfd → EBADFD (77).
    assert.throws(
      () => udmabufCreate({ memfd: {}, offset: 0, size: K }, opts),
      (e: unknown) =>
        (e as { code: string; errno: number }).code === 'EBADFD' &&
        (e as { errno: number }).errno === 77,
    );
    // Past the end.
    assert.throws(
      () => udmabufCreate({ memfd: plain, offset: 0, size: 32 * K }, opts),
      errno('EINVAL'),
    );
    // Write seals refused, no-sealing memfd refused.
    const ws = sealed(K);
    ws.addSeals(F_SEAL_WRITE);
    assert.throws(() => udmabufCreate({ memfd: ws, offset: 0, size: K }, opts), errno('EINVAL'));
    const fw = sealed(K);
    fw.addSeals(F_SEAL_FUTURE_WRITE);
    assert.throws(() => udmabufCreate({ memfd: fw, offset: 0, size: K }, opts), errno('EINVAL'));
    const ns = MemFd.create(K, { allowSealing: false });
    assert.throws(() => udmabufCreate({ memfd: ns, offset: 0, size: K }, opts), errno('EINVAL'));
    // Unknown ioctl → ENOTTY; bad flags are ignored.
    assert.throws(
      () => udmabufIoctl(0x1234, { memfd: plain, offset: 0, size: K }),
      errno('ENOTTY'),
    );
    const b = udmabufIoctl(
      UDMABUF_CREATE,
      { memfd: plain, offset: 0, size: 4 * K, flags: 0xff },
      opts,
    );
    assert.equal(b.llseek(0, SEEK_END), 16384);
    assert.equal(b.expName, 'udmabuf');
    assert.equal(acct.pinnedBytes, 4 * K);
    assert.throws(() => b.mmap({ flags: MAP_PRIVATE, prot: PROT_READ }), errno('EINVAL'));
    b.dispose();
    assert.equal(acct.pinnedBytes, 0);
    assert.equal(plain.pinnedPages, 0);
  });

  it('aliases the memfd; shrink refused; write seal EBUSY while pinned', () => {
    const m = sealed(8 * K);
    const b = udmabufCreate({ memfd: m, offset: 4 * K, size: 4 * K }, { account: acct });
    assert.equal(m.pinnedPages, 4, 'only the imported range is pinned');
    const map = b.mmap();
    map.set(0, 0xa5);
    assert.equal(m.read(4 * K, 1)[0], 0xa5);
    m.write(4 * K + 1, new Uint8Array([7]));
    assert.equal(map.get(1), 7);
    map.unmap();
    assert.throws(() => m.truncate(K), errno('EPERM'));
    assert.throws(() => m.addSeals(F_SEAL_WRITE), errno('EBUSY'));
    b.dispose();
    assert.equal(m.pinnedPages, 0);
    m.addSeals(F_SEAL_WRITE);
  });

  it('list form, list limit and size limit (equal is allowed)', () => {
    const m = sealed(16 * K);
    const b = udmabufCreateList(
      {
        list: [
          { memfd: m, offset: 0, size: K },
          { memfd: m, offset: 0, size: 2 * K },
        ],
      },
      { account: acct },
    );
    assert.equal(b.size, 3 * K);
    assert.equal(m.pinnedPages, 3, 'overlapping ranges pin twice');
    b.dispose();
    assert.throws(() => udmabufCreateList({ list: [] }), errno('EINVAL'));
    const saved = { ...udmabufParams };
    try {
      udmabufParams.listLimit = 2;
      const item = { memfd: m, offset: 0, size: K };
      assert.throws(
        () => udmabufCreateList({ list: [item, item, item] }, { account: acct }),
        errno('EINVAL'),
      );
      udmabufCreateList({ list: [item, item] }, { account: acct }).dispose();
      udmabufParams.sizeLimitMb = 0;
      assert.throws(() => udmabufCreate(item, { account: acct }), errno('EINVAL'));
    } finally {
      Object.assign(udmabufParams, saved);
    }
    const big = MemFd.create(64 << 20);
    big.addSeals(F_SEAL_SHRINK);
    const cap = PinAccount.create({ limit: 0, capIpcLock: true });
    const full = udmabufIoctl(
      UDMABUF_CREATE_LIST,
      { list: [{ memfd: big, offset: 0, size: 64 << 20 }] },
      { account: cap },
    );
    assert.equal(cap.pinnedBytes, 64 << 20, 'CAP_IPC_LOCK bypasses the check but counts');
    full.dispose();
    assert.throws(
      () => udmabufCreate({ memfd: big, offset: 0, size: (64 << 20) + K }, { account: cap }),
      errno('EINVAL'),
    );
    cap.dispose();
  });

  it('memlock: ENOMEM past the limit (equal is fine), all-or-nothing, EPERM at limit 0', () => {
    const m = sealed(32 * K);
    const a = udmabufCreate({ memfd: m, offset: 0, size: 16 * K }, { account: acct });
    assert.throws(
      () =>
        udmabufCreateList(
          {
            list: [
              { memfd: m, offset: 0, size: 32 * K },
              { memfd: m, offset: 0, size: 32 * K },
            ],
          },
          { account: acct },
        ),
      errno('ENOMEM'),
    );
    assert.equal(acct.pinnedBytes, 16 * K, 'the partial pin was undone');
    assert.equal(m.pinnedPages, 16);
    const b = udmabufCreateList(
      {
        list: [
          { memfd: m, offset: 0, size: 32 * K },
          { memfd: m, offset: 0, size: 16 * K },
        ],
      },
      { account: acct },
    );
    assert.equal(acct.pinnedBytes, 64 * K, 'reaching the limit exactly is allowed');
    a.dispose();
    b.dispose();
    const zero = PinAccount.create({ limit: 0 });
    assert.throws(
      () => udmabufCreate({ memfd: m, offset: 0, size: K }, { account: zero }),
      errno('EPERM'),
    );
    zero.dispose();
    assert.equal(m.pinnedPages, 0);
  });
});

describe("a dma-buf's own memory as user memory (seed 002)", () => {
  it('is refused: only memfds can be imported, and a mapping resolves to its buffer', async () => {
    const start = baseline();
    const heap = createSystemHeap({ name: 'udmabuf-seed-002', capacity: 1 << 20 });
    const buf = heap.allocate(2 * K);
    const map = buf.mmap({ prot: PROT_READ, flags: MAP_SHARED });
    const sab = buf.memory.chunks[0]!.sab;
    assert.throws(() => MemFd.of(sab), errno('EINVAL'), "a dma-buf's memory is not a memfd");
    const hit = DmaBuf.fromMapping(map.view, 0);
    assert.ok(hit, 'the mapping resolves to the buffer it maps');
    assert.equal(hit.buf.ino, buf.ino);
    hit.buf.dispose();
    map.unmap();
    buf.dispose();
    heap.remove();
    heap.dispose();
    await assertNoLeak(start);
  });
});
