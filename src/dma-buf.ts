/**
 * dma-buf: the shared buffer object (drivers/dma-buf/dma-buf.c, include/linux/dma-buf.h,
 * include/uapi/linux/dma-buf.h).
 *
 * A dma-buf is exported by an exporter (an ops object, a size, an access mode, the memory and
 * optionally a reservation object) and handed to other threads (`share()` there,
 * `DmaBuf.import(msg)` here), where it is the same memory: the message carries the memory's
 * `SharedArrayBuffer`s, never a copy. Its state is one DMA_BUF record of the domain (the kernel's
 * `struct file` + `struct dma_buf`): the record's reference count is the file's; every handle,
 * every mmap and every in-flight message holds one.
 *
 * ## Where the exporter's ops run
 *
 * Ops are JavaScript functions and cannot cross threads. Two kinds of exporters:
 * - **registered** ({@linkcode registerDmaBufExporter}, called at module load so every thread
 *   that loads the exporter module has it, like a kernel module): ops run in whichever thread
 *   calls the operation, synchronously, as the kernel runs them in the caller's context.
 * - **thread-local** (an ops object that is not registered): ops run only in the exporting
 *   (owner) thread. In another thread an operation that needs a present op fails with `ENOENT`
 *   (the kernel's "exporter module cannot be pinned"); operations whose op is absent work
 *   everywhere. `release` is never refused: when the last reference goes away in a thread without
 *   the ops, release is posted to the owner's mailbox and runs there (if the owner thread has
 *   exited, the record is freed without it).
 * `priv` lives in the owner thread only (other threads see `undefined`); registered exporters
 * reach their state through `buf.memory`.
 *
 * ## Kernel rules kept
 * - Export: ops missing, or `map`/`unmap`/`release` missing, a non-function op, exactly one of
 *   `pin`/`unpin`, or a null `priv` → `EINVAL`. Size is not checked (0 and non-page sizes are
 *   accepted); the access mode is `flags & (O_ACCMODE | O_NONBLOCK)`, fixed at export. Inode
 *   numbers come from one 64-bit counter starting at 1, never reused. No resv given → one is
 *   created and released with the buffer; a given resv is shared (a reference is taken).
 * - Release runs once, when the last reference in any thread is gone: warns when attachments
 *   remain; a vmap still counted is a BUG (thrown `Error` "BUG:" after the release completed).
 * - SET_NAME: at most 31 bytes + NUL (`DMA_BUF_NAME_LEN` 32) → else `EINVAL`; no NUL within
 *   32 bytes of a byte buffer → `EINVAL`; the empty name is valid; renaming while attached is
 *   allowed (modern kernels; ≤ v5.15 returned `EBUSY`).
 * - mmap: VFS checks first (length 0 or an unaligned offset → `EINVAL`; page offset + pages wraps
 *   past 2^64 → `EOVERFLOW`; no read mode → `EACCES`; `MAP_SHARED|PROT_WRITE` without write mode
 *   → `EACCES`; a shared mapping of a read-only file can never gain `PROT_WRITE` (`mprotect` →
 *   `EACCES`)), then dma-buf: no `mmap` op → `EINVAL`; past `size >> PAGE_SHIFT` pages →
 *   `EINVAL` (a 4097-byte buffer maps one page; size 0 maps nothing). The mapping holds a
 *   reference (the vma pins the file).
 * - vmap: counted per buffer; the exporter is called on 0→1 and 1→0 only; no `vmap` op →
 *   `EINVAL`; a vunmap without vmap or with a foreign map is a BUG (thrown `Error`). The resv lock
 *   must be held (`EPERM` otherwise); `vmapUnlocked` takes it.
 * - begin/end CPU access and SYNC: begin calls the op then waits for fences (write intent: all
 *   up to READ; read intent: KERNEL + WRITE); end never waits; no pairing state. SYNC flags: bits
 *   outside `RW|END` → `EINVAL`; no READ/WRITE bit → `EINVAL`.
 * - attach: `ops.attach` runs before the attachment exists and its error is returned verbatim;
 *   importer ops without `moveNotify` → `EINVAL`. map/unmap (v6.15+: every map calls the
 *   exporter, nothing is cached, nothing is mapped at attach): resv held (`EPERM`); pin-on-map for
 *   a static importer of a dynamic exporter; a null table → `ENOMEM`; static importers then wait
 *   for KERNEL fences; with the debug mode on the table's CPU pages are scrambled until unmap.
 *
 * ## Deviations
 * - The exporter provides the memory (`memory`, at least `size` rounded up to pages, else
 *   `EINVAL`): the core needs it to hand the buffer to other threads.
 * - `flags` defaults to `O_RDWR` (the kernel's definition macro zero-fills it to `O_RDONLY`).
 * - `MAP_PRIVATE` with `PROT_WRITE` is refused with `EINVAL` (no copy-on-write on shared memory;
 *   GEM shmem exporters refuse it the same way).
 * - A vmap of a buffer without write mode is a read-only view (the kernel's vmap ignores the file
 *   mode; here user code holds the view, so the read-only rule wins).
 * - Attachments are thread-local objects; the record only counts them.
 *
 * @module
 */

import { type Device, DmaDataDirection, isDmaDirection } from './device.js';
import {
  dmaBufListAdd,
  dmaBufListAttach,
  dmaBufListDel,
  dmaBufListDetach,
} from './dma-buf-list.js';
import {
  type BufferMemory,
  type BufferMemoryDescriptor,
  BufferMemory as Memory,
  MemoryView,
  PAGE_SHIFT,
  PAGE_SIZE,
} from './dma-buf-memory.js';
import {
  type NcEntry,
  ncAdoptAll,
  ncEntries,
  ncMappingCount,
  ncRegister,
  ncSyncBufferForCpu,
  ncSyncBufferForDevice,
  ncUnregister,
} from './dma-buf-ncsync.js';
import { dmaDebugEnabled } from './dma-debug.js';
import { DmaResv, DmaResvUsage, dmaResvUsageRw, resvRelease } from './dma-resv.js';
import { SgTable } from './scatterlist.js';
import {
  type Domain,
  domain,
  onMailReap,
  R_REF,
  RecordType,
  refCount,
  TYPE_SHIFT,
} from './substrate/domain.js';
import { DmaBufError } from './substrate/errno.js';
import { claim, HandleKind, type SharedMessage, SharedObject } from './substrate/handle.js';

// ---- constants ------------------------------------------------------------------------------

/** Open flags (Linux values). */
export const O_RDONLY = 0;
export const O_WRONLY = 1;
export const O_RDWR = 2;
export const O_ACCMODE = 3;
export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;

/** mmap protections and flags. */
export const PROT_NONE = 0;
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const MAP_SHARED = 1;
export const MAP_PRIVATE = 2;

/** `struct dma_buf_sync` flags. */
export const DMA_BUF_SYNC_READ = 1;
export const DMA_BUF_SYNC_WRITE = 2;
export const DMA_BUF_SYNC_RW = 3;
export const DMA_BUF_SYNC_START = 0;
export const DMA_BUF_SYNC_END = 4;
export const DMA_BUF_SYNC_VALID_FLAGS_MASK = DMA_BUF_SYNC_RW | DMA_BUF_SYNC_END;
/** Longest name including the terminating NUL. */
export const DMA_BUF_NAME_LEN = 32;

/** `f_mode` bits as debugfs prints them. */
export const FMODE_READ = 1;
export const FMODE_WRITE = 2;

/** `lseek` whence values. */
export const SEEK_SET = 0;
export const SEEK_CUR = 1;
export const SEEK_END = 2;

/** Mailbox kind used to run a thread-local exporter's release in its owner thread. */
const MAIL_DMABUF_RELEASE = 0x40;
/** Global word (Domain.globalWord) pair holding the 64-bit inode counter. */
const INO_GLOBAL = 28;

// ---- record layout ----------------------------------------------------------------------------

// FLAGS word low bits: f_flags (accmode bits 0..1, O_NONBLOCK bit 11), op presence bits 12..23.
const FLAGS_MASK = O_ACCMODE | O_NONBLOCK;
const OP_NAMES = [
  'attach',
  'detach',
  'map',
  'unmap',
  'release',
  'mmap',
  'vmap',
  'vunmap',
  'beginCpuAccess',
  'endCpuAccess',
  'pin',
  'unpin',
] as const;
type OpName = (typeof OP_NAMES)[number];
const OP_SHIFT = 12;
function opBit(op: OpName): number {
  return 1 << (OP_SHIFT + OP_NAMES.indexOf(op));
}

const W_OWNER = 3; // owner thread index + 1
const W_SIZE64 = 2; // i64 index relative to base64: words 4..5
const W_INO64 = 3; // words 6..7
const W_EXPNAME = 8; // interned exporter name id
const W_VMAP = 9; // vmapping_counter
const W_ATTACH = 10; // number of attachments
const W_NAMELEN = 11; // 0: unset; else byte length + 1
const W_NAME = 12; // 8 words: 32 bytes
const W_NAMELOCK = 20;
const W_RESV = 21;
const W_RESVGEN = 22;
const W_XFLAGS = 23; // bit 0: registered exporter
const X_REGISTERED = 1;
/** W_XFLAGS bits 1..30: the buffer's node on the global list (dma-buf-list.ts) + 1. */
const X_NODE_SHIFT = 1;

function listNode(d: Domain, slot: number): number {
  return (d.ld(slot, W_XFLAGS) >>> X_NODE_SHIFT) - 1;
}

function lockName(d: Domain, slot: number): void {
  const w = d.base(slot) + W_NAMELOCK;
  while (Atomics.compareExchange(d.i32, w, 0, 1) !== 0) {
    // Held for a few stores only (the kernel's name_lock spinlock).
  }
}

function unlockName(d: Domain, slot: number): void {
  const w = d.base(slot) + W_NAMELOCK;
  Atomics.store(d.i32, w, 0);
}

// ---- ops ----------------------------------------------------------------------------------------

/** A mapping request as the exporter's `mmap` sees it (the vma). */
export interface DmaBufVma {
  /** First page of the buffer mapped. */
  readonly pgoff: bigint;
  readonly npages: number;
  readonly prot: number;
  readonly flags: number;
}

/** `struct dma_buf_ops`. `map`, `unmap` and `release` are mandatory; `pin`/`unpin` go together. */
export interface DmaBufOps {
  attach?(buf: DmaBuf, attach: DmaBufAttachment): void;
  detach?(buf: DmaBuf, attach: DmaBufAttachment): void;
  pin?(attach: DmaBufAttachment): void;
  unpin?(attach: DmaBufAttachment): void;
  /** Returns a fresh table mapped for `attach.dev` (see {@linkcode dmaBufMapMemory}). */
  map(attach: DmaBufAttachment, dir: DmaDataDirection): SgTable | null;
  unmap(attach: DmaBufAttachment, sgt: SgTable, dir: DmaDataDirection): void;
  /** Runs once, when the last reference is gone; returns the memory to its owner. */
  release(buf: DmaBuf): void;
  /** May refuse a mapping by throwing; the core then maps the buffer's memory. */
  mmap?(buf: DmaBuf, vma: DmaBufVma): void;
  vmap?(buf: DmaBuf): void;
  vunmap?(buf: DmaBuf): void;
  beginCpuAccess?(buf: DmaBuf, dir: DmaDataDirection): void;
  endCpuAccess?(buf: DmaBuf, dir: DmaDataDirection): void;
}

/** `struct dma_buf_export_info`. */
export interface DmaBufExportInfo {
  ops: DmaBufOps;
  /** Bytes (not checked: 0 and non-page sizes are accepted). */
  size: number;
  /** The memory (at least `size` rounded up to pages). */
  memory: BufferMemory;
  /** Open flags: the access mode and `O_NONBLOCK` are kept (default `O_RDWR`). */
  flags?: number;
  /** A reservation object to share; one is created otherwise. */
  resv?: DmaResv;
  /** The exporter's name (default: the registered name, else "unknown"). */
  expName?: string;
  /** The exporter's private data (required, non-null, as the kernel requires). Owner thread only. */
  priv: unknown;
}

const registry = new Map<string, DmaBufOps>();

/**
 * Registers exporter ops under `name` in this thread. Call it at module load of the exporter
 * module: every thread that loads the module then runs the ops locally (see the module doc).
 *
 * @throws {DmaBufError} EEXIST when `name` is registered with other ops; EINVAL for bad ops.
 */
export function registerDmaBufExporter(name: string, ops: DmaBufOps): void {
  checkOps(ops);
  const old = registry.get(name);
  if (old && old !== ops) throw new DmaBufError('EEXIST', `exporter '${name}' already registered`);
  registry.set(name, ops);
}

function checkOps(ops: DmaBufOps): void {
  if (typeof ops !== 'object' || ops === null) throw new DmaBufError('EINVAL', 'ops missing');
  for (const k of ['map', 'unmap', 'release'] as const) {
    if (typeof ops[k] !== 'function') throw new DmaBufError('EINVAL', `mandatory op ${k} missing`);
  }
  for (const k of OP_NAMES) {
    const f = ops[k];
    if (f !== undefined && typeof f !== 'function') {
      throw new DmaBufError('EINVAL', `op ${k} is not a function`);
    }
  }
  if ((ops.pin === undefined) !== (ops.unpin === undefined)) {
    throw new DmaBufError('EINVAL', 'pin and unpin must be given together');
  }
}

// ---- per-thread state ---------------------------------------------------------------------------

/**
 * What a thread keeps about a buffer besides its handles: the owner keeps ops (thread-local
 * exporters), priv and the memory until release; any thread keeps its vmap view while it holds
 * vmaps. Entries without either are dropped.
 */
interface LocalBuf {
  gen: number;
  memory: BufferMemory;
  owner: boolean;
  ops: DmaBufOps | undefined;
  priv: unknown;
  vmap: IosysMap | undefined;
  /** vmaps of this thread not yet vunmapped. */
  vmaps: number;
}

const local = new Map<number, LocalBuf>();
let mailReady = false;

function localOf(slot: number, gen: number): LocalBuf | undefined {
  const l = local.get(slot);
  return l && l.gen === gen ? l : undefined;
}

function remember(slot: number, gen: number, memory: BufferMemory): LocalBuf {
  let l = localOf(slot, gen);
  if (!l) {
    l = { gen, memory, owner: false, ops: undefined, priv: undefined, vmap: undefined, vmaps: 0 };
    local.set(slot, l);
  }
  return l;
}

/** The ops this thread can run for the buffer, or undefined. */
function opsHere(d: Domain, slot: number, gen: number): DmaBufOps | undefined {
  const l = localOf(slot, gen);
  if (l?.ops) return l.ops;
  if ((d.ld(slot, W_XFLAGS) & X_REGISTERED) !== 0) {
    return registry.get(d.name(d.ld(slot, W_EXPNAME)));
  }
  return undefined;
}

// A release request queued for an owner thread that was reaped (terminated): its op can never
// run, so finish the release without it, as when the owner has left normally.
onMailReap(MAIL_DMABUF_RELEASE, (slot, gen) => {
  const d = domain();
  if (d.gen(slot) === gen) finishRelease(d, slot, gen, undefined, undefined);
});

function ensureMail(d: Domain): number {
  const t = d.threadIndex();
  if (!mailReady) {
    mailReady = true;
    d.onMail(MAIL_DMABUF_RELEASE, (slot, gen) => {
      const dd = domain();
      if (dd.gen(slot) !== gen) return;
      finishRelease(dd, slot, gen, opsHere(dd, slot, gen), undefined);
    });
    d.listen();
  }
  return t;
}

// ---- release ------------------------------------------------------------------------------------

/** Drops a reference; `memory` is the caller's view of the buffer's memory (for release). */
function putBuf(slot: number, memory?: BufferMemory): void {
  const d = domain();
  if (!d.put(slot)) return;
  const gen = d.gen(slot);
  const ops = opsHere(d, slot, gen);
  if (ops) {
    finishRelease(d, slot, gen, ops, memory);
    return;
  }
  const owner = d.ld(slot, W_OWNER) - 1;
  if (owner >= 0 && d.post(owner, MAIL_DMABUF_RELEASE, slot, gen)) return;
  // The owner thread is gone: nobody can run the op any more.
  finishRelease(d, slot, gen, undefined, memory);
}

function finishRelease(
  d: Domain,
  slot: number,
  gen: number,
  ops: DmaBufOps | undefined,
  memory: BufferMemory | undefined,
): void {
  const vmaps = d.ld(slot, W_VMAP);
  const attached = d.ld(slot, W_ATTACH);
  if (attached !== 0) {
    process.emitWarning(`dma-buf released with ${attached} attachment(s) left`, 'DmaBufWarning');
  }
  const buf = new DmaBuf(ADOPT, slot, gen, false, memory ?? localOf(slot, gen)?.memory ?? EMPTY);
  const node = listNode(d, slot);
  if (node >= 0) dmaBufListDel(d, node);
  try {
    ops?.release(buf);
  } finally {
    const resv = d.ld(slot, W_RESV);
    local.delete(slot);
    d.free(slot);
    if (d.put(resv)) resvRelease(d, resv);
  }
  if (vmaps !== 0) throw new Error(`BUG: dma-buf released while vmapped (${vmaps})`);
}

const bufKind = new HandleKind('dma-buf', RecordType.DMA_BUF, (slot) => putBuf(slot));
const ADOPT: unique symbol = Symbol('adopt-dma-buf');
const EMPTY: BufferMemory = new Memory([]);

/** The message `share()` returns: a shared-object message plus the memory. */
export interface DmaBufMessage extends SharedMessage {
  readonly memory: BufferMemoryDescriptor;
  /** Live non-coherent device mappings known to the sharing thread (dma-buf-ncsync.ts). */
  readonly nc?: readonly NcEntry[];
}

/** `fdinfo` of a dma-buf. */
export interface DmaBufInfo {
  size: number;
  /** File references minus one (as fdinfo prints it). */
  count: number;
  expName: string;
  /** Null when unset. */
  name: string | null;
  ino: bigint;
  /** `f_flags & (O_ACCMODE | O_NONBLOCK)`. */
  flags: number;
  /** `FMODE_READ | FMODE_WRITE` bits. */
  mode: number;
}

/** Options of mmap. */
export interface DmaBufMmapOptions {
  /** Page offset into the buffer (the kernel's `pgoff`, an unsigned 64-bit value; default 0). */
  pgoff?: number | bigint;
  /** Bytes, rounded up to pages (default: every whole page of the buffer). */
  length?: number;
  /** `PROT_*` (default `PROT_READ | PROT_WRITE` when the file is writable, else `PROT_READ`). */
  prot?: number;
  /** `MAP_SHARED` (default) or `MAP_PRIVATE`. */
  flags?: number;
}

/** Options of the waits of CPU access. */
export interface DmaBufWaitOptions {
  /** Makes the wait interruptible: an abort throws `ERESTARTSYS`. */
  signal?: AbortSignal;
}

const U64 = 1n << 64n;

/**
 * A dma-buf handle (`struct dma_buf` / its file). Dispose it (or `using`) to put its reference.
 */
export class DmaBuf extends SharedObject {
  readonly #memory: BufferMemory;
  #resv: DmaResv | undefined;

  /** @internal */
  constructor(
    token: typeof ADOPT,
    slot: number,
    gen: number,
    owned: boolean,
    memory: BufferMemory,
  ) {
    if (token !== ADOPT) throw new TypeError('use DmaBuf.export()');
    super(slot, gen, owned);
    this.#memory = memory;
  }

  /** @internal */
  override _kind(): HandleKind {
    return bufKind;
  }

  /**
   * `dma_buf_export`: creates a buffer; the returned handle owns the first reference.
   *
   * @throws {DmaBufError} EINVAL for bad ops (see module doc), a null `priv`, a bad size or
   *   flags, or memory smaller than the size.
   */
  static export(info: DmaBufExportInfo): DmaBuf {
    if (typeof info !== 'object' || info === null) {
      throw new DmaBufError('EINVAL', 'export info missing');
    }
    if (info.priv === null || info.priv === undefined) {
      throw new DmaBufError('EINVAL', 'priv missing');
    }
    const ops = info.ops;
    checkOps(ops);
    const size = info.size;
    if (!Number.isSafeInteger(size) || size < 0) {
      throw new DmaBufError('EINVAL', `size must be a non-negative integer, got ${size}`);
    }
    const flags = info.flags ?? O_RDWR;
    if (!Number.isInteger(flags)) throw new DmaBufError('EINVAL', 'flags must be an integer');
    const memory = info.memory;
    if (!(memory instanceof Memory)) throw new DmaBufError('EINVAL', 'memory missing');
    if (memory.byteLength < Math.ceil(size / PAGE_SIZE) * PAGE_SIZE) {
      throw new DmaBufError('EINVAL', `memory (${memory.byteLength} bytes) smaller than size`);
    }
    // The exporter this buffer belongs to: the registration under its own name when the same
    // ops object is registered under several names (one per heap, say), else any of them.
    let registeredName: string | undefined;
    if (info.expName !== undefined && registry.get(info.expName) === ops)
      registeredName = info.expName;
    else for (const [n, o] of registry) if (o === ops) registeredName = n;
    const expName = info.expName ?? registeredName ?? 'unknown';
    if (typeof expName !== 'string') throw new DmaBufError('EINVAL', 'expName must be a string');
    const registered = registeredName !== undefined && registeredName === expName;
    const d = domain();
    if (info.resv !== undefined && !(info.resv instanceof DmaResv)) {
      throw new DmaBufError('EINVAL', 'resv must be a DmaResv');
    }
    const nameId = d.intern(expName);
    const owner = ensureMail(d);
    // Resv: share the given one (+1) or create one whose reference the record takes over.
    let resvSlot: number;
    let resvGen: number;
    if (info.resv) {
      info.resv._check();
      resvSlot = info.resv._slot;
      resvGen = info.resv._gen;
      d.get(resvSlot);
    } else {
      const r = new DmaResv();
      resvSlot = r._slot;
      resvGen = r._gen;
      d.get(resvSlot);
      r.dispose();
    }
    let slot: number;
    try {
      slot = d.alloc(RecordType.DMA_BUF);
    } catch (e) {
      if (d.put(resvSlot)) resvRelease(d, resvSlot);
      throw e;
    }
    let opBits = 0;
    for (const k of OP_NAMES) if (ops[k] !== undefined) opBits |= opBit(k);
    const b = d.base(slot);
    const i32 = d.i32;
    Atomics.store(i32, b, (RecordType.DMA_BUF << TYPE_SHIFT) | (flags & FLAGS_MASK) | opBits);
    Atomics.store(i32, b + W_OWNER, owner + 1);
    Atomics.store(d.i64, d.base64(slot) + W_SIZE64, BigInt(size));
    const ino = Atomics.add(d.i64, d.globalWord(INO_GLOBAL) >> 1, 1n) + 1n;
    Atomics.store(d.i64, d.base64(slot) + W_INO64, ino);
    Atomics.store(i32, b + W_EXPNAME, nameId);
    Atomics.store(i32, b + W_RESV, resvSlot);
    Atomics.store(i32, b + W_RESVGEN, resvGen);
    Atomics.store(i32, b + W_XFLAGS, registered ? X_REGISTERED : 0);
    const gen = d.gen(slot);
    let node: number;
    try {
      node = dmaBufListAdd(d, slot, gen);
    } catch (e) {
      d.free(slot);
      if (d.put(resvSlot)) resvRelease(d, resvSlot);
      throw e;
    }
    const xw = d.base(slot) + W_XFLAGS; // base() first: it may refresh the views
    Atomics.or(d.i32, xw, (node + 1) << X_NODE_SHIFT);
    const l = remember(slot, gen, memory);
    l.owner = true;
    if (!registered) l.ops = ops;
    l.priv = info.priv;
    return new DmaBuf(ADOPT, slot, gen, true, memory);
  }

  /**
   * Adopts a buffer handed over by another thread (see `share()`): the same buffer, the same
   * memory.
   *
   * @throws {DmaBufError} EINVAL for a message that is not a dma-buf; EBADF when it was already
   *   imported or the buffer is gone; EXDEV for another domain's buffer.
   */
  static import(msg: DmaBufMessage): DmaBuf {
    claim(msg, bufKind);
    let memory: BufferMemory;
    try {
      memory = Memory.fromDescriptor(msg.memory);
    } catch (e) {
      putBuf(msg.slot);
      throw e;
    }
    ncAdoptAll(`${msg.slot}:${msg.gen}`, msg.nc);
    return new DmaBuf(ADOPT, msg.slot, msg.gen, true, memory);
  }

  /**
   * Finds the dma-buf behind a CPU address (seed 002: `find_vma` + `is_dma_buf_file`, as V4L2
   * userptr and GUP-based importers must do to refuse, or resolve, a dma-buf's own mapping).
   *
   * `addr` is a user "address": a {@linkcode DmaBufMapping}, a {@linkcode MemoryView}, or any
   * `ArrayBufferView` (typed array, `DataView`, `Buffer`) over shared memory; `offset` (bytes,
   * default 0) is added to its start. The answer is the buffer of a live `mmap` of this thread
   * that covers that byte: `{ buf, pgoff, offset }` with a new reference in `buf` (dispose it),
   * or `null` when no dma-buf mapping of this thread covers it (ordinary memory, an unmapped
   * mapping, an out-of-range offset).
   *
   * Importers of user memory (udmabuf, userptr) call it on every range they are given and
   * refuse a hit with `EINVAL` (or import `buf` itself at `offset`: "resolve to the original
   * buffer"). Typed arrays obtained from a mapping before it was unmapped no longer resolve.
   *
   * Limits: the lookup is per thread (the mappings of the calling thread: a typed array posted
   * from a thread that mapped the buffer resolves only if this thread maps it too); vmap views
   * are kernel addresses and are not user mappings, so they never resolve.
   *
   * @throws {DmaBufError} EINVAL for an `offset` that is not a non-negative integer.
   */
  static fromMapping(
    addr: DmaBufMapping | MemoryView | ArrayBufferView,
    offset = 0,
  ): DmaBufLookup | null {
    if (!Number.isSafeInteger(offset) || offset < 0) {
      throw new DmaBufError('EINVAL', 'offset must be a non-negative integer');
    }
    let sab: SharedArrayBuffer;
    let at: number;
    if (addr instanceof DmaBufMapping || addr instanceof MemoryView) {
      const view = addr instanceof DmaBufMapping ? addr.view : addr;
      if (offset >= view.byteLength) return null;
      let rest = offset;
      let found: Uint8Array | undefined;
      for (const p of view._pieces()) {
        if (rest < p.byteLength) {
          found = p;
          break;
        }
        rest -= p.byteLength;
      }
      if (!found) return null;
      sab = found.buffer as SharedArrayBuffer;
      at = found.byteOffset + rest;
    } else if (ArrayBuffer.isView(addr)) {
      if (!(addr.buffer instanceof SharedArrayBuffer) || offset >= addr.byteLength) return null;
      sab = addr.buffer;
      at = addr.byteOffset + offset;
    } else {
      return null;
    }
    for (const m of liveMappings) {
      const o = m._locate(sab, at);
      if (o < 0) continue;
      const buf = m._buffer();
      if (!buf) continue;
      return { buf, pgoff: Math.floor(o / PAGE_SIZE), offset: o };
    }
    return null;
  }

  /** Gives back the reference of a message that will never be imported. */
  static override releaseShared(msg: SharedMessage): void {
    SharedObject.releaseShared(msg, bufKind);
  }

  /** A message for `DmaBuf.import` in another thread (holds a reference until imported). */
  override share(): DmaBufMessage {
    const m = super.share();
    return { ...m, memory: this.#memory.descriptor(), nc: ncEntries(bufKey(this)) };
  }

  /** `get_dma_buf`: a new reference as a new handle. */
  get(): DmaBuf {
    const d = this._check();
    d.get(this._slot);
    return new DmaBuf(ADOPT, this._slot, this._gen, true, this.#memory);
  }

  /** Puts this handle's reference (and its cached resv handle). Idempotent. */
  override dispose(): void {
    this.#resv?.dispose();
    this.#resv = undefined;
    if (this._state !== 0) {
      super.dispose(); // disposed: nothing; borrowed: throws EINVAL
      return;
    }
    this._state = 1;
    bufKind.net.untrack(this);
    putBuf(this._slot, this.#memory);
  }

  // ---- properties ----

  /** Bytes. */
  get size(): number {
    const d = this._check();
    return Number(Atomics.load(d.at64(this._slot), d.base64(this._slot) + W_SIZE64));
  }

  /** The inode number (unique, never reused). */
  get ino(): bigint {
    const d = this._check();
    return Atomics.load(d.at64(this._slot), d.base64(this._slot) + W_INO64);
  }

  /** The exporter's name (`exp_name`). */
  get expName(): string {
    const d = this._check();
    return d.name(d.ld(this._slot, W_EXPNAME));
  }

  /** `f_flags & (O_ACCMODE | O_NONBLOCK)`. */
  get flags(): number {
    const d = this._check();
    return d.ld(this._slot, 0) & FLAGS_MASK;
  }

  /** `FMODE_READ` / `FMODE_WRITE` derived from the access mode. */
  get mode(): number {
    return (this.flags + 1) & O_ACCMODE;
  }

  /** The memory (same in every thread). */
  get memory(): BufferMemory {
    this._check();
    return this.#memory;
  }

  /** The exporter's private data: in the owner thread only, else undefined. */
  get priv(): unknown {
    this._check();
    return localOf(this._slot, this._gen)?.priv;
  }

  /** File references (every handle, mapping and in-flight message). */
  get refcount(): number {
    const d = this._check();
    return refCount(d.ld(this._slot, R_REF));
  }

  /** Number of attachments (all threads). */
  get attachmentCount(): number {
    const d = this._check();
    return d.ld(this._slot, W_ATTACH);
  }

  /** The vmap count (all threads). */
  get vmapCount(): number {
    const d = this._check();
    return d.ld(this._slot, W_VMAP);
  }

  /**
   * The reservation object (`dmabuf->resv`), borrowed: it lives as long as this handle, do not
   * dispose it.
   */
  get resv(): DmaResv {
    const d = this._check();
    if (this.#resv?.alive) return this.#resv;
    const slot = d.ld(this._slot, W_RESV);
    const gen = d.ld(this._slot, W_RESVGEN);
    d.get(slot);
    const msg: SharedMessage = {
      $dmabuf: 'dma-resv',
      domain: d.descriptor(),
      slot,
      gen,
      claim: new SharedArrayBuffer(4),
    };
    this.#resv = DmaResv.import(msg);
    return this.#resv;
  }

  /** The name set by SET_NAME, or null. */
  get name(): string | null {
    const d = this._check();
    lockName(d, this._slot);
    try {
      const len = d.ld(this._slot, W_NAMELEN);
      if (len === 0) return null;
      const words = new Int32Array(8);
      for (let i = 0; i < 8; i++) words[i] = d.ld(this._slot, W_NAME + i);
      return Buffer.from(words.buffer, 0, len - 1).toString('utf8');
    } finally {
      unlockName(d, this._slot);
    }
  }

  /** fdinfo. */
  info(): DmaBufInfo {
    return {
      size: this.size,
      count: this.refcount - 1,
      expName: this.expName,
      name: this.name,
      ino: this.ino,
      flags: this.flags,
      mode: this.mode,
    };
  }

  #ops(op: OpName): DmaBufOps | undefined {
    const d = this._check();
    if ((d.ld(this._slot, 0) & opBit(op)) === 0) return undefined;
    const ops = opsHere(d, this._slot, this._gen);
    if (!ops) {
      throw new DmaBufError(
        'ENOENT',
        `exporter '${this.expName}' is not available in this thread (op ${op}): register it with registerDmaBufExporter or call from the exporting thread`,
      );
    }
    return ops;
  }

  // ---- uAPI ----

  /**
   * `DMA_BUF_SET_NAME`: a string (at most 31 UTF-8 bytes; the name ends at an embedded NUL) or
   * the bytes of a NUL-terminated string.
   *
   * @throws {DmaBufError} EINVAL when no NUL comes within 32 bytes; EFAULT when a byte buffer
   *   ends before its NUL.
   */
  setName(name: string | Uint8Array): void {
    const d = this._check();
    let bytes: Uint8Array;
    if (typeof name === 'string') {
      const nul = name.indexOf('\0');
      bytes = Buffer.from(nul >= 0 ? name.slice(0, nul) : name, 'utf8');
    } else if (name instanceof Uint8Array) {
      const lim = Math.min(name.length, DMA_BUF_NAME_LEN);
      const nul = name.subarray(0, lim).indexOf(0);
      if (nul < 0) {
        if (name.length < DMA_BUF_NAME_LEN) {
          throw new DmaBufError('EFAULT', 'name buffer ends before its NUL');
        }
        throw new DmaBufError('EINVAL', `name longer than ${DMA_BUF_NAME_LEN - 1} bytes`);
      }
      bytes = name.subarray(0, nul);
    } else {
      throw new DmaBufError('EFAULT', 'name must be a string or bytes');
    }
    if (bytes.length > DMA_BUF_NAME_LEN - 1) {
      throw new DmaBufError('EINVAL', `name longer than ${DMA_BUF_NAME_LEN - 1} bytes`);
    }
    const padded = new Uint8Array(32);
    padded.set(bytes);
    const words = new Int32Array(padded.buffer);
    lockName(d, this._slot);
    try {
      for (let i = 0; i < 8; i++) d.st(this._slot, W_NAME + i, words[i]!);
      d.st(this._slot, W_NAMELEN, bytes.length + 1);
    } finally {
      unlockName(d, this._slot);
    }
  }

  /**
   * `llseek`: only `SEEK_SET` / `SEEK_END` with offset 0 (returns 0 or the size).
   *
   * @throws {DmaBufError} EINVAL otherwise.
   */
  llseek(offset: number, whence: number): number {
    const size = this.size;
    if (offset !== 0) throw new DmaBufError('EINVAL', 'dma-buf llseek: offset must be 0');
    if (whence === SEEK_SET) return 0;
    if (whence === SEEK_END) return size;
    throw new DmaBufError('EINVAL', 'dma-buf llseek: only SEEK_SET and SEEK_END');
  }

  // ---- mmap ----

  /**
   * `mmap` on the buffer (the VFS checks, then `dma_buf_mmap_internal`). The mapping holds a
   * reference until `unmap()`/dispose.
   *
   * @throws {DmaBufError} see the module doc (EINVAL, EOVERFLOW, EACCES, ENOENT, the exporter's).
   */
  mmap(opts: DmaBufMmapOptions = {}): DmaBufMapping {
    const d = this._check();
    const mode = this.mode;
    const size = this.size;
    const prot = opts.prot ?? (mode & FMODE_WRITE ? PROT_READ | PROT_WRITE : PROT_READ);
    const flags = opts.flags ?? MAP_SHARED;
    if (!Number.isInteger(prot) || (prot & ~(PROT_READ | PROT_WRITE)) !== 0) {
      throw new DmaBufError('EINVAL', 'bad prot');
    }
    if (flags !== MAP_SHARED && flags !== MAP_PRIVATE) {
      throw new DmaBufError('EINVAL', 'flags must be MAP_SHARED or MAP_PRIVATE');
    }
    const pgoffIn = opts.pgoff ?? 0;
    let pgoff: bigint;
    if (typeof pgoffIn === 'bigint') pgoff = pgoffIn;
    else if (Number.isSafeInteger(pgoffIn)) pgoff = BigInt(pgoffIn);
    else throw new DmaBufError('EINVAL', 'pgoff must be an integer');
    if (pgoff < 0n || pgoff >= U64) throw new DmaBufError('EINVAL', 'pgoff outside 64 bits');
    const length = opts.length ?? Math.floor(size / PAGE_SIZE) * PAGE_SIZE;
    if (!Number.isSafeInteger(length) || length <= 0) {
      throw new DmaBufError('EINVAL', 'mmap length must be a positive integer');
    }
    const npages = Math.ceil(length / PAGE_SIZE);
    // VFS (do_mmap).
    if (pgoff + BigInt(npages) >= U64) throw new DmaBufError('EOVERFLOW', 'pgoff + pages wraps');
    if ((mode & FMODE_READ) === 0) throw new DmaBufError('EACCES', 'file not open for reading');
    if (flags === MAP_SHARED && prot & PROT_WRITE && (mode & FMODE_WRITE) === 0) {
      throw new DmaBufError('EACCES', 'shared writable mapping of a read-only dma-buf');
    }
    if (flags === MAP_PRIVATE && prot & PROT_WRITE) {
      throw new DmaBufError('EINVAL', 'copy-on-write mappings of a dma-buf are not supported');
    }
    // dma-buf.
    const ops = this.#ops('mmap');
    if (!ops?.mmap) throw new DmaBufError('EINVAL', 'exporter has no mmap');
    if (pgoff + BigInt(npages) > BigInt(size >> PAGE_SHIFT)) {
      throw new DmaBufError('EINVAL', 'mapping past the end of the buffer');
    }
    ops.mmap(this, { pgoff, npages, prot, flags });
    d.get(this._slot);
    const start = Number(pgoff) * PAGE_SIZE;
    const mayWrite = flags === MAP_SHARED && (mode & FMODE_WRITE) !== 0;
    return new DmaBufMapping(
      this._slot,
      this._gen,
      this.#memory,
      start,
      npages * PAGE_SIZE,
      prot,
      mayWrite,
      Number(pgoff),
    );
  }

  // ---- vmap ----

  /**
   * `dma_buf_vmap` (resv held): a kernel-virtual-address view of the whole buffer, counted per
   * buffer (the exporter runs on the first vmap only).
   *
   * @throws {DmaBufError} EPERM without the resv lock; EINVAL without a vmap op; ENOENT; the
   *   exporter's error (the count stays 0).
   */
  vmap(): IosysMap {
    const d = this._check();
    this.resv.assertHeld();
    const ops = this.#ops('vmap');
    if (!ops?.vmap) throw new DmaBufError('EINVAL', 'exporter has no vmap');
    const w = d.base(this._slot) + W_VMAP;
    if (Atomics.load(d.i32, w) === 0) {
      ops.vmap(this);
    }
    Atomics.add(d.i32, d.base(this._slot) + W_VMAP, 1);
    const l = remember(this._slot, this._gen, this.#memory);
    l.vmaps++;
    if (!l.vmap) {
      const writable = (this.mode & FMODE_WRITE) !== 0;
      const vaddr = new MemoryView(this.#memory.pieces(0, this.#memory.byteLength), {
        writable: () => writable,
        readable: () => true,
        check: () => {
          if (localOf(this._slot, this._gen)?.vmap !== map) {
            throw new DmaBufError('EBADF', 'vmap is gone');
          }
        },
      });
      const map: IosysMap = { vaddr, isIomem: false };
      l.vmap = map;
    }
    return l.vmap;
  }

  /**
   * `dma_buf_vunmap` (resv held). The exporter runs when the count reaches 0.
   *
   * @throws {Error} "BUG:" when the buffer is not vmapped or `map` is not its map.
   * @throws {DmaBufError} EPERM without the resv lock.
   */
  vunmap(map: IosysMap): void {
    const d = this._check();
    this.resv.assertHeld();
    const l = localOf(this._slot, this._gen);
    const w = d.base(this._slot) + W_VMAP;
    if (Atomics.load(d.i32, w) <= 0 || !l || l.vmap !== map) {
      throw new Error('BUG: dma_buf_vunmap without a matching vmap');
    }
    const ops = this.#ops('vunmap');
    if (--l.vmaps === 0) {
      l.vmap = undefined;
      if (!l.owner) local.delete(this._slot);
    }
    if (Atomics.sub(d.i32, d.base(this._slot) + W_VMAP, 1) === 1) ops?.vunmap?.(this);
  }

  /** `dma_buf_vmap_unlocked`: takes the resv lock around {@linkcode DmaBuf.vmap}. */
  vmapUnlocked(): IosysMap {
    const resv = this.resv;
    resv.lock();
    try {
      return this.vmap();
    } finally {
      resv.unlock();
    }
  }

  /** `dma_buf_vunmap_unlocked`. */
  vunmapUnlocked(map: IosysMap): void {
    const resv = this.resv;
    resv.lock();
    try {
      this.vunmap(map);
    } finally {
      resv.unlock();
    }
  }

  // ---- CPU access ----

  #cpuOp(dir: DmaDataDirection, which: 'beginCpuAccess' | 'endCpuAccess'): void {
    if (!isDmaDirection(dir)) throw new DmaBufError('EINVAL', `bad direction ${String(dir)}`);
    this.#ops(which)?.[which]?.(this, dir);
  }

  /**
   * `dma_buf_begin_cpu_access`: the exporter's op, then a wait for the fences the access must
   * follow (write intent — TO_DEVICE or BIDIRECTIONAL — waits for everything up to READ, read
   * intent for KERNEL and WRITE). Never waits for BOOKKEEP fences.
   *
   * @throws {DmaBufError} EINVAL for a bad direction; ERESTARTSYS when `signal` aborts; the
   *   exporter's error (then no wait).
   */
  async beginCpuAccess(dir: DmaDataDirection, opts: DmaBufWaitOptions = {}): Promise<void> {
    this.#cpuOp(dir, 'beginCpuAccess');
    await this.resv.wait(cpuUsage(dir), { signal: opts.signal });
  }

  /** The blocking form of {@linkcode DmaBuf.beginCpuAccess}. */
  beginCpuAccessSync(dir: DmaDataDirection, opts: DmaBufWaitOptions = {}): void {
    this.#cpuOp(dir, 'beginCpuAccess');
    this.resv.waitSync(cpuUsage(dir), { signal: opts.signal });
  }

  /** `dma_buf_end_cpu_access`: the exporter's op; never waits. */
  endCpuAccess(dir: DmaDataDirection): void {
    this.#cpuOp(dir, 'endCpuAccess');
  }

  /**
   * `DMA_BUF_IOCTL_SYNC`: `START`/`END` with `READ`/`WRITE`/`RW`.
   *
   * @throws {DmaBufError} EINVAL for unknown bits or no READ/WRITE bit; what begin/end throw.
   */
  async sync(flags: number | bigint, opts: DmaBufWaitOptions = {}): Promise<void> {
    const [end, dir] = syncFlags(flags);
    if (end) this.endCpuAccess(dir);
    else await this.beginCpuAccess(dir, opts);
  }

  /** The blocking form of {@linkcode DmaBuf.sync}. */
  syncSync(flags: number | bigint, opts: DmaBufWaitOptions = {}): void {
    const [end, dir] = syncFlags(flags);
    if (end) this.endCpuAccess(dir);
    else this.beginCpuAccessSync(dir, opts);
  }

  // ---- attachments ----

  /**
   * `dma_buf_attach` / `dma_buf_dynamic_attach` (resv not held). The exporter's `attach` runs
   * first; its error is thrown as is.
   *
   * @throws {DmaBufError} EINVAL for a missing device or importer ops without `moveNotify`;
   *   ENOENT; the exporter's error.
   */
  attach(dev: Device, importerOps?: DmaBufAttachOps): DmaBufAttachment {
    const d = this._check();
    if (typeof dev !== 'object' || dev === null || typeof dev.mapSgtable !== 'function') {
      throw new DmaBufError('EINVAL', 'attach needs a device');
    }
    if (importerOps !== undefined && typeof importerOps.moveNotify !== 'function') {
      throw new DmaBufError('EINVAL', 'importer ops need moveNotify');
    }
    const a = new DmaBufAttachment(ATTACH, this, dev, importerOps);
    this.#ops('attach')?.attach?.(this, a);
    Atomics.add(d.i32, d.base(this._slot) + W_ATTACH, 1);
    const node = listNode(d, this._slot);
    if (node >= 0) dmaBufListAttach(d, node, dev.name);
    a._attached = true;
    return a;
  }

  /**
   * `dma_buf_detach`: unlinks the attachment, then the exporter's `detach`. Importers unmap
   * their mappings first (v6.15+: the core does not).
   *
   * @throws {DmaBufError} EINVAL for an attachment of another buffer or one already detached.
   */
  detach(attach: DmaBufAttachment): void {
    const d = this._check();
    if (
      !(attach instanceof DmaBufAttachment) ||
      attach.dmabuf._slot !== this._slot ||
      !attach._attached
    ) {
      throw new DmaBufError('EINVAL', 'not an attachment of this dma-buf');
    }
    attach._attached = false;
    Atomics.sub(d.i32, d.base(this._slot) + W_ATTACH, 1);
    const node = listNode(d, this._slot);
    if (node >= 0) dmaBufListDetach(d, node, attach.dev.name);
    this.#ops('detach')?.detach?.(this, attach);
  }

  /** @internal */
  _opsFor(op: OpName): DmaBufOps | undefined {
    return this.#ops(op);
  }

  /** @internal */
  _isDynamic(): boolean {
    const d = this._check();
    return (d.ld(this._slot, 0) & opBit('pin')) !== 0;
  }
}

function cpuUsage(dir: DmaDataDirection): DmaResvUsage {
  return dmaResvUsageRw(
    dir === DmaDataDirection.TO_DEVICE || dir === DmaDataDirection.BIDIRECTIONAL,
  );
}

function syncFlags(flags: number | bigint): [boolean, DmaDataDirection] {
  let f: bigint;
  if (typeof flags === 'bigint') f = flags;
  else if (Number.isSafeInteger(flags)) f = BigInt(flags);
  else throw new DmaBufError('EINVAL', 'sync flags must be an integer');
  if (f < 0n || (f & ~BigInt(DMA_BUF_SYNC_VALID_FLAGS_MASK)) !== 0n) {
    throw new DmaBufError('EINVAL', 'unknown sync flags');
  }
  const rw = Number(f & BigInt(DMA_BUF_SYNC_RW));
  if (rw === 0) throw new DmaBufError('EINVAL', 'sync needs READ and/or WRITE');
  const dir =
    rw === DMA_BUF_SYNC_READ
      ? DmaDataDirection.FROM_DEVICE
      : rw === DMA_BUF_SYNC_WRITE
        ? DmaDataDirection.TO_DEVICE
        : DmaDataDirection.BIDIRECTIONAL;
  return [(f & BigInt(DMA_BUF_SYNC_END)) !== 0n, dir];
}

/** `struct iosys_map`: the result of vmap. */
export interface IosysMap {
  /** The view (read-only when the buffer has no write mode). */
  readonly vaddr: MemoryView;
  readonly isIomem: false;
}

// ---- mappings ---------------------------------------------------------------------------------

/** The live CPU mappings of this thread (the address space's dma-buf vmas). */
const liveMappings = new Set<DmaBufMapping>();

/** What {@linkcode DmaBuf.fromMapping} finds. */
export interface DmaBufLookup {
  /** The buffer behind the address: a new reference, the caller disposes it. */
  readonly buf: DmaBuf;
  /** Page offset in the buffer (`vma->vm_pgoff` + the page of the address in the vma). */
  readonly pgoff: number;
  /** Byte offset in the buffer. */
  readonly offset: number;
}

/**
 * A CPU mapping of a buffer (the vma): a {@linkcode MemoryView} of the mapped pages plus the
 * mapping's own reference on the buffer. `unmap()` (or dispose) drops it.
 */
export class DmaBufMapping implements Disposable {
  readonly view: MemoryView;
  /** First page of the buffer mapped. */
  readonly pgoff: number;
  readonly byteLength: number;
  #prot: number;
  readonly #mayWrite: boolean;
  #slot: number;
  readonly #gen: number;
  readonly #memory: BufferMemory;
  /** Byte offset of the mapping in the buffer. */
  readonly #start: number;

  /** @internal */
  constructor(
    slot: number,
    gen: number,
    memory: BufferMemory,
    start: number,
    length: number,
    prot: number,
    mayWrite: boolean,
    pgoff: number,
  ) {
    this.#slot = slot;
    this.#gen = gen;
    this.#prot = prot;
    this.#mayWrite = mayWrite;
    this.pgoff = pgoff;
    this.byteLength = length;
    this.#memory = memory;
    this.#start = start;
    this.view = new MemoryView(memory.pieces(start, start + length), {
      writable: () => this.#slot >= 0 && (this.#prot & PROT_WRITE) !== 0,
      readable: () => (this.#prot & PROT_READ) !== 0,
      check: () => {
        if (this.#slot < 0) throw new DmaBufError('EBADF', 'mapping was unmapped');
      },
    });
    liveMappings.add(this);
  }

  /**
   * @internal Where byte `offset` of `sab` falls in this mapping's buffer, as a byte offset into
   * the buffer, or -1.
   */
  _locate(sab: SharedArrayBuffer, offset: number): number {
    if (this.#slot < 0) return -1;
    let at = 0;
    for (const p of this.view._pieces()) {
      if (p.buffer === sab && offset >= p.byteOffset && offset < p.byteOffset + p.byteLength) {
        return this.#start + at + (offset - p.byteOffset);
      }
      at += p.byteLength;
    }
    return -1;
  }

  /** @internal The buffer (a new reference), or undefined when the mapping is gone. */
  _buffer(): DmaBuf | undefined {
    if (this.#slot < 0 || domain().gen(this.#slot) !== this.#gen) return undefined;
    domain().get(this.#slot);
    return new DmaBuf(ADOPT, this.#slot, this.#gen, true, this.#memory);
  }

  /** Current protection. */
  get prot(): number {
    return this.#prot;
  }

  /** True while mapped. */
  get mapped(): boolean {
    return this.#slot >= 0;
  }

  /**
   * `mprotect`. Adding `PROT_WRITE` to a mapping that may not write (a shared mapping of a file
   * without write mode) → `EACCES`.
   */
  mprotect(prot: number): void {
    if (this.#slot < 0) throw new DmaBufError('ENOMEM', 'not mapped');
    if (!Number.isInteger(prot) || (prot & ~(PROT_READ | PROT_WRITE)) !== 0) {
      throw new DmaBufError('EINVAL', 'bad prot');
    }
    if (prot & PROT_WRITE && !this.#mayWrite) {
      throw new DmaBufError('EACCES', 'mapping may not become writable');
    }
    this.#prot = prot;
  }

  // Shortcuts to the view.
  get(i: number): number {
    return this.view.get(i);
  }
  set(i: number, v: number): void {
    this.view.set(i, v);
  }
  read(offset: number, into: Uint8Array): Uint8Array {
    return this.view.read(offset, into);
  }
  write(offset: number, src: Uint8Array): void {
    this.view.write(offset, src);
  }
  slice(start?: number, end?: number): Uint8Array {
    return this.view.slice(start, end);
  }
  /** One writable `Uint8Array` over the mapping (contiguous mappings; see MemoryView). */
  get u8(): Uint8Array {
    return this.view.u8;
  }
  /** Writable `Uint8Array`s, one per contiguous piece. */
  get chunks(): Uint8Array[] {
    return this.view.chunks;
  }

  /** `munmap`: drops the mapping's reference. Idempotent. */
  unmap(): void {
    const slot = this.#slot;
    if (slot < 0) return;
    this.#slot = -1;
    liveMappings.delete(this);
    if (domain().gen(slot) === this.#gen) putBuf(slot, this.#memory);
  }

  [Symbol.dispose](): void {
    this.unmap();
  }
}

// ---- attachments --------------------------------------------------------------------------------

/** `struct dma_buf_attach_ops` (dynamic importers). */
export interface DmaBufAttachOps {
  allowPeer2peer?: boolean;
  moveNotify(attach: DmaBufAttachment): void;
}

const ATTACH: unique symbol = Symbol('attach');

/** `struct dma_buf_attachment` (thread-local). */
export class DmaBufAttachment {
  readonly dmabuf: DmaBuf;
  readonly dev: Device;
  readonly importerOps: DmaBufAttachOps | undefined;
  readonly peer2peer: boolean;
  /** Exporter's per-attachment data. */
  priv: unknown;
  /** Importer's per-attachment data. */
  importerPriv: unknown;
  /** @internal */ _attached = false;

  /** @internal */
  constructor(
    token: typeof ATTACH,
    buf: DmaBuf,
    dev: Device,
    importerOps: DmaBufAttachOps | undefined,
  ) {
    if (token !== ATTACH) throw new TypeError('use DmaBuf.attach()');
    this.dmabuf = buf;
    this.dev = dev;
    this.importerOps = importerOps;
    this.peer2peer = importerOps?.allowPeer2peer ?? false;
  }

  /** True for an attachment made with importer ops. */
  get dynamic(): boolean {
    return this.importerOps !== undefined;
  }

  #pinOnMap(): boolean {
    return !this.dynamic && this.dmabuf._isDynamic();
  }

  /**
   * `dma_buf_map_attachment` (resv held): the exporter's table for this device. Static importers
   * then wait for KERNEL fences.
   *
   * @throws {DmaBufError} EINVAL for a detached attachment or a bad direction; EPERM without the
   *   resv lock; ENOMEM when the exporter returns null; the exporter's error; ERESTARTSYS.
   */
  map(dir: DmaDataDirection, opts: DmaBufWaitOptions = {}): SgTable {
    if (!this._attached) throw new DmaBufError('EINVAL', 'attachment is detached');
    if (!isDmaDirection(dir)) throw new DmaBufError('EINVAL', `bad direction ${String(dir)}`);
    const buf = this.dmabuf;
    buf.resv.assertHeld();
    const ops = buf._opsFor('map');
    if (!ops) throw new DmaBufError('EINVAL', 'no map op');
    const pin = this.#pinOnMap();
    if (pin) buf._opsFor('pin')?.pin?.(this);
    let sgt: SgTable | null;
    try {
      sgt = ops.map(this, dir);
      if (sgt === null) throw new DmaBufError('ENOMEM', 'exporter returned no table');
      if (!(sgt instanceof SgTable))
        throw new DmaBufError('EINVAL', 'exporter map must return an SgTable');
    } catch (e) {
      if (pin) buf._opsFor('unpin')?.unpin?.(this);
      throw e;
    }
    if (!this.dynamic) {
      try {
        buf.resv.waitSync(DmaResvUsage.KERNEL, { signal: opts.signal });
      } catch (e) {
        ops.unmap(this, sgt, dir);
        if (pin) buf._opsFor('unpin')?.unpin?.(this);
        throw e;
      }
    }
    if (dmaDebugEnabled()) sgt._scrambled = true;
    return sgt;
  }

  /**
   * `dma_buf_unmap_attachment` (resv held).
   *
   * @throws {DmaBufError} EPERM without the resv lock; EINVAL for a non-table.
   */
  unmap(sgt: SgTable, dir: DmaDataDirection): void {
    const buf = this.dmabuf;
    buf.resv.assertHeld();
    if (!(sgt instanceof SgTable)) throw new DmaBufError('EINVAL', 'not an sg table');
    sgt._scrambled = false;
    buf._opsFor('unmap')?.unmap(this, sgt, dir);
    if (this.#pinOnMap()) buf._opsFor('unpin')?.unpin?.(this);
  }

  /** `dma_buf_map_attachment_unlocked`. */
  mapUnlocked(dir: DmaDataDirection, opts: DmaBufWaitOptions = {}): SgTable {
    const resv = this.dmabuf.resv;
    resv.lock();
    try {
      return this.map(dir, opts);
    } finally {
      resv.unlock();
    }
  }

  /** `dma_buf_unmap_attachment_unlocked`. */
  unmapUnlocked(sgt: SgTable, dir: DmaDataDirection): void {
    const resv = this.dmabuf.resv;
    resv.lock();
    try {
      this.unmap(sgt, dir);
    } finally {
      resv.unlock();
    }
  }
}

// ---- debug access (dma-buf-bufinfo.ts) ------------------------------------------------------------

/**
 * @internal A handle adopting a reference already taken on buffer (slot, gen) (the global list's
 * walk); its memory is this thread's view when it has one, else empty.
 */
export function _dmaBufAdopt(slot: number, gen: number): DmaBuf {
  return new DmaBuf(ADOPT, slot, gen, true, localOf(slot, gen)?.memory ?? EMPTY);
}

// ---- exporter helpers ---------------------------------------------------------------------------

/**
 * The generic `map` of a memory-backed exporter: a fresh table over the buffer's memory,
 * mapped for the attachment's device. A mapping for a non-coherent device is entered in the
 * buffer's list of live non-coherent mappings, which every thread sees (dma-buf-ncsync.ts).
 */
export function dmaBufMapMemory(attach: DmaBufAttachment, dir: DmaDataDirection): SgTable {
  const sgt = SgTable.fromMemory(attach.dmabuf.memory);
  attach.dev.mapSgtable(sgt, dir);
  if (!attach.dev.coherent) {
    const key = bufKey(attach.dmabuf);
    ncIds.set(sgt, { key, id: ncRegister(key, attach.dev._ncPages(sgt)) });
  }
  return sgt;
}

/** Non-coherent tables mapped by {@linkcode dmaBufMapMemory} in this thread. */
const ncIds = new WeakMap<SgTable, { key: string; id: string }>();

function bufKey(buf: DmaBuf): string {
  return `${buf._slot}:${buf._gen}`;
}

/**
 * The generic `begin_cpu_access` of a memory-backed exporter (the system heap's): every live
 * table mapped by {@linkcode dmaBufMapMemory} for a non-coherent device, in any thread, is synced
 * for the CPU (`dma_sync_sgtable_for_cpu(attach.dev, table, dir)`), so the device's writes reach
 * memory before the CPU reads (`DMA_BUF_SYNC_START`). Coherent devices need nothing.
 */
export function dmaBufBeginCpuAccessMemory(buf: DmaBuf, dir: DmaDataDirection): void {
  ncSyncBufferForCpu(bufKey(buf), dir);
}

/**
 * The generic `end_cpu_access`: every live non-coherent table of the buffer, in any thread, is
 * synced for its device (`dma_sync_sgtable_for_device`), so the CPU's writes reach the device's
 * copy (`DMA_BUF_SYNC_END`).
 */
export function dmaBufEndCpuAccessMemory(buf: DmaBuf, dir: DmaDataDirection): void {
  ncSyncBufferForDevice(bufKey(buf), dir);
}

/** The generic `unmap` matching {@linkcode dmaBufMapMemory}. */
export function dmaBufUnmapMemory(
  attach: DmaBufAttachment,
  sgt: SgTable,
  dir: DmaDataDirection,
): void {
  const nc = ncIds.get(sgt);
  if (nc) {
    ncIds.delete(sgt);
    ncUnregister(nc.key, nc.id);
  }
  attach.dev.unmapSgtable(sgt, dir);
}

/** Live non-coherent device mappings of `buf` known to this thread (all threads'; tests). */
export function dmaBufNoncoherentMappings(buf: DmaBuf): number {
  return ncMappingCount(bufKey(buf));
}

/** Ops of a plain memory-backed exporter (`mmap`, map/unmap through the memory, no-op release). */
export function memoryExporterOps(release: (buf: DmaBuf) => void = () => {}): DmaBufOps {
  return {
    map: dmaBufMapMemory,
    unmap: dmaBufUnmapMemory,
    release,
    mmap: () => {},
    vmap: () => {},
    vunmap: () => {},
    beginCpuAccess: dmaBufBeginCpuAccessMemory,
    endCpuAccess: dmaBufEndCpuAccessMemory,
  };
}
