// Test-side driver of test/workers/sync-agent.js and small helpers shared by the sync_file,
// sw_sync and syncobj tests.
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { DmaFence } from '../../src/dma-fence.js';
import { domain } from '../../src/substrate/domain.js';
import { DmaBufError } from '../../src/substrate/errno.js';

interface Reply {
  id?: number;
  ok?: boolean;
  value?: unknown;
  code?: string;
  message?: string;
  ready?: number;
}

/** One sync-agent worker. */
export class SyncAgent {
  readonly worker: Worker;
  #next = 1;
  #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  readonly exit: Promise<number>;

  private constructor(worker: Worker) {
    this.worker = worker;
    this.exit = new Promise((resolve) => {
      worker.once('exit', (code) => {
        for (const p of this.#pending.values()) p.reject(new Error(`agent exited (${code})`));
        this.#pending.clear();
        resolve(code);
      });
    });
    worker.on('message', (m: Reply) => {
      if (m.id === undefined) return;
      const p = this.#pending.get(m.id);
      if (!p) return;
      this.#pending.delete(m.id);
      if (m.ok) p.resolve(m.value);
      else
        p.reject(
          m.code
            ? new DmaBufError(m.code as never, m.message ?? '')
            : new Error(m.message ?? 'agent error'),
        );
    });
    worker.on('error', (e) => {
      for (const p of this.#pending.values()) p.reject(e);
      this.#pending.clear();
    });
  }

  static start(): Promise<SyncAgent> {
    const w = new Worker(new URL('./sync-agent.js', import.meta.url));
    const a = new SyncAgent(w);
    return new Promise((resolve, reject) => {
      const onMsg = (m: Reply): void => {
        if (m.ready !== undefined) {
          w.off('message', onMsg);
          resolve(a);
        }
      };
      w.on('message', onMsg);
      w.once('error', reject);
    });
  }

  call<T = unknown>(op: string, args: Record<string, unknown> = {}): Promise<T> {
    const id = this.#next++;
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.worker.postMessage({ id, op, ...args });
    });
  }

  async stop(): Promise<void> {
    const t = setTimeout(() => void this.worker.terminate(), 3000);
    try {
      await this.call('exit').catch(() => undefined);
      await this.exit;
    } finally {
      clearTimeout(t);
    }
  }
}

/** Runs `fn` with `n` agents and always stops them. */
export async function withSyncAgents<T>(
  n: number,
  fn: (agents: SyncAgent[]) => Promise<T>,
): Promise<T> {
  const agents = await Promise.all(Array.from({ length: n }, () => SyncAgent.start()));
  try {
    return await fn(agents);
  } finally {
    await Promise.all(agents.map((a) => a.stop()));
  }
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The live record count of this thread's domain. */
export function live(): number {
  return domain().liveRecords();
}

/** Creates the stub fence (it lives as long as the domain) and returns the live count. */
export function baseline(): number {
  DmaFence.getStub().dispose();
  return live();
}

/** Asserts that the live record count comes back to `start`. */
export async function assertNoLeak(start: number, timeoutMs = 3000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (live() !== start && Date.now() < end) await sleep(2);
  assert.equal(live(), start, 'live shared records must return to the start value');
}

/** A predicate for assert.throws/rejects: a DmaBufError with `code`. */
export function errno(code: string): (e: unknown) => boolean {
  return (e) => {
    assert.ok(e instanceof DmaBufError, `expected DmaBufError ${code}, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    return true;
  };
}
