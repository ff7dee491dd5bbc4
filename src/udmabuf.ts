/**
 * udmabuf (drivers/dma-buf/udmabuf.c, include/uapi/linux/udmabuf.h): a dma-buf over existing
 * memory — ranges of sealed {@linkcode MemFd}s — with no copy; plus the pinning accounted against
 * a memlock-like limit per owner (seed 004; the `pinned_vm` pattern of RDMA/amdxdna).
 *
 * ## Kernel rules kept (validation order)
 * 1. LIST: `count > listLimit` → EINVAL (`count == listLimit` is fine).
 * 2. Per item, before any memfd is looked at: offset or size not page-aligned → EINVAL; running
 *    total of pages > `sizeLimitMb` MiB → EINVAL (exactly the limit is fine). Never E2BIG.
 * 3. Total pages 0 → EINVAL.
 * 4. Per item in order: not a memfd → EBADFD (77); `F_SEAL_SHRINK` missing, or `F_SEAL_WRITE` /
 *    `F_SEAL_FUTURE_WRITE` set → EINVAL (a memfd made without MFD_ALLOW_SEALING carries
 *    `F_SEAL_SEAL` only → EINVAL); zero-size item or range past the memfd's end → EINVAL; then
 *    the pin (memlock: ENOMEM). Seal check and pin run under the memfd's lock.
 * 5. Only `flags` bit 0 (CLOEXEC) is read; other bits are ignored. The buffer is O_RDWR, its
 *    size the total pages, `exp_name` "udmabuf".
 * - All-or-nothing: a failure unpins everything pinned so far. Repeated and overlapping ranges
 *   are legal; each is pinned (and counted) separately. Contents alias the memfd.
 * - mmap needs MAP_SHARED (else EINVAL). Unknown ioctl → ENOTTY.
 * - end_cpu_access (`DMA_BUF_SYNC_END`) before the first begin_cpu_access → EINVAL (6.1 keeps
 *   `ubuf->sg` from the first begin; there is none before it).
 *
 * ## Pin accounting (deviation: mainline udmabuf charges nothing; the brief asks for seed 004's)
 * - Each {@linkcode PinAccount} (an "mm") has a pinned-page counter and a limit (default 8 MiB,
 *   RLIMIT_MEMLOCK's default). Creating a udmabuf adds its pages; `new > limit` → ENOMEM with the
 *   counter unchanged (equal is fine); `capIpcLock` skips the check but still counts; a limit of
 *   0 without `capIpcLock` → EPERM (`can_do_mlock`). Only the imported ranges are counted.
 * - Release (in whichever thread drops the last reference) unpins the memfd pages and uncharges
 *   the account. Accounts and the per-buffer ledger live in one shared table that the main
 *   thread publishes at load (like the domain), so any thread can release.
 *
 * @module
 */
import { getEnvironmentData, isMainThread, setEnvironmentData } from 'node:worker_threads';
import {
  DmaBuf,
  type DmaBufOps,
  dmaBufMapMemory,
  dmaBufUnmapMemory,
  MAP_SHARED,
  O_RDWR,
  registerDmaBufExporter,
} from './dma-buf.js';
import { BufferMemory, type MemoryChunk, PAGE_SIZE } from './dma-buf-memory.js';
import { F_SEAL_FUTURE_WRITE, F_SEAL_SHRINK, F_SEAL_WRITE, MemFd } from './memfd.js';
import { DmaBufError } from './substrate/errno.js';

export const UDMABUF_FLAGS_CLOEXEC = 0x01;
/** `UDMABUF_CREATE = _IOW('u', 0x42, struct udmabuf_create)`. */
export const UDMABUF_CREATE = 0x40187542;
/** `UDMABUF_CREATE_LIST = _IOW('u', 0x43, struct udmabuf_create_list)`. */
export const UDMABUF_CREATE_LIST = 0x40087543;
/** Exporter name of udmabufs. */
export const UDMABUF_EXP_NAME = 'udmabuf';

/** Module parameters (writable at run time, like `/sys/module/udmabuf/parameters`). */
export const udmabufParams = { listLimit: 1024, sizeLimitMb: 64 };

/** `struct udmabuf_create_item`. `memfd` is anything; only a {@linkcode MemFd} is accepted. */
export interface UdmabufItem {
  memfd: unknown;
  offset: number;
  size: number;
  /** Never checked. */
  pad?: number;
}

/** `struct udmabuf_create`. */
export interface UdmabufCreate extends UdmabufItem {
  flags?: number;
}

/** `struct udmabuf_create_list`. */
export interface UdmabufCreateList {
  flags?: number;
  list: readonly UdmabufItem[];
}

/** Options: which account the pins are charged to (default {@linkcode PinAccount.default}). */
export interface UdmabufOptions {
  account?: PinAccount;
}

// ---- shared accounts table --------------------------------------------------------------------

const ENV_KEY = 'dmabuf:udmabuf';
const T_LOCK = 0;
const ACCOUNTS = 64;
const ACC_BASE = 16;
const ACC_WORDS = 4; // inUse, pinned pages, limit pages, capIpcLock
const LEDGER = 4096;
const LEDGER_BASE = ACC_BASE + ACCOUNTS * ACC_WORDS;
const LED_WORDS = 4; // ino lo, ino hi, (account + 1) | LED_SG, pages
/** Ledger flag: the buffer's own sg table exists (`ubuf->sg`, made by the first begin). */
const LED_SG = 1 << 30;
/** Default memlock limit (bytes): RLIMIT_MEMLOCK's default since 5.16. */
export const DEFAULT_MEMLOCK_LIMIT = 8 << 20;

function table(): Int32Array {
  if (tableI32) return tableI32;
  let sab = getEnvironmentData(ENV_KEY) as SharedArrayBuffer | undefined;
  if (!(sab instanceof SharedArrayBuffer)) {
    sab = new SharedArrayBuffer((LEDGER_BASE + LEDGER * LED_WORDS) * 4);
    const i32 = new Int32Array(sab);
    // Account 0: the process default.
    i32[ACC_BASE] = 1;
    i32[ACC_BASE + 2] = DEFAULT_MEMLOCK_LIMIT / PAGE_SIZE;
    setEnvironmentData(ENV_KEY, sab as unknown as Parameters<typeof setEnvironmentData>[1]);
  }
  tableI32 = new Int32Array(sab);
  return tableI32;
}
let tableI32: Int32Array | undefined;

function locked<T>(fn: (t: Int32Array) => T): T {
  const t = table();
  while (Atomics.compareExchange(t, T_LOCK, 0, 1) !== 0) {
    // Short critical sections (the mmap write lock of account_locked_vm).
  }
  try {
    return fn(t);
  } finally {
    Atomics.store(t, T_LOCK, 0);
  }
}

/** A memlock account (the `mm` whose `pinned_vm` is charged). Shared by every thread. */
export class PinAccount {
  readonly index: number;

  private constructor(index: number) {
    this.index = index;
  }

  /** The process default account (limit {@linkcode DEFAULT_MEMLOCK_LIMIT}). */
  static get default(): PinAccount {
    return new PinAccount(0);
  }

  /**
   * A new account.
   *
   * @throws {DmaBufError} EINVAL for a bad limit; ENOSPC when the table is full.
   */
  static create(opts: { limit?: number; capIpcLock?: boolean } = {}): PinAccount {
    const limit = opts.limit ?? DEFAULT_MEMLOCK_LIMIT;
    if (!Number.isSafeInteger(limit) || limit < 0) throw new DmaBufError('EINVAL', 'bad limit');
    const i = locked((t) => {
      for (let a = 1; a < ACCOUNTS; a++) {
        const b = ACC_BASE + a * ACC_WORDS;
        if (t[b] === 0) {
          t[b] = 1;
          t[b + 1] = 0;
          t[b + 2] = Math.floor(limit / PAGE_SIZE);
          t[b + 3] = opts.capIpcLock ? 1 : 0;
          return a;
        }
      }
      return -1;
    });
    if (i < 0) throw new DmaBufError('ENOSPC', 'pin account table is full');
    return new PinAccount(i);
  }

  /** The account with index `i` (another thread's account). */
  static fromIndex(i: number): PinAccount {
    if (!Number.isInteger(i) || i < 0 || i >= ACCOUNTS) throw new DmaBufError('EINVAL', 'bad');
    return new PinAccount(i);
  }

  #w(k: number): number {
    return ACC_BASE + this.index * ACC_WORDS + k;
  }

  /** Pinned bytes charged. */
  get pinnedBytes(): number {
    return Atomics.load(table(), this.#w(1)) * PAGE_SIZE;
  }

  /** The limit (bytes, rounded down to pages). */
  get limit(): number {
    return Atomics.load(table(), this.#w(2)) * PAGE_SIZE;
  }
  set limit(bytes: number) {
    if (!Number.isSafeInteger(bytes) || bytes < 0) throw new DmaBufError('EINVAL', 'bad limit');
    Atomics.store(table(), this.#w(2), Math.floor(bytes / PAGE_SIZE));
  }

  get capIpcLock(): boolean {
    return Atomics.load(table(), this.#w(3)) !== 0;
  }
  set capIpcLock(on: boolean) {
    Atomics.store(table(), this.#w(3), on ? 1 : 0);
  }

  /**
   * Charges `pages` (add-then-undo, as `pinned_vm`).
   *
   * @throws {DmaBufError} EPERM for a zero limit without capIpcLock; ENOMEM past the limit.
   */
  charge(pages: number): void {
    const t = table();
    const cap = this.capIpcLock;
    if (!cap && Atomics.load(t, this.#w(2)) === 0) {
      throw new DmaBufError('EPERM', 'memlock limit is 0 (can_do_mlock fails)');
    }
    const now = Atomics.add(t, this.#w(1), pages) + pages;
    if (!cap && now > Atomics.load(t, this.#w(2))) {
      Atomics.sub(t, this.#w(1), pages);
      throw new DmaBufError('ENOMEM', 'pinning would exceed the memlock limit');
    }
  }

  /** Uncharges `pages`. */
  uncharge(pages: number): void {
    const prev = Atomics.sub(table(), this.#w(1), pages);
    if (prev < pages) process.emitWarning('pinned page counter underflow', 'DmaBufWarning');
  }

  /** Frees the account slot. @throws {DmaBufError} EBUSY while pages are charged. */
  dispose(): void {
    if (this.index === 0) return;
    locked((t) => {
      if (t[this.#w(1)] !== 0) throw new DmaBufError('EBUSY', 'account still has pinned pages');
      t[this.#w(0)] = 0;
    });
  }
}

function ledgerAdd(ino: bigint, account: number, pages: number): void {
  const ok = locked((t) => {
    for (let e = 0; e < LEDGER; e++) {
      const b = LEDGER_BASE + e * LED_WORDS;
      if (t[b + 2] === 0) {
        t[b] = Number(ino & 0xffffffffn) | 0;
        t[b + 1] = Number(ino >> 32n) | 0;
        t[b + 2] = account + 1;
        t[b + 3] = pages;
        return true;
      }
    }
    return false;
  });
  if (!ok) throw new DmaBufError('ENOMEM', 'udmabuf ledger is full');
}

function ledgerTake(ino: bigint): [number, number] | undefined {
  return locked((t) => {
    const lo = Number(ino & 0xffffffffn) | 0;
    const hi = Number(ino >> 32n) | 0;
    for (let e = 0; e < LEDGER; e++) {
      const b = LEDGER_BASE + e * LED_WORDS;
      if (t[b + 2] !== 0 && t[b] === lo && t[b + 1] === hi) {
        const r: [number, number] = [(t[b + 2]! & ~LED_SG) - 1, t[b + 3]!];
        t[b + 2] = 0;
        return r;
      }
    }
    return undefined;
  });
}

/**
 * Sets (`set`) or reads the buffer's "sg table made" flag in its ledger entry; returns the flag's
 * value before the call (false for a buffer without entry).
 */
function ledgerSg(ino: bigint, set: boolean): boolean {
  return locked((t) => {
    const lo = Number(ino & 0xffffffffn) | 0;
    const hi = Number(ino >> 32n) | 0;
    for (let e = 0; e < LEDGER; e++) {
      const b = LEDGER_BASE + e * LED_WORDS;
      if (t[b + 2] !== 0 && t[b] === lo && t[b + 1] === hi) {
        const was = (t[b + 2]! & LED_SG) !== 0;
        if (set) t[b + 2] = t[b + 2]! | LED_SG;
        return was;
      }
    }
    return false;
  });
}

// ---- errors -----------------------------------------------------------------------------------

/** EBADFD (77): the file is not in a usable state (here: not a memfd). */
function ebadfd(message: string): DmaBufError {
  return new DmaBufError('EBADFD', message);
}

// ---- create -----------------------------------------------------------------------------------

function num(v: unknown, what: string): number {
  if (typeof v === 'bigint') v = Number(v);
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw new DmaBufError('EINVAL', `${what} must be a non-negative integer`);
  }
  return v;
}

function create(flags: number, list: readonly UdmabufItem[], opts: UdmabufOptions): DmaBuf {
  // Pass 1: alignment and the size limit, before any memfd is looked at.
  const maxPages = Math.floor((udmabufParams.sizeLimitMb * 2 ** 20) / PAGE_SIZE);
  let total = 0;
  const items = list.map((it) => {
    if (typeof it !== 'object' || it === null) throw new DmaBufError('EFAULT', 'bad item');
    const offset = num(it.offset, 'offset');
    const size = num(it.size, 'size');
    if (offset % PAGE_SIZE !== 0) throw new DmaBufError('EINVAL', 'offset not page-aligned');
    if (size % PAGE_SIZE !== 0) throw new DmaBufError('EINVAL', 'size not page-aligned');
    total += size / PAGE_SIZE;
    if (total > maxPages) throw new DmaBufError('EINVAL', 'over size_limit_mb');
    return { memfd: it.memfd, offset, size };
  });
  if (total === 0) throw new DmaBufError('EINVAL', 'udmabuf of 0 pages');
  const account = opts.account ?? PinAccount.default;
  if (!(account instanceof PinAccount)) throw new DmaBufError('EINVAL', 'bad account');
  // Pass 2: per item, seals then pin; all-or-nothing.
  const pinned: [MemFd, number][] = [];
  const chunks: MemoryChunk[] = [];
  try {
    for (const it of items) {
      if (!(it.memfd instanceof MemFd)) throw ebadfd('not a memfd');
      const m = it.memfd;
      m._withLock(() => {
        const seals = m.seals;
        if ((seals & F_SEAL_SHRINK) === 0) throw new DmaBufError('EINVAL', 'F_SEAL_SHRINK missing');
        if (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)) {
          throw new DmaBufError('EINVAL', 'memfd is write-sealed');
        }
        if (it.size === 0 || it.offset + it.size > m.size) {
          throw new DmaBufError('EINVAL', 'range outside the memfd');
        }
        const pages = it.size / PAGE_SIZE;
        account.charge(pages);
        m._pin(pages);
        pinned.push([m, pages]);
      });
      chunks.push({
        sab: m.sab,
        offset: m.dataOffset + it.offset,
        length: it.size,
        phys: m.phys + it.offset,
      });
    }
    const buf = DmaBuf.export({
      ops: udmabufOps,
      expName: UDMABUF_EXP_NAME,
      size: total * PAGE_SIZE,
      memory: new BufferMemory(chunks),
      flags: O_RDWR | (flags & UDMABUF_FLAGS_CLOEXEC ? 0 : 0),
      priv: { account: account.index },
    });
    try {
      ledgerAdd(buf.ino, account.index, total);
    } catch (e) {
      // Unpinned by release through the memory; the ledger has no entry to uncharge.
      account.uncharge(total);
      buf.dispose();
      throw e;
    }
    return buf;
  } catch (e) {
    if (!(e instanceof DmaBufError && e.message.startsWith('ENOMEM: udmabuf ledger'))) {
      for (const [m, pages] of pinned) {
        m._pin(-pages);
        account.uncharge(pages);
      }
    }
    throw e;
  }
}

/**
 * `UDMABUF_CREATE`.
 *
 * @throws {DmaBufError} EINVAL / EBADFD / ENOMEM / EPERM (see the module doc).
 */
export function udmabufCreate(req: UdmabufCreate, opts: UdmabufOptions = {}): DmaBuf {
  if (typeof req !== 'object' || req === null) throw new DmaBufError('EFAULT', 'no request');
  return create(req.flags ?? 0, [req], opts);
}

/**
 * `UDMABUF_CREATE_LIST`.
 *
 * @throws {DmaBufError} EINVAL when `list.length > listLimit`; as {@linkcode udmabufCreate}.
 */
export function udmabufCreateList(req: UdmabufCreateList, opts: UdmabufOptions = {}): DmaBuf {
  if (typeof req !== 'object' || req === null || !Array.isArray(req.list)) {
    throw new DmaBufError('EFAULT', 'no list');
  }
  if (req.list.length > udmabufParams.listLimit) {
    throw new DmaBufError('EINVAL', `count > list_limit (${udmabufParams.listLimit})`);
  }
  return create(req.flags ?? 0, req.list, opts);
}

/**
 * The `/dev/udmabuf` ioctl: `UDMABUF_CREATE` or `UDMABUF_CREATE_LIST`.
 *
 * @throws {DmaBufError} ENOTTY for any other command; what the create functions throw.
 */
export function udmabufIoctl(
  cmd: number,
  arg: UdmabufCreate | UdmabufCreateList,
  opts: UdmabufOptions = {},
): DmaBuf {
  if (cmd === UDMABUF_CREATE) return udmabufCreate(arg as UdmabufCreate, opts);
  if (cmd === UDMABUF_CREATE_LIST) return udmabufCreateList(arg as UdmabufCreateList, opts);
  throw new DmaBufError('ENOTTY', 'unknown udmabuf ioctl');
}

function release(buf: DmaBuf): void {
  for (const c of buf.memory.chunks) MemFd.of(c.sab)._pin(-(c.length / PAGE_SIZE));
  const entry = ledgerTake(buf.ino);
  if (entry) PinAccount.fromIndex(entry[0]).uncharge(entry[1]);
}

/** The udmabuf exporter ops (registered: they run in any thread that loaded this module). */
export const udmabufOps: DmaBufOps = {
  map: dmaBufMapMemory,
  unmap: dmaBufUnmapMemory,
  release,
  mmap: (_buf, vma) => {
    if ((vma.flags & MAP_SHARED) === 0) throw new DmaBufError('EINVAL', 'udmabuf needs MAP_SHARED');
  },
  vmap: () => {},
  vunmap: () => {},
  // begin_cpu_access makes the buffer's own table on first use (`ubuf->sg`) and syncs it for the
  // CPU afterwards (the misc device is coherent: nothing moves); end_cpu_access without that
  // table → EINVAL (6.1: an END before any START fails).
  beginCpuAccess: (buf) => {
    ledgerSg(buf.ino, true);
  },
  endCpuAccess: (buf) => {
    if (!ledgerSg(buf.ino, false)) {
      throw new DmaBufError('EINVAL', 'udmabuf: end_cpu_access before any begin_cpu_access');
    }
  },
};

registerDmaBufExporter(UDMABUF_EXP_NAME, udmabufOps);
if (isMainThread) table();
