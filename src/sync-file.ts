/**
 * sync_file: a fence wrapped as a shareable file (drivers/dma-buf/sync_file.c,
 * include/uapi/linux/sync_file.h).
 *
 * A sync file holds exactly one fence reference for its whole life: a plain fence, an array (the
 * result of a merge), a chain point or a stub. It never changes; merging makes a new one. Its
 * state is a small record in shared memory, so a sync file handed to another thread (`share()`
 * there, `SyncFile.import(msg)` here) is the same sync file, like an fd passed over a socket.
 *
 * Kernel rules kept here:
 * - `create(fence)` takes its own reference; the caller keeps its handle.
 * - The name is the merge name if one was given (at most 31 bytes), else
 *   `<driver>-<timeline><context>-<seqno>` of the fence.
 * - Merge flattens both inputs with `unwrapMerge` (one fence per context, the later one wins,
 *   sorted by context; signalled fences are dropped with their errors; a single pending survivor
 *   is the fence itself; nothing pending gives a fresh signalled stub). Bad flags or pad:
 *   `EINVAL`; a second argument that is not a sync file: `ENOENT`.
 * - Info: `flags`/`pad` must be 0 (`EINVAL`). A request for 0 fences only counts them and
 *   reports the status of the whole fence; a request for fewer fences than there are is
 *   `EINVAL` (nothing filled); otherwise every leaf is reported and the header status is the
 *   first non-positive leaf status, not the minimum. Leaving `numFences` out asks for everything
 *   (the count-first two-call protocol is not needed here).
 * - Poll: readable once the fence has signalled, with or without an error; the error is only
 *   visible through the status. `ready` never rejects because of a fence error.
 *
 * Names reported by info and the derived name are the fence's real driver and timeline names
 * also after it signalled, as 6.1 reports them (observed). Kernels since 6.16 report
 * "detached-driver" / "signaled-timeline" for a signalled fence, like `DmaFence.driverName`.
 *
 * @module
 */
import {
  DmaFence,
  type DmaFenceCb,
  type DmaFenceWaitOptions,
  F,
  putFence,
  wrapFence,
} from './dma-fence.js';
import { unwrap, unwrapMerge } from './dma-fence-unwrap.js';
import { type Domain, domain, RecordType } from './substrate/domain.js';
import { DmaBufError } from './substrate/errno.js';
import { claim, HandleKind, type SharedMessage, SharedObject } from './substrate/handle.js';

// Shared-word accessor: the record's base is computed first, so that a view refreshed by it
// (the region grew in another thread) is the one used.
// Record words (3..23 are ours).
const S_FENCE = 3;
/** Interned user name + 1 (0: none, the name is derived). */
const S_NAME = 4;

/** What `poll()` reports when the fence has signalled. */
export const POLLIN = 0x1;

/** Longest name the uapi structs carry (a 32-byte field with its terminating NUL). */
export const SYNC_NAME_MAX_BYTES = 31;

/** One fence of a sync file (`struct sync_fence_info`). */
export interface SyncFenceInfo {
  /** Timeline name (at most 31 bytes). */
  objName: string;
  /** Driver name (at most 31 bytes). */
  driverName: string;
  /** 1 signalled, 0 pending, a negative errno when signalled with an error. */
  status: number;
  /** Always 0. */
  flags: number;
  /** Signal time (monotonic ns), 0n while pending. */
  timestampNs: bigint;
}

/** The answer of `info()` (`struct sync_file_info`). */
export interface SyncFileInfo {
  /** The sync file's name (at most 31 bytes). */
  name: string;
  status: number;
  flags: number;
  numFences: number;
  /** Empty when only the count was asked for. */
  fences: SyncFenceInfo[];
}

/** The request of `info()`: the in-fields of `struct sync_file_info`. */
export interface SyncFileInfoRequest {
  /** 0: count only; n: room for n entries; left out: everything. */
  numFences?: number;
  /** Must be 0. */
  flags?: number;
  /** Must be 0. */
  pad?: number;
}

/** The in-fields of `struct sync_merge_data` besides the name and fd2. */
export interface SyncMergeOptions {
  flags?: number;
  pad?: number;
}

const TOKEN: unique symbol = Symbol('sync-file');

function putSyncFile(slot: number): void {
  const d = domain();
  if (!d.put(slot)) return;
  const fence = d.ld(slot, S_FENCE);
  d.free(slot);
  putFence(fence);
}

const syncFileKind = new HandleKind('sync-file', RecordType.SYNC_FILE, putSyncFile);

/** @internal A sync file record around fence `fenceSlot` (takes its own fence reference). */
function createRecord(d: Domain, fenceSlot: number, name: string): SyncFile {
  const nameId = name === '' ? 0 : d.intern(name) + 1;
  d.get(fenceSlot);
  let slot: number;
  try {
    slot = d.alloc(RecordType.SYNC_FILE);
  } catch (e) {
    putFence(fenceSlot);
    throw e;
  }
  const b = d.base(slot);
  Atomics.store(d.i32, b + S_FENCE, fenceSlot);
  Atomics.store(d.i32, b + S_NAME, nameId);
  return new SyncFile(TOKEN, slot, d.gen(slot));
}

/** @internal Truncates to `max` UTF-8 bytes without splitting a character (`strscpy`). */
export function truncateUtf8(s: string, max: number): string {
  const b = Buffer.from(s, 'utf8');
  if (b.length <= max) return s;
  let end = max;
  while (end > 0 && (b[end]! & 0xc0) === 0x80) end--;
  return b.subarray(0, end).toString('utf8');
}

/**
 * @internal The driver and timeline names a fence record was created with, read from shared
 * memory (interned strings, safe to read at any time, also after the fence signalled).
 */
export function fenceNames(d: Domain, slot: number): { driver: string; timeline: string } {
  const names = d.ld(slot, F.NAMES);
  return { driver: d.name(names >>> 16), timeline: d.name(names & 0xffff) };
}

/** `<driver>-<timeline><context>-<seqno>`, the seqno printed as a signed 64-bit number. */
function derivedName(d: Domain, fence: DmaFence): string {
  const { driver, timeline } = fenceNames(d, fence._slot);
  return `${driver}-${timeline}${fence.context}-${BigInt.asIntN(64, fence.seqno)}`;
}

function checkZero(v: unknown, what: string): void {
  if (v !== undefined && v !== 0) throw new DmaBufError('EINVAL', `${what} must be 0`);
}

/**
 * @internal `sync_file_get_fence`: a new reference to the fence of `file`, or null when `file`
 * is not a sync file handle.
 *
 * @throws {DmaBufError} EBADF for a disposed sync file handle.
 */
export function syncFileGetFence(file: unknown): DmaFence | null {
  if (!(file instanceof SyncFile)) return null;
  return file.getFence();
}

/**
 * A handle to a sync file.
 *
 * @example
 * ```ts
 * import { DmaFence, SyncFile } from 'dmabuf';
 * using fence = new DmaFence(DmaFence.contextAlloc(1), 1n);
 * using file = SyncFile.create(fence);
 * worker.postMessage(file.share()); // SyncFile.import(msg) there: the same sync file
 * fence.signal();
 * await file.ready;
 * ```
 */
export class SyncFile extends SharedObject {
  #poll:
    | { fence: DmaFence | undefined; cb: DmaFenceCb | undefined; ready: Promise<void> }
    | undefined;

  /** @internal Use {@linkcode SyncFile.create}, `merge` or `import`. */
  constructor(token: typeof TOKEN, slot: number, gen: number) {
    if (token !== TOKEN) throw new DmaBufError('EINVAL', 'use SyncFile.create(fence)');
    super(slot, gen, true);
  }

  /** @internal */
  override _kind(): HandleKind {
    return syncFileKind;
  }

  /**
   * A new sync file holding `fence` (`sync_file_create`). It takes its own reference; the caller
   * keeps (and disposes) its handle.
   *
   * @throws {DmaBufError} EINVAL when `fence` is not a fence handle; EBADF for a stale one;
   *   ENOMEM when the shared region is full.
   */
  static create(fence: DmaFence): SyncFile {
    if (!(fence instanceof DmaFence))
      throw new DmaBufError('EINVAL', 'SyncFile.create needs a DmaFence');
    const d = fence._check();
    return createRecord(d, fence._slot, '');
  }

  /**
   * Adopts a sync file handed over by another thread; the result is the same sync file.
   *
   * @throws {DmaBufError} EINVAL for a message that is not a sync file; EBADF when it was already
   *   imported; EXDEV for one of another domain.
   */
  static import(msg: SharedMessage): SyncFile {
    const d = claim(msg, syncFileKind);
    return new SyncFile(TOKEN, msg.slot, d.gen(msg.slot));
  }

  /**
   * Gives back the reference held by a message that will never be imported.
   *
   * @throws {DmaBufError} EBADF when it was already imported or released.
   */
  static override releaseShared(msg: SharedMessage): void {
    SharedObject.releaseShared(msg, syncFileKind);
  }

  /**
   * `SYNC_IOC_MERGE` as a function: `a.merge(b, name, opts)`.
   *
   * @throws {DmaBufError} as {@linkcode SyncFile.merge}.
   */
  static merge(a: SyncFile, b: unknown, name = '', opts: SyncMergeOptions = {}): SyncFile {
    if (!(a instanceof SyncFile)) throw new DmaBufError('EINVAL', 'merge needs a SyncFile');
    return a.merge(b, name, opts);
  }

  /** A second handle to the same sync file (`dup`). */
  get(): SyncFile {
    const d = this._check();
    d.get(this._slot);
    return new SyncFile(TOKEN, this._slot, this._gen);
  }

  /** The fence, as a new handle the caller disposes (`sync_file_get_fence`). */
  getFence(): DmaFence {
    const d = this._check();
    const f = d.ld(this._slot, S_FENCE);
    d.get(f);
    return wrapFence(f, d.gen(f), true);
  }

  /** The name (`sync_file_get_name`): the merge name, or derived from the fence. */
  get name(): string {
    const d = this._check();
    const id = d.ld(this._slot, S_NAME);
    if (id !== 0) return d.name(id - 1);
    const f = this.getFence();
    try {
      return derivedName(d, f);
    } finally {
      f.dispose();
    }
  }

  /**
   * `SYNC_IOC_MERGE`: a new sync file whose fence signals when both have (see the module
   * comment for the rules). Both inputs stay valid and unchanged; `other` may be this file.
   *
   * @param name the new file's name, cut to 31 bytes; empty: derived from the fence.
   * @throws {DmaBufError} EINVAL for non-zero `flags` or `pad` or a name that is not a string;
   *   ENOENT when `other` is not a sync file; EBADF for a disposed handle; ENOMEM.
   */
  merge(other: unknown, name = '', opts: SyncMergeOptions = {}): SyncFile {
    const d = this._check();
    checkZero(opts.flags, 'merge flags');
    checkZero(opts.pad, 'merge pad');
    if (!(other instanceof SyncFile)) {
      throw new DmaBufError('ENOENT', 'the second merge argument is not a sync file');
    }
    if (typeof name !== 'string') throw new DmaBufError('EINVAL', 'merge name must be a string');
    const a = this.getFence();
    try {
      const b = other.getFence();
      try {
        const merged = unwrapMerge(a, b);
        try {
          return createRecord(d, merged._slot, truncateUtf8(name, SYNC_NAME_MAX_BYTES));
        } finally {
          merged.dispose();
        }
      } finally {
        b.dispose();
      }
    } finally {
      a.dispose();
    }
  }

  /**
   * `SYNC_IOC_FILE_INFO`: the name, status and fences (see the module comment for the rules).
   *
   * @throws {DmaBufError} EINVAL for non-zero `flags`/`pad`, a `numFences` that is not a
   *   non-negative integer, or one smaller than the number of fences.
   */
  info(req: SyncFileInfoRequest = {}): SyncFileInfo {
    const d = this._check();
    checkZero(req.flags, 'info flags');
    checkZero(req.pad, 'info pad');
    const want = req.numFences;
    if (want !== undefined && (!Number.isInteger(want) || want < 0 || want > 0xffffffff)) {
      throw new DmaBufError('EINVAL', 'numFences must be an integer in [0, 2^32)');
    }
    const f = this.getFence();
    try {
      let n = 0;
      for (const _ of unwrap(f)) n++;
      if (want === 0) {
        return {
          name: this.#infoName(d, f),
          status: f.getStatus(),
          flags: 0,
          numFences: n,
          fences: [],
        };
      }
      if (want !== undefined && want < n) {
        throw new DmaBufError('EINVAL', `room for ${want} fences, the sync file has ${n}`);
      }
      let status = 1;
      const fences: SyncFenceInfo[] = [];
      for (const leaf of unwrap(f)) {
        const e = fenceInfo(d, leaf);
        fences.push(e);
        // The first non-positive status sticks (it is not the minimum).
        if (status > 0) status = e.status;
      }
      return { name: this.#infoName(d, f), status, flags: 0, numFences: fences.length, fences };
    } finally {
      f.dispose();
    }
  }

  #infoName(d: Domain, f: DmaFence): string {
    const id = d.ld(this._slot, S_NAME);
    return truncateUtf8(id !== 0 ? d.name(id - 1) : derivedName(d, f), SYNC_NAME_MAX_BYTES);
  }

  /** 1 signalled, 0 pending, a negative errno when signalled with an error (polls the fence). */
  status(): number {
    const f = this.getFence();
    try {
      return f.getStatus();
    } finally {
      f.dispose();
    }
  }

  /**
   * `poll()`: {@linkcode POLLIN} once the fence has signalled (error or not), else 0. The first
   * call arms the readiness callback, as `ready` does.
   */
  poll(): number {
    void this.ready;
    const f = this.getFence();
    try {
      return f.isSignaled() ? POLLIN : 0;
    } finally {
      f.dispose();
    }
  }

  /**
   * Resolves when the fence has signalled, with or without an error (poll readiness). Never
   * rejects for a fence error; stays pending while the fence does not signal (keeping the
   * thread alive, like a pending fence callback). Disposing this handle drops the wait; the
   * promise then stays pending. The same promise is returned on every access.
   *
   * @throws {DmaBufError} EBADF for a disposed handle.
   */
  get ready(): Promise<void> {
    this._check();
    if (this.#poll) return this.#poll.ready;
    const fence = this.getFence();
    let resolve!: () => void;
    const ready = new Promise<void>((r) => {
      resolve = r;
    });
    let cb: DmaFenceCb | undefined;
    try {
      cb = fence.addCallback(() => resolve());
    } catch (e) {
      fence.dispose();
      if (!(e instanceof DmaBufError && e.code === 'ENOENT')) throw e;
      resolve();
      this.#poll = { fence: undefined, cb: undefined, ready };
      return ready;
    }
    this.#poll = { fence, cb, ready };
    return ready;
  }

  /**
   * Waits for the fence without blocking the event loop; true when it signalled (error or not),
   * false on timeout.
   *
   * @throws {DmaBufError} EINVAL for a negative timeout; ERESTARTSYS when `signal` aborts.
   */
  async wait(opts: DmaFenceWaitOptions = {}): Promise<boolean> {
    const f = this.getFence();
    try {
      return (await f.wait(opts)) > 0;
    } finally {
      f.dispose();
    }
  }

  /** The blocking form of {@linkcode SyncFile.wait}. */
  waitSync(opts: DmaFenceWaitOptions = {}): boolean {
    const f = this.getFence();
    try {
      return f.waitSync(opts) > 0;
    } finally {
      f.dispose();
    }
  }

  /**
   * `SYNC_IOC_SET_DEADLINE`: a hint that someone waits for the fence by `deadlineNs`
   * (absolute monotonic ns). Any value is accepted (0 included); signalled fences ignore it.
   * Deviation: values of 2^63 and above count as the far future, where the kernel's signed
   * ktime would wrap them into the past.
   *
   * @throws {DmaBufError} EINVAL for a non-zero `pad` or a deadline outside [0, 2^64).
   */
  setDeadline(deadlineNs: bigint, pad = 0): void {
    this._check();
    checkZero(pad, 'deadline pad');
    if (typeof deadlineNs !== 'bigint' || deadlineNs < 0n || deadlineNs >= 1n << 64n) {
      throw new DmaBufError('EINVAL', 'deadline must be a bigint in [0, 2^64) (monotonic ns)');
    }
    const f = this.getFence();
    try {
      // Clamped to the largest signed ktime (see the deviation above).
      const max = (1n << 63n) - 1n;
      f.setDeadline(deadlineNs > max ? max : deadlineNs);
    } finally {
      f.dispose();
    }
  }

  /** Puts this handle's reference, dropping a pending `ready` wait first. Idempotent. */
  override dispose(): void {
    const p = this.#poll;
    if (p && this._state === 0 /* live, not disposed or borrowed */) {
      this.#poll = undefined;
      if (p.fence) {
        if (p.cb) p.fence.removeCallback(p.cb);
        p.fence.dispose();
      }
    }
    super.dispose();
  }
}

function fenceInfo(d: Domain, leaf: DmaFence): SyncFenceInfo {
  const { driver, timeline } = fenceNames(d, leaf._slot);
  const status = leaf.getStatus();
  const ts = leaf.isSignaled() ? (leaf.timestamp ?? 0n) : 0n;
  return {
    objName: truncateUtf8(timeline, SYNC_NAME_MAX_BYTES),
    driverName: truncateUtf8(driver, SYNC_NAME_MAX_BYTES),
    status,
    flags: 0,
    timestampNs: ts,
  };
}
