/**
 * The global list of live dma-bufs (the kernel's `dmabuf_list` / `db_list`), in shared memory so
 * every thread can walk it (debugfs `bufinfo`, sysfs stats, the BPF iterator).
 *
 * Each buffer has one list node: an EXT record of the domain holding the buffer's (slot, gen),
 * the next and previous node, and the interned names of the devices attached to it (any thread's
 * attachments, up to {@linkcode MAX_LISTED_DEVICES}; the count in the buffer record is exact).
 * The head, a lock word and a count are global words 20..22 of the domain
 * ({@linkcode Domain.globalWord}). `dma-buf.ts` links a buffer at export and unlinks it when it
 * is released, before the exporter's `release` (as the kernel drops it from the list in
 * `dma_buf_file_release`).
 *
 * @module
 */

import { type Domain, RecordType } from './substrate/domain.js';
import { lockWord, unlockWord } from './substrate/lock.js';

/** Global words: the list lock, the head node (slot + 1, 0: empty), the number of buffers. */
const G_LOCK = 20;
const G_HEAD = 21;
const G_COUNT = 22;

const N_BUF = 3;
const N_BUFGEN = 4;
const N_NEXT = 5; // slot + 1
const N_PREV = 6; // slot + 1
const N_NDEV = 7;
const N_DEV = 8; // name id + 1 each
/** Attached device names a node keeps (the attachment count itself is exact). */
export const MAX_LISTED_DEVICES = 16;

/** A buffer of the list, with a reference taken on its record. */
export interface ListedBuf {
  readonly slot: number;
  readonly gen: number;
  /** Names of the attached devices (at most {@linkcode MAX_LISTED_DEVICES}). */
  readonly devices: string[];
}

function lock(d: Domain): void {
  lockWord(d.region, d.globalWord(G_LOCK));
}

function unlock(d: Domain): void {
  unlockWord(d.region, d.globalWord(G_LOCK));
}

/**
 * @internal Links buffer (slot, gen) at the head of the list; returns the node's slot.
 *
 * @throws {DmaBufError} ENOMEM when the shared region is full.
 */
export function dmaBufListAdd(d: Domain, slot: number, gen: number): number {
  const node = d.alloc(RecordType.EXT);
  d.st(node, N_BUF, slot);
  d.st(node, N_BUFGEN, gen);
  lock(d);
  try {
    const head = Atomics.load(d.i32, d.globalWord(G_HEAD));
    d.st(node, N_NEXT, head);
    d.st(node, N_PREV, 0);
    if (head !== 0) d.st(head - 1, N_PREV, node + 1);
    Atomics.store(d.i32, d.globalWord(G_HEAD), node + 1);
    Atomics.add(d.i32, d.globalWord(G_COUNT), 1);
  } finally {
    unlock(d);
  }
  return node;
}

/** @internal Unlinks and frees a node. */
export function dmaBufListDel(d: Domain, node: number): void {
  lock(d);
  try {
    const next = d.ld(node, N_NEXT);
    const prev = d.ld(node, N_PREV);
    if (prev !== 0) d.st(prev - 1, N_NEXT, next);
    else Atomics.store(d.i32, d.globalWord(G_HEAD), next);
    if (next !== 0) d.st(next - 1, N_PREV, prev);
    Atomics.sub(d.i32, d.globalWord(G_COUNT), 1);
  } finally {
    unlock(d);
  }
  d.free(node);
}

function internSafe(d: Domain, name: string): number {
  try {
    return d.intern(name);
  } catch {
    return d.intern(Buffer.from(name, 'utf8').subarray(0, 60).toString('utf8'));
  }
}

/** @internal Records an attached device's name on the node. */
export function dmaBufListAttach(d: Domain, node: number, devName: string): void {
  const id = internSafe(d, devName) + 1;
  lock(d);
  try {
    const n = d.ld(node, N_NDEV);
    if (n < MAX_LISTED_DEVICES) {
      d.st(node, N_DEV + n, id);
      d.st(node, N_NDEV, n + 1);
    }
  } finally {
    unlock(d);
  }
}

/** @internal Removes one occurrence of a device's name from the node. */
export function dmaBufListDetach(d: Domain, node: number, devName: string): void {
  const id = internSafe(d, devName) + 1;
  lock(d);
  try {
    const n = d.ld(node, N_NDEV);
    for (let i = 0; i < n; i++) {
      if (d.ld(node, N_DEV + i) !== id) continue;
      for (let j = i; j < n - 1; j++) d.st(node, N_DEV + j, d.ld(node, N_DEV + j + 1));
      d.st(node, N_DEV + n - 1, 0);
      d.st(node, N_NDEV, n - 1);
      break;
    }
  } finally {
    unlock(d);
  }
}

/**
 * @internal Every listed buffer that is not dying (its reference count could be raised from
 * non-zero), newest first, each with a reference the caller must put.
 */
export function dmaBufListSnapshot(d: Domain): ListedBuf[] {
  const out: ListedBuf[] = [];
  lock(d);
  try {
    let n = Atomics.load(d.i32, d.globalWord(G_HEAD));
    while (n !== 0) {
      const node = n - 1;
      const slot = d.ld(node, N_BUF);
      const gen = d.ld(node, N_BUFGEN);
      if (d.tryGet(slot, gen, RecordType.DMA_BUF)) {
        const devices: string[] = [];
        const nd = d.ld(node, N_NDEV);
        for (let i = 0; i < nd; i++) devices.push(d.name(d.ld(node, N_DEV + i) - 1));
        out.push({ slot, gen, devices });
      }
      n = d.ld(node, N_NEXT);
    }
  } finally {
    unlock(d);
  }
  return out;
}

/** Number of buffers on the list (dying ones included). */
export function dmaBufListCount(d: Domain): number {
  return Atomics.load(d.i32, d.globalWord(G_COUNT));
}
