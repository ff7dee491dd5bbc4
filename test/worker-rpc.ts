// Test helpers shared by the multi-thread tests: an RPC agent over a worker script (the worker
// answers `{ id, ok, value | message }` and announces `{ ready }`), and an inbox that waits for
// a worker's next message of a given `op`.
import { parentPort, threadId, Worker } from 'node:worker_threads';
import { DmaBufError } from '../src/substrate/errno.js';

interface Reply {
  id?: number;
  ok?: boolean;
  value?: unknown;
  message?: string;
  ready?: number;
}

/** A worker driven by calls: `call(op, args)` resolves with its answer. */
export class RpcAgent {
  readonly worker: Worker;
  /** Resolves with what the worker announced as ready (e.g. its thread id). */
  readonly ready: Promise<number>;
  #next = 1;
  #pending = new Map<number, (r: Reply) => void>();

  constructor(script: URL) {
    this.worker = new Worker(script);
    this.ready = new Promise((resolve) => {
      this.worker.on('message', (m: Reply) => {
        if (m.ready !== undefined) resolve(m.ready);
        else if (m.id !== undefined) this.#pending.get(m.id)?.(m);
      });
    });
  }

  call<T>(op: string, args: Record<string, unknown> = {}): Promise<T> {
    const id = this.#next++;
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(id, (m) => {
        this.#pending.delete(id);
        if (m.ok) resolve(m.value as T);
        else reject(new Error(m.message));
      });
      this.worker.postMessage({ id, op, ...args });
    });
  }

  /** Asks the worker to exit and waits for it (terminating it if it hangs). */
  async stop(): Promise<void> {
    const exited = new Promise((r) => this.worker.once('exit', r));
    const t = setTimeout(() => void this.worker.terminate(), 3000);
    await this.call('exit').catch(() => undefined);
    await exited;
    clearTimeout(t);
  }
}

/** A request an {@linkcode RpcAgent} sends. */
export type RpcRequest = { id: number; op: string; [k: string]: unknown };

/**
 * The worker side of {@linkcode RpcAgent}: answers every request with `run`'s result (or its
 * error, with the errno name), handles `exit` by closing the port, and announces itself ready
 * with its thread id.
 */
export function serveRpc(run: (r: RpcRequest) => Promise<unknown>): void {
  const port = parentPort;
  if (!port) throw new Error('serveRpc must run in a worker');
  port.on('message', (r: RpcRequest) => {
    const answer =
      r.op === 'exit'
        ? Promise.resolve(true).finally(() => setImmediate(() => port.close()))
        : run(r);
    answer.then(
      (value) => port.postMessage({ id: r.id, ok: true, value }),
      (e: unknown) =>
        port.postMessage({
          id: r.id,
          ok: false,
          code: e instanceof DmaBufError ? e.code : undefined,
          message: e instanceof Error ? e.message : String(e),
        }),
    );
  });
  port.postMessage({ ready: threadId });
}

/**
 * Collects a worker's messages; the returned function waits for the next one whose `op` is
 * `op`, and throws for an `{ op: 'error', message }` one.
 */
export function inbox(worker: Worker): (op: string) => Promise<Record<string, unknown>> {
  const box: Record<string, unknown>[] = [];
  let wake: (() => void) | undefined;
  worker.on('message', (m: Record<string, unknown>) => {
    box.push(m);
    wake?.();
  });
  return async (op) => {
    for (;;) {
      const i = box.findIndex((m) => m.op === op || m.op === 'error');
      if (i >= 0) {
        const m = box.splice(i, 1)[0]!;
        if (m.op === 'error') throw new Error(String(m.message));
        return m;
      }
      await new Promise<void>((r) => {
        wake = r;
      });
    }
  };
}
