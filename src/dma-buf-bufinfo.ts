/**
 * debugfs `dma_buf/bufinfo` (`dma_buf_debug_show`), the sysfs dma-buf statistics
 * (`CONFIG_DMABUF_SYSFS_STATS`: `/sys/kernel/dmabuf/buffers/<ino>/{exporter_name,size}`) and
 * per-heap totals, over every buffer alive in any thread (the global list of
 * `dma-buf-list.ts`).
 *
 * The walk takes a reference on every listed buffer that is not dying (refcount could be raised
 * from non-zero, as the kernel's iterator does) under the list lock, then, without it, locks each
 * buffer's reservation object to describe its fences. `count` is the file reference count as the
 * kernel prints it (not minus one), without the walk's own reference.
 *
 * Deviations: attached device names come from the buffer's list node, which keeps the first 16
 * attachments' names (the "Total n devices attached" count is exact); the resv lock is not
 * interruptible. If the walk's reference turns out to be the buffer's last one (the buffer was
 * dropped meanwhile), release runs in this thread with this thread's view of the memory.
 *
 * @module
 */

import { _dmaBufAdopt, type DmaBuf } from './dma-buf.js';
import { dmaBufListSnapshot } from './dma-buf-list.js';
import { dmaHeapNames } from './dma-heap.js';
import { DmaResvUsage } from './dma-resv.js';
import { domain } from './substrate/domain.js';

const USAGES = ['kernel', 'write', 'read', 'bookkeep'] as const;

/** One fence of a buffer as bufinfo lists it (usage KERNEL, WRITE or READ). */
export interface DmaBufInfoFence {
  readonly usage: 'kernel' | 'write' | 'read';
  readonly context: bigint;
  readonly seqno: bigint;
  readonly signaled: boolean;
  /** `dma_fence_describe`. */
  readonly description: string;
}

/** One buffer of bufinfo. */
export interface DmaBufInfoEntry {
  readonly size: number;
  /** `f_flags` (O_ACCMODE | O_NONBLOCK). */
  readonly flags: number;
  /** `f_mode` (FMODE_READ 0x1 | FMODE_WRITE 0x2). */
  readonly mode: number;
  /** File references (not minus one). */
  readonly count: number;
  readonly expName: string;
  readonly ino: bigint;
  readonly name: string | null;
  readonly fences: readonly DmaBufInfoFence[];
  /** Attached device names (first 16). */
  readonly devices: readonly string[];
  /** Number of attachments (exact). */
  readonly attachments: number;
}

/** The whole of bufinfo. */
export interface DmaBufInfoDump {
  /** Newest first (the kernel's list order). */
  readonly buffers: readonly DmaBufInfoEntry[];
  readonly totalObjects: number;
  readonly totalBytes: number;
}

/** sysfs stats of one buffer. */
export interface DmaBufSysfsStats {
  readonly ino: bigint;
  readonly exporterName: string;
  readonly size: number;
}

/** Totals of the buffers of one exporter. */
export interface DmaBufExporterTotals {
  readonly buffers: number;
  readonly bytes: number;
}

/** Runs `fn` on a handle for every live buffer, newest first; handles are put afterwards. */
function walk<T>(fn: (buf: DmaBuf, devices: string[]) => T): T[] {
  const d = domain();
  const listed = dmaBufListSnapshot(d);
  const out: T[] = [];
  const handles = listed.map((l) => _dmaBufAdopt(l.slot, l.gen));
  try {
    for (let i = 0; i < handles.length; i++) {
      out.push(fn(handles[i]!, listed[i]!.devices));
    }
  } finally {
    for (const h of handles) h.dispose();
  }
  return out;
}

function entryOf(buf: DmaBuf, devices: string[]): DmaBufInfoEntry & { text: string } {
  const resv = buf.resv;
  const fences: DmaBufInfoFence[] = [];
  let text: string;
  resv.lock();
  try {
    const it = resv.fences(DmaResvUsage.READ);
    for (const f of it) {
      const u = USAGES[it.fenceUsage] ?? 'read';
      fences.push({
        usage: u === 'bookkeep' ? 'read' : u,
        context: f.context,
        seqno: f.seqno,
        signaled: f.isSignaledFlag(),
        description: f.describe(),
      });
    }
    text = resv.describe();
  } finally {
    resv.unlock();
  }
  return {
    size: buf.size,
    flags: buf.flags,
    mode: buf.mode,
    count: buf.refcount - 1,
    expName: buf.expName,
    ino: buf.ino,
    name: buf.name,
    fences,
    devices: [...devices],
    attachments: buf.attachmentCount,
    text,
  };
}

function pad8(n: number | bigint): string {
  return String(n).padStart(8, '0');
}

function hex8(n: number): string {
  return (n >>> 0).toString(16).padStart(8, '0');
}

function walkAll(): { entries: DmaBufInfoEntry[]; text: string } {
  const raw = walk(entryOf);
  let text = '\nDma-buf Objects:\n';
  text += `${'size'.padEnd(8)}\t${'flags'.padEnd(8)}\t${'mode'.padEnd(8)}\t${'count'.padEnd(8)}\texp_name\t${'ino'.padEnd(8)}\tname\n`;
  let bytes = 0;
  const entries: DmaBufInfoEntry[] = [];
  for (const e of raw) {
    text += `${pad8(e.size)}\t${hex8(e.flags)}\t${hex8(e.mode)}\t${pad8(e.count)}\t${e.expName}\t${pad8(e.ino)}\t${e.name ?? '<none>'}\n`;
    text += e.text;
    text += '\tAttached Devices:\n';
    for (const dev of e.devices) text += `\t${dev}\n`;
    text += `Total ${e.attachments} devices attached\n\n`;
    bytes += e.size;
    const { text: _t, ...entry } = e;
    entries.push(entry);
  }
  text += `\nTotal ${raw.length} objects, ${bytes} bytes\n`;
  return { entries, text };
}

/** The text of debugfs `dma_buf/bufinfo`, for every buffer alive in any thread. */
export function dmaBufDebugShow(): string {
  return walkAll().text;
}

/** The structured form of {@linkcode dmaBufDebugShow}. */
export function dmaBufDebugInfo(): DmaBufInfoDump {
  const { entries } = walkAll();
  let bytes = 0;
  for (const e of entries) bytes += e.size;
  return { buffers: entries, totalObjects: entries.length, totalBytes: bytes };
}

/** `/sys/kernel/dmabuf/buffers/<ino>/`: one entry per live buffer, newest first. */
export function dmaBufSysfsStats(): DmaBufSysfsStats[] {
  return walk((b) => ({ ino: b.ino, exporterName: b.expName, size: b.size }));
}

/**
 * One sysfs attribute file: `exporter_name` (`"<name>\n"`) or `size` (`"<bytes>\n"`) of the
 * buffer with inode `ino`; null when no such buffer is alive (the directory is gone).
 */
export function dmaBufSysfsRead(ino: bigint, attr: 'exporter_name' | 'size'): string | null {
  for (const s of dmaBufSysfsStats()) {
    if (s.ino !== ino) continue;
    return attr === 'size' ? `${s.size}\n` : `${s.exporterName}\n`;
  }
  return null;
}

/** Buffers and bytes per exporter name, over every live buffer. */
export function dmaBufExporterTotals(): Map<string, DmaBufExporterTotals> {
  const m = new Map<string, DmaBufExporterTotals>();
  for (const s of dmaBufSysfsStats()) {
    const t = m.get(s.exporterName) ?? { buffers: 0, bytes: 0 };
    m.set(s.exporterName, { buffers: t.buffers + 1, bytes: t.bytes + s.size });
  }
  return m;
}

/**
 * Buffers and bytes per heap (the exporters named after a heap registered in this domain); every
 * known heap is listed, with zeros when it has no live buffer.
 */
export function dmaBufHeapTotals(): Map<string, DmaBufExporterTotals> {
  const all = dmaBufExporterTotals();
  const m = new Map<string, DmaBufExporterTotals>();
  for (const h of dmaHeapNames()) m.set(h, all.get(h) ?? { buffers: 0, bytes: 0 });
  return m;
}
