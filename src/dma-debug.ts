/**
 * The DMA debug mode (the kernel's `CONFIG_DMA_API_DEBUG` and `CONFIG_DMABUF_DEBUG`).
 *
 * Off by default (one boolean test on the hot paths). When on:
 * - a scatter/gather table handed to an importer by `DmaBufAttachment.map` has its CPU pages
 *   scrambled (importers may use DMA addresses only): reading an entry's page reports;
 * - reading the DMA address or length of an entry at index `>= nents` of a mapped table reports
 *   (the nents / orig_nents mix-up of seed 003);
 * - mapping an entry longer than the device's maximum segment size reports (dma-debug's
 *   "mapping sg segment longer than device claims to support").
 *
 * A report is a thrown `DmaBufError` `EINVAL` whose message starts with `DMA-API:` (the project
 * turns the kernel's WARNs into thrown errors); each report is also counted.
 *
 * Turn it on with {@linkcode setDmaDebug} or the environment variable `DMABUF_DEBUG=1`.
 *
 * @module
 */
import { DmaBufError } from './substrate/errno.js';

let enabled = process.env.DMABUF_DEBUG === '1';
let reports = 0;

/** Turns the DMA debug mode on or off in this thread; returns the previous setting. */
export function setDmaDebug(on: boolean): boolean {
  const prev = enabled;
  enabled = on;
  return prev;
}

/** True when the DMA debug mode is on in this thread. */
export function dmaDebugEnabled(): boolean {
  return enabled;
}

/** How many reports the debug mode has made in this thread. */
export function dmaDebugReports(): number {
  return reports;
}

/**
 * @internal Reports a DMA API misuse found by the debug mode.
 *
 * @throws {DmaBufError} EINVAL always, with a `DMA-API:` message.
 */
export function dmaDebugReport(message: string): never {
  reports++;
  throw new DmaBufError('EINVAL', `DMA-API: ${message}`);
}
