// Main-thread helpers of the container tests: a command channel to containers-worker, a seeded
// PRNG, and the shared-record leak guard. (Not a worker itself.)
import assert from 'node:assert/strict';
import { afterEach, beforeEach } from 'node:test';
import { Worker } from 'node:worker_threads';
import { DmaFence, F } from '../../src/dma-fence.js';
import { domain } from '../../src/substrate/domain.js';

// biome-ignore lint/suspicious/noExplicitAny: replies are free-form per command
export type Reply = Record<string, any>;

interface Pending {
  resolve: (r: Reply) => void;
  reject: (e: Error) => void;
  onReady: (() => void) | undefined;
}

/** One containers-worker thread and its command channel. */
export class ContainerWorker {
  readonly worker: Worker;
  readonly exited: Promise<number>;
  #next = 1;
  #pending = new Map<number, Pending>();
  #dead: Error | undefined;

  constructor(readonly index: number) {
    this.worker = new Worker(new URL('./containers-worker.js', import.meta.url), {
      workerData: { index },
    });
    this.exited = new Promise((res) => this.worker.once('exit', res));
    this.worker.on('message', (m: Reply) => {
      const p = this.#pending.get(m.id as number);
      if (!p) return;
      if (m.ready) {
        p.onReady?.();
        return;
      }
      this.#pending.delete(m.id as number);
      if (m.ok) p.resolve(m);
      else p.reject(new Error(`worker ${this.index}: ${String(m.error)}`));
    });
    const fail = (e: Error): void => {
      this.#dead = e;
      for (const p of this.#pending.values()) p.reject(e);
      this.#pending.clear();
    };
    this.worker.on('error', fail);
    this.worker.once('exit', (code) => {
      if (this.#pending.size > 0) fail(new Error(`worker ${this.index} exited with ${code}`));
    });
  }

  /** Sends a command; resolves with the worker's reply. `onReady` sees an early "ready". */
  call(op: string, args: Record<string, unknown> = {}, onReady?: () => void): Promise<Reply> {
    if (this.#dead) return Promise.reject(this.#dead);
    const id = this.#next++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, onReady });
      this.worker.postMessage({ id, op, ...args });
    });
  }

  /** Disposes what the worker holds and waits for it to exit on its own (10 s at most). */
  async close(): Promise<void> {
    try {
      await this.call('dispose');
      await this.call('exit');
    } finally {
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<'timeout'>((res) => {
        timer = setTimeout(() => res('timeout'), 10_000);
      });
      const r = await Promise.race([this.exited, timedOut]);
      clearTimeout(timer);
      if (r === 'timeout') {
        await this.worker.terminate();
        // biome-ignore lint/correctness/noUnsafeFinally: a hung worker is the failure to report
        throw new Error(`worker ${this.index} did not exit (something kept it alive)`);
      }
    }
  }
}

/** Starts `n` workers. */
export function startWorkers(n: number): ContainerWorker[] {
  return Array.from({ length: n }, (_, i) => new ContainerWorker(i));
}

/** Closes workers; all of them even if one fails. */
export async function closeWorkers(ws: ContainerWorker[]): Promise<void> {
  const r = await Promise.allSettled(ws.map((w) => w.close()));
  for (const x of r) if (x.status === 'rejected') throw x.reason;
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

/** A shuffled copy (Fisher-Yates). */
export function shuffle<T>(xs: readonly T[], rand: () => number): T[] {
  const a = [...xs];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

/** 0..n-1. */
export function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

/** A seed per run, printed so that a failure can be replayed with SEED=... */
export function seedFromEnv(): number {
  const s = process.env.SEED ? Number(process.env.SEED) : (Math.random() * 2 ** 31) >>> 0;
  return s;
}

/**
 * Registers beforeEach/afterEach hooks that check every test gives back every shared record it
 * made (`liveRecords` back to its value before the test). Creates the global stub first: it
 * lives as long as the domain.
 */
export function leakGuard(): void {
  DmaFence.getStub().dispose();
  let base = 0;
  beforeEach(() => {
    base = domain().liveRecords();
  });
  afterEach(() => {
    assert.equal(domain().liveRecords() - base, 0, 'shared records leaked by this test');
  });
}

/** The raw error word of a fence (shows a container's internal pending marker). */
export function rawError(f: DmaFence): number {
  const d = domain();
  const b = d.base(f._slot);
  return Atomics.load(d.i32, b + F.ERROR);
}

/** Same fence (same record, same generation)? */
export function same(a: DmaFence | null | undefined, b: DmaFence | null | undefined): boolean {
  if (!a || !b) return a === b;
  return a._slot === b._slot && a._gen === b._gen;
}

/** Disposes everything given (null-tolerant). */
export function disposeAll(...xs: (DmaFence | null | undefined | DmaFence[])[]): void {
  for (const x of xs) {
    if (Array.isArray(x)) for (const f of x) f.dispose();
    else x?.dispose();
  }
}

/** Resolves after the current macrotask (lets mailbox deliveries run). */
export function tick(): Promise<void> {
  return new Promise((res) => setImmediate(res));
}

/** Waits (without blocking) until `cond()` holds; false after `timeoutMs`. */
export async function until(cond: () => boolean, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) return false;
    await new Promise((res) => setTimeout(res, 1));
  }
  return true;
}
