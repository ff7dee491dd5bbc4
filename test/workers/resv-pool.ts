// Test-side helpers of the ww_mutex / dma_resv / drm_exec tests: run workers that post one
// result each (with a deadline, so a deadlock fails the test instead of hanging it), leak checks,
// small utilities.
import assert from 'node:assert/strict';
import { afterEach, beforeEach } from 'node:test';
import { Worker } from 'node:worker_threads';
import { domain } from '../../src/substrate/domain.js';
import { DmaBufError } from '../../src/substrate/errno.js';

/**
 * Starts one worker of `file` (a name in test/workers, e.g. 'resv-ww.js') per entry of `datas`
 * and resolves with their result messages, in order. Rejects when a worker fails, exits without
 * a result, or the whole run takes longer than `timeoutMs` (all workers are terminated then).
 */
export async function runWorkers<R>(
  file: string,
  datas: readonly unknown[],
  timeoutMs = 30_000,
): Promise<R[]> {
  const url = new URL(`./${file}`, import.meta.url);
  const workers = datas.map((workerData) => new Worker(url, { workerData }));
  let timer: NodeJS.Timeout | undefined;
  try {
    const results = workers.map(
      (w, i) =>
        new Promise<R>((resolve, reject) => {
          let result: { v: R } | undefined;
          w.on('message', (m: R) => {
            result = { v: m };
          });
          w.once('error', reject);
          w.once('exit', (code) => {
            if (result && code === 0) resolve(result.v);
            else reject(new Error(`worker ${i} exited with ${code} without a result`));
          });
        }),
    );
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`workers did not finish within ${timeoutMs} ms (deadlock?)`)),
        timeoutMs,
      );
    });
    return await Promise.race([Promise.all(results), deadline]);
  } finally {
    clearTimeout(timer);
    await Promise.all(workers.map((w) => w.terminate()));
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export async function until(cond: () => boolean, timeoutMs = 5000): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (cond()) return true;
    if (Date.now() > end) return false;
    await sleep(1);
  }
}

/** A predicate for assert.throws / rejects: a DmaBufError with `code`. */
export function errno(code: string): (e: unknown) => boolean {
  return (e) => {
    assert.ok(e instanceof DmaBufError, `expected DmaBufError ${code}, got ${String(e)}`);
    assert.equal(e.code, code, String(e));
    return true;
  };
}

/** A predicate for the kernel's BUG: a plain Error whose message starts with "BUG:". */
export function bug(e: unknown): boolean {
  assert.ok(e instanceof Error && !(e instanceof DmaBufError), `expected a BUG Error, got ${e}`);
  assert.match(e.message, /^BUG:/);
  return true;
}

/**
 * Checks around every test of the suite that the live shared record count comes back to where it
 * was (records released in other threads may take a moment).
 */
export function leakGuard(): void {
  let start = 0;
  beforeEach(() => {
    start = domain().liveRecords();
  });
  afterEach(async () => {
    await until(() => domain().liveRecords() === start, 3000);
    assert.equal(domain().liveRecords(), start, 'shared records leaked');
  });
}

/** Small deterministic PRNG (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The seed of randomised tests: DMABUF_SEED if set, else random (printed on failure). */
export function seed(): number {
  const env = process.env.DMABUF_SEED;
  return env ? Number(env) : Math.floor(Math.random() * 0x7fffffff);
}
