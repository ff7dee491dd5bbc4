/**
 * The demo (`npm start`): fences created in one worker thread and waited on in three others.
 *
 * A producer worker creates driver fences (with ops whose enableSignaling and release run in
 * the producer) and hands each one to three consumers, which wait for it synchronously,
 * asynchronously, and through a callback. The producer signals them in order, some with an
 * error. Every thread sees the same fence: the demo prints what each consumer saw, the
 * signal-to-wake latency it measured from each fence's own timestamp, and checks that every
 * shared record was released at the end.
 *
 * @module
 */
import { MessageChannel, Worker } from 'node:worker_threads';
import { DmaFence } from '../index.js';
import { domain } from '../substrate/domain.js';
import type { ConsumerReport, DemoRole, ProducerReport } from './demo-worker.js';

const COUNT = Number(process.env.DEMO_FENCES ?? 1000);
const workerUrl = new URL('./demo-worker.js', import.meta.url);

function run<T>(
  data: DemoRole,
  transfer: readonly import('node:worker_threads').MessagePort[],
): Promise<T> {
  const w = new Worker(workerUrl, { workerData: data, transferList: [...transfer] });
  return new Promise<T>((resolve, reject) => {
    w.once('message', (m: T) => {
      resolve(m);
      void w.terminate();
    });
    w.once('error', reject);
  });
}

function pct(sorted: number[], p: number): string {
  if (sorted.length === 0) return '-';
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!.toFixed(1);
}

async function main(): Promise<void> {
  const d = domain();
  const stub = DmaFence.getStub(); // created once per domain; counted out of the leak check
  stub.dispose();
  const live0 = d.liveRecords();
  const modes = ['sync', 'async', 'callback'] as const;
  const channels = modes.map(() => new MessageChannel());
  console.log(
    `dmabuf demo: 1 producer thread, ${modes.length} consumer threads, ${COUNT} fences\n`,
  );
  const t0 = performance.now();
  const consumers = modes.map((mode, i) =>
    run<ConsumerReport>({ role: 'consumer', mode, port: channels[i]!.port2 }, [channels[i]!.port2]),
  );
  for (const c of channels) c.port1.postMessage(COUNT);
  const ports = channels.map((c) => c.port1);
  const producer = await run<ProducerReport>({ role: 'producer', count: COUNT, ports }, ports);
  const reports = await Promise.all(consumers);
  const elapsed = performance.now() - t0;

  console.log(
    `producer: created ${producer.created} fences, ${producer.errorsSet} with -ECANCELED, ` +
      `enableSignaling ran ${producer.enabled}x, release ran ${producer.released}x (all in the producer thread)`,
  );
  console.log(
    '\nconsumer   waited  errors  wake p50 us  wake p99 us  timed-out wait  aborted wait',
  );
  for (const r of reports) {
    const lat = [...r.latenciesUs].sort((a, b) => a - b);
    console.log(
      `${r.mode.padEnd(9)} ${String(r.waited).padStart(7)} ${String(r.errors).padStart(7)} ` +
        `${pct(lat, 50).padStart(12)} ${pct(lat, 99).padStart(12)} ${String(r.timeoutResult).padStart(15)} ${r.aborted.padStart(13)}`,
    );
  }
  const leaked = d.liveRecords() - live0;
  console.log(`\ntotal ${elapsed.toFixed(0)} ms; shared records still alive: ${leaked}`);
  const ok =
    reports.every(
      (r) => r.waited === COUNT && r.errors === producer.errorsSet && r.timeoutResult === 0,
    ) &&
    producer.released === COUNT &&
    leaked === 0;
  console.log(ok ? 'OK: every consumer saw every fence and every error; nothing leaked' : 'FAILED');
  if (!ok) process.exitCode = 1;
}

await main();
