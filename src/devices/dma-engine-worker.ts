/**
 * The DMA engine's worker (see dma-engine.ts): performs copy/fill jobs through device addresses
 * only ({@linkcode DmaWindow}) and signals each job's fence. Jobs run one at a time, in order.
 *
 * @module
 */
import { parentPort } from 'node:worker_threads';
import { DmaWindow } from '../device.js';
import { setDmaDebug } from '../dma-debug.js';
import { DmaFence } from '../dma-fence.js';
import { DmaBufError } from '../substrate/errno.js';
import type { DmaEngineJobMessage, DmaEngineReply, DmaRange } from './dma-engine.js';

const port = parentPort;
if (!port) throw new Error('dma-engine-worker must run in a worker thread');

function total(ranges: readonly DmaRange[]): number {
  let n = 0;
  for (const r of ranges) n += r.length;
  return n;
}

/** Calls `fn(address, length, done)` for the first `length` bytes of `ranges`, in order. */
function walk(
  ranges: readonly DmaRange[],
  length: number,
  fn: (address: number, n: number, done: number) => void,
): void {
  let done = 0;
  for (const r of ranges) {
    if (done >= length) break;
    const n = Math.min(r.length, length - done);
    if (n > 0) fn(r.address, n, done);
    done += n;
  }
  if (done < length) {
    throw new DmaBufError('EINVAL', `job of ${length} bytes does not fit its tables (${done})`);
  }
}

function run(job: DmaEngineJobMessage): void {
  const win = new DmaWindow(job.table);
  const dstLen = total(job.dst);
  if (job.kind === 'copy') {
    const length = job.length >= 0 ? job.length : Math.min(total(job.src), dstLen);
    const data = new Uint8Array(length);
    walk(job.src, length, (a, n, done) => data.set(win.dmaRead(a, n), done));
    walk(job.dst, length, (a, n, done) => win.dmaWrite(a, data.subarray(done, done + n)));
  } else {
    const length = job.length >= 0 ? job.length : dstLen;
    const p = job.pattern;
    walk(job.dst, length, (a, n, done) => {
      const chunk = new Uint8Array(n);
      for (let i = 0; i < n; i++) chunk[i] = p[(done + i) % p.length]!;
      win.dmaWrite(a, chunk);
    });
  }
}

port.on('message', (m: DmaEngineJobMessage | { op: 'close' }) => {
  if (m.op === 'close') {
    port.close();
    return;
  }
  let reply: DmaEngineReply;
  const fence = DmaFence.import(m.fence);
  setDmaDebug(m.debug);
  try {
    run(m);
    reply = { id: m.id, ok: true };
  } catch (e) {
    const err =
      e instanceof DmaBufError
        ? e
        : new DmaBufError('EIO', e instanceof Error ? e.message : String(e));
    fence.setError(-err.errno);
    const prefix = `${err.code}: `;
    const message = err.message.startsWith(prefix) ? err.message.slice(prefix.length) : err.message;
    reply = { id: m.id, ok: false, code: err.code, message };
  } finally {
    setDmaDebug(false);
  }
  fence.signal();
  fence.dispose();
  port.postMessage(reply);
});
port.postMessage({ ready: true });
