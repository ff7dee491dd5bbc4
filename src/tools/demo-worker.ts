/**
 * Worker side of the demo (see demo.ts): one producer that creates and signals fences, and
 * consumers that wait on them in three different ways.
 *
 * @module
 */
import { type MessagePort, parentPort, workerData } from 'node:worker_threads';
import { DmaBufError, DmaFence, type DmaFenceOps, type SharedMessage } from '../index.js';

/** `workerData` of a demo worker. */
export type DemoRole =
  | { role: 'producer'; count: number; ports: MessagePort[] }
  | { role: 'consumer'; mode: 'sync' | 'async' | 'callback'; port: MessagePort };

/** What a consumer reports. */
export interface ConsumerReport {
  mode: string;
  waited: number;
  errors: number;
  latenciesUs: number[];
  timeoutResult: number;
  aborted: string;
}

/** What the producer reports. */
export interface ProducerReport {
  created: number;
  enabled: number;
  released: number;
  errorsSet: number;
  elapsedMs: number;
}

const data = workerData as DemoRole;

function sleepMs(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function producer(count: number, ports: MessagePort[]): Promise<ProducerReport> {
  let enabled = 0;
  let released = 0;
  const ops: DmaFenceOps = {
    driverName: 'demo-gpu',
    timelineName: 'ring0',
    enableSignaling: () => {
      enabled++;
      return true;
    },
    release: () => {
      released++;
    },
  };
  const ctx = DmaFence.contextAlloc(1);
  const start = performance.now();
  let errorsSet = 0;
  const fences: DmaFence[] = [];
  for (let i = 0; i < count; i++) {
    const f = new DmaFence(ctx, BigInt(i + 1), ops);
    fences.push(f);
    for (const p of ports) p.postMessage(f.share());
  }
  // Wait until every consumer holds every fence, so the timings measure waits, not messaging.
  await Promise.all(ports.map((p) => new Promise((resolve) => p.once('message', resolve))));
  // Signal in order, in bursts, with a pause now and then so that waiters really sleep.
  for (let i = 0; i < count; i++) {
    const f = fences[i]!;
    if (i % 97 === 96) {
      f.setError(-125); // ECANCELED: this "job" was cancelled
      errorsSet++;
    }
    f.signal();
    f.dispose();
    if (i % 10 === 9) await sleepMs(1);
  }
  // The fences' release op runs here once the consumers have dropped their references too.
  while (released < count) await sleepMs(5);
  return { created: count, enabled, released, errorsSet, elapsedMs: performance.now() - start };
}

async function consumer(
  mode: 'sync' | 'async' | 'callback',
  port: MessagePort,
): Promise<ConsumerReport> {
  const report: ConsumerReport = {
    mode,
    waited: 0,
    errors: 0,
    latenciesUs: [],
    timeoutResult: -1,
    aborted: '',
  };
  const record = (f: DmaFence): void => {
    const ts = f.timestamp;
    if (ts !== undefined) report.latenciesUs.push(Number(process.hrtime.bigint() - ts) / 1000);
    if (f.getStatus() < 0) report.errors++;
    report.waited++;
  };
  const done: Promise<void>[] = [];
  const count = await new Promise<number>((resolve) => port.once('message', resolve));
  const fences: DmaFence[] = [];
  for (let i = 0; i < count; i++) {
    const msg = await new Promise<SharedMessage>((resolve) => port.once('message', resolve));
    fences.push(DmaFence.import(msg));
  }
  port.postMessage('ready');
  for (const f of fences) {
    if (mode === 'sync') {
      f.waitSync();
      record(f);
      f.dispose();
    } else if (mode === 'async') {
      done.push(
        f.wait().then(() => {
          record(f);
          f.dispose();
        }),
      );
    } else {
      done.push(
        new Promise<void>((resolve) => {
          try {
            f.addCallback((g) => {
              record(g);
              f.dispose();
              resolve();
            });
          } catch (e) {
            if (!(e instanceof DmaBufError && e.code === 'ENOENT')) throw e;
            record(f); // already signalled: ENOENT, the callback is not called
            f.dispose();
            resolve();
          }
        }),
      );
    }
  }
  await Promise.all(done);
  // A fence nobody signals: a timed wait returns 0, an aborted wait throws ERESTARTSYS.
  const lonely = new DmaFence(DmaFence.contextAlloc(1), 1n);
  report.timeoutResult =
    mode === 'sync' ? lonely.waitSync({ timeout: 20 }) : await lonely.wait({ timeout: 20 });
  try {
    await lonely.wait({ signal: AbortSignal.timeout(10) });
  } catch (e) {
    report.aborted = e instanceof DmaBufError ? e.code : String(e);
  }
  lonely.signal();
  lonely.dispose();
  return report;
}

const run = async (): Promise<unknown> =>
  data.role === 'producer' ? producer(data.count, data.ports) : consumer(data.mode, data.port);

run().then(
  (r) => parentPort?.postMessage(r),
  (e: unknown) => {
    throw e;
  },
);
