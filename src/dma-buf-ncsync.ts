/**
 * The per-buffer list of live non-coherent device mappings, visible to every thread, so that
 * `DMA_BUF_SYNC` / begin-end CPU access in any thread syncs every device mapping of the buffer,
 * wherever it was made (the kernel's exporters walk their attachment list in the caller's
 * context: `dma_sync_sgtable_for_cpu(attach->dev, table, dir)` for each mapped attachment).
 *
 * A mapping of a buffer for a non-coherent device (see device.ts: the device works on its own
 * copy of each page, in shared memory) is entered here by the mapping thread
 * ({@linkcode ncRegister}): the postable list of its cache pages and a small shared control
 * block (live word and a lock word). The entry reaches the other threads twice over:
 * - a process-wide `BroadcastChannel`, whose messages are enqueued in every other thread's
 *   channel at post time and read synchronously ({@linkcode receiveMessageOnPort}) before each
 *   sync, so a thread that already holds the buffer learns of mappings made after it got it;
 * - the buffer's share message (`DmaBuf.share()` carries the live entries of the sharing thread),
 *   for threads that start after the mapping was announced.
 * Unmapping clears the live word under the entry's lock before the device drops its caches, so a
 * sync in another thread never touches a mapping that is gone; a `del` message then prunes it.
 *
 * Limits: one domain per process (entries are keyed by the buffer's record slot and
 * generation); a thread that loaded this module after a mapping was announced and got the buffer
 * through a message made before that mapping does not see it.
 *
 * @module
 */
import { BroadcastChannel, receiveMessageOnPort, threadId } from 'node:worker_threads';
import { type DmaDataDirection, type NcPage, ncSyncForCpu, ncSyncForDevice } from './device.js';

/** The postable form of one live non-coherent mapping. */
export interface NcEntry {
  readonly id: string;
  readonly pages: readonly NcPage[];
  /** Int32 words: [0] live (1) or gone (0), [1] lock. */
  readonly ctl: SharedArrayBuffer;
}

interface Local {
  readonly entry: NcEntry;
  readonly words: Int32Array;
}

type NcMessage =
  | { readonly t: 'add'; readonly key: string; readonly entry: NcEntry }
  | { readonly t: 'del'; readonly key: string; readonly id: string };

const lists = new Map<string, Map<string, Local>>();
let nextId = 1;

function handle(m: NcMessage): void {
  if (m.t === 'add') adopt(m.key, m.entry);
  else drop(m.key, m.id);
}

const channel = new BroadcastChannel('dmabuf-noncoherent-mappings');
channel.onmessage = (ev: unknown) => handle((ev as { data: NcMessage }).data);
channel.unref();

function drain(): void {
  for (;;) {
    const r = receiveMessageOnPort(channel as never) as { message: NcMessage } | undefined;
    if (!r) return;
    handle(r.message);
  }
}

function adopt(key: string, entry: NcEntry): void {
  const words = new Int32Array(entry.ctl);
  if (Atomics.load(words, 0) === 0) return;
  let l = lists.get(key);
  if (!l) {
    l = new Map();
    lists.set(key, l);
  }
  if (!l.has(entry.id)) l.set(entry.id, { entry, words });
}

function drop(key: string, id: string): void {
  const l = lists.get(key);
  if (!l) return;
  l.delete(id);
  if (l.size === 0) lists.delete(key);
}

function lock(w: Int32Array): void {
  while (Atomics.compareExchange(w, 1, 0, 1) !== 0) {
    // Held for one sync of one mapping.
  }
}

function unlock(w: Int32Array): void {
  Atomics.store(w, 1, 0);
}

/**
 * Enters a live non-coherent mapping of buffer `key`; returns its id for
 * {@linkcode ncUnregister}.
 */
export function ncRegister(key: string, pages: readonly NcPage[]): string {
  const ctl = new SharedArrayBuffer(8);
  Atomics.store(new Int32Array(ctl), 0, 1);
  const entry: NcEntry = { id: `${threadId}:${nextId++}`, pages, ctl };
  adopt(key, entry);
  channel.postMessage({ t: 'add', key, entry } satisfies NcMessage);
  return entry.id;
}

/** Marks a mapping gone (waits for a sync of it running in another thread), then prunes it. */
export function ncUnregister(key: string, id: string): void {
  const e = lists.get(key)?.get(id);
  if (!e) return;
  lock(e.words);
  Atomics.store(e.words, 0, 0);
  unlock(e.words);
  drop(key, id);
  channel.postMessage({ t: 'del', key, id } satisfies NcMessage);
}

/** The live entries this thread knows for buffer `key` (for the buffer's share message). */
export function ncEntries(key: string): NcEntry[] {
  drain();
  const out: NcEntry[] = [];
  for (const e of lists.get(key)?.values() ?? []) {
    if (Atomics.load(e.words, 0) !== 0) out.push(e.entry);
  }
  return out;
}

/** Adopts the entries of a share message. */
export function ncAdoptAll(key: string, entries: readonly NcEntry[] | undefined): void {
  if (!Array.isArray(entries)) return;
  for (const e of entries) adopt(key, e);
}

function each(key: string, fn: (pages: readonly NcPage[]) => void): void {
  drain();
  const l = lists.get(key);
  if (!l) return;
  for (const [id, e] of l) {
    lock(e.words);
    try {
      if (Atomics.load(e.words, 0) !== 0) fn(e.entry.pages);
      else l.delete(id);
    } finally {
      unlock(e.words);
    }
  }
  if (l.size === 0) lists.delete(key);
}

/** `dma_sync_sgtable_for_cpu` of every live non-coherent mapping of buffer `key`. */
export function ncSyncBufferForCpu(key: string, dir: DmaDataDirection): void {
  each(key, (pages) => ncSyncForCpu(pages, dir));
}

/** `dma_sync_sgtable_for_device` of every live non-coherent mapping of buffer `key`. */
export function ncSyncBufferForDevice(key: string, dir: DmaDataDirection): void {
  each(key, (pages) => ncSyncForDevice(pages, dir));
}

/** Number of live non-coherent mappings of buffer `key` this thread knows (tests). */
export function ncMappingCount(key: string): number {
  return ncEntries(key).length;
}
