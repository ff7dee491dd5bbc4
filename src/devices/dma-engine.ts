/**
 * A copy/fill DMA engine: a device whose data moves in a worker thread, through the device
 * addresses of scatter/gather tables only (the kind of engine `dmaengine` drivers program).
 *
 * The engine owns a {@linkcode Device} (`engine.device`, created in the submitting thread): an
 * importer attaches buffers to it and maps them (`attach.map`, `device.mapSgtable`) as for any
 * device. A job (`copy`, `fill`) is built by walking the tables' DMA segments (`nents`:
 * `sg_dma_address` / `sg_dma_len`); it carries only those device addresses and the device's
 * page-table entries that translate them ({@linkcode Device.exportPageTable}), never CPU pages.
 * The worker ({@linkcode DmaWindow}) performs it through the translation — IOMMU faults,
 * permissions, a non-coherent device's cache and the debug checks included — and signals the
 * job's {@linkcode DmaFence} (with an error on a fault: `-EFAULT`, `-EINVAL` for a debug report).
 * Jobs run in submission order.
 *
 * Implicit sync: `dstResv` / `srcResv` add the job's fence to reservation objects as a WRITE /
 * READ fence (the resv lock is taken around it). The engine does not wait for fences itself:
 * the submitter waits for dependencies before it submits (deviation: no in-worker waits).
 *
 * Non-coherent engines (`coherent: false`) keep their own copy of the pages they map (see
 * device.ts): data they write reaches memory at sync-for-cpu (unmap FROM_DEVICE, `syncSgtableForCpu`,
 * `DMA_BUF_SYNC_START` through a memory exporter), and CPU writes reach them at sync-for-device.
 *
 * Driver bug model (seed 003): `walk: 'origNents'` builds one descriptor per CPU entry from
 * `sg_dma_address(sg)` and the CPU length `sg->length`, as drivers that walk `orig_nents` with
 * DMA addresses do. On an IOMMU-merged table the entries past `nents` carry `DMA_MAPPING_ERROR`:
 * the job faults, and with the debug mode on the walk itself reports at submission.
 *
 * @module
 */
import { Worker } from 'node:worker_threads';
import { Device, type DeviceInit, type DmaPageTableDescriptor } from '../device.js';
import { dmaDebugEnabled } from '../dma-debug.js';
import { DmaFence } from '../dma-fence.js';
import { type DmaResv, DmaResvUsage } from '../dma-resv.js';
import type { SgTable } from '../scatterlist.js';
import { DmaBufError, type ErrnoName } from '../substrate/errno.js';
import type { SharedMessage } from '../substrate/handle.js';

/** A device address range of a job. */
export interface DmaRange {
  readonly address: number;
  readonly length: number;
}

/** @internal A job as the worker receives it. */
export interface DmaEngineJobMessage {
  readonly op: 'job';
  readonly id: number;
  readonly kind: 'copy' | 'fill';
  readonly fence: SharedMessage;
  readonly src: readonly DmaRange[];
  readonly dst: readonly DmaRange[];
  readonly pattern: Uint8Array;
  /** Bytes to move (-1: the destination's length, for copy min(src, dst)). */
  readonly length: number;
  readonly table: DmaPageTableDescriptor;
  readonly debug: boolean;
}

/** @internal The worker's answer. */
export interface DmaEngineReply {
  readonly id: number;
  readonly ok: boolean;
  readonly code?: string;
  readonly message?: string;
}

/** Options of a job. */
export interface DmaJobOptions {
  /** Bytes to move (default: all of the destination; a copy stops at the shorter table). */
  length?: number;
  /**
   * How the driver walks the tables: `'nents'` (correct: DMA segments) or `'origNents'` (the
   * seed-003 bug: one descriptor per CPU entry with its DMA address and CPU length).
   */
  walk?: 'nents' | 'origNents';
  /** Adds the job's fence to this reservation object as a WRITE fence (takes the lock). */
  dstResv?: DmaResv;
  /** Adds the job's fence to this reservation object as a READ fence (takes the lock). */
  srcResv?: DmaResv;
}

/** A submitted job. */
export interface DmaJob {
  /** Signalled when the job is done (with an error status when it failed). Owned by the caller. */
  readonly fence: DmaFence;
  /** Resolves when the job is done; rejects with the fault (`DmaBufError`). */
  readonly done: Promise<void>;
}

/** The copy/fill engine. Create it with {@linkcode DmaEngine.start}; `close()` it. */
export class DmaEngine {
  /** The engine's device: attach and map buffers for it. */
  readonly device: Device;
  readonly #worker: Worker;
  readonly #context: bigint;
  #seqno = 0n;
  #nextId = 1;
  readonly #pending = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
  #closed = false;

  private constructor(device: Device, worker: Worker) {
    this.device = device;
    this.#worker = worker;
    this.#context = DmaFence.contextAlloc(1);
    worker.on('message', (m: DmaEngineReply) => {
      const p = this.#pending.get(m.id);
      if (!p) return;
      this.#pending.delete(m.id);
      if (m.ok) p.resolve();
      else p.reject(new DmaBufError((m.code ?? 'EIO') as ErrnoName, m.message ?? 'DMA job failed'));
    });
    worker.on('error', (e) => this.#failAll(e));
    worker.on('exit', () => this.#failAll(new DmaBufError('ENODEV', 'DMA engine worker exited')));
  }

  #failAll(e: Error): void {
    for (const p of this.#pending.values()) p.reject(e);
    this.#pending.clear();
  }

  /**
   * Starts an engine: its device (`init`, as for {@linkcode Device}) and its worker thread.
   *
   * @throws {DmaBufError} EINVAL for a bad device description.
   */
  static async start(init: DeviceInit): Promise<DmaEngine> {
    const device = new Device(init);
    const worker = new Worker(new URL('./dma-engine-worker.js', import.meta.url));
    await new Promise<void>((resolve, reject) => {
      const onMsg = (m: { ready?: boolean }): void => {
        if (m.ready) {
          worker.off('message', onMsg);
          worker.off('error', reject);
          resolve();
        }
      };
      worker.on('message', onMsg);
      worker.once('error', reject);
    });
    return new DmaEngine(device, worker);
  }

  /** Jobs submitted and not yet answered. */
  get pending(): number {
    return this.#pending.size;
  }

  #ranges(sgt: SgTable, walk: 'nents' | 'origNents'): DmaRange[] {
    if (sgt._mappedBy !== this.device) {
      throw new DmaBufError('EINVAL', `${this.device.name}: sg table is not mapped for the engine`);
    }
    if (walk === 'nents') return [...sgt.dmaSegments()];
    // The driver bug: DMA addresses over orig_nents with the CPU lengths.
    const out: DmaRange[] = [];
    for (let i = 0; i < sgt.origNents; i++) {
      const e = sgt.sgl[i]!;
      out.push({ address: e.dmaAddress, length: e.length });
    }
    return out;
  }

  #submit(
    kind: 'copy' | 'fill',
    src: SgTable | undefined,
    dst: SgTable,
    pattern: Uint8Array,
    opts: DmaJobOptions,
  ): DmaJob {
    if (this.#closed) throw new DmaBufError('ENODEV', 'DMA engine is closed');
    const walk = opts.walk ?? 'nents';
    if (walk !== 'nents' && walk !== 'origNents') throw new DmaBufError('EINVAL', 'bad walk');
    const length = opts.length ?? -1;
    if (!Number.isSafeInteger(length) || length < -1) {
      throw new DmaBufError('EINVAL', 'length must be a non-negative integer');
    }
    const srcRanges = src ? this.#ranges(src, walk) : [];
    const dstRanges = this.#ranges(dst, walk);
    const table = this.device.exportPageTable([...srcRanges, ...dstRanges]);
    this.#seqno++;
    const fence = new DmaFence(this.#context, this.#seqno);
    try {
      for (const [resv, usage] of [
        [opts.dstResv, DmaResvUsage.WRITE],
        [opts.srcResv, DmaResvUsage.READ],
      ] as const) {
        if (!resv) continue;
        resv.lock();
        try {
          resv.reserveFences(1);
          resv.addFence(fence, usage);
        } finally {
          resv.unlock();
        }
      }
    } catch (e) {
      fence.setError(-22);
      fence.signal();
      fence.dispose();
      throw e;
    }
    const id = this.#nextId++;
    const done = new Promise<void>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
    });
    const msg: DmaEngineJobMessage = {
      op: 'job',
      id,
      kind,
      fence: fence.share(),
      src: srcRanges,
      dst: dstRanges,
      pattern,
      length,
      table,
      debug: dmaDebugEnabled(),
    };
    this.#worker.postMessage(msg);
    return { fence, done };
  }

  /**
   * Copies `src` to `dst` (both mapped for `engine.device`): `length` bytes, by default as many as
   * the shorter table holds.
   *
   * @throws {DmaBufError} EINVAL for a table not mapped for the engine or bad options; with the
   *   debug mode on, what the table walk reports; ENODEV after `close()`.
   */
  copy(src: SgTable, dst: SgTable, opts: DmaJobOptions = {}): DmaJob {
    return this.#submit('copy', src, dst, new Uint8Array(0), opts);
  }

  /**
   * Fills `dst` (mapped for `engine.device`) with a byte or a repeated byte pattern.
   *
   * @throws {DmaBufError} EINVAL as {@linkcode DmaEngine.copy}, or an empty pattern.
   */
  fill(dst: SgTable, pattern: number | ArrayLike<number>, opts: DmaJobOptions = {}): DmaJob {
    const p =
      typeof pattern === 'number' ? Uint8Array.of(pattern & 0xff) : Uint8Array.from(pattern);
    if (p.length === 0) throw new DmaBufError('EINVAL', 'fill pattern is empty');
    return this.#submit('fill', undefined, dst, p, opts);
  }

  /** Stops the worker after the jobs already queued (they still answer). Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const exited = new Promise<void>((resolve) => this.#worker.once('exit', () => resolve()));
    this.#worker.postMessage({ op: 'close' });
    const t = setTimeout(() => void this.#worker.terminate(), 3000);
    await exited;
    clearTimeout(t);
  }
}
