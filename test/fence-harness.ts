// Test-side helpers shared by the fence and substrate tests: scriptable worker agents, leak
// checks and small async utilities.
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { DmaBufError } from '../src/index.js';
import { domain } from '../src/substrate/domain.js';
import type { AgentEvent } from './workers/fence-agent.js';

export type { AgentEvent, AgentOps } from './workers/fence-agent.js';

interface Reply {
  id?: number;
  ok?: boolean;
  value?: unknown;
  code?: string;
  message?: string;
  ready?: number;
}

/** A worker running test/workers/fence-agent.js, driven by `call(op, args)`. */
export class Agent {
  readonly worker: Worker;
  threadId = -1;
  #next = 1;
  #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  #exited = false;
  readonly exit: Promise<number>;

  private constructor(worker: Worker) {
    this.worker = worker;
    this.exit = new Promise((resolve) => {
      worker.once('exit', (code) => {
        this.#exited = true;
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
      else {
        const e = m.code
          ? new DmaBufError(m.code as never, m.message ?? '')
          : new Error(m.message ?? 'agent error');
        p.reject(e);
      }
    });
    worker.on('error', (e) => {
      for (const p of this.#pending.values()) p.reject(e);
      this.#pending.clear();
    });
  }

  /** Starts a worker speaking the agent protocol (fence-agent.js unless `file` says otherwise). */
  static start(file = 'fence-agent.js'): Promise<Agent> {
    const w = new Worker(new URL(`./workers/${file}`, import.meta.url));
    const a = new Agent(w);
    return new Promise((resolve, reject) => {
      const onMsg = (m: Reply): void => {
        if (m.ready !== undefined) {
          a.threadId = m.ready;
          w.off('message', onMsg);
          resolve(a);
        }
      };
      w.on('message', onMsg);
      w.once('error', reject);
      w.once('exit', (c) => reject(new Error(`agent exited early (${c})`)));
    });
  }

  call<T = unknown>(op: string, args: Record<string, unknown> = {}): Promise<T> {
    if (this.#exited) return Promise.reject(new Error('agent has exited'));
    const id = this.#next++;
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.worker.postMessage({ ...args, id, op });
    });
  }

  /** Events recorded by the agent since the last call (and clears them). */
  events(): Promise<AgentEvent[]> {
    return this.call<AgentEvent[]>('events');
  }

  /** Waits until the agent has recorded at least `n` events, then takes them. */
  waitEvents(n: number, timeout = 5000): Promise<AgentEvent[]> {
    return this.call<AgentEvent[]>('waitEvents', { n, timeout });
  }

  /** Disposes the agent's fences and lets it exit normally; terminates it if it hangs. */
  async stop(): Promise<void> {
    if (this.#exited) return;
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
export async function withAgents<T>(n: number, fn: (agents: Agent[]) => Promise<T>): Promise<T> {
  const agents: Agent[] = [];
  try {
    for (let i = 0; i < n; i++) agents.push(await Agent.start());
    return await fn(agents);
  } finally {
    await Promise.all(agents.map((a) => a.stop()));
  }
}

/** Resolves after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Lets the event loop turn `n` times (mailbox deliveries, finalizers). */
export async function ticks(n = 3): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
}

/** Polls `cond` until it holds or `timeoutMs` passes; returns its last value. */
export async function until(cond: () => boolean, timeoutMs = 5000): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (cond()) return true;
    if (Date.now() > end) return false;
    await sleep(2);
  }
}

/** The live record count of this thread's domain. */
export function live(): number {
  return domain().liveRecords();
}

/**
 * Asserts that the live record count comes back to `start` (waiting a little for releases that
 * travel through other threads' mailboxes).
 */
export async function assertNoLeak(start: number, timeoutMs = 3000): Promise<void> {
  await until(() => live() === start, timeoutMs);
  assert.equal(live(), start, 'live shared records must return to the start value');
}

/** A predicate for assert.throws/rejects: a DmaBufError with `code`. */
export function errno(code: string): (e: unknown) => boolean {
  return (e) => {
    assert.ok(e instanceof DmaBufError, `expected DmaBufError ${code}, got ${String(e)}`);
    assert.equal(e.code, code);
    return true;
  };
}

/** Runs the garbage collector (tests run with --expose-gc) and lets finalizers run. */
export async function collect(): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc;
  assert.ok(gc, 'run the tests with node --expose-gc');
  for (let i = 0; i < 4; i++) {
    gc();
    await ticks(2);
    await sleep(1);
  }
}
