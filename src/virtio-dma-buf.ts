/**
 * virtio dma-bufs (drivers/virtio/virtio_dma_buf.c, include/linux/virtio_dma_buf.h) and the
 * virtio-gpu UUID round trip (virtgpu_prime.c, virtgpu_vq.c; seed 003).
 *
 * A virtio dma-buf is a dma-buf whose exporter can report a UUID that names the buffer to every
 * virtio device of the same host. It is recognised by its ops, not by a flag:
 * {@linkcode isVirtioDmaBuf} is true only when the buffer's `attach` op **is**
 * {@linkcode virtioDmaBufAttach} (pointer identity, as the kernel compares `ops->attach`).
 * {@linkcode virtioDmaBufExport} refuses ops whose `attach` is anything else, or without
 * `getUuid` (`EINVAL`). For the test to work in every thread the exporter's ops must be
 * registered (`registerDmaBufExporter`); in a thread that cannot run a thread-local exporter's
 * ops the answer is false.
 *
 * The virtio-gpu model:
 * - {@linkcode VirtioHost}: the host (one thread). It assigns UUIDs and resolves them back to
 *   buffers. It holds no reference on a buffer: resolving takes one only if the buffer is still
 *   alive (`get_unless_zero`), else `ENOENT`.
 * - {@linkcode VirtioGpuDevice}: a guest device in any thread, talking to the host over a
 *   `MessagePort` (its virtqueue; {@linkcode VirtioHost.connect} gives the channel).
 *   `export()` creates a resource and exports it as a virtio dma-buf, queues `ASSIGN_UUID` and
 *   returns at once (state INITIALIZING). The host's answer, handled by the device's port,
 *   stores the UUID (state OK, or ERR for a device without the feature) and wakes the waiters.
 *   `getUuid` (the exporter op, any thread that has the channel's table) waits, without timeout
 *   and uninterruptibly, until the state leaves INITIALIZING: OK → the UUID, anything else →
 *   `ENODEV`. `importByUuid()` asks the host for the buffer of a UUID: the same buffer (same
 *   inode, same memory).
 *
 * The UUID states live in a shared table (one per host) so that any thread holding the buffer
 * can wait for its UUID.
 *
 * @module
 */

import { randomUUID } from 'node:crypto';
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import {
  DmaBuf,
  type DmaBufAttachment,
  type DmaBufExportInfo,
  type DmaBufMessage,
  type DmaBufOps,
  dmaBufBeginCpuAccessMemory,
  dmaBufEndCpuAccessMemory,
  dmaBufMapMemory,
  dmaBufUnmapMemory,
  O_RDWR,
  registerDmaBufExporter,
} from './dma-buf.js';
import { BufferMemory, pageAlign } from './dma-buf-memory.js';
import { domain, RecordType } from './substrate/domain.js';
import { DmaBufError, type ErrnoName } from './substrate/errno.js';

/** `struct virtio_dma_buf_ops`: dma-buf ops whose `attach` is {@linkcode virtioDmaBufAttach}. */
export interface VirtioDmaBufOps extends DmaBufOps {
  /** Called by {@linkcode virtioDmaBufAttach}; its error fails the attach. */
  deviceAttach?(buf: DmaBuf, attach: DmaBufAttachment): void;
  /** The buffer's UUID (may wait for the host). */
  getUuid(buf: DmaBuf): Promise<string>;
}

/** `virtio_dma_buf_attach`: the `attach` op every virtio dma-buf must use. */
export function virtioDmaBufAttach(buf: DmaBuf, attach: DmaBufAttachment): void {
  const ops = buf._opsFor('attach') as VirtioDmaBufOps | undefined;
  ops?.deviceAttach?.(buf, attach);
}

/**
 * `virtio_dma_buf_export`.
 *
 * @throws {DmaBufError} EINVAL when the ops are missing, their `attach` is not
 *   {@linkcode virtioDmaBufAttach} or `getUuid` is missing; what `DmaBuf.export` throws.
 */
export function virtioDmaBufExport(info: DmaBufExportInfo & { ops: VirtioDmaBufOps }): DmaBuf {
  const ops = info?.ops as VirtioDmaBufOps | undefined;
  if (typeof ops !== 'object' || ops === null) throw new DmaBufError('EINVAL', 'ops missing');
  if (ops.attach !== virtioDmaBufAttach) {
    throw new DmaBufError('EINVAL', 'virtio dma-buf ops must use virtioDmaBufAttach');
  }
  if (typeof ops.getUuid !== 'function') throw new DmaBufError('EINVAL', 'getUuid missing');
  return DmaBuf.export(info);
}

/** `is_virtio_dma_buf`: the buffer's `attach` op is {@linkcode virtioDmaBufAttach}. */
export function isVirtioDmaBuf(buf: DmaBuf): boolean {
  if (!(buf instanceof DmaBuf)) return false;
  buf._check();
  try {
    return buf._opsFor('attach')?.attach === virtioDmaBufAttach;
  } catch {
    return false;
  }
}

/**
 * `virtio_dma_buf_get_uuid`.
 *
 * @throws {DmaBufError} EINVAL for a buffer that is not a virtio dma-buf; the exporter's error
 *   (virtio-gpu: ENODEV when the host assigned none).
 */
export async function virtioDmaBufGetUuid(buf: DmaBuf): Promise<string> {
  if (!isVirtioDmaBuf(buf)) throw new DmaBufError('EINVAL', 'not a virtio dma-buf');
  const ops = buf._opsFor('attach') as VirtioDmaBufOps;
  return ops.getUuid(buf);
}

// ---- the UUID table ------------------------------------------------------------------------

/** `bo->uuid_state`. */
export const VirtioUuidState = { INITIALIZING: 0, OK: 1, ERR: 2 } as const;
export type VirtioUuidState = (typeof VirtioUuidState)[keyof typeof VirtioUuidState];

const ENTRIES = 1024;
const E_WORDS = 8; // ino (2 words), used, state, uuid (4 words)
const E_USED = 2;
const E_STATE = 3;
const E_UUID = 4;
const T_LOCK = 0;
const T_BASE = 8;

/** Every table this thread knows (one per host). */
const tables = new Set<SharedArrayBuffer>();

function lockTable(t: Int32Array): void {
  while (Atomics.compareExchange(t, T_LOCK, 0, 1) !== 0) {
    // A few stores under the lock.
  }
}

function findEntry(ino: bigint): { t: Int32Array; w: number } | undefined {
  for (const sab of tables) {
    const t = new Int32Array(sab);
    const i64 = new BigInt64Array(sab);
    for (let i = 0; i < ENTRIES; i++) {
      const w = T_BASE + i * E_WORDS;
      if (Atomics.load(t, w + E_USED) === 1 && Atomics.load(i64, w >> 1) === ino) return { t, w };
    }
  }
  return undefined;
}

function addEntry(sab: SharedArrayBuffer, ino: bigint): number {
  const t = new Int32Array(sab);
  const i64 = new BigInt64Array(sab);
  lockTable(t);
  try {
    for (let i = 0; i < ENTRIES; i++) {
      const w = T_BASE + i * E_WORDS;
      if (Atomics.load(t, w + E_USED) !== 0) continue;
      Atomics.store(i64, w >> 1, ino);
      Atomics.store(t, w + E_STATE, VirtioUuidState.INITIALIZING);
      Atomics.store(t, w + E_USED, 1);
      return w;
    }
  } finally {
    Atomics.store(t, T_LOCK, 0);
  }
  throw new DmaBufError('ENOMEM', 'virtio UUID table full');
}

function uuidToWords(uuid: string): Int32Array {
  const bytes = Buffer.from(uuid.replace(/-/g, ''), 'hex');
  const out = new Int32Array(4);
  new Uint8Array(out.buffer).set(bytes.subarray(0, 16));
  return out;
}

function wordsToUuid(t: Int32Array, w: number): string {
  const words = new Int32Array(4);
  for (let i = 0; i < 4; i++) words[i] = Atomics.load(t, w + E_UUID + i);
  const h = Buffer.from(words.buffer).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** The UUID state of a virtio-gpu buffer as this thread sees it, or undefined (not found). */
export function virtioGpuUuidState(buf: DmaBuf): VirtioUuidState | undefined {
  const e = findEntry(buf.ino);
  return e ? (Atomics.load(e.t, e.w + E_STATE) as VirtioUuidState) : undefined;
}

// ---- the virtio-gpu exporter ---------------------------------------------------------------

/** The exporter name of virtio-gpu dma-bufs. */
export const VIRTIO_GPU_EXPORTER = 'virtio-gpu';

/** `virtgpu_dmabuf_ops` (registered: any thread runs them). */
export const virtioGpuDmaBufOps: VirtioDmaBufOps = {
  attach: virtioDmaBufAttach,
  map: dmaBufMapMemory,
  unmap: dmaBufUnmapMemory,
  release(buf: DmaBuf) {
    const e = findEntry(buf.ino);
    if (e) Atomics.store(e.t, e.w + E_USED, 0);
  },
  mmap() {},
  vmap() {},
  vunmap() {},
  beginCpuAccess: dmaBufBeginCpuAccessMemory,
  endCpuAccess: dmaBufEndCpuAccessMemory,
  async getUuid(buf: DmaBuf): Promise<string> {
    const e = findEntry(buf.ino);
    if (!e) throw new DmaBufError('ENODEV', 'no UUID state for this buffer in this thread');
    const sw = e.w + E_STATE;
    for (;;) {
      const s = Atomics.load(e.t, sw);
      if (s !== VirtioUuidState.INITIALIZING) break;
      const r = Atomics.waitAsync(e.t, sw, s);
      if (r.async) await r.value;
    }
    if (Atomics.load(e.t, sw) !== VirtioUuidState.OK) {
      throw new DmaBufError('ENODEV', 'the host assigned no UUID');
    }
    return wordsToUuid(e.t, e.w);
  },
};
registerDmaBufExporter(VIRTIO_GPU_EXPORTER, virtioGpuDmaBufOps);

// ---- host and devices ----------------------------------------------------------------------

/** What a device needs to talk to the host (post it with the port in the transfer list). */
export interface VirtioChannel {
  readonly port: MessagePort;
  readonly table: SharedArrayBuffer;
}

type ToHost =
  | { t: 'assign'; id: number; buf: DmaBufMessage }
  | { t: 'resolve'; id: number; uuid: string };
type ToDevice =
  | { t: 'assigned'; id: number; uuid: string | null }
  | { t: 'resolved'; id: number; buf?: DmaBufMessage; code?: string };

interface HostEntry {
  slot: number;
  gen: number;
  memory: DmaBufMessage['memory'];
}

/** Options of {@linkcode VirtioHost}. */
export interface VirtioHostOptions {
  /** Delay of each answer in ms (the round trip; default 0: next turn of the event loop). */
  latencyMs?: number;
}

/** The virtio host: assigns UUIDs and resolves them (thread-local; devices reach it by port). */
export class VirtioHost {
  readonly table = new SharedArrayBuffer((T_BASE + ENTRIES * E_WORDS) * 4);
  readonly #ports = new Set<MessagePort>();
  readonly #byUuid = new Map<string, HostEntry>();
  readonly #latency: number;

  constructor(opts: VirtioHostOptions = {}) {
    this.#latency = opts.latencyMs ?? 0;
    tables.add(this.table);
  }

  /** A new channel for one device. */
  connect(): VirtioChannel {
    const { port1, port2 } = new MessageChannel();
    this.#ports.add(port1);
    port1.on('message', (m: ToHost) => {
      setTimeout(() => this.#handle(port1, m), this.#latency);
    });
    return { port: port2, table: this.table };
  }

  /** Number of UUIDs assigned and not yet found dead. */
  get assigned(): number {
    return this.#byUuid.size;
  }

  #handle(port: MessagePort, m: ToHost): void {
    if (m.t === 'assign') {
      let uuid: string | null = null;
      try {
        const buf = DmaBuf.import(m.buf);
        uuid = randomUUID();
        this.#byUuid.set(uuid, {
          slot: buf._slot,
          gen: buf._gen,
          memory: buf.memory.descriptor(),
        });
        // The host keeps no reference (resolving takes one if the buffer still lives).
        buf.dispose();
      } catch {
        uuid = null;
      }
      this.#post(port, { t: 'assigned', id: m.id, uuid });
      return;
    }
    const e = this.#byUuid.get(m.uuid);
    const d = domain();
    if (!e || !d.tryGet(e.slot, e.gen, RecordType.DMA_BUF)) {
      if (e) this.#byUuid.delete(m.uuid);
      this.#post(port, { t: 'resolved', id: m.id, code: 'ENOENT' });
      return;
    }
    const msg: DmaBufMessage = {
      $dmabuf: 'dma-buf',
      domain: d.descriptor(),
      slot: e.slot,
      gen: e.gen,
      claim: new SharedArrayBuffer(4),
      memory: e.memory,
    };
    this.#post(port, { t: 'resolved', id: m.id, buf: msg });
  }

  #post(port: MessagePort, m: ToDevice): void {
    port.postMessage(m);
  }

  /** Closes every channel. */
  close(): void {
    for (const p of this.#ports) p.close();
    this.#ports.clear();
    tables.delete(this.table);
  }
}

/** Options of {@linkcode VirtioGpuDevice}. */
export interface VirtioGpuDeviceOptions {
  /** The host offers RESOURCE_ASSIGN_UUID (default true); without it the UUID state is ERR. */
  assignUuid?: boolean;
}

/** A virtio-gpu guest device (thread-local). */
export class VirtioGpuDevice {
  readonly #port: MessagePort;
  readonly #table: SharedArrayBuffer;
  readonly #assignUuid: boolean;
  #next = 1;
  readonly #pending = new Map<number, (m: ToDevice) => void>();

  constructor(channel: VirtioChannel, opts: VirtioGpuDeviceOptions = {}) {
    if (
      typeof channel !== 'object' ||
      channel === null ||
      !(channel.table instanceof SharedArrayBuffer)
    ) {
      throw new DmaBufError('EINVAL', 'a virtio device needs a channel');
    }
    this.#port = channel.port;
    this.#table = channel.table;
    this.#assignUuid = opts.assignUuid ?? true;
    tables.add(this.#table);
    this.#port.on('message', (m: ToDevice) => {
      const p = this.#pending.get(m.id);
      if (!p) return;
      this.#pending.delete(m.id);
      if (this.#pending.size === 0) this.#port.unref();
      p(m);
    });
    this.#port.unref();
  }

  #send(m: ToHost, onReply: (m: ToDevice) => void): void {
    this.#pending.set(m.id, onReply);
    this.#port.ref();
    this.#port.postMessage(m);
  }

  /**
   * Creates a resource of `size` bytes and exports it as a virtio dma-buf
   * (`virtgpu_gem_prime_export`): ASSIGN_UUID is queued, not waited for.
   *
   * @throws {DmaBufError} EINVAL for a bad size; ENOMEM when the UUID table is full.
   */
  export(size: number, flags = O_RDWR): DmaBuf {
    if (!Number.isSafeInteger(size) || size <= 0) {
      throw new DmaBufError('EINVAL', 'size must be a positive integer');
    }
    const buf = virtioDmaBufExport({
      ops: virtioGpuDmaBufOps,
      size,
      memory: BufferMemory.allocate(pageAlign(size)),
      flags,
      expName: VIRTIO_GPU_EXPORTER,
      priv: this,
    });
    let w: number;
    try {
      w = addEntry(this.#table, buf.ino);
    } catch (e) {
      buf.dispose();
      throw e;
    }
    const t = new Int32Array(this.#table);
    if (!this.#assignUuid) {
      Atomics.store(t, w + E_STATE, VirtioUuidState.ERR);
      return buf;
    }
    const ino = buf.ino;
    this.#send({ t: 'assign', id: this.#next++, buf: buf.share() }, (m) => {
      // virtio_gpu_cmd_resource_uuid_cb: only an INITIALIZING object becomes OK.
      const e = findEntry(ino);
      if (!e) return;
      const s = e.w + E_STATE;
      if (m.t === 'assigned' && m.uuid && Atomics.load(e.t, s) === VirtioUuidState.INITIALIZING) {
        const words = uuidToWords(m.uuid);
        for (let i = 0; i < 4; i++) Atomics.store(e.t, e.w + E_UUID + i, words[i]!);
        Atomics.store(e.t, s, VirtioUuidState.OK);
      } else {
        Atomics.store(e.t, s, VirtioUuidState.ERR);
      }
      Atomics.notify(e.t, s);
    });
    return buf;
  }

  /**
   * The buffer a UUID names, from the host: a new handle to the same buffer.
   *
   * @throws {DmaBufError} ENOENT when the host knows no live buffer by that UUID.
   */
  importByUuid(uuid: string): Promise<DmaBuf> {
    return new Promise((resolve, reject) => {
      this.#send({ t: 'resolve', id: this.#next++, uuid }, (m) => {
        if (m.t === 'resolved' && m.buf) resolve(DmaBuf.import(m.buf));
        else
          reject(
            new DmaBufError(
              ((m.t === 'resolved' && m.code) || 'ENOENT') as ErrnoName,
              `no buffer for UUID ${uuid}`,
            ),
          );
      });
    });
  }

  /** Closes the channel. */
  close(): void {
    this.#port.close();
  }
}
